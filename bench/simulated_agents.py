"""Many simulated worker agents in one process, for `python -m bench schedule`'s scale run.

Each agent joins the swarm the way `swarm join` does for a worker -- its own ECDSA key and CSR, `ca.join`
with the worker token to a manager whose root CA was pinned by the token's digest, its certificate back --
and then keeps a session with the dispatcher on the leader: heartbeats at the period the dispatcher asks
for, the assignments long-poll, and for every task newly assigned to it one status report that moves it to
RUNNING at once (no process is started: the manager's work is what is measured).

One connection per agent, on which the agent takes turns: a heartbeat whenever one is due, else its
pending status report, else the assignments long-poll until the next heartbeat is due. A real node uses
three (`agent.session` heartbeats, `agent.agent` assignments and reports), but the manager's listener
accepts at most `node.listener.MAX_CONNECTIONS` (1024) at once, so three per agent would cap the swarm
at about 340 nodes and two at about 500; one keeps a thousand agents under the limit. The load the
manager sees per agent is the same: the same calls at the same rates.

Agents follow `not_leader` answers to the leader; a manager that fails makes the agent try the next one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from raftswarm.addresses import parse_host_port
from raftswarm.ca.certificates import NodeCertificate, NodeRole, client_ssl_context, new_node_key, node_csr
from raftswarm.ca.tokens import JoinToken
from raftswarm.objects.tasks import TaskState
from raftswarm.rpc.channel import RpcClient, RpcError
from raftswarm.node.manager_client import call_pinned, fetch_pinned_roots

JOIN_CONCURRENCY = 16
"""Joins in flight at once: enough to keep the managers' CAs busy, few enough not to time out under load."""
RETRY_DELAY = 0.2
"""Before reporting again a status the dispatcher could not record (as `agent.agent` waits)."""
BACKOFF_MAX = 2.0
CALL_MARGIN = 10.0
"""Seconds a call may take beyond what it asked the manager to wait, before the agent gives up on it."""
DEFAULT_PERIOD = 5.0
"""Heartbeat period until the dispatcher's first answer names its own."""
CLOSE_RECHECK = 0.5
"""Seconds between cancelling the sessions and checking that every one has ended."""


@dataclass(frozen=True)
class JoinedAgent:
    name: str
    node_id: str
    context: ssl.SSLContext


async def join_agents(
    count: int, token: str, managers: Sequence[str], addr: str, concurrency: int = JOIN_CONCURRENCY
) -> list[JoinedAgent]:
    """Join `count` workers with `token`, spreading the joins over `managers` (any manager certifies).
    `addr` is recorded as each node's address (they all live in this process)."""
    first = parse_host_port(managers[0])
    trust = await fetch_pinned_roots(first, JoinToken.parse(token))
    limit = asyncio.Semaphore(concurrency)

    async def join(index: int) -> JoinedAgent:
        name = f"sim-agent-{index + 1}"
        key = new_node_key()
        params = {"token": token, "csr": node_csr(key).public_bytes(Encoding.PEM), "addr": addr, "hostname": name}
        async with limit:
            answer = await call_pinned(parse_host_port(managers[index % len(managers)]), trust, "ca.join", params)
        certificate = NodeCertificate.with_key(answer["cert"], key)
        roots = x509.load_pem_x509_certificates(answer["roots"])
        return JoinedAgent(name, answer["node_id"], client_ssl_context(roots, certificate))

    return list(await asyncio.gather(*(join(i) for i in range(count))))


@dataclass
class TaskTally:
    """When each task was first delivered to an agent and when its RUNNING report was recorded, and when
    the counts reached `expected` (monotonic seconds)."""

    expected: int = 0
    assigned: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    per_node: dict[str, int] = field(default_factory=dict)
    refused_reports: int = 0
    all_assigned: asyncio.Event = field(default_factory=asyncio.Event)
    all_running: asyncio.Event = field(default_factory=asyncio.Event)

    def delivered(self, task_id: str, node_id: str) -> None:
        if task_id not in self.assigned:
            self.assigned[task_id] = time.monotonic()
            self.per_node[node_id] = self.per_node.get(node_id, 0) + 1
            if self.expected and len(self.assigned) >= self.expected:
                self.all_assigned.set()

    def recorded_running(self, task_id: str) -> None:
        if task_id not in self.running:
            self.running[task_id] = time.monotonic()
            if self.expected and len(self.running) >= self.expected:
                self.all_running.set()


class SimulatedAgent:
    def __init__(self, joined: JoinedAgent, managers: Sequence[str], tally: TaskTally, first: int = 0) -> None:
        self.joined = joined
        self.managers = list(managers)
        self.tally = tally
        self.period = DEFAULT_PERIOD
        self.session: str | None = None
        self.known: set[str] = set()
        self.unreported: set[str] = set()
        self.streaming = asyncio.Event()
        """Set once a heartbeat has been recorded and the first (complete) assignment set has arrived."""
        self.heartbeats = 0
        self.heartbeat_lateness = 0.0
        """Worst delay of a heartbeat past its due time (the leader answering slowly holds the turn)."""
        self.redirects = 0
        self.failures = 0
        self._first = first

    async def run(self) -> None:
        """Keep the session until cancelled, moving to the leader and past failed managers."""
        target = self.managers[self._first % len(self.managers)]
        backoff = 0.05
        while True:
            client = None
            heartbeats = self.heartbeats
            try:
                host, port = parse_host_port(target)
                client = await RpcClient.connect(
                    host, port, self.joined.context, server_hostname=NodeRole.MANAGER.value
                )
                await self._converse(client)
            except RpcError as exc:
                if exc.code == "not_leader" and str(exc):
                    self.redirects += 1
                    target = str(exc)
                    continue
                self.failures += 1
                if self.heartbeats > heartbeats:
                    backoff = 0.05  # the session had worked: this is a new failure, not a run of them
                position = self.managers.index(target) if target in self.managers else -1
                target = self.managers[(position + 1) % len(self.managers)]
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                if client is not None:
                    await client.close()

    async def _converse(self, client: RpcClient) -> None:
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time()
        while True:
            now = loop.time()
            if now >= next_heartbeat:
                answer = await client.call("dispatcher.heartbeat", {}, timeout=self.period * 2)
                self.heartbeat_lateness = max(self.heartbeat_lateness, now - next_heartbeat)
                self.heartbeats += 1
                self.period = float(answer.get("period", self.period))
                next_heartbeat = loop.time() + self.period
            elif self.unreported:
                await self._report(client)
            else:
                wait = next_heartbeat - now
                answer = await client.call(
                    "dispatcher.assignments", {"session": self.session, "timeout": wait}, timeout=wait + CALL_MARGIN
                )
                self._apply(answer)
                if self.heartbeats:
                    self.streaming.set()

    def _apply(self, answer: dict[str, Any]) -> None:
        self.session = answer["session"]
        for task in answer.get("tasks") or []:
            task_id = task["ID"]
            if task_id in self.known:
                continue  # a later version of a task already handled (our own RUNNING coming back)
            self.known.add(task_id)
            state = TaskState.of(task["Status"]["State"])
            if TaskState.of(task["DesiredState"]) == TaskState.RUNNING and state < TaskState.RUNNING:
                self.tally.delivered(task_id, self.joined.node_id)
                self.unreported.add(task_id)
        for task_id in answer.get("removed_tasks") or []:
            self.unreported.discard(task_id)

    async def _report(self, client: RpcClient) -> None:
        batch = sorted(self.unreported)
        updates = [{"ID": task_id, "Status": {"State": "running", "Message": "started"}} for task_id in batch]
        results = await client.call("dispatcher.update_task_status", {"updates": updates})
        again = False
        for task_id in batch:
            result = str(results.get(task_id, ""))
            if result == "ok":
                self.unreported.discard(task_id)
                self.tally.recorded_running(task_id)
            elif result.startswith("not recorded"):
                again = True  # the dispatcher could not write it now: report it again shortly
            else:
                self.unreported.discard(task_id)  # "unknown task", "not this node's task": nothing to retry
                self.tally.refused_reports += 1
        if again:
            await asyncio.sleep(RETRY_DELAY)


class AgentFleet:
    """The simulated agents' sessions: `async with AgentFleet(...) as fleet` starts them; leaving the block
    ends every session and closes its connection, and raises the first failure of an agent, if any."""

    def __init__(self, joined: Sequence[JoinedAgent], managers: Sequence[str], tally: TaskTally) -> None:
        self.agents = [SimulatedAgent(j, managers, tally, i) for i, j in enumerate(joined)]
        self.failed = asyncio.Event()
        """Set if an agent's session ended with an error (the fleet is no longer what was asked for)."""
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self._tasks = [asyncio.create_task(a.run(), name=a.joined.name) for a in self.agents]
        for task in self._tasks:
            task.add_done_callback(self._ended)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pending = set(self._tasks)
        while pending:
            # Again for any session that swallowed the cancellation: Python 3.11's asyncio.wait_for (inside
            # RpcClient.call) returns the result instead when the call completes in the same loop iteration.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CLOSE_RECHECK)
        errors = [t.exception() for t in self._tasks if not t.cancelled() and t.exception() is not None]
        if errors and exc_info[0] is None:
            raise errors[0]

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failed.set()

    async def streaming(self, timeout: float) -> int:
        """Wait until every agent heartbeats and follows its assignments (at most `timeout` seconds, and not
        past an agent's failure); return how many do."""
        await self._until(asyncio.gather(*(a.streaming.wait() for a in self.agents)), timeout)
        return sum(a.streaming.is_set() for a in self.agents)

    async def until(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait for `event` (at most `timeout` seconds, and not past an agent's failure); whether it is set."""
        await self._until(event.wait(), timeout)
        return event.is_set()

    async def _until(self, awaitable: Awaitable[Any], timeout: float) -> None:
        waits = [asyncio.ensure_future(awaitable), asyncio.ensure_future(self.failed.wait())]
        try:
            await asyncio.wait(waits, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {
            "heartbeats": sum(a.heartbeats for a in self.agents),
            "heartbeat_late_max_s": round(max((a.heartbeat_lateness for a in self.agents), default=0.0), 3),
            "redirects": sum(a.redirects for a in self.agents),
            "session_failures": sum(a.failures for a in self.agents),
        }
