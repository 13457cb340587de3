# promtool (Debian's prometheus package): checks the chart's Prometheus config and alert
# rules, and runs `promtool test rules`. Sourced by scripts/setup.sh.
if ! command -v promtool >/dev/null; then
  say "installing prometheus (for promtool)"
  BREW_NAME=prometheus apt_install prometheus
fi
