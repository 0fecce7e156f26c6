"""What the clients of a chaos run do while faults hit the cluster.

`RegisterClients`: concurrent clients, each bound to one manager's API socket (as a user's tool would be),
doing reads, writes and compare-and-sets on a few registers of the replicated store (kind `chaos-registers`,
through `/raftswarm/store`), each recorded in the run's `History` as invoke + ok/fail/info. Which outcome an
error is: a refused connection or a rejected request never reached Raft (fail); a timeout, a dropped
connection or "leadership changed while the write was in flight" may or may not have taken effect (info), and
the client goes on under a new process ID, as in Jepsen. A failed read had no effect either way (fail). Every
client also creates objects of kind `chaos-acks`, one unique ID each: at the end, every acknowledged one
must still be there (no acknowledged write lost).

A compare-and-set reads the register (linearizably) and updates it pinned to the version it read: it takes
effect only if nothing changed in between, so an ok one saw the expected value at its commit point.

`stale_reads`: reads ask the node for its local copy (`consistency=local`), i.e. a follower answering without
ReadIndex. Only for showing that the checker catches stale reads; never a real workload.

`ServiceChurn`: scales and updates a replicated service (constrained to workers) while faults happen; the
run's convergence check then waits for its replicas to run the newest spec.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from raftswarm.api.client import ApiClient, ApiError
from raftswarm.localcluster.swarm import ClusterNode, SwarmCluster

from .history import Event, History

REGISTERS = "chaos-registers"
ACKS = "chaos-acks"
CLIENT_TIMEOUT = 3.0
"""Per request: longer than an election (1-2 s) so a write in flight during one usually completes."""
THINK_TIME = 0.01
"""Between one client's operations: keeps two cores from saturating, so faults, not CPU, shape latency."""
ERROR_BACKOFF = 0.1
"""After a failed operation: a client of a dead node does not spin on refused connections."""
ACK_EVERY = 4
"""One `chaos-acks` create per this many register operations."""
CHURN_INTERVAL = (1.5, 3.0)
SERVICE_NAME = "chaos-churn"
REPLICAS = (2, 6)

_UNSENT = (aiohttp.ClientConnectorError, FileNotFoundError, ConnectionRefusedError)
"""The request never left the client: the operation surely did not happen."""


@dataclass
class Acks:
    """The `chaos-acks` objects by outcome of their create."""

    ok: set[str] = field(default_factory=set)
    info: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)


class RegisterClients:
    def __init__(
        self,
        cluster: SwarmCluster,
        history: History,
        clock: Callable[[], float],
        rng: random.Random,
        *,
        clients: int = 6,
        keys: int = 4,
        stale_reads: bool = False,
        on_error: Callable[[float, str], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.history = history
        self.clock = clock
        self.rng = rng
        self.clients = clients
        self.keys = [f"r{i}" for i in range(keys)]
        self.stale_reads = stale_reads
        self.acks = Acks()
        self.on_error = on_error or (lambda t, message: None)
        self._process_ids = itertools.count(clients)
        self._values = itertools.count(1)
        self._given: dict[str, list[int]] = {key: [] for key in self.keys}

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            for number in range(self.clients):
                group.create_task(self._client(number, stop))

    async def _client(self, number: int, stop: asyncio.Event) -> None:
        process = number
        rng = random.Random(self.rng.random())
        done = 0
        while not stop.is_set():
            node = self.cluster.managers[number % len(self.cluster.managers)]
            if done % ACK_EVERY == ACK_EVERY - 1:
                await self._ack(node, f"{number}-{done}")
            else:
                key, choice = rng.choice(self.keys), rng.random()
                f = "read" if choice < 0.4 else "write" if choice < 0.75 else "cas"
                outcome = await self._operation(node, process, f, key)
                if outcome == "info":
                    process = next(self._process_ids)
                if outcome != "ok":
                    await asyncio.sleep(ERROR_BACKOFF)
            done += 1
            await asyncio.sleep(THINK_TIME)

    async def _operation(self, node: ClusterNode, process: int, f: str, key: str) -> str:
        """One recorded operation; its outcome. After "info" the process must not be reused."""
        value: Any = None
        if f == "write":
            value = next(self._values)
        elif f == "cas":
            value = [self._likely_current(key), next(self._values)]
        if f != "read":
            self._given[key].append(value if f == "write" else value[1])
        invoked = self.history.invoke(process, f, key, value, self.clock())
        try:
            async with self.cluster.client(node, CLIENT_TIMEOUT) as api:
                if f == "read":
                    found = await api.get(REGISTERS, key, "local" if self.stale_reads else "linearizable")
                    self.history.complete(invoked, "ok", self.clock(), value=found["data"]["value"] if found else None)
                elif f == "write":
                    await api.transact([["put", REGISTERS, key, {"value": value}, -1]], timeout=CLIENT_TIMEOUT - 0.5)
                    self.history.complete(invoked, "ok", self.clock(), value=value)
                else:
                    return await self._cas(api, invoked, key, value)
            return "ok"
        except Exception as exc:  # noqa: BLE001 -- every failure is recorded, by what it says about the outcome
            outcome = _outcome(f, exc)
            message = _describe(exc)
            self.history.complete(invoked, outcome, self.clock(), error=message)
            self.on_error(self.clock(), f"{f} via {node.name}: {message}")
            return outcome

    async def _cas(self, api: ApiClient, invoked: Event, key: str, value: list[Any]) -> str:
        expected, new = value
        found = await api.get(REGISTERS, key)
        current = found["data"]["value"] if found else None
        if current != expected:
            self.history.complete(invoked, "fail", self.clock(), error=f"value is {current!r}, not {expected!r}")
            return "ok"  # the client did its job: the register just held another value
        if found is None:
            operation = ["create", REGISTERS, key, {"value": new}, 0]
        else:
            operation = ["update", REGISTERS, key, {"value": new}, found["version"]]
        await api.transact([operation], timeout=CLIENT_TIMEOUT - 0.5)
        self.history.complete(invoked, "ok", self.clock(), value=value)
        return "ok"

    def _likely_current(self, key: str) -> int | None:
        """One of the last values given to `key`, so that a good share of compare-and-sets succeed."""
        return self.rng.choice(self._given[key][-3:] or [None])

    async def _ack(self, node: ClusterNode, ack_id: str) -> None:
        try:
            async with self.cluster.client(node, CLIENT_TIMEOUT) as api:
                await api.transact([["create", ACKS, ack_id, {"at": time.time()}, 0]], timeout=CLIENT_TIMEOUT - 0.5)
            self.acks.ok.add(ack_id)
        except Exception as exc:  # noqa: BLE001 -- recorded by outcome
            (self.acks.fail if _outcome("write", exc) == "fail" else self.acks.info).add(ack_id)
            self.on_error(self.clock(), f"ack via {node.name}: {_describe(exc)}")


def _outcome(f: str, exc: BaseException) -> str:
    if f == "read":
        return "fail"
    if isinstance(exc, _UNSENT):
        return "fail"
    if isinstance(exc, ApiError) and exc.status in (400, 404, 409):
        return "fail"
    return "info"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class ServiceChurn:
    """Scale and update one service while faults happen; `spec_version` is what must run in the end."""

    def __init__(self, cluster: SwarmCluster, rng: random.Random, on_error: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.rng = rng
        self.on_error = on_error
        self.replicas = REPLICAS[0]
        self.generation = 0
        self.changes = {"ok": 0, "failed": 0}

    def spec(self) -> dict[str, Any]:
        return {
            "Name": SERVICE_NAME,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "busybox",
                    "Command": ["sleep", "3600"],
                    "Env": [f"GENERATION={self.generation}"],
                    "StopGracePeriod": 1_000_000_000,
                },
                "Placement": {"Constraints": ["node.role==worker"]},
                "RestartPolicy": {"Condition": "any", "Delay": 500_000_000},
            },
            "Mode": {"Replicated": {"Replicas": self.replicas}},
            "UpdateConfig": {"Parallelism": 2, "Order": "stop-first", "Monitor": 500_000_000},
        }

    async def create(self) -> None:
        async with self.cluster.client(self.cluster.managers[0], 10.0) as api:
            await api.service_create(self.spec())

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.rng.uniform(*CHURN_INTERVAL)):
                    await stop.wait()
                return
            except TimeoutError:
                pass
            replicas, generation = self.replicas, self.generation
            if self.rng.random() < 0.5:
                self.replicas = self.rng.randint(*REPLICAS)
            else:
                self.generation += 1
            if not await self._apply():
                self.replicas, self.generation = replicas, generation

    async def _apply(self) -> bool:
        """Update through any manager that answers; False (and the old spec stands) if none took it. An update
        whose answer was lost may still have been applied: `settle()` at the end makes the spec certain."""
        for node in self.rng.sample(self.cluster.managers, len(self.cluster.managers)):
            try:
                async with self.cluster.client(node, CLIENT_TIMEOUT) as api:
                    current = await api.service_inspect(SERVICE_NAME)
                    await api.service_update(current["ID"], current["Version"]["Index"], self.spec())
                self.changes["ok"] += 1
                return True
            except Exception as exc:  # noqa: BLE001 -- the next manager may do
                self.on_error(f"service update via {node.name}: {_describe(exc)}")
        self.changes["failed"] += 1
        return False

    async def settle(self, timeout: float) -> None:
        """After the faults: make the wanted spec the service's for certain (once a leader takes writes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self._apply():
                return
            await asyncio.sleep(0.5)
        raise TimeoutError("no manager took the final service update")

    async def unconverged(self) -> str:
        """Why the service is not converged yet ("" once every replica of the newest spec is RUNNING and
        nothing else of it runs)."""
        for node in self.cluster.managers:
            try:
                async with self.cluster.client(node, CLIENT_TIMEOUT) as api:
                    service = await api.service_inspect(SERVICE_NAME)
                    tasks = await api.task_list({"service": [service["ID"]]})
            except Exception:  # noqa: BLE001 -- ask another manager
                continue
            env = f"GENERATION={self.generation}"
            running = [t for t in tasks if t["Status"]["State"] == "running"]
            current = [t for t in running if env in (t["Spec"]["ContainerSpec"].get("Env") or [])]
            if len(current) == self.replicas == len(running) and all(t["DesiredState"] == "running" for t in running):
                return ""
            update = service.get("UpdateStatus") or {}
            return (
                f"{SERVICE_NAME}: {len(current)} of {self.replicas} replicas of generation {self.generation} running, "
                f"{len(running)} running in all; update {update.get('State', 'none')} {update.get('Message', '')}".rstrip()
            )
        return f"{SERVICE_NAME}: no manager answered"
