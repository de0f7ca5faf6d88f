"""The demo fleet `make run` starts with: every health and drift state on show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleetplane.domain.config_hash import config_hash
from fleetplane.services import accounts, credentials, runtimes, workspaces
from fleetplane.store.models import User

DEMO_EMAIL = "demo@fleetplane.local"
DEMO_PASSWORD = "fleetplane-demo"  # noqa: S105 - a published demo login, printed by `make run`


@dataclass(frozen=True)
class DemoLogin:
    """What `fleetplane demo` prints."""

    email: str
    password: str
    operator_token: str
    created: bool


_WORKSPACES = [
    ("Production", "authoritative", {"lanes": [{"name": "Operations: Runtime", "wip_limit": 2}]}),
    ("CI runners", "tighten-only", {"lanes": [{"name": "CI", "wip_limit": 4}], "ci": True}),
    ("Laptops", "authoritative", {"lanes": [{"name": "Framework: Core", "wip_limit": 1}]}),
]

# (agent id suffix, version, minutes since heartbeat or None, reports desired hash?)
_RUNTIMES = [
    ("api-1", "3.12.6", 0.5, True),
    ("api-2", "3.12.6", 1, True),
    ("api-3", "3.12.6", 2, False),
    ("worker-1", "3.7.0", 12, True),
    ("worker-2", "3.5.1", 1, True),
    ("legacy-1", "3.3.0", 3, True),
    ("batch-1", "3.12.6", 240, True),
    ("edge-1", None, None, False),
]


def seed(session: Session, *, now: datetime) -> DemoLogin:
    """Fill an empty database with a demo org; on a non-empty one only issue a fresh token."""
    existing = session.scalar(select(User).where(User.email == DEMO_EMAIL))
    if existing is not None:
        _, token = accounts.create_operator_token(session, user=existing, name="demo", now=now)
        return DemoLogin(DEMO_EMAIL, DEMO_PASSWORD, token, created=False)
    if session.scalar(select(func.count()).select_from(User).where(User.email != "admin")):
        raise RuntimeError("the database already holds users; the demo fills only an empty one")
    user = accounts.create_user(
        session, email=DEMO_EMAIL, password=DEMO_PASSWORD, is_superuser=True, actor="demo", now=now
    )
    _, token = accounts.create_operator_token(session, user=user, name="demo", now=now)
    org = workspaces.create_org(session, name="Acme Robotics", owner=user, now=now)
    for index, (name, mode, document) in enumerate(_WORKSPACES):
        workspace = workspaces.create_workspace(
            session,
            org=org,
            name=name,
            policy_mode=mode,
            dev_override_until=None,
            actor=user.email,
            now=now,
        )
        previous_hash = workspace.config_hash
        workspaces.store_config(
            session, workspace=workspace, document=document, actor=user.email, now=now
        )
        desired_hash = config_hash(document)
        workspaces.put_workspace_policy(
            session,
            workspace=workspace,
            policy={
                "default_decision": "allow",
                "rules": [
                    {"id": "shell.exec", "decision": "deny", "reason": "no shell in agents"},
                ],
            },
            actor=user.email,
            now=now,
        )
        credentials.regenerate_api_key(session, workspace=workspace, actor=user.email, now=now)
        caller = runtimes.RuntimeCaller(workspace=workspace, runtime=None)
        for suffix, version, minutes, aligned in _RUNTIMES[: len(_RUNTIMES) - index]:
            agent_id = f"{name.lower().replace(' ', '-')}-{suffix}"
            if minutes is None:
                credentials.preregister_runtime(
                    session,
                    workspace=workspace,
                    agent_id=agent_id,
                    labels={"site": "demo"},
                    actor=user.email,
                    now=now,
                )
                continue
            runtimes.record_heartbeat(
                session,
                caller=caller,
                heartbeat=runtimes.Heartbeat(
                    workspace_id=workspace.id,
                    session_id=f"{agent_id}-s1",
                    agent_id=agent_id,
                    runtime_version=version,
                    config_hash=desired_hash if aligned else previous_hash,
                ),
                now=now - timedelta(minutes=minutes),
            )
    return DemoLogin(DEMO_EMAIL, DEMO_PASSWORD, token, created=True)
