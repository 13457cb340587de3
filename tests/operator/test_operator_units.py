"""The operator's pure parts, and ``python -m cdb_operator`` as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml

from cdb.bot_ws.settings import BotWsSettings
from cdb.core.config import ConfigError, ServiceSettings, load_settings
from cdb.core.db import Database, apply_migrations
from cdb.core.events import Control
from cdb_operator.audit import AuditLog, FieldChange, Transition, actor_of, diff_configs
from cdb_operator.conditions import Problem, WorkloadState, merge_conditions, workload_conditions
from cdb_operator.handlers import configure_kopf
from cdb_operator.pipeline import active_bot
from cdb_operator.reconcile import retire_delay
from cdb_operator.resources import WORKLOAD_ANNOTATION, build_config_map, build_stateful_set
from cdb_operator.settings import OperatorEnv
from cdb_operator.spec import ResolvedConfig, TradingBotSpec, chunk_count
from tests.support import ROOT, ServiceProcess, eventually_async, free_port
from tests.support.chart import screener_pod_template

OWNER = {"apiVersion": "cdb.io/v1alpha1", "kind": "TradingBot", "name": "b", "uid": "u"}


def env() -> OperatorEnv:
    return OperatorEnv(  # type: ignore[call-arg]
        _env_file=None, redis_password="x", screener_pod_template=screener_pod_template()
    )


def config(**spec: Any) -> ResolvedConfig:
    parsed = TradingBotSpec.model_validate({"symbols": ["BTC_USDT", "ETH_USDT"], **spec})
    return ResolvedConfig.build(parsed, list(parsed.symbols))


@pytest.mark.parametrize(
    ("symbols", "size", "chunks"),
    [(450, 200, 3), (400, 200, 2), (1, 200, 1), (0, 200, 1), (5, 1, 5)],
)
def test_one_chunk_per_chunk_size_symbols(symbols: int, size: int, chunks: int) -> None:
    assert chunk_count(symbols, size) == chunks


def test_live_settings_leave_the_pod_template_alone() -> None:
    base = build_stateful_set("b", "cdb", OWNER, config(), env())
    live = build_stateful_set(
        "b",
        "cdb",
        OWNER,
        config(
            signal={"thresholdPct": 9, "minVolume": 1},
            risk={"maxDailyLossPct": 1, "maxPositionPct": 1, "maxExposurePct": 1},
            trading={"paused": True},
            shadowMode={"enabled": False, "confidenceThreshold": 0.9},
        ),
        env(),
    )
    assert live == base
    rolled = build_stateful_set("b", "cdb", OWNER, config(signal={"lookbackMinutes": 30}), env())
    template = rolled["spec"]["template"]
    assert (
        template["metadata"]["annotations"][WORKLOAD_ANNOTATION]
        != (base["spec"]["template"]["metadata"]["annotations"][WORKLOAD_ANNOTATION])
    )


def test_the_control_event_carries_the_approval_mode_and_its_window() -> None:
    """What risk_manager adopts: ``trading.approval`` and ``approvalTimeoutSeconds`` go out
    in the control event's settings (defaults too), and a change is a config change."""
    defaults = TradingBotSpec.model_validate({"symbols": ["BTC_USDT"]}).live_settings()
    assert (defaults.approval, defaults.approval_timeout_s) == ("auto", 60)
    spec = TradingBotSpec.model_validate(
        {"symbols": ["BTC_USDT"], "trading": {"approval": "manual", "approvalTimeoutSeconds": 90}}
    )
    settings = spec.live_settings()
    assert (settings.approval, settings.approval_timeout_s) == ("manual", 90)
    assert Control.model_validate_json(
        Control(bot="b", generation=2, config_hash="h", settings=settings, timestamp=1.0)
        .model_dump_json()
    ).settings.approval == "manual"  # fmt: skip
    manual = config(trading={"approval": "manual", "approvalTimeoutSeconds": 90})
    assert manual.document()["trading"]["approval"] == "manual"
    assert manual.document()["trading"]["approvalTimeoutSeconds"] == 90
    assert manual.config_hash != config().config_hash
    changed = {c.field for c in diff_configs(config().document(), manual.document())}
    assert changed == {"trading.approval", "trading.approvalTimeoutSeconds"}
    assert manual.workload_hash == config().workload_hash  # live: no pod restarts


def test_the_config_map_carries_what_the_pods_read() -> None:
    config_map = build_config_map("b", "cdb", OWNER, config(symbols=["ETH_USDT", "BTC_USDT"]))
    assert config_map["data"]["symbols"] == "BTC_USDT,ETH_USDT"
    assert config_map["metadata"]["ownerReferences"] == [OWNER]


def test_no_secret_value_is_ever_written_into_a_manifest() -> None:
    secret_env = OperatorEnv(  # type: ignore[call-arg]
        _env_file=None,
        redis_password="r-secret-1",
        postgres_password="p-secret-2",
        screener_pod_template=screener_pod_template(),
    )
    manifest = yaml.safe_dump(build_stateful_set("b", "cdb", OWNER, config(), secret_env))
    assert "r-secret-1" not in manifest and "p-secret-2" not in manifest


def test_diff_lists_changed_leaves_only() -> None:
    old = config().document()
    new = config(signal={"thresholdPct": 4.5}, trading={"paused": True}).document()
    changes = diff_configs(old, new)
    assert [(c.field, c.old, c.new) for c in changes] == [
        ("signal.thresholdPct", 3.0, 4.5),
        ("trading.paused", False, True),
    ]
    assert diff_configs(new, new) == []
    assert {c.field for c in diff_configs(None, new)} >= {
        "symbols",
        "chunkSize",
        "risk.stopLossPct",
    }


async def test_the_audit_skips_a_retried_transition_and_keeps_every_real_one(
    settings: ServiceSettings, postgresql: Any
) -> None:
    await apply_migrations(settings)
    db = Database(settings, min_size=0, max_size=1)
    await db.open()
    audit = AuditLog(db)
    grow = [FieldChange("symbols", ["A_USDT"], ["A_USDT", "B_USDT"])]
    shrink = [FieldChange("symbols", ["A_USDT", "B_USDT"], ["A_USDT"])]
    listed = Transition("u", "uid-1", 1, "h1", "h2")
    try:
        assert await audit.record(listed, grow, "universe-refresh") == grow
        assert await audit.record(listed, grow, "universe-refresh") == []  # a retry
        assert await audit.record(Transition("u", "uid-1", 1, "h2", "h1"), shrink, "r") == shrink
        assert await audit.record(listed, grow, "universe-refresh") == grow  # listed again
        assert await audit.record(listed, grow, "universe-refresh") == []  # its retry
        assert await audit.record(Transition("u", "uid-2", 1, "h1", "h2"), grow, "k") == grow
    finally:
        await db.close()
    postgresql.commit()
    with postgresql.cursor() as cur:
        cur.execute(
            "SELECT bot_uid, previous_config_hash, config_hash FROM config_audit ORDER BY id"
        )
        rows = cur.fetchall()
    assert rows == [
        ("uid-1", "h1", "h2"),
        ("uid-1", "h2", "h1"),
        ("uid-1", "h1", "h2"),
        ("uid-2", "h1", "h2"),
    ]


def bot(name: str, created: str | None, uid: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "uid": uid or f"uid-{name}"}
    if created is not None:
        metadata["creationTimestamp"] = created
    return {"metadata": metadata}


def test_the_oldest_bot_is_active_and_a_tie_goes_to_the_name() -> None:
    zeta = bot("zeta", "2026-11-25T05:00:00Z")
    alpha = bot("alpha", "2026-11-25T05:01:00Z")
    beta = bot("beta", "2026-11-25T05:01:00Z")
    assert active_bot(alpha, [beta, zeta, alpha]).name == "zeta"
    assert active_bot(beta, [beta, alpha]).name == "alpha"
    # The listing may not show the bot a watch event just brought: it still counts.
    assert active_bot(alpha, [beta]).name == "alpha"
    assert active_bot(alpha, []).name == "alpha"


def test_a_waiting_deletion_backs_off_to_five_minutes() -> None:
    assert [retire_delay(10.0, retry) for retry in range(6)] == [10, 20, 40, 80, 160, 300]
    assert retire_delay(10.0, 10_000) == 300.0
    assert retire_delay(0.1, 0) == 0.1


def spec_entry(manager: str, when: str, **extra: Any) -> dict[str, Any]:
    return {"manager": manager, "time": when, "fieldsV1": {"f:spec": {}}, **extra}


@pytest.mark.parametrize(
    ("metadata", "actor"),
    [
        ({}, "kubectl"),
        ({"managedFields": [spec_entry("kubectl-edit", "2026-01-01T00:00:00Z")]}, "kubectl-edit"),
        (
            {
                "managedFields": [
                    spec_entry("kubectl-client-side-apply", "2026-01-01T00:00:00Z"),
                    spec_entry("helm", "2026-01-02T00:00:00Z"),
                    spec_entry("kopf", "2026-01-03T00:00:00Z"),
                    spec_entry("kubectl-patch", "2026-01-04T00:00:00Z", subresource="status"),
                    {
                        "manager": "k9s",
                        "time": "2026-01-05T00:00:00Z",
                        "fieldsV1": {"f:metadata": {}},
                    },
                ]
            },
            "helm",
        ),
        (
            {
                "annotations": {"cdb.io/changed-by": "alice"},
                "managedFields": [spec_entry("kubectl-edit", "2026-01-01T00:00:00Z")],
            },
            "alice",
        ),
    ],
)
def test_the_actor_is_the_latest_spec_manager(metadata: dict[str, Any], actor: str) -> None:
    assert actor_of(metadata) == actor


def test_the_actor_is_the_owner_of_the_changed_field_when_edits_share_a_second() -> None:
    """As the API server lists them: whole seconds, a tie ordered by manager name."""
    second = "2026-01-01T00:00:07Z"
    metadata = {
        "managedFields": [
            {"manager": "kubectl-client-side-apply", "time": "2026-01-01T00:00:05Z",
             "fieldsV1": {"f:spec": {".": {}, "f:symbols": {}}}},
            {"manager": "kubectl-edit", "time": second,
             "fieldsV1": {"f:spec": {"f:signal": {"f:thresholdPct": {}}}}},
            {"manager": "kubectl-patch", "time": second,
             "fieldsV1": {"f:spec": {"f:trading": {".": {}, "f:paused": {}}}}},
        ]
    }  # fmt: skip
    assert actor_of(metadata, ["signal.thresholdPct"]) == "kubectl-edit"
    assert actor_of(metadata, ["trading.paused"]) == "kubectl-patch"
    assert actor_of(metadata, ["symbols"]) == "kubectl-client-side-apply"
    # a change no entry owns (a defaulted field): the newest spec editor, as before
    assert actor_of(metadata, ["risk.maxPositions"]) == "kubectl-patch"
    assert actor_of(metadata) == "kubectl-patch"


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    starting = workload_conditions(WorkloadState(replicas=3, ready=1, updated=3), True, None)
    first = merge_conditions(None, starting, 4)
    again = merge_conditions(first, starting, 4)
    assert again == first
    assert {c["type"]: c["status"] for c in first} == {
        "Ready": "False",
        "Progressing": "True",
        "Degraded": "False",
        "Reconciling": "True",  # kstatus: InProgress while the screener rolls out
        "Stalled": "False",
    }
    problem = Problem(reason="BusUnreachable", message="redis down")
    degraded = workload_conditions(WorkloadState(replicas=3, ready=3, updated=3), True, problem)
    assert [c["reason"] for c in degraded] == ["Running", "RolloutComplete", "BusUnreachable"]
    merged = {c["type"]: c for c in merge_conditions(first, degraded, 5)}
    assert (merged["Stalled"]["status"], merged["Stalled"]["reason"]) == ("True", "BusUnreachable")
    assert merged["Reconciling"]["status"] == "False"
    assert all(c["observedGeneration"] == 5 for c in merged.values())


def test_a_bad_environment_stops_the_operator_with_one_line_per_variable() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cdb_operator"],
        env={
            "PATH": "/usr/bin:/bin",
            "REDIS_PASSWORD": "x",
            "HTTP_PORT": "99999",
            "SCREENER_POD_TEMPLATE": "/nonexistent/pod.yaml",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("config error: HTTP_PORT=")
    assert lines[1].startswith("config error: SCREENER_POD_TEMPLATE='/nonexistent/pod.yaml'")
    assert "cannot read the screener pod template" in lines[1]


async def test_the_operator_process_serves_health_and_metrics_on_its_port(
    kmock: Any, service_env: dict[str, str], tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    server = str(kmock.url).rstrip("/")
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    port = free_port()
    process = ServiceProcess(
        "cdb_operator",
        {
            **service_env,
            "KUBECONFIG": str(kubeconfig),
            "OPERATOR_NAMESPACE": "cdb",
            "SCREENER_POD_TEMPLATE": str(screener_pod_template()),
        },
        tmp_path,
        port=port,
    )
    with process:
        health = await _until_ok(f"http://127.0.0.1:{port}/health", process)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            status = (await client.get(f"http://127.0.0.1:{port}/status")).json()
        assert process.terminate() == 0

    assert health == {"status": "ok"}
    for name in (
        "cdb_operator_reconciles_total",
        "cdb_operator_control_events_total",
        "cdb_operator_audit_rows_total",
        "cdb_operator_status",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in metrics
    assert status["bus"] == "reachable" and status["database"] == "reachable"
    assert "test-only-redis-password" not in str(status) + metrics + process.log()


async def _until_ok(url: str, process: ServiceProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:

        async def healthy() -> dict[str, Any] | None:
            assert process.proc is not None
            if process.proc.poll() is not None:
                raise RuntimeError(f"the operator exited:\n{process.log()}")
            reply = await client.get(url, timeout=1.0)
            return dict(reply.json()) if reply.status_code == 200 else None

        return await eventually_async(healthy, "the operator healthy", timeout=60, every=0.2)


def test_a_deletion_waits_for_an_exiting_timer_a_second_not_a_minute() -> None:
    """Seen on the real API server (test_operator.py, the oldest-bot scenario with a 1 s
    timer): zeta's deletion ran while its refresh timer was reconciling, kopf logged
    "Timer 'refresh' is still exiting. The next check is in 60 seconds." and the bot
    stayed for a minute with its work done."""
    settings = kopf.OperatorSettings()
    assert settings.background.cancellation_polling == 60  # kopf's default
    configure_kopf(settings)
    assert settings.background.cancellation_polling <= 1.0


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("a: [", "not YAML"),
        ("spec: 1", "has no spec"),
        ("spec: {containers: [{name: other}]}", "one container, 'bot-ws'"),
        ("spec: {containers: [{name: bot-ws}, {name: bot-ws}]}", "one container, 'bot-ws'"),
        ("spec: {containers: [{name: bot-ws, env: []}]}", "sets env"),
        ("metadata: {labels: {a: b}}\nspec: {containers: [{name: bot-ws}]}", "sets labels"),
    ],
)
def test_a_screener_pod_template_that_is_not_one_is_refused_naming_why(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(
            OperatorEnv, _env_file=None, redis_password="x", screener_pod_template=str(path)
        )
    assert str(refused.value).startswith(f"config error: SCREENER_POD_TEMPLATE={str(path)!r}")
    assert named in str(refused.value)


def test_the_operators_pod_is_the_template_plus_the_per_bot_fields() -> None:
    template = yaml.safe_load(screener_pod_template().read_text())
    pod = build_stateful_set("b", "cdb", OWNER, config(), env())["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert {e["name"] for e in container.pop("env")} >= {"SYMBOLS", "POD_NAME", "BOT_NAME"}
    assert pod["metadata"].pop("labels")["cdb.io/bot"] == "b"
    assert WORKLOAD_ANNOTATION in pod["metadata"]["annotations"]
    pod["metadata"]["annotations"].pop(WORKLOAD_ANNOTATION)
    assert pod == template


def test_the_screeners_frame_time_bounds_come_from_the_operators_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bot_ws bounds frame times by its clock (rate, head start, and the jump a lagging
    mexc_sim catches up in): each bound set on the operator reaches every screener pod as
    the setting bot_ws reads."""
    operator_env = OperatorEnv(  # type: ignore[call-arg]
        _env_file=None,
        redis_password="x",
        screener_pod_template=screener_pod_template(),
        bot_ws_frame_clock_max_rate=150,
        bot_ws_frame_max_ahead_s=7200,
        bot_ws_frame_max_jump_s=300,
    )
    pod = build_stateful_set("b", "cdb", OWNER, config(), operator_env)["spec"]["template"]
    given = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}
    for key in ("FRAME_CLOCK_MAX_RATE", "FRAME_MAX_AHEAD_S", "FRAME_MAX_JUMP_S"):
        monkeypatch.setenv(key, given[key])
    monkeypatch.setenv("REDIS_PASSWORD", "x")
    screener = BotWsSettings(_env_file=None)  # type: ignore[call-arg]
    assert (screener.frame_clock_max_rate, screener.frame_max_ahead_s) == (150, 7200)
    assert screener.frame_max_jump_s == 300
