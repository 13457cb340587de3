"""The chart and the operator agree: the screener StatefulSet the operator builds from the
chart's environment and default TradingBot is valid Kubernetes, meets the restricted Pod
Security Standard, is found by the chart's bot-ws Service, Prometheus and NetworkPolicy,
and reads the chart's Secrets. Also the kind end-to-end path, as far as it runs here."""

from __future__ import annotations

import asyncio
import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from pydantic import SecretStr

from cdb.core.config import PostgresSettings
from cdb.core.db import apply_migrations
from cdb_operator.resources import build_stateful_set
from cdb_operator.settings import OperatorEnv
from cdb_operator.spec import ResolvedConfig, TradingBotSpec
from tests.support import ROOT
from tests.support.chart import (
    KUBE_VALIDATE,
    find,
    pss_check,
    rendered_objects,
    screener_pod_template,
    tool,
)


def rendered(*args: str) -> list[dict[str, Any]]:
    return rendered_objects(*args)


def operator_statefulset(objs: list[dict[str, Any]], *args: str) -> dict[str, Any]:
    """What the operator would create for the chart's default TradingBot: its environment
    and its screener pod (ConfigMap cdb-screener-pod) as the chart renders them with
    ``args``, through the operator's own builder."""
    config = find(objs, "ConfigMap", "cdb-config")["data"]
    container = find(objs, "Deployment", "cdb-operator")["spec"]["template"]["spec"]
    plain = {e["name"]: e["value"] for e in container["containers"][0]["env"] if "value" in e}
    # the file the chart mounts at SCREENER_POD_TEMPLATE, here from the same rendering
    plain["SCREENER_POD_TEMPLATE"] = str(screener_pod_template(*args))
    env = OperatorEnv(
        **{k.lower(): v for k, v in {**config, **plain}.items()},
        operator_namespace="cdb",
        redis_password=SecretStr("unused-in-this-test"),
    )
    bot = next(o for o in objs if o["kind"] == "TradingBot")
    spec = TradingBotSpec.model_validate(bot["spec"])
    resolved = ResolvedConfig.build(spec, list(spec.symbols))
    owner = {"apiVersion": "cdb.io/v1alpha1", "kind": "TradingBot",
             "name": bot["metadata"]["name"], "uid": "0000-test", "controller": True,
             "blockOwnerDeletion": True}  # fmt: skip
    return build_stateful_set(bot["metadata"]["name"], "cdb", owner, resolved, env)


# What may differ between the chart's static screener pod and the operator's: per-owner
# metadata and the env (the static pod's envFrom cdb-config and values; the bot's config).
PER_OWNER_ANNOTATIONS = ("checksum/config", "cdb.io/workload-hash")


def shared_part(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template without its labels, per-owner annotations and the screener's env."""
    pod = copy.deepcopy(template)
    pod["metadata"].pop("labels", None)
    for key in PER_OWNER_ANNOTATIONS:
        pod["metadata"].get("annotations", {}).pop(key, None)
    for container in pod["spec"]["containers"]:
        container.pop("env", None)
        container.pop("envFrom", None)
    return pod


# Values that reach the screener pod: image, resources, pull secrets, security, start order.
CHANGED = [
    "--set", "image.repository=registry.example/cdb", "--set", "image.digest=sha256:" + "a" * 64,
    "--set", "botWs.resources.limits.memory=1Gi", "--set", "imagePullSecrets[0]=pull",
    "--set", "podSecurityContext.runAsUser=1001", "--set", "startOrder.waitForUpstream=false",
]  # fmt: skip
KIND = ["-f", str(ROOT / "charts/cdb/ci/kind-values.yaml")]


@pytest.mark.parametrize("args", [[], KIND, CHANGED], ids=["defaults", "kind", "changed"])
def test_the_operators_screener_pod_is_the_charts_apart_from_the_per_bot_fields(
    args: list[str],
) -> None:
    """One definition: the chart's static bot-ws StatefulSet (operator off) and the
    StatefulSet the operator builds from the chart's cdb-screener-pod differ only in name,
    labels, replicas, env, owner reference and the per-owner annotations."""
    static = find(rendered(*args, "--set", "operator.enabled=false"), "StatefulSet", "bot-ws")
    made = operator_statefulset(rendered(*args), *args)
    assert shared_part(made["spec"]["template"]) == shared_part(static["spec"]["template"])
    for key in ("podManagementPolicy", "revisionHistoryLimit"):
        assert made["spec"][key] == static["spec"][key], key


def test_the_charts_values_reach_the_operators_pods() -> None:
    pod = operator_statefulset(rendered(*CHANGED), *CHANGED)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/cdb@sha256:" + "a" * 64
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["securityContext"]["runAsUser"] == 1001
    (wait,) = pod["initContainers"]
    assert wait["command"][3:] == ["redis"]  # no upstream wait: startOrder.waitForUpstream


def test_the_operators_screener_fits_the_chart(tmp_path: Path) -> None:
    objs = rendered(*KIND)
    statefulset = operator_statefulset(objs, *KIND)
    pod = statefulset["spec"]["template"]
    labels = pod["metadata"]["labels"]
    selector = find(objs, "Service", "bot-ws")["spec"]["selector"]
    assert selector.items() <= labels.items(), "the bot-ws Service must select the pods"
    policy = find(objs, "NetworkPolicy", "bot-ws")["spec"]["podSelector"]["matchLabels"]
    assert policy.items() <= labels.items(), "the bot-ws NetworkPolicy must select the pods"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "claire-de-binare:e2e"
    refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {("cdb-redis", "bot_ws-password"), ("cdb-postgres", "postgres-password")}
    assert {e["name"]: e.get("value") for e in container["env"]}["REDIS_USERNAME"] == "bot_ws"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MEXC_WS_URL"] == "ws://mexc-sim:8010/edge"
    # Universe and backfill through the chart's bot_rest: one pacer for all screener pods.
    assert env["BOT_REST_URL"] == "http://bot-rest:8004"
    assert env["REDIS_HOST"] == "redis" and env["POSTGRES_HOST"] == "postgres"
    path = tmp_path / "statefulset.yaml"
    path.write_text(yaml.safe_dump(statefulset))
    result = subprocess.run(
        [tool(KUBE_VALIDATE), "--strict", "-k", "1.37", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "passed" in result.stdout, result.stdout + result.stderr
    verdict = pss_check(path)
    assert verdict.stdout.strip() == "ALLOWED StatefulSet/mexc-momentum-bot-ws", verdict.stdout
    assert verdict.returncode == 0


def kind_script() -> str:
    return (ROOT / "scripts" / "kind-e2e.sh").read_text()


def test_kind_e2e_is_wired_from_ci_to_the_script() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/kind-e2e.yaml").read_text())
    steps = workflow["jobs"]["kind-e2e"]["steps"]
    assert any(step.get("run") == "make kind-e2e" for step in steps)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^kind-e2e:.*\n\t.*scripts/kind-e2e\.sh", makefile, re.M)
    syntax = subprocess.run(["bash", "-n", str(ROOT / "scripts/kind-e2e.sh")], check=False)
    assert syntax.returncode == 0
    script = kind_script()
    values = re.search(r"^VALUES=(\S+)", script, re.M)
    assert values and (ROOT / values.group(1)).exists()
    bot = re.search(r"^BOT=(\S+)", script, re.M)
    objs = rendered("-f", str(ROOT / values.group(1)))
    (tradingbot,) = [o for o in objs if o["kind"] == "TradingBot"]
    assert bot and tradingbot["metadata"]["name"] == bot.group(1)
    assert "statefulset/$BOT-bot-ws" in script
    assert find(objs, "Deployment", "mexc-sim")


def test_the_order_query_of_the_e2e_runs_on_the_real_schema(
    postgresql: psycopg.Connection[Any],
) -> None:
    match = re.search(r'^ORDERS_SQL="([^"]+)"', kind_script(), re.M)
    assert match
    info = postgresql.info
    settings = PostgresSettings(
        postgres_host=info.host, postgres_port=info.port, postgres_db=info.dbname,
        postgres_user=info.user,
    )  # fmt: skip
    asyncio.run(apply_migrations(settings))
    assert postgresql.execute(match.group(1)).fetchone() == (0,)
    postgresql.execute(
        "INSERT INTO orders (order_id, signal_id, symbol, side, quantity, notional, price,"
        " stop_loss, mode, status) VALUES ('o1', 's1', 'BTC_USDT', 'long', 0.01, 430, 43000,"
        " 42140, 'paper', 'filled')"
    )
    assert postgresql.execute(match.group(1)).fetchone() == (1,)
