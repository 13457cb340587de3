# Docker engine (Debian's docker.io): tests/image/test_image.py starts a private dockerd (no
# network, no iptables, vfs storage) to cut the image's build context with .dockerignore
# exactly as `docker build` does. Sourced by scripts/setup.sh. Root only (apt).
if ! command -v dockerd >/dev/null; then
  say "installing docker.io (the engine that test_image.py builds the context with)"
  BREW_NAME=docker apt_install docker.io
fi
if ! command -v docker-compose >/dev/null; then
  say "installing docker-compose (test_manifests_kompose.py validates kompose/docker-compose.yml)"
  BREW_NAME=docker-compose apt_install docker-compose
fi
