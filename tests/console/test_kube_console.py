"""The console in Kubernetes mode against a real API server (tests/cluster.py): it logs in
with the chart's cdb-console ServiceAccount, reads its TradingBot and merge-patches it;
the API server validates the patch against the CRD, enforces the Role (that one bot,
get and patch) and records the change in its audit log under the console's identity."""

from __future__ import annotations

import json
import re
import shutil
from contextlib import closing
from pathlib import Path

import yaml

from cdb.core.events import Stream
from tests.support import ROOT
from tests.support.cluster import BIN, ControlPlane
from tests.support.console import entries, logged_in, start_console


def chart_console_rbac(kube: ControlPlane, namespace: str) -> None:
    rendered = kube.run([str(BIN / "helm"), "template", "cdb", str(ROOT / "charts" / "cdb"),
                         "-n", namespace, "--show-only", "templates/console.yaml",
                         "--show-only", "templates/tradingbot.yaml"]).stdout  # fmt: skip
    wanted = [
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] in ("ServiceAccount", "Role", "RoleBinding", "TradingBot")
    ]
    assert {d["kind"] for d in wanted} == {"ServiceAccount", "Role", "RoleBinding", "TradingBot"}
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                     "items": wanted}))  # fmt: skip


def test_the_console_patches_its_tradingbot_as_its_service_account(
    kube: ControlPlane, kube_namespace: str, service_env: dict[str, str], tmp_path: Path
) -> None:
    kube.apply_crd()
    chart_console_rbac(kube, kube_namespace)
    account = tmp_path / "serviceaccount"  # what the kubelet mounts into the pod
    account.mkdir()
    token = kube.kubectl("create", "token", "cdb-console", "-n", kube_namespace)
    (account / "token").write_text(token.strip())
    shutil.copy(kube.ca_path, account / "ca.crt")
    can_i = kube.run(["kubectl", "auth", "can-i", "patch", "tradingbots/another-bot", "-n",
                      kube_namespace, f"--as=system:serviceaccount:{kube_namespace}:cdb-console"],
                     check=False)  # fmt: skip
    assert can_i.stdout.strip() == "no"  # the Role names its one bot

    with start_console(
        service_env, tmp_path,
        CONSOLE_TRADINGBOT=f"{kube_namespace}/mexc-momentum",
        CONSOLE_KUBE_API=kube.server,
        CONSOLE_KUBE_ACCOUNT_DIR=str(account),
    ) as console:  # fmt: skip
        client, csrf = logged_in(console.url)
        with closing(client):
            page = client.get("/bot").text
            assert "thresholdPct" in page and "Patches the TradingBot" in page
            paused = client.post("/bot/change", data={"action": "pause", "csrf": csrf})
            assert paused.status_code == 200 and "TradingBot patched" in paused.text
            manual = client.post(
                "/bot/change",
                data={"action": "settings", "csrf": csrf, "signal_threshold_pct": "2.5",
                      "approval": "manual"},
            )  # fmt: skip
            assert manual.status_code == 200, manual.text[-500:]
            # the console lets 150 % through, the CRD (thresholdPct <= 100) does not
            refused = client.post(
                "/bot/change",
                data={"action": "settings", "csrf": csrf, "signal_threshold_pct": "150"},
            )
            assert refused.status_code == 422
            assert re.search(r"refused by the API server: API server answered 422", refused.text)

    bot = kube.get("tb", "mexc-momentum", "-n", kube_namespace)
    assert bot["spec"]["trading"]["paused"] is True
    assert bot["spec"]["trading"]["approval"] == "manual"
    assert bot["spec"]["signal"]["thresholdPct"] == 2.5
    assert bot["metadata"]["annotations"]["cdb.io/changed-by"] == "console:owner"
    patches = [
        event
        for event in kube.requests(kube_namespace, "tradingbots", writes_only=True)
        if event["user"]["username"] == f"system:serviceaccount:{kube_namespace}:cdb-console"
    ]
    assert [(e["verb"], e["responseStatus"]["code"]) for e in patches] == [
        ("patch", 200),
        ("patch", 200),
        ("patch", 422),
    ]  # the API server's own record: who changed the bot, and the refused change
    assert entries(service_env, Stream.CONTROL) == []  # Kubernetes mode: no bus shortcut
