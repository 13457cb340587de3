# shellcheck shell=bash
# wheelhouse/: every wheel the image build installs, downloaded on the host from uv.lock
# (hash-checked), so `docker build` reaches no network and installs exactly the lock:
#   requirements.txt   `uv export --frozen --no-dev --no-emit-project --all-extras`
#   build.txt          uv and hatchling (the project's build backend), hash-locked in
#                      scripts/setup.d/requirements/image-build.txt
# The Dockerfile installs from here when wheelhouse/requirements.txt exists, else from
# PyPI as before. Cached per lock under .tools/wheelhouse/<hash>/ and hard-linked into
# wheelhouse/ (git ignores everything there but README.md). Sourced by scripts/setup.sh.
WHEELHOUSE_KEY=$(cat uv.lock scripts/setup.d/requirements/image-build.txt \
  scripts/setup.d/27-wheelhouse.sh | sha256sum | cut -c1-16)
WHEELHOUSE_CACHE="$TOOLS/wheelhouse/$WHEELHOUSE_KEY"

wheelhouse_platforms() {
  # pip takes manylinux tags literally: list every one glibc 2.36 runs (2_5 .. 2_36).
  local minor
  for minor in $(seq 5 36); do printf -- '--platform manylinux_2_%s_x86_64 ' "$minor"; done
  printf -- '--platform manylinux1_x86_64 --platform manylinux2010_x86_64 '
  printf -- '--platform manylinux2014_x86_64 --platform linux_x86_64 --platform any'
}

if [ ! -f "$WHEELHOUSE_CACHE/.complete" ]; then
  say "downloading the image's wheels from uv.lock into $WHEELHOUSE_CACHE"
  rm -rf "$TOOLS/wheelhouse"
  mkdir -p "$WHEELHOUSE_CACHE"
  UV_PYTHON_DOWNLOADS=never "$TOOLS/bin/uv" export --quiet --frozen --no-dev --no-emit-project \
    --all-extras -o "$WHEELHOUSE_CACHE/requirements.txt"
  cp scripts/setup.d/requirements/image-build.txt "$WHEELHOUSE_CACHE/build.txt"
  # Every locked wheel whatever its marker (the image's Python may be an older 3.11 than
  # the host's, e.g. async-timeout for < 3.11.3): CPython 3.11 wheels for glibc 2.36
  # (Debian bookworm, as python:3.11-slim), never sdists.
  sed 's/ ; [^\\]*\\$/ \\/' "$WHEELHOUSE_CACHE/requirements.txt" >"$WHEELHOUSE_CACHE/all.txt"
  # A package PyPI has only as an sdist (http-ece) goes in as its hash-checked sdist; the
  # image builds it offline with setuptools from build.txt.
  "$TOOLS/uv/bin/python" - "$WHEELHOUSE_CACHE" <<'PY'
import pathlib, re, sys, tomllib
cache = pathlib.Path(sys.argv[1])
lock = tomllib.loads(pathlib.Path("uv.lock").read_text())
sdist_only = {p["name"] for p in lock["package"]
              if "sdist" in p and not p.get("wheels") and "registry" in p.get("source", {})}
blocks = re.split(r"(?m)^(?=[a-z0-9])", (cache / "all.txt").read_text())
def name(block: str) -> str:
    return re.split(r"[=\s]", block, maxsplit=1)[0].lower()
(cache / "all.txt").write_text("".join(b for b in blocks if name(b) not in sdist_only))
(cache / "sdist.txt").write_text("".join(b for b in blocks if name(b) in sdist_only))
PY
  if [ -s "$WHEELHOUSE_CACHE/sdist.txt" ]; then
    "$TOOLS/uv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
      --require-hashes --no-binary=:all: -d "$WHEELHOUSE_CACHE" -r "$WHEELHOUSE_CACHE/sdist.txt"
  fi
  rm -f "$WHEELHOUSE_CACHE/sdist.txt"
  # shellcheck disable=SC2046
  for req in all.txt build.txt; do
    "$TOOLS/uv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
      --require-hashes --only-binary=:all: --python-version 3.11 --implementation cp \
      --abi cp311 --abi abi3 --abi none $(wheelhouse_platforms) \
      -d "$WHEELHOUSE_CACHE" -r "$WHEELHOUSE_CACHE/$req"
  done
  rm "$WHEELHOUSE_CACHE/all.txt"
  touch "$WHEELHOUSE_CACHE/.complete"
fi
if [ ! -f "wheelhouse/.key-$WHEELHOUSE_KEY" ]; then
  find wheelhouse -mindepth 1 ! -name README.md -delete
  find "$WHEELHOUSE_CACHE" -maxdepth 1 \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.txt' \) \
    -exec cp -l {} wheelhouse/ \; 2>/dev/null \
    || find "$WHEELHOUSE_CACHE" -maxdepth 1 \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.txt' \) \
      -exec cp {} wheelhouse/ \;
  touch "wheelhouse/.key-$WHEELHOUSE_KEY"
fi
