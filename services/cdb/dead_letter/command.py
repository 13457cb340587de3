"""The ``cdb dead-letter list|show|replay`` commands (registered in :mod:`cdb.cli`).

Redis is found by ``REDIS_HOST``/``REDIS_PORT``/``REDIS_USERNAME``/``REDIS_PASSWORD``,
as for every service; replaying needs a user that may append to the event's stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer

from cdb.core.bus import BUS_ERRORS, RedisClient, connect_redis
from cdb.core.config import RedisSettings, load_settings_or_exit
from cdb.core.dead_letters import ReplayError, list_letters, replay, show

__all__ = ["app"]

app = typer.Typer(help="Inspect and replay events the bus dead-lettered.", no_args_is_help=True)

T = TypeVar("T")


def _run(action: Callable[[RedisClient], Awaitable[T]]) -> T:
    settings = load_settings_or_exit(RedisSettings)

    async def go() -> T:
        redis = connect_redis(settings)
        try:
            return await action(redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(go())
    except ReplayError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    except BUS_ERRORS as error:
        typer.echo(f"redis at {settings.redis_host}:{settings.redis_port}: {error}", err=True)
        raise typer.Exit(2) from None


@app.command("list")
def list_command(
    stream: str = typer.Option("", help="Only letters of this stream (e.g. cdb:orders)."),
    limit: int = typer.Option(50, min=1, help="The newest this many."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """The newest dead letters: id, time, stream, group, event id, reason, replayed as."""
    letters = _run(lambda redis: list_letters(redis, stream=stream, limit=limit))
    for letter in letters:
        row: dict[str, Any] = letter.as_dict()
        if as_json:
            typer.echo(json.dumps(row))
            continue
        replayed = f"  replayed as {row['replayed_as']}" if row["replayed_as"] else ""
        typer.echo(
            f"{row['id']}  {row['at_utc']}  {row['stream']}  {row['group']}"
            f"  {row['event_id'] or '-'}  {row['reason'][:120]}{replayed}"
        )
    if not letters and not as_json:
        typer.echo("no dead letters")


@app.command("show")
def show_command(letter_id: str = typer.Argument(..., help="The dead letter's id.")) -> None:
    """One dead letter in full, its payload as JSON."""
    letter = _run(lambda redis: show(redis, letter_id))
    typer.echo(json.dumps(letter.as_dict(with_payload=True), indent=2))


@app.command("replay")
def replay_command(letter_id: str = typer.Argument(..., help="The dead letter's id.")) -> None:
    """Put the event back on its stream; a second replay of the same event id does nothing."""
    outcome = _run(lambda redis: replay(redis, letter_id))
    letter = outcome.letter
    if outcome.published:
        typer.echo(
            f"replayed event {letter.event_id} to {letter.stream} as entry {outcome.entry_id}"
        )
    else:
        typer.echo(
            f"event {letter.event_id} was replayed before (entry {outcome.entry_id}):"
            " nothing published"
        )
