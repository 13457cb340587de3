"""The operator: how long from ``kubectl apply``/``edit`` to the effect, on KMock's API.

kopf runs for real (``KopfRunner``) against a KMock Kubernetes emulator on this loop, with
the bench's local Redis and PostgreSQL. Three figures, median of ``ROUNDS`` bots each:

* create → applied: a new 450-symbol bot until its status carries the config hash
  (ConfigMap + StatefulSet written, audit rows, control event, status patch);
* threshold edit → control event: a spec edit until the ``control`` entry is on Redis;
* replayed reconcile writes: API writes when the operator restarts over applied bots (0).

Each bot has a namespace of its own: in one namespace only the oldest bot would drive the
pipeline (docs/OPERATOR.md, "One bot per namespace").

KMock answers in-process; a real API server adds its own round trips (etcd writes).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import kmock
import kopf
from kopf.testing import KopfRunner
from redis.asyncio import Redis

from cdb.core.events import Control, Stream
from cdb.localstack import LocalStack
from cdb_operator.handlers import build_registry, configure_kopf
from cdb_operator.settings import OperatorEnv

ROUNDS = 10
NAMESPACE = "bench"
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
MERGE = {"Content-Type": "application/merge-patch+json"}


def declare(cluster: Any) -> None:
    for key, kind in (
        ("v1/namespaces", "Namespace"),
        ("v1/configmaps", "ConfigMap"),
        ("v1/events", "Event"),
        ("apps/v1/statefulsets", "StatefulSet"),
    ):
        cluster.resources[key] = {"kind": kind, "namespaced": kind != "Namespace", "verbs": VERBS}
    cluster.resources["cdb.io/v1alpha1/tradingbots"] = {
        "kind": "TradingBot",
        "namespaced": True,
        "subresources": ["status"],
        "verbs": VERBS,
    }
    cluster.objects["v1/namespaces", None, NAMESPACE] = {"metadata": {"name": NAMESPACE}}


def bots_path(name: str) -> str:
    """Each bench bot lives in a namespace named after it (one active bot per namespace)."""
    return f"/apis/cdb.io/v1alpha1/namespaces/{name}/tradingbots"


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.005)
    raise TimeoutError("the operator did not get there in time")


async def status_of(cluster: Any, name: str) -> dict[str, Any]:
    async with cluster.get(f"{bots_path(name)}/{name}") as reply:
        body = await reply.json() if reply.status == 200 else {}
    return dict(body.get("status") or {})


def writes(cluster: Any) -> int:
    return sum(
        1
        for r in list(cluster)
        if r.resource is not None
        and r.resource.plural in ("configmaps", "statefulsets")
        and r.method.value in ("POST", "PATCH", "PUT")
    )


async def measure(stack: LocalStack) -> list[dict[str, Any]]:
    env = {k.lower(): v for k, v in stack.env().items()}
    settings = OperatorEnv(  # type: ignore[call-arg]
        _env_file=None,
        **env,
        operator_namespace=NAMESPACE,
        http_host="127.0.0.1",
        http_port=18080,
        retry_delay_s=0.5,
    )
    redis = Redis(host="127.0.0.1", port=stack.redis_port, password=stack.redis.password)
    created: list[float] = []
    edited: list[float] = []
    async with kmock.KubernetesEmulator() as cluster, kmock.Server(cluster):
        declare(cluster)
        kopf_settings = kopf.OperatorSettings()
        configure_kopf(kopf_settings)
        registry = build_registry(
            settings, kopf.ConnectionInfo(server=str(cluster.url).rstrip("/"))
        )
        args = ["run", "--standalone", "--all-namespaces"]
        run_id = uuid.uuid4().hex[:6]
        with KopfRunner(args, registry=registry, settings=kopf_settings, timeout=30):
            for i in range(ROUNDS):
                name = f"bench-{run_id}-{i}"
                cluster.objects["v1/namespaces", None, name] = {"metadata": {"name": name}}
                body = {
                    "apiVersion": "cdb.io/v1alpha1",
                    "kind": "TradingBot",
                    "metadata": {
                        "name": name,
                        "namespace": name,
                        "uid": str(uuid.uuid4()),
                        "generation": 1,
                        "resourceVersion": "1",
                    },
                    "spec": {"symbols": [f"C{n:04d}_USDT" for n in range(450)]},
                }
                started = time.perf_counter()
                async with cluster.post(bots_path(name), json=body):
                    pass
                await until(lambda name=name: _has(cluster, name, "configHash"))
                created.append(time.perf_counter() - started)

                before = await _controls(redis, name)
                started = time.perf_counter()
                patch = {"metadata": {"generation": 2}, "spec": {"signal": {"thresholdPct": 4.5}}}
                async with cluster.patch(f"{bots_path(name)}/{name}", json=patch, headers=MERGE):
                    pass
                await until(lambda name=name, before=before: _more(redis, name, before))
                edited.append(time.perf_counter() - started)
            await until(
                lambda: _has(cluster, f"bench-{run_id}-{ROUNDS - 1}", "observedGeneration", 2)
            )
        before_restart = writes(cluster)
        with KopfRunner(
            args,
            registry=build_registry(
                settings, kopf.ConnectionInfo(server=str(cluster.url).rstrip("/"))
            ),
            settings=kopf_settings,
            timeout=30,
        ):
            await asyncio.sleep(3.0)
        replay_writes = writes(cluster) - before_restart
    await redis.aclose()
    return [
        {
            "name": "create → applied (450 symbols)",
            "value": statistics.median(created) * 1000,
            "unit": "ms",
            "note": f"median of {ROUNDS}; max {max(created) * 1000:.0f} ms",
        },
        {
            "name": "threshold edit → control event",
            "value": statistics.median(edited) * 1000,
            "unit": "ms",
            "note": f"median of {ROUNDS}; max {max(edited) * 1000:.0f} ms",
        },
        {
            "name": "writes by a replayed reconcile",
            "value": replay_writes,
            "unit": "writes",
            "note": f"operator restarted over {ROUNDS} applied bots",
        },
    ]


async def _has(cluster: Any, name: str, key: str, value: Any = None) -> bool:
    status = await status_of(cluster, name)
    return key in status and (value is None or status[key] == value)


async def _controls(redis: Redis, bot: str) -> int:
    entries = await redis.xrange(Stream.CONTROL.value)
    return sum(
        1 for _, fields in entries if Control.model_validate_json(fields[b"event"]).bot == bot
    )


async def _more(redis: Redis, bot: str, before: int) -> bool:
    return await _controls(redis, bot) > before


def run(stack: LocalStack) -> list[dict[str, Any]]:
    return asyncio.run(measure(stack))
