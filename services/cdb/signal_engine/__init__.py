"""signal_engine: the momentum rule turning ``market_data`` into ``signals`` (port 8001)."""
