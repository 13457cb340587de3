#!/usr/bin/env bash
# Everything `make test` and `make demo` need, installed from the project's own pins.
# Idempotent: a second run only checks. Runs every scripts/setup.d/*.sh in order.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
TOOLS=.tools
mkdir -p "$TOOLS/bin"

say() { printf 'setup: %s\n' "$*"; }
go_tool() {
  # go_tool NAME WHAT: build scripts/setup.d/NAME/ (go.mod, go.sum, main.go: pinned modules
  # from the Go module proxy) into .tools/bin/NAME, again only when its sources change.
  local src="scripts/setup.d/$1"
  local stamp="$TOOLS/.$1-$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)"
  if [ -x "$TOOLS/bin/$1" ] && [ -f "$stamp" ]; then return; fi
  if ! command -v go >/dev/null; then
    say "missing: go (to build $1). Install Go 1.26+ (apt: golang-go; macOS: brew install go)" >&2
    exit 1
  fi
  say "building $1 ($2)"
  (cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -trimpath -o "$OLDPWD/$TOOLS/bin/$1" .)
  rm -f "$TOOLS/.$1-"*
  touch "$stamp"
}
as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
  # apt_install <package...>: install Debian packages as root, or print what to install.
  if as_root && command -v apt-get >/dev/null; then
    if [ ! -f "$TOOLS/.apt-updated" ]; then
      apt-get update -qq && touch "$TOOLS/.apt-updated"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    say "missing: $*. Install it: sudo apt-get install $* (macOS: brew install ${BREW_NAME:-$1})" >&2
    exit 1
  fi
}

# 1. uv (pinned), then the locked virtualenv.
if [ ! -x "$TOOLS/uv/bin/uv" ] || [ "$("$TOOLS/uv/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  say "installing uv $UV_VERSION"
  python3 -m venv "$TOOLS/uv"
  "$TOOLS/uv/bin/pip" install -q "uv==$UV_VERSION"
fi
ln -sf ../uv/bin/uv "$TOOLS/bin/uv"
UV_PYTHON_DOWNLOADS=never "$TOOLS/bin/uv" sync --frozen --quiet
# Bytecode, both plain and -OO (the deployable services run with -OO, as in the image:
# cdb.demo.plan.interpreter), compiled here so that no process compiles it at start, which
# costs seconds and memory it keeps (and with PYTHONDONTWRITEBYTECODE set, as on these
# machines, would happen at every start): the libraries' once per lock, the interpreter's
# own library where we may write (as root, or a Python of our own), and our own code at
# every setup (only what changed).
opt2_stamp=".venv/.bytecode-$(cat uv.lock <(.venv/bin/python -VV) | sha256sum | cut -c1-16)"
if [ ! -f "$opt2_stamp" ]; then
  say "compiling the libraries' bytecode"
  .venv/bin/python -m compileall -q -j0 -o 0 -o 2 .venv/lib/python3*/site-packages >/dev/null
  stdlib=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
  if [ -w "$stdlib" ]; then  # a few of its test files do not compile, on purpose
    .venv/bin/python -m compileall -q -j0 -o 0 -o 2 "$stdlib" >/dev/null 2>&1 || true
  fi
  rm -f .venv/.bytecode-*
  touch "$opt2_stamp"
fi
.venv/bin/python -m compileall -q -j0 -o 0 -o 2 services operator >/dev/null

# 2. Redis server (the bus; tests start throwaway servers from this binary).
if ! command -v redis-server >/dev/null; then
  say "installing redis-server"
  BREW_NAME=redis apt_install redis-server
fi

# 3. PostgreSQL server binaries (on PATH or under /usr/lib/postgresql/*/bin).
pg_bin() {
  if command -v pg_ctl >/dev/null; then dirname "$(command -v pg_ctl)"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1
}
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/pg_ctl" ]; then
  say "installing postgresql"
  BREW_NAME=postgresql@15 apt_install postgresql
fi
ln -sf "$(pg_bin)/pg_ctl" "$TOOLS/bin/pg_ctl.real"
for extra in scripts/setup.d/*.sh; do
  [ -e "$extra" ] || continue
  # shellcheck source=/dev/null
  . "$extra"
done
say "ready"
