"""When the next heartbeat goes out: the server's interval with jitter, or a capped backoff.

Shared by the sync and async heartbeat loops so both behave identically:

* after a success the delay is the server's ``next_heartbeat_ms`` with +-10% jitter, so a fleet
  restarted together does not beat in lockstep, and the failure count resets;
* after a retryable failure (transport error, 429, 5xx, a 2xx that is not the contract's JSON)
  the delay doubles from ``initial_backoff`` up to ``max_backoff``, also jittered, and is never
  shorter than the server's ``Retry-After``;
* any other failure (401, 403, 422, ...) is not retryable: the loop ends by raising it.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetplane.client.errors import (
    ClientError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)

__all__ = ["HeartbeatSchedule", "is_retryable"]

# A misconfigured server must not make runtimes beat in a hot loop or fall silent for days.
MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 3600.0


def is_retryable(error: ClientError) -> bool:
    """True for failures that may pass on their own: network, 429, 5xx, malformed 2xx."""
    return isinstance(
        error, TransportError | RateLimitedError | ServerError | UnexpectedResponseError
    )


@dataclass
class HeartbeatSchedule:
    """Computes heartbeat delays; ``random`` returns floats in [0, 1) and is injectable."""

    random: Callable[[], float] = field(default=_random.random)
    jitter: float = 0.1
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    failures: int = 0

    def jittered(self, seconds: float) -> float:
        """``seconds`` moved by up to +-``jitter`` (10%) at random."""
        return seconds * (1.0 + self.jitter * (2.0 * self.random() - 1.0))

    def after_success(self, next_heartbeat_ms: int) -> float:
        """Seconds until the next beat after a success; resets the backoff."""
        self.failures = 0
        interval = min(MAX_INTERVAL_SECONDS, max(MIN_INTERVAL_SECONDS, next_heartbeat_ms / 1000))
        return self.jittered(interval)

    def after_failure(self, error: ClientError) -> float:
        """Seconds until the retry after a retryable failure; doubles up to ``max_backoff``."""
        self.failures += 1
        base = min(self.max_backoff, self.initial_backoff * 2 ** (self.failures - 1))
        delay = min(self.max_backoff, self.jittered(base))
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            # The server knows its own load; waiting less than it asked only earns another 429.
            delay = max(delay, min(float(retry_after), MAX_INTERVAL_SECONDS))
        return delay
