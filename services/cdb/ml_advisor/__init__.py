"""ml_advisor: shadow-mode gradient-boosted signals with SHAP explanations, never traded."""
