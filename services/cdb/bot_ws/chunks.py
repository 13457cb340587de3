"""How symbols are split: chunks of at most ``chunk_size`` per WebSocket, chunks over pods.

Chunk ``j`` of the ordered universe belongs to pod ``j % chunk_count``; a StatefulSet pod
``bot-ws-2`` is pod index 2. The operator derives replicas = ceil(symbols / chunk_size)
from the same rule, so each pod usually holds exactly one chunk.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Container, Sequence

__all__ = ["MAX_CHUNK_SIZE", "chunk_symbols", "index_from_name", "pod_chunks", "served_chunks"]

MAX_CHUNK_SIZE = 200


def chunk_symbols(symbols: Sequence[str], chunk_size: int) -> list[list[str]]:
    """Consecutive chunks of at most ``chunk_size`` symbols (duplicates removed, order kept)."""
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size}")
    unique = list(dict.fromkeys(symbols))
    return [unique[i : i + chunk_size] for i in range(0, len(unique), chunk_size)]


def pod_chunks(chunks: Sequence[list[str]], index: int, count: int) -> list[list[str]]:
    """The chunks pod ``index`` of ``count`` serves: those with ``j % count == index``."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"chunk index {index} is not in 0..{count - 1}")
    return [chunk for j, chunk in enumerate(chunks) if j % count == index]


def served_chunks(
    symbols: Sequence[str], tradable: Container[str], chunk_size: int, index: int, count: int
) -> list[list[str]]:
    """Pod ``index``'s chunks of ``symbols``, each keeping only the ``tradable`` symbols.

    The chunks are cut from the whole list *before* anything is dropped: pods whose own
    contract snapshots differ (a symbol delisted between two pods' start-ups) still agree
    on which chunk holds which symbol, so a symbol is served by one pod, never by two
    while another is missed. A chunk left empty opens no socket.
    """
    mine = pod_chunks(chunk_symbols(symbols, chunk_size), index, count)
    kept = [[s for s in chunk if s in tradable] for chunk in mine]
    return [chunk for chunk in kept if chunk]


def index_from_name(name: str | None = None) -> int:
    """The trailing ``-<n>`` of a StatefulSet pod name (``bot-ws-3`` → 3); 0 without one."""
    match = re.search(r"-(\d+)$", name if name is not None else socket.gethostname())
    return int(match.group(1)) if match else 0
