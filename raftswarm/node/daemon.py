"""`NodeDaemon`: one raftswarm node process -- its roles, its API socket, and a clean shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from ..api.server import ApiServer
from ..raft.core import RaftCore
from ..raft.driver import DriverConfig
from ..raft.storage import RaftStorage
from ..raft.transport import raft_id_of
from .manager import Manager, ManagerConfig
from .state_dir import StateDir, StateDirError

log = logging.getLogger(__name__)


@dataclass
class NodeConfig:
    state_dir: Path
    socket: Path
    listen_host: str = "0.0.0.0"
    listen_port: int = 2377
    force_new_cluster: bool = False
    raft: dict = field(default_factory=dict)
    driver: DriverConfig = field(default_factory=DriverConfig)


class NodeDaemon:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.state_dir = StateDir(config.state_dir)
        self.manager: Manager | None = None
        self.api: ApiServer | None = None
        self._stop = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        try:
            await self._start()
            await self._stop.wait()
        finally:
            await self._shutdown()

    async def _start(self) -> None:
        if self.state_dir.has_swarm() and self.state_dir.load_node_state().role == "manager":
            kek = self.state_dir.load_kek()
            if kek is None:
                raise StateDirError("this manager is autolocked; unlocking is not supported yet")
            if self.config.force_new_cluster:
                self._force_new_cluster(kek)
            self.manager = Manager(
                self.state_dir,
                ManagerConfig(self.config.listen_host, self.config.listen_port, self.config.raft, self.config.driver),
                kek,
            )
            await self.manager.start()
        self.api = ApiServer(self.manager)
        self.config.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if self.config.socket.exists():
            self.config.socket.unlink()  # left by a process that did not stop cleanly
        await self.api.start_unix(str(self.config.socket))
        os.chmod(self.config.socket, 0o660)
        log.info("node API listening on unix://%s", self.config.socket)

    def _force_new_cluster(self, kek: bytes) -> None:
        """Rewrite the log's membership so this manager alone is the cluster, keeping all committed data."""
        node_id = self.state_dir.load_node_state().node_id
        storage = RaftStorage.open(self.state_dir.raft, kek)
        try:
            state, removals = RaftCore.force_new_cluster(storage.load(), raft_id_of(node_id))
            storage.save(state.hard_state, removals, None)
        finally:
            storage.close()
        log.warning("forced a new cluster: %d other member(s) removed from the membership", len(removals))

    async def _shutdown(self) -> None:
        if self.api is not None:
            await self.api.close()
        if self.manager is not None:
            await self.manager.close()
        if self.config.socket.exists():
            self.config.socket.unlink()
