"""``cdb demo``: the whole stack offline on one machine, watched live or run headless."""

from cdb.demo.plan import DemoOptions, ServiceSpec, demo_plan
from cdb.demo.run import Demo, run_demo
from cdb.demo.supervisor import StartError, Supervisor

__all__ = [
    "Demo",
    "DemoOptions",
    "ServiceSpec",
    "StartError",
    "Supervisor",
    "demo_plan",
    "run_demo",
]
