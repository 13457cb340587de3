#!/usr/bin/env bash
# Restore a PostgreSQL dump written by the backup (postgres-<time>.dump) into $PGDATABASE,
# replacing the objects it contains, in one transaction. Stop the services that write
# first (docs/CHART.md, "Backups and restore"). Connection from the environment:
#   PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE (libpq), PG_BIN (pg_restore's folder, optional)
# Usage: scripts/restore.sh FILE
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/restore.sh postgres-<time>.dump" >&2; exit 2; }
exec sh "$(dirname "$0")/../charts/cdb/files/backup.sh" restore-postgres "$1"
