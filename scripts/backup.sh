#!/usr/bin/env bash
# Back up cdb from a workstation: the same script the chart's CronJob runs
# (charts/cdb/files/backup.sh). Connection from the environment:
#   PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE (libpq), PG_BIN (pg_dump's folder, optional)
#   REDIS_HOST REDIS_PORT REDISCLI_AUTH
# Usage: scripts/backup.sh postgres DIR | redis DIR | prune DIR DAYS
exec sh "$(dirname "$0")/../charts/cdb/files/backup.sh" "$@"
