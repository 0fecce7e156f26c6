"""The log broker: how `service logs` gets the lines of tasks that run on other nodes.

As SwarmKit's LogBroker does, the leader brokers between two sides. A manager serving `GET
/services/{id}/logs` subscribes with the tasks it wants, grouped by the node each runs on
(`logs.subscribe`), and reads what arrives (`logs.read`, a long-poll) until the subscription is done or
it cancels it (`logs.cancel`). Every node's agent long-polls `logs.listen` and is handed the subscriptions
that name its own tasks -- only its own task IDs, never another node's -- reads those tasks' logs and
sends them back in batches (`logs.publish`), with `close` once it has sent everything. The broker refuses
a published line for a task that is not the caller's in that subscription, so a worker can neither inject
lines for another node's tasks nor learn of other nodes' subscriptions.

A subscription without `follow` is done when every node closed it, or was given up on: a node that is down
in the store, that does not pick the subscription up within `pickup_timeout`, or that picked it up and then
went silent (no listen or publish) for that long. Those nodes are reported in the final read's `errors`, so
one dead node cannot hang `service logs`. A `follow` subscription lasts until it is cancelled.

Bounds: each subscription buffers at most `MAX_BUFFERED_BYTES` of unread lines. Backpressure, not loss:
a publish finding the buffer full waits up to `PUBLISH_WAIT` for the reader, then answers
`{"ok": true, "accepted": false}` and the agent sends the same batch again -- the publish call returns
quickly so the agent's connection (which also carries its listen and its other publishes) is never held
by one slow reader. A subscription nobody has read for `EXPIRE_AFTER` is dropped, and its publishers are
told to stop (`ok: false`, or listed as cancelled). Subscriptions live in the leader's memory only: a new
leader knows none, agents drop theirs and readers get `not_leader`.

The in-process methods (`subscribe`, `read`, `cancel`) are what the RPC handlers call, so the API of a
manager that is itself the leader uses the same path as one that calls the leader over RPC.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..ca.certificates import NodeIdentity
from ..raft.driver import RaftDriver
from ..store import ReplicatedStore
from ..objects.kinds import NODES
from .dispatcher import DEFAULT_HEARTBEAT_PERIOD, DOWN_AFTER_MISSED
from ..rpc.channel import RpcError, RpcServer
from ..objects.kinds import new_object_id
from ..rpc.logs import MAX_LINE_BYTES, MESSAGE_OVERHEAD

MAX_LISTEN_WAIT = 30.0
"""Longest a `logs.listen` call waits for news before answering with none (the agent asks again)."""
MAX_READ_WAIT = 30.0
"""Longest a `logs.read` call waits for lines."""
PICKUP_TIMEOUT = DOWN_AFTER_MISSED * DEFAULT_HEARTBEAT_PERIOD
"""How long a subscription without follow waits for a node to pick it up, or to be heard from again once
it has: the time the dispatcher allows a silent node before marking it down."""
EXPIRE_AFTER = 2 * MAX_READ_WAIT
"""A subscription nobody has read for this long is dropped (its reader is gone without cancelling)."""
PUBLISH_WAIT = 0.5
"""How long a publish into a full buffer waits for the reader before asking the agent to send it again."""
MAX_BUFFERED_BYTES = 2 << 20
"""Unread lines held per subscription. With `MAX_SUBSCRIPTIONS` this bounds the broker's memory."""
MAX_READ_BYTES = 1 << 20
"""Most line bytes one `logs.read` answer carries: far below rpc.MAX_RPC_FRAME."""
MAX_SUBSCRIPTIONS = 256
STREAMS = ("stdout", "stderr")


@dataclass
class _NodeLogs:
    """One node's part of a subscription."""

    tasks: frozenset[str]
    handed: bool = False
    closed: bool = False
    failed: str | None = None
    """Why the broker stopped waiting for this node (it is reported to the reader)."""
    newest: dict[str, float] = field(default_factory=dict)
    """Task ID -> time of the newest line received, to resume after the agent dropped the subscription."""
    resume_after: dict[str, float] = field(default_factory=dict)
    """After a resume: lines of a task at or before this time were sent already and are dropped."""

    @property
    def finished(self) -> bool:
        return self.closed or self.failed is not None


@dataclass
class _Subscription:
    id: str
    nodes: dict[str, _NodeLogs]
    tail: int | None
    follow: bool
    since: float | None
    created: float
    last_read: float
    readers: int = 0
    cancelled: bool = False
    messages: deque[dict[str, Any]] = field(default_factory=deque)
    buffered: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the reader has something new: lines, the end, or the subscription's removal."""
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the reader took lines (or the subscription went): publishers waiting for room retry."""

    @property
    def finished(self) -> bool:
        """Nothing more will arrive: every node closed or was given up on (never for follow)."""
        return self.cancelled or (not self.follow and all(node.finished for node in self.nodes.values()))

    def errors(self) -> list[str]:
        return [node.failed for node in self.nodes.values() if node.failed]


def _size(message: dict[str, Any]) -> int:
    return len(message["line"]) + MESSAGE_OVERHEAD


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RpcError("invalid", f"{what} must be a number")
    return float(value)


def _optional_tail(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RpcError("invalid", "tail must be a non-negative integer or null (all lines)")
    return value


def _string_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RpcError("invalid", f"{what} must be a list of strings")
    return value


class LogBroker:
    """Runs on every manager; only the leader's has subscriptions (agents and subscribers talk to it)."""

    def __init__(
        self,
        store: ReplicatedStore,
        driver: RaftDriver,
        rpc: RpcServer,
        *,
        pickup_timeout: float = PICKUP_TIMEOUT,
        expire_after: float = EXPIRE_AFTER,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self.store = store
        self.driver = driver
        self.pickup_timeout = pickup_timeout
        self.expire_after = expire_after
        self.max_buffered_bytes = max_buffered_bytes
        self._subscriptions: dict[str, _Subscription] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        """Node ID -> set when that node's listen has news (a new or a dropped subscription)."""
        self._listening: dict[str, int] = {}
        """Node ID -> its listen calls in progress (a node waiting in one is alive)."""
        self._seen: dict[str, float] = {}
        """Node ID -> when it last called listen or publish."""
        rpc.register("logs.listen", self._rpc_listen, allowed={"worker", "manager"})
        rpc.register("logs.publish", self._rpc_publish, allowed={"worker", "manager"})
        rpc.register("logs.subscribe", self._rpc_subscribe, allowed={"manager"})
        rpc.register("logs.read", self._rpc_read, allowed={"manager"})
        rpc.register("logs.cancel", self._rpc_cancel, allowed={"manager"})

    def leader_address(self) -> str:
        leader = self.driver.peer_addresses().get(self.driver.leader_id)
        return f"{leader[0]}:{leader[1]}" if leader else ""

    def _check_leader(self) -> None:
        if not self.driver.is_leader:
            self._drop_all()
            raise RpcError("not_leader", self.leader_address())

    # -- the subscriber's side -------------------------------------------------------------------------

    def subscribe(
        self, tasks: dict[str, list[str]], *, tail: int | None = None, follow: bool = False, since: float | None = None
    ) -> str:
        """Start collecting the logs of `tasks` ({node ID: [task IDs on it]}): the last `tail` lines of each
        task (None: all), only lines from `since` (unix seconds) on, and with `follow` new ones as written."""
        self._check_leader()
        self._sweep()
        if len(self._subscriptions) >= MAX_SUBSCRIPTIONS:
            raise RpcError("unavailable", f"the leader already serves {MAX_SUBSCRIPTIONS} log streams; try again later")
        now = time.monotonic()
        nodes = {node_id: _NodeLogs(frozenset(ids)) for node_id, ids in tasks.items() if ids}
        subscription = _Subscription(new_object_id(), nodes, tail, follow, since, created=now, last_read=now)
        self._subscriptions[subscription.id] = subscription
        self._sweep()  # a node already down is given up on at once
        for node_id in nodes:
            self._wake(node_id)
        return subscription.id

    async def read(self, subscription_id: str, timeout: float) -> dict[str, Any]:
        """The next lines, waiting up to `timeout` seconds for some: {"messages": [{"task", "node", "stream",
        "time", "line"}], "done": bool, "errors": [why a node's lines are missing]} (errors once done)."""
        self._check_leader()
        subscription = self._subscriptions.get(subscription_id)
        if subscription is None:
            raise RpcError("not_found", f"log subscription {subscription_id} is gone (cancelled or unread too long)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout, 0.0), MAX_READ_WAIT)
        subscription.readers += 1
        try:
            while True:
                subscription.changed.clear()
                self._sweep()
                if subscription.messages or subscription.finished or loop.time() >= deadline:
                    break
                wake_at = deadline
                next_check = self._next_check(subscription)
                if next_check is not None:
                    wake_at = min(deadline, loop.time() + max(next_check - time.monotonic(), 0.0))
                try:
                    async with asyncio.timeout_at(wake_at):
                        await subscription.changed.wait()
                except TimeoutError:
                    pass
                self._check_leader()
            batch: list[dict[str, Any]] = []
            size = 0
            while subscription.messages and (not batch or size + _size(subscription.messages[0]) <= MAX_READ_BYTES):
                message = subscription.messages.popleft()
                size += _size(message)
                batch.append(message)
            subscription.buffered -= size
            subscription.drained.set()
            done = subscription.cancelled or (subscription.finished and not subscription.messages)
            if done:
                self._drop(subscription)
            return {"messages": batch, "done": done, "errors": subscription.errors() if done else []}
        finally:
            subscription.readers -= 1
            subscription.last_read = time.monotonic()

    def cancel(self, subscription_id: str) -> None:
        """Stop a subscription; its publishers are told to stop. Unknown IDs are ignored."""
        subscription = self._subscriptions.get(subscription_id)
        if subscription is not None:
            self._drop(subscription)

    # -- the agents' side ------------------------------------------------------------------------------

    async def listen(self, node_id: str, serving: list[str], timeout: float) -> dict[str, Any]:
        """Wait up to `timeout` seconds until there is a subscription naming this node's tasks that it is not
        serving, or one it serves was dropped: {"subscriptions": [{"id", "tasks", "tail", "follow",
        "since"}], "cancelled": [IDs]}."""
        self._check_leader()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout, 0.0), MAX_LISTEN_WAIT)
        wakeup = self._wakeups.setdefault(node_id, asyncio.Event())
        serving_set = set(serving)
        self._listening[node_id] = self._listening.get(node_id, 0) + 1
        self._seen[node_id] = time.monotonic()
        try:
            while True:
                wakeup.clear()
                self._sweep()
                answer = self._news(node_id, serving_set)
                if answer["subscriptions"] or answer["cancelled"] or loop.time() >= deadline:
                    return answer
                try:
                    async with asyncio.timeout_at(deadline):
                        await wakeup.wait()
                except TimeoutError:
                    pass
                self._check_leader()
        finally:
            self._listening[node_id] -= 1
            self._seen[node_id] = time.monotonic()

    def _news(self, node_id: str, serving: set[str]) -> dict[str, Any]:
        cancelled = []
        for subscription_id in sorted(serving):
            subscription = self._subscriptions.get(subscription_id)
            node = subscription.nodes.get(node_id) if subscription else None
            if node is None or node.finished:
                cancelled.append(subscription_id)
        offers = [
            self._hand(subscription, node_id)
            for subscription in self._subscriptions.values()
            if subscription.id not in serving
            and node_id in subscription.nodes
            and not subscription.nodes[node_id].finished
        ]
        return {"subscriptions": offers, "cancelled": cancelled}

    def _hand(self, subscription: _Subscription, node_id: str) -> dict[str, Any]:
        node = subscription.nodes[node_id]
        tail, since = subscription.tail, subscription.since
        if node.handed and node.newest:
            # The agent dropped it (its connection broke) after sending some lines: ask for what came after
            # the last line received, and drop what it sends again.
            node.resume_after = dict(node.newest)
            if set(node.newest) == node.tasks:
                tail = None
                since = max(since or 0.0, min(node.newest.values()))
        node.handed = True
        return {
            "id": subscription.id,
            "tasks": sorted(node.tasks),
            "tail": tail,
            "follow": subscription.follow,
            "since": since,
        }

    async def publish(
        self, node_id: str, subscription_id: str, messages: list[Any], close: bool = False
    ) -> dict[str, Any]:
        """Take a batch of the caller's lines: {"ok": False} once the subscription is gone (stop sending),
        {"ok": True, "accepted": False} when the reader is behind (send the same batch again)."""
        self._check_leader()
        self._seen[node_id] = time.monotonic()
        self._sweep()
        subscription = self._subscriptions.get(subscription_id)
        if subscription is None:
            return {"ok": False}
        node = subscription.nodes.get(node_id)
        if node is None:
            raise RpcError("unauthorized", f"node {node_id} has no tasks in log subscription {subscription_id}")
        checked = [self._checked(raw, node, node_id, subscription_id) for raw in messages]
        if checked and subscription.buffered >= self.max_buffered_bytes:
            subscription.drained.clear()
            try:
                async with asyncio.timeout(PUBLISH_WAIT):
                    while subscription.buffered >= self.max_buffered_bytes and not subscription.cancelled:
                        await subscription.drained.wait()
                        subscription.drained.clear()
            except TimeoutError:
                pass
            if subscription.buffered >= self.max_buffered_bytes and not subscription.cancelled:
                return {"ok": True, "accepted": False}
        if subscription.cancelled or node.finished:
            return {"ok": False}
        for message in checked:
            resume = node.resume_after.get(message["task"])
            if resume is not None:
                if message["time"] <= resume:
                    continue  # sent before the agent dropped the subscription
                del node.resume_after[message["task"]]
            node.newest[message["task"]] = message["time"]
            subscription.messages.append(message)
            subscription.buffered += _size(message)
        if close:
            node.closed = True
        subscription.changed.set()
        return {"ok": True, "accepted": True}

    @staticmethod
    def _checked(raw: Any, node: _NodeLogs, node_id: str, subscription_id: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise RpcError("invalid", "each message must be a map of task, stream, time and line")
        task_id = raw.get("task")
        if task_id not in node.tasks:
            raise RpcError(
                "unauthorized",
                f"task {task_id!r} is not one of node {node_id}'s tasks in log subscription {subscription_id}",
            )
        stream = raw.get("stream")
        if stream not in STREAMS:
            raise RpcError("invalid", f"a message's stream must be stdout or stderr, not {stream!r}")
        line = raw.get("line")
        if not isinstance(line, bytes):
            raise RpcError("invalid", "a message's line must be bytes")
        if len(line) > MAX_LINE_BYTES:
            raise RpcError("invalid", f"a line of {len(line)} bytes is over the {MAX_LINE_BYTES}-byte limit; split it")
        when = _number(raw.get("time"), "a message's time")
        return {"task": task_id, "node": node_id, "stream": stream, "time": when, "line": line}

    # -- bookkeeping -----------------------------------------------------------------------------------

    def _wake(self, node_id: str) -> None:
        event = self._wakeups.get(node_id)
        if event is not None:
            event.set()

    def _drop(self, subscription: _Subscription) -> None:
        self._subscriptions.pop(subscription.id, None)
        subscription.cancelled = True
        subscription.changed.set()
        subscription.drained.set()
        for node_id in subscription.nodes:
            self._wake(node_id)

    def _drop_all(self) -> None:
        for subscription in list(self._subscriptions.values()):
            self._drop(subscription)

    def _next_check(self, subscription: _Subscription) -> float | None:
        """The monotonic time at which `_sweep` may next give up on one of this subscription's nodes."""
        if subscription.follow:
            return None
        times = []
        for node_id, node in subscription.nodes.items():
            if node.finished:
                continue
            if not node.handed:
                times.append(subscription.created + self.pickup_timeout)
            elif not self._listening.get(node_id):
                times.append(self._seen.get(node_id, subscription.created) + self.pickup_timeout)
        return min(times, default=None)

    def _sweep(self) -> None:
        """Drop subscriptions nobody reads; give up on nodes that cannot answer a subscription without follow."""
        now = time.monotonic()
        for subscription in list(self._subscriptions.values()):
            if subscription.readers == 0 and now - subscription.last_read > self.expire_after:
                self._drop(subscription)
                continue
            if subscription.follow:
                continue
            for node_id, node in subscription.nodes.items():
                if node.finished:
                    continue
                if self._node_down(node_id):
                    silent = True
                elif not node.handed:
                    silent = now - subscription.created > self.pickup_timeout
                else:
                    silent = (
                        not self._listening.get(node_id)
                        and now - self._seen.get(node_id, subscription.created) > self.pickup_timeout
                    )
                if silent:
                    node.failed = f"node {node_id} is not available"
                    subscription.changed.set()
                    self._wake(node_id)

    def _node_down(self, node_id: str) -> bool:
        node = self.store.state.get(NODES, node_id)
        return node is None or node.data.get("Status", {}).get("State") == "down"

    # -- RPC -------------------------------------------------------------------------------------------

    async def _rpc_listen(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        assert identity is not None
        serving = _string_list(params.get("serving", []), "serving")
        return await self.listen(identity.node_id, serving, _number(params.get("timeout", MAX_LISTEN_WAIT), "timeout"))

    async def _rpc_publish(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        assert identity is not None
        subscription_id = params.get("subscription")
        messages = params.get("messages", [])
        if not isinstance(subscription_id, str) or not isinstance(messages, list):
            raise RpcError("invalid", "logs.publish needs a subscription ID and a list of messages")
        return await self.publish(identity.node_id, subscription_id, messages, bool(params.get("close", False)))

    async def _rpc_subscribe(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        tasks = params.get("tasks")
        if not isinstance(tasks, dict) or not all(isinstance(node_id, str) for node_id in tasks):
            raise RpcError("invalid", "tasks must map node IDs to lists of task IDs")
        checked = {node_id: _string_list(ids, "each node's tasks") for node_id, ids in tasks.items()}
        since = params.get("since")
        subscription_id = self.subscribe(
            checked,
            tail=_optional_tail(params.get("tail")),
            follow=bool(params.get("follow", False)),
            since=None if since is None else _number(since, "since"),
        )
        return {"id": subscription_id}

    async def _rpc_read(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        subscription_id = params.get("id")
        if not isinstance(subscription_id, str):
            raise RpcError("invalid", "logs.read needs the subscription's id")
        return await self.read(subscription_id, _number(params.get("timeout", MAX_READ_WAIT), "timeout"))

    async def _rpc_cancel(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        subscription_id = params.get("id")
        if not isinstance(subscription_id, str):
            raise RpcError("invalid", "logs.cancel needs the subscription's id")
        self._check_leader()
        self.cancel(subscription_id)
        return {}
