"""`TaskOwner`, which owns the tasks a transport, a gossip node, a DNS server or the 2377 listener starts: a
task's failure is logged under its owner's name and the task forgotten; `close` leaves nothing running, and
nothing starts after it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from raftswarm.supervision import TaskOwner

OWNER_LOG = logging.getLogger("raftswarm.gossip.node")


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_task_that_fails_is_logged_under_its_owners_name_and_forgotten(caplog):
    owner = TaskOwner("gossip node n0", OWNER_LOG)

    async def tick() -> None:
        raise RuntimeError("tables out of step")

    with caplog.at_level(logging.ERROR):
        task = owner.spawn(tick(), "gossip-tick-n0")
        assert task.get_name() == "gossip-tick-n0" and len(owner) == 1
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # the owner hears of the end in a callback
    assert len(owner) == 0
    [record] = caplog.records
    assert record.name == "raftswarm.gossip.node"  # the owner's logger, so its log settings apply
    assert record.getMessage() == "gossip node n0: task gossip-tick-n0 failed"
    assert "RuntimeError: tables out of step" in caplog.text  # with the traceback


async def test_tasks_that_return_or_are_cancelled_are_forgotten_without_a_log_line(caplog):
    owner = TaskOwner("raft transport of node a", OWNER_LOG)

    async def done() -> None:
        return None

    with caplog.at_level(logging.DEBUG):
        returned = owner.spawn(done(), "raft-receive")
        cancelled = owner.spawn(forever(), "raft-send-1")
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(returned, cancelled, return_exceptions=True)
        await asyncio.sleep(0)
    assert len(owner) == 0
    assert caplog.records == []


async def test_close_cancels_every_task_and_returns_only_once_each_has_ended():
    owner = TaskOwner("2377 listener", OWNER_LOG)
    cleaned_up = []

    async def connection(n: int) -> None:
        try:
            await forever()
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits: close must wait for it
            cleaned_up.append(n)

    tasks = [owner.spawn(connection(n), f"cluster-connection-{n}") for n in range(3)]
    await asyncio.sleep(0)
    not_started = owner.spawn(connection(3), "cluster-connection-3")  # cancelled before it first runs
    await owner.close()
    assert all(task.cancelled() for task in [*tasks, not_started])
    assert sorted(cleaned_up) == [0, 1, 2]  # the one that never ran has no cleanup to run
    assert len(owner) == 0
    await owner.close()  # a second close finds nothing left to do


async def test_spawning_after_close_is_refused_and_the_coroutine_never_runs():
    owner = TaskOwner("DNS server in /run/netns/t1", OWNER_LOG)
    await owner.close()
    ran = False

    async def forward() -> None:
        nonlocal ran
        ran = True

    coroutine = forward()
    with pytest.raises(RuntimeError, match="DNS server in /run/netns/t1 is closed: not starting task dns-tcp"):
        owner.spawn(coroutine, "dns-tcp")
    assert coroutine.cr_frame is None  # closed, so no "never awaited" warning either
    await asyncio.sleep(0)
    assert not ran and len(owner) == 0


async def test_a_task_closing_its_own_owner_ends_the_others_and_carries_on():
    owner = TaskOwner("gossip node n0", OWNER_LOG)
    other = owner.spawn(forever(), "gossip-serve")
    carried_on = asyncio.Event()

    async def shut_down() -> None:
        await owner.close()  # must not cancel or wait for itself
        carried_on.set()

    closer = owner.spawn(shut_down(), "gossip-leave")
    await asyncio.wait_for(closer, 5)
    assert carried_on.is_set() and not closer.cancelled()
    assert other.cancelled()
    await asyncio.sleep(0)
    assert len(owner) == 0
