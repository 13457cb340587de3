# tmux: tests/demo/test_demo_terminal.py runs `cdb demo` with its live view in a real terminal
# (a detached tmux session) and reads the screen back. Sourced by scripts/setup.sh.
if ! command -v tmux >/dev/null; then
  say "installing tmux (the live-view terminal test)"
  apt_install tmux
fi
