"""The operator's scenarios in detail, on a real kube-apiserver (tests/support/cluster.py):
kopf runs in-process (its own KopfRunner), watching one test namespace, logged in with a token of
the chart's ``cdb-operator`` ServiceAccount (the chart's Role), against the harness's real
Redis and PostgreSQL and, where a scenario needs them, real signal_engine, bot_rest,
mexc_sim and bot_ws processes.

The API server assigns uid, generation, creationTimestamp and managedFields: an edit is a
PATCH with ``?fieldManager=kubectl-edit`` (or ``kubectl-patch``), so the actor the operator
audits is the one the server records. The StatefulSet controller and kwok drive the
screener's readiness; the garbage collector removes what a deleted bot owned. Writes are
counted, and their order read, from the API server's own audit log
(``ControlPlane.requests``); Events are read back from the server.

One test keeps KMock: an invalid spec reaching the operator, which a real API server
refuses at admission (its docstring says so). tests/operator/test_kube_operator.py runs the operator
as a process, as the chart starts it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml
from kopf.testing import KopfRunner
from redis import Redis

from cdb.core.bus import Bus, connect_redis
from cdb.core.db import Database
from cdb.core.events import Control, Stream
from cdb.core.rest import ContractOut, UniverseOut
from cdb_operator.audit import AuditLog
from cdb_operator.context import OperatorContext
from cdb_operator.handlers import build_registry, configure_kopf
from cdb_operator.kube import KubeClient
from cdb_operator.metrics import OperatorMetrics
from cdb_operator.reconcile import refresh_readiness
from cdb_operator.settings import OperatorEnv
from cdb_operator.universe import UniverseClient
from tests.support import (
    REDIS_PASSWORD,
    ROOT,
    SIM_CLOCK,
    RedisServer,
    ServiceProcess,
    eventually,
    eventually_async,
    free_port,
    scrape,
)
from tests.support.chart import operator_test_pod
from tests.support.cluster import ADMISSIBLE_POD, ControlPlane

WAIT_S = 60.0
TB = "cdb.io/v1alpha1"


def symbols(count: int) -> list[str]:
    return [f"C{i:04d}_USDT" for i in range(count)]


@dataclass
class Cluster:
    """One test namespace on the real API server, reached as its admin (the test plays
    the user: kubectl apply, edit, patch, delete) and as the operator (its SA token)."""

    kube: ControlPlane
    namespace: str
    token: str  # the chart's cdb-operator ServiceAccount in this namespace
    api: httpx.Client

    def path(self, plural: str, name: str = "") -> str:
        prefix = {"tradingbots": f"/apis/{TB}", "statefulsets": "/apis/apps/v1"}.get(
            plural, "/api/v1"
        )
        return f"{prefix}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")

    def read(self, plural: str, name: str) -> dict[str, Any] | None:
        reply = self.api.get(self.path(plural, name))
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        body: dict[str, Any] = reply.json()
        return body

    def bot(self, name: str) -> dict[str, Any] | None:
        return self.read("tradingbots", name)

    def apply_bot(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """``kubectl apply``: the server records kubectl-client-side-apply as the actor."""
        metadata = {"name": name, "namespace": self.namespace}
        manifest = {"apiVersion": TB, "kind": "TradingBot", "metadata": metadata, "spec": spec}
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        created = self.bot(name)
        assert created is not None
        return created

    def edit_bot(self, name: str, spec_patch: dict[str, Any], manager: str) -> None:
        """``kubectl edit`` / ``kubectl patch``: a merge patch under that field manager."""
        reply = self.api.patch(
            self.path("tradingbots", name),
            params={"fieldManager": manager},
            json={"spec": spec_patch},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert reply.status_code == 200, reply.text

    def patch_status(self, name: str, status: dict[str, Any]) -> None:
        reply = self.api.patch(
            self.path("tradingbots", name) + "/status",
            params={"fieldManager": "test"},
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert reply.status_code == 200, reply.text

    def create(self, plural: str, manifest: dict[str, Any]) -> dict[str, Any]:
        reply = self.api.post(self.path(plural), json=manifest)
        assert reply.status_code == 201, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def delete(self, plural: str, name: str) -> None:
        reply = self.api.delete(self.path(plural, name))
        assert reply.status_code in (200, 202), reply.text

    def gone(self, plural: str, name: str) -> bool:
        return self.read(plural, name) is None

    def events(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        """The Events of TradingBot ``name`` as ``kubectl get events`` lists them, oldest first."""
        selector = f"involvedObject.kind=TradingBot,involvedObject.name={name}"
        if reason is not None:
            selector += f",reason={reason}"
        items = self.kube.get("events", "-n", self.namespace, "--field-selector", selector)
        return sorted(items["items"], key=lambda e: e["metadata"]["creationTimestamp"])

    def operator_requests(self, resource: str | None = None) -> list[dict[str, Any]]:
        """What the operator (kopf and its own client) sent, from the audit log."""
        user = f"system:serviceaccount:{self.namespace}:cdb-operator"
        return [
            r for r in self.kube.requests(self.namespace, resource) if r["user"]["username"] == user
        ]

    def operator_writes(self, resource: str) -> list[dict[str, Any]]:
        return [r for r in self.operator_requests(resource) if r["verb"] not in ("get", "list")]


@pytest.fixture(scope="module")
def crd(kube: ControlPlane) -> None:
    kube.apply_crd()


@pytest.fixture
def cluster(
    kube: ControlPlane, crd: None, kube_namespace: str, tmp_path: Path
) -> Iterator[Cluster]:
    config = json.loads(kube.operator_kubeconfig(kube_namespace, tmp_path / "sa").read_text())
    token = config["users"][0]["user"]["token"]
    with httpx.Client(
        base_url=kube.server,
        headers={"Authorization": f"Bearer {kube.admin_token}"},
        verify=ssl.create_default_context(cafile=str(kube.ca_path)),
        timeout=30,
    ) as api:
        yield Cluster(kube, kube_namespace, token, api)


@pytest.fixture
def operator_env(service_env: dict[str, str], cluster: Cluster) -> dict[str, str]:
    return {
        **service_env,
        "OPERATOR_NAMESPACE": cluster.namespace,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(free_port()),
        "SCREENER_POD_TEMPLATE": str(operator_test_pod()),
        "REDIS_SECRET_NAME": "redis",
        "POSTGRES_SECRET_NAME": "postgres",
        "MEXC_WS_URL": "ws://mexc-sim:8010/edge",
        "MEXC_REST_URL": "http://mexc-sim:8010",
        "BOT_REST_URL": "http://127.0.0.1:9/unused",
        "RETRY_DELAY_S": "0.5",
        "BUS_PUBLISH_TIMEOUT_S": "1",
        "UNIVERSE_REFRESH_S": "3600",
    }


def operator_settings(env: dict[str, str]) -> OperatorEnv:
    return OperatorEnv(_env_file=None, **{k.lower(): v for k, v in env.items()})  # type: ignore[arg-type]


@contextmanager
def running_operator(
    cluster: Cluster,
    env: dict[str, str],
    namespaces: list[str] | None = None,
    token: str | None = None,
) -> Iterator[KopfRunner]:
    """The real operator (kopf CLI ``run``) in a thread, serving ``namespaces`` (the test's
    namespace) as ``python -m cdb_operator`` serves its one, logged in with the chart's
    ServiceAccount token unless ``token`` says otherwise."""
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    info = kopf.ConnectionInfo(
        server=cluster.kube.server, ca_path=str(cluster.kube.ca_path), token=token or cluster.token
    )
    registry = build_registry(operator_settings(env), info)
    args = ["run", "--standalone", "--verbose"]
    for namespace in namespaces or [cluster.namespace]:
        args += ["--namespace", namespace]
    with KopfRunner(args, registry=registry, settings=settings, timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output


def condition(bot: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for item in ((bot or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def with_status(cluster: Cluster, name: str, key: str, value: Any = None) -> Any:
    """A poll: the bot once its status has ``key`` (equal to ``value`` if given)."""

    def check() -> dict[str, Any] | None:
        bot = cluster.bot(name)
        status = (bot or {}).get("status") or {}
        if key not in status or (value is not None and status[key] != value):
            return None
        return bot

    return check


def degraded(cluster: Cluster, name: str, reason: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        bot = cluster.bot(name)
        item = condition(bot, "Degraded")
        return bot if item.get("status") == "True" and item.get("reason") == reason else None

    return check


def ready(cluster: Cluster, name: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        bot = cluster.bot(name)
        return bot if condition(bot, "Ready").get("status") == "True" else None

    return check


@pytest.fixture
def redis(redis_proc: Any, redisdb: Any) -> Iterator[Redis]:
    client = Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD)
    yield client
    client.close()


def stream(redis: Redis) -> list[Control]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = redis.xrange(Stream.CONTROL.value)  # type: ignore[assignment]
    return [Control.model_validate_json(fields[b"event"]) for _, fields in entries]


def controls(redis: Redis, bot: str) -> list[Control]:
    return [e for e in stream(redis) if e.bot == bot]


def audit_rows(postgresql: Any, bot: str) -> list[tuple[Any, ...]]:
    with postgresql.cursor() as cur:
        cur.execute(
            "SELECT field, old_value, new_value, actor, generation, config_hash "
            "FROM config_audit WHERE bot = %s ORDER BY id",
            (bot,),
        )
        return list(cur.fetchall())


def env_of(stateful_set: dict[str, Any]) -> dict[str, Any]:
    container = stateful_set["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def status_patches(requests: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(index, status written) of each status write among ``requests`` (audit events)."""
    return [
        (i, (r.get("requestObject") or {}).get("status") or {})
        for i, r in enumerate(requests)
        if r["objectRef"].get("resource") == "tradingbots"
        and r["objectRef"].get("subresource") == "status"
        and r["verb"] in ("patch", "update")
    ]


def test_created_bot_gets_its_config_map_and_one_screener_pod_per_chunk(
    cluster: Cluster, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        created = cluster.apply_bot("momentum", {"symbols": symbols(450), "chunkSize": 200})
        sts = eventually(lambda: cluster.read("statefulsets", "momentum-bot-ws"), "sts")
        bot = eventually(with_status(cluster, "momentum", "configHash"), "status.configHash")
        events = eventually(lambda: cluster.events("momentum"), "Events")
        # kwok's pods, the StatefulSet controller's readyReplicas: the rollout completes.
        rolled_out = eventually(ready(cluster, "momentum"), "Ready=True", timeout=WAIT_S)

    assert sts["spec"]["replicas"] == 3
    env = env_of(sts)
    assert env["CHUNK_COUNT"] == "3" and env["CHUNK_SIZE"] == "200"
    assert env["SYMBOLS"] == {"configMapKeyRef": {"name": "momentum-config", "key": "symbols"}}
    assert env["POD_NAME"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}
    }  # the server's default apiVersion
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
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["resources"]["limits"] and container["resources"]["requests"]

    config_map = cluster.read("configmaps", "momentum-config")
    assert config_map is not None
    assert config_map["data"]["symbols"].split(",") == symbols(450)
    assert json.loads(config_map["data"]["config.json"])["chunks"] == 3
    uid = created["metadata"]["uid"]
    for owned in (sts, config_map):
        assert owned["metadata"]["ownerReferences"] == [
            {
                "apiVersion": TB,
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
    # The reconcile's own status write saw a StatefulSet with no pod ready yet.
    [(_, first), *_] = status_patches(cluster.operator_requests("tradingbots"))
    first_ready = next(c for c in first["conditions"] if c["type"] == "Ready")
    assert (first_ready["status"], first_ready["reason"]) == ("False", "ChunksStarting")
    assert condition(rolled_out, "Ready")["reason"] == "Running"
    assert condition(rolled_out, "Ready")["message"] == "3/3 screener chunks ready"
    assert condition(rolled_out, "Progressing")["status"] == "False"

    [control] = controls(redis, "momentum")
    assert control.settings.signal_threshold_pct == 3.0 and control.settings.paused is False
    assert control.config_hash == status["configHash"] and control.generation == 1

    rows = audit_rows(postgresql, "momentum")
    fields = {row[0]: row for row in rows}
    assert fields["chunkSize"][2] == 200 and fields["chunkSize"][1] is None
    assert fields["chunkSize"][3] == "kubectl-client-side-apply"
    assert len(fields["symbols"][2]) == 450
    assert [e["reason"] for e in events] == ["ConfigApplied"]
    assert "450 symbols in 3 chunks" in events[0]["message"]


def test_editing_chunk_size_rescales_the_screener_and_audits_who_did_it(
    cluster: Cluster, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        cluster.apply_bot("momentum", {"symbols": symbols(450), "chunkSize": 200})
        eventually(with_status(cluster, "momentum", "chunks", 3), "3 chunks")
        cluster.edit_bot("momentum", {"chunkSize": 100}, manager="kubectl-edit")
        bot = eventually(with_status(cluster, "momentum", "chunks", 5), "5 chunks")
        changed = eventually(
            lambda: (
                len(cluster.events("momentum", "ConfigChanged")) == 2
                and cluster.events("momentum", "ConfigChanged")
            ),
            "ConfigChanged events",
        )
        eventually(ready(cluster, "momentum"), "5/5 ready", timeout=WAIT_S)
    sts = cluster.read("statefulsets", "momentum-bot-ws")

    assert sts is not None and sts["spec"]["replicas"] == 5
    assert env_of(sts)["CHUNK_COUNT"] == "5" and env_of(sts)["CHUNK_SIZE"] == "100"
    # The rescale's StatefulSet events make the operator refresh the bot's conditions. kopf
    # writes the edit's status after the reconcile; a refresh before it would be computed
    # from generation 1's status and land over the new one. The audit log has the order.
    log = cluster.operator_requests()
    [_, rescale] = [
        i for i, r in enumerate(log)
        if r["objectRef"]["resource"] == "statefulsets" and r["verb"] in ("create", "patch")
    ]  # fmt: skip
    patches = status_patches(log)
    written = next(i for i, s in patches if s.get("observedGeneration") == 2)
    refreshes = [i for i, s in patches if i > rescale and set(s) == {"conditions"}]
    assert refreshes, "the StatefulSet controller's progress never refreshed the conditions"
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
    assert len(controls(redis, "momentum")) == 1


@pytest.mark.slow
def test_threshold_and_pause_reach_a_running_signal_engine_without_restarts(
    cluster: Cluster,
    operator_env: dict[str, str],
    service_env: dict[str, str],
    postgresql: Any,
    tmp_path: Path,
) -> None:
    engine = ServiceProcess("cdb.signal_engine", service_env, tmp_path)
    with engine, running_operator(cluster, operator_env):
        engine.wait_healthy(60.0, ("ok", "stale"))
        pid = engine.proc.pid if engine.proc else None
        cluster.apply_bot("momentum", {"symbols": ["BTC_USDT", "ETH_USDT"]})
        eventually(lambda: engine_control(engine, 1), "the first control applied")
        sts_before = cluster.read("statefulsets", "momentum-bot-ws")
        sts_writes = len(cluster.operator_writes("statefulsets"))

        cluster.edit_bot("momentum", {"signal": {"thresholdPct": 4.5}}, "kubectl-edit")
        status = eventually(lambda: engine_in_force(engine, "threshold_pct", 4.5), "4.5 in force")
        assert status["control"]["generation"] == 2

        cluster.edit_bot("momentum", {"trading": {"paused": True}}, "kubectl-patch")
        eventually(lambda: engine_in_force(engine, "paused", True), "paused in force")
        bot = eventually(with_status(cluster, "momentum", "observedGeneration", 3), "generation 3")
        sts_after = cluster.read("statefulsets", "momentum-bot-ws")
        assert engine.proc is not None and engine.proc.pid == pid and engine.proc.poll() is None

    # Live settings never touch the screener: not one write, the pod template unchanged.
    assert len(cluster.operator_writes("statefulsets")) == sts_writes
    assert sts_before is not None and sts_after is not None
    assert sts_after["spec"]["template"] == sts_before["spec"]["template"]
    assert sts_after["metadata"]["generation"] == sts_before["metadata"]["generation"]
    assert bot["status"]["lastChange"]["fields"] == ["trading.paused"]
    assert bot["status"]["lastChange"]["actor"] == "kubectl-patch"
    assert condition(bot, "Degraded")["status"] == "False"
    rows = {(r[0], json.dumps(r[1]), json.dumps(r[2])) for r in audit_rows(postgresql, "momentum")}
    assert ("signal.thresholdPct", "3.0", "4.5") in rows
    assert ("trading.paused", "false", "true") in rows


def engine_control(engine: ServiceProcess, generation: int) -> dict[str, Any] | None:
    status = engine.status()
    control = status.get("control") or {}
    return status if control.get("generation") == generation else None


def engine_in_force(engine: ServiceProcess, key: str, value: Any) -> dict[str, Any] | None:
    status = engine.status()
    return status if status.get("in_force", {}).get(key) == value else None


def test_deleting_a_bot_pauses_trading_once_and_audits_the_deletion(
    cluster: Cluster, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        cluster.apply_bot("momentum", {"symbols": ["BTC_USDT"]})
        bot = eventually(with_status(cluster, "momentum", "configHash"), "applied")
        assert bot["metadata"]["finalizers"] == ["cdb.io/tradingbot"]
        cluster.delete("tradingbots", "momentum")
        eventually(lambda: cluster.gone("tradingbots", "momentum"), "bot deleted")
        events = controls(redis, "momentum")

    assert [e.settings.paused for e in events] == [False, True]
    assert events[-1].settings.model_dump(exclude_none=True) == {"paused": True}
    assert events[-1].bot_uid == bot["metadata"]["uid"]
    deleted = [r for r in audit_rows(postgresql, "momentum") if r[0] == "deleted"]
    assert len(deleted) == 1 and deleted[0][1] == bot["status"]["configHash"]
    eventually(
        lambda: (
            cluster.gone("configmaps", "momentum-config")
            and cluster.gone("statefulsets", "momentum-bot-ws")
        ),
        "the owned objects garbage-collected",
        timeout=WAIT_S,
    )


def test_every_change_is_audited_also_one_back_to_an_earlier_config(
    cluster: Cluster, operator_env: dict[str, str], postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        first = cluster.apply_bot("momentum", {"symbols": ["BTC_USDT"]})
        eventually(with_status(cluster, "momentum", "configHash"), "applied")
        edits: list[tuple[dict[str, Any], str]] = [
            ({"trading": {"paused": True}}, "kubectl-patch"),
            ({"trading": {"paused": False}}, "kubectl-patch"),  # back to the first config
            ({"trading": {"paused": True}}, "kubectl-patch"),
            ({"signal": {"thresholdPct": 4.5}}, "kubectl-edit"),
            ({"signal": {"thresholdPct": 3.0}}, "kubectl-edit"),  # an undo
        ]
        for generation, (spec_patch, manager) in enumerate(edits, start=2):
            cluster.edit_bot("momentum", spec_patch, manager)
            eventually(
                with_status(cluster, "momentum", "observedGeneration", generation),
                f"generation {generation}",
            )
        # Deleted, then created again with the same spec once the garbage collector has
        # removed what the first one owned (the new one gets a new uid).
        cluster.delete("tradingbots", "momentum")
        eventually(lambda: cluster.gone("tradingbots", "momentum"), "bot deleted")
        eventually(
            lambda: (
                cluster.gone("configmaps", "momentum-config")
                and cluster.gone("statefulsets", "momentum-bot-ws")
            ),
            "the owned objects garbage-collected",
            timeout=WAIT_S,
        )
        second = cluster.apply_bot("momentum", {"symbols": ["BTC_USDT"]})
        eventually(with_status(cluster, "momentum", "configHash"), "recreated")

    rows = audit_rows(postgresql, "momentum")
    assert [(r[1], r[2], r[3], r[4]) for r in rows if r[0] == "trading.paused"] == [
        (None, False, "kubectl-client-side-apply", 1),
        (False, True, "kubectl-patch", 2),
        (True, False, "kubectl-patch", 3),
        (False, True, "kubectl-patch", 4),
        (None, False, "kubectl-client-side-apply", 1),  # the bot created again
    ]
    assert [(r[1], r[2], r[3]) for r in rows if r[0] == "signal.thresholdPct"] == [
        (None, 3.0, "kubectl-client-side-apply"),
        (3.0, 4.5, "kubectl-edit"),
        (4.5, 3.0, "kubectl-edit"),
        (None, 3.0, "kubectl-client-side-apply"),
    ]
    assert [r[0] for r in rows].count("deleted") == 1
    with postgresql.cursor() as cur:
        cur.execute("SELECT DISTINCT bot_uid FROM config_audit WHERE bot = 'momentum'")
        uids = {row[0] for row in cur.fetchall()}
    assert uids == {first["metadata"]["uid"], second["metadata"]["uid"]}
    assert first["metadata"]["uid"] != second["metadata"]["uid"]


@contextmanager
def fake_bot_rest(universe: dict[str, list[str]]) -> Iterator[str]:
    """bot_rest's ``GET /universe`` (the kernel's contract), listing whatever
    ``universe["symbols"]`` is now."""

    def contract(symbol: str) -> ContractOut:
        return ContractOut(
            symbol=symbol, base_coin=symbol.split("_")[0], contract_size=1.0, price_scale=2,
            price_unit=0.01, vol_scale=0, vol_unit=1.0, min_vol=1.0, max_vol=1e6,
            max_leverage=100, taker_fee_rate=0.0004, maker_fee_rate=0.0,
        )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            listed = [contract(s) for s in universe["symbols"]]
            body = UniverseOut(count=len(listed), symbols=listed).model_dump_json().encode()
            self.send_response(200 if self.path.startswith("/universe") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_each_universe_refresh_is_audited_as_such_also_a_flip_back(
    cluster: Cluster, operator_env: dict[str, str], postgresql: Any
) -> None:
    two, three = ["A_USDT", "B_USDT"], ["A_USDT", "B_USDT", "C_USDT"]
    universe = {"symbols": two}
    with fake_bot_rest(universe) as url:
        env = {**operator_env, "BOT_REST_URL": url, "UNIVERSE_REFRESH_S": "1"}
        with running_operator(cluster, env):
            cluster.apply_bot("universe", {"universe": "all-usdt-perpetuals"})
            eventually(with_status(cluster, "universe", "symbols", 2), "2 symbols")
            # A contract listed, delisted, listed again: no spec edit, generation 1 throughout.
            for listed in (three, two, three):
                universe["symbols"] = listed
                count = len(listed)
                eventually(with_status(cluster, "universe", "symbols", count), f"{count} symbols")
    bot = cluster.bot("universe")

    assert bot is not None and bot["metadata"]["generation"] == 1
    rows = [r for r in audit_rows(postgresql, "universe") if r[0] == "symbols"]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        (None, two, "kubectl-client-side-apply", 1),
        (two, three, "universe-refresh", 1),
        (three, two, "universe-refresh", 1),
        (two, three, "universe-refresh", 1),
    ]


def test_the_oldest_bot_of_a_namespace_drives_its_pipeline_alone(
    cluster: Cluster, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    env = {**operator_env, "UNIVERSE_REFRESH_S": "1"}  # the timer hands over
    ns = cluster.namespace
    # All there before the operator starts: which bot is oldest must not depend on whether
    # a reconcile's LIST ran before or after the next create. The API server stamps
    # creationTimestamp in whole seconds: a second apart, zeta is the oldest.
    zeta = cluster.apply_bot("zeta", {"symbols": ["BTC_USDT"]})
    time.sleep(1.1)
    alpha = cluster.apply_bot("alpha", {"symbols": ["ETH_USDT"], "signal": {"thresholdPct": 5.0}})
    time.sleep(1.1)
    cluster.apply_bot("beta", {"symbols": ["SOL_USDT"]})
    # alpha's screener from before bots were exclusive (an older operator created it).
    labels = {"app.kubernetes.io/managed-by": "cdb-operator", "cdb.io/bot": "alpha"}
    selector = {"cdb.io/bot": "alpha"}
    old_screener = cluster.create("statefulsets", {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "alpha-bot-ws",
            "labels": labels,
            "ownerReferences": [{"apiVersion": TB, "kind": "TradingBot", "name": "alpha",
                                 "uid": alpha["metadata"]["uid"], "controller": True}],
        },
        "spec": {"replicas": 1, "serviceName": "bot-ws", "selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": selector}, "spec": ADMISSIBLE_POD}},
    })  # fmt: skip
    with running_operator(cluster, env):
        eventually(with_status(cluster, "zeta", "configHash"), "zeta applied")
        standby = {
            name: eventually(degraded(cluster, name, "AnotherBotActive"), f"{name} stands by")
            for name in ("alpha", "beta")
        }
        eventually(lambda: cluster.gone("statefulsets", "alpha-bot-ws"), "old screener removed")

        # Deleting a bot that stands by leaves the pipeline alone.
        cluster.delete("tradingbots", "beta")
        eventually(lambda: cluster.gone("tradingbots", "beta"), "beta deleted")
        # Deleting the active bot pauses the pipeline; the next oldest takes over.
        cluster.delete("tradingbots", "zeta")
        eventually(lambda: cluster.gone("tradingbots", "zeta"), "zeta deleted")
        active = eventually(
            lambda: (bot := cluster.bot("alpha")) and "standbyFor" not in bot["status"] and bot,
            "takeover",
        )
        screener = eventually(lambda: cluster.read("statefulsets", "alpha-bot-ws"), "sts")
        warnings = cluster.events("alpha", "AnotherBotActive")

    zeta_uid = zeta["metadata"]["uid"]
    for bot in standby.values():
        item = condition(bot, "Degraded")
        assert f"TradingBot zeta drives the pipeline of namespace {ns}" in item["message"]
        assert bot["status"]["standbyFor"] == f"zeta/{zeta_uid}"
        assert condition(bot, "Ready")["reason"] == "Standby"
        assert "configHash" not in bot["status"] and "liveConfigHash" not in bot["status"]
    assert len(warnings) == 1  # on becoming standby, not on every timer tick
    assert cluster.gone("configmaps", "beta-config")
    assert cluster.gone("statefulsets", "beta-bot-ws")
    assert [r[0] for r in audit_rows(postgresql, "beta")] == ["deleted"]

    assert [(e.bot, e.settings.paused) for e in stream(redis)] == [
        ("zeta", False),
        ("zeta", True),  # its deletion paused the pipeline
        ("alpha", False),  # then alpha took it over with its own settings
    ]
    assert stream(redis)[-1].settings.signal_threshold_pct == 5.0
    assert stream(redis)[-1].bot_uid == alpha["metadata"]["uid"]
    assert active["status"]["configHash"]
    assert condition(active, "Degraded")["status"] == "False"
    assert screener["metadata"]["uid"] != old_screener["metadata"]["uid"]
    assert screener["metadata"]["ownerReferences"][0]["uid"] == alpha["metadata"]["uid"]
    assert audit_rows(postgresql, "alpha")[0][3] == "kubectl-client-side-apply"


def test_a_deletion_waits_through_a_database_outage_instead_of_giving_up(
    cluster: Cluster, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    env = {**operator_env, "RETRY_DELAY_S": "0.1"}  # backoff 0.1, 0.2, 0.4, … s
    with running_operator(cluster, env):
        cluster.apply_bot("momentum", {"symbols": ["BTC_USDT"]})
        eventually(with_status(cluster, "momentum", "configHash"), "applied")
        # config_audit unwritable: as good as PostgreSQL down, for this one table.
        postgresql.execute("ALTER TABLE config_audit RENAME TO config_audit_away")
        postgresql.commit()
        cluster.delete("tradingbots", "momentum")
        # Well past kopf's former limit of five tries, the bot still waits with its finalizer.
        eventually(
            lambda: len(cluster.events("momentum", "DeletionBlocked")) >= 7,
            "7 tries",
            timeout=WAIT_S,
        )
        blocked = cluster.bot("momentum")
        assert blocked is not None
        postgresql.execute("ALTER TABLE config_audit_away RENAME TO config_audit")
        postgresql.commit()
        eventually(lambda: cluster.gone("tradingbots", "momentum"), "bot deleted", timeout=WAIT_S)
    warnings = cluster.events("momentum", "DeletionBlocked")

    assert blocked["metadata"]["deletionTimestamp"]
    assert blocked["metadata"]["finalizers"] == ["cdb.io/tradingbot"]
    message = condition(blocked, "Degraded")["message"]
    assert "writing the deleted audit row failed: UndefinedTable" in message
    assert len(warnings) >= 7 and {w["type"] for w in warnings} == {"Warning"}
    assert [r[0] for r in audit_rows(postgresql, "momentum")].count("deleted") == 1
    # The pause went out once, not once per attempt.
    assert [e.settings.paused for e in controls(redis, "momentum")] == [False, True]


def test_a_replayed_reconcile_writes_nothing(
    cluster: Cluster, operator_env: dict[str, str], redis: Redis, postgresql: Any
) -> None:
    with running_operator(cluster, operator_env):
        cluster.apply_bot("momentum", {"symbols": symbols(450)})
        eventually(with_status(cluster, "momentum", "configHash"), "applied")
        eventually(ready(cluster, "momentum"), "Ready=True", timeout=WAIT_S)
    # The state the first operator left, once its last writes have reached the audit log.
    first = cluster.bot("momentum")
    assert first is not None
    plurals = ("configmaps", "statefulsets", "events", "tradingbots")
    writes = eventually(
        lambda: (
            (counts := {p: len(cluster.operator_writes(p)) for p in plurals})["events"] and counts
        ),
        "the first operator's writes",
    )
    rows = audit_rows(postgresql, "momentum")
    published = controls(redis, "momentum")

    # A restarted operator resumes every bot; the API server lists each to its watches.
    def reads() -> int:
        return len([r for r in cluster.operator_requests("statefulsets") if r["verb"] == "get"])

    reads_before = reads()
    with running_operator(cluster, operator_env):
        # The resume handler's reconcile ends by reading the StatefulSet it would write.
        eventually(lambda: reads() > reads_before, "the resumed reconcile")
        time.sleep(2.0)  # room for a stray write to show up before we count
        again = cluster.bot("momentum")

    assert {p: len(cluster.operator_writes(p)) for p in plurals} == writes
    assert audit_rows(postgresql, "momentum") == rows
    assert controls(redis, "momentum") == published and len(published) == 1
    assert again is not None and again["status"] == first["status"]
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_an_unreachable_bus_shows_as_degraded_and_is_retried(
    cluster: Cluster, operator_env: dict[str, str], postgresql: Any
) -> None:
    env = {**operator_env, "REDIS_PORT": str(free_port())}  # nothing listens there
    with running_operator(cluster, env):
        cluster.apply_bot("momentum", {"symbols": ["BTC_USDT"]})
        bot = eventually(degraded(cluster, "momentum", "BusUnreachable"), "degraded")
        with httpx.Client(base_url=f"http://127.0.0.1:{env['HTTP_PORT']}") as client:
            health = client.get("/health").json()
            status = client.get("/status").json()
            metrics = eventually(lambda: retries(client), "retry counted")
        warnings = eventually(lambda: cluster.events("momentum", "BusUnreachable"), "Warning")

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


def retries(client: httpx.Client) -> str | None:
    text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith('cdb_operator_reconciles_total{outcome="retry"}'):
            return text if float(line.split()[-1]) >= 2 else None
    return None


def test_a_change_cut_off_after_its_audit_keeps_its_event_and_last_change(
    cluster: Cluster, operator_env: dict[str, str], tmp_path: Path
) -> None:
    """Redis is down when a threshold edit is to be published: the audit row and the
    ConfigMap are written, then the publish fails. The retry diffs against the ConfigMap
    already written and finds nothing left, yet the change keeps its one ConfigChanged
    Event and status.lastChange (they go out once the audit row is durable)."""
    server = RedisServer(tmp_path / "redis", REDIS_PASSWORD).start()
    try:
        with running_operator(cluster, {**operator_env, **server.env()}):
            cluster.apply_bot("momentum", {"symbols": ["BTC_USDT"]})
            eventually(with_status(cluster, "momentum", "liveConfigHash"), "first publish")
            server.kill()
            cluster.edit_bot("momentum", {"signal": {"thresholdPct": 4.5}}, "kubectl-edit")
            # the edit's own attempt failed (a reconcile of generation 1 on a stale body can
            # also meet the dead Redis first; that is not the case under test)
            eventually(lambda: publish_failed_at(cluster, "momentum", 2), "gen 2 failed")
            server.start()
            bot = eventually(lambda: applied(cluster, "momentum", 2), "applied after it")
            changed = eventually(
                lambda: cluster.events("momentum", "ConfigChanged"), "ConfigChanged Event"
            )
    finally:
        server.stop()

    assert [e["message"] for e in changed] == ["signal.thresholdPct: 3.0 -> 4.5 by kubectl-edit"]
    assert bot["status"]["lastChange"]["fields"] == ["signal.thresholdPct"]
    assert bot["status"]["lastChange"]["actor"] == "kubectl-edit"


def publish_failed_at(cluster: Cluster, name: str, generation: int) -> dict[str, Any] | None:
    bot = degraded(cluster, name, "BusUnreachable")()
    return bot if condition(bot, "Degraded").get("observedGeneration") == generation else None


def applied(cluster: Cluster, name: str, generation: int) -> dict[str, Any] | None:
    bot: dict[str, Any] | None = with_status(cluster, name, "observedGeneration", generation)()
    return bot if bot is not None and condition(bot, "Degraded")["status"] == "False" else None


# --- the one fault a real API server cannot produce: KMock -----------------------------

KMOCK_NAMESPACE = "cdb"
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


@pytest.fixture
def kmock_cluster(kmock: Any) -> Any:
    """KMock serving the resources the operator uses, with the operator's namespace."""
    kmock.resources["v1/namespaces"] = {"kind": "Namespace", "namespaced": False, "verbs": VERBS}
    kmock.resources["v1/configmaps"] = {"kind": "ConfigMap", "namespaced": True, "verbs": VERBS}
    kmock.resources["v1/events"] = {"kind": "Event", "namespaced": True, "verbs": VERBS}
    kmock.resources["apps/v1/statefulsets"] = {
        "kind": "StatefulSet",
        "namespaced": True,
        "subresources": ["status"],
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
    kmock.objects["v1/namespaces", None, KMOCK_NAMESPACE] = {"metadata": {"name": KMOCK_NAMESPACE}}
    return kmock


async def test_an_invalid_spec_is_reported_and_creates_nothing(
    kmock_cluster: Any, service_env: dict[str, str]
) -> None:
    """KMock, not the real API server: a spec the CRD's schema refuses never reaches the
    operator on a real server (tests/operator/test_kube_crd.py shows it refused at admission), so
    the operator's own guard against one (an object stored under a looser, older CRD) can
    only be reached through a server that validates nothing."""
    env = {
        **service_env,
        "OPERATOR_NAMESPACE": KMOCK_NAMESPACE,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(free_port()),
        "SCREENER_POD_TEMPLATE": str(operator_test_pod()),
        "BOT_REST_URL": "http://127.0.0.1:9/unused",
    }
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    server = str(kmock_cluster.url).rstrip("/")
    registry = build_registry(operator_settings(env), kopf.ConnectionInfo(server=server))
    bots = f"/apis/{TB}/namespaces/{KMOCK_NAMESPACE}/tradingbots"
    manifest = {
        "apiVersion": TB,
        "kind": "TradingBot",
        "metadata": {"name": "broken", "namespace": KMOCK_NAMESPACE, "uid": "u-1",
                     "generation": 1, "resourceVersion": "1",
                     "creationTimestamp": "2026-11-25T05:00:00Z"},
        "spec": {"symbols": ["BTC_USDT"], "chunkSize": 500},
    }  # fmt: skip

    async def read(path: str) -> dict[str, Any] | None:
        async with kmock_cluster.get(path) as reply:
            return await reply.json() if reply.status == 200 else None

    # Cluster-wide: KMock 0.8 cannot parse `GET /api/v1/namespaces`, which kopf's namespace
    # observer sends when run with `--namespace`.
    args = ["run", "--standalone", "--all-namespaces", "--verbose"]
    with KopfRunner(args, registry=registry, settings=settings, timeout=30) as runner:
        async with kmock_cluster.post(bots, json=manifest) as reply:
            assert reply.status in (200, 201), await reply.text()

        async def degraded() -> dict[str, Any] | None:
            bot = await read(f"{bots}/broken")
            return bot if condition(bot, "Degraded").get("reason") == "InvalidSpec" else None

        bot = await eventually_async(degraded, "Degraded=InvalidSpec", timeout=WAIT_S)
    assert runner.exception is None, runner.output

    assert condition(bot, "Degraded").get("reason") == "InvalidSpec", bot
    assert "chunkSize" in condition(bot, "Degraded")["message"]
    ns_path = f"/namespaces/{KMOCK_NAMESPACE}"
    assert await read(f"/apis/apps/v1{ns_path}/statefulsets/broken-bot-ws") is None
    assert await read(f"/api/v1{ns_path}/configmaps/broken-config") is None


# --- readiness ------------------------------------------------------------------------


async def test_a_screener_event_waits_for_the_status_of_the_new_spec(
    cluster: Cluster, operator_env: dict[str, str]
) -> None:
    """kopf writes a reconcile's status after the handler returns. A StatefulSet event
    handled before that lands must not compute conditions from the previous spec's status:
    here generation 2 rescaled 3 chunks to 5 while the StatefulSet controller reports 3
    pods ready, and conditions from generation 1's status (3 chunks) would say Ready. The
    refresh waits for generation 2's status. The test plays kopf's status writes; the
    StatefulSet's readiness is the real controller's and kwok's."""
    env = operator_settings(operator_env)
    info = kopf.ConnectionInfo(
        server=cluster.kube.server, ca_path=str(cluster.kube.ca_path), token=cluster.token
    )
    database = Database(env)  # never opened: a refresh touches only the API
    ctx = OperatorContext(
        env=env,
        kube=KubeClient(lambda: info),
        bus=Bus(connect_redis(env)),
        db=database,
        audit=AuditLog(database),
        universe=UniverseClient(env.bot_rest_url, 1.0),
        metrics=OperatorMetrics(),
    )
    await asyncio.to_thread(
        cluster.apply_bot, "momentum", {"symbols": symbols(450), "chunkSize": 200}
    )
    await asyncio.to_thread(cluster.edit_bot, "momentum", {"chunkSize": 100}, "kubectl-edit")
    now = "2026-12-07T00:00:00Z"
    generation_1 = [
        {"type": t, "status": s, "reason": r, "message": m, "observedGeneration": 1,
         "lastTransitionTime": now}
        for t, s, r, m in (("Ready", "True", "Running", "3/3 screener chunks ready"),
                           ("Progressing", "False", "RolledOut", ""),
                           ("Degraded", "False", "AsExpected", ""))
    ]  # fmt: skip
    await asyncio.to_thread(
        cluster.patch_status,
        "momentum",
        {"observedGeneration": 1, "chunks": 3, "conditions": generation_1},
    )
    labels = {"cdb.io/bot": "momentum", "app.kubernetes.io/managed-by": "cdb-operator"}
    selector = {"cdb.io/bot": "momentum"}
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "momentum-bot-ws", "labels": labels},
        "spec": {"replicas": 3, "serviceName": "bot-ws", "selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": selector}, "spec": ADMISSIBLE_POD}},
    }  # fmt: skip
    await asyncio.to_thread(cluster.create, "statefulsets", manifest)

    def three_ready() -> dict[str, Any] | None:
        sts = cluster.read("statefulsets", "momentum-bot-ws")
        status = (sts or {}).get("status") or {}
        return sts if status.get("readyReplicas") == 3 else None

    stateful_set = await asyncio.to_thread(eventually, three_ready, "3 pods ready", WAIT_S)

    def condition_patches() -> list[tuple[int, dict[str, Any]]]:
        return status_patches(cluster.operator_requests("tradingbots"))

    try:
        refresh = asyncio.create_task(refresh_readiness(ctx, stateful_set))
        done, _ = await asyncio.wait({refresh}, timeout=1.0)
        assert not done, "computed from generation 1's status"
        assert await asyncio.to_thread(condition_patches) == []
        # what kopf writes once the generation-2 reconcile has returned
        await asyncio.to_thread(
            cluster.patch_status, "momentum", {"observedGeneration": 2, "chunks": 5}
        )
        await asyncio.wait_for(refresh, 30)
    finally:
        await ctx.kube.close()
        await ctx.bus.close()
    await asyncio.to_thread(eventually, condition_patches, "the refresh's status write")
    bot = await asyncio.to_thread(cluster.bot, "momentum")
    assert len(await asyncio.to_thread(condition_patches)) == 1
    assert condition(bot, "Ready")["status"] == "False", condition(bot, "Ready")
    assert condition(bot, "Ready")["message"] == "3/5 screener chunks ready"
    assert condition(bot, "Progressing")["status"] == "True"
    assert condition(bot, "Ready")["observedGeneration"] == 2


# --- with the real services around it -------------------------------------------------


@pytest.mark.slow
def test_universe_bots_take_symbols_from_bot_rest_and_keep_them_through_an_outage(
    cluster: Cluster, operator_env: dict[str, str], service_env: dict[str, str], tmp_path: Path
) -> None:
    sim = ServiceProcess("cdb.mexc_sim", {}, tmp_path)
    with sim:
        sim.wait_healthy(30.0)
        rest = ServiceProcess("cdb.bot_rest", {**service_env, "MEXC_REST_URL": sim.url}, tmp_path)
        env = {**operator_env, "BOT_REST_URL": rest.url, "UNIVERSE_REFRESH_S": "1"}
        with rest, running_operator(cluster, env):
            rest.wait_healthy(30.0)
            cluster.apply_bot("universe", {"universe": "all-usdt-perpetuals", "chunkSize": 15})
            bot = eventually(with_status(cluster, "universe", "chunks"), "applied")
            rest.terminate()  # bot_rest goes away; the timer re-resolves
            unavailable = eventually(
                degraded(cluster, "universe", "UniverseUnavailable"), "degraded"
            )
            config_map = cluster.read("configmaps", "universe-config")

    count = bot["status"]["symbols"]
    assert count == 40  # mexc_sim's default market: 40 USDT perpetuals
    assert bot["status"]["chunks"] == 3 and bot["status"]["universeResolvedAt"]
    assert unavailable["status"]["symbols"] == count  # the last resolved set stays in force
    assert config_map is not None and len(config_map["data"]["symbols"].split(",")) == count
    assert "bot_rest unreachable" in condition(unavailable, "Degraded")["message"]


def test_a_screener_deleted_by_hand_comes_back_on_the_timer(
    cluster: Cluster, operator_env: dict[str, str]
) -> None:
    env = {**operator_env, "UNIVERSE_REFRESH_S": "1"}
    with running_operator(cluster, env):
        cluster.apply_bot("momentum", {"symbols": symbols(450)})
        eventually(with_status(cluster, "momentum", "chunks", 3), "applied")
        old = cluster.read("statefulsets", "momentum-bot-ws")
        assert old is not None
        cluster.kube.kubectl("delete", "statefulset", "momentum-bot-ws", "-n", cluster.namespace)
        sts = eventually(
            lambda: (
                (s := cluster.read("statefulsets", "momentum-bot-ws"))
                and s["metadata"]["uid"] != old["metadata"]["uid"]
                and s
            ),
            "the screener recreated",
        )
        eventually(ready(cluster, "momentum"), "Ready again", timeout=WAIT_S)

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
            from tests.support import ACL_PASSWORDS

            resolved[item["name"]] = ACL_PASSWORDS["bot_ws"]
        elif "secretKeyRef" in source:
            resolved[item["name"]] = ""  # the harness's PostgreSQL trusts local connections
    return resolved


@pytest.mark.slow
def test_a_real_screener_started_from_the_generated_pod_env_takes_its_chunk(
    cluster: Cluster, operator_env: dict[str, str], service_env: dict[str, str], tmp_path: Path
) -> None:
    sim = ServiceProcess("cdb.mexc_sim", {}, tmp_path)
    rest = ServiceProcess("cdb.bot_rest", {**service_env, "MEXC_REST_URL": sim.url}, tmp_path)
    with sim, rest:
        sim.wait_healthy(30.0)
        rest.wait_healthy(30.0)
        detail = httpx.get(f"{sim.url}/api/v1/contract/detail").json()["data"]
        universe = sorted(row["symbol"] for row in detail if row["quoteCoin"] == "USDT")
        env = {
            **operator_env,
            "MEXC_WS_URL": sim.url.replace("http", "ws") + "/edge",
            "MEXC_REST_URL": sim.url,
            "BOT_REST_URL": rest.url,
        }
        with running_operator(cluster, env):
            cluster.apply_bot("momentum", {"symbols": universe, "chunkSize": 15})
            sts = eventually(lambda: cluster.read("statefulsets", "momentum-bot-ws"), "sts")
            config_map = eventually(lambda: cluster.read("configmaps", "momentum-config"), "cm")
        assert sts["spec"]["replicas"] == 3

        # The last pod of three: bot_ws derives chunk 2 from the ordinal in POD_NAME.
        screener = ServiceProcess(
            "cdb.bot_ws", {**pod_env(sts, config_map, "momentum-bot-ws-2"), **SIM_CLOCK}, tmp_path
        )
        with screener:
            screener.wait_healthy(60.0, ("ok", "stale"))
            status = eventually(lambda: connected(screener), "screener connected")
            container = sts["spec"]["template"]["spec"]["containers"][0]
            with httpx.Client(base_url=screener.url) as client:
                probes = {
                    kind: client.get(container[kind]["httpGet"]["path"]).status_code
                    for kind in ("startupProbe", "livenessProbe", "readinessProbe")
                }
            # Universe and backfill went through bot_rest (its pacer and cache are shared
            # by every screener pod), not to MEXC's REST API from each pod.
            served = eventually(lambda: rest_requests(rest, "klines"), "klines via bot_rest")
            universe_calls = rest_requests(rest, "universe")

    assert probes == {"startupProbe": 200, "livenessProbe": 200, "readinessProbe": 200}
    assert served >= 1 and universe_calls >= 1
    assert status["pod_index"] == 2
    assert sum(chunk["symbols"] for chunk in status["chunks"]) == len(universe) - 30
    assert status["config"]["chunk_count"] == 3 and status["config"]["chunk_size"] == 15


def rest_requests(rest: ServiceProcess, endpoint: str) -> float:
    return scrape(rest.url, "bot_rest_requests_total", endpoint=endpoint)


def connected(screener: ServiceProcess) -> dict[str, Any] | None:
    status = screener.status()
    chunks = status.get("chunks") or []
    return status if chunks and all(c.get("connected") for c in chunks) else None


@pytest.fixture
def example_namespaces(kube: ControlPlane, cluster: Cluster) -> Iterator[list[str]]:
    """One restricted namespace per example (in one namespace only the oldest bot would
    drive the pipeline), deleted afterwards."""
    examples = sorted((ROOT / "examples").glob("*/tradingbot.yaml"))
    names = [f"{cluster.namespace[:50]}-{i}" for i in range(len(examples))]
    for name in names:
        kube.kubectl("create", "namespace", name)
        kube.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield names
    for name in names:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_every_symbol_list_example_is_reconciled(
    cluster: Cluster, operator_env: dict[str, str], example_namespaces: list[str]
) -> None:
    examples = sorted((ROOT / "examples").glob("*/tradingbot.yaml"))
    listed = [
        (namespace, yaml.safe_load(path.read_text()))
        for namespace, path in zip(example_namespaces, examples, strict=True)
    ]
    listed = [(ns, example) for ns, example in listed if example["spec"].get("symbols")]
    assert len(listed) >= 3
    # One operator serving every example's namespace: the chart's ServiceAccount is bound
    # to one namespace, so this one logs in as the admin (RBAC: test_kube_operator.py).
    namespaces = [ns for ns, _ in listed]
    with running_operator(cluster, operator_env, namespaces, token=cluster.kube.admin_token):
        for namespace, example in listed:
            cluster.kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(example))
        applied = []
        for namespace, example in listed:
            at = Cluster(cluster.kube, namespace, cluster.token, cluster.api)
            name = example["metadata"]["name"]
            applied.append(eventually(with_status(at, name, "configHash"), name))

    for (_, example), bot in zip(listed, applied, strict=True):
        spec = example["spec"]
        expected = -(-len(spec["symbols"]) // spec.get("chunkSize", 200))
        assert bot["status"]["chunks"] == expected
        assert condition(bot, "Degraded")["status"] == "False"
