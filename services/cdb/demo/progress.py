"""The start-up display: a live table on a terminal, one line per change otherwise."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from cdb.demo.supervisor import Child

__all__ = ["StartupDisplay"]

STYLES = {"ok": "green", "waiting": "dim", "starting": "yellow"}


class StartupDisplay:
    """Shows each step (Redis, PostgreSQL, every service) as it comes up."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: dict[str, tuple[str, str, str]] = {}
        self.began = time.monotonic()
        self.live: Live | None = None

    def __enter__(self) -> StartupDisplay:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=8)
            self.live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(kind, error, trace)
            self.live = None

    def step(self, name: str, where: str, state: str) -> None:
        elapsed = f"{time.monotonic() - self.began:5.1f}s"
        self.rows[name] = (where, state, elapsed)
        if self.live is not None:
            self.live.update(self._table())
        else:
            self.console.print(f"[{elapsed}] {name:<18} {where:<24} {state}", highlight=False)

    def child(self, child: Child) -> None:
        self.step(child.name, child.spec.url.removeprefix("http://"), child.state)

    def _table(self) -> Table:
        table = Table(title="cdb demo: starting (Ctrl-C stops)", expand=False)
        for column in ("component", "where", "state", "t"):
            table.add_column(column)
        for name, (where, state, elapsed) in self.rows.items():
            style = STYLES.get(state, "red" if "exit" in state or "fail" in state else "cyan")
            table.add_row(name, where, f"[{style}]{state}[/]", elapsed)
        return table
