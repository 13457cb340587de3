"""What tests share, one module per job (no test module imports another):

* ``processes``: a service as ``python -m``, mexc_sim, a server binary, free ports, ROOT
* ``polling``: ``eventually`` (and ``eventually_async``), the one way a test waits
* ``metrics``: Prometheus samples from /metrics
* ``credentials``: the test-only Redis passwords, ACL users and admin token
* ``events``: bus events (market, candle), the quick bus settings, group caught up
* ``sql``: reads of the books, an approval row, a seeded trading day
* ``pipeline``: the three trading services as processes, a restartable AOF Redis
* ``chart``: helm, the pinned tools, lookups in the rendered chart
* ``asgi``: an ASGI app served in-process; ``sandbox``: the image's read-only root
* ``notify_receiver``: a channel beyond the network boundary, the notifier's environment
* ``cluster``, ``node``, ``containers``: a real control plane, a real node, Docker images
  (``python -m tests.support.cluster`` runs the control plane for a contributor)
* ``kernel_worker``, ``crd_cases``: a tiny service on the kernel, the CRD's case table

The commonest names are re-exported here, so ``from tests.support import eventually``
works as it did when this package was one module.
"""

from tests.support.credentials import (
    ACL_PASSWORDS,
    ADMIN_TOKEN,
    REDIS_PASSWORD,
    acl_env,
    apply_acl_users,
    as_user,
)
from tests.support.events import FAST_BUS, candle, group_caught_up, market
from tests.support.metrics import sample_sum, scrape
from tests.support.pipeline import Pipeline, RedisServer
from tests.support.polling import eventually, eventually_async
from tests.support.processes import (
    ROOT,
    SIM_CLOCK,
    Daemon,
    ServiceProcess,
    SimProcess,
    binary,
    free_block,
    free_port,
)
from tests.support.sql import (
    approve,
    conninfo,
    publish_approved,
    query,
    scalar,
    seed_books,
    waiting_to_insert,
)

__all__ = [
    "ACL_PASSWORDS",
    "ADMIN_TOKEN",
    "FAST_BUS",
    "REDIS_PASSWORD",
    "ROOT",
    "SIM_CLOCK",
    "Daemon",
    "Pipeline",
    "RedisServer",
    "ServiceProcess",
    "SimProcess",
    "acl_env",
    "apply_acl_users",
    "approve",
    "as_user",
    "binary",
    "candle",
    "conninfo",
    "eventually",
    "eventually_async",
    "free_block",
    "free_port",
    "group_caught_up",
    "market",
    "publish_approved",
    "query",
    "sample_sum",
    "scalar",
    "scrape",
    "seed_books",
    "waiting_to_insert",
]
