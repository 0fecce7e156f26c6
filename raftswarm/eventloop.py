"""The event loop a node process runs on: uvloop's (libuv) where it is installed, else asyncio's own; and
`tune_collector`, which a long-running process calls before it: its imported heap frozen, fewer collections.

uvloop runs the same asyncio code with less CPU per wake-up, socket read and write, which is most of what a
replicated write costs a manager (`python3 -m bench raft`). `RAFTSWARM_EVENT_LOOP=asyncio` chooses asyncio's
loop anyway (to compare, or to rule the loop out when chasing a bug); any other value is refused. Code that
runs on it must not depend on one loop's timing: see `tlsaccept` for the one place where that mattered.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import InvalidInput

T = TypeVar("T")

CHOICE = "RAFTSWARM_EVENT_LOOP"
LOOPS = ("uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default (chosen, or uvloop not installed)."""
    chosen = os.environ.get(CHOICE, "uvloop")
    if chosen not in LOOPS:
        raise InvalidInput(f"{CHOICE}={chosen!r}: choose one of {', '.join(LOOPS)}")
    if chosen == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`asyncio.run(make())` on the chosen loop. The loop is chosen (a bad choice refused) before `make` is
    called, so a refused start has made nothing."""
    factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(make())


YOUNG_THRESHOLD = 20_000
"""Allocations (net of frees) between two collections of the youngest generation; CPython's default is 700.
Each tenth of those collections also collects the middle generation, and each tenth of those (`OLDER_THRESHOLD`
here, 20 and 20) the whole heap. With the defaults a node ran a full collection every ~70,000 allocations, a
few hundred Raft writes: `bench raft`, 4 runs each way alternating, raftswarm's sequential p50 1.50-1.80 ms
against 1.44-1.63 ms with these, p99 3.16-4.07 ms against 2.77-3.25 ms. Garbage in reference cycles lives
longer before it is freed; a node makes little of it."""
OLDER_THRESHOLD = 20


def tune_collector() -> None:
    """Once the imports are done: move every object alive now -- most of a node's heap -- out of the garbage
    collector's generations (`gc.freeze`), so a full collection walks only what the process made since (under
    load, full collections of the whole heap were what held writes up: `bench raft`, 64 in flight, p99 68-75 ms
    before, 27-29 ms after); and collect less often (`YOUNG_THRESHOLD`). The frozen objects are never freed,
    which for modules and classes they would not be anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)


def name() -> str:
    """Which loop `run` would use: "uvloop" or "asyncio"."""
    return "asyncio" if loop_factory() is None else "uvloop"
