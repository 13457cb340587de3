DROP VIEW ml_shadow_comparison;
DROP TABLE candles;
