# Alertmanager (Debian's prometheus-alertmanager package): the demo runs it as a local
# process, and tests/monitoring/test_alerting.py runs it with a real Prometheus against a running
# notifier. Sourced by scripts/setup.sh.
if ! command -v prometheus-alertmanager >/dev/null; then
  say "installing prometheus-alertmanager"
  BREW_NAME=alertmanager apt_install prometheus-alertmanager
fi
