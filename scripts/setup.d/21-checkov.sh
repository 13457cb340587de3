# checkov 3.3.30 (policy checks of the rendered chart and the Dockerfile), in its own venv
# under .tools/checkov: its pins conflict with the app lock. Installed only from
# requirements/checkov.txt, compiled with hashes (see the command at its top).
# Sourced by scripts/setup.sh (say, TOOLS). Idempotent.
CHECKOV_VERSION=3.3.30
CHECKOV_REQUIREMENTS=scripts/setup.d/requirements/checkov.txt
CHECKOV_STAMP="$TOOLS/checkov/.installed-$(sha256sum "$CHECKOV_REQUIREMENTS" | cut -c1-16)"

if [ ! -f "$CHECKOV_STAMP" ] || [ ! -x "$TOOLS/checkov/bin/checkov" ]; then
  say "installing checkov $CHECKOV_VERSION into $TOOLS/checkov"
  rm -rf "$TOOLS/checkov"
  UV_PYTHON_DOWNLOADS=never "$TOOLS/bin/uv" venv --quiet --python 3.11 "$TOOLS/checkov"
  UV_PYTHON_DOWNLOADS=never "$TOOLS/bin/uv" pip install --quiet --require-hashes \
    --python "$TOOLS/checkov/bin/python" -r "$CHECKOV_REQUIREMENTS"
  touch "$CHECKOV_STAMP"
fi
ln -sf ../checkov/bin/checkov "$TOOLS/bin/checkov"
