#!/bin/sh
# cdb backup and restore: a PostgreSQL dump, a Redis snapshot, pruning, and the restore of a
# dump. POSIX sh, so the same file runs in the chart's backup CronJob (postgres and redis
# images) and on a workstation (scripts/backup.sh, scripts/restore.sh call it).
# Connection settings come from the environment only, never from arguments:
#   PostgreSQL: PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD (libpq); PG_BIN = directory of
#               pg_dump/pg_restore when they are not on PATH.
#   Redis:      REDIS_HOST REDIS_PORT REDISCLI_AUTH (redis-cli reads the password from it).
# Secrets are never written into a backup: the dump holds the database only.
set -eu

usage() {
  cat >&2 <<'USAGE'
usage: backup.sh postgres DIR           write DIR/postgres-<UTC time>.dump (pg_dump custom format)
       backup.sh redis DIR              write DIR/redis-<UTC time>.rdb (redis-cli --rdb)
       backup.sh prune DIR DAYS         delete backups in DIR older than DAYS days
       backup.sh restore-postgres FILE  restore a dump into $PGDATABASE (replaces its objects)
USAGE
  exit 2
}

die() { echo "backup: $*" >&2; exit 1; }
bin() { if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN/$1"; else echo "$1"; fi; }
stamp() { date -u +%Y%m%dT%H%M%SZ; }

[ $# -ge 2 ] || usage
command=$1
target=$2

case "$command" in
  postgres)
    [ -d "$target" ] || die "backup directory $target does not exist"
    : "${PGDATABASE:?set PGDATABASE}"
    out="$target/postgres-$(stamp).dump"
    # Written under a temporary name and renamed, so a half-written dump is never kept.
    "$(bin pg_dump)" --format=custom --no-owner --no-privileges --file="$out.partial"
    mv "$out.partial" "$out"
    echo "backup: wrote $out"
    ;;
  redis)
    [ -d "$target" ] || die "backup directory $target does not exist"
    out="$target/redis-$(stamp).rdb"
    redis-cli -h "${REDIS_HOST:-127.0.0.1}" -p "${REDIS_PORT:-6379}" --no-auth-warning --rdb "$out.partial" >/dev/null
    mv "$out.partial" "$out"
    echo "backup: wrote $out"
    ;;
  prune)
    [ $# -eq 3 ] || usage
    days=$3
    case "$days" in ''|*[!0-9]*) die "DAYS must be a whole number, got '$days'" ;; esac
    [ -d "$target" ] || die "backup directory $target does not exist"
    find "$target" -maxdepth 1 -type f \
      \( -name 'postgres-*.dump' -o -name 'redis-*.rdb' -o -name '*.partial' \) \
      -mtime +"$days" -print -exec rm -f {} +
    ;;
  restore-postgres)
    [ -f "$target" ] || die "dump file $target does not exist"
    : "${PGDATABASE:?set PGDATABASE}"
    "$(bin pg_restore)" --clean --if-exists --no-owner --no-privileges --exit-on-error \
      --single-transaction --dbname="$PGDATABASE" "$target"
    echo "backup: restored $target into database $PGDATABASE"
    ;;
  *)
    usage
    ;;
esac
