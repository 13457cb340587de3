"""risk_manager's book in memory: net PnL, today's state and every active position, indexed
by symbol, with the exposure they sum to; no I/O.

A decision or an order result works on a :meth:`Ledger.view`: the positions it may touch
(the symbol's active ones, the result's own row) as copies, every other active position
summed (``other_exposure``/``other_open``), exactly the book the rules see in a replay.
At the end of the transaction that wrote its effect, under the book lock,
:meth:`Ledger.fold` takes the view's changes in (a failed commit has the service load the
ledger again). So a decision costs O(positions of its symbol), not O(history); the service
rebuilds the ledger from PostgreSQL at start and whenever another replica wrote the book
(``store.lock_book``'s version).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cdb.risk_manager.rules import BookPosition, DayState, RiskBook, RiskLimits

__all__ = ["Ledger"]


@dataclass
class Ledger:
    starting_equity: float
    net_pnl: float = 0.0
    today: DayState | None = None
    positions: dict[str, BookPosition] = field(default_factory=dict)  # active ones only
    by_symbol: dict[str, set[str]] = field(default_factory=dict)
    exposure: float = 0.0

    @classmethod
    def of(
        cls,
        starting_equity: float,
        net_pnl: float,
        today: DayState | None,
        active: list[BookPosition],
    ) -> Ledger:
        ledger = cls(starting_equity=starting_equity, net_pnl=net_pnl, today=today)
        for position in active:
            ledger._add(position)
        return ledger

    def view(
        self, limits: RiskLimits, *, symbol: str = "", row: BookPosition | None = None
    ) -> RiskBook:
        """The book of one decision: ``symbol``'s active positions and ``row`` (an order's
        own position, as stored) in full and as copies, every other active one summed."""
        mine = {oid: replace(self.positions[oid]) for oid in self.by_symbol.get(symbol, ())}
        if row is not None:
            mine[row.order_id] = replace(row)
        listed = [self.positions[oid] for oid in mine if oid in self.positions]
        return RiskBook(
            starting_equity=self.starting_equity,
            limits=limits,
            net_pnl=self.net_pnl,
            positions=mine,
            today=replace(self.today) if self.today is not None else None,
            other_exposure=self.exposure - sum(p.notional for p in listed),
            other_open=len(self.positions) - len(listed),
        )

    def fold(self, book: RiskBook) -> None:
        """Take in what a committed decision or result changed in its ``view``."""
        self.net_pnl = book.net_pnl
        self.today = replace(book.today) if book.today is not None else None
        for position in book.positions.values():
            self._remove(position.order_id)
            if position.active:
                self._add(replace(position))

    def _add(self, position: BookPosition) -> None:
        self.positions[position.order_id] = position
        self.by_symbol.setdefault(position.symbol, set()).add(position.order_id)
        self.exposure += position.notional

    def _remove(self, order_id: str) -> None:
        position = self.positions.pop(order_id, None)
        if position is None:
            return
        self.exposure -= position.notional
        if not self.positions:
            self.exposure = 0.0  # no float residue once nothing is active
        ids = self.by_symbol[position.symbol]
        ids.discard(order_id)
        if not ids:
            del self.by_symbol[position.symbol]
