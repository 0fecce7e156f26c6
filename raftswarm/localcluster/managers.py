"""`LocalCluster`: a real cluster of `raftswarm-node` manager processes on this machine, as a Python API.

Raft tests and `bench/` use it: it lays out manager state directories offline (`node.provision`) with one
root CA, gives each manager its own loopback port, and starts, kills, restarts and adds managers. (A whole
swarm formed through the API with join tokens, as `raftswarm cluster up` makes it, is `localcluster.swarm`.)
Everything it makes lives under `base_dir`, and every process it starts is ended by PID in `close()`.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ..api.client import ApiClient, ApiError
from ..ca.certificates import NodeCertificate, NodeRole, RootCA, new_cluster_id, new_node_id
from ..errors import RaftswarmError
from ..raft.transport import raft_id_of
from .processes import log_tail, spawn, stop_child, wait_for_api
from ..node.provision import provision_manager
from ..node.state_dir import StateDir


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LocalManager:
    name: str
    node_id: str
    port: int
    state_dir: Path
    socket: Path
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def raft_id(self) -> int:
        return raft_id_of(self.node_id)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    base_dir: Path
    tick_ms: int = 100
    election_ticks: int = 10
    snapshot_interval: int = 10_000
    extra_args: list[str] = field(default_factory=list)
    managers: list[LocalManager] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.root = RootCA.create()
        self.cluster_id = new_cluster_id()

    # -- layout ----------------------------------------------------------------------------------------

    def _new_manager(self, offset: int = 0) -> LocalManager:
        name = f"manager{len(self.managers) + offset + 1}"
        directory = self.base_dir / name
        return LocalManager(
            name, new_node_id(), free_port(), directory / "state", directory / "api.sock", directory / "node.log"
        )

    def provision(self, count: int) -> None:
        """Lay out `count` managers that form a new cluster together."""
        fresh = [self._new_manager(i) for i in range(count)]
        members = {m.node_id: ("127.0.0.1", m.port) for m in fresh}
        for manager in fresh:
            provision_manager(
                StateDir(manager.state_dir), [self.root.certificate], self._certificate(manager),
                listen=("127.0.0.1", manager.port), initial_members=members,
            )
            self.managers.append(manager)

    def _certificate(self, manager: LocalManager) -> NodeCertificate:
        return self.root.issue(manager.node_id, NodeRole.MANAGER, self.cluster_id, ips=["127.0.0.1"])

    # -- processes -------------------------------------------------------------------------------------

    def start(self, manager: LocalManager, *extra: str) -> None:
        command = [
            sys.executable, "-m", "raftswarm.node",
            "--state-dir", str(manager.state_dir),
            "--listen-addr", manager.addr,
            "--socket", str(manager.socket),
            "--tick-ms", str(self.tick_ms),
            "--election-ticks", str(self.election_ticks),
            "--snapshot-interval", str(self.snapshot_interval),
            *self.extra_args, *extra,
        ]
        manager.process = spawn(command, manager.log_path)

    def start_all(self) -> None:
        for manager in self.managers:
            if not manager.running():
                self.start(manager)

    def signal(self, manager: LocalManager, signum: int) -> None:
        if manager.running():
            manager.process.send_signal(signum)

    def kill(self, manager: LocalManager) -> None:
        """kill -9: no clean shutdown, nothing flushed that was not already fsynced."""
        if manager.running():
            manager.process.kill()
            manager.process.wait()

    def stop(self, manager: LocalManager, timeout: float = 10.0) -> None:
        if manager.process is not None:
            stop_child(manager.process, timeout)

    def close(self) -> None:
        for manager in self.managers:
            self.stop(manager)

    # -- talking to it ---------------------------------------------------------------------------------

    def client(self, manager: LocalManager, timeout: float = 30.0) -> ApiClient:
        return ApiClient(str(manager.socket), timeout)

    async def wait_ready(self, manager: LocalManager, timeout: float = 20.0) -> None:
        await wait_for_api(manager.name, manager.socket, manager.running, manager.log_path, timeout)

    async def leader(self, timeout: float = 20.0, among: list[LocalManager] | None = None) -> LocalManager:
        """The manager that a majority of running managers agree leads (waits for one)."""
        deadline = time.monotonic() + timeout
        candidates = among or self.managers
        while time.monotonic() < deadline:
            for manager in candidates:
                if not manager.running() or not manager.socket.exists():
                    continue
                client = self.client(manager, 2.0)
                try:
                    status = await client.raft_status()
                except (OSError, ApiError, asyncio.TimeoutError, aiohttp.ClientError):  # down or starting
                    continue
                finally:
                    await client.close()
                if status["role"] == "leader":
                    return manager
            await asyncio.sleep(0.05)
        raise RaftswarmError("no leader was elected in time")

    async def add_manager(self) -> LocalManager:
        """Provision an empty manager, start it, and have the leader add it as a learner, then a voter."""
        manager = self._new_manager()
        provision_manager(
            StateDir(manager.state_dir), [self.root.certificate], self._certificate(manager),
            listen=("127.0.0.1", manager.port),
            join_peers={m.node_id: ("127.0.0.1", m.port) for m in self.managers},
        )
        self.managers.append(manager)
        self.start(manager)
        await self.wait_ready(manager)
        leader = await self.leader()
        async with self.client(leader, 120.0) as client:
            await client.add_voter(manager.raft_id, manager.addr)
        return manager

    def log_tail(self, manager: LocalManager, lines: int = 15) -> str:
        return log_tail(manager.log_path, lines)
