"""The console over real HTTP: what an unauthenticated caller gets (nothing), the session
and CSRF rules, the login limit, the live stream, and the two actions on the bus."""

from __future__ import annotations

import json
import re
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdb.console.auth import LoginLimiter, SessionCodec
from cdb.core.events import ApprovalDecision, Control, Stream
from tests.support import Pipeline, ServiceProcess, as_user, eventually, query
from tests.support.console import (
    PASSWORD,
    SYMBOL,
    entries,
    execute,
    hold_order,
    logged_in,
    login,
    open_position,
    start_console,
)

PAGES = ["/", "/positions", "/trades", "/signals", "/risk", "/bot", "/approvals", "/approvals/o-1"]


@pytest.fixture
def console(service_env: dict[str, str], tmp_path: Path) -> Any:
    with start_console(service_env, tmp_path) as proc:
        open_position(service_env)
        yield proc


def test_without_a_session_pages_redirect_and_the_api_says_401_with_no_data(
    console: ServiceProcess,
) -> None:
    forged = {"cdb_session": "eyJzaWQiOiJ4In0.forged.signature"}
    for cookies in ({}, forged):
        with httpx.Client(base_url=console.url, cookies=cookies, timeout=10) as client:
            for path in PAGES:
                reply = client.get(path)
                assert reply.status_code == 303, (path, reply.status_code)
                assert reply.headers["location"].startswith("/login?next=")
                assert SYMBOL not in reply.text
            for method, path in [
                ("GET", "/events/positions"),
                ("GET", "/push/key"),
                ("POST", "/push/subscribe"),
                ("POST", "/approvals/o-1/decide"),
                ("POST", "/bot/change"),
                ("POST", "/logout"),
            ]:
                reply = client.request(method, path)
                assert reply.status_code == 401, (method, path, reply.status_code)
                assert SYMBOL not in reply.text
                assert reply.headers["x-frame-options"] == "DENY"


def test_the_owner_logs_in_and_sees_the_books_behind_strict_headers(
    console: ServiceProcess,
) -> None:
    assert login(console.url, "not the password").status_code == 401
    client, _ = logged_in(console.url)
    with closing(client):
        for path in PAGES[:-1]:
            reply = client.get(path)
            assert reply.status_code == 200, (path, reply.text[:300])
            csp = reply.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp
            assert reply.headers["x-frame-options"] == "DENY"
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert reply.headers["referrer-policy"] == "no-referrer"
            assert "<script>" not in reply.text  # no inline script anywhere
        positions = client.get("/positions").text
        assert SYMBOL in positions and "500.0000" in positions
        assert client.get("/approvals/o-1").status_code == 404
        cookie = client.cookies.jar
        session = next(c for c in cookie if c.name == "cdb_session")
        assert session.has_nonstandard_attr("HttpOnly")
        assert (session.get_nonstandard_attr("SameSite") or "").lower() == "strict"
    status = httpx.get(f"{console.url}/status", timeout=5).text
    assert PASSWORD not in status and "test-only-session-secret" not in status
    assert "test-only-console-password" not in console.log()


def test_signals_show_the_rule_and_the_advisor_and_the_overview_draws_equity(
    console: ServiceProcess, service_env: dict[str, str]
) -> None:
    execute(
        service_env,
        "INSERT INTO signals (signal_id, event_id, symbol, side, confidence, reason, strategy,"
        " price, pct_change, signal_ts) VALUES ('sig-9', 'e-9', 'PUMP_USDT', 'long', 0.45,"
        " 'gain 4.50% >= 3% over 15m', 'momentum', 2.0, 4.5, now())",
    )
    features = [
        {"feature": "ret_15m", "value": 0.045, "contribution": 0.91},
        {"feature": "vol_ratio", "value": 3.2, "contribution": -0.40},
        {"feature": "rsi_14", "value": 71.0, "contribution": 0.12},
        {"feature": "spread", "value": 0.001, "contribution": 0.01},
    ]
    execute(
        service_env,
        "INSERT INTO ml_signals (signal_id, event_id, symbol, side, model, model_version,"
        " confidence, price, top_features, signal_ts) VALUES ('ml-9', 'e-ml-9', 'PUMP_USDT',"
        " 'long', 'xgb', 'v3', 0.83, 2.0, %s, now() + interval '1 minute')",
        (json.dumps(features),),
    )
    for minute, (equity, exposure) in enumerate([(10_000, 0), (10_020, 1000), (9_990, 2000)]):
        execute(
            service_env,
            "INSERT INTO equity (event_key, equity, exposure, reason, recorded_at)"
            " VALUES (%s, %s, %s, 'fill', now() - make_interval(mins => %s))",
            (f"eq-{minute}", equity, exposure, 10 - minute),
        )
    client, _ = logged_in(console.url)
    with closing(client):
        row = re.search(r"<tr>\s*<td>[^<]*</td><td>PUMP_USDT</td>.*?</tr>",
                        client.get("/signals").text, re.S)  # fmt: skip
        assert row is not None
        text = row.group(0)
        assert "4.50 % move at 2.0000, confidence 0.45" in text  # the rule's numbers
        assert "xgb v3: 0.83" in text  # the advisor's confidence
        # its three strongest SHAP features by |contribution|, the fourth left out
        assert re.findall(r"<li>(\w+) =", text) == ["ret_15m", "vol_ratio", "rsi_14"]
        overview = client.get("/").text
        assert overview.count("<polyline") == 2  # equity and exposure, drawn on the server
        assert "equity 9,990.00 \u2013 10,020.00" in overview


def test_a_missing_or_forged_csrf_token_is_refused_and_nothing_is_published(
    console: ServiceProcess, service_env: dict[str, str]
) -> None:
    hold_order(service_env, "held-1")
    client, csrf = logged_in(console.url)
    with closing(client):
        for token in (None, "forged", csrf[:-2] + "xx"):
            data = {"decision": "approve", **({"csrf": token} if token else {})}
            assert client.post("/approvals/held-1/decide", data=data).status_code == 403
            change = {"action": "pause", **({"csrf": token} if token else {})}
            assert client.post("/bot/change", data=change).status_code == 403
            headers = {"X-CSRF-Token": token} if token else {}
            assert client.post("/push/subscribe", headers=headers, json={}).status_code == 403
        assert entries(service_env, Stream.APPROVAL_DECISIONS) == []
        assert entries(service_env, Stream.CONTROL) == []

        reply = client.post(
            "/approvals/held-1/decide", data={"decision": "veto", "csrf": csrf, "reason": "no"}
        )
        assert reply.status_code == 303
        assert (
            client.post(
                "/approvals/held-1/decide", data={"decision": "veto", "csrf": csrf}
            ).status_code
            == 303
        )  # a second click: a second event, risk_manager takes the first
        decisions = [ApprovalDecision.model_validate(e) for e in entries(
            service_env, Stream.APPROVAL_DECISIONS)]  # fmt: skip
        assert [(d.order_id, d.decision, d.actor) for d in decisions] == [
            ("held-1", "veto", "console:owner")
        ] * 2
        assert decisions[0].reason == "no"
        assert decisions[0].event_id != decisions[1].event_id

        execute(service_env, "UPDATE approvals SET state = 'vetoed' WHERE order_id = 'held-1'")
        late = client.post("/approvals/held-1/decide", data={"decision": "approve", "csrf": csrf})
        assert late.status_code == 409  # decided: the console publishes nothing more
        assert len(entries(service_env, Stream.APPROVAL_DECISIONS)) == 2


def test_pause_and_thresholds_go_out_as_control_events_one_generation_up(
    console: ServiceProcess, service_env: dict[str, str]
) -> None:
    execute(
        service_env,
        "INSERT INTO control_state (service, bot, bot_uid, generation, config_hash, settings)"
        " VALUES ('signal_engine', 'demo-bot', 'uid-1', 4, 'h', '{\"paused\": false}')",
    )
    client, csrf = logged_in(console.url)
    with closing(client):
        assert client.post("/bot/change", data={"action": "pause", "csrf": csrf}).status_code == 200
        bad = client.post(
            "/bot/change",
            data={"action": "settings", "csrf": csrf, "signal_threshold_pct": "-1"},
        )
        assert bad.status_code == 400 and "greater than 0" in bad.text
        good = client.post(
            "/bot/change",
            data={"action": "settings", "csrf": csrf, "signal_threshold_pct": "2.5",
                  "approval": "manual"},
        )  # fmt: skip
        assert good.status_code == 200, good.text[:300]
    controls = [Control.model_validate(e) for e in entries(service_env, Stream.CONTROL)]
    assert [(c.bot, c.bot_uid, c.generation) for c in controls] == [("demo-bot", "uid-1", 5)] * 2
    assert controls[0].settings.paused is True
    assert controls[1].settings.signal_threshold_pct == 2.5
    assert controls[1].settings.approval == "manual"


def test_a_running_signal_engine_adopts_what_the_owner_sets_in_the_demo(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """No operator and no control_state yet (a fresh demo): the console's control events
    are adopted by the service, one generation after the other."""
    pipeline = Pipeline(service_env, tmp_path).start("signal_engine")
    try:
        engine = pipeline.procs["signal_engine"]
        assert engine.status()["in_force"]["paused"] is False
        with start_console(service_env, tmp_path) as console:
            client, csrf = logged_in(console.url)
            with closing(client):
                paused = client.post("/bot/change", data={"action": "pause", "csrf": csrf})
                assert "generation 1" in paused.text
                eventually(lambda: engine.status()["in_force"]["paused"] is True, "paused")
                changed = client.post(
                    "/bot/change",
                    data={"action": "settings", "csrf": csrf, "signal_threshold_pct": "6"},
                )
                assert "generation 2" in changed.text
                eventually(lambda: engine.status()["in_force"]["threshold_pct"] == 6.0, "6 %")
                assert engine.status()["in_force"]["paused"] is True  # merged, not replaced
                bot = client.get("/bot").text
                assert re.search(r"<td>signal_engine</td><td>demo</td><td>2</td>", bot), bot
    finally:
        pipeline.stop()


def test_ten_wrong_passwords_are_rate_limited_and_then_even_the_right_one_waits(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    with start_console(service_env, tmp_path, CONSOLE_LOGIN_BACKOFF_MAX_S="3") as console:
        codes = [login(console.url, f"wrong-{i}").status_code for i in range(10)]
        assert codes == [401] * 5 + [429] * 5
        refused = login(console.url, PASSWORD)
        assert refused.status_code == 429 and "cdb_session" not in refused.headers.get(
            "set-cookie", ""
        )
        time.sleep(3.5)  # the block (capped at 3 s here) passes
        assert login(console.url, PASSWORD).status_code == 303


def test_the_live_stream_sends_the_page_and_then_what_changed(
    console: ServiceProcess, service_env: dict[str, str]
) -> None:
    client, _ = logged_in(console.url)
    updates: list[str] = []
    with closing(client), client.stream("GET", "/events/positions", timeout=20) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "update":
                updates.append(json.loads(line[6:]))
                if len(updates) == 1:
                    open_position(service_env, "LATER_USDT", "o-2")
                else:
                    break
    assert SYMBOL in updates[0] and "LATER_USDT" not in updates[0]
    assert "LATER_USDT" in updates[1]


def test_a_session_ends_at_logout_and_with_a_new_password(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    with start_console(service_env, tmp_path) as console:
        client, csrf = logged_in(console.url)
        with closing(client):
            kept = dict(client.cookies)
            assert client.post("/logout", data={"csrf": csrf}).status_code == 303
            again = httpx.get(f"{console.url}/positions", cookies=kept, timeout=5)
            assert again.status_code == 303  # the copied cookie no longer works
        client, _ = logged_in(console.url)
        with closing(client):
            (tmp_path / "console.password").write_text("a-new-password\n")
            assert client.get("/positions").status_code == 303


def test_a_browser_subscription_reaches_the_notifier_with_the_admin_credential(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """The console holds the admin token, the browser never sees it: the page posts its
    PushSubscription to the console, the console passes it to the notifier."""
    token = "test-only-admin-token"
    notifier_env = {
        **as_user(service_env, "notifier"),
        "ADMIN_TOKEN": token,
        "VAPID_KEY_DIR": str(tmp_path / "vapid"),
        "MIGRATE_ON_START": "true",
    }
    with ServiceProcess("cdb.notifier", notifier_env, tmp_path) as notifier:
        notifier.wait_healthy(timeout=60)
        with start_console(
            service_env, tmp_path, ADMIN_TOKEN=token, CONSOLE_NOTIFIER_URL=notifier.url
        ) as console:
            client, csrf = logged_in(console.url)
            with closing(client):
                key = client.get("/push/key")
                assert key.status_code == 200
                assert len(key.json()["applicationServerKey"]) == 87  # P-256 point, base64url
                page = client.get("/").text
                assert token not in page and token not in key.text
                subscription = {
                    "endpoint": "https://push.example.net/send/abc123",
                    "keys": {"p256dh": "B" * 87, "auth": "A" * 22},
                }
                refused = client.post("/push/subscribe", json=subscription)
                assert refused.status_code == 403  # no CSRF header: nothing forwarded
                reply = client.post(
                    "/push/subscribe", json=subscription, headers={"X-CSRF-Token": csrf}
                )
                assert reply.status_code == 201, reply.text
    rows = query(service_env, "SELECT endpoint, label FROM push_subscriptions")
    assert rows == [("https://push.example.net/send/abc123", "console")]


def test_session_codec_and_limiter_units() -> None:
    codec = SessionCodec("k", max_age_s=60)
    cookie, session = codec.issue("pw")
    assert codec.check(cookie, "pw") == session
    assert codec.check(cookie, "other") is None
    # a character of the signature changed: the first one (all six bits are signature
    # bits; the last one's low bits are base64 padding, so A and B there can decode alike)
    at = cookie.rindex(".") + 1
    assert (
        codec.check(cookie[:at] + ("A" if cookie[at] != "A" else "B") + cookie[at + 1 :], "pw")
        is None
    )
    assert SessionCodec("other-key", 60).check(cookie, "pw") is None
    assert codec.csrf_ok(session, session.csrf_token)
    assert not codec.csrf_ok(session, "") and not codec.csrf_ok(session, None)
    limiter = LoginLimiter(per_minute=5, max_s=900)
    for i in range(5):
        assert limiter.retry_after("a", 100.0 + i) == 0
        limiter.failed("a", 100.0 + i)
    assert limiter.retry_after("a", 105.0) == pytest.approx(59.0)
    assert limiter.retry_after("b", 105.0) == 0  # another client is not blocked
    for i in range(5):  # a second round doubles the block
        limiter.failed("a", 200.0 + i)
    assert limiter.retry_after("a", 205.0) == pytest.approx(119.0)
    assert re.fullmatch(r"[0-9a-f]{64}", session.csrf_token)
