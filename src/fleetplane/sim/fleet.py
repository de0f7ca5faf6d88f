"""The fleet simulator: build a fleet through the operator API, then keep it live.

One ``httpx.AsyncClient`` (one connection pool) carries every simulated runtime; each runtime
is a :class:`fleetplane.client.AsyncClient` holding its own ``fp_rt_`` credential over that
shared pool, and a semaphore bounds how many requests are in flight. A single scheduler loop
wakes at the next due runtime, so thousands of runtimes need no thousands of tasks, and a test
can drive the whole run in virtual time by injecting ``sleep`` and ``monotonic``.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from fleetplane.client._async import AsyncClient
from fleetplane.client._base import normalise_endpoint
from fleetplane.client.errors import ClientError
from fleetplane.client.schedule import HeartbeatSchedule, is_retryable
from fleetplane.sim.operator import OperatorAPI
from fleetplane.sim.plan import Behaviour, RuntimePlan, config_document, plan_fleet

__all__ = ["MAX_DURATION_SECONDS", "MAX_RUNTIMES", "MAX_WORKSPACES", "SimulationReport", "simulate"]

MAX_RUNTIMES = 10_000
MAX_WORKSPACES = 500
MAX_CONCURRENCY = 256
MAX_DURATION_SECONDS = 7 * 24 * 3600


@dataclass(slots=True)
class SimulationReport:
    """What the run created and did."""

    run_id: str
    org_id: str
    workspace_ids: list[str]
    runtime_ids: list[str] = field(default_factory=list)
    behaviours: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    heartbeats: int = 0
    applied: int = 0
    apply_failures: int = 0
    config_edits: int = 0
    retries: int = 0
    errors: int = 0


@dataclass(slots=True)
class _Runtime:
    """A simulated runtime's client and its own timetable."""

    plan: RuntimePlan
    client: AsyncClient
    session_id: str
    schedule: HeartbeatSchedule
    rng: random.Random
    active: bool = True
    beat_at: float = 0.0
    apply_at: float | None = None
    stop_at: float | None = None
    handled_hash: str | None = None

    def next_at(self) -> float:
        return min(self.beat_at, self.apply_at if self.apply_at is not None else self.beat_at)


@dataclass(frozen=True, slots=True)
class _Timing:
    heartbeat_seconds: float | None
    reconcile_delay: tuple[float, float]
    stop_after: tuple[float, float]


async def _bounded(semaphore: asyncio.Semaphore, work: Awaitable[None]) -> None:
    async with semaphore:
        await work


async def _gather_bounded(semaphore: asyncio.Semaphore, works: Iterable[Awaitable[None]]) -> None:
    await asyncio.gather(*(_bounded(semaphore, work) for work in works))


def _check_bounds(runtimes: int, workspaces: int, duration: float, concurrency: int) -> None:
    if not 1 <= runtimes <= MAX_RUNTIMES:
        raise ValueError(f"runtimes must be between 1 and {MAX_RUNTIMES}")
    if not 1 <= workspaces <= min(runtimes, MAX_WORKSPACES):
        raise ValueError(f"workspaces must be between 1 and min(runtimes, {MAX_WORKSPACES})")
    if not 0 <= duration <= MAX_DURATION_SECONDS:
        raise ValueError(f"duration must be between 0 (forever) and {MAX_DURATION_SECONDS} s")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")


class _Simulation:
    """One run: the fleet, its timetable and its counters."""

    def __init__(
        self,
        *,
        report: SimulationReport,
        runtimes: list[_Runtime],
        operator: OperatorAPI,
        timing: _Timing,
        semaphore: asyncio.Semaphore,
        monotonic: Callable[[], float],
    ) -> None:
        self.report = report
        self.runtimes = runtimes
        self.operator = operator
        self.timing = timing
        self.semaphore = semaphore
        self.monotonic = monotonic
        self.revision = 1

    def _interval(self, runtime: _Runtime, next_heartbeat_ms: int) -> float:
        if self.timing.heartbeat_seconds is None:
            return runtime.schedule.after_success(next_heartbeat_ms)
        # An explicit pace (demos, tests) still resets the backoff and gets the jitter.
        runtime.schedule.failures = 0
        return runtime.schedule.jittered(self.timing.heartbeat_seconds)

    async def start(self, runtime: _Runtime, now: float) -> None:
        """Register a session and send the first heartbeat with the config it starts on."""
        plan = runtime.plan
        if plan.behaviour is Behaviour.SILENT:
            runtime.active = False
            return
        await runtime.client.register_session(runtime.session_id, agent_type="fleetplane-sim")
        await self.beat(runtime, now)
        if plan.behaviour is Behaviour.STOPS:
            low, high = self.timing.stop_after
            runtime.stop_at = now + runtime.rng.uniform(low, high)

    async def beat(self, runtime: _Runtime, now: float) -> None:
        """Heartbeat; a new desired hash schedules this runtime's reaction to it."""
        try:
            result = await runtime.client.heartbeat(runtime.session_id)
        except ClientError as error:
            self._failed(runtime, error, now)
            return
        self.report.heartbeats += 1
        runtime.beat_at = now + self._interval(runtime, result.next_heartbeat_ms)
        desired = result.config_hash
        if runtime.client.applied_config_hash is None:
            # At start every runtime but the silent ones runs the current config.
            await self._apply(runtime, desired, now)
            return
        reacts = runtime.plan.behaviour in (Behaviour.RECONCILES, Behaviour.FAILS)
        if reacts and desired != runtime.handled_hash and runtime.apply_at is None:
            low, high = self.timing.reconcile_delay
            runtime.apply_at = now + runtime.rng.uniform(low, high)

    async def _apply(self, runtime: _Runtime, desired: str, now: float) -> None:
        try:
            await runtime.client.report_applied(desired)
        except ClientError as error:
            self._failed(runtime, error, now)
        # The event is what records the hash; only the heartbeat after it may have failed.
        if runtime.client.applied_config_hash == desired:
            runtime.handled_hash = desired
            self.report.applied += 1

    async def reconcile(self, runtime: _Runtime, now: float) -> None:
        """Pull the desired config and apply it, or report that applying it failed."""
        runtime.apply_at = None
        try:
            desired = await runtime.client.pull_config()
            if runtime.plan.behaviour is Behaviour.FAILS:
                await runtime.client.report_apply_failed(
                    desired.config_hash,
                    f"simulated failure applying revision {desired.config_revision}",
                )
                runtime.handled_hash = desired.config_hash
                self.report.apply_failures += 1
                return
        except ClientError as error:
            self._failed(runtime, error, now)
            return
        await self._apply(runtime, desired.config_hash, now)

    def _failed(self, runtime: _Runtime, error: ClientError, now: float) -> None:
        if is_retryable(error):
            self.report.retries += 1
            runtime.beat_at = now + runtime.schedule.after_failure(error)
            return
        # A revoked credential or a refused body will not get better by retrying.
        self.report.errors += 1
        runtime.active = False

    async def step(self, runtime: _Runtime, now: float) -> None:
        """Whatever is due for one runtime at ``now``."""
        if runtime.stop_at is not None and now >= runtime.stop_at:
            runtime.active = False
            return
        if runtime.apply_at is not None and now >= runtime.apply_at:
            await self.reconcile(runtime, now)
        if runtime.active and now >= runtime.beat_at:
            await self.beat(runtime, now)

    async def edit_configs(self, workspace_names: list[str]) -> None:
        """An operator edit: every workspace gets the next config revision."""
        self.revision += 1
        for workspace_id, name in zip(self.report.workspace_ids, workspace_names, strict=True):
            document = config_document(workspace=name, revision=self.revision)
            await self.operator.put_config(workspace_id, document)
        self.report.config_edits += 1

    async def run_live(
        self,
        *,
        duration: float,
        edit_after: float,
        edit_every: float,
        workspace_names: list[str],
        sleep: Callable[[float], Awaitable[object]],
        stop: asyncio.Event,
        progress: Callable[[str], None],
    ) -> None:
        """Wake at the next due runtime or edit until the duration ends (0: until stopped)."""
        started = self.monotonic()
        ends = started + duration if duration > 0 else float("inf")
        next_edit = started + edit_after if edit_after >= 0 else float("inf")
        while not stop.is_set():
            now = self.monotonic()
            if now >= ends:
                break
            if now >= next_edit:
                await self.edit_configs(workspace_names)
                progress(
                    f"config edit: revision {self.revision} in {len(workspace_names)} workspaces"
                )
                next_edit = now + edit_every if edit_every > 0 else float("inf")
            due = [runtime for runtime in self.runtimes if runtime.active]
            due = [runtime for runtime in due if runtime.next_at() <= now]
            await _gather_bounded(self.semaphore, (self.step(runtime, now) for runtime in due))
            upcoming = [runtime.next_at() for runtime in self.runtimes if runtime.active]
            wake = min([*upcoming, next_edit, ends])
            # Never spin: even an overdue wake-up yields for a moment.
            await sleep(max(0.01, wake - self.monotonic()))


async def simulate(
    endpoint: str,
    operator_token: str,
    runtimes: int,
    workspaces: int,
    *,
    duration: float = 60.0,
    concurrency: int = 32,
    seed: int | None = None,
    policy_mode: str | None = None,
    heartbeat_seconds: float | None = None,
    edit_after: float = 20.0,
    edit_every: float = 120.0,
    reconcile_delay: tuple[float, float] = (3.0, 15.0),
    stop_after: tuple[float, float] = (30.0, 90.0),
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] | None = None,
    monotonic: Callable[[], float] | None = None,
    stop: asyncio.Event | None = None,
) -> SimulationReport:
    """Create ``runtimes`` runtimes in ``workspaces`` workspaces and keep them live.

    Talks only to ``endpoint``. ``duration`` is in seconds after the fleet is built (0: until
    ``stop`` is set). ``heartbeat_seconds`` overrides the server's ``next_heartbeat_ms``;
    ``edit_after``/``edit_every`` time the operator's config edits (negative: none).
    """
    _check_bounds(runtimes, workspaces, duration, concurrency)
    say = progress or (lambda _message: None)
    clock = monotonic or time.monotonic
    seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
    run_id = uuid.uuid4().hex[:6]
    plans = plan_fleet(runtimes=runtimes, workspaces=workspaces, run_id=run_id, seed=seed)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(transport=transport, limits=limits, timeout=30.0) as http:
        operator = OperatorAPI(http, base_url=normalise_endpoint(endpoint), token=operator_token)
        org_id = await operator.create_org(f"simulation {run_id}")
        report = SimulationReport(run_id=run_id, org_id=org_id, workspace_ids=[])
        names = [f"sim-{run_id}-{index + 1:03d}" for index in range(workspaces)]
        for name in names:
            workspace_id = await operator.create_workspace(org_id, name, policy_mode)
            await operator.put_config(workspace_id, config_document(workspace=name, revision=1))
            report.workspace_ids.append(workspace_id)
        say(f"created {workspaces} workspaces in org {org_id}")

        fleet: list[_Runtime] = []
        every = max(1, runtimes // 10)

        async def create(plan: RuntimePlan) -> None:
            workspace_id = report.workspace_ids[plan.workspace_index]
            labels = {"simulation": run_id, "behaviour": str(plan.behaviour)}
            runtime_id, credential = await operator.create_runtime(
                workspace_id, plan.agent_id, labels
            )
            client = AsyncClient(
                endpoint,
                token=credential,
                workspace_id=workspace_id,
                agent_id=plan.agent_id,
                runtime_version=plan.version,
                http_client=http,
            )
            rng = random.Random(seed + plan.index)  # noqa: S311 - simulated timing only
            fleet.append(
                _Runtime(
                    plan=plan,
                    client=client,
                    session_id=f"{plan.agent_id}-{uuid.uuid4().hex[:8]}",
                    schedule=HeartbeatSchedule(random=rng.random),
                    rng=rng,
                )
            )
            report.runtime_ids.append(runtime_id)
            report.behaviours[str(plan.behaviour)] += 1
            report.versions[plan.version or "none"] += 1
            if len(fleet) % every == 0 or len(fleet) == runtimes:
                say(f"created {len(fleet)}/{runtimes} runtimes")

        await _gather_bounded(semaphore, (create(plan) for plan in plans))
        fleet.sort(key=lambda runtime: runtime.plan.index)

        simulation = _Simulation(
            report=report,
            runtimes=fleet,
            operator=operator,
            timing=_Timing(heartbeat_seconds, reconcile_delay, stop_after),
            semaphore=semaphore,
            monotonic=clock,
        )
        now = clock()
        await _gather_bounded(semaphore, (simulation.start(runtime, now) for runtime in fleet))
        say(f"fleet live: {report.heartbeats} runtimes heartbeating")
        await simulation.run_live(
            duration=duration,
            edit_after=edit_after,
            edit_every=edit_every,
            workspace_names=names,
            sleep=sleep or asyncio.sleep,
            stop=stop or asyncio.Event(),
            progress=say,
        )
    say(
        f"done: {report.heartbeats} heartbeats, {report.applied} applied, "
        f"{report.apply_failures} apply failures, {report.config_edits} config edits"
    )
    return report
