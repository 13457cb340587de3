"""Who may read and write what on the bus: one Redis 7 ACL user per service.

The single source of the rules: the chart's Redis writes its ACL file with
``python -m cdb.core.acl`` (an init container of the same image), the demo and the tests
apply the same rules. A service's user

* reads (consumer-group commands, no ``XADD``) only the streams it consumes,
* appends (``XADD``) only to the streams it owns, plus ``cdb:dead_letter``,
* touches only its own bookkeeping keys (``cdb:done:<group>:*``, ``cdb:attempts:<group>:*``),

so execution_service cannot forge a decision, signal_engine cannot forge an order and no
service but the operator and the owner's console can write ``cdb:control``; only the
console answers held orders (``cdb:approval_decisions``). The ``default`` user (the admin
password) stays for Redis's own probes, backups and the operator's tools.

``python -m cdb.core.acl FILE`` writes the ACL file from ``REDIS_PASSWORD`` (default
user) and ``REDIS_PASSWORD_<USER>`` (one per user, upper case), mode 0600 from the start.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cdb.core.events import Stream

__all__ = [
    "ACCESS",
    "Access",
    "acl_file",
    "acl_rules",
    "acl_tokens",
    "password_variable",
    "write_acl_file",
]

CONSUME = (
    "+xreadgroup +xack +xclaim +xautoclaim +xpending +xgroup|create +xinfo|groups"
    " +xinfo|stream +xrange +xrevrange +xlen"
)
CONNECTION = "+ping +hello +select +client|setname +client|getname +client|id +multi +exec +discard"
BROWSE = "+xrange +xrevrange +xread +xlen +xinfo|stream +xinfo|groups"
BOOKKEEPING = "+get +set +exists +del +incr +incrby +expire"


@dataclass(frozen=True)
class Access:
    """The streams a user reads and appends to, and its own extra key patterns."""

    reads: tuple[Stream, ...] = ()
    writes: tuple[Stream, ...] = ()
    keys: tuple[str, ...] = ()
    groups: tuple[str, ...] = field(default=())  # consumer groups whose bookkeeping it owns
    browse_only: bool = False  # reads without consumer groups (no XREADGROUP, XACK, …)


def _service(name: str, reads: Iterable[Stream], writes: Iterable[Stream]) -> Access:
    return Access(
        reads=tuple(reads),
        writes=(*writes, Stream.DEAD_LETTER),
        groups=(name,),
    )


S = Stream
ACCESS: dict[str, Access] = {
    "bot_ws": _service("bot_ws", [S.CONTROL], [S.MARKET_DATA, S.CANDLES]),
    "bot_rest": _service("bot_rest", [], []),
    "signal_engine": _service("signal_engine", [S.MARKET_DATA, S.CONTROL], [S.SIGNALS]),
    "risk_manager": _service(
        "risk_manager",
        [S.SIGNALS, S.ORDER_RESULTS, S.ML_SIGNALS, S.CONTROL, S.APPROVAL_DECISIONS],
        [S.ORDERS, S.ALERTS, S.APPROVALS],
    ),
    "execution_service": _service(
        "execution_service",
        [S.ORDERS, S.CANDLES, S.MARKET_DATA, S.CONTROL],
        [S.ORDER_RESULTS, S.ALERTS],  # alerts: a position mismatch with the venue
    ),
    "ml_advisor": _service("ml_advisor", [S.CANDLES, S.MARKET_DATA, S.CONTROL], [S.ML_SIGNALS]),
    # tells the owner: reads what happened (and what the bus gave up on), writes nothing
    "notifier": _service(
        "notifier", [S.ALERTS, S.ORDER_RESULTS, S.CONTROL, S.APPROVALS, S.DEAD_LETTER], []
    ),
    "operator": Access(writes=(S.CONTROL,), keys=("cdb:operator:published:*",)),
    # the owner's console (and `cdb approve`/`veto`): answers held orders and, in the
    # demo, pauses or changes limits through the control path; reads nothing on the bus
    "console": Access(writes=(S.APPROVAL_DECISIONS, S.CONTROL)),
    # the demo's view and `cdb status`: read every stream, write nothing
    "viewer": Access(reads=tuple(s for s in Stream), browse_only=True),
}


def password_variable(user: str) -> str:
    """The environment variable the ACL writer reads a user's password from."""
    return f"REDIS_PASSWORD_{user.upper()}"


def acl_tokens(user: str) -> list[str]:
    """The ACL rules of ``user`` (no password) as ``ACL SETUSER`` arguments: the root
    permissions read, each selector (one argument, in parentheses) writes."""
    access = ACCESS[user]
    tokens = ["resetkeys", "resetchannels", "-@all", *CONNECTION.split()]
    if access.reads:
        commands = BROWSE if access.browse_only else CONSUME
        tokens += [*commands.split(), *(f"~{s.value}" for s in access.reads)]
    if access.writes:
        tokens.append("(" + " ".join(["+xadd", *(f"~{s.value}" for s in access.writes)]) + ")")
    own = [*access.keys]
    for group in access.groups:
        own += [f"cdb:done:{group}:*", f"cdb:attempts:{group}:*"]
    if own:
        tokens.append("(" + " ".join([*BOOKKEEPING.split(), *(f"~{k}" for k in own)]) + ")")
    return tokens


def acl_rules(user: str) -> str:
    """The ACL rules of ``user`` as one line of an ACL file."""
    return " ".join(acl_tokens(user))


def _hash(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_file(admin_password: str, passwords: Mapping[str, str]) -> str:
    """An ACL file: ``default`` with the admin password and every rule, one user per
    service with its own password (stored as SHA-256, never in clear)."""
    if not admin_password:
        raise ValueError("the default user needs a password")
    lines = [f"user default on {_hash(admin_password)} ~* &* +@all"]
    for user in ACCESS:
        password = passwords.get(user, "")
        if not password:
            raise ValueError(f"no password for redis user {user} ({password_variable(user)})")
        lines.append(f"user {user} on {_hash(password)} {acl_rules(user)}")
    return "\n".join(lines) + "\n"


def write_acl_file(path: Path, environ: Mapping[str, str]) -> None:
    """Write the ACL file private from its first byte (umask, then mode 0600)."""
    passwords = {user: environ.get(password_variable(user), "") for user in ACCESS}
    text = acl_file(environ.get("REDIS_PASSWORD", ""), passwords)
    old = os.umask(0o077)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        path.chmod(0o600)
    finally:
        os.umask(old)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m cdb.core.acl FILE", file=sys.stderr)
        return 2
    try:
        write_acl_file(Path(argv[0]), os.environ)
    except ValueError as error:
        print(f"acl error: {error}", file=sys.stderr)
        return 2
    print(f"wrote redis ACL file {argv[0]} ({len(ACCESS) + 1} users)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
