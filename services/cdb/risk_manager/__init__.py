"""risk_manager: the gatekeeper between ``signals`` and ``orders`` (port 8002)."""
