"""The public surface is pinned; the client and simulator stand apart from the server."""

from __future__ import annotations

import subprocess
import sys

import fleetplane.client
import fleetplane.sim

CLIENT_ALL = [
    "APIError",
    "AsyncClient",
    "AuthError",
    "Authentication",
    "BadRequestError",
    "Client",
    "ClientError",
    "ConfigPull",
    "ConflictError",
    "Enrollment",
    "ForbiddenError",
    "HeartbeatResult",
    "HeartbeatSchedule",
    "NotFoundError",
    "PayloadTooLargeError",
    "PolicyMerge",
    "PolicyPull",
    "PolicyRule",
    "PolicySet",
    "RateLimitedError",
    "ServerError",
    "TightenOnlyViolationError",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "apply_policy_mode",
    "config_apply_failed_event",
    "dump_workspace_yaml",
    "is_retryable",
    "iso_timestamp",
    "merge_local_policy",
    "read_workspace_file",
    "tighten_only_warning_event",
    "workspace_config_hash",
    "workspace_updated_event",
    "workspace_warning_event",
    "write_workspace_file",
]
SIM_ALL = [
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


def test_client_all_is_pinned() -> None:
    assert fleetplane.client.__all__ == CLIENT_ALL
    for name in CLIENT_ALL:
        assert getattr(fleetplane.client, name) is not None
    public = {name for name in dir(fleetplane.client) if not name.startswith("_")}
    # Submodules are reachable but not re-exported names.
    assert public - set(CLIENT_ALL) <= {
        "agent",
        "errors",
        "events",
        "models",
        "policy",
        "schedule",
        "workspace",
    }


def test_sim_all_is_pinned() -> None:
    assert fleetplane.sim.__all__ == SIM_ALL


def test_every_client_error_is_one_tree() -> None:
    errors = [getattr(fleetplane.client, name) for name in CLIENT_ALL if name.endswith("Error")]
    assert all(issubclass(error, fleetplane.client.ClientError) for error in errors)
    assert issubclass(fleetplane.client.RateLimitedError, fleetplane.client.APIError)


def test_client_and_sim_import_no_server_code() -> None:
    program = (
        "import sys, fleetplane.client, fleetplane.client.agent, fleetplane.sim\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('fleetplane.'))\n"
        "print('\\n'.join(loaded))\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter, a fixed program
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    loaded = result.stdout.split()
    assert "fleetplane.client" in loaded
    assert "fleetplane.sim.fleet" in loaded
    forbidden = ("fleetplane.api", "fleetplane.services", "fleetplane.store", "fleetplane.settings")
    assert [name for name in loaded if name.startswith(forbidden)] == []
    domain = {name for name in loaded if name.startswith("fleetplane.domain")}
    assert domain <= {
        "fleetplane.domain",
        "fleetplane.domain.config_hash",
        "fleetplane.domain.errors",
        "fleetplane.domain.policy",
    }
