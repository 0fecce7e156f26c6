"""The supervisor of a node's long-lived loops: a loop that raises is logged and restarted with backoff, and
the node's status names it until it has run healthily again; nothing it owns outlives `close`."""

from __future__ import annotations

import asyncio
import logging

import pytest

from raftswarm import supervision
from raftswarm.manager.reconciler import Reconciler
from raftswarm.store import ReplicatedStore, create
from raftswarm.store.state import encode_transaction
from raftswarm.supervision import Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_backoff_wait(monkeypatch):
    monkeypatch.setattr(supervision, "FIRST_BACKOFF", 0.0)


async def test_a_loop_that_raises_once_is_logged_restarted_and_reported_until_healthy(caplog):
    clock = Clock()
    loops = Supervisor(clock)
    runs = 0
    running = asyncio.Event()

    async def reconciler() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("round failed")
        running.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR):
        loops.start("reconciler", reconciler)
        await asyncio.wait_for(running.wait(), 5)
    assert runs == 2  # restarted, not lost
    assert "reconciler failed: restarting it" in caplog.text and "RuntimeError: round failed" in caplog.text
    assert "round failed" in loops.report()["reconciler"]
    clock.now += supervision.HEALTHY_AFTER
    assert loops.report() == {}  # ran healthily long enough: the node no longer names it
    await loops.close()
    assert all(task.done() for task in loops._tasks.values())


async def test_a_loop_that_keeps_failing_backs_off_and_stays_reported(monkeypatch):
    monkeypatch.setattr(supervision, "FIRST_BACKOFF", 0.001)
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(supervision.asyncio, "sleep", recorded_sleep)
    loops = Supervisor(Clock())
    attempts = 0
    done = asyncio.Event()

    async def broken() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 8:
            done.set()
        raise OSError("disk full")

    loops.start("dispatcher", broken)
    await asyncio.wait_for(done.wait(), 5)
    await loops.close()
    assert waits[:5] == [0.001, 0.002, 0.004, 0.008, 0.016]  # doubling, not a tight loop
    assert f"failed {attempts} time(s)" in loops.report()["dispatcher"]  # every failure counted
    assert "OSError: disk full" in loops.report()["dispatcher"]


async def test_a_loop_that_returns_is_restarted_too_and_close_cancels_everything():
    loops = Supervisor(Clock())
    starts = 0
    second = asyncio.Event()

    async def returns_early() -> None:
        nonlocal starts
        starts += 1
        if starts >= 2:
            second.set()
            await asyncio.Event().wait()

    loops.start("key-manager", returns_early)
    await asyncio.wait_for(second.wait(), 5)
    assert loops.report()["key-manager"].endswith("last: returned")
    with pytest.raises(ValueError, match="already supervised"):
        loops.start("key-manager", returns_early)
    await loops.close()
    assert starts == 2


async def test_a_loop_that_finishes_is_not_restarted_when_it_returns_but_is_when_it_fails():
    loops = Supervisor(Clock())
    starts = 0
    ended = asyncio.Event()

    async def session() -> None:
        nonlocal starts
        starts += 1
        if starts == 1:
            raise ConnectionError("manager gone")
        ended.set()  # the swarm removed the node: the session ends for good

    loops.start("session", session, finishes=True)
    await asyncio.wait_for(ended.wait(), 5)
    for _ in range(10):
        await asyncio.sleep(0)
    assert starts == 2 and loops.report() == {}
    await loops.close()


class _LeaderDriver:
    """What the reconciler reads of a Raft driver on a leader; proposals apply at once. Its first read
    barrier raises what no code expects, as a bug would."""

    def __init__(self, store) -> None:
        self.store = store
        self.is_leader = True
        self.barriers = 0

    async def read_barrier(self, timeout: float | None = None) -> int:
        self.barriers += 1
        if self.barriers == 1:
            raise KeyError("a bug on the way in")
        return self.store.state.version

    async def propose(self, payload: bytes, timeout: float | None = None):
        return self.store.apply(self.store.state.version + 1, payload)


async def test_the_real_reconciler_raising_once_is_restarted_and_then_reconciles():
    store = ReplicatedStore()
    driver = _LeaderDriver(store)
    store.attach(driver)
    spec = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "9"]}},
            "Mode": {"Replicated": {"Replicas": 2}}}
    store.apply(1, encode_transaction([create("services", "web", {"ID": "web", "Spec": spec})]))
    loops = Supervisor(Clock())
    loops.start("reconciler", Reconciler(store, driver).run)
    try:
        for _ in range(500):
            if len(store.state.list("tasks")) == 2:
                break
            await asyncio.sleep(0.01)
        assert driver.barriers >= 2  # it raised, and was started again
        assert len(store.state.list("tasks")) == 2  # and, restarted, it reconciled: one task per replica
        assert "KeyError" in loops.report()["reconciler"]
    finally:
        await loops.close()
