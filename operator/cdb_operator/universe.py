"""Symbols for ``universe: all-usdt-perpetuals``, from bot_rest's ``GET /universe``.

Read with the kernel's typed client (:mod:`cdb.core.rest_client`): bot_rest answers
:class:`~cdb.core.rest.UniverseOut`, the USDT-margined perpetual contracts. Anything else
(unreachable, an error status, a body that is not the contract, a symbol the CRD would
refuse, no symbols at all) is :class:`UniverseUnavailable`, never an empty universe.
"""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from cdb.core.rest_client import BotRestClient, BotRestError
from cdb_operator.spec import Symbol

__all__ = ["UniverseClient", "UniverseUnavailable"]

SYMBOLS = TypeAdapter(list[Symbol])


class UniverseUnavailable(Exception):
    """bot_rest did not give a usable symbol list (unreachable, error, bad or empty body)."""


class UniverseClient:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s

    async def resolve(self, universe: str) -> list[str]:
        """The sorted, de-duplicated symbols of ``universe`` (``all-usdt-perpetuals``: every
        contract bot_rest lists; the name is the only universe there is)."""
        try:
            async with BotRestClient(self.base_url, self.timeout_s) as rest:
                answer = await rest.universe()
        except BotRestError as error:
            raise UniverseUnavailable(str(error)) from error
        try:
            symbols = sorted(set(SYMBOLS.validate_python([c.symbol for c in answer.symbols])))
        except ValidationError as error:
            raise UniverseUnavailable(f"bot_rest sent an unusable symbol: {error}") from error
        if not symbols:
            raise UniverseUnavailable("bot_rest sent an empty universe")
        return symbols
