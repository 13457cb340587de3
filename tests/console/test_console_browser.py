"""The console in a real browser: Debian's Chromium driven by Playwright (``make setup``
installs it; Playwright downloads no browser). The owner logs in, watches a position
appear while the pipeline trades, approves one held order and vetoes another, on a
desktop window and on a phone-sized one. A screenshot of every page is kept under
``tests/artifacts/console/<viewport>/`` (the path is printed)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from cdb.core.bus import Bus
from cdb.core.events import Stream
from tests.support import ROOT, Pipeline, eventually_async, market, scalar
from tests.support.console import PASSWORD, entries, hold_order, start_console

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
PAGES = ["/", "/positions", "/trades", "/signals", "/risk", "/bot", "/approvals"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail("chromium missing: run make setup (scripts/setup.d/40-chromium.sh)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def logged_in_page(browser: Browser, url: str, viewport: str) -> Page:
    context = await browser.new_context(
        viewport=VIEWPORTS[viewport],  # type: ignore[arg-type]
        is_mobile=viewport == "phone",
        has_touch=viewport == "phone",
        base_url=url,
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto("/positions")
    await expect(page).to_have_url(f"{url}/login?next=/positions")  # no session: the login
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{url}/positions")
    return page


async def screenshots(page: Page, viewport: str, url: str) -> Path:
    folder = ARTIFACTS / viewport
    folder.mkdir(parents=True, exist_ok=True)
    for path in PAGES:
        await page.goto(path)
        await expect(page.locator("#connection")).to_have_class("good", timeout=10_000)
        name = path.strip("/") or "overview"
        await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    print(f"console screenshots ({viewport}): {folder}")
    return folder


def csp_clean(page: Page) -> None:
    """No CSP violation, no script error: everything the page needs comes from its origin."""
    errors: list[str] = page.errors  # type: ignore[attr-defined]
    assert not [e for e in errors if "Content Security Policy" in e or "Error" in e], errors


async def test_the_owner_watches_a_position_appear_live_on_desktop_and_phone(
    bus: Bus, service_env: dict[str, str], tmp_path: Path, browser: Browser
) -> None:
    pipeline = Pipeline(service_env, tmp_path, PAPER_SLIPPAGE_BPS="0").start()
    services = ",".join(f"{name}={proc.url}" for name, proc in pipeline.procs.items())
    try:
        with start_console(service_env, tmp_path, CONSOLE_SERVICES=services) as console:
            for viewport, symbol in (("desktop", "PUMP_USDT"), ("phone", "ROCKET_USDT")):
                page = await logged_in_page(browser, console.url, viewport)
                await expect(page.locator("#connection")).to_have_class("good", timeout=10_000)
                await expect(page.locator("#positions")).not_to_contain_text(symbol)
                await bus.publish(market(symbol, 4.5, price=2.0))  # a gainer: long
                # the row arrives through the live stream, without a reload
                row = page.locator("#positions tr", has_text=symbol)
                await expect(row).to_be_visible(timeout=60_000)
                await expect(row).to_contain_text("long")
                await screenshots(page, viewport, console.url)
                await page.goto("/")  # every service's health, from its own /health
                for name in pipeline.procs:
                    health = page.locator("#services tr", has_text=name)
                    await expect(health.locator(".badge")).to_have_text("ok")
                await page.goto("/trades")
                await expect(page.locator("#orders")).to_contain_text(symbol)
                await expect(page.locator("#orders")).to_contain_text("filled")
                csp_clean(page)
                await page.context.close()
    finally:
        pipeline.stop()


async def until(check: Any, what: str, timeout: float = 10.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


WATCH_WAIT_UNTIL = """() => {
  self.handled = [];
  const waitUntil = ExtendableEvent.prototype.waitUntil;
  ExtendableEvent.prototype.waitUntil = function (promise) {
    if (this.type === "push") {
      self.handled.push(Promise.resolve(promise).then(() => "fulfilled", e => "rejected: " + e));
    }
    return waitUntil.call(this, promise);
  };
}"""


async def test_the_service_worker_shows_an_approval_push_and_its_click_opens_the_order(
    service_env: dict[str, str], tmp_path: Path, browser: Browser
) -> None:
    """The notifier's payload for a held order (16a's shape), delivered to the service
    worker through Chromium's DevTools push (no push service needed): a notification with
    the approve/veto actions; its click opens /approvals/<order_id> and decides nothing."""
    with start_console(service_env, tmp_path) as console:
        page = await logged_in_page(browser, console.url, "phone")
        await page.context.grant_permissions(["notifications"], origin=console.url)
        scope = await page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
        assert scope == f"{console.url}/"
        manifest = await page.evaluate("fetch('/manifest.webmanifest').then(r => r.json())")
        assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
        cdp = await page.context.new_cdp_session(page)
        registrations: list[dict[str, Any]] = []
        cdp.on("ServiceWorker.workerRegistrationUpdated",
               lambda event: registrations.extend(event["registrations"]))  # fmt: skip
        await cdp.send("ServiceWorker.enable")
        # the browser's registrations are reported, not only this page's: push to the one
        # whose scope is this console (the suite's earlier consoles had other ports)
        mine = await until(
            lambda: [r for r in registrations if r["scopeURL"] == f"{console.url}/"],
            "the service worker's registration",
        )
        payload = {
            "title": "Approve long PUMP_USDT?", "body": "1000 USDT at 2.0, stop 1.96",
            "tag": "approval:ord-1", "severity": "warning", "kind": "approval_request",
            "actions": [{"action": "approve", "title": "Approve"},
                        {"action": "veto", "title": "Veto"}],
            "data": {"order_id": "ord-1", "url": "/approvals/ord-1", "expires_at": 1e10},
        }  # fmt: skip
        # watch the worker's own promise for the push (what it passes to waitUntil), so the
        # notifications are read once it settled: Chromium drops a notification that a
        # getNotifications() racing its display finds not yet displayed (seen in 1 of 3 runs)
        (worker,) = page.context.service_workers
        await worker.evaluate(WATCH_WAIT_UNTIL)
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": console.url, "registrationId": mine[0]["registrationId"],
             "data": json.dumps(payload)},
        )  # fmt: skip
        # the worker wakes for the push: on a loaded machine that can take a while
        await until(lambda: worker.evaluate("self.handled.length"), "the push event", 30.0)
        assert await worker.evaluate("Promise.all(self.handled)") == ["fulfilled"]
        shown = "self.registration.getNotifications().then(ns => ns.map(n => ({title: n.title," \
            " actions: n.actions.map(a => a.action), data: n.data, tag: n.tag})))"  # fmt: skip
        (notification,) = await worker.evaluate(shown)
        assert notification == {
            "title": "Approve long PUMP_USDT?", "actions": ["approve", "veto"],
            "data": payload["data"], "tag": "approval:ord-1",
        }  # fmt: skip
        # the owner taps "Approve" on the notification: the service worker opens the page
        hold_order(service_env, "ord-1")
        await worker.evaluate(
            "self.registration.getNotifications().then(ns => self.dispatchEvent("
            "new NotificationEvent('notificationclick', {notification: ns[0], action: 'approve'})))"
        )  # as Chromium dispatches a tap on the notification's Approve action
        await expect(page).to_have_url(f"{console.url}/approvals/ord-1", timeout=10_000)
        await expect(page.locator("#state")).to_have_text("pending")  # nothing decided
        await expect(page.locator("#approve")).to_be_visible()  # the button decides
        assert entries(service_env, Stream.APPROVAL_DECISIONS) == []


async def decide_in_browser(page: Page, order_id: str, button: str, outcome: str) -> None:
    await page.goto("/approvals")
    link = page.locator(f'a.approval[data-order="{order_id}"]')
    await expect(link).to_be_visible(timeout=30_000)
    await link.click()
    await expect(page.locator("#state")).to_have_text("pending")
    await page.fill("#reason", f"{button} from the browser test")
    viewport = "phone" if (page.viewport_size or {}).get("width", 0) < 600 else "desktop"
    await page.screenshot(path=str(ARTIFACTS / f"{viewport}-pending.png"), full_page=True)
    await page.click(f"#{button}")
    # risk_manager decides; the page shows it once the approvals row changes
    await expect(page.locator("#state")).to_have_text(outcome, timeout=30_000)
    await expect(page.locator("#outcome")).to_contain_text("console:owner")
    await expect(page.locator("#decide")).to_be_hidden()


async def test_the_owner_approves_one_held_order_and_vetoes_another(
    bus: Bus, service_env: dict[str, str], tmp_path: Path, browser: Browser
) -> None:
    pipeline = Pipeline(
        service_env, tmp_path, PAPER_SLIPPAGE_BPS="0", RISK_APPROVAL="manual",
        RISK_APPROVAL_TIMEOUT_S="600",
    ).start()  # fmt: skip
    try:
        with start_console(service_env, tmp_path) as console:
            await bus.publish(market("KEEP_USDT", 4.5, price=2.0))
            await bus.publish(market("DROP_USDT", 5.0, price=3.0))
            await eventually_async(
                lambda: scalar(service_env, "SELECT count(*) FROM approvals") == 2,
                what="two orders held for approval",
            )

            def held(symbol: str) -> Any:
                return scalar(
                    service_env, "SELECT order_id FROM approvals WHERE symbol = %s", (symbol,)
                )

            assert scalar(service_env, "SELECT count(*) FROM orders") == 0  # nothing traded
            desktop = await logged_in_page(browser, console.url, "desktop")
            await decide_in_browser(desktop, held("KEEP_USDT"), "approve", "approved")
            await desktop.screenshot(path=str(ARTIFACTS / "desktop-approved.png"), full_page=True)
            phone = await logged_in_page(browser, console.url, "phone")
            await decide_in_browser(phone, held("DROP_USDT"), "veto", "vetoed")
            await phone.screenshot(path=str(ARTIFACTS / "phone-vetoed.png"), full_page=True)

            await eventually_async(
                lambda: (
                    scalar(service_env, "SELECT status FROM orders WHERE symbol = 'KEEP_USDT'")
                    == "filled"
                ),
                what="the approved order filled",
            )
            assert scalar(service_env, "SELECT count(*) FROM orders") == 1  # the veto: none
            await phone.goto("/approvals")
            decided = phone.locator("#decided")
            await expect(decided.locator("tr", has_text="KEEP_USDT")).to_contain_text("approved")
            await expect(decided.locator("tr", has_text="DROP_USDT")).to_contain_text("vetoed")
            await phone.goto("/bot")  # every decision is in the audit trail, with who
            await expect(phone.locator("#audit")).to_contain_text("console:owner")
            csp_clean(desktop)
            csp_clean(phone)
            print(f"console screenshots: {ARTIFACTS}")
    finally:
        pipeline.stop()
