"""Docker's healthchecks for tasks: which check a task has, when its probes run inside its container, and what
their results make of it.

- `effective_healthcheck`: the service's ContainerSpec.Healthcheck merged over the image config's, as dockerd
  merges a container's config over its image's (moby daemon/commit.go `merge`): a field left empty or 0 takes
  the image's, and a Test of ["NONE"] (`--no-healthcheck`, a Dockerfile's `HEALTHCHECK NONE`) means none.
  Test is ["CMD", program, args...] or ["CMD-SHELL", command] (run by /bin/sh -c); durations are nanoseconds;
  what both leave 0 takes Docker's defaults (moby daemon/health.go).
- `Health`: the probe results of one container in, its status out (starting, healthy, unhealthy) -- no I/O, no
  clock of its own, as dockerd's `handleProbeResult` and `getInterval` decide. A container is starting until a
  probe succeeds; Retries consecutive failures make it unhealthy, but failures that start within StartPeriod of
  the container's start do not count while no probe has succeeded yet.
- `watch`: the I/O around it -- waits the interval, runs the probe in the container (`Container.exec`, killed
  at its timeout), feeds the result in, until the container is unhealthy.

Swarm mode acts on the status (moby daemon/cluster/executor/container/controller.go): a task with a check is
not running until healthy, and an unhealthy one is stopped and fails with `UNHEALTHY`; see `agent.agent`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..images.errors import ImageError
from ..images.store import ImageStore
from ..objects.defaults import NANOSECONDS

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_PERIOD = 0.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
"""dockerd's defaults (daemon/health.go: defaultProbeInterval, defaultProbeTimeout, defaultStartPeriod,
defaultStartInterval, defaultProbeRetries), in seconds, for what neither the spec nor the image sets."""
MAX_OUTPUT = 4096
"""dockerd's maxOutputLen: a probe's output is kept up to this many bytes, then "..." marks the cut."""
SHELL = ("/bin/sh", "-c")
"""What runs a CMD-SHELL test: dockerd's getShell on Linux. A swarm task's container config never carries the
image's SHELL (daemon/commit.go does not merge it), so it is always this."""
UNHEALTHY = "dockerexec: unhealthy container"
"""Why an unhealthy task failed: moby's ErrContainerUnhealthy (daemon/cluster/executor/container/errors.go),
after "task: non-zero exit (<code>): " as its exitError words it."""


class HealthStatus(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """A container's effective check, durations in seconds, defaults applied."""

    test: tuple[str, ...]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    start_period: float = DEFAULT_START_PERIOD
    start_interval: float = DEFAULT_START_INTERVAL
    retries: int = DEFAULT_RETRIES

    @property
    def argv(self) -> list[str]:
        """What a probe runs; empty for a test without a command (every probe of it fails, as in dockerd)."""
        command = list(self.test[1:])
        if self.test[0] == "CMD-SHELL" and command:
            return [*SHELL, *command]
        return command


def effective_healthcheck(spec: Mapping[str, Any] | None, image: Mapping[str, Any] | None) -> Healthcheck | None:
    """The check a container of ContainerSpec.Healthcheck `spec` and image config Healthcheck `image` runs (both
    as Docker's JSON has them: Test, Interval, Timeout, StartPeriod, StartInterval in ns, Retries), or None."""
    merged = dict(spec or {})
    for key, value in (image if isinstance(image, Mapping) else {}).items():
        if not merged.get(key):
            merged[key] = value
    test = merged.get("Test") or ()
    if not isinstance(test, (list, tuple)) or not test or test[0] == "NONE":
        return None
    if test[0] not in ("CMD", "CMD-SHELL"):
        # dockerd runs no probe for it ("Unknown healthcheck type"); its swarm executor would then wait for a
        # healthy event for ever. The task runs as one without a check instead.
        log.warning("healthcheck test type %r is not CMD, CMD-SHELL or NONE: no healthcheck", test[0])
        return None

    def given(key: str) -> int:
        """The merged field if it is a positive number (the spec is validated; an image config may hold anything)."""
        value = merged.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    return Healthcheck(
        test=tuple(str(word) for word in test),
        interval=given("Interval") / NANOSECONDS or DEFAULT_INTERVAL,
        timeout=given("Timeout") / NANOSECONDS or DEFAULT_TIMEOUT,
        start_period=given("StartPeriod") / NANOSECONDS or DEFAULT_START_PERIOD,
        start_interval=given("StartInterval") / NANOSECONDS or DEFAULT_START_INTERVAL,
        retries=given("Retries") or DEFAULT_RETRIES,
    )


def task_healthcheck(task: Mapping[str, Any], images: ImageStore) -> Healthcheck | None:
    """The effective check of `task`, whose image is in `images` (it is while a container of it exists)."""
    container_spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
    try:
        image_config = images.resolve(container_spec.get("Image") or "").config.get("config") or {}
    except ImageError as exc:
        log.warning("task %s: its image's healthcheck is unknown, only its service's applies: %s", task.get("ID"), exc)
        image_config = {}
    return effective_healthcheck(container_spec.get("Healthcheck"), image_config.get("Healthcheck"))


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe: its exit code (0 healthy; -1 it timed out or could not run, as dockerd records those), its
    output, and when it started and ended (monotonic seconds)."""

    exit_code: int
    output: str
    start: float
    end: float


class Health:
    """A container's health from its probe results: `record` each result, `next_probe_in` says when to run the
    next. `started_at` is when the container started, on the clock of the results' times."""

    def __init__(self, check: Healthcheck, started_at: float) -> None:
        self.check = check
        self.started_at = started_at
        self.status = HealthStatus.STARTING
        self.failing_streak = 0
        self.last: ProbeResult | None = None

    def next_probe_in(self, now: float) -> float:
        """Seconds from `now` (the end of the last probe, or the start) to the next probe: StartInterval while
        the container is starting within its start period, else Interval."""
        if self.status is HealthStatus.STARTING and now - self.started_at < self.check.start_period:
            return self.check.start_interval
        return self.check.interval

    def record(self, result: ProbeResult) -> HealthStatus:
        """The status once `result` is taken into account. Unhealthy is not final: a later success heals."""
        self.last = result
        if result.exit_code == 0:
            self.failing_streak = 0
            self.status = HealthStatus.HEALTHY
        elif self.status is not HealthStatus.STARTING or result.start - self.started_at >= self.check.start_period:
            self.failing_streak += 1
            if self.failing_streak >= self.check.retries:
                self.status = HealthStatus.UNHEALTHY
        return self.status


class Probed(Protocol):
    """A running container as probes need it (`runtime.containers.Container`)."""

    async def exec(self, argv: list[str], timeout: float, *, output_limit: int) -> tuple[int | None, bytes]: ...


async def probe(container: Probed, check: Healthcheck, clock: Callable[[], float] = time.monotonic) -> ProbeResult:
    """Run `check`'s test once in `container`."""
    start = clock()
    argv = check.argv
    if not argv:
        return ProbeResult(-1, "healthcheck has no command", start, clock())
    try:
        code, raw = await container.exec(argv, check.timeout, output_limit=MAX_OUTPUT + 1)
    except OSError as exc:  # the runtime could not even be asked (runc gone): a failed probe, as in dockerd
        return ProbeResult(-1, f"cannot run the healthcheck: {exc}", start, clock())
    output = raw[:MAX_OUTPUT].decode(errors="replace") + ("..." if len(raw) > MAX_OUTPUT else "")
    if code is None:
        exceeded = f"Health check exceeded timeout ({check.timeout:g}s)"
        return ProbeResult(-1, f"{exceeded}: {output}" if output else exceeded, start, clock())
    return ProbeResult(code, output, start, clock())


async def watch(
    container: Probed,
    health: Health,
    changed: Callable[[HealthStatus], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Probe `container` at `health`'s intervals, calling `changed` with each new status, until it is unhealthy
    (then return). One probe at a time; cancelling kills the one running."""
    while True:
        await asyncio.sleep(health.next_probe_in(clock()))
        before = health.status
        status = health.record(await probe(container, health.check, clock))
        if status is not before:
            changed(status)
        if status is HealthStatus.UNHEALTHY:
            return


def started_at(pid: int) -> float | None:
    """When process `pid` (a container's first process) started, on time.monotonic's clock; None if it is gone.
    From /proc, so that an agent that took a running container back counts its start period from the real start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    ticks = int(stat.rpartition(")")[2].split()[19])  # field 22, starttime: clock ticks after boot
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.monotonic() - max(age, 0.0)
