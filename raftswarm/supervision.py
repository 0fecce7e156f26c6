"""`Supervisor`: owns a node's long-lived loops, and restarts one that fails instead of losing it.

A control loop that raises is a bug or a fault outside the node (a full disk, a vanished namespace); either
way the node must not go on serving while silently no longer reconciling. The supervisor logs the failure
with its traceback, restarts the loop after a backoff (doubling from `FIRST_BACKOFF` to `MAX_BACKOFF`,
reset once the loop has run `HEALTHY_AFTER` seconds), and keeps what happened for the node's status
(`report`), so a loop that keeps failing is visible rather than looking healthy. A loop that returns is
restarted the same way (the control loops are meant to run until cancelled), unless it was started as one
that `finishes` (a worker's session ends when the swarm removes the node).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.1
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0
"""A loop that ran this long since its last start is healthy again: its next failure starts the backoff anew."""


@dataclass
class LoopHealth:
    failures: int = 0
    last_error: str = ""
    failing_since: float | None = None
    """Monotonic time of the first failure of the current run of failures; None while healthy."""
    running_since: float = 0.0
    """When the loop was last (re)started."""


class Supervisor:
    """Starts named loops with `start` and cancels them all with `close`; `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.health: dict[str, LoopHealth] = {}

    def start(self, name: str, loop: Callable[[], Awaitable[None]], *, finishes: bool = False) -> None:
        """Run `loop()` (a fresh coroutine each time) under supervision until `close`; with `finishes`, a return
        ends it for good (only a failure restarts it)."""
        if name in self._tasks:
            raise ValueError(f"a loop named {name!r} is already supervised")
        self.health[name] = LoopHealth()
        self._tasks[name] = asyncio.create_task(self._supervise(name, loop, finishes), name=name)

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]], finishes: bool) -> None:
        backoff = FIRST_BACKOFF
        health = self.health[name]
        while True:
            started = health.running_since = self._clock()
            try:
                await loop()
                if finishes:
                    health.failing_since = None
                    return
                problem = "returned"
                log.error("%s returned; it should run until stopped: restarting it", name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the point: no failure of a loop is lost
                problem = f"{type(exc).__name__}: {exc}"
                log.exception("%s failed: restarting it", name)
            if self._clock() - started >= HEALTHY_AFTER:
                backoff = FIRST_BACKOFF
                health.failing_since = None
            health.failures += 1
            health.last_error = problem
            if health.failing_since is None:
                health.failing_since = started
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def report(self) -> dict[str, str]:
        """Loop name -> what is wrong with it, for the loops that failed and have not run healthily since."""
        now = self._clock()
        problems = {}
        for name, health in self.health.items():
            if health.failing_since is not None and now - health.running_since < HEALTHY_AFTER:
                problems[name] = (
                    f"failed {health.failures} time(s) in {now - health.failing_since:.0f} s, last: {health.last_error}"
                )
        return problems

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
