"""`fleetplane serve` as a real subprocess on a free local port, for fault-injection tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
FLEETPLANE = Path(sys.executable).parent / "fleetplane"
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """One `fleetplane serve` process and where its output goes."""

    port: int
    env: dict[str, str]
    log_path: Path
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The base URL the server listens on."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and wait until /healthz answers."""
        command = [str(FLEETPLANE), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("FLEETPLANE_")
        }
        environment.update(self.env)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            command, cwd=self.log_path.parent, env=environment, stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.read_log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not start in {START_TIMEOUT} s:\n{self.read_log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server (and its workers): no shutdown hook runs."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.workers > 1:
            # Workers are children of the supervisor; SIGKILL does not reach them through it.
            for child in _children(self.process.pid):
                _signal(child, signal.SIGKILL)
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait for a clean shutdown (SIGKILL after 15 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def read_log(self) -> str:
        """Everything the process wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _signal(pid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signum)


@contextmanager
def running(
    tmp_path: Path, env: dict[str, str], *, name: str = "server", workers: int = 1
) -> Iterator[Server]:
    """A started server, always stopped afterwards."""
    server = Server(port=free_port(), env=env, log_path=tmp_path / f"{name}.log", workers=workers)
    server.start()
    try:
        yield server
    finally:
        server.stop()
