"""The leader's log broker (`manager.logbroker`) and the agent's publisher (`agent.logpublisher`): nodes get only
their own tasks' subscriptions and may publish only their own tasks' lines; a subscription without follow
ends when every node has sent everything or could not; cancelled and unread subscriptions stop their
publishers; buffers push back instead of growing or losing lines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from log_harness import MANAGER1, WORKER1, WORKER2, WORKER3, BrokerHarness, FakeTaskLogs, read_all, until

from raftswarm.agent import logpublisher
from raftswarm.agent.logpublisher import MAX_BATCH_BYTES, MAX_BATCH_LINES, serve_log_subscriptions
from raftswarm.ca.certificates import NodeRole
from raftswarm.manager import logbroker
from raftswarm.rpc.logs import MAX_LINE_BYTES, MESSAGE_OVERHEAD
from raftswarm.rpc.channel import RpcError

T1, T2, T3 = "task1aaaaaaaaaaaaaaaaaaaaa", "task2bbbbbbbbbbbbbbbbbbbbb", "task3ccccccccccccccccccccc"


def line(task: str, text: str, when: float = 1.0, stream: str = "stdout") -> dict[str, Any]:
    return {"task": task, "stream": stream, "time": when, "line": text.encode()}


async def publish(client, subscription: str, messages: list[dict[str, Any]], close: bool = False) -> dict[str, Any]:
    return await client.call("logs.publish", {"subscription": subscription, "messages": messages, "close": close})


async def listen(client, serving: list[str] | None = None, timeout: float = 0) -> dict[str, Any]:
    return await client.call("logs.listen", {"timeout": timeout, "serving": serving or []})


# -- the broker ---------------------------------------------------------------------------------------------


async def test_each_node_is_handed_only_its_own_tasks_of_a_subscription():
    async with BrokerHarness() as h:
        manager = await h.connect(MANAGER1, NodeRole.MANAGER)
        subscribed = await manager.call(
            "logs.subscribe", {"tasks": {WORKER1: [T1], WORKER2: [T2, T3]}, "tail": 5, "follow": True, "since": 12.5}
        )
        worker1, worker2, worker3 = [await h.connect(n) for n in (WORKER1, WORKER2, WORKER3)]

        assert await listen(worker1) == {
            "subscriptions": [{"id": subscribed["id"], "tasks": [T1], "tail": 5, "follow": True, "since": 12.5}],
            "cancelled": [],
        }
        assert [s["tasks"] for s in (await listen(worker2))["subscriptions"]] == [[T2, T3]]
        assert await listen(worker3) == {"subscriptions": [], "cancelled": []}
        # Once serving it, a node is not handed it again.
        assert await listen(worker1, [subscribed["id"]]) == {"subscriptions": [], "cancelled": []}


async def test_a_waiting_listen_is_woken_by_a_new_subscription_for_its_node():
    async with BrokerHarness() as h:
        worker = await h.connect(WORKER1)
        waiting = asyncio.create_task(listen(worker, timeout=30))
        await until(lambda: h.broker._listening.get(WORKER1), "the worker to wait in logs.listen")
        subscription = h.broker.subscribe({WORKER1: [T1]})
        async with asyncio.timeout(20):
            answer = await waiting
        assert [s["id"] for s in answer["subscriptions"]] == [subscription]


async def test_a_worker_can_publish_only_its_own_tasks_lines_and_cannot_subscribe_or_read():
    async with BrokerHarness() as h:
        subscription = h.broker.subscribe({WORKER1: [T1], WORKER2: [T2]})
        worker1, worker2, worker3 = [await h.connect(n) for n in (WORKER1, WORKER2, WORKER3)]

        with pytest.raises(RpcError, match="is not one of node .* tasks") as refused:
            await publish(worker1, subscription, [line(T1, "mine"), line(T2, "injected into worker2's task")])
        assert refused.value.code == "unauthorized"
        with pytest.raises(RpcError, match="has no tasks in log subscription") as stranger:
            await publish(worker3, subscription, [line(T1, "from a node not in the subscription")])
        assert stranger.value.code == "unauthorized"
        for method, params in (
            ("logs.subscribe", {"tasks": {WORKER2: [T2]}}),
            ("logs.read", {"id": subscription, "timeout": 0}),
            ("logs.cancel", {"id": subscription}),
        ):
            with pytest.raises(RpcError) as denied:
                await worker1.call(method, params)
            assert denied.value.code == "unauthorized"

        await publish(worker1, subscription, [], close=True)
        await publish(worker2, subscription, [line(T2, "worker2's own")], close=True)
        messages, errors = await read_all(lambda: h.broker.read(subscription, 0))
        assert [(m["node"], m["task"], m["line"]) for m in messages] == [(WORKER2, T2, b"worker2's own")]
        assert errors == []


async def test_a_subscription_without_follow_ends_once_every_node_has_closed_it():
    async with BrokerHarness() as h:
        manager = await h.connect(MANAGER1, NodeRole.MANAGER)
        subscription = (await manager.call("logs.subscribe", {"tasks": {WORKER1: [T1], WORKER2: [T2]}}))["id"]
        worker1, worker2 = await h.connect(WORKER1), await h.connect(WORKER2)

        await publish(worker1, subscription, [line(T1, "one", 1.0), line(T1, "two", 2.0, "stderr")])
        await publish(worker2, subscription, [line(T2, "three", 1.5)], close=True)
        first = await manager.call("logs.read", {"id": subscription, "timeout": 0})
        assert [(m["node"], m["task"], m["stream"], m["time"], m["line"]) for m in first["messages"]] == [
            (WORKER1, T1, "stdout", 1.0, b"one"),
            (WORKER1, T1, "stderr", 2.0, b"two"),
            (WORKER2, T2, "stdout", 1.5, b"three"),
        ]
        assert first["done"] is False  # worker1 has not closed it yet

        await publish(worker1, subscription, [], close=True)
        assert await manager.call("logs.read", {"id": subscription, "timeout": 0}) == {
            "messages": [],
            "done": True,
            "errors": [],
        }
        with pytest.raises(RpcError) as gone:
            await manager.call("logs.read", {"id": subscription, "timeout": 0})
        assert gone.value.code == "not_found"


async def test_a_node_that_never_picks_the_subscription_up_does_not_hang_it():
    async with BrokerHarness(pickup_timeout=0.5) as h:  # a bound the live node beats by far
        subscription = h.broker.subscribe({WORKER1: [T1], WORKER2: [T2]})
        worker1 = await h.connect(WORKER1)
        await listen(worker1)
        await publish(worker1, subscription, [line(T1, "from the live node")], close=True)

        messages, errors = await read_all(lambda: h.broker.read(subscription, 30))
        assert [m["line"] for m in messages] == [b"from the live node"]
        assert errors == [f"node {WORKER2} is not available"]


async def test_a_node_that_goes_silent_after_picking_the_subscription_up_is_given_up_on():
    async with BrokerHarness(pickup_timeout=0.5) as h:
        subscription = h.broker.subscribe({WORKER1: [T1]})
        worker1 = await h.connect(WORKER1)
        await listen(worker1)
        await publish(worker1, subscription, [line(T1, "before it died")])  # and then nothing more

        messages, errors = await read_all(lambda: h.broker.read(subscription, 30))
        assert [m["line"] for m in messages] == [b"before it died"]
        assert errors == [f"node {WORKER1} is not available"]


async def test_a_node_down_in_the_store_is_given_up_on_at_once():
    async with BrokerHarness() as h:  # the default pickup bound: seconds
        h.set_node(WORKER2, "down")
        subscription = h.broker.subscribe({WORKER1: [T1], WORKER2: [T2]})
        worker1 = await h.connect(WORKER1)
        await publish(worker1, subscription, [line(T1, "up")], close=True)

        answer = await h.broker.read(subscription, 0)
        assert answer["done"] is True
        assert answer["errors"] == [f"node {WORKER2} is not available"]
        # The down node, should it come back, is not handed it.
        assert await listen(await h.connect(WORKER2)) == {"subscriptions": [], "cancelled": []}


async def test_cancelling_a_subscription_tells_the_nodes_serving_it_to_stop():
    async with BrokerHarness() as h:
        manager = await h.connect(MANAGER1, NodeRole.MANAGER)
        subscription = h.broker.subscribe({WORKER1: [T1]}, follow=True)
        worker1 = await h.connect(WORKER1)
        await listen(worker1)
        waiting = asyncio.create_task(listen(await h.connect(WORKER1), [subscription], timeout=30))
        await until(lambda: h.broker._listening.get(WORKER1), "the worker to wait in logs.listen")

        await manager.call("logs.cancel", {"id": subscription})
        async with asyncio.timeout(20):
            assert await waiting == {"subscriptions": [], "cancelled": [subscription]}
        assert await publish(worker1, subscription, [line(T1, "too late")]) == {"ok": False}
        with pytest.raises(RpcError, match="is gone"):
            await h.broker.read(subscription, 0)


async def test_a_subscription_nobody_reads_is_dropped_and_its_publishers_stopped():
    async with BrokerHarness(expire_after=0.0) as h:
        subscription = h.broker.subscribe({WORKER1: [T1]}, follow=True)
        await asyncio.sleep(0.01)
        worker1 = await h.connect(WORKER1)
        assert await listen(worker1, [subscription]) == {"subscriptions": [], "cancelled": [subscription]}
        assert await publish(worker1, subscription, [line(T1, "nobody reads this")]) == {"ok": False}


async def test_a_full_buffer_pushes_back_on_the_publisher_and_loses_nothing(monkeypatch):
    monkeypatch.setattr(logbroker, "PUBLISH_WAIT", 0.01)
    cost = 100 + MESSAGE_OVERHEAD
    async with BrokerHarness(max_buffered_bytes=3 * cost) as h:
        subscription = h.broker.subscribe({WORKER1: [T1]})
        worker1 = await h.connect(WORKER1)
        sent = [line(T1, f"{n:03d}".ljust(100, "."), float(n)) for n in range(8)]

        answers = [await publish(worker1, subscription, [message]) for message in sent[:4]]
        assert answers == [{"ok": True, "accepted": True}] * 3 + [{"ok": True, "accepted": False}]
        assert h.broker._subscriptions[subscription].buffered == 3 * cost  # the refused batch was not kept

        received = (await h.broker.read(subscription, 0))["messages"]
        for message in sent[3:]:
            while (answer := await publish(worker1, subscription, [message]))["accepted"] is False:
                received += (await h.broker.read(subscription, 0))["messages"]
            assert answer["ok"]
        await publish(worker1, subscription, [], close=True)
        rest, _ = await read_all(lambda: h.broker.read(subscription, 0))
        assert [m["line"] for m in received + rest] == [m["line"] for m in sent]


async def test_a_publisher_waiting_for_room_is_let_in_as_soon_as_the_reader_reads(monkeypatch):
    monkeypatch.setattr(logbroker, "PUBLISH_WAIT", 30.0)
    async with BrokerHarness(max_buffered_bytes=1) as h:
        subscription = h.broker.subscribe({WORKER1: [T1]})
        worker1 = await h.connect(WORKER1)
        await publish(worker1, subscription, [line(T1, "fills the buffer")])
        waiting = asyncio.create_task(publish(worker1, subscription, [line(T1, "waits for room")]))
        await asyncio.sleep(0.01)
        assert not waiting.done()

        assert [m["line"] for m in (await h.broker.read(subscription, 0))["messages"]] == [b"fills the buffer"]
        async with asyncio.timeout(20):
            assert await waiting == {"ok": True, "accepted": True}


async def test_a_read_answer_is_bounded(monkeypatch):
    monkeypatch.setattr(logbroker, "MAX_READ_BYTES", 2 * (100 + MESSAGE_OVERHEAD))
    async with BrokerHarness() as h:
        subscription = h.broker.subscribe({WORKER1: [T1]})
        worker1 = await h.connect(WORKER1)
        await publish(worker1, subscription, [line(T1, "x" * 100, float(n)) for n in range(5)], close=True)
        sizes = []
        for _ in range(5):
            answer = await h.broker.read(subscription, 0)
            sizes.append(len(answer["messages"]))
            if answer["done"]:
                break
        assert sizes == [2, 2, 1]


async def test_lines_must_be_bytes_of_a_known_stream_within_the_line_limit():
    async with BrokerHarness() as h:
        subscription = h.broker.subscribe({WORKER1: [T1]})
        worker1 = await h.connect(WORKER1)
        for bad, message in (
            ({**line(T1, "x"), "line": b"x" * (MAX_LINE_BYTES + 1)}, "over the"),
            ({**line(T1, "x"), "stream": "stdin"}, "stdout or stderr"),
            ({**line(T1, "x"), "line": "text"}, "must be bytes"),
        ):
            with pytest.raises(RpcError, match=message) as refused:
                await publish(worker1, subscription, [bad])
            assert refused.value.code == "invalid"


async def test_a_follower_refuses_with_the_leaders_address_and_a_lost_leadership_drops_subscriptions():
    async with BrokerHarness() as h:
        subscription = h.broker.subscribe({WORKER1: [T1]}, follow=True)
        h.driver.is_leader = False
        worker1 = await h.connect(WORKER1)
        with pytest.raises(RpcError, match="10.0.0.1:2377") as redirected:
            await listen(worker1)
        assert redirected.value.code == "not_leader"
        with pytest.raises(RpcError) as reader:
            await h.broker.read(subscription, 0)
        assert reader.value.code == "not_leader"

        h.driver.is_leader = True  # leading again: what was subscribed under the old term is gone
        assert await listen(worker1, [subscription]) == {"subscriptions": [], "cancelled": [subscription]}


async def test_an_agent_that_reconnects_resumes_after_the_last_line_it_sent():
    async with BrokerHarness() as h:
        subscription = h.broker.subscribe({WORKER1: [T1]}, tail=10, follow=True)
        worker1 = await h.connect(WORKER1)
        assert (await listen(worker1))["subscriptions"][0]["tail"] == 10
        await publish(worker1, subscription, [line(T1, "a", 1.0), line(T1, "b", 2.0)])

        again = await listen(await h.connect(WORKER1))  # a new connection, serving nothing yet
        assert [(s["id"], s["tail"], s["since"]) for s in again["subscriptions"]] == [(subscription, None, 2.0)]
        await publish(worker1, subscription, [line(T1, "b", 2.0), line(T1, "c", 3.0), line(T1, "d", 3.0)])
        assert [m["line"] for m in (await h.broker.read(subscription, 0))["messages"]] == [b"a", b"b", b"c", b"d"]


# -- the agent's publisher ---------------------------------------------------------------------------------


class FakeBrokerClient:
    """The agent's connection as the publisher uses it: scripted `logs.listen` answers (`hand`, `cancel`,
    `fail`), recorded `logs.publish` calls answered from `publish_answers` (then ok)."""

    def __init__(self) -> None:
        self._answers: asyncio.Queue[Any] = asyncio.Queue()
        self.listens: list[dict[str, Any]] = []
        self.published: list[dict[str, Any]] = []
        self.publish_answers: list[Any] = []

    def hand(self, subscription: dict[str, Any]) -> None:
        self._answers.put_nowait({"subscriptions": [subscription], "cancelled": []})

    def cancel(self, subscription_id: str) -> None:
        self._answers.put_nowait({"subscriptions": [], "cancelled": [subscription_id]})

    def fail(self, error: RpcError) -> None:
        self._answers.put_nowait(error)

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        assert params is not None
        if method == "logs.listen":
            self.listens.append(params)
            try:
                async with asyncio.timeout(params["timeout"]):
                    answer = await self._answers.get()
            except TimeoutError:
                return {"subscriptions": [], "cancelled": []}
            if isinstance(answer, RpcError):
                raise answer
            return answer
        assert method == "logs.publish"
        self.published.append(params)
        answer = self.publish_answers.pop(0) if self.publish_answers else {"ok": True, "accepted": True}
        if isinstance(answer, RpcError):
            raise answer
        return answer

    def lines(self, task: str | None = None) -> list[bytes]:
        return [m["line"] for p in self.published for m in p["messages"] if task is None or m["task"] == task]

    def serving(self) -> list[str]:
        return self.listens[-1]["serving"] if self.listens else []


def subscription(subscription_id: str = "sub1", tasks: tuple[str, ...] = (T1,), **options: Any) -> dict[str, Any]:
    return {"id": subscription_id, "tasks": list(tasks), "tail": None, "follow": False, "since": None, **options}


async def stop(serving: asyncio.Task[None], client: FakeBrokerClient) -> None:
    """End `serve_log_subscriptions` the way a broken connection does, and check it says so."""
    client.fail(RpcError("connection", "the connection to the manager broke"))
    with pytest.raises(RpcError, match="connection to the manager broke"):
        async with asyncio.timeout(20):
            await serving


async def test_a_publisher_sends_each_tasks_lines_in_order_in_bounded_batches_then_closes():
    client = FakeBrokerClient()
    logs = FakeTaskLogs(
        {
            T1: [("stdout", 1000.0 + n, f"line {n}".encode()) for n in range(3 * MAX_BATCH_LINES)],
            T2: [("stderr", 2000.0 + n, b"e" * 60_000) for n in range(40)],
        }
    )
    serving = asyncio.create_task(serve_log_subscriptions(client, logs))
    client.hand(subscription(tasks=(T1, T2), tail=50, since=999.5))
    await until(lambda: any(p["close"] for p in client.published), "the publisher to close the subscription")
    await stop(serving, client)

    assert sorted(logs.asked) == [(T1, 50, False, 999.5), (T2, 50, False, 999.5)]
    assert client.lines(T1) == [f"line {n}".encode() for n in range(3 * MAX_BATCH_LINES)]
    assert client.lines(T2) == [b"e" * 60_000] * 40
    assert [m["stream"] for p in client.published for m in p["messages"] if m["task"] == T2] == ["stderr"] * 40
    for published in client.published:
        assert published["subscription"] == "sub1"
        assert len(published["messages"]) <= MAX_BATCH_LINES
        assert sum(len(m["line"]) + MESSAGE_OVERHEAD for m in published["messages"]) <= MAX_BATCH_BYTES
    assert [p["close"] for p in client.published] == [False] * (len(client.published) - 1) + [True]


async def test_a_line_longer_than_the_brokers_limit_goes_in_pieces():
    client = FakeBrokerClient()
    long_line = bytes(range(256)) * (MAX_LINE_BYTES * 5 // 2 // 256)
    serving = asyncio.create_task(serve_log_subscriptions(client, FakeTaskLogs({T1: [("stdout", 1.0, long_line)]})))
    client.hand(subscription())
    await until(lambda: any(p["close"] for p in client.published), "the publisher to close the subscription")
    await stop(serving, client)
    pieces = client.lines(T1)
    assert [len(piece) for piece in pieces] == [MAX_LINE_BYTES, MAX_LINE_BYTES, len(long_line) - 2 * MAX_LINE_BYTES]
    assert b"".join(pieces) == long_line


async def test_a_follow_publisher_keeps_serving_until_the_broker_cancels_it():
    client = FakeBrokerClient()
    logs = FakeTaskLogs({T1: [("stdout", 1.0, b"first"), ("stdout", 2.0, b"second")]})
    serving = asyncio.create_task(serve_log_subscriptions(client, logs))
    client.hand(subscription(follow=True))
    await until(lambda: client.lines() == [b"first", b"second"], "the lines to be published")
    await until(lambda: client.serving() == ["sub1"], "the agent to list the subscription as served")
    assert not any(p["close"] for p in client.published)
    assert logs.closed == []

    client.cancel("sub1")
    await until(lambda: logs.closed == [T1], "the task's log reader to stop")
    await until(lambda: client.serving() == [], "the agent to stop serving it")
    await stop(serving, client)


async def test_a_publisher_stops_once_the_broker_says_the_subscription_is_gone():
    client = FakeBrokerClient()
    client.publish_answers = [{"ok": False}]
    logs = FakeTaskLogs({T1: [("stdout", 1.0, b"nobody wants this")]})
    serving = asyncio.create_task(serve_log_subscriptions(client, logs))
    client.hand(subscription(follow=True))
    await until(lambda: logs.closed == [T1], "the task's log reader to stop")
    await until(lambda: client.serving() == [] and len(client.listens) > 1, "the agent to stop serving it")
    assert len(client.published) == 1
    await stop(serving, client)


async def test_a_batch_the_broker_did_not_take_is_sent_again():
    client = FakeBrokerClient()
    client.publish_answers = [{"ok": True, "accepted": False}]
    serving = asyncio.create_task(serve_log_subscriptions(client, FakeTaskLogs({T1: [("stdout", 1.0, b"again")]})))
    client.hand(subscription())
    await until(lambda: len(client.published) == 2, "the batch to be sent a second time")
    await stop(serving, client)
    assert client.published[0] == client.published[1]
    assert client.lines() == [b"again", b"again"]  # sent twice; the broker kept only the second


async def test_a_broken_connection_stops_every_publisher_and_propagates_as_an_rpc_error():
    client = FakeBrokerClient()
    logs = FakeTaskLogs({T1: [("stdout", 1.0, b"x")], T2: []})
    serving = asyncio.create_task(serve_log_subscriptions(client, logs))
    client.hand(subscription("sub1", (T1,), follow=True))
    client.hand(subscription("sub2", (T2,), follow=True))
    await until(lambda: len(logs.asked) == 2, "both publishers to read their tasks")
    await stop(serving, client)
    assert sorted(logs.closed) == [T1, T2]


async def test_a_failed_publish_propagates_as_an_rpc_error():
    client = FakeBrokerClient()
    client.publish_answers = [RpcError("connection", "the connection to the manager broke during logs.publish")]
    serving = asyncio.create_task(serve_log_subscriptions(client, FakeTaskLogs({T1: [("stdout", 1.0, b"x")]})))
    client.hand(subscription())
    with pytest.raises(RpcError, match="during logs.publish"):
        async with asyncio.timeout(20):
            await serving


async def test_one_tasks_unreadable_log_does_not_stop_the_others(caplog):
    client = FakeBrokerClient()
    logs = FakeTaskLogs({T2: [("stdout", 1.0, b"fine")]})

    async def read_logs(task_id: str, **options: Any):
        if task_id == T1:
            raise OSError("the task's shim is gone")
        async for entry in logs(task_id, **options):
            yield entry

    serving = asyncio.create_task(serve_log_subscriptions(client, read_logs))
    client.hand(subscription(tasks=(T1, T2)))
    await until(lambda: any(p["close"] for p in client.published), "the publisher to close the subscription")
    await stop(serving, client)
    assert client.lines() == [b"fine"]
    assert "could not read the logs of task" in caplog.text


# -- both sides, over RPC ---------------------------------------------------------------------------------


async def test_lines_travel_from_the_agents_publisher_through_the_broker_to_the_subscriber(monkeypatch):
    monkeypatch.setattr(logpublisher, "LISTEN_WAIT", 0.05)
    async with BrokerHarness() as h:
        logs = FakeTaskLogs(
            {T1: [("stdout", 1.0, b"hello"), ("stderr", 2.0, b"oops")], T2: [("stdout", 1.5, b"other")]}
        )
        agent = asyncio.create_task(serve_log_subscriptions(await h.connect(WORKER1), logs))
        try:
            subscription_id = h.broker.subscribe({WORKER1: [T1, T2]}, tail=3)
            messages, errors = await read_all(lambda: h.broker.read(subscription_id, 5))
        finally:
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
        assert errors == []
        assert sorted(logs.asked) == [(T1, 3, False, None), (T2, 3, False, None)]
        by_task = {
            task: [(m["stream"], m["time"], m["line"]) for m in messages if m["task"] == task] for task in (T1, T2)
        }
        assert by_task == {T1: [("stdout", 1.0, b"hello"), ("stderr", 2.0, b"oops")], T2: [("stdout", 1.5, b"other")]}
        assert {m["node"] for m in messages} == {WORKER1}
