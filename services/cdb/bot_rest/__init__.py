"""bot_rest: MEXC REST for the other services (universe, tickers, klines), cached and paced."""
