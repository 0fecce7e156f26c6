"""Which data-plane steps are failing, when each is tried again, and what the node shows of them.

The node's networking is level-triggered (`node.networking`): every pass compares what the kernel holds
with what it should hold and re-applies the difference, step by step (an overlay, a namespace's nftables
table, the gateway bridge). A step that fails is not tried again at every pass but after a backoff that
doubles up to `RETRY_MOST`, so a kernel that keeps refusing is not hammered; it is logged once per distinct
error (a warning), again when it is repaired (info), and listed by `problems()` meanwhile. Sans-I/O: the
clock is injected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0
"""Seconds before the first retry: a device the kernel is still tearing down is usually gone by then."""
RETRY_MOST = 30.0
"""The longest wait between retries: what a fix (installing nftables, freeing a VNI) waits at worst."""


@dataclass
class _Failure:
    what: str
    error: str
    attempts: int
    due: float


class Repairs:
    """The failing steps, by key (any hashable naming one step, e.g. ("overlay", network_id))."""

    def __init__(
        self, first: float = RETRY_FIRST, most: float = RETRY_MOST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.first = first
        self.most = most
        self._clock = clock
        self._failures: dict[Hashable, _Failure] = {}

    def due(self, key: Hashable) -> bool:
        """Whether the step should be tried now: it never failed, or its backoff is over."""
        failure = self._failures.get(key)
        return failure is None or self._clock() >= failure.due

    def failed(self, key: Hashable, what: str, error: str) -> None:
        """The step `what` (words for a user: "overlay of network x") failed with `error`."""
        previous = self._failures.get(key)
        attempts = 1 if previous is None else previous.attempts + 1
        wait = min(self.first * 2 ** (attempts - 1), self.most)
        self._failures[key] = _Failure(what, error, attempts, self._clock() + wait)
        if previous is None or previous.error != error:
            log.warning("%s failed, retrying with backoff: %s", what, error)
        else:
            log.debug("%s failed again (attempt %d): %s", what, attempts, error)

    def succeeded(self, key: Hashable) -> None:
        failure = self._failures.pop(key, None)
        if failure is not None:
            log.info("%s repaired after %d failed attempt(s)", failure.what, failure.attempts)

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Forget the failures of steps no longer wanted (the task ended, the network went)."""
        wanted = set(keys)
        for key in [k for k in self._failures if k not in wanted]:
            del self._failures[key]

    def next_due(self) -> float | None:
        """When the earliest failed step may be tried again (on the injected clock), or None."""
        return min((f.due for f in self._failures.values()), default=None)

    def problems(self) -> list[str]:
        """One line per failing step, for a user: what, why, and how often it was tried."""
        return [
            f"{f.what}: {f.error} (failed {f.attempts} time{'s' if f.attempts > 1 else ''}; retrying)"
            for f in sorted(self._failures.values(), key=lambda f: f.what)
        ]
