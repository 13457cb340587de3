# shellcheck shell=bash
# Root filesystems of the test images, made from Debian packages (no registry has the
# python/redis/postgres images here, and nothing inside a docker build may reach the
# network: the machine's HTTPS proxy re-signs certificates). tests/image/test_image.py and
# tests/image/test_compose_up.py `docker import` these tarballs:
#   python   stands in for python:3.11-slim (Debian bookworm's python3.11 + pip + venv,
#            `python`/`pip` on PATH, EXTERNALLY-MANAGED removed, as the official image)
#   redis    redis-server 7.0 (Debian)          postgres   PostgreSQL 15 (Debian)
# One `debootstrap --variant=minbase bookworm` from the machine's Debian mirror (~1 min),
# then apt-get in a chroot per image, slimmed (apt lists, caches, docs, locales).
# Cached under .tools/images/, rebuilt only when this file changes. Root only (Linux).
# Sourced by scripts/setup.sh (say, apt_install, as_root, TOOLS).
TEST_IMAGES_DIR="$TOOLS/images"
TEST_IMAGES_STAMP="$TEST_IMAGES_DIR/.built-$(sha256sum scripts/setup.d/26-test-images.sh | cut -c1-16)"

debian_mirror() {
  # The first URIs: of the machine's deb822 sources, else deb.debian.org.
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

test_image_rootfs() {
  # test_image_rootfs NAME BASE PACKAGES...: BASE copied, PACKAGES installed in a chroot,
  # slimmed, packed as $TEST_IMAGES_DIR/NAME.tar.
  local name=$1 base=$2 dir="$TEST_IMAGES_DIR/work/$1"
  shift 2
  rm -rf "$dir"
  cp -a "$base" "$dir"
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"  # no service starts in the chroot
  chmod 0755 "$dir/usr/sbin/policy-rc.d"
  mkdir -p "$dir/etc/postgresql-common"
  echo "create_main_cluster = false" >"$dir/etc/postgresql-common/createcluster.conf"
  mount -t proc proc "$dir/proc"
  # shellcheck disable=SC2064
  trap "umount '$dir/proc' 2>/dev/null || true" RETURN
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  umount "$dir/proc"
  rm -f "$dir/usr/sbin/policy-rc.d" "$dir"/usr/lib/python3*/EXTERNALLY-MANAGED
  if [ "$name" = postgres ]; then
    postgres_entrypoint >"$dir/usr/local/bin/docker-entrypoint.sh"
    # initdb needs a passwd entry for its UID: the chart runs every pod as 1000.
    chroot "$dir" sh -c 'usermod -u 1000 postgres && groupmod -g 1000 postgres'
  fi
  chmod 0755 "$dir"/usr/local/bin/docker-entrypoint.sh 2>/dev/null || true
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/var/log/*.log \
    "$dir"/var/log/apt/*
  find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
  tar --numeric-owner -C "$dir" -cf "$TEST_IMAGES_DIR/$name.tar.tmp" .
  mv "$TEST_IMAGES_DIR/$name.tar.tmp" "$TEST_IMAGES_DIR/$name.tar"
  rm -rf "$dir"
}

postgres_entrypoint() {
  # The official postgres image's contract, as far as the tests use it: on an empty
  # $PGDATA, initdb (UTF8, as the official image: psycopg reads SQL_ASCII text as bytes)
  # with $POSTGRES_USER/$POSTGRES_PASSWORD (scram), create $POSTGRES_DB,
  # listen on all addresses with password auth; then exec the command (`postgres ...`),
  # where arguments that start with "-" are postgres's (the chart passes only
  # `args: [-c, unix_socket_directories=/tmp]`, as the official image allows).
  cat <<'ENTRY'
#!/bin/sh
set -eu
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
: "${PGDATA:?}" "${POSTGRES_USER:=postgres}" "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chmod 0700 "$PGDATA"
  printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/.pwfile
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/.pwfile --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f /tmp/.pwfile
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\"" \
      | postgres --single -D "$PGDATA" -c unix_socket_directories=/tmp postgres >/dev/null
  fi
fi
exec "$@"
ENTRY
}

if [ "$(uname -s)" = Linux ] && as_root && command -v apt-get >/dev/null \
  && { [ ! -f "$TEST_IMAGES_STAMP" ] || [ ! -f "$TEST_IMAGES_DIR/python.tar" ]; }; then
  command -v debootstrap >/dev/null || apt_install debootstrap
  say "building the test images' root filesystems from Debian packages (~3 min, once)"
  rm -rf "$TEST_IMAGES_DIR"
  mkdir -p "$TEST_IMAGES_DIR/work"
  debootstrap --variant=minbase bookworm "$TEST_IMAGES_DIR/work/base" "$(debian_mirror)" >/dev/null
  test_image_rootfs python "$TEST_IMAGES_DIR/work/base" \
    python3.11 python3-pip python3-venv python-is-python3 ca-certificates
  test_image_rootfs redis "$TEST_IMAGES_DIR/work/base" redis-server
  test_image_rootfs postgres "$TEST_IMAGES_DIR/work/base" postgresql-15
  rm -rf "$TEST_IMAGES_DIR/work"
  touch "$TEST_IMAGES_STAMP"
fi
