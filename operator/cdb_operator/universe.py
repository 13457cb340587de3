"""Symbols for ``universe: all-usdt-perpetuals``, from bot_rest's ``GET /universe``.

bot_rest answers with the USDT-margined perpetual contracts, either as a list of symbols
or as an object with a ``symbols`` list (of names or of ``{"symbol": ...}`` objects);
anything else is an error, never an empty universe.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from cdb_operator.spec import Symbol

__all__ = ["UniverseClient", "UniverseUnavailable"]


class UniverseUnavailable(Exception):
    """bot_rest did not give a usable symbol list (unreachable, error, bad or empty body)."""


class ContractEntry(BaseModel):
    symbol: Symbol


SymbolList = TypeAdapter(list[Symbol | ContractEntry])


class UniverseBody(BaseModel):
    symbols: list[Symbol | ContractEntry] = Field(min_length=1)


class UniverseClient:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    async def resolve(self, universe: str) -> list[str]:
        """The sorted, de-duplicated symbols of ``universe``."""
        url = f"{self.base_url}/universe"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                reply = await client.get(url, params={"universe": universe})
        except httpx.HTTPError as error:
            raise UniverseUnavailable(f"bot_rest unreachable at {url}: {error}") from error
        if reply.status_code != 200:
            raise UniverseUnavailable(f"bot_rest answered HTTP {reply.status_code} for {url}")
        try:
            entries = _parse(reply.json())
        except (ValueError, ValidationError) as error:
            raise UniverseUnavailable(f"bot_rest sent an unusable universe: {error}") from error
        symbols = sorted({e if isinstance(e, str) else e.symbol for e in entries})
        if not symbols:
            raise UniverseUnavailable("bot_rest sent an empty universe")
        return symbols


def _parse(body: Any) -> list[str | ContractEntry]:
    if isinstance(body, list):
        return SymbolList.validate_python(body)
    return UniverseBody.model_validate(body).symbols
