"""bot_ws: the MEXC contract WebSocket screener (1-minute candles, lookback window, movers)."""
