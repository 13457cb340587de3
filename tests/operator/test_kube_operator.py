"""The operator on a real kube-apiserver (tests/support/cluster.py), started as the chart starts it:
``python -m cdb_operator`` logged in with a token of the chart's ``cdb-operator``
ServiceAccount, bound to the chart's namespaced Role, against the harness's real Redis and
PostgreSQL. The real server assigns uid, generation and resourceVersion, enforces RBAC and
the status subresource; its StatefulSet controller creates the screener pods (admitted by
PodSecurity ``restricted``), kwok makes them Ready, and the controller's readyReplicas
drive the bot's Ready condition; its garbage collector removes what a deleted bot owned.

tests/operator/test_operator.py keeps KMock only for faults a real server cannot produce on demand
(it says so per test).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from redis import Redis

from cdb.core.bus import Bus, connect_redis
from cdb.core.db import Database
from cdb.core.events import Control, Stream
from cdb_operator.audit import AuditLog
from cdb_operator.context import OperatorContext
from cdb_operator.kube import KubeClient, ObjectRef
from cdb_operator.metrics import OperatorMetrics
from cdb_operator.reconcile import _refresh_once
from cdb_operator.settings import OperatorEnv
from cdb_operator.universe import UniverseClient
from tests.support import REDIS_PASSWORD, ServiceProcess, eventually, free_port
from tests.support.chart import operator_test_pod
from tests.support.cluster import ADMISSIBLE_POD, ControlPlane

TWO = ["BTC_USDT", "ETH_USDT"]


def symbols(count: int) -> list[str]:
    return [f"C{i:04d}_USDT" for i in range(count)]


@pytest.fixture(scope="module")
def crd(kube: ControlPlane) -> None:
    kube.apply_crd()


@pytest.fixture
def operator(
    kube: ControlPlane,
    crd: None,
    kube_namespace: str,
    service_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[ServiceProcess]:
    env = {
        **service_env,
        "KUBECONFIG": str(kube.operator_kubeconfig(kube_namespace, tmp_path / "kubeconfig")),
        "OPERATOR_NAMESPACE": kube_namespace,
        "SCREENER_POD_TEMPLATE": str(operator_test_pod()),
        "MEXC_WS_URL": "ws://mexc-sim:8010/edge",
        "MEXC_REST_URL": "http://mexc-sim:8010",
        "BOT_REST_URL": "http://127.0.0.1:9/unused",
        "RETRY_DELAY_S": "0.5",
        "BUS_PUBLISH_TIMEOUT_S": "1",
        "UNIVERSE_REFRESH_S": "3600",
    }
    process = ServiceProcess("cdb_operator", env, tmp_path, port=free_port())
    with process:
        process.wait_healthy(60.0)
        yield process
    print(f"operator log ({process.log_path}):\n{process.log()}")  # shown on failure


def apply_bot(kube: ControlPlane, namespace: str, name: str, spec: dict[str, Any]) -> None:
    manifest = {"apiVersion": "cdb.io/v1alpha1", "kind": "TradingBot",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip
    kube.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def patch_spec(kube: ControlPlane, namespace: str, name: str, spec: dict[str, Any]) -> None:
    kube.kubectl("patch", "tradingbot", name, "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": spec}))  # fmt: skip


def exists(kube: ControlPlane, namespace: str, kind: str, name: str) -> bool:
    return kube.run(["kubectl", "get", kind, name, "-n", namespace], check=False).returncode == 0


def bot(kube: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return kube.get("tradingbot", name, "-n", namespace)


def condition(resource: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (resource.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def observed(kube: ControlPlane, namespace: str, name: str, generation: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        current = bot(kube, namespace, name)
        status = current.get("status") or {}
        return current if status.get("observedGeneration") == generation else None

    result: dict[str, Any] = eventually(check, f"observedGeneration {generation}")
    return result


def wait_ready(kube: ControlPlane, namespace: str, name: str) -> None:
    """`kubectl wait` on the bot's Ready condition, as a user or a CI script waits."""
    kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"tb/{name}", "--timeout=180s")


def controls(namespace_env: dict[str, str], name: str) -> list[Control]:
    client = Redis(host=namespace_env["REDIS_HOST"], port=int(namespace_env["REDIS_PORT"]),
                   password=REDIS_PASSWORD)  # fmt: skip
    try:
        entries = client.xrange(Stream.CONTROL.value)
    finally:
        client.close()
    events = [Control.model_validate_json(fields[b"event"]) for _, fields in entries]
    return [e for e in events if e.bot == name]


def audit_count(postgresql: Any, name: str) -> int:
    with postgresql.cursor() as cur:
        cur.execute("SELECT count(*) FROM config_audit WHERE bot = %s", (name,))
        row = cur.fetchone()
    return int(row[0])


def log_records(process: ServiceProcess) -> list[dict[str, Any]]:
    """Every line the operator wrote, each of which must be one JSON object."""
    lines = process.log_path.read_text(errors="replace").splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise AssertionError(f"not a JSON log line: {line!r}") from error
    return records


def test_it_starts_with_the_charts_rbac_and_logs_only_json(
    kube: ControlPlane, kube_namespace: str, operator: ServiceProcess
) -> None:
    apply_bot(kube, kube_namespace, "momentum", {"symbols": TWO})
    eventually(lambda: exists(kube, kube_namespace, "configmap", "momentum-config"),
               "the first reconcile's ConfigMap", timeout=60)  # fmt: skip
    observed(kube, kube_namespace, "momentum", 1)
    records = log_records(operator)
    errors = [r for r in records if r.get("level") in ("ERROR", "CRITICAL")]
    assert errors == [], errors
    refused = [r for r in records if "403" in r.get("message", "") or "orbidden" in r["message"]]
    assert refused == [], refused
    per_object = [r for r in records if "k8s" in r]
    assert per_object, "no kopf per-object record was logged"
    assert all(r["k8s"]["namespace"] == kube_namespace for r in per_object)
    objects = {(r["k8s"]["kind"], r["k8s"]["name"]) for r in per_object}
    assert ("TradingBot", "momentum") in objects
    assert objects <= {("TradingBot", "momentum"), ("StatefulSet", "momentum-bot-ws")}
    assert all(r["service"] == "operator" for r in records)


def test_create_makes_owned_objects_and_ready_follows_the_statefulset_controller(
    kube: ControlPlane, kube_namespace: str, operator: ServiceProcess
) -> None:
    ns = kube_namespace
    apply_bot(kube, ns, "momentum", {"symbols": symbols(450), "chunkSize": 200})
    wait_ready(kube, ns, "momentum")
    current = bot(kube, ns, "momentum")
    uid = current["metadata"]["uid"]
    sts = kube.get("statefulset", "momentum-bot-ws", "-n", ns)
    config_map = kube.get("configmap", "momentum-config", "-n", ns)
    for owned in (sts, config_map):
        (owner,) = owned["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("TradingBot", "momentum", uid)
        assert owner["controller"] is True and owner["blockOwnerDeletion"] is True
    assert sts["spec"]["replicas"] == 3 and sts["status"]["readyReplicas"] == 3
    assert current["status"]["chunks"] == 3 and current["status"]["symbols"] == 450
    assert current["status"]["observedGeneration"] == current["metadata"]["generation"] == 1
    assert condition(current, "Reconciling")["status"] == "False"
    assert condition(current, "Stalled")["status"] == "False"
    assert condition(current, "Ready")["message"] == "3/3 screener chunks ready"
    pods = kube.get("pods", "-n", ns, "-l", "cdb.io/bot=momentum")["items"]
    assert len(pods) == 3 and all(p["spec"]["nodeName"] == "kwok-node-0" for p in pods)

    patch_spec(kube, ns, "momentum", {"chunkSize": 100})
    observed(kube, ns, "momentum", 2)
    wait_ready(kube, ns, "momentum")
    assert kube.get("statefulset", "momentum-bot-ws", "-n", ns)["status"]["readyReplicas"] == 5
    assert condition(bot(kube, ns, "momentum"), "Ready")["message"] == "5/5 screener chunks ready"

    patch_spec(kube, ns, "momentum", {"symbols": symbols(150)})
    observed(kube, ns, "momentum", 3)
    wait_ready(kube, ns, "momentum")
    assert kube.get("statefulset", "momentum-bot-ws", "-n", ns)["spec"]["replicas"] == 2

    events = kube.get("events", "-n", ns, "--field-selector", "involvedObject.name=momentum")
    reasons = [e["reason"] for e in events["items"]]
    assert "ConfigApplied" in reasons, reasons
    out = kube.kubectl("get", "tb", "-n", ns)
    assert "momentum" in out and "paper" in out


def test_a_threshold_edit_publishes_one_control_event_and_a_same_apply_changes_nothing(
    kube: ControlPlane,
    kube_namespace: str,
    operator: ServiceProcess,
    service_env: dict[str, str],
    postgresql: Any,
) -> None:
    ns = kube_namespace
    spec = {"symbols": TWO, "signal": {"thresholdPct": 3.0}}
    apply_bot(kube, ns, "momentum", spec)
    observed(kube, ns, "momentum", 1)
    wait_ready(kube, ns, "momentum")
    sts_before = kube.get("statefulset", "momentum-bot-ws", "-n", ns)
    assert [c.generation for c in controls(service_env, "momentum")] == [1]

    apply_bot(kube, ns, "momentum", {**spec, "signal": {"thresholdPct": 4.5}})
    current = observed(kube, ns, "momentum", 2)
    events = eventually(lambda: controls(service_env, "momentum")[1:], "the second control")
    assert [(c.generation, c.settings.signal_threshold_pct) for c in events] == [(2, 4.5)]
    assert current["status"]["lastChange"]["fields"] == ["signal.thresholdPct"]
    sts_after = kube.get("statefulset", "momentum-bot-ws", "-n", ns)
    assert sts_after["metadata"]["generation"] == sts_before["metadata"]["generation"]

    rows = audit_count(postgresql, "momentum")
    version = bot(kube, ns, "momentum")["metadata"]["resourceVersion"]
    apply_bot(kube, ns, "momentum", {**spec, "signal": {"thresholdPct": 4.5}})
    time.sleep(2)  # a reconcile would have run by now; nothing may have been written
    after = bot(kube, ns, "momentum")
    assert after["metadata"]["generation"] == 2
    assert after["metadata"]["resourceVersion"] == version
    assert len(controls(service_env, "momentum")) == 2
    assert audit_count(postgresql, "momentum") == rows


def test_status_is_written_through_the_status_subresource_only(
    kube: ControlPlane, kube_namespace: str, operator: ServiceProcess
) -> None:
    apply_bot(kube, kube_namespace, "momentum", {"symbols": TWO})
    wait_ready(kube, kube_namespace, "momentum")
    raw = kube.kubectl("get", "tb", "momentum", "-n", kube_namespace, "-o", "json",
                       "--show-managed-fields")  # fmt: skip
    entries = json.loads(raw)["metadata"]["managedFields"]
    status_writers = [e for e in entries if "f:status" in e.get("fieldsV1", {})]
    assert status_writers, entries
    assert all(e.get("subresource") == "status" for e in status_writers), status_writers
    main = [e for e in entries if e.get("subresource") != "status"]
    assert all("f:status" not in e.get("fieldsV1", {}) for e in main)


def test_deleting_a_bot_pauses_trading_and_the_garbage_collector_removes_its_objects(
    kube: ControlPlane,
    kube_namespace: str,
    operator: ServiceProcess,
    service_env: dict[str, str],
) -> None:
    ns = kube_namespace
    apply_bot(kube, ns, "momentum", {"symbols": TWO})
    wait_ready(kube, ns, "momentum")
    kube.kubectl("delete", "tb", "momentum", "-n", ns, "--timeout=60s")

    def gone() -> bool:
        left = kube.run(["kubectl", "get", "statefulset,configmap,pods", "-n", ns,
                         "-l", "cdb.io/bot=momentum", "-o", "name"]).stdout  # fmt: skip
        return left.strip() == ""

    eventually(gone, "the owned objects garbage-collected", timeout=60)
    last = controls(service_env, "momentum")[-1]
    assert last.settings.paused is True


# --- a stale readiness write ----------------------------------------------------------


class RacingKube(KubeClient):
    """The real client; right after its first read of the bot, a concurrent writer (the
    test, through kubectl) lands a newer status — the race a real reconcile can win."""

    def __init__(self, kube: ControlPlane, namespace: str, newer: dict[str, Any]) -> None:
        info = kopf.ConnectionInfo(server=kube.server, ca_path=str(kube.ca_path),
                                   token=kube.admin_token)  # fmt: skip
        super().__init__(lambda: info)
        self.plane, self.namespace, self.newer, self.raced = kube, namespace, newer, False

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        current = await super().get(ref)
        if ref.plural == "tradingbots" and not self.raced:
            self.raced = True
            await asyncio.to_thread(
                self.plane.kubectl, "patch", "tb", ref.name, "-n", self.namespace,
                "--type=merge", "--subresource=status", "-p", json.dumps(self.newer),
            )  # fmt: skip
        return current


async def test_a_stale_readiness_write_gets_a_409_and_is_computed_again(
    kube: ControlPlane, crd: None, kube_namespace: str, service_env: dict[str, str]
) -> None:
    ns = kube_namespace
    apply_bot(kube, ns, "momentum", {"symbols": TWO})
    labels = {"cdb.io/bot": "momentum", "app.kubernetes.io/name": "bot-ws"}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "momentum-bot-ws", "namespace": ns, "labels": labels},
           "spec": {"replicas": 1, "serviceName": "bot-ws",
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels},
                                 "spec": ADMISSIBLE_POD}}}  # fmt: skip
    kube.kubectl("apply", "-f", "-", input=json.dumps(sts))
    eventually(
        lambda: kube.get("sts", "momentum-bot-ws", "-n", ns)["status"].get("readyReplicas") == 1,
        "the StatefulSet controller's readyReplicas",
    )
    env = OperatorEnv(_env_file=None, operator_namespace=ns,  # type: ignore[call-arg]
                      screener_pod_template=str(operator_test_pod()),
                      **{k.lower(): v for k, v in service_env.items()})  # fmt: skip
    metrics = OperatorMetrics()
    ref = ObjectRef("cdb.io/v1alpha1", "tradingbots", ns, "momentum")
    workload = ObjectRef("apps/v1", "statefulsets", ns, "momentum-bot-ws")

    def context(client: KubeClient) -> OperatorContext:
        return OperatorContext(
            env=env,
            kube=client,
            bus=Bus(connect_redis(env), metrics=metrics.kernel),
            db=Database(env),
            audit=AuditLog(Database(env)),
            universe=UniverseClient(env.bot_rest_url, 1.0),
            metrics=metrics,
        )

    # A screener event before the reconcile's status landed: try again, since the status
    # about to land was computed before this event (on the real server, 1 run in 3 left
    # the bot not Ready for good when this returned "done").
    info = kopf.ConnectionInfo(server=kube.server, ca_path=str(kube.ca_path),
                               token=kube.admin_token)  # fmt: skip
    early = context(KubeClient(lambda: info))
    try:
        assert await _refresh_once(early, ref, workload) is True
    finally:
        await early.close()

    now = "2026-12-07T00:00:00Z"
    conditions = [{"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": now}
                  for t, s, r in (("Ready", "False", "ChunksStarting"),
                                  ("Progressing", "True", "RollingOut"),
                                  ("Degraded", "False", "AsExpected"))]  # fmt: skip
    kube.kubectl("patch", "tb", "momentum", "-n", ns, "--type=merge", "--subresource=status",
                 "-p", json.dumps({"status": {"chunks": 1, "observedGeneration": 1,
                                              "conditions": conditions}}))  # fmt: skip
    # What a reconcile lands meanwhile: the bus is down.
    bus_down = [dict(c) for c in conditions]
    bus_down[2] = {"type": "Degraded", "status": "True", "reason": "BusUnreachable",
                   "message": "redis down", "lastTransitionTime": now}  # fmt: skip
    newer = {"status": {"conditions": bus_down}}

    ctx = context(RacingKube(kube, ns, newer))
    try:
        again = await _refresh_once(ctx, ref, workload)
        stored = bot(kube, ns, "momentum")
        assert condition(stored, "Degraded")["reason"] == "BusUnreachable", (
            "the stale readiness write replaced the newer status"
        )
        assert again is True
        assert metrics.status_conflicts._value.get() == 1
        assert await _refresh_once(ctx, ref, workload) is False
    finally:
        await ctx.close()
    stored = bot(kube, ns, "momentum")
    assert condition(stored, "Degraded")["reason"] == "BusUnreachable"
    assert (condition(stored, "Stalled")["status"], condition(stored, "Stalled")["reason"]) == (
        "True",
        "BusUnreachable",
    )
    assert condition(stored, "Progressing")["status"] == "False"  # 1/1 ready: rolled out
