"""What the dispatcher's assignment stream sends a node when it is larger than an RPC frame, or when the node
lost an answer: pages that each fit a frame and together make the set, and the complete set again for a node
that asks for anything but the answer after the last one it was sent."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from test_configs import _config, _task
from test_dispatcher_core import A, _dispatcher

from raftswarm.agent.agent import _merged
from raftswarm.ca.certificates import NodeIdentity, NodeRole
from raftswarm.manager.dispatcher import ASSIGNMENT_PAGE_BYTES, paginate
from raftswarm.objects.kinds import CONFIGS, NODES, TASKS
from raftswarm.rpc.channel import MAX_RPC_FRAME
from raftswarm.store import put
from raftswarm.store.state import encode_transaction

ON_A = NodeIdentity(A, NodeRole.WORKER, "cluster")
CONFIG_BYTES = 1000 * 1024 - 1  # the largest config Docker takes


async def _stream(*operations) -> tuple[Any, asyncio.Task]:
    dispatcher, driver = _dispatcher(5.0, A)
    store = driver.store
    store.apply(store.state.version + 1, encode_transaction(list(operations)))
    return dispatcher, asyncio.create_task(dispatcher.run())


async def _first(dispatcher, wanted_tasks: int) -> dict[str, Any]:
    for _ in range(100):  # the dispatcher indexes the tasks once it runs
        first = await dispatcher.assignments(ON_A, {"timeout": 0})
        if len(first["tasks"]) == wanted_tasks or first.get("more"):
            return first
        await asyncio.sleep(0.01)
    raise AssertionError("the dispatcher never indexed the tasks")


async def _stop(running: asyncio.Task) -> None:
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_a_set_larger_than_a_frame_comes_in_pages_that_each_fit_one_and_make_the_set_together():
    # 3 tasks using 10 configs of ~1000 KiB: 10 MB, more than an 8 MiB frame holds.
    configs = [put(CONFIGS, f"c{i}", _config(f"c{i}", bytes([i]) * CONFIG_BYTES)) for i in range(10)]
    tasks = [put(TASKS, f"t{i}", _task(f"t{i}", A, *[f"c{j}" for j in range(i, 10, 3)])) for i in range(3)]
    dispatcher, running = await _stream(*configs, *tasks)
    try:
        pages = [await _first(dispatcher, 3)]
        while pages[-1]["more"]:
            pages.append(await dispatcher.assignments(ON_A, {"session": pages[-1]["session"], "timeout": 0}))
        assert len(pages) >= 3 and [p["page"] for p in pages] == list(range(len(pages)))
        assert {p["type"] for p in pages} == {"complete"}
        for page in pages:
            assert len(msgpack.packb(page, use_bin_type=True)) < MAX_RPC_FRAME
        merged = None
        sent_configs: set[str] = set()
        for page in pages:
            sent_configs |= {c["ID"] for c in page["configs"]}
            for task in page["tasks"]:  # never before the configs it uses
                assert {c["ConfigID"] for c in task["Spec"]["ContainerSpec"]["Configs"]} <= sent_configs
            merged = _merged(merged, page)
        assert sorted(t["ID"] for t in merged["tasks"]) == ["t0", "t1", "t2"]
        assert {c["ID"]: c["Data"] for c in merged["configs"]} == {
            f"c{i}": bytes([i]) * CONFIG_BYTES for i in range(10)
        }
        after = await dispatcher.assignments(ON_A, {"session": pages[-1]["session"], "timeout": 0})
        assert after["type"] == "incremental" and not after["more"] and not after["tasks"] and not after["configs"]
    finally:
        await _stop(running)


async def test_a_node_that_lost_an_answer_or_a_page_gets_the_complete_set_again():
    configs = [put(CONFIGS, f"c{i}", _config(f"c{i}", bytes([i]) * CONFIG_BYTES)) for i in range(6)]
    dispatcher, running = await _stream(*configs, put(TASKS, "t1", _task("t1", A, *[f"c{i}" for i in range(6)])))
    try:
        first = await _first(dispatcher, 1)
        assert first["more"]
        second = await dispatcher.assignments(ON_A, {"session": first["session"], "timeout": 0})
        # The node never got `second` (its connection broke): it asks with what `first` named.
        again = await dispatcher.assignments(ON_A, {"session": first["session"], "timeout": 0})
        assert (again["type"], again["page"]) == ("complete", 0) and again["session"] != second["session"]
        pages = [again]
        while pages[-1]["more"]:
            pages.append(await dispatcher.assignments(ON_A, {"session": pages[-1]["session"], "timeout": 0}))
        merged = None
        for page in pages:
            merged = _merged(merged, page)
        assert [t["ID"] for t in merged["tasks"]] == ["t1"] and len(merged["configs"]) == 6
        # And an answer lost after the set was whole: the complete set again, not nothing.
        empty = await dispatcher.assignments(ON_A, {"session": pages[-1]["session"], "timeout": 0})
        assert empty["type"] == "incremental" and not empty["tasks"]
        resent = await dispatcher.assignments(ON_A, {"session": pages[-1]["session"], "timeout": 0})
        assert resent["type"] == "complete"
    finally:
        await _stop(running)


def test_an_answer_within_the_budget_is_one_page_and_removals_come_first():
    answer = {
        "type": "incremental", "tasks": [{"ID": "t2"}], "removed_tasks": ["t1"], "secrets": [],
        "removed_secrets": ["s1"], "configs": [], "removed_configs": [],
    }
    (page,) = paginate(answer, ASSIGNMENT_PAGE_BYTES)
    assert page == {**answer, "page": 0, "more": False}
    big = {**answer, "configs": [{"ID": f"c{i}", "Data": bytes(100)} for i in range(5)]}
    pages = paginate(big, 250)
    assert pages[0]["removed_tasks"] == ["t1"] and pages[0]["removed_secrets"] == ["s1"]
    assert [len(p["configs"]) for p in pages] == [2, 2, 1] and pages[-1]["tasks"] == [{"ID": "t2"}]
    assert [p["more"] for p in pages] == [True, True, False]


def test_one_item_larger_than_the_budget_is_a_page_of_its_own():
    answer = {key: [] for key in ("tasks", "removed_tasks", "secrets", "removed_secrets", "configs", "removed_configs")}
    pages = paginate({**answer, "type": "complete", "secrets": [{"ID": "s", "Data": bytes(50)}]}, 10)
    assert len(pages) == 1 and len(pages[0]["secrets"]) == 1


async def test_the_pages_left_for_a_node_marked_down_are_dropped_and_it_gets_the_complete_set_back():
    configs = [put(CONFIGS, f"c{i}", _config(f"c{i}", bytes([i]) * CONFIG_BYTES)) for i in range(6)]
    dispatcher, driver = _dispatcher(0.02, A)  # heartbeats every 20 ms: silent, A is down within ~0.1 s
    store = driver.store
    store.apply(store.state.version + 1, encode_transaction([*configs, put(TASKS, "t1", _task("t1", A, "c0"))]))
    running = asyncio.create_task(dispatcher.run())
    try:
        first = await _first(dispatcher, 1)
        store.apply(store.state.version + 1, encode_transaction([put(TASKS, "t2", _task("t2", A, *[f"c{i}" for i in range(1, 6)]))]))
        paged = await dispatcher.assignments(ON_A, {"session": first["session"], "timeout": 1})
        assert paged["type"] == "incremental" and paged["more"]  # 5 configs of ~1000 KiB: pages are left
        for _ in range(200):
            if dispatcher.control.store.state.get(NODES, A).data["Status"]["State"] == "down":
                break
            await asyncio.sleep(0.01)
        assert A not in dispatcher._assignment_sessions
        back = await dispatcher.assignments(ON_A, {"session": paged["session"], "timeout": 0})
        assert (back["type"], back["page"]) == ("complete", 0)
    finally:
        await _stop(running)
