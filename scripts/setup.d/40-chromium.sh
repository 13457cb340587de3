# shellcheck shell=bash
# Debian's Chromium, for two users: kaleido 1.x (plotly's PNG export drives a headless
# Chrome/Chromium: `cdb ml evaluate --png`, tests/ml/test_ml_evaluate.py) and the console's
# browser tests (tests/console/test_console_browser.py: Playwright launches /usr/bin/chromium;
# Playwright's own browser download is never used). Sourced by scripts/setup.sh.
# kaleido finds it on PATH (`chromium`) or through BROWSER_PATH.
chromium_path() {
  if [ -n "${BROWSER_PATH:-}" ] && [ -x "${BROWSER_PATH}" ]; then echo "$BROWSER_PATH"; return; fi
  command -v chromium || command -v chromium-browser || command -v google-chrome || true
}
if [ -z "$(chromium_path)" ]; then
  if as_root && command -v apt-get >/dev/null; then
    say "installing chromium (PNG export of the ML evaluation report, console browser tests)"
    apt_install chromium
  else
    say "missing: chromium (PNG export of 'cdb ml evaluate'). Install it: sudo apt-get install chromium (macOS: brew install --cask chromium), or set BROWSER_PATH to a Chrome/Chromium binary" >&2
  fi
fi
