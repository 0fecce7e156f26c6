"""The manager role: Raft over mutual TLS on the listen address, the encrypted log, the replicated store.

`Manager` wires the pieces together -- `RaftStorage` (raft/), `RaftTransport` (raft/), `RaftDriver`
(raft/) and `ReplicatedStore` (store/) -- and owns their lifecycle. The node daemon starts it when the
state directory says this node is a manager; the control loops (`manager.reconciler`: orchestrators,
updater, scheduler, reaper; `manager.dispatcher`) run on top of its store on the leader.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from dataclasses import dataclass, field

from ..addresses import parse_host_port
from ..ca.authority import CertificateAuthority
from ..ca.certificates import CertificateError, NodeIdentity, NodeRole, client_ssl_context, server_ssl_context
from ..manager.caserver import CAServer
from ..objects.kinds import CLUSTER, CLUSTER_KEY
from ..manager.dispatcher import DEFAULT_HEARTBEAT_PERIOD, DOWN_AFTER_MISSED, Dispatcher
from ..manager.keymanager import KeyManager
from ..manager.logbroker import LogBroker
from ..manager.reconciler import Reconciler
from ..rpc.channel import RpcServer
from ..raft.core import RaftConfig
from ..raft.driver import DriverConfig, RaftDriver
from ..raft.storage import RaftStorage
from ..raft.transport import PeerIdentify, PeerRefused, RaftTransport, raft_id_of
from ..store import ReplicatedStore, WatchCompacted
from ..supervision import Supervisor
from .listener import ClusterListener
from .state_dir import StateDir, StateDirError
from cryptography import x509

log = logging.getLogger(__name__)


@dataclass
class ManagerConfig:
    listen_host: str
    listen_port: int
    raft: dict = field(default_factory=dict)
    """Overrides of RaftConfig fields (election_ticks, heartbeat_ticks, ...)."""
    driver: DriverConfig = field(default_factory=DriverConfig)
    heartbeat_period: float = DEFAULT_HEARTBEAT_PERIOD


class Manager:
    def __init__(self, state_dir: StateDir, config: ManagerConfig, kek: bytes, kek_on_disk: bool = True) -> None:
        self.state_dir = state_dir
        self.config = config
        self._kek = kek
        self._kek_on_disk = kek_on_disk
        self.node_state = state_dir.load_node_state()
        self.raft_id = raft_id_of(self.node_state.node_id)
        self.storage: RaftStorage | None = None
        self.transport: RaftTransport | None = None
        self.driver: RaftDriver | None = None
        self.listener: ClusterListener | None = None
        self.store = ReplicatedStore()
        self.rpc = RpcServer()
        self.tls_contexts: list[ssl.SSLContext] = []
        """Contexts presenting this node's certificate, reloaded in place when it is renewed."""
        self.reconciler: Reconciler | None = None
        self.loops = Supervisor()
        """The leader's control loops and the removed-node watcher: restarted with backoff if they fail."""

    async def start(self) -> None:
        if not RaftStorage.exists(self.state_dir.raft):
            raise StateDirError(f"{self.state_dir.raft} holds no Raft log: this node was never a manager")
        _, node = self.state_dir.load_certificates()
        root = self.state_dir.load_trust()
        self.storage = RaftStorage.open(self.state_dir.raft, self._kek)
        listener_ssl = server_ssl_context(root, node)
        listener_ssl.verify_mode = ssl.CERT_OPTIONAL  # a joining node has no certificate yet (node.listener)
        raft_client_ssl = client_ssl_context(root, node)
        self.tls_contexts = [listener_ssl, raft_client_ssl]
        self.transport = RaftTransport(
            node_id=self.node_state.node_id,
            identify=raft_peer_identity(self.node_state.cluster_id),
            server_hostname=NodeRole.MANAGER.value,
            server_ssl=server_ssl_context(root, node),  # unused: the listener owns the port
            client_ssl=raft_client_ssl,
            listen_host=self.config.listen_host,
            listen_port=self.config.listen_port,
            on_message=self._on_message,
        )
        known_peers = {}
        for raft_hex, addr in self.node_state.join_peers.items():
            known_peers[int(raft_hex, 16)] = parse_host_port(addr)
        self.driver = RaftDriver(
            RaftConfig(self.raft_id, **self.config.raft),
            self.storage,
            self.transport,
            self.store,
            self.config.driver,
            known_peers=known_peers,
        )
        self.store.attach(self.driver)
        self.listener = ClusterListener(
            host=self.config.listen_host,
            port=self.config.listen_port,
            server_ssl=listener_ssl,
            cluster_id=self.node_state.cluster_id,
            rpc=self.rpc,
            raft_inbound=self.transport.accept_stream,
            check_peer=self._check_peer,
        )
        self.ca_server = CAServer(self.store, self.driver, self.rpc)
        self.dispatcher = Dispatcher(self.store, self.driver, self.rpc, self.config.heartbeat_period)
        self.logbroker = LogBroker(
            self.store, self.driver, self.rpc, pickup_timeout=DOWN_AFTER_MISSED * self.config.heartbeat_period
        )
        await self.transport.start(listen=False)
        await self.listener.start()
        await self.driver.start()
        self.key_manager = KeyManager(self.store, self.driver, self._kek, self._kek_on_disk, self._save_kek)
        self.reconciler = Reconciler(self.store, self.driver)
        self.loops.start("dispatcher", self.dispatcher.run)
        self.loops.start("reconciler", self.reconciler.run)
        self.loops.start("key-manager", self.key_manager.run)
        self.loops.start("removed-nodes", self._cut_off_removed_nodes)
        log.info("manager %s (raft %x) listening on port %d", self.node_state.node_id, self.raft_id, self.listener.port)

    def _save_kek(self, kek: bytes | None) -> None:
        if kek is None:
            self.state_dir.remove_kek()
        else:
            self.state_dir.save_kek(kek)

    def _check_peer(self, identity: NodeIdentity) -> None:
        """Refuse a removed node's certificate on every new connection (the CA's blocked list, as applied here)."""
        cluster = self.store.state.get(CLUSTER, CLUSTER_KEY)
        if cluster is not None:
            CertificateAuthority.from_state(cluster.data["CA"]).check_peer(identity)

    async def _cut_off_removed_nodes(self) -> None:
        """Every manager closes the open connections of a node removed from the swarm as soon as it applies the
        removal, and its dispatcher forgets the node's session: the certificate check at accept and on each
        call refuses it from then on, and a connection opened before must not outlive the removal (a long-poll
        would otherwise keep delivering assignments, and heartbeats the gossip keys)."""
        assert self.listener is not None
        cut: set[str] = set()
        while True:
            try:
                async for _ in self.store.watch(self.store.state.version, frozenset({CLUSTER})):
                    cut = self._cut_off(cut)
            except WatchCompacted:
                cut = self._cut_off(cut)

    def _cut_off(self, already: set[str]) -> set[str]:
        cluster = self.store.state.get(CLUSTER, CLUSTER_KEY)
        if cluster is None:
            return already
        blocked = set(cluster.data["CA"].get("blocked_nodes") or ())
        for node_id in sorted(blocked - already):
            closed = self.listener.cut_off(node_id) if self.listener is not None else 0
            self.dispatcher.forget(node_id)
            log.info("node %s was removed from the swarm: closed its %d open connection(s)", node_id, closed)
        return blocked

    def _on_message(self, message) -> None:
        if self.driver is not None:
            self.driver.receive(message)

    async def close(self) -> None:
        await self.loops.close()
        if self.listener is not None:
            await self.listener.close()
        if self.driver is not None:
            await self.driver.close()
        if self.transport is not None:
            await self.transport.close()
        if self.storage is not None:
            self.storage.close()

    def status(self) -> dict:
        """What `cluster status` and the tests show: role, term, commit, applied, members and their progress."""
        driver = self.driver
        assert driver is not None
        core = driver.core
        return {
            "node_id": self.node_state.node_id,
            "raft_id": self.raft_id,
            "role": core.role.value,
            "term": core.term,
            "leader": core.leader_id,
            "commit": core.commit_index,
            "applied": driver.applied_index,
            "voters": sorted(core.conf_state.voters),
            "learners": sorted(core.conf_state.learners),
            "progress": {str(k): list(v) for k, v in core.progress().items()},
            "transport": dataclasses.asdict(self.transport.stats) if self.transport else {},
            "listener_refused": dict(self.listener.refused) if self.listener else {},
            "failing_loops": self.loops.report(),
            "skipped_objects": {
                f"{kind}/{object_id}": problem for (kind, object_id), problem in (self.reconciler.skipped if self.reconciler else {}).items()
            },
        }


def raft_peer_identity(cluster_id: str) -> PeerIdentify:
    """Who may speak Raft with a manager of `cluster_id`: a node holding a manager certificate of that cluster."""

    def identify(certificate: bytes) -> str:
        try:
            identity = NodeIdentity.from_certificate(x509.load_der_x509_certificate(certificate))
        except (CertificateError, ValueError) as exc:
            raise PeerRefused(str(exc), "bad_certificate") from None
        if identity.role is not NodeRole.MANAGER:
            raise PeerRefused(
                f"node {identity.node_id} holds a {identity.role} certificate; only managers speak Raft", "not_manager"
            )
        if identity.cluster_id != cluster_id:
            raise PeerRefused(
                f"node {identity.node_id} belongs to cluster {identity.cluster_id}, not {cluster_id}", "other_cluster"
            )
        return identity.node_id

    return identify
