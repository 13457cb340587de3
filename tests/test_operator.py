"""The operator running for real: kopf (its own KopfRunner) against KMock's Kubernetes API,
with the harness's real Redis and PostgreSQL, and a real signal_engine process.

KMock stands in for the API server; where an API server or controller would act, the test
does it and says so: it assigns ``uid``/``generation``/``managedFields`` on writes (the API
server), and sets a StatefulSet's status (the StatefulSet controller). Nothing else is
simulated. docs/OPERATOR.md lists what only a real cluster can show.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml
from aiohttp import web
from kopf.testing import KopfRunner
from redis.asyncio import Redis

from cdb.core.bus import Bus, connect_redis
from cdb.core.db import Database
from cdb.core.events import Control, Stream
from cdb_operator.audit import AuditLog
from cdb_operator.context import OperatorContext
from cdb_operator.handlers import build_registry, configure_kopf
from cdb_operator.kube import KubeClient
from cdb_operator.metrics import OperatorMetrics
from cdb_operator.reconcile import refresh_readiness
from cdb_operator.settings import OperatorEnv
from cdb_operator.universe import UniverseClient
from tests.conftest import REDIS_PASSWORD
from tests.support import ROOT, SIM_CLOCK, ServiceProcess, free_port, scrape
from tests.test_pipeline_support import RedisServer

NAMESPACE = "cdb"
BOTS = f"/apis/cdb.io/v1alpha1/namespaces/{NAMESPACE}/tradingbots"
CONFIGMAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
STATEFULSETS = f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets"
MERGE = {"Content-Type": "application/merge-patch+json"}
WAIT_S = 30.0
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


def symbols(count: int) -> list[str]:
    return [f"C{i:04d}_USDT" for i in range(count)]


def bots_path(namespace: str = NAMESPACE) -> str:
    return f"/apis/cdb.io/v1alpha1/namespaces/{namespace}/tradingbots"


def bot_manifest(
    name: str,
    spec: dict[str, Any],
    namespace: str = NAMESPACE,
    created: str = "2026-11-25T05:00:00Z",
) -> dict[str, Any]:
    """What ``kubectl apply`` sends, plus what the API server adds (uid, generation, …)."""
    return {
        "apiVersion": "cdb.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": created,
            "generation": 1,
            "resourceVersion": "1",
            "managedFields": [managed_by("kubectl-client-side-apply", "2026-11-25T05:00:00Z")],
        },
        "spec": spec,
    }


def managed_by(manager: str, when: str) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": "Update",
        "apiVersion": "cdb.io/v1alpha1",
        "time": when,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {".": {}}},
    }


@pytest.fixture
async def cluster(kmock: Any) -> Any:
    """KMock serving the resources the operator uses, with the operator's namespace."""
    kmock.resources["v1/namespaces"] = {"kind": "Namespace", "namespaced": False, "verbs": VERBS}
    kmock.resources["v1/configmaps"] = {"kind": "ConfigMap", "namespaced": True, "verbs": VERBS}
    kmock.resources["v1/services"] = {"kind": "Service", "namespaced": True, "verbs": VERBS}
    kmock.resources["v1/events"] = {"kind": "Event", "namespaced": True, "verbs": VERBS}
    kmock.resources["apps/v1/statefulsets"] = {
        "kind": "StatefulSet",
        "namespaced": True,
        "subresources": ["status", "scale"],
        "verbs": VERBS,
    }
    kmock.resources["cdb.io/v1alpha1/tradingbots"] = {
        "kind": "TradingBot",
        "singular": "tradingbot",
        "namespaced": True,
        "shortnames": ["tb"],
        "subresources": ["status"],
        "verbs": VERBS,
    }
    kmock.objects["v1/namespaces", None, NAMESPACE] = {"metadata": {"name": NAMESPACE}}
    return kmock


@pytest.fixture
def operator_env(service_env: dict[str, str]) -> dict[str, str]:
    return {
        **service_env,
        "OPERATOR_NAMESPACE": NAMESPACE,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(free_port()),
        "BOT_WS_IMAGE": "registry.local/cdb:test",
        "REDIS_SECRET_NAME": "redis",
        "POSTGRES_SECRET_NAME": "postgres",
        "MEXC_WS_URL": "ws://mexc-sim:8010/edge",
        "MEXC_REST_URL": "http://mexc-sim:8010",
        "BOT_REST_URL": "http://127.0.0.1:9/unused",
        "RETRY_DELAY_S": "0.5",
        "BUS_PUBLISH_TIMEOUT_S": "1",
        "UNIVERSE_REFRESH_S": "3600",
    }


@contextmanager
def running_operator(cluster: Any, env: dict[str, str]) -> Iterator[KopfRunner]:
    """The real operator (kopf CLI ``run``) in a thread, logged in to KMock."""
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    registry = build_registry(
        OperatorEnv(_env_file=None, **{k.lower(): v for k, v in env.items()}),
        kopf.ConnectionInfo(server=str(cluster.url).rstrip("/")),
    )
    # Cluster-wide: KMock 0.8 cannot parse `GET /api/v1/namespaces`, which kopf's namespace
    # observer sends when run with `--namespace` (the production mode, docs/OPERATOR.md).
    args = ["run", "--standalone", "--all-namespaces", "--verbose"]
    with KopfRunner(args, registry=registry, settings=settings, timeout=30) as runner:
        yield runner
    assert runner.exception is None, runner.output


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT_S
) -> Any:
    """Poll ``check`` (on the test's loop, so KMock keeps serving) until it returns truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (KeyError, AssertionError, httpx.HTTPError) as error:
            last = error
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def read(cluster: Any, path: str) -> dict[str, Any] | None:
    async with cluster.get(path) as reply:
        return await reply.json() if reply.status == 200 else None


async def create_bot(
    cluster: Any,
    name: str,
    spec: dict[str, Any],
    namespace: str = NAMESPACE,
    created: str = "2026-11-25T05:00:00Z",
) -> dict[str, Any]:
    manifest = bot_manifest(name, spec, namespace, created)
    async with cluster.post(bots_path(namespace), json=manifest) as reply:
        assert reply.status in (200, 201), await reply.text()
    return manifest


async def edit_bot(cluster: Any, name: str, spec_patch: dict[str, Any], manager: str) -> None:
    """``kubectl edit``: the spec changes, and the API server bumps generation/managedFields."""
    current = await read(cluster, f"{BOTS}/{name}")
    assert current is not None
    generation = int(current["metadata"].get("generation", 1)) + 1
    patch = {
        "metadata": {
            "generation": generation,
            "managedFields": [managed_by(manager, f"2026-11-25T05:{generation:02d}:00Z")],
        },
        "spec": spec_patch,
    }
    async with cluster.patch(f"{BOTS}/{name}", json=patch, headers=MERGE) as reply:
        assert reply.status == 200, await reply.text()


def condition(bot: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for item in ((bot or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


async def controls(redis: Redis, bot: str) -> list[Control]:
    entries = await redis.xrange(Stream.CONTROL.value)
    events = [Control.model_validate_json(fields[b"event"]) for _, fields in entries]
    return [e for e in events if e.bot == bot]


@pytest.fixture
async def redis(redis_proc: Any, redisdb: Any) -> AsyncIterator[Redis]:
    from tests.conftest import REDIS_PASSWORD

    client = Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD)
    yield client
    await client.aclose()


def audit_rows(postgresql: Any, bot: str) -> list[tuple[Any, ...]]:
    with postgresql.cursor() as cur:
        cur.execute(
            "SELECT field, old_value, new_value, actor, generation, config_hash "
            "FROM config_audit WHERE bot = %s ORDER BY id",
            (bot,),
        )
        return list(cur.fetchall())


def writes_to(cluster: Any, plural: str) -> list[Any]:
    return [
        r
        for r in list(cluster)
        if r.resource is not None
        and r.resource.plural == plural
        and str(r.method.value) in ("POST", "PATCH", "PUT", "DELETE")
    ]


def is_request(request: Any, method: str, plural: str) -> bool:
    resource = request.resource
    return resource is not None and resource.plural == plural and request.method.value == method


def first_request(
    log: list[Any], method: str, plural: str, matches: Callable[[dict[str, Any]], bool]
) -> int:
    """The index in KMock's request log of the first such request whose body matches."""
    for index, request in enumerate(log):
        if is_request(request, method, plural) and isinstance(request.data, dict):
            try:
                if matches(request.data):
                    return index
            except (KeyError, TypeError):
                continue
    raise AssertionError(f"no {method} {plural} request matched")


def env_of(stateful_set: dict[str, Any]) -> dict[str, Any]:
    container = stateful_set["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def test_created_bot_gets_its_config_map_and_one_screener_pod_per_chunk(
    cluster: Any, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        manifest = await create_bot(
            cluster, "momentum", {"symbols": symbols(450), "chunkSize": 200}
        )
        sts = await eventually(lambda: read(cluster, f"{STATEFULSETS}/momentum-bot-ws"), "sts")
        bot = await eventually(
            lambda: _with_status(cluster, "momentum", "configHash"), "status.configHash"
        )
        events = await eventually(lambda: _events(cluster, "momentum"), "Events")

    assert sts["spec"]["replicas"] == 3
    env = env_of(sts)
    assert env["CHUNK_COUNT"] == "3" and env["CHUNK_SIZE"] == "200"
    assert env["SYMBOLS"] == {"configMapKeyRef": {"name": "momentum-config", "key": "symbols"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis", "key": "bot_ws-password"}}
    assert env["REDIS_USERNAME"] == "bot_ws"  # the screener's own Redis ACL user
    assert env["POSTGRES_PASSWORD"] == {
        "secretKeyRef": {"name": "postgres", "key": "postgres-password"}
    }
    assert env["LOOKBACK_MIN"] == "15" and env["MEXC_WS_URL"] == "ws://mexc-sim:8010/edge"
    # The screener pods fetch through bot_rest (one pacer and cache for all of them).
    assert env["BOT_REST_URL"] == operator_env["BOT_REST_URL"] and env["BOT_NAME"] == "momentum"
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.local/cdb:test"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/data"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["resources"]["limits"] and container["resources"]["requests"]

    config_map = await read(cluster, f"{CONFIGMAPS}/momentum-config")
    assert config_map is not None
    assert config_map["data"]["symbols"].split(",") == symbols(450)
    assert json.loads(config_map["data"]["config.json"])["chunks"] == 3
    uid = manifest["metadata"]["uid"]
    for owned in (sts, config_map):
        assert owned is not None
        assert owned["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "cdb.io/v1alpha1",
                "kind": "TradingBot",
                "name": "momentum",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]

    status = bot["status"]
    assert (status["chunks"], status["symbols"], status["observedGeneration"]) == (3, 450, 1)
    assert condition(bot, "Degraded")["status"] == "False"
    ready = condition(bot, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ChunksStarting")
    assert condition(bot, "Progressing")["status"] == "True"

    [control] = await controls(redis, "momentum")
    assert control.settings.signal_threshold_pct == 3.0 and control.settings.paused is False
    assert control.config_hash == status["configHash"] and control.generation == 1

    rows = audit_rows(postgresql, "momentum")
    fields = {row[0]: row for row in rows}
    assert fields["chunkSize"][2] == 200 and fields["chunkSize"][1] is None
    assert fields["chunkSize"][3] == "kubectl-client-side-apply"
    assert len(fields["symbols"][2]) == 450
    assert [e["reason"] for e in events] == ["ConfigApplied"]
    assert "450 symbols in 3 chunks" in events[0]["message"]


async def _with_status(
    cluster: Any, name: str, key: str, value: Any = None, namespace: str = NAMESPACE
) -> dict[str, Any] | None:
    bot = await read(cluster, f"{bots_path(namespace)}/{name}")
    status = (bot or {}).get("status") or {}
    if key not in status or (value is not None and status[key] != value):
        return None
    return bot


async def _events(cluster: Any, name: str, reason: str | None = None) -> list[dict[str, Any]]:
    """Events the operator posted, from KMock's request log.

    kopf names Events by ``generateName``, which KMock 0.8 does not expand: it stores the
    first Event of a namespace and answers 409 to the rest. What was posted is the record.
    """
    return [
        r.data
        for r in list(cluster)
        if r.resource is not None
        and r.resource.plural == "events"
        and r.method.value == "POST"
        and isinstance(r.data, dict)
        and r.data.get("involvedObject", {}).get("name") == name
        and (reason is None or r.data.get("reason") == reason)
    ]


async def test_editing_chunk_size_rescales_the_screener_and_audits_who_did_it(
    cluster: Any, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        await create_bot(cluster, "momentum", {"symbols": symbols(450), "chunkSize": 200})
        await eventually(lambda: _with_status(cluster, "momentum", "chunks", 3), "3 chunks")
        await edit_bot(cluster, "momentum", {"chunkSize": 100}, manager="kubectl-edit")
        bot = await eventually(lambda: _with_status(cluster, "momentum", "chunks", 5), "5 chunks")
        sts = await read(cluster, f"{STATEFULSETS}/momentum-bot-ws")
        changed = await eventually(
            lambda: _events(cluster, "momentum", "ConfigChanged"), "ConfigChanged events"
        )

    assert sts is not None and sts["spec"]["replicas"] == 5
    assert env_of(sts)["CHUNK_COUNT"] == "5" and env_of(sts)["CHUNK_SIZE"] == "100"
    # The rescale's StatefulSet event makes the operator refresh the bot's conditions. kopf
    # writes the edit's status after the reconcile; a refresh patch before it would be
    # computed from generation 1's status and land over the new one.
    log = list(cluster)
    rescale = first_request(log, "PATCH", "statefulsets", lambda d: d["spec"]["replicas"] == 5)
    written = first_request(
        log, "PATCH", "tradingbots", lambda d: d["status"]["observedGeneration"] == 2
    )
    refreshes = [
        i
        for i, r in enumerate(log)
        if i > rescale
        and is_request(r, "PATCH", "tradingbots")
        and isinstance(r.data, dict)
        and set(r.data.get("status") or {}) == {"conditions"}
    ]
    assert all(written < i for i in refreshes), (written, refreshes)
    assert bot["status"]["observedGeneration"] == 2
    assert bot["status"]["lastChange"]["actor"] == "kubectl-edit"
    assert bot["status"]["lastChange"]["fields"] == ["chunkSize", "chunks"]
    chunk_rows = [row for row in audit_rows(postgresql, "momentum") if row[0] == "chunkSize"]
    assert [(r[1], r[2], r[3], r[4]) for r in chunk_rows] == [
        (None, 200, "kubectl-client-side-apply", 1),
        (200, 100, "kubectl-edit", 2),
    ]
    messages = sorted(e["message"] for e in changed)
    assert messages == ["chunkSize: 200 -> 100 by kubectl-edit", "chunks: 3 -> 5 by kubectl-edit"]
    # Only the live settings travel on the bus: a rescale alone publishes no control event.
    assert len(await controls(redis, "momentum")) == 1


@pytest.mark.slow
async def test_threshold_and_pause_reach_a_running_signal_engine_without_restarts(
    cluster: Any,
    operator_env: dict[str, str],
    service_env: dict[str, str],
    postgresql: Any,
    tmp_path: Path,
) -> None:
    engine = ServiceProcess("cdb.signal_engine", service_env, tmp_path)
    with engine, running_operator(cluster, operator_env):
        await asyncio.to_thread(engine.wait_healthy, 60.0, ("ok", "stale"))
        pid = engine.proc.pid if engine.proc else None
        await create_bot(cluster, "momentum", {"symbols": ["BTC_USDT", "ETH_USDT"]})
        await eventually(lambda: _engine_control(engine, 1), "the first control applied")
        sts_before = await read(cluster, f"{STATEFULSETS}/momentum-bot-ws")
        sts_writes = len(writes_to(cluster, "statefulsets"))

        await edit_bot(cluster, "momentum", {"signal": {"thresholdPct": 4.5}}, "kubectl-edit")
        status = await eventually(
            lambda: _engine_in_force(engine, "threshold_pct", 4.5), "4.5 in force"
        )
        assert status["control"]["generation"] == 2

        await edit_bot(cluster, "momentum", {"trading": {"paused": True}}, "kubectl-patch")
        await eventually(lambda: _engine_in_force(engine, "paused", True), "paused in force")
        bot = await eventually(
            lambda: _with_status(cluster, "momentum", "observedGeneration", 3), "generation 3"
        )
        sts_after = await read(cluster, f"{STATEFULSETS}/momentum-bot-ws")
        assert engine.proc is not None and engine.proc.pid == pid and engine.proc.poll() is None

    # Live settings never touch the screener: not one write, the pod template unchanged.
    assert len(writes_to(cluster, "statefulsets")) == sts_writes
    assert sts_before is not None and sts_after is not None
    assert sts_after["spec"]["template"] == sts_before["spec"]["template"]
    assert bot["status"]["lastChange"]["fields"] == ["trading.paused"]
    assert bot["status"]["lastChange"]["actor"] == "kubectl-patch"
    assert condition(bot, "Degraded")["status"] == "False"
    rows = {(r[0], json.dumps(r[1]), json.dumps(r[2])) for r in audit_rows(postgresql, "momentum")}
    assert ("signal.thresholdPct", "3.0", "4.5") in rows
    assert ("trading.paused", "false", "true") in rows


async def _engine_control(engine: ServiceProcess, generation: int) -> dict[str, Any] | None:
    status = await asyncio.to_thread(engine.status)
    control = status.get("control") or {}
    return status if control.get("generation") == generation else None


async def _engine_in_force(engine: ServiceProcess, key: str, value: Any) -> dict[str, Any] | None:
    status = await asyncio.to_thread(engine.status)
    return status if status.get("in_force", {}).get(key) == value else None


async def test_deleting_a_bot_pauses_trading_and_leaves_cleanup_to_owner_references(
    cluster: Any, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        manifest = await create_bot(cluster, "momentum", {"symbols": ["BTC_USDT"]})
        bot = await eventually(lambda: _with_status(cluster, "momentum", "configHash"), "applied")
        assert bot["metadata"]["finalizers"] == ["cdb.io/tradingbot"]
        async with cluster.delete(f"{BOTS}/momentum") as reply:
            assert reply.status == 200
        await eventually(lambda: _gone(cluster, f"{BOTS}/momentum"), "bot deleted")
        events = await controls(redis, "momentum")

    assert [e.settings.paused for e in events] == [False, True]
    assert events[-1].settings.model_dump(exclude_none=True) == {"paused": True}
    # KMock has no garbage collector: what the operator owns is proven by the references.
    uid = manifest["metadata"]["uid"]
    for path in (f"{CONFIGMAPS}/momentum-config", f"{STATEFULSETS}/momentum-bot-ws"):
        owned = await read(cluster, path)
        assert owned is not None
        [owner] = owned["metadata"]["ownerReferences"]
        assert (owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (uid, True, True)
    deleted = [r for r in audit_rows(postgresql, "momentum") if r[0] == "deleted"]
    assert len(deleted) == 1 and deleted[0][1] == bot["status"]["configHash"]


async def _gone(cluster: Any, path: str) -> bool:
    return await read(cluster, path) is None


async def test_every_change_is_audited_also_one_back_to_an_earlier_config(
    cluster: Any, operator_env: dict[str, str], postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        first = await create_bot(cluster, "momentum", {"symbols": ["BTC_USDT"]})
        await eventually(lambda: _with_status(cluster, "momentum", "configHash"), "applied")
        edits = [
            ({"trading": {"paused": True}}, "kubectl-patch"),
            ({"trading": {"paused": False}}, "kubectl-patch"),  # back to the first config
            ({"trading": {"paused": True}}, "kubectl-patch"),
            ({"signal": {"thresholdPct": 4.5}}, "kubectl-edit"),
            ({"signal": {"thresholdPct": 3.0}}, "kubectl-edit"),  # an undo
        ]
        for generation, (spec_patch, manager) in enumerate(edits, start=2):
            await edit_bot(cluster, "momentum", spec_patch, manager)
            await eventually(
                lambda g=generation: _with_status(cluster, "momentum", "observedGeneration", g),
                f"generation {generation}",
            )
        # Deleted, then created again with the same spec (a new uid). KMock has no garbage
        # collector: the test removes the owned objects as Kubernetes' GC would.
        async with cluster.delete(f"{BOTS}/momentum") as reply:
            assert reply.status == 200
        await eventually(lambda: _gone(cluster, f"{BOTS}/momentum"), "bot deleted")
        for path in (f"{CONFIGMAPS}/momentum-config", f"{STATEFULSETS}/momentum-bot-ws"):
            async with cluster.delete(path) as reply:
                assert reply.status == 200
        second = await create_bot(cluster, "momentum", {"symbols": ["BTC_USDT"]})
        await eventually(lambda: _with_status(cluster, "momentum", "configHash"), "recreated")

    rows = audit_rows(postgresql, "momentum")
    assert [(r[1], r[2], r[3], r[4]) for r in rows if r[0] == "trading.paused"] == [
        (None, False, "kubectl-client-side-apply", 1),
        (False, True, "kubectl-patch", 2),
        (True, False, "kubectl-patch", 3),
        (False, True, "kubectl-patch", 4),
        (None, False, "kubectl-client-side-apply", 1),  # the bot created again
    ]
    assert [(r[1], r[2]) for r in rows if r[0] == "signal.thresholdPct"] == [
        (None, 3.0),
        (3.0, 4.5),
        (4.5, 3.0),
        (None, 3.0),
    ]
    assert [r[0] for r in rows].count("deleted") == 1
    with postgresql.cursor() as cur:
        cur.execute("SELECT DISTINCT bot_uid FROM config_audit WHERE bot = 'momentum'")
        uids = {row[0] for row in cur.fetchall()}
    assert uids == {first["metadata"]["uid"], second["metadata"]["uid"]}


@asynccontextmanager
async def fake_bot_rest(universe: dict[str, list[str]]) -> AsyncIterator[str]:
    """bot_rest's ``GET /universe``, answering whatever ``universe["symbols"]`` is now."""

    async def answer(_: web.Request) -> web.Response:
        return web.json_response({"symbols": universe["symbols"]})

    app = web.Application()
    app.add_routes([web.get("/universe", answer)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_each_universe_refresh_is_audited_as_such_also_a_flip_back(
    cluster: Any, operator_env: dict[str, str], postgresql: Any
) -> None:
    two, three = ["A_USDT", "B_USDT"], ["A_USDT", "B_USDT", "C_USDT"]
    universe = {"symbols": two}
    async with fake_bot_rest(universe) as url:
        env = {**operator_env, "BOT_REST_URL": url, "UNIVERSE_REFRESH_S": "1"}
        with running_operator(cluster, env):
            await create_bot(cluster, "universe", {"universe": "all-usdt-perpetuals"})
            await eventually(lambda: _with_status(cluster, "universe", "symbols", 2), "2 symbols")
            # A contract listed, delisted, listed again: no spec edit, generation 1 throughout.
            for symbols in (three, two, three):
                universe["symbols"] = symbols
                count = len(symbols)
                await eventually(
                    lambda n=count: _with_status(cluster, "universe", "symbols", n),
                    f"{count} symbols",
                )

    rows = [r for r in audit_rows(postgresql, "universe") if r[0] == "symbols"]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        (None, two, "kubectl-client-side-apply", 1),
        (two, three, "universe-refresh", 1),
        (three, two, "universe-refresh", 1),
        (two, three, "universe-refresh", 1),
    ]


async def test_the_oldest_bot_of_a_namespace_drives_its_pipeline_alone(
    cluster: Any, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    env = {**operator_env, "UNIVERSE_REFRESH_S": "1"}  # the timer hands over
    zeta = bot_manifest("zeta", {"symbols": ["BTC_USDT"]}, created="2026-11-25T05:00:00Z")
    alpha = bot_manifest(
        "alpha",
        {"symbols": ["ETH_USDT"], "signal": {"thresholdPct": 5.0}},
        created="2026-11-25T05:01:00Z",
    )
    beta = bot_manifest("beta", {"symbols": ["SOL_USDT"]}, created="2026-11-25T05:02:00Z")
    # alpha's screener from before bots were exclusive (an older operator created it).
    old_screener = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "alpha-bot-ws",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "cdb-operator", "cdb.io/bot": "alpha"},
            "ownerReferences": [
                {
                    "apiVersion": "cdb.io/v1alpha1",
                    "kind": "TradingBot",
                    "name": "alpha",
                    "uid": alpha["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"replicas": 1},
    }
    # All there before the operator starts: which bot is oldest must not depend on whether
    # a reconcile's LIST ran before or after the next POST.
    async with cluster.post(STATEFULSETS, json=old_screener) as reply:
        assert reply.status in (200, 201)
    for manifest in (alpha, zeta, beta):  # the order of creation does not matter
        async with cluster.post(BOTS, json=manifest) as reply:
            assert reply.status in (200, 201)
    with running_operator(cluster, env):
        await eventually(lambda: _with_status(cluster, "zeta", "configHash"), "zeta applied")
        standby = {
            name: await eventually(
                lambda name=name: _degraded(cluster, name, "AnotherBotActive"), f"{name} stands by"
            )
            for name in ("alpha", "beta")
        }
        await eventually(lambda: _gone(cluster, f"{STATEFULSETS}/alpha-bot-ws"), "old screener")

        # Deleting a bot that stands by leaves the pipeline alone.
        async with cluster.delete(f"{BOTS}/beta") as reply:
            assert reply.status == 200
        await eventually(lambda: _gone(cluster, f"{BOTS}/beta"), "beta deleted")
        # Deleting the active bot pauses the pipeline; the next oldest takes over.
        async with cluster.delete(f"{BOTS}/zeta") as reply:
            assert reply.status == 200
        await eventually(lambda: _gone(cluster, f"{BOTS}/zeta"), "zeta deleted")
        active = await eventually(lambda: _with_status(cluster, "alpha", "configHash"), "takeover")
        screener = await eventually(lambda: read(cluster, f"{STATEFULSETS}/alpha-bot-ws"), "sts")
        warnings = await _events(cluster, "alpha", "AnotherBotActive")

    zeta_uid = zeta["metadata"]["uid"]
    for bot in standby.values():
        degraded = condition(bot, "Degraded")
        assert "TradingBot zeta drives the pipeline of namespace cdb" in degraded["message"]
        assert bot["status"]["standbyFor"] == f"zeta/{zeta_uid}"
        assert condition(bot, "Ready")["reason"] == "Standby"
        assert "configHash" not in bot["status"] and "liveConfigHash" not in bot["status"]
    assert len(warnings) == 1  # on becoming standby, not on every timer tick
    assert await read(cluster, f"{CONFIGMAPS}/beta-config") is None
    assert await read(cluster, f"{STATEFULSETS}/beta-bot-ws") is None
    assert [r[0] for r in audit_rows(postgresql, "beta")] == ["deleted"]

    stream = [
        Control.model_validate_json(fields[b"event"])
        for _, fields in await redis.xrange(Stream.CONTROL.value)
    ]
    assert [(e.bot, e.settings.paused) for e in stream] == [
        ("zeta", False),
        ("zeta", True),  # its deletion paused the pipeline
        ("alpha", False),  # then alpha took it over with its own settings
    ]
    assert stream[-1].settings.signal_threshold_pct == 5.0
    assert stream[-1].bot_uid == alpha["metadata"]["uid"]
    assert "standbyFor" not in active["status"]
    assert condition(active, "Degraded")["status"] == "False"
    assert screener["metadata"]["ownerReferences"][0]["uid"] == alpha["metadata"]["uid"]
    assert audit_rows(postgresql, "alpha")[0][3] == "kubectl-client-side-apply"


async def test_a_deletion_waits_through_a_database_outage_instead_of_giving_up(
    cluster: Any, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    env = {**operator_env, "RETRY_DELAY_S": "0.1"}  # backoff 0.1, 0.2, 0.4, … s
    with running_operator(cluster, env):
        await create_bot(cluster, "momentum", {"symbols": ["BTC_USDT"]})
        await eventually(lambda: _with_status(cluster, "momentum", "configHash"), "applied")
        # config_audit unwritable: as good as PostgreSQL down, for this one table.
        postgresql.execute("ALTER TABLE config_audit RENAME TO config_audit_away")
        postgresql.commit()
        async with cluster.delete(f"{BOTS}/momentum") as reply:
            assert reply.status == 200
        # Well past kopf's former limit of five tries, the bot still waits with its finalizer.
        # Attempts counted by their Warning Events: kopf's own retry counter lives in an
        # annotation that KMock's plain-merge status patches can reset.
        await eventually(
            lambda: _at_least(_events(cluster, "momentum", "DeletionBlocked"), 7), "7 tries"
        )
        blocked = await read(cluster, f"{BOTS}/momentum")
        assert blocked is not None
        postgresql.execute("ALTER TABLE config_audit_away RENAME TO config_audit")
        postgresql.commit()
        await eventually(lambda: _gone(cluster, f"{BOTS}/momentum"), "bot deleted")
        warnings = await _events(cluster, "momentum", "DeletionBlocked")

    assert blocked["metadata"]["finalizers"] == ["cdb.io/tradingbot"]
    message = condition(blocked, "Degraded")["message"]
    assert "writing the deleted audit row failed: UndefinedTable" in message
    assert len(warnings) >= 7 and warnings[0]["type"] == "Warning"
    assert [r[0] for r in audit_rows(postgresql, "momentum")].count("deleted") == 1
    # The pause went out once, not once per attempt.
    assert [e.settings.paused for e in await controls(redis, "momentum")] == [False, True]


async def _at_least(items: Awaitable[list[Any]], count: int) -> bool:
    return len(await items) >= count


async def test_a_replayed_reconcile_writes_nothing(
    cluster: Any, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        await create_bot(cluster, "momentum", {"symbols": symbols(450)})
        await eventually(lambda: _with_status(cluster, "momentum", "configHash"), "applied")
    # The state the first operator left (its last status write may follow "applied").
    first = await read(cluster, f"{BOTS}/momentum")
    assert first is not None
    writes = {p: len(writes_to(cluster, p)) for p in ("configmaps", "statefulsets", "events")}
    rows = audit_rows(postgresql, "momentum")
    published = await controls(redis, "momentum")

    # A restarted operator resumes every bot (and KMock replays every object to each watch).
    reads_before = len(_reads_of(cluster, "statefulsets"))
    with running_operator(cluster, operator_env):
        # The resume handler's reconcile ends by reading the StatefulSet it would write.
        await eventually(
            lambda: _more_than(len(_reads_of(cluster, "statefulsets")), reads_before),
            "the resumed reconcile",
        )
        await asyncio.sleep(1.0)  # room for a stray write to show up before we count
        again = await read(cluster, f"{BOTS}/momentum")

    assert {p: len(writes_to(cluster, p)) for p in writes} == writes
    assert audit_rows(postgresql, "momentum") == rows
    assert await controls(redis, "momentum") == published and len(published) == 1
    assert again is not None and again["status"] == first["status"]


def _reads_of(cluster: Any, plural: str) -> list[Any]:
    return [
        r
        for r in list(cluster)
        if r.resource is not None
        and r.resource.plural == plural
        and r.method.value == "GET"
        and r.name is not None
    ]


async def _more_than(value: int, floor: int) -> bool:
    return value > floor


async def test_an_unreachable_bus_shows_as_degraded_and_is_retried(
    cluster: Any, operator_env: dict[str, str], postgresql: Any
) -> None:
    env = {**operator_env, "REDIS_PORT": str(free_port())}  # nothing listens there
    with running_operator(cluster, env):
        await create_bot(cluster, "momentum", {"symbols": ["BTC_USDT"]})
        bot = await eventually(lambda: _degraded(cluster, "momentum", "BusUnreachable"), "degraded")
        port = env["HTTP_PORT"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            health = (await client.get("/health")).json()
            status = (await client.get("/status")).json()
            metrics = await eventually(lambda: _retries(client), "retry counted")
        warnings = await eventually(
            lambda: _events(cluster, "momentum", "BusUnreachable"), "Warning event"
        )

    assert health == {"status": "ok"} and status["bus"] == "unreachable"
    assert condition(bot, "Ready") | {"lastTransitionTime": ""} == {
        "type": "Ready",
        "status": "False",
        "reason": "ConfigNotApplied",
        "message": "the latest spec is not applied: BusUnreachable",
        "lastTransitionTime": "",
        "observedGeneration": 1,
    }
    assert "redis" in condition(bot, "Degraded")["message"]
    assert "liveConfigHash" not in bot["status"]
    assert warnings[0]["type"] == "Warning"
    assert 'cdb_operator_reconciles_total{outcome="retry"}' in metrics
    # The audit went first: the change is recorded even though it is not live yet.
    assert {r[0] for r in audit_rows(postgresql, "momentum")} >= {"symbols", "chunkSize"}


async def test_a_change_cut_off_after_its_audit_keeps_its_event_and_last_change(
    cluster: Any, operator_env: dict[str, str], tmp_path: Path
) -> None:
    """Redis is down when a threshold edit is to be published: the audit row and the
    ConfigMap are written, then the publish fails. The retry diffs against the ConfigMap
    already written and finds nothing left, yet the change keeps its one ConfigChanged
    Event and status.lastChange (they go out once the audit row is durable)."""
    server = RedisServer(tmp_path / "redis", REDIS_PASSWORD).start()
    try:
        with running_operator(cluster, {**operator_env, **server.env()}):
            await create_bot(cluster, "momentum", {"symbols": ["BTC_USDT"]})
            await eventually(
                lambda: _with_status(cluster, "momentum", "liveConfigHash"), "first publish"
            )
            server.kill()
            await edit_bot(cluster, "momentum", {"signal": {"thresholdPct": 4.5}}, "kubectl-edit")
            # the edit's own attempt failed (a reconcile of generation 1 on a stale body can
            # also meet the dead Redis first; that is not the case under test)
            await eventually(lambda: _publish_failed_at(cluster, "momentum", 2), "gen 2 failed")
            server.start()
            bot = await eventually(lambda: _applied(cluster, "momentum", 2), "applied after it")
            changed = await eventually(
                lambda: _events(cluster, "momentum", "ConfigChanged"), "ConfigChanged Event"
            )
    finally:
        server.stop()

    assert [e["message"] for e in changed] == ["signal.thresholdPct: 3.0 -> 4.5 by kubectl-edit"]
    assert bot["status"]["lastChange"]["fields"] == ["signal.thresholdPct"]
    assert bot["status"]["lastChange"]["actor"] == "kubectl-edit"


async def _publish_failed_at(cluster: Any, name: str, generation: int) -> dict[str, Any] | None:
    bot = await _degraded(cluster, name, "BusUnreachable")
    return bot if condition(bot, "Degraded").get("observedGeneration") == generation else None


async def _applied(cluster: Any, name: str, generation: int) -> dict[str, Any] | None:
    bot = await _with_status(cluster, name, "observedGeneration", generation)
    return bot if bot is not None and condition(bot, "Degraded")["status"] == "False" else None


async def _degraded(cluster: Any, name: str, reason: str) -> dict[str, Any] | None:
    bot = await read(cluster, f"{BOTS}/{name}")
    degraded = condition(bot, "Degraded")
    return bot if degraded.get("status") == "True" and degraded.get("reason") == reason else None


async def _retries(client: httpx.AsyncClient) -> str | None:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith('cdb_operator_reconciles_total{outcome="retry"}'):
            return text if float(line.split()[-1]) >= 2 else None
    return None


async def test_an_invalid_spec_is_reported_and_creates_nothing(
    cluster: Any, operator_env: dict[str, str]
) -> None:
    # KMock validates nothing; a real API server would refuse this already (test_crd.py).
    with running_operator(cluster, operator_env):
        await create_bot(cluster, "broken", {"symbols": ["BTC_USDT"], "chunkSize": 500})
        bot = await eventually(lambda: _degraded(cluster, "broken", "InvalidSpec"), "InvalidSpec")

    assert "chunkSize" in condition(bot, "Degraded")["message"]
    assert await read(cluster, f"{STATEFULSETS}/broken-bot-ws") is None
    assert await read(cluster, f"{CONFIGMAPS}/broken-config") is None


async def test_ready_follows_the_screener_rollout(
    cluster: Any, operator_env: dict[str, str]
) -> None:
    with running_operator(cluster, operator_env):
        await create_bot(cluster, "momentum", {"symbols": symbols(450)})
        await eventually(lambda: _with_status(cluster, "momentum", "chunks", 3), "applied")
        # What the StatefulSet controller reports once all three pods are ready.
        rollout = {
            "status": {
                "replicas": 3,
                "readyReplicas": 3,
                "updatedReplicas": 3,
                "currentRevision": "r1",
                "updateRevision": "r1",
            }
        }
        path = f"{STATEFULSETS}/momentum-bot-ws/status"
        async with cluster.patch(path, json=rollout, headers=MERGE) as reply:
            assert reply.status == 200
        bot = await eventually(lambda: _ready(cluster, "momentum"), "Ready=True")

    assert condition(bot, "Ready")["reason"] == "Running"
    assert condition(bot, "Ready")["message"] == "3/3 screener chunks ready"
    assert condition(bot, "Progressing")["status"] == "False"


async def test_a_screener_event_waits_for_the_status_of_the_new_spec(
    cluster: Any, operator_env: dict[str, str]
) -> None:
    """kopf writes a reconcile's status after the handler returns. A StatefulSet event
    handled before that lands must not compute conditions from the previous spec's status:
    here generation 2 rescaled 3 chunks to 5 while 3 pods are ready, and conditions from
    generation 1's status (3 chunks) would say Ready. The refresh waits for generation 2."""
    env = OperatorEnv(_env_file=None, **{k.lower(): v for k, v in operator_env.items()})
    server = str(cluster.url).rstrip("/")
    database = Database(env)  # never opened: a refresh touches only the API
    ctx = OperatorContext(
        env=env,
        kube=KubeClient(lambda: kopf.ConnectionInfo(server=server)),
        bus=Bus(connect_redis(env)),
        db=database,
        audit=AuditLog(database),
        universe=UniverseClient(env.bot_rest_url, 1.0),
        metrics=OperatorMetrics(),
    )
    manifest = bot_manifest("momentum", {"symbols": symbols(450), "chunkSize": 100})
    manifest["metadata"]["generation"] = 2
    async with cluster.post(BOTS, json=manifest) as reply:
        assert reply.status in (200, 201)
    generation_1 = [
        {"type": "Ready", "status": "True", "reason": "Running",
         "message": "3/3 screener chunks ready", "observedGeneration": 1},
        {"type": "Progressing", "status": "False", "reason": "RolledOut",
         "message": "", "observedGeneration": 1},
        {"type": "Degraded", "status": "False", "reason": "AsExpected",
         "message": "", "observedGeneration": 1},
    ]  # fmt: skip
    old_status = {"status": {"observedGeneration": 1, "chunks": 3, "conditions": generation_1}}
    async with cluster.patch(f"{BOTS}/momentum/status", json=old_status, headers=MERGE) as reply:
        assert reply.status == 200
    stateful_set = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "momentum-bot-ws", "namespace": NAMESPACE,
                     "labels": {"cdb.io/bot": "momentum"}},
        "spec": {"replicas": 5},
        "status": {"replicas": 5, "readyReplicas": 3, "updatedReplicas": 3,
                   "currentRevision": "r1", "updateRevision": "r1"},
    }  # fmt: skip
    async with cluster.post(STATEFULSETS, json=stateful_set) as reply:
        assert reply.status in (200, 201)

    def condition_patches() -> list[Any]:
        return [
            r
            for r in list(cluster)
            if is_request(r, "PATCH", "tradingbots")
            and r.headers.get("User-Agent") == "cdb-operator"
        ]

    try:
        refresh = asyncio.create_task(refresh_readiness(ctx, stateful_set))
        done, _ = await asyncio.wait({refresh}, timeout=1.0)
        assert not done and condition_patches() == [], "computed from generation 1's status"
        # what kopf writes once the generation-2 reconcile has returned
        new_status = {"status": {"observedGeneration": 2, "chunks": 5}}
        async with cluster.patch(
            f"{BOTS}/momentum/status", json=new_status, headers=MERGE
        ) as reply:
            assert reply.status == 200
        await asyncio.wait_for(refresh, 15)
    finally:
        await ctx.kube.close()
        await ctx.bus.close()
    bot = await read(cluster, f"{BOTS}/momentum")
    assert len(condition_patches()) == 1
    assert condition(bot, "Ready")["status"] == "False", condition(bot, "Ready")
    assert condition(bot, "Progressing")["status"] == "True"
    assert condition(bot, "Ready")["observedGeneration"] == 2


async def _ready(cluster: Any, name: str) -> dict[str, Any] | None:
    bot = await read(cluster, f"{BOTS}/{name}")
    return bot if condition(bot, "Ready").get("status") == "True" else None


@pytest.mark.slow
async def test_universe_bots_take_symbols_from_bot_rest_and_keep_them_through_an_outage(
    cluster: Any, operator_env: dict[str, str], service_env: dict[str, str], tmp_path: Path
) -> None:
    sim = ServiceProcess("cdb.mexc_sim", {}, tmp_path)
    with sim:
        await asyncio.to_thread(sim.wait_healthy, 30.0)
        rest = ServiceProcess("cdb.bot_rest", {**service_env, "MEXC_REST_URL": sim.url}, tmp_path)
        env = {**operator_env, "BOT_REST_URL": rest.url, "UNIVERSE_REFRESH_S": "1"}
        with rest, running_operator(cluster, env):
            await asyncio.to_thread(rest.wait_healthy, 30.0)
            await create_bot(
                cluster, "universe", {"universe": "all-usdt-perpetuals", "chunkSize": 15}
            )
            bot = await eventually(lambda: _with_status(cluster, "universe", "chunks"), "applied")
            await asyncio.to_thread(rest.terminate)  # bot_rest goes away; the timer re-resolves
            degraded = await eventually(
                lambda: _degraded(cluster, "universe", "UniverseUnavailable"), "degraded"
            )
            config_map = await read(cluster, f"{CONFIGMAPS}/universe-config")

    count = bot["status"]["symbols"]
    assert count == 40  # mexc_sim's default market: 40 USDT perpetuals
    assert bot["status"]["chunks"] == 3 and bot["status"]["universeResolvedAt"]
    assert degraded["status"]["symbols"] == count  # the last resolved set stays in force
    assert config_map is not None and len(config_map["data"]["symbols"].split(",")) == count
    assert "bot_rest unreachable" in condition(degraded, "Degraded")["message"]


async def test_a_screener_deleted_by_hand_comes_back_on_the_timer(
    cluster: Any, operator_env: dict[str, str]
) -> None:
    env = {**operator_env, "UNIVERSE_REFRESH_S": "1"}
    with running_operator(cluster, env):
        await create_bot(cluster, "momentum", {"symbols": symbols(450)})
        await eventually(lambda: _with_status(cluster, "momentum", "chunks", 3), "applied")
        async with cluster.delete(f"{STATEFULSETS}/momentum-bot-ws") as reply:
            assert reply.status == 200
        assert await read(cluster, f"{STATEFULSETS}/momentum-bot-ws") is None
        sts = await eventually(lambda: read(cluster, f"{STATEFULSETS}/momentum-bot-ws"), "sts")

    assert sts["spec"]["replicas"] == 3


def pod_env(stateful_set: dict[str, Any], config_map: dict[str, Any], pod: str) -> dict[str, str]:
    """What the kubelet would give pod ``pod``: plain values, the ConfigMap key, the
    downward API's name and the Secret's password (the harness's)."""
    resolved: dict[str, str] = {}
    container = stateful_set["spec"]["template"]["spec"]["containers"][0]
    for item in container["env"]:
        source = item.get("valueFrom") or {}
        if "value" in item:
            resolved[item["name"]] = item["value"]
        elif "configMapKeyRef" in source:
            resolved[item["name"]] = config_map["data"][source["configMapKeyRef"]["key"]]
        elif "fieldRef" in source:
            resolved[item["name"]] = pod
        elif source.get("secretKeyRef", {}).get("key") == "bot_ws-password":
            from tests.conftest import ACL_PASSWORDS

            resolved[item["name"]] = ACL_PASSWORDS["bot_ws"]
        elif "secretKeyRef" in source:
            resolved[item["name"]] = ""  # the harness's PostgreSQL trusts local connections
    return resolved


@pytest.mark.slow
async def test_a_real_screener_started_from_the_generated_pod_env_takes_its_chunk(
    cluster: Any, operator_env: dict[str, str], service_env: dict[str, str], tmp_path: Path
) -> None:
    sim = ServiceProcess("cdb.mexc_sim", {}, tmp_path)
    rest = ServiceProcess("cdb.bot_rest", {**service_env, "MEXC_REST_URL": sim.url}, tmp_path)
    with sim, rest:
        await asyncio.to_thread(sim.wait_healthy, 30.0)
        await asyncio.to_thread(rest.wait_healthy, 30.0)
        async with httpx.AsyncClient() as client:
            detail = (await client.get(f"{sim.url}/api/v1/contract/detail")).json()["data"]
        universe = sorted(row["symbol"] for row in detail if row["quoteCoin"] == "USDT")
        env = {
            **operator_env,
            "MEXC_WS_URL": sim.url.replace("http", "ws") + "/edge",
            "MEXC_REST_URL": sim.url,
            "BOT_REST_URL": rest.url,
        }
        with running_operator(cluster, env):
            await create_bot(cluster, "momentum", {"symbols": universe, "chunkSize": 15})
            sts = await eventually(lambda: read(cluster, f"{STATEFULSETS}/momentum-bot-ws"), "sts")
            config_map = await read(cluster, f"{CONFIGMAPS}/momentum-config")
        assert config_map is not None and sts["spec"]["replicas"] == 3

        # The last pod of three: bot_ws derives chunk 2 from the ordinal in POD_NAME.
        screener = ServiceProcess(
            "cdb.bot_ws", {**pod_env(sts, config_map, "momentum-bot-ws-2"), **SIM_CLOCK}, tmp_path
        )
        with screener:
            await asyncio.to_thread(screener.wait_healthy, 60.0, ("ok", "stale"))
            status = await eventually(lambda: _connected(screener), "screener connected")
            container = sts["spec"]["template"]["spec"]["containers"][0]
            async with httpx.AsyncClient(base_url=screener.url) as client:
                probes = {
                    kind: (await client.get(container[kind]["httpGet"]["path"])).status_code
                    for kind in ("startupProbe", "livenessProbe", "readinessProbe")
                }
            # Universe and backfill went through bot_rest (its pacer and cache are shared
            # by every screener pod), not to MEXC's REST API from each pod.
            served = await eventually(lambda: _rest_requests(rest, "klines"), "klines via bot_rest")
            universe_calls = await _rest_requests(rest, "universe")

    assert probes == {"startupProbe": 200, "livenessProbe": 200, "readinessProbe": 200}
    assert served >= 1 and universe_calls >= 1
    assert status["pod_index"] == 2
    assert sum(chunk["symbols"] for chunk in status["chunks"]) == len(universe) - 30
    assert status["config"]["chunk_count"] == 3 and status["config"]["chunk_size"] == 15


async def _rest_requests(rest: ServiceProcess, endpoint: str) -> float:
    return await asyncio.to_thread(scrape, rest.url, "bot_rest_requests_total", endpoint=endpoint)


async def _connected(screener: ServiceProcess) -> dict[str, Any] | None:
    status = await asyncio.to_thread(screener.status)
    chunks = status.get("chunks") or []
    return status if chunks and all(c.get("connected") for c in chunks) else None


async def test_every_symbol_list_example_is_reconciled(
    cluster: Any, operator_env: dict[str, str]
) -> None:
    examples = sorted((ROOT / "examples").glob("*/tradingbot.yaml"))
    listed = [yaml.safe_load(path.read_text()) for path in examples]
    listed = [example for example in listed if example["spec"].get("symbols")]
    assert len(listed) >= 3
    with running_operator(cluster, operator_env):
        # One namespace each: in one namespace only the oldest bot would drive the pipeline.
        for example in listed:
            name = example["metadata"]["name"]
            cluster.objects["v1/namespaces", None, name] = {"metadata": {"name": name}}
            await create_bot(cluster, name, example["spec"], namespace=name)
        applied = [
            await eventually(
                lambda name=example["metadata"]["name"]: _with_status(
                    cluster, name, "configHash", namespace=name
                ),
                example["metadata"]["name"],
            )
            for example in listed
        ]

    for example, bot in zip(listed, applied, strict=True):
        spec = example["spec"]
        expected = -(-len(spec["symbols"]) // spec.get("chunkSize", 200))
        assert bot["status"]["chunks"] == expected
        assert condition(bot, "Degraded")["status"] == "False"
