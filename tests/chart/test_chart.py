"""The Helm chart, checked offline by the real tools: helm, kubernetes-validate, checkov.

Every values set of ``charts/cdb/ci/`` plus the defaults is linted (``helm lint
--strict``), rendered for Kubernetes 1.37, validated against the 1.37 API schemas with
unknown fields rejected, scanned by checkov (zero failed checks, every skip with a
reason), and every pod spec is held to the restricted Pod Security Standard.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cdb.core.acl import ACCESS
from cdb.demo.plan import interpreter
from tests.support import REDIS_PASSWORD, ROOT, free_port
from tests.support.chart import (
    CHART,
    CHECKOV,
    HELM,
    KUBE_VALIDATE,
    KUBE_VERSION,
    find,
    helm_template,
    objects,
    pod_specs,
    pss_check,
    tool,
)

VALUE_SETS = ["defaults", *sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))]


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "defaults" else ["-f", str(CHART / "ci" / value_set)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each values set rendered once into its own file."""
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for value_set in VALUE_SETS:
        result = helm_template(*values_args(value_set))
        assert result.returncode == 0, f"{value_set}: {result.stderr}"
        path = out / f"{value_set.removesuffix('.yaml')}.yaml"
        path.write_text(result.stdout)
        files[value_set] = path
    return files


# --- helm lint and the values schema ------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict(value_set: str) -> None:
    result = subprocess.run(
        [tool(HELM), "lint", "--strict", str(CHART), *values_args(value_set)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


BAD_VALUES = [
    ("trading.mode=yolo", "/trading/mode"),
    ("trading.mode=live", "/trading/credentials/existingSecret"),
    ("risk.maxDailyLossPct=150", "/risk/maxDailyLossPct"),
    ("strategy.signalThresholdPct=0", "/strategy/signalThresholdPct"),
    ("botWs.chunkSize=201", "/botWs/chunkSize"),
    ("mlAdvisor.replicas=2", "/mlAdvisor/replicas"),  # one consumer would split a symbol
    ("postgres.user=postgres", "/postgres/user"),
    ("postgres.database=cdb", "/postgres/database"),
    ("storage.mode=nfs", "/storage/mode"),
    ("containerSecurityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem"),
    ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
    ("image.digest=latest", "/image/digest"),
    ("backup.retentionDays=0", "/backup/retentionDays"),
    ("signalEngine.resources.limits=null", "/signalEngine/resources"),
    ("typoKey=1", "typoKey"),
]


@pytest.mark.parametrize(("setting", "named"), BAD_VALUES)
def test_schema_rejects_bad_values_naming_them(setting: str, named: str) -> None:
    result = helm_template("--set", setting)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr


def test_live_mode_renders_with_confirmation_and_a_secret() -> None:
    result = helm_template(
        "--set", "trading.mode=live", "--set", "trading.liveConfirm=true",
        "--set", "trading.credentials.existingSecret=mexc-keys",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_every_value_is_documented_and_listed_in_the_chart_docs() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"## @param (\S+)", text))
    values = yaml.safe_load(text)

    def leaves(node: Any, prefix: str = "") -> Iterator[str]:
        if isinstance(node, dict) and node and not any(f"{prefix}" == d for d in documented):
            for key, value in node.items():
                yield from leaves(value, f"{prefix}.{key}" if prefix else key)
        else:
            yield prefix

    undocumented = [leaf for leaf in leaves(values) if leaf not in documented]
    assert not undocumented, f"values without a ## @param line: {undocumented}"
    stale = [name for name in documented if not _has_path(values, name.split("."))]
    assert not stale, f"## @param lines for values that do not exist: {stale}"
    docs = (ROOT / "docs" / "CHART.md").read_text()
    missing = [name for name in sorted(documented) if f"`{name}`" not in docs]
    assert not missing, f"docs/CHART.md does not list: {missing}"


def _has_path(node: Any, parts: list[str]) -> bool:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# --- API schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_validates_against_the_kubernetes_api_strictly(
    rendered: dict[str, Path], value_set: str
) -> None:
    path = rendered[value_set]
    result = subprocess.run(
        [tool(KUBE_VALIDATE), "--strict", "-k", KUBE_VERSION, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERROR" not in output
    passed = output.count(" passed for resource ")
    custom = [o for o in objects(path) if o["apiVersion"].startswith("cdb.io/")]
    assert passed == len(objects(path)) - len(custom), output


def test_the_default_trading_bot_matches_the_crd_schema(rendered: dict[str, Path]) -> None:
    """kubernetes-validate skips custom resources: check them against the CRD's schema."""
    crd = yaml.safe_load((CHART / "crds" / "tradingbots.yaml").read_text())
    bots = [o for o in objects(rendered["defaults"]) if o["kind"] == "TradingBot"]
    assert len(bots) == 1
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = version["schema"]["openAPIV3Schema"]
    jsonschema.Draft7Validator(_plain_schema(schema)).validate(
        {k: v for k, v in bots[0].items() if k in ("apiVersion", "kind", "spec")}
    )


def _plain_schema(node: Any) -> Any:
    """An OpenAPI v3 schema minus the x-kubernetes-* extensions jsonschema does not know."""
    if isinstance(node, dict):
        return {k: _plain_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if isinstance(node, list):
        return [_plain_schema(v) for v in node]
    return node


def test_k8s_folder_validates() -> None:
    files = sorted(str(p) for p in (ROOT / "k8s").glob("*.yaml"))
    result = subprocess.run(
        [tool(KUBE_VALIDATE), "--strict", "-k", KUBE_VERSION, *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pvs = [o for f in files for o in objects(Path(f)) if o["kind"] == "PersistentVolume"]
    claims = {
        o["metadata"]["name"] for o in objects_of_defaults() if o["kind"] == "PersistentVolumeClaim"
    }
    bound = {pv["spec"]["claimRef"]["name"] for pv in pvs}
    assert bound == claims, "every chart claim needs exactly one hostPath volume"
    assert {pv["spec"]["storageClassName"] for pv in pvs} == {"cdb-hostpath"}


def objects_of_defaults() -> list[dict[str, Any]]:
    result = helm_template(crds=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# --- checkov --------------------------------------------------------------------------


@pytest.mark.slow
def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason(
    rendered: dict[str, Path], tmp_path: Path
) -> None:
    for value_set, path in rendered.items():
        (tmp_path / f"{value_set.removesuffix('.yaml')}.yaml").write_text(path.read_text())
    for extra in (ROOT / "k8s").glob("*.yaml"):
        (tmp_path / f"k8s-{extra.name}").write_text(extra.read_text())
    result = subprocess.run(
        [tool(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download",
         "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    report = json.loads(result.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in results["failed_checks"]]
    assert not failed, f"checkov failed checks: {failed}"
    summary = report["summary"]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0, summary
    assert summary["passed"] > 1000, summary
    print(f"checkov: {summary}")
    for skipped in results["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) > 20, f"skip without a reason: {skipped['check_id']}"
    assert result.returncode == 0, result.stderr[-2000:]


# --- pods: restricted Pod Security Standard and the chart's own rules -----------------


def all_pods(rendered: dict[str, Path]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for value_set, path in rendered.items():
        for obj in objects(path):
            for spec in pod_specs(obj):
                yield value_set, f"{obj['kind']}/{obj['metadata']['name']}", spec


def test_every_pod_meets_the_restricted_pod_security_standard(
    rendered: dict[str, Path],
) -> None:
    result = pss_check(*rendered.values())
    assert result.returncode == 0, result.stdout + result.stderr
    verdicts = result.stdout.splitlines()
    expected = sum(1 for _ in all_pods(rendered))
    assert len(verdicts) == expected >= 10 * len(VALUE_SETS)
    assert all(line.startswith("ALLOWED ") for line in verdicts)


def test_the_pss_check_rejects_a_privileged_pod() -> None:
    """The same checks refuse k8s/hostpath-permissions-job.yaml, a root pod by design."""
    result = pss_check(ROOT / "k8s" / "hostpath-permissions-job.yaml")
    assert result.returncode == 1
    assert "FORBIDDEN Job/cdb-hostpath-permissions" in result.stdout
    for reason in ("runAsNonRoot != true", "runAsUser=0", "restricted volume types"):
        assert reason in result.stdout, reason


def test_every_container_is_hardened_with_resources_probes_and_writable_data_tmp_only(
    rendered: dict[str, Path],
) -> None:
    for value_set, name, spec in all_pods(rendered):
        pod_ctx = spec["securityContext"]
        assert (pod_ctx["runAsUser"], pod_ctx["runAsGroup"]) == (1000, 1000), name
        is_job = "CronJob/" in name
        token = spec.get("automountServiceAccountToken")
        # the operator, and the console where it patches a TradingBot: nobody else
        talks_to_api = name == "Deployment/cdb-operator" or (
            name == "Deployment/console" and value_set != "static-screener-values.yaml"
        )
        assert token is talks_to_api, f"{value_set} {name}: token mount {token}"
        containers = spec.get("initContainers", []) + spec["containers"]
        for c in containers:
            ctx = c["securityContext"]
            where = f"{value_set} {name}/{c['name']}"
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert (ctx["runAsUser"], ctx["runAsGroup"]) == (1000, 1000), where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), where
            writable = {m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")}
            assert writable <= {"/data", "/tmp", "/backups"}, f"{where}: writable {writable}"
        for c in spec["containers"]:
            if is_job:
                continue
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{value_set} {name}/{c['name']} lacks {probe}"


def test_python_services_run_their_module_on_their_port_with_the_right_probes(
    rendered: dict[str, Path],
) -> None:
    ports = {"bot_ws": 8000, "signal_engine": 8001, "risk_manager": 8002,
             "execution_service": 8003, "bot_rest": 8004, "ml_advisor": 8005,
             "notifier": 8006, "console": 8007, "mexc_sim": 8010,
             "cdb_operator": 8080}  # fmt: skip
    seen = set()
    for _, name, spec in all_pods(rendered):
        for c in spec["containers"]:
            command = c.get("command", [])
            if command[:1] != ["python"] or "-m" not in command:
                continue
            flags, module = command[1 : command.index("-m")], command[command.index("-m") + 1]
            short = module.removeprefix("cdb.")
            # the interpreter flags of the demo and the tests (cdb.demo.plan.interpreter)
            assert flags == interpreter(short)[1:], f"{name} runs {module} with {flags}"
            seen.add(short)
            package = ROOT / ("operator" if short == "cdb_operator" else "services/cdb")
            package = package / short if short != "cdb_operator" else package / "cdb_operator"
            assert (package / "__main__.py").exists(), f"{name} runs {module}: no such module"
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env["HTTP_PORT"] == str(ports[short]), name
            assert c["ports"][0]["containerPort"] == ports[short], name
            # kernel services: /readyz and /livez, so a quiet market neither restarts a pod
            # nor takes it out of its Service; mexc_sim and the operator have /health only
            kernel = short not in ("mexc_sim", "cdb_operator")
            expected = {
                "startupProbe": "/readyz" if kernel else "/health",
                "readinessProbe": "/readyz" if kernel else "/health",
                "livenessProbe": "/livez" if kernel else "/health",
            }
            for probe, path in expected.items():
                assert c[probe]["httpGet"]["path"] == path, f"{name} {probe}"
    assert seen == set(ports), f"not rendered by any values set: {set(ports) - seen}"


def init_targets(spec: dict[str, Any]) -> list[str]:
    targets: list[str] = []
    for c in spec.get("initContainers", []):
        targets += [arg for arg in c["command"][3:]]
    return targets


def test_start_order_follows_the_seed_through_readiness_waits(rendered: dict[str, Path]) -> None:
    objs = objects(rendered["static-screener-values.yaml"])
    spec = {
        name: next(pod_specs(find(objs, kind, name)))
        for kind, name in [
            ("StatefulSet", "bot-ws"), ("Deployment", "signal-engine"),
            ("Deployment", "risk-manager"), ("Deployment", "execution-service"),
            ("Deployment", "bot-rest"), ("Deployment", "grafana"),
        ]
    }  # fmt: skip
    assert init_targets(spec["bot-rest"]) == ["redis"]
    assert init_targets(spec["bot-ws"]) == ["redis", "http://bot-rest:8004/health"]
    assert init_targets(spec["signal-engine"]) == ["redis", "postgres", "http://bot-ws:8000/health"]
    for later in ("risk-manager", "execution-service"):
        assert init_targets(spec[later]) == [
            "redis",
            "postgres",
            "http://signal-engine:8001/health",
        ]
    assert init_targets(spec["grafana"]) == ["http://prometheus:9090/-/ready"]
    for pod in spec.values():
        for c in pod.get("initContainers", []):
            script = c["command"][2]
            assert "sleep " not in script and "time.sleep(delay)" in script


def test_the_wait_script_really_waits_for_a_live_redis(redis_proc: Any, tmp_path: Path) -> None:
    """The init container's script, run as it is rendered, against the harness's Redis."""
    objs = objects_of_defaults()
    init = next(pod_specs(find(objs, "Deployment", "bot-rest")))["initContainers"][0]
    env = {**os.environ, "REDIS_HOST": redis_proc.host, "REDIS_PORT": str(redis_proc.port)}
    run = [sys.executable, *init["command"][1:]]
    ok = subprocess.run(run, env={**env, "REDIS_PASSWORD": REDIS_PASSWORD}, capture_output=True,
                        text=True, timeout=60, check=False)  # fmt: skip
    assert ok.returncode == 0 and "ready: redis" in ok.stdout, ok.stdout + ok.stderr
    wrong = subprocess.Popen(run, env={**env, "REDIS_PASSWORD": "wrong"}, stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        line = wrong.stdout.readline() if wrong.stdout else ""
        assert line.startswith("waiting for redis: AuthenticationError"), line
        assert wrong.poll() is None, "a wrong password must keep the pod waiting"
    finally:
        wrong.kill()
        wrong.wait(10)


def test_the_wait_script_waits_for_postgres_and_an_upstream_health(
    postgresql: Any, tmp_path: Path
) -> None:
    """PostgreSQL login and HTTP 200: ready at once when up, still waiting while not."""
    objs = objects_of_defaults()
    init = next(pod_specs(find(objs, "Deployment", "signal-engine")))["initContainers"][0]
    script = [sys.executable, *init["command"][1:3]]
    info = postgresql.info
    env = {**os.environ, "POSTGRES_HOST": info.host, "POSTGRES_PORT": str(info.port),
           "POSTGRES_DB": info.dbname, "POSTGRES_USER": info.user,
           "POSTGRES_PASSWORD": info.password or ""}  # fmt: skip
    ok = subprocess.run([*script, "postgres"], env=env, capture_output=True, text=True,
                        timeout=60, check=False)  # fmt: skip
    assert ok.returncode == 0 and "ready: postgres" in ok.stdout, ok.stdout + ok.stderr
    (tmp_path / "health").write_text("ok")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    missing = subprocess.Popen([*script, f"http://127.0.0.1:{port}/not-ready"],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        up = subprocess.run([*script, f"http://127.0.0.1:{port}/health"], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
        assert up.returncode == 0 and "ready: http://" in up.stdout, up.stdout + up.stderr
        line = ""
        while missing.stdout and "HTTPError" not in line:  # connection refused until it listens
            line = missing.stdout.readline()
        assert "waiting for http://" in line and missing.poll() is None, line
    finally:
        for proc in (missing, server):
            proc.kill()
            proc.wait(10)


# --- secrets, live mode, RBAC, network ------------------------------------------------


def test_passwords_come_from_secrets_and_existing_secrets_are_used(
    rendered: dict[str, Path],
) -> None:
    defaults = objects(rendered["defaults"])
    secrets = {o["metadata"]["name"]: o for o in defaults if o["kind"] == "Secret"}
    assert set(secrets) == {
        "cdb-redis",
        "cdb-postgres",
        "cdb-admin",
        "cdb-grafana",
        "cdb-notifier-vapid",
        "cdb-console",
    }
    assert set(secrets["cdb-admin"]["data"]) == {"admin-token"}  # POST /breaker/reset
    assert set(secrets["cdb-console"]["data"]) == {"password", "session-secret"}
    # the admin's and one per Redis ACL user (cdb.core.acl), each random and kept
    assert set(secrets["cdb-redis"]["data"]) == {
        "redis-password",
        *(f"{user}-password" for user in ACCESS),
    }
    vapid = base64.b64decode(secrets["cdb-notifier-vapid"]["data"]["vapid-private-key"])
    assert vapid.startswith(b"-----BEGIN EC PRIVATE KEY-----")  # P-256, generated per install
    assert set(secrets["cdb-postgres"]["data"]) == {"postgres-password"}
    for secret in secrets.values():
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    config = find(defaults, "ConfigMap", "cdb-config")["data"]
    assert not any("PASSWORD" in key or "SECRET" in key for key in config)
    template = (CHART / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret"' in template  # generated values survive `helm upgrade`

    live = objects(rendered["live-existing-secret-values.yaml"])
    assert not [o for o in live if o["kind"] == "Secret"], "existing Secrets: none rendered"
    refs = set()
    for _, _, spec in all_pods({"live": rendered["live-existing-secret-values.yaml"]}):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    assert refs == {
        ("cdb-redis-auth", "redis-password"), ("cdb-postgres-auth", "postgres-password"),
        ("cdb-grafana-auth", "admin-password"), ("mexc-keys", "mexc-api-key"),
        ("mexc-keys", "mexc-api-secret"), ("notifier-channels", "urls"),
        ("notifier-vapid", "vapid-private-key"),
        *(("cdb-redis-auth", f"{user}-password") for user in ACCESS),
        ("cdb-admin-auth", "admin-token"), ("cdb-console-auth", "session-secret"),
    }  # fmt: skip


def test_given_password_is_used_verbatim() -> None:
    result = helm_template("--set", "redis.auth.password=s3cret-for-test", crds=False)
    objs = [d for d in yaml.safe_load_all(result.stdout) if d]
    data = find(objs, "Secret", "cdb-redis")["data"]["redis-password"]
    assert base64.b64decode(data).decode() == "s3cret-for-test"


def test_mexc_keys_only_in_live_mode_only_for_execution_from_a_secret(
    rendered: dict[str, Path],
) -> None:
    for value_set, name, spec in all_pods(rendered):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for env in c.get("env", []):
                if env["name"].startswith("MEXC_API"):
                    assert value_set == "live-existing-secret-values.yaml", value_set
                    assert name == "Deployment/execution-service", name
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"]
    live = find(objects(rendered["live-existing-secret-values.yaml"]), "ConfigMap", "cdb-config")
    assert live["data"]["TRADING_MODE"] == "live"
    assert live["data"]["LIVE_TRADING_CONFIRM"] == "yes"
    paper = find(objects(rendered["defaults"]), "ConfigMap", "cdb-config")["data"]
    assert paper["TRADING_MODE"] == "paper" and "LIVE_TRADING_CONFIRM" not in paper


def test_operator_rbac_is_least_privilege_and_env_is_complete(rendered: dict[str, Path]) -> None:
    objs = objects(rendered["defaults"])
    role = find(objs, "Role", "cdb-operator")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert all("*" not in part for item in granted for part in item)
    resources = {(g, r) for g, r, _ in granted}
    assert resources == {
        ("cdb.io", "tradingbots"), ("cdb.io", "tradingbots/status"),
        ("cdb.io", "tradingbots/finalizers"), ("", "configmaps"),
        ("apps", "statefulsets"), ("", "events"), ("events.k8s.io", "events"),
    }  # fmt: skip
    assert {v for g, r, v in granted if r == "tradingbots/finalizers"} == {"update"}
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    binding = find(objs, "RoleBinding", "cdb-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cdb-operator", "namespace": "cdb"}
    ]
    spec = next(pod_specs(find(objs, "Deployment", "cdb-operator")))
    env = {e["name"] for e in spec["containers"][0]["env"]}
    env |= set(find(objs, "ConfigMap", "cdb-config")["data"])
    assert {
        "SCREENER_POD_TEMPLATE", "REDIS_HOST", "REDIS_PORT",
        "REDIS_SECRET_NAME", "POSTGRES_HOST", "POSTGRES_SECRET_NAME", "MEXC_WS_URL",
        "MEXC_REST_URL", "BOT_REST_URL", "OPERATOR_NAMESPACE", "REDIS_PASSWORD",
        "POSTGRES_PASSWORD",
    } <= env  # fmt: skip
    assert not [o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "bot-ws"]
    static = objects(rendered["static-screener-values.yaml"])
    assert find(static, "StatefulSet", "bot-ws")["spec"]["replicas"] == 3
    assert not [
        o
        for o in static
        if o["metadata"]["name"] == "cdb-operator" and o["kind"] != "NetworkPolicy"
    ]


def test_the_console_patches_only_its_bot_and_reads_its_password_from_a_file(
    rendered: dict[str, Path],
) -> None:
    objs = objects(rendered["defaults"])
    role = find(objs, "Role", "cdb-console")
    assert role["rules"] == [
        {"apiGroups": ["cdb.io"], "resources": ["tradingbots"],
         "resourceNames": ["mexc-momentum"], "verbs": ["get", "patch"]}
    ]  # fmt: skip
    binding = find(objs, "RoleBinding", "cdb-console")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cdb-console", "namespace": "cdb"}
    ]
    assert find(objs, "Service", "console")["spec"]["type"] == "ClusterIP"
    assert not [o for o in objs if o["kind"] == "Ingress"]  # off by default
    spec = next(pod_specs(find(objs, "Deployment", "console")))
    assert spec["serviceAccountName"] == "cdb-console"
    container = spec["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["CONSOLE_TRADINGBOT"]["value"] == "cdb/mexc-momentum"
    assert env["REDIS_USERNAME"]["value"] == "console"
    assert env["CONSOLE_PASSWORD_FILE"]["value"] == "/etc/cdb-console/password"
    assert not [e for e in env.values() if e.get("valueFrom", {}).get("secretKeyRef", {}).get(
        "key") == "password"]  # fmt: skip
    login = next(v for v in spec["volumes"] if v["name"] == "login")
    assert (
        login["secret"]["secretName"] == "cdb-console" and login["secret"]["defaultMode"] == 0o440
    )
    assert {m["mountPath"]: m.get("readOnly") for m in container["volumeMounts"]}[
        "/etc/cdb-console"] is True  # fmt: skip
    services = dict(item.split("=") for item in env["CONSOLE_SERVICES"]["value"].split(","))
    assert services["signal_engine"] == "http://signal-engine:8001"

    static = objects(rendered["static-screener-values.yaml"])  # no operator: control events
    spec = next(pod_specs(find(static, "Deployment", "console")))
    assert "CONSOLE_TRADINGBOT" not in {e["name"] for e in spec["containers"][0]["env"]}
    assert not [o for o in static if o["kind"] == "Role" and o["metadata"]["name"] == "cdb-console"]
    ingress = find(static, "Ingress", "console")
    assert ingress["spec"]["tls"] == [{"hosts": ["cdb-console.example"],
                                       "secretName": "cdb-console-tls"}]  # fmt: skip
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["CONSOLE_SECURE_COOKIES"] == "true"  # https through the Ingress


def allowed(objs: list[dict[str, Any]], source: str, target: str, port: int) -> bool:
    """Whether the policies let `source` pods open `port` on `target` pods (both directions)."""
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]

    def selects(policy: dict[str, Any], name: str) -> bool:
        labels = policy["spec"]["podSelector"].get("matchLabels", {})
        return not labels or labels.get("app.kubernetes.io/name") == name

    def peer_ok(rules: list[dict[str, Any]], key: str, peer: str) -> bool:
        for rule in rules:
            ports = {p["port"] for p in rule.get("ports", [])}
            if port not in ports:
                continue
            for entry in rule.get(key, []):
                sel = entry.get("podSelector", {}).get("matchLabels", {})
                if sel.get("app.kubernetes.io/name") == peer and "namespaceSelector" not in entry:
                    return True
        return False

    egress = any(
        peer_ok(p["spec"].get("egress", []), "to", target) for p in policies if selects(p, source)
    )
    ingress = any(
        peer_ok(p["spec"].get("ingress", []), "from", source)
        for p in policies
        if selects(p, target)
    )
    return egress and ingress


def test_network_policies_allow_the_design_flows_and_nothing_else(
    rendered: dict[str, Path],
) -> None:
    objs = objects(rendered["kind-values.yaml"])
    deny = find(objs, "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    flows = [
        ("bot-ws", "redis", 6379), ("signal-engine", "redis", 6379),
        ("signal-engine", "postgres", 5432), ("risk-manager", "postgres", 5432),
        ("execution-service", "postgres", 5432), ("cdb-operator", "redis", 6379),
        ("bot-ws", "bot-rest", 8004), ("bot-ws", "mexc-sim", 8010),
        ("execution-service", "mexc-sim", 8010), ("prometheus", "signal-engine", 8001),
        ("prometheus", "bot-ws", 8000), ("grafana", "prometheus", 9090),
        ("cdb-backup", "postgres", 5432), ("cdb-backup", "redis", 6379),
        ("prometheus", "alertmanager", 9093), ("alertmanager", "notifier", 8006),
        ("notifier", "postgres", 5432), ("notifier", "redis", 6379),
        ("prometheus", "notifier", 8006), ("console", "redis", 6379),
        ("console", "postgres", 5432), ("console", "signal-engine", 8001),
        ("console", "notifier", 8006), ("prometheus", "console", 8007),
    ]  # fmt: skip
    for flow in flows:
        assert allowed(objs, *flow), f"flow {flow} is blocked"
    forbidden = [
        ("grafana", "redis", 6379), ("grafana", "postgres", 5432),
        ("prometheus", "postgres", 5432), ("mexc-sim", "redis", 6379),
        ("signal-engine", "mexc-sim", 8010), ("risk-manager", "execution-service", 8003),
        ("bot-ws", "postgres", 5433), ("alertmanager", "redis", 6379),
        ("notifier", "execution-service", 8003), ("bot-ws", "notifier", 8006),
        ("console", "mexc-sim", 8010), ("bot-ws", "console", 8007),
    ]  # fmt: skip
    for flow in forbidden:
        assert not allowed(objs, *flow), f"flow {flow} should be blocked"
    workloads = {
        o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet")
    } | {"bot-ws"}
    policed = {
        p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for p in objs
        if p["kind"] == "NetworkPolicy"
    }
    assert workloads <= policed, workloads - policed
    advisor = objects(rendered["advisor-values.yaml"])
    assert allowed(advisor, "ml-advisor", "bot-rest", 8004), "the advisor's kline warm-up"
    assert not allowed(advisor, "ml-advisor", "execution-service", 8003)


CONVENTIONAL_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def test_labels_follow_the_kubernetes_conventions(rendered: dict[str, Path]) -> None:
    for obj in objects(rendered["defaults"]):
        if obj["kind"] == "CustomResourceDefinition":
            continue
        labels = obj["metadata"].get("labels", {})
        for key in CONVENTIONAL_LABELS:
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
        assert obj["metadata"].get("namespace") == "cdb", obj["metadata"]["name"]


def test_storage_modes_hostpath_and_dynamic(rendered: dict[str, Path]) -> None:
    def classes(value_set: str) -> set[Any]:
        return {
            o["spec"].get("storageClassName")
            for o in objects(rendered[value_set])
            if o["kind"] == "PersistentVolumeClaim"
        }

    assert classes("defaults") == {"cdb-hostpath"}
    assert classes("kind-values.yaml") == {None}  # the cluster's default StorageClass


def test_notes_print_the_next_commands() -> None:
    result = subprocess.run(
        [tool(HELM), "install", "cdb", str(CHART), "--namespace", "cdb", "--dry-run=client"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    for command in ("port-forward svc/grafana 3000:3000", "kubectl -n cdb get tb",
                    "apply -f", "create job --from=cronjob/cdb-backup",
                    "port-forward svc/console 8007:8007",
                    "get secret cdb-console -o jsonpath='{.data.password}'"):  # fmt: skip
        assert command in notes, command


def test_a_crash_looping_screener_pod_stays_visible_to_prometheus(
    rendered: dict[str, Path],
) -> None:
    """Prometheus finds screener pods through the headless Service's DNS records; a pod that
    is not ready (crash-looping) must stay listed so its scrape fails and CdbServiceDown fires."""
    service = find(objects(rendered["defaults"]), "Service", "bot-ws")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"].get("publishNotReadyAddresses") is True


def test_the_approval_mode_reaches_risk_manager_and_the_default_trading_bot() -> None:
    """``risk.approval``/``risk.approvalTimeoutSeconds``: RISK_APPROVAL* in the services'
    config and the default TradingBot's ``spec.trading`` (which the operator's control
    event carries), unless ``tradingBot.spec`` sets its own; the schema refuses others."""

    def render(*sets: str) -> tuple[dict[str, str], dict[str, Any]]:
        result = helm_template(*(arg for s in sets for arg in ("--set", s)), crds=False)
        assert result.returncode == 0, result.stderr
        objs = [d for d in yaml.safe_load_all(result.stdout) if d]
        config = find(objs, "ConfigMap", "cdb-config")["data"]
        (bot,) = [o for o in objs if o["kind"] == "TradingBot"]
        return config, bot["spec"]["trading"]

    config, trading = render()
    assert (config["RISK_APPROVAL"], config["RISK_APPROVAL_TIMEOUT_S"]) == ("auto", "60")
    assert trading == {
        "mode": "paper", "paused": False, "approval": "auto", "approvalTimeoutSeconds": 60
    }  # fmt: skip
    config, trading = render("risk.approval=manual", "risk.approvalTimeoutSeconds=120")
    assert (config["RISK_APPROVAL"], config["RISK_APPROVAL_TIMEOUT_S"]) == ("manual", "120")
    assert (trading["approval"], trading["approvalTimeoutSeconds"]) == ("manual", 120)
    _, trading = render("risk.approval=manual", "tradingBot.spec.trading.approval=auto")
    assert trading["approval"] == "auto"  # the bot's own spec wins
    for bad in ("risk.approval=sometimes", "risk.approvalTimeoutSeconds=4"):
        refused = helm_template("--set", bad, crds=False)
        assert refused.returncode != 0 and "risk" in refused.stderr, bad
