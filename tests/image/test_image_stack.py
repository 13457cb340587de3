"""Every service of the image as a real container with the chart's hardening.

On one user-defined network (names as the chart's Services: ``redis``, ``postgres``,
``mexc-sim``, ``bot-rest``, ...), Redis and PostgreSQL from Debian packages, then each
``python -m cdb.<service>`` and the operator from the image built offline: read-only root,
UID/GID 1000, all capabilities dropped, no-new-privileges, tmpfs /tmp and /data. Each
/health reaches ok; mexc_sim's pump scenario then becomes a filled paper order in
PostgreSQL. ml_advisor loads a model trained on the host (the image has no pandas: it only
predicts, with XGBoost). The operator has no Kubernetes API here: it serves /health and says, once a
minute, that it has no credentials (the test reads that line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cdb.demo.plan import interpreter
from tests.support import SIM_CLOCK, eventually
from tests.support.chart import screener_pod_template
from tests.support.containers import (
    HARDENING,
    BuiltImage,
    Docker,
    StoreCredentials,
    psql,
    store_credentials,
    wait_healthy,
    wait_stores,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SIM = "mexc-sim"


@dataclass(frozen=True)
class Service:
    container: str
    module: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()


SERVICES: tuple[Service, ...] = (
    Service(SIM, "cdb.mexc_sim", 8010, {}, (
        "--host", "0.0.0.0", "--port", "8010", "--symbols", "6", "--seed", "3",
        "--speed", "60", "--scenario", "pump", "--pump-every-min", "2", "--pump-pct", "9",
        "--history-min", "150",
    )),
    Service("bot-rest", "cdb.bot_rest", 8004),
    Service("bot-ws", "cdb.bot_ws", 8000,
            {"PUBLISH_INTERVAL_S": "1", "STALE_AFTER_S": "3600", **SIM_CLOCK}),
    Service("signal-engine", "cdb.signal_engine", 8001),
    Service("risk-manager", "cdb.risk_manager", 8002),
    Service("execution-service", "cdb.execution_service", 8003, {"PAPER_SLIPPAGE_BPS": "0"}),
    Service("ml-advisor", "cdb.ml_advisor", 8005, {"ML_MODEL_DIR": "/models"}),
    Service("notifier", "cdb.notifier", 8006, {"VAPID_KEY_DIR": "/data"}),
    Service("cdb-operator", "cdb_operator", 8080, {"OPERATOR_NAMESPACE": "cdb"}),
)  # fmt: skip


@dataclass
class Stack:
    docker: Docker
    creds: StoreCredentials
    network: str


MODEL_VERSION = "image-stack-1"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on the host with the offline tools (pandas), read-only inside."""
    from cdb.ml_advisor.model_store import save_artifact
    from cdb.ml_advisor.synthetic import generate_history
    from cdb.ml_advisor.training import TrainingConfig, train_model

    directory = tmp_path_factory.mktemp("models")
    trained = train_model(
        generate_history(symbols=4, minutes=1440, seed=11),
        TrainingConfig(seed=1, num_boost_round=20, folds=2),
        version=MODEL_VERSION,
    )
    save_artifact(directory, trained.manifest, trained.booster)
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return directory


@pytest.fixture(scope="module")
def stack(
    docker_engine: Docker, cdb_image: BuiltImage, test_images: dict[str, str], model_dir: Path
) -> Iterator[Stack]:
    docker = docker_engine
    creds = store_credentials()
    network = f"cdb-stack-{os.getpid()}"
    docker("network", "create", network)
    started: list[str] = []
    try:
        docker.run_hardened(
            "redis", test_images["redis"], network,
            ["redis-server", "--requirepass", creds.redis_password, "--appendonly", "yes",
             "--dir", "/data", "--protected-mode", "no"],
        )  # fmt: skip
        started.append("redis")
        docker.run_hardened(
            "postgres", test_images["postgres"], network,
            ["postgres", "-c", "unix_socket_directories=/tmp"],
            env={"POSTGRES_USER": creds.postgres_user,
                 "POSTGRES_PASSWORD": creds.postgres_password,
                 "POSTGRES_DB": creds.postgres_db, "PGDATA": "/data/pgdata"},
        )  # fmt: skip
        started.append("postgres")
        wait_stores(docker, "redis", "postgres", creds)
        shared = {
            **creds.service_env("redis", "postgres"),
            "HTTP_HOST": "0.0.0.0",
            "TRADING_MODE": "paper",
            "MEXC_WS_URL": f"ws://{SIM}:8010/edge",
            "MEXC_REST_URL": f"http://{SIM}:8010",
            "BOT_REST_URL": "http://bot-rest:8004",
        }
        VOLUMES = {
            "cdb.ml_advisor": [f"{model_dir}:/models:ro"],
            # the chart's screener pod, mounted where the chart mounts it
            "cdb_operator": [f"{screener_pod_template().parent}:/etc/cdb/screener-pod:ro"],
        }
        for svc in SERVICES:
            docker.run_hardened(
                svc.container, cdb_image.tag, network,
                ["python", *interpreter(svc.module.removeprefix("cdb."))[1:], "-m", svc.module,
                 *svc.args],
                env={**shared, "HTTP_PORT": str(svc.port), **svc.env}, ports=[svc.port],
                volumes=VOLUMES.get(svc.module, []),
            )  # fmt: skip
            started.append(svc.container)
        yield Stack(docker, creds, network)
    finally:
        if started:
            docker("rm", "-f", *started, check=False, timeout=120)
        docker("network", "rm", network, check=False)


@pytest.mark.parametrize("svc", SERVICES, ids=[s.container for s in SERVICES])
def test_each_service_reaches_health_ok_in_its_hardened_container(
    stack: Stack, svc: Service
) -> None:
    health = wait_healthy(stack.docker, svc.container, svc.port, timeout=180)
    assert health["status"] == "ok"
    host = stack.docker(
        "inspect", "--format",
        "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} "
        "{{.HostConfig.SecurityOpt}}",
        svc.container,
    ).stdout.strip().split(maxsplit=3)  # fmt: skip
    assert host == ["1000:1000", "true", "[ALL]", "[no-new-privileges]"]


def test_inside_a_service_only_tmp_and_data_are_writable(stack: Stack) -> None:
    wait_healthy(stack.docker, "signal-engine", 8001, timeout=180)
    probe = (
        "import os\n"
        "print(os.getuid(), os.getgid())\n"
        "for d in ('/app', '/etc', '/tmp', '/data'):\n"
        "    try:\n"
        "        open(d + '/probe', 'w').close(); print(d, 'writable')\n"
        "    except OSError as e:\n"
        "        print(d, type(e).__name__)\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
        "print(open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])\n"
    )
    out = stack.docker("exec", "signal-engine", "python", "-c", probe).stdout.splitlines()
    assert out == ["1000 1000", "/app OSError", "/etc OSError", "/tmp writable",
                   "/data writable", "0000000000000000", "1"]  # fmt: skip


def test_the_operator_without_an_api_server_says_why(stack: Stack) -> None:
    wait_healthy(stack.docker, "cdb-operator", 8080, timeout=180)
    eventually(
        lambda: (
            "no service account token and no kubeconfig found" in stack.docker.logs("cdb-operator")
        ),
        "the operator's login error",
        timeout=60,
        every=0.5,
    )
    assert stack.docker.state("cdb-operator")["Running"]


def test_mexc_sim_pump_becomes_a_filled_paper_order(stack: Stack) -> None:
    for svc in SERVICES:
        wait_healthy(stack.docker, svc.container, svc.port, timeout=180)

    def filled() -> bool:
        count = psql(stack.docker, "postgres", stack.creds,
                     "SELECT count(*) FROM orders WHERE status = 'filled'")  # fmt: skip
        return count.isdigit() and int(count) >= 1

    eventually(filled, "a filled paper order in PostgreSQL", timeout=240, every=0.5)
    row = psql(
        stack.docker, "postgres", stack.creds,
        "SELECT s.symbol, s.pct_change >= 3, o.status, o.mode FROM signals s"
        " JOIN orders o ON o.signal_id = s.signal_id WHERE o.status = 'filled' LIMIT 1",
    )  # fmt: skip
    symbol, big_move, status, mode = row.split("|")
    assert symbol.endswith("_USDT") and big_move == "t", row
    assert (status, mode) == ("filled", "paper"), row


def test_ml_advisor_serves_the_model_and_xgboost_predicts_in_the_image(
    stack: Stack, cdb_image: BuiltImage, model_dir: Path
) -> None:
    wait_healthy(stack.docker, "ml-advisor", 8005, timeout=180)
    port = stack.docker.host_port("ml-advisor", 8005)
    status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=5).json()
    assert status["model"]["version"] == MODEL_VERSION, status
    probe = (
        "import json, numpy as np, sys\n"
        "from pathlib import Path\n"
        "from cdb.ml_advisor.features import FEATURES\n"
        "from cdb.ml_advisor.inference import Predictor\n"
        "from cdb.ml_advisor.model_store import load_model\n"
        "rows = np.random.default_rng(1).normal(size=(5, len(FEATURES)))\n"
        "p = Predictor(load_model(Path('/models'))).confidences(rows)\n"
        "print(json.dumps({'p': p.tolist(), 'pandas': 'pandas' in sys.modules}))\n"
    )
    out = stack.docker(
        "run", "--rm", *HARDENING, "-v", f"{model_dir}:/models:ro", cdb_image.tag,
        "python", "-c", probe,
    ).stdout  # fmt: skip
    result = json.loads(out)
    assert len(result["p"]) == 5 and all(0.0 <= p <= 1.0 for p in result["p"]), result
    assert result["pandas"] is False
