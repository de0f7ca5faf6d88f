"""Fleet simulator and load generator, on top of :mod:`fleetplane.client` (HTTP only).

``simulate`` builds a fleet through the operator API (an org, workspaces with a config, one
pre-registered runtime credential per runtime) with a realistic mix of runtime versions and
behaviours, then keeps it live: most runtimes reconcile to each config edit a few seconds after
their heartbeat reveals it, some stay behind, some report apply failures, some stop
heartbeating and go stale, and some never heartbeat at all.
"""

from fleetplane.sim.cli import sim_app, simulate_command
from fleetplane.sim.fleet import SimulationReport, simulate
from fleetplane.sim.plan import BEHAVIOUR_MIX, VERSION_MIX, Behaviour, RuntimePlan, plan_fleet

__all__ = [
    "BEHAVIOUR_MIX",
    "VERSION_MIX",
    "Behaviour",
    "RuntimePlan",
    "SimulationReport",
    "plan_fleet",
    "sim_app",
    "simulate",
    "simulate_command",
]
