"""The test-only credentials: the Redis admin password, one Redis ACL user per service
(as in the chart and the demo, cdb.core.acl) and the admin token of the HTTP endpoints."""

from __future__ import annotations

from cdb.core.acl import ACCESS, acl_tokens, password_variable

REDIS_PASSWORD = "test-only-redis-password"
ACL_PASSWORDS = {user: f"test-only-{user.replace('_', '-')}-password" for user in ACCESS}
ADMIN_TOKEN = "test-only-admin-token"


def as_user(env: dict[str, str], user: str) -> dict[str, str]:
    """``env`` for a process logging in to Redis as ``user`` (a service's own ACL user)."""
    return {**env, "REDIS_USERNAME": user, "REDIS_PASSWORD": ACL_PASSWORDS[user]}


def acl_env() -> dict[str, str]:
    """What ``python -m cdb.core.acl`` reads to write the test ACL file."""
    return {
        "REDIS_PASSWORD": REDIS_PASSWORD,
        **{password_variable(user): password for user, password in ACL_PASSWORDS.items()},
    }


def apply_acl_users(host: str, port: int) -> None:
    """Create (or reset) every service's ACL user on a running test Redis."""
    import redis

    with redis.Redis(host=host, port=port, password=REDIS_PASSWORD) as admin:
        for user, password in ACL_PASSWORDS.items():
            admin.execute_command(
                "ACL", "SETUSER", user, "reset", "on", f">{password}", *acl_tokens(user)
            )
