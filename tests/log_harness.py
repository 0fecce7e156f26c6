"""A leader's log broker without Raft or sockets to other machines, for the `service logs` tests.

    async with BrokerHarness(pickup_timeout=0.05) as h:
        h.broker.subscribe({WORKER1: [TASK1]})              # the in-process API
        worker = await h.connect(WORKER1)                   # an RpcClient presenting WORKER1's worker identity
        await worker.call("logs.listen", {"timeout": 0})    # through RpcServer, its authorization included

Connections are socket pairs served by the harness's `RpcServer` with the identity given, as the cluster
listener serves a TLS connection with the identity of the peer's certificate. The store holds a ready node
object for each of WORKER1, WORKER2 and MANAGER1. `FakeTaskLogs` plays an agent's `read_logs`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

from raftswarm.ca.certificates import NodeIdentity, NodeRole
from raftswarm.objects.kinds import NODES
from raftswarm.manager.logbroker import LogBroker
from raftswarm.rpc.channel import RpcClient, RpcServer
from raftswarm.store import ReplicatedStore, put
from raftswarm.store.state import encode_transaction

CLUSTER_ID = "wfm3pqm9yb3x1kdv6t0qmjnwl"
WORKER1 = "7hxn0bmvu2zqk3c4e5ryw6jtd"
WORKER2 = "x1cb2gf6p3lq7t9r8wkzvn4ha"
WORKER3 = "q8r2m4k6p0s1t3v5x7z9b2d4f"
MANAGER1 = "9j3pbdwlkqgmce8o7j4fzmdcq"
LEADER_ADDR = ("10.0.0.1", 2377)


class FakeDriver:
    """What the broker and the API read of a Raft driver."""

    def __init__(self) -> None:
        self.is_leader = True
        self.leader_id = 1

    def peer_addresses(self) -> dict[int, tuple[str, int]]:
        return {1: LEADER_ADDR}

    async def read_barrier(self) -> None:
        pass


class BrokerHarness:
    def __init__(self, **broker_options: Any) -> None:
        self.driver = FakeDriver()
        self.store = ReplicatedStore()
        self.store.attach(self.driver)  # type: ignore[arg-type]
        self.rpc = RpcServer()
        self.broker = LogBroker(self.store, self.driver, self.rpc, **broker_options)  # type: ignore[arg-type]
        self._clients: list[RpcClient] = []
        self._serving: list[asyncio.Task[None]] = []
        for node_id in (WORKER1, WORKER2, MANAGER1):
            self.set_node(node_id, "ready")

    def write(self, kind: str, object_id: str, data: dict[str, Any]) -> None:
        self.store.apply(self.store.state.version + 1, encode_transaction([put(kind, object_id, data)]))

    def set_node(self, node_id: str, state: str) -> None:
        self.write(NODES, node_id, {"ID": node_id, "Status": {"State": state}})

    async def connect(self, node_id: str, role: NodeRole = NodeRole.WORKER) -> RpcClient:
        server_end, client_end = socket.socketpair()
        server_reader, server_writer = await asyncio.open_connection(sock=server_end)
        client_reader, client_writer = await asyncio.open_connection(sock=client_end)
        identity = NodeIdentity(node_id, role, CLUSTER_ID)
        self._serving.append(asyncio.create_task(self.rpc.serve(server_reader, server_writer, identity)))
        client = RpcClient(client_reader, client_writer)
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        for task in self._serving:
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = 20.0) -> None:
    """Wait for `condition`; the bound is only there so a broken feature fails instead of hanging."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def read_all(
    read: Callable[[], Awaitable[dict[str, Any]]], max_reads: int = 1000
) -> tuple[list[dict[str, Any]], list[str]]:
    """Read a subscription until done: every message, and the errors of the last answer."""
    messages: list[dict[str, Any]] = []
    for _ in range(max_reads):
        answer = await read()
        messages.extend(answer["messages"])
        if answer["done"]:
            return messages, answer["errors"]
    raise AssertionError(f"the subscription was not done after {max_reads} reads")


class FakeTaskLogs:
    """The agent's `read_logs`: each task's lines, then (with follow) nothing until cancelled."""

    def __init__(self, lines: dict[str, list[tuple[str, float, bytes]]]) -> None:
        self.lines = lines
        self.asked: list[tuple[str, Any, Any, Any]] = []
        self.closed: list[str] = []

    async def __call__(self, task_id: str, *, tail: int | None, follow: bool, since: float | None):
        self.asked.append((task_id, tail, follow, since))
        try:
            for entry in self.lines.get(task_id, []):
                yield entry
            if follow:
                await asyncio.Event().wait()
        finally:
            self.closed.append(task_id)
