"""Backups: the CronJob's own script dumps a real PostgreSQL and snapshots a real Redis,
and the documented restore brings the same rows back into a fresh database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml
from psycopg import sql
from pydantic import SecretStr

from cdb.core.config import PostgresSettings
from cdb.core.db import apply_migrations
from tests.support import REDIS_PASSWORD, ROOT, eventually, free_port

BACKUP = ROOT / "scripts" / "backup.sh"
RESTORE = ROOT / "scripts" / "restore.sh"
PG_BIN = Path(os.path.realpath(ROOT / ".tools" / "bin" / "pg_ctl.real")).parent


def pg_env(info: Any, database: str) -> dict[str, str]:
    return {
        **os.environ,
        "PGHOST": info.host,
        "PGPORT": str(info.port),
        "PGUSER": info.user,
        "PGPASSWORD": info.password or "",
        "PGDATABASE": database,
        "PG_BIN": str(PG_BIN),
    }


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def table_rows(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        )
    ]
    return {
        table: conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(table))
        ).fetchall()
        for table in tables
    }


def seed_books(conn: psycopg.Connection[Any]) -> None:
    for i in range(40):
        conn.execute(
            "INSERT INTO signals (signal_id, event_id, symbol, side, confidence, reason, strategy,"
            " price, pct_change, signal_ts) VALUES (%s, %s, %s, %s, %s, 'momentum', 'momentum',"
            " %s, %s, now())",
            (f"sig-{i}", f"ev-{i}", "BTC_USDT", "long" if i % 2 else "short", 0.4, 43000 + i, 4.5),
        )
    for i in range(15):
        conn.execute(
            "INSERT INTO orders (order_id, signal_id, symbol, side, quantity, notional, price,"
            " stop_loss, mode, status) VALUES (%s, %s, 'BTC_USDT', 'long', 0.01, 430, 43000,"
            " 42140, 'paper', 'filled')",
            (f"ord-{i}", f"sig-{i}"),
        )
        conn.execute(
            "INSERT INTO fills (fill_id, order_id, symbol, side, kind, price, quantity, fee)"
            " VALUES (%s, %s, 'BTC_USDT', 'long', 'open', 43000.5, 0.01, 0.17)",
            (f"fill-{i}", f"ord-{i}"),
        )
    conn.execute(
        "INSERT INTO config_audit (bot, generation, config_hash, field, old_value, new_value,"
        " actor) VALUES ('mexc-momentum', 2, 'abc', 'signal.thresholdPct', '3.0', '2.5',"
        " 'kubectl')"
    )
    conn.commit()


@pytest.fixture
def fresh_database(postgresql: psycopg.Connection[Any]) -> Any:
    """A second, empty database on the same server, dropped afterwards."""
    info = postgresql.info
    name = f"{info.dbname}_restored"
    with psycopg.connect(
        host=info.host, port=info.port, user=info.user, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(
        host=info.host, port=info.port, user=info.user, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_postgres_dump_restores_into_a_fresh_database_with_the_same_rows(
    postgresql: psycopg.Connection[Any], fresh_database: str, tmp_path: Path
) -> None:
    info = postgresql.info
    settings = PostgresSettings(
        postgres_host=info.host,
        postgres_port=info.port,
        postgres_db=info.dbname,
        postgres_user=info.user,
        postgres_password=SecretStr(info.password or ""),
    )
    assert asyncio.run(apply_migrations(settings)), "the real schema, every migration"
    seed_books(postgresql)
    original = table_rows(postgresql)
    assert len(original["signals"]) == 40 and len(original["fills"]) == 15

    dumped = run(["bash", str(BACKUP), "postgres", str(tmp_path)], pg_env(info, info.dbname))
    assert dumped.returncode == 0, dumped.stderr
    (dump,) = tmp_path.glob("postgres-*.dump")
    assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert not list(tmp_path.glob("*.partial"))

    restored = run(["bash", str(RESTORE), str(dump)], pg_env(info, fresh_database))
    assert restored.returncode == 0, restored.stderr
    with psycopg.connect(
        host=info.host, port=info.port, user=info.user, dbname=fresh_database
    ) as c:
        assert table_rows(c) == original
        assert "_yoyo_migration" in original  # migration state travels: no re-run on start
        # sequences travel too: the next audit row does not collide
        c.execute(
            "INSERT INTO config_audit (bot, generation, config_hash, field, actor)"
            " VALUES ('b', 3, 'def', 'risk.stopLossPct', 'kubectl')"
        )
        # restoring again over existing data replaces it (--clean), same rows as the dump
        c.commit()
    again = run(["bash", str(RESTORE), str(dump)], pg_env(info, fresh_database))
    assert again.returncode == 0, again.stderr
    with psycopg.connect(
        host=info.host, port=info.port, user=info.user, dbname=fresh_database
    ) as c:
        assert table_rows(c) == original


def test_restore_of_a_bad_file_fails_clearly_and_changes_nothing(
    postgresql: psycopg.Connection[Any], fresh_database: str, tmp_path: Path
) -> None:
    info = postgresql.info
    with psycopg.connect(
        host=info.host, port=info.port, user=info.user, dbname=fresh_database
    ) as c:
        c.execute("CREATE TABLE keep_me (id int)")
        c.execute("INSERT INTO keep_me VALUES (1), (2)")
    bogus = tmp_path / "postgres-bogus.dump"
    bogus.write_text("not a dump\n")
    result = run(["bash", str(RESTORE), str(bogus)], pg_env(info, fresh_database))
    assert result.returncode != 0
    assert "input file" in result.stderr or "not a valid archive" in result.stderr
    missing = run(["bash", str(RESTORE), str(tmp_path / "nope.dump")], pg_env(info, fresh_database))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    with psycopg.connect(
        host=info.host, port=info.port, user=info.user, dbname=fresh_database
    ) as c:
        assert c.execute("SELECT count(*) FROM keep_me").fetchone() == (2,)


def test_redis_snapshot_loads_into_a_fresh_redis(
    redis_proc: Any, redisdb: Any, tmp_path: Path
) -> None:
    source = redis.Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD)
    for i in range(20):
        source.xadd("cdb:signals", {"event": f'{{"n": {i}}}'})
    source.set("cdb:checkpoint", "42")
    env = {
        **os.environ,
        "REDIS_HOST": redis_proc.host,
        "REDIS_PORT": str(redis_proc.port),
        "REDISCLI_AUTH": REDIS_PASSWORD,
    }
    result = run(["bash", str(BACKUP), "redis", str(tmp_path)], env)
    assert result.returncode == 0, result.stderr
    (snapshot,) = tmp_path.glob("redis-*.rdb")
    assert snapshot.read_bytes()[:5] == b"REDIS"
    assert REDIS_PASSWORD.encode() not in snapshot.read_bytes()  # no secret in a backup

    port = free_port()
    restored = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
         "--dbfilename", snapshot.name, "--appendonly", "no", "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port)
        eventually(client.ping, "the restored redis answering PING", timeout=30, every=0.05)
        assert client.get("cdb:checkpoint") == b"42"
        assert client.xrange("cdb:signals") == source.xrange("cdb:signals")
    finally:
        restored.send_signal(signal.SIGTERM)
        restored.wait(15)


def test_prune_keeps_recent_backups_and_removes_old_ones(tmp_path: Path) -> None:
    now = time.time()
    ages = {"postgres-old.dump": 10, "redis-old.rdb": 9, "postgres-new.dump": 1,
            "redis-new.rdb": 0, "notes.txt": 30, "postgres-x.dump.partial": 8}  # fmt: skip
    for name, days in ages.items():
        path = tmp_path / name
        path.write_text(name)
        os.utime(path, (now - days * 86400 - 60, now - days * 86400 - 60))
    refused = run(["bash", str(BACKUP), "prune", str(tmp_path), "seven"], dict(os.environ))
    assert refused.returncode == 1 and "whole number" in refused.stderr
    assert len(list(tmp_path.iterdir())) == len(ages)
    result = run(["bash", str(BACKUP), "prune", str(tmp_path), "7"], dict(os.environ))
    assert result.returncode == 0, result.stderr
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"postgres-new.dump", "redis-new.rdb", "notes.txt"}


def test_the_cronjob_runs_this_same_script_daily_at_three() -> None:
    helm = ROOT / ".tools" / "bin" / "helm"
    assert helm.exists(), "helm is missing: run `make setup`"
    rendered = subprocess.run(
        [str(helm), "template", "cdb", str(ROOT / "charts" / "cdb"), "-n", "cdb"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    script = next(o for o in objects if o["metadata"]["name"] == "cdb-backup-script")
    assert script["data"]["backup.sh"] == (ROOT / "charts/cdb/files/backup.sh").read_text()
    cron = next(o for o in objects if o["kind"] == "CronJob")
    assert cron["spec"]["schedule"] == "0 3 * * *"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    steps = [c["command"] for c in pod["initContainers"] + pod["containers"]]
    assert steps == [
        ["sh", "/scripts/backup.sh", "postgres", "/backups"],
        ["sh", "/scripts/backup.sh", "redis", "/backups"],
        ["sh", "/scripts/backup.sh", "prune", "/backups", "7"],
    ]
    mounted = {v["name"]: v for v in pod["volumes"]}
    assert not any("secret" in v for v in mounted.values()), "Secrets are never backed up"
