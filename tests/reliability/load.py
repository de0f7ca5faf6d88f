"""A small, bounded load against real servers: runtimes heartbeat, an operator edits config.

Every answer is recorded, so a test can compare what the servers acknowledged with what the
database holds afterwards.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import BOOTSTRAP_TOKEN, auth

OPERATOR = auth(BOOTSTRAP_TOKEN)


@dataclass
class Fleet:
    """A workspace made through one server, with pre-registered runtimes."""

    org_id: str
    workspace_id: str
    api_key: str
    credentials: dict[str, str]  # agent id -> runtime credential

    @classmethod
    def create(cls, base_url: str, *, runtimes: int) -> Fleet:
        with httpx.Client(base_url=base_url, headers=OPERATOR, timeout=10) as http:
            org = http.post("/api/v1/orgs", json={"name": "reliability"}).json()
            ws = http.post(f"/api/v1/orgs/{org['id']}/workspaces", json={"name": "w"}).json()
            key = http.post(f"/api/v1/workspaces/{ws['id']}/api-key").json()["apiKey"]
            credentials = {}
            for n in range(runtimes):
                made = http.post(
                    f"/api/v1/workspaces/{ws['id']}/runtimes", json={"agentId": f"rt-{n}"}
                )
                assert made.status_code == 201, made.text
                credentials[f"rt-{n}"] = made.json()["credential"]
        return cls(org["id"], ws["id"], key, credentials)


@dataclass
class Record:
    """What the load saw."""

    acknowledged_beats: dict[str, datetime] = field(default_factory=dict)
    acknowledged_edits: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0
    slowest: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.slowest = max(self.slowest, seconds)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Load:
    """Heartbeat and config-edit threads against one or more servers, until stopped."""

    def __init__(
        self,
        fleet: Fleet,
        base_urls: list[str],
        *,
        edits: bool = True,
        timeout: float = 10.0,
        max_seconds: float = 60.0,
    ) -> None:
        self.fleet = fleet
        self.base_urls = base_urls
        self.record = Record()
        self.timeout = timeout
        self.deadline = time.monotonic() + max_seconds
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._beats, args=(agents,), daemon=True)
            for agents in _split(sorted(fleet.credentials), 2)
        ]
        if edits:
            self._threads.append(threading.Thread(target=self._edits, daemon=True))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending and wait for the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self.deadline

    def _send(
        self, http: httpx.Client, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            answer = http.request(method, url, **kwargs)
        except httpx.HTTPError:
            with self.record.lock:
                self.record.failures += 1
            time.sleep(0.05)
            return None
        self.record.count(answer.status_code, time.monotonic() - started)
        return answer

    def _beats(self, agents: list[str]) -> None:
        clients = [httpx.Client(base_url=url, timeout=self.timeout) for url in self.base_urls]
        try:
            for n in itertools.count():
                if not self._running():
                    return
                agent = agents[n % len(agents)]
                http = clients[n % len(clients)]
                answer = self._send(
                    http,
                    "POST",
                    "/api/v1/heartbeat",
                    json={"session_id": f"s-{agent}"},
                    headers=auth(self.fleet.credentials[agent]),
                )
                if answer is not None and answer.status_code == 200:
                    with self.record.lock:
                        self.record.acknowledged_beats[agent] = _parse_time(
                            answer.json()["server_time"]
                        )
                time.sleep(0.01)
        finally:
            for http in clients:
                http.close()

    def _edits(self) -> None:
        clients = [
            httpx.Client(base_url=url, timeout=self.timeout, headers=OPERATOR)
            for url in self.base_urls
        ]
        try:
            for n in itertools.count():
                if not self._running():
                    return
                document = {"edit": n, "lanes": [f"lane-{n % 7}"]}
                answer = self._send(
                    clients[n % len(clients)],
                    "PUT",
                    f"/api/v1/workspaces/{self.fleet.workspace_id}/config",
                    json=document,
                )
                if answer is not None and answer.status_code == 200:
                    revision = answer.json()["configRevision"]
                    with self.record.lock:
                        self.record.acknowledged_edits.append(
                            (revision["number"], revision["hash"], document)
                        )
                time.sleep(0.02)
        finally:
            for http in clients:
                http.close()


def _split(items: list[str], parts: int) -> list[list[str]]:
    return [items[i::parts] for i in range(parts) if items[i::parts]]


def all_pages(http: httpx.Client, path: str, key: str = "items") -> list[dict[str, Any]]:
    """Every item of a paged list."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = http.get(path, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body[key])
        cursor = body.get("nextCursor")
        if not cursor:
            return items
    raise AssertionError("too many pages")
