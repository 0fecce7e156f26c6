"""Embedding raftswarm in another Python program (asyncio).

    from raftswarm.embedding import EmbeddedNode
    from raftswarm.store import create, update

    async with EmbeddedNode(state_dir, listen_addr="127.0.0.1:4242") as node:
        await node.init_swarm()                         # or: await node.join(["10.0.0.1:2377"], token)
        await node.store.transact([create("registers", "x", {"value": 1})])
        current = await node.store.get("registers", "x")                  # linearizable by default
        await node.store.transact([update("registers", "x", {"value": 2}, expect=current.version)])
        async for change in node.store.watch(since=0): ...                # every change, in order, then live ones
        node.is_leader, node.leader_id                                    # who leads the Raft group
        async with node.client() as api: await api.node_list()            # the Docker-shaped HTTP API

`EmbeddedNode` runs the same node daemon as `raftswarm-node` in the caller's event loop (no signal handlers
of its own), serving its API on a unix socket in its state directory. Its replicated store takes any object
kind: transactions are lists of `create`/`update`/`put`/`delete`/`check` operations (from `raftswarm.store`),
each optionally pinned to the version it expects; a transaction applies all or nothing, and a stale version
raises `raftswarm.store.Conflict`. Kinds the swarm itself uses (services, tasks, nodes, networks, ...) are
best changed through the API (`client()`), which validates them.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from .api.client import ApiClient
from .node.daemon import NodeConfig, NodeDaemon
from .store import ReplicatedStore

__all__ = ["EmbeddedNode"]


class EmbeddedNode:
    def __init__(self, state_dir: Path | str, *, listen_addr: str = "127.0.0.1:2377", heartbeat_period: float = 5.0) -> None:
        state_dir = Path(state_dir)
        host, _, port = listen_addr.rpartition(":")
        self.listen_addr = listen_addr
        self.daemon = NodeDaemon(
            NodeConfig(
                state_dir=state_dir,
                socket=state_dir / "api.sock",
                listen_host=host,
                listen_port=int(port),
                heartbeat_period=heartbeat_period,
            )
        )

    async def __aenter__(self) -> EmbeddedNode:
        await self.daemon.start()
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.daemon.stop()

    async def init_swarm(self, advertise_addr: str | None = None, autolock: bool = False) -> str:
        """`swarm init`: this node becomes the first manager of a new swarm. Returns its node ID."""
        return await self.daemon.init_swarm(self.listen_addr, advertise_addr, autolock, None)

    async def join(self, managers: list[str], token: str, advertise_addr: str | None = None) -> None:
        """`swarm join`: as a manager or worker, depending on the token."""
        await self.daemon.join_swarm(managers, token, self.listen_addr, advertise_addr)

    @property
    def node_id(self) -> str:
        return self.daemon.node_id()

    @property
    def store(self) -> ReplicatedStore:
        """The replicated store (managers only)."""
        if self.daemon.manager is None:
            raise RuntimeError("this node is not a swarm manager: it holds no copy of the store")
        return self.daemon.manager.store

    @property
    def is_leader(self) -> bool:
        manager = self.daemon.manager
        return bool(manager is not None and manager.driver is not None and manager.driver.is_leader)

    @property
    def leader_id(self) -> int | None:
        """The Raft ID of the current leader, as this node knows it (None during an election)."""
        manager = self.daemon.manager
        if manager is None or manager.driver is None:
            return None
        return manager.driver.leader_id or None

    def client(self) -> ApiClient:
        """A client of this node's API (Docker's paths; see `raftswarm.api.client.ApiClient`)."""
        return ApiClient(str(self.daemon.config.socket))
