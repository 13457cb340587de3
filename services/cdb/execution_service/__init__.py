"""execution_service: orders become fills and positions, paper by default (port 8003)."""
