"""The console's HTTP face: pages, the live stream, the PWA files and the owner's actions.

Every response of this router carries the security headers (a CSP that allows this origin
only and no inline script, no framing, no referrer, no sniffing, no caching of data). No
session: pages redirect to ``/login``, the API and the event stream answer 401, and
neither says anything about the books. Every state change needs the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape

from cdb.console.actions import BotChange, BotControl, decide
from cdb.console.auth import LoginLimiter, Session, SessionCodec, password_matches
from cdb.console.books import Books
from cdb.console.chart import line_chart
from cdb.console.health import probe_all
from cdb.console.kube import KubeError
from cdb.console.settings import ConsoleSettings
from cdb.core.bus import Bus
from cdb.core.http import (
    APIRoute,
    APIRouter,
    FileResponse,
    HTMLResponse,
    HTTPException,
    JSONResponse,
    RedirectResponse,
    Request,
    Response,
    StreamingResponse,
)

__all__ = ["SECURITY_HEADERS", "Web"]

log = logging.getLogger("cdb.console")

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
SESSION_COOKIE = "cdb_session"
LOGIN_COOKIE = "cdb_login"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none';"
    " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STATIC_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
}


class LoginRequired(Exception):
    """A page asked for without a session: the answer is a redirect to the login."""


class SecureRoute(APIRoute):
    """Adds the security headers to every answer, errors included, and turns
    :class:`LoginRequired` into the redirect."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except LoginRequired:
                target = quote(request.url.path, safe="/")
                response = RedirectResponse(f"/login?next={target}", status_code=303)
            except HTTPException as error:
                response = JSONResponse(
                    {"detail": error.detail}, status_code=error.status_code, headers=error.headers
                )
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            if not request.url.path.startswith("/static/"):
                response.headers.setdefault("Cache-Control", "no-store")
            return response

        return handler


@dataclass(frozen=True)
class Page:
    title: str
    template: str  # the page; its live part is "_" + template
    load: Callable[[str], Awaitable[dict[str, Any]]]


def _ts(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _safe_next(value: str | None) -> str:
    """Only a path of this site: never another host (``//evil``) after the login."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


class Web:
    """The console's pages and actions over its books, bus and bot control."""

    def __init__(
        self,
        settings: ConsoleSettings,
        books: Books,
        bus: Bus,
        control: BotControl,
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.books = books
        self.bus = bus
        self.control = control
        self.stop = stop
        secret = settings.console_session_secret.get_secret_value() or secrets.token_urlsafe(32)
        self.sessions = SessionCodec(secret, settings.console_session_max_age_s)
        self.limiter = LoginLimiter(
            settings.console_login_per_minute, settings.console_login_backoff_max_s
        )
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            enable_async=True,
        )
        self.templates.filters["ts"] = _ts
        self.templates.filters["num"] = _num
        self.pages: dict[str, Page] = {
            "overview": Page("Overview", "overview.html", self._overview),
            "positions": Page("Positions", "positions.html", self._positions),
            "trades": Page("Orders & trades", "trades.html", self._trades),
            "signals": Page("Signals", "signals.html", self._signals),
            "risk": Page("Risk", "risk.html", self._risk),
            "bot": Page("Bot", "bot.html", self._bot),
            "approvals": Page("Approvals", "approvals.html", self._approvals),
            "approval": Page("Approval", "approval.html", self._approval),
        }

    # -- sessions ------------------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        return self.sessions.check(request.cookies.get(SESSION_COOKIE), self.settings.password())

    def page_owner(self, request: Request) -> Session:
        session = self.session(request)
        if session is None:
            raise LoginRequired()
        return session

    def api_owner(self, request: Request) -> Session:
        session = self.session(request)
        if session is None:
            raise HTTPException(401, "login required")
        return session

    def check_csrf(self, request: Request, session: Session, given: str | None) -> None:
        if not self.sessions.csrf_ok(session, given):
            log.warning(
                "state change refused: bad or missing CSRF token",
                extra={"path": request.url.path, "caller": _caller(request)},
            )
            raise HTTPException(403, "CSRF token missing or wrong: reload the page")

    def _cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="strict",
            secure=self.settings.console_secure_cookies,
            path="/",
        )

    # -- rendering -----------------------------------------------------------------------
    async def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = await self.templates.get_template(template).render_async(**context)
        return HTMLResponse(html, status_code=status_code)

    async def fragment(self, name: str, arg: str, session: Session) -> str:
        page = self.pages[name]
        context = await page.load(arg)
        return await self.templates.get_template("_" + page.template).render_async(
            csrf=session.csrf_token, **context
        )

    async def show(self, name: str, arg: str, session: Session, **extra: Any) -> HTMLResponse:
        page = self.pages[name]
        context = await page.load(arg)
        if context.get("missing"):
            raise HTTPException(404, context["missing"])
        return await self.render(
            page.template,
            page=name,
            arg=arg,
            title=page.title,
            csrf=session.csrf_token,
            live=await self.fragment(name, arg, session),
            **context,
            **extra,
        )

    # -- what each page shows --------------------------------------------------------------
    async def _overview(self, _: str) -> dict[str, Any]:
        services, series, breaker, pending = await asyncio.gather(
            probe_all(self.settings.service_urls()),
            self.books.equity_series(),
            self.books.breaker(),
            self.books.approvals(pending=True),
        )
        chart = line_chart(
            series, {"equity": ("equity", "line-equity"), "exposure": ("exposure", "line-exposure")}
        )
        return {
            "services": services,
            "chart": chart,
            "latest": series[-1] if series else None,
            "breaker": breaker,
            "pending": len(pending),
        }

    async def _positions(self, _: str) -> dict[str, Any]:
        positions = await self.books.open_positions()
        return {
            "positions": positions,
            "unrealized": sum(p["unrealized_pnl"] for p in positions),
        }

    async def _trades(self, _: str) -> dict[str, Any]:
        orders, fills, closed = await asyncio.gather(
            self.books.orders(), self.books.fills(), self.books.closed_trades()
        )
        return {"orders": orders, "fills": fills, "closed": closed}

    async def _signals(self, _: str) -> dict[str, Any]:
        signals, ml = await asyncio.gather(self.books.signals(), self.books.ml_signals())
        return {"signals": signals, "ml_signals": ml}

    async def _risk(self, _: str) -> dict[str, Any]:
        breaker, events, days = await asyncio.gather(
            self.books.breaker(), self.books.risk_events(), self.books.breaker_days()
        )
        return {"breaker": breaker, "events": events, "days": days}

    async def _bot(self, _: str) -> dict[str, Any]:
        spec: dict[str, Any] | None = None
        spec_error = ""
        try:
            spec = await self.control.spec()
        except (KubeError, httpx.HTTPError) as error:
            spec_error = str(error)[:300]
        state, audit = await asyncio.gather(self.books.control_state(), self.books.audit())
        return {
            "mode": self.control.mode,
            "tradingbot": self.settings.console_tradingbot,
            "spec": json.dumps(spec, indent=2, sort_keys=True) if spec is not None else "",
            "spec_error": spec_error,
            "state": state,
            "audit": audit,
        }

    async def _approvals(self, _: str) -> dict[str, Any]:
        pending, decided = await asyncio.gather(
            self.books.approvals(pending=True), self.books.approvals(pending=False)
        )
        return {"pending": pending, "decided": decided, "now": time.time()}

    async def _approval(self, order_id: str) -> dict[str, Any]:
        approval = await self.books.approval(order_id)
        if approval is None:
            return {"missing": f"no approval request for order {order_id}", "approval": None}
        return {"approval": approval, "now": time.time()}

    # -- the live stream -----------------------------------------------------------------
    async def stream(self, request: Request, name: str, arg: str) -> AsyncIterator[bytes]:
        """``update`` events with the page's live part whenever it changed; a comment
        every 15 s keeps proxies from closing a quiet stream."""
        last_digest = ""
        last_sent = time.monotonic()
        yield b"retry: 3000\n\n"
        while not self.stop.is_set():
            session = self.session(request)
            if session is None:  # logged out or expired meanwhile
                yield b"event: logout\ndata: {}\n\n"
                return
            if await request.is_disconnected():
                return
            try:
                html = await self.fragment(name, arg, session)
            except Exception as error:  # the database away for a moment: say so, go on
                log.warning("live update failed", extra={"page": name, "error": str(error)[:200]})
                html = ""
            digest = hashlib.sha256(html.encode()).hexdigest()
            if html and digest != last_digest:
                last_digest = digest
                last_sent = time.monotonic()
                yield f"event: update\ndata: {json.dumps(html)}\n\n".encode()
            elif time.monotonic() - last_sent > 15:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.console_refresh_s)

    # -- the router ----------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(route_class=SecureRoute)

        @router.get("/login", response_class=HTMLResponse)
        async def login_form(request: Request, next: str = "/") -> Response:
            token = secrets.token_urlsafe(24)
            response = await self.render(
                "login.html", title="Log in", login_token=token, next=_safe_next(next), error=""
            )
            self._cookie(response, LOGIN_COOKIE, token, 600)
            return response

        @router.post("/login")
        async def login(request: Request) -> Response:
            form = await _form(request)
            caller = _caller(request)
            now = time.monotonic()
            wait = self.limiter.retry_after(caller, now)
            if wait > 0:
                log.warning("login refused: rate limited", extra={"caller": caller})
                return await self.render(
                    "login.html",
                    status_code=429,
                    title="Log in",
                    login_token="",
                    next="/",
                    error=f"Too many attempts: try again in {int(wait) + 1} s.",
                    retry_after=int(wait) + 1,
                )
            expected_token = request.cookies.get(LOGIN_COOKIE, "")
            if not expected_token or not secrets.compare_digest(
                form.get("login_token", ""), expected_token
            ):
                raise HTTPException(403, "login form expired: reload the page")
            password = self.settings.password()
            if not password_matches(form.get("password", ""), password):
                self.limiter.failed(caller, now)
                log.warning("login failed: wrong password", extra={"caller": caller})
                token = secrets.token_urlsafe(24)
                response = await self.render(
                    "login.html",
                    status_code=401,
                    title="Log in",
                    login_token=token,
                    next=_safe_next(form.get("next")),
                    error="Wrong password."
                    if password
                    else "No password is configured (CONSOLE_PASSWORD_FILE).",
                )
                self._cookie(response, LOGIN_COOKIE, token, 600)
                return response
            self.limiter.succeeded(caller)
            cookie, _ = self.sessions.issue(password)
            log.info("owner logged in", extra={"caller": caller})
            redirect = RedirectResponse(_safe_next(form.get("next")), status_code=303)
            self._cookie(redirect, SESSION_COOKIE, cookie, self.settings.console_session_max_age_s)
            redirect.delete_cookie(LOGIN_COOKIE, path="/")
            return redirect

        @router.post("/logout")
        async def logout(request: Request) -> Response:
            session = self.api_owner(request)
            self.check_csrf(request, session, (await _form(request)).get("csrf"))
            self.sessions.end(session)
            response = RedirectResponse("/login", status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response

        @router.get("/", response_class=HTMLResponse)
        async def overview(request: Request) -> Response:
            return await self.show("overview", "", self.page_owner(request))

        for name in ("positions", "trades", "signals", "risk", "bot", "approvals"):
            router.add_api_route(f"/{name}", self._page_endpoint(name), methods=["GET"])

        @router.get("/approvals/{order_id}", response_class=HTMLResponse)
        async def approval(request: Request, order_id: str) -> Response:
            session = self.page_owner(request)
            return await self.show("approval", order_id[:64], session, message="")

        @router.post("/approvals/{order_id}/decide")
        async def decide_order(request: Request, order_id: str) -> Response:
            session = self.api_owner(request)
            form = await _form(request)
            self.check_csrf(request, session, form.get("csrf"))
            decision = form.get("decision", "")
            if decision not in ("approve", "veto"):
                raise HTTPException(400, "decision must be approve or veto")
            held = await self.books.approval(order_id)
            if held is None:
                raise HTTPException(404, f"no approval request for order {order_id}")
            if held["state"] != "pending":
                raise HTTPException(409, f"already decided: {held['state']}")
            verdict: Literal["approve", "veto"] = "approve" if decision == "approve" else "veto"
            event = await decide(self.bus, order_id, verdict, form.get("reason", ""))
            log.warning(
                "approval decision published",
                extra={"order_id": order_id, "decision": decision, "event_id": event.event_id,
                       "caller": _caller(request)},
            )  # fmt: skip
            return RedirectResponse(f"/approvals/{quote(order_id)}", status_code=303)

        @router.post("/bot/change")
        async def change_bot(request: Request) -> Response:
            session = self.api_owner(request)
            form = await _form(request)
            self.check_csrf(request, session, form.get("csrf"))
            change: BotChange | None = None
            try:
                change = _bot_change(form)
                outcome = await self.control.apply(change)
                status_code = 200
            except ValueError as error:
                outcome, status_code = f"refused: {error}", 400
            except KubeError as error:
                outcome, status_code = f"refused by the API server: {error}", 422
            log.warning(
                "bot change", extra={"change": str(change or ""),
                                     "outcome": outcome, "caller": _caller(request)},
            )  # fmt: skip
            return await self.show("bot", "", session, message=outcome, status_code=status_code)

        @router.get("/events/{name}")
        async def events(request: Request, name: str, arg: str = "") -> Response:
            self.api_owner(request)
            if name not in self.pages:
                raise HTTPException(404, "no such page")
            return StreamingResponse(
                self.stream(request, name, arg[:64]),
                media_type="text/event-stream",
                headers={"X-Accel-Buffering": "no"},
            )

        @router.get("/push/key")
        async def push_key(request: Request) -> Response:
            self.api_owner(request)
            reply = await self._notifier("GET", "/webpush/key")
            return JSONResponse(reply.json(), status_code=reply.status_code)

        @router.post("/push/subscribe")
        async def push_subscribe(request: Request) -> Response:
            session = self.api_owner(request)
            self.check_csrf(request, session, request.headers.get("x-csrf-token"))
            try:
                subscription = json.loads(await request.body())
            except ValueError:
                raise HTTPException(400, "expected PushSubscription.toJSON()") from None
            if not isinstance(subscription, dict):
                raise HTTPException(400, "expected PushSubscription.toJSON()")
            subscription["label"] = "console"
            reply = await self._notifier("POST", "/webpush/subscriptions", subscription)
            return JSONResponse(reply.json(), status_code=reply.status_code)

        @router.get("/manifest.webmanifest")
        def manifest() -> Response:
            return FileResponse(STATIC / "manifest.webmanifest", media_type=STATIC_TYPES[
                ".webmanifest"])  # fmt: skip

        @router.get("/sw.js")
        def service_worker() -> Response:
            # served from the root so its scope is the whole console
            return FileResponse(STATIC / "sw.js", media_type="text/javascript")

        @router.get("/static/{name}")
        def static(name: str) -> Response:
            path = STATIC / name
            kind = STATIC_TYPES.get(path.suffix)
            if kind is None or "/" in name or name.startswith(".") or not path.is_file():
                raise HTTPException(404, "not found")
            return FileResponse(path, media_type=kind, headers={"Cache-Control": "no-cache"})

        return router

    def _page_endpoint(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self.show(name, "", self.page_owner(request), message="")

        endpoint.__name__ = f"page_{name}"
        return endpoint

    async def _notifier(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        """The notifier's WebPush endpoints, with the admin credential (server-side only)."""
        if not self.settings.console_notifier_url:
            raise HTTPException(404, "WebPush is off: no CONSOLE_NOTIFIER_URL")
        token = self.settings.admin_token.get_secret_value()
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return await client.request(
                    method,
                    self.settings.console_notifier_url.rstrip("/") + path,
                    json=body,
                    headers={"Authorization": f"Bearer {token}"} if token else {},
                )
        except httpx.HTTPError as error:
            raise HTTPException(502, f"notifier unreachable: {type(error).__name__}") from None


def _caller(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (what the pages post), first value of each field."""
    body = await request.body()
    if len(body) > 16_384:
        raise HTTPException(413, "form too large")
    parsed = parse_qs(body.decode(errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def _number(form: dict[str, str], field: str) -> float | None:
    text = form.get(field, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{field}: not a number: {text[:20]!r}") from None


def _bot_change(form: dict[str, str]) -> BotChange:
    action = form.get("action", "")
    if action == "pause":
        return BotChange(paused=True)
    if action == "resume":
        return BotChange(paused=False)
    if action == "settings":
        approval = form.get("approval", "")
        if approval not in ("", "auto", "manual"):
            raise ValueError("approval must be auto or manual")
        change = BotChange(
            signal_threshold_pct=_number(form, "signal_threshold_pct"),
            signal_min_volume=_number(form, "signal_min_volume"),
            approval="manual" if approval == "manual" else "auto" if approval else None,
        )
        if change == BotChange():
            raise ValueError("nothing to change")
        return change
    raise ValueError("unknown action")
