"""What owns a node's tasks: `Supervisor` for long-lived loops, restarted when they fail; `TaskOwner` for
tasks that run once (a connection's handler, a peer's sender), cancelled when their owner closes.

A control loop that raises is a bug or a fault outside the node (a full disk, a vanished namespace); either
way the node must not go on serving while silently no longer reconciling. The supervisor logs the failure
with its traceback, restarts the loop after a backoff (doubling from `FIRST_BACKOFF` to `MAX_BACKOFF`,
reset once the loop has run `HEALTHY_AFTER` seconds), and keeps what happened for the node's status
(`report`), so a loop that keeps failing is visible rather than looking healthy. A loop that returns is
restarted the same way (the control loops are meant to run until cancelled), unless it was started as one
that `finishes` (a worker's session ends when the swarm removes the node).

A task a `TaskOwner` started is not restarted: its exception is logged, with the owner's logger and label,
and the task forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

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


class TaskOwner:
    """Owns the tasks one object starts, so that none outlives the object's `close` and no failure goes unseen.

    `spawn` starts a named task on the running loop and holds a strong reference to it (the loop holds only a
    weak one) until it ends. A task that ends with an exception is logged on the owner's `logger` as
    "<label>: task <name> failed", with its traceback, and forgotten like any other. `len()` counts the tasks
    still alive.

    `close` cancels every task and returns once all have ended. From then on `spawn` refuses (RuntimeError,
    the coroutine closed unstarted): a task started after `close` would outlive it. Called from one of the
    owner's own tasks, `close` cancels and awaits the others but not the caller, which cannot wait for itself;
    the owner forgets it when it returns.
    """

    def __init__(self, label: str, logger: logging.Logger) -> None:
        self._label = label
        self._log = logger
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as a task called `name`, owned until it ends; RuntimeError once `close` was called."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._label} is closed: not starting task {name}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.error("%s: task %s failed", self._label, task.get_name(), exc_info=exc)

    async def close(self) -> None:
        """Cancel every task but the caller's own and wait until they have ended. Idempotent."""
        # One pass is enough: from here on nothing joins the set.
        self._closed = True
        others = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
