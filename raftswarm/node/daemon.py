"""`NodeDaemon`: one raftswarm node process -- its roles, its API socket, and a clean shutdown on SIGTERM.

A node starts standalone, like dockerd: `swarm init` makes it the first manager of a new swarm, `swarm
join` a worker or manager of an existing one. What it became is in its state directory, so a restart comes
back in the same role. Every node in a swarm keeps a session with the dispatcher (`agent.session`);
managers also run the Raft member, the store and the manager services (`node.manager_role`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import ssl
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..addresses import parse_host_port
from ..agent.session import Session
from .networking import NodeNetworks, data_plane_unavailable, missing_data_plane_tool, namespace_prefix
from ..agent.agent import Agent
from ..api.server import ApiServer
from ..ca.authority import CertificateAuthority, renewal_time
from ..ca.certificates import (
    NodeCertificate,
    NodeRole,
    certificate_issuer_key_id,
    client_ssl_context,
    new_node_key,
    node_csr,
    reload_node_certificate,
    trust_roots,
)
from ..ca.tokens import JoinToken
from ..ca.unlockkey import generate_unlock_key, unlock_key_kek
from ..errors import RaftswarmError, WrongKey
from ..images.registry import RegistryClient
from ..images.store import ImageStore
from ..manager.configapi import ConfigApi
from ..manager.controlapi import ControlApi, new_node_object
from ..manager.networkapi import NetworkApi
from ..manager.serviceapi import ServiceApi
from ..errors import ControlError
from ..raft.core import RaftCore
from ..raft.driver import DriverConfig
from ..raft.storage import RaftStorage
from ..raft.transport import raft_id_of
from ..runtime.containers import ContainerRuntime
from ..supervision import Supervisor
from ..runtime.containers import unavailable as containers_unavailable
from ..runtime.volumes import VolumeStore
from . import preflight
from .images import NodeImages
from .leaderlogs import LeaderLogs, leader_log_broker
from .manager_role import Manager, ManagerConfig
from .manager_client import JOIN_TIMEOUT, call_as, call_pinned, fetch_pinned_roots, join_raft, split_addr
from .provision import provision_manager, provision_worker
from .state_dir import StateDir

log = logging.getLogger(__name__)

DOCKER_DEFAULT_LISTEN = "0.0.0.0:2377"


@dataclass
class NodeConfig:
    state_dir: Path
    socket: Path
    listen_host: str = "0.0.0.0"
    listen_port: int = 2377
    advertise_addr: str | None = None
    force_new_cluster: bool = False
    heartbeat_period: float = 5.0
    raft: dict = field(default_factory=dict)
    driver: DriverConfig = field(default_factory=DriverConfig)
    api_tcp: tuple[str, int] | None = None
    """Also serve the API on this TCP address, over mutual TLS (`api_tls`)."""
    api_tls: tuple[Path, Path, Path] = (Path(), Path(), Path())
    """(CA certificate clients must chain to, server certificate, server key), PEM files."""
    dns_upstreams: list[tuple[str, int]] | None = None
    """Where tasks' resolvers forward unknown names; None: the host's resolv.conf; []: nowhere."""
    registry_mirrors: list[str] = field(default_factory=list)
    """dockerd's --registry-mirror: Docker Hub pulls try these first, in order."""
    insecure_registries: list[str] = field(default_factory=list)
    """dockerd's --insecure-registry: registries (host:port or CIDR) reached without TLS verification."""
    registry_aliases: dict[str, str] = field(default_factory=dict)
    """Registry name as users write it -> where this node reaches it (the local cluster's localhost:5000)."""
    exec_root: Path | None = None
    """dockerd's --exec-root: the containers' execution state (bundles, crun's state); None: in the state dir."""
    init: bool = False
    """dockerd's --init: tasks whose ContainerSpec.Init is unset run under an init (tini) as PID 1."""
    labels: dict[str, str] = field(default_factory=dict)
    """dockerd's --label: the node's engine labels, which it brings to the swarm it inits or joins and tells it
    again with every heartbeat, so a restart with other labels changes them (Description.Engine.Labels;
    `engine.labels.<name>` placement constraints match them)."""


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def api_tls_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """The API's TCP listener: TLS 1.2+, and only clients with a certificate from `ca` (docker's --tlsverify)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class NodeDaemon:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.state_dir = StateDir(config.state_dir)
        # First of all: a second daemon started on a live node's directory must touch nothing of it.
        self._state_lock: int | None = self.state_dir.lock()
        self._socket_bound = False
        self.manager: Manager | None = None
        self.session: Session | None = None
        self.agent: Agent | None = None
        self._gossip_setup: asyncio.Task[None] | None = None
        self.networks: NodeNetworks | None = None
        """The node's data plane (None where it has none); the agent drives it, heartbeats configure it."""
        self.api: ApiServer | None = None
        self._worker_loops = Supervisor()
        """The session, the agent and certificate renewal: restarted with backoff if one fails."""
        self._stop = asyncio.Event()
        self._busy = asyncio.Lock()  # init, join, leave and role changes one at a time
        self._role_change: asyncio.Task[None] | None = None
        self.certificate_renewals = 0
        self.locked = False
        self._rotation_renewal: asyncio.Task[None] | None = None
        self.images = ImageStore(self.state_dir.images)
        # Node-local, as Docker's: kept when the node leaves its swarm, so not under worker/.
        self.volumes = VolumeStore(
            self.state_dir.volumes,
            protected={
                self.state_dir.root: "the node's state directory",
                self.config.socket.parent: "the directory of the node's API socket",
                **({self.config.exec_root: "the node's execution root"} if self.config.exec_root else {}),
            },
        )
        self.registry = RegistryClient(
            self.images,
            mirrors=config.registry_mirrors,
            insecure=config.insecure_registries,
            aliases=config.registry_aliases,
        )

    # -- lifecycle -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """The `raftswarm-node` process: start, serve until SIGTERM or SIGINT, stop."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.stop()

    async def start(self) -> None:
        """Start the roles the state directory records and the API socket (for embedding: no signal handlers)."""
        await self._start()

    async def stop(self) -> None:
        """Stop the API, the roles and the node's tasks."""
        await self._shutdown()

    async def _start(self) -> None:
        if self.config.socket.exists() and _answers(self.config.socket):
            raise RaftswarmError(
                f"another process serves an API at {self.config.socket}; give this node a --socket of its own"
            )
        if self.state_dir.has_swarm():
            await self._start_roles(force_new_cluster=self.config.force_new_cluster)
        self.api = ApiServer(self)
        self.config.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.config.socket.unlink(missing_ok=True)  # left by a process that did not stop cleanly
        await self.api.start_unix(str(self.config.socket))
        self._socket_bound = True
        os.chmod(self.config.socket, 0o660)
        log.info("node API listening on unix://%s", self.config.socket)
        if self.config.api_tcp is not None:
            host, port = self.config.api_tcp
            await self.api.start_tcp(host, port, api_tls_context(*self.config.api_tls))
            log.info("node API listening on tcp://%s:%d (TLS, client certificates required)", host, port)

    async def _start_roles(self, force_new_cluster: bool = False, unlock_kek: bytes | None = None) -> None:
        state = self.state_dir.load_node_state()
        if state.role == "manager":
            kek = unlock_kek or self.state_dir.load_kek()
            if kek is None:
                self.locked = True  # autolocked: nothing is served until `swarm unlock`
                log.warning("this manager is locked; unlock it with `raftswarm swarm unlock`")
                return
            if force_new_cluster:
                self._force_new_cluster(kek)
            listen_host, listen_port = split_addr(state.listen_addr)
            manager = Manager(
                self.state_dir,
                ManagerConfig(listen_host, listen_port, self.config.raft, self.config.driver, self.config.heartbeat_period),
                kek,
                kek_on_disk=unlock_kek is None,
            )
            try:
                await manager.start()
            except WrongKey:
                await manager.close()
                if unlock_kek is not None:
                    raise ControlError("invalid unlock key: it does not open this manager's Raft log", 400) from None
                self.locked = True  # a crash while autolock was being turned on: the key on disk is stale
                log.warning("this manager's Raft log is locked by the swarm's unlock key; run `raftswarm swarm unlock`")
                return
            self.manager = manager
            self.locked = False
            self.manager.rpc.register("node.update", self._rpc_node_update, allowed={"manager"})
            managers = [state.advertise_addr]
        else:
            managers = list(state.join_peers.values())
        _, node = self.state_dir.load_certificates()
        self.session = Session(
            client_ssl_context(self.state_dir.load_trust(), node),
            managers,
            self.config.heartbeat_period,
            self._on_heartbeat,
            self._raft_peers,
            self._heartbeat_params,
        )
        self._worker_loops = Supervisor()
        self._worker_loops.start("session", self.session.run, finishes=True)  # ends when the swarm removes the node
        unavailable = data_plane_unavailable(split_addr(state.advertise_addr)[0])
        missing_tool = missing_data_plane_tool()
        if unavailable and unavailable != missing_tool:
            log.info("no overlay data plane on this node: %s", unavailable)
            networks = None
        else:
            if missing_tool:
                # The operator's to fix, not a property of how the node was started: the data plane runs, its
                # steps fail and are shown until the program is installed, then its repair pass makes them.
                log.warning("the overlay data plane cannot work yet: %s", missing_tool)
            networks = NodeNetworks(
                state.node_id,
                split_addr(state.advertise_addr)[0],
                namespace_prefix(state.node_id),
                dns_upstreams=self.config.dns_upstreams,
            )
        self.networks = networks
        cannot_run = containers_unavailable()
        if cannot_run:
            log.warning("this node cannot run tasks; they will be rejected: %s", cannot_run)
        self.agent = Agent(
            self.session,
            self.session.context,
            ContainerRuntime(
                self.state_dir.worker_containers,
                self.images,
                exec_root=self.config.exec_root,
                init=self.config.init,
                volumes=self.volumes,
            ),
            NodeImages(self.images, self.registry),
            networks,
        )
        self._worker_loops.start("agent", self.agent.run, finishes=True)
        self._worker_loops.start("certificate-renewal", self._renew_certificate_when_due)

    async def _renew_certificate_when_due(self) -> None:
        """Renew at a random point between 50% and 80% of the certificate's lifetime (so a swarm's nodes do
        not all come at once), and again for each new certificate."""
        rng = random.Random()
        while True:
            _, node = self.state_dir.load_certificates()
            due = renewal_time(node.certificate, rng)
            await asyncio.sleep(max((due - datetime.now(UTC)).total_seconds(), 1.0))
            try:
                await self._renew_certificate()
            except (RaftswarmError, OSError) as exc:
                log.warning("could not renew this node's certificate (retrying in 10 s): %s", exc)
                await asyncio.sleep(10)

    async def _renew_certificate(self) -> None:
        async with self._busy:
            trust = x509.load_pem_x509_certificates(self.state_dir.root_ca_cert.read_bytes())
            _, old = self.state_dir.load_certificates()
            key = new_node_key()
            managers = (self.session.managers if self.session else []) + self._raft_peers()
            answer = await call_as(old, trust, managers, "ca.renew", {"csr": node_csr(key).public_bytes(Encoding.PEM)})
            renewed = NodeCertificate.with_key(answer["cert"], key)
            if renewed.identity.role is not old.identity.role:
                return  # the swarm wants another role: the role change (on the next heartbeat) renews for it
            trust = x509.load_pem_x509_certificates(answer["roots"])
            self.state_dir.save_certificates(trust, renewed)
            contexts = ([self.session.context] if self.session else []) + (self.manager.tls_contexts if self.manager else [])
            for context in contexts:
                trust_roots(context, trust)  # a rotation's new root
                reload_node_certificate(context, renewed)
            self.certificate_renewals += 1
            log.info("renewed this node's certificate; the new one expires at %s", renewed.certificate.not_valid_after_utc)

    def _raft_peers(self) -> list[str]:
        driver = self.manager.driver if self.manager is not None else None
        return [f"{host}:{port}" for host, port in driver.peer_addresses().values()] if driver else []

    async def _stop_roles(self, stop_tasks: bool = True) -> None:
        """Stop the roles run here; the tasks too unless `stop_tasks` is False (a role change: the next
        agent finds them running)."""
        await self._worker_loops.close()  # the session, the agent and certificate renewal
        self.session = None
        if self._gossip_setup is not None:
            self._gossip_setup.cancel()
            await asyncio.gather(self._gossip_setup, return_exceptions=True)
            self._gossip_setup = None
        if self.agent is not None:
            await self.agent.close(stop_tasks)
            self.agent = None
        self.networks = None
        if self.manager is not None:
            await self.manager.close()
            self.manager = None

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
        if self._socket_bound:
            self._socket_bound = False
            self.config.socket.unlink(missing_ok=True)  # ours: only the daemon that bound it removes it
        await self._stop_roles()
        await self.registry.close()
        if self._state_lock is not None:
            os.close(self._state_lock)
            self._state_lock = None

    # -- what the API shows ----------------------------------------------------------------------------

    def node_id(self) -> str:
        return self.state_dir.load_node_state().node_id if self.state_dir.has_swarm() else ""

    def warnings(self) -> list[str]:
        """What this node cannot do and what to install for it (`docker info`'s Warnings)."""
        advertised = split_addr(self.state_dir.load_node_state().advertise_addr)[0] if self.state_dir.has_swarm() else None
        return preflight.warnings(advertised) + self._problems()

    def engine_labels(self) -> dict[str, str]:
        """dockerd's --label values (`docker info`'s Labels)."""
        return dict(self.config.labels)

    def local_state(self) -> str:
        if not self.state_dir.has_swarm():
            return "inactive"
        if self.locked:
            return "locked"
        if self.swarm_error():
            return "error"
        return "active" if self.session is not None else "pending"

    def swarm_error(self) -> str:
        """Docker's Swarm.Error: why this node cannot take part in its swarm (it was removed), else ""."""
        if self.session is not None and self.session.removed is not None:
            return (
                f"node is removed from cluster ({self.session.removed}); run `raftswarm swarm leave --force` "
                "and join again with a token to add this machine back"
            )
        return ""

    def control(self) -> ControlApi:
        if self.locked:
            raise ControlError(
                "Swarm is encrypted and needs to be unlocked before it can be used. Please use "
                '"raftswarm swarm unlock" to unlock it.',
                503,
            )
        if self.manager is None:
            if self.state_dir.has_swarm():
                raise ControlError(
                    "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster "
                    "state. Please run this command on a manager node or promote the current node to a manager.",
                    503,
                )
            raise ControlError(
                'This node is not a swarm manager. Use "raftswarm swarm init" or "raftswarm swarm join" to '
                "connect this node to swarm and try again.",
                503,
            )
        return ControlApi(self.manager.store)


    def services(self) -> ServiceApi:
        """Services, tasks and secrets of the swarm this node manages."""
        return ServiceApi(self.control().store)

    def configs(self) -> ConfigApi:
        """Configs of the swarm this node manages."""
        return ConfigApi(self.control().store)

    def swarm_networks(self) -> NetworkApi:
        """The swarm's networks."""
        return NetworkApi(self.control().store)

    def network_peers(self, network_id: str) -> list[dict[str, str]]:
        """The nodes on a swarm network as this node's gossip knows them; [] if this node is not on it."""
        return self.networks.peers(network_id) if self.networks is not None else []

    async def leader_logs(self) -> LeaderLogs:
        """The leader's log broker, reached from this manager."""
        self.control()  # refuses as every swarm call does when this node cannot answer for the swarm
        return await leader_log_broker(self.manager)
    def _refuse_if_in_swarm(self) -> None:
        if self.state_dir.has_swarm():
            raise ControlError(
                'This node is already part of a swarm. Use "raftswarm swarm leave" to leave this swarm and join '
                "another one.",
                503,
            )

    def _listen(self, requested: str) -> tuple[str, int]:
        """The daemon's --listen-addr, unless the request names another address than Docker's default."""
        if requested and requested != DOCKER_DEFAULT_LISTEN:
            return split_addr(requested)
        return self.config.listen_host, self.config.listen_port

    def _advertise(self, listen: tuple[str, int], advertise_addr: str | None, toward: tuple[str, int] | None = None) -> tuple[str, int]:
        """What other nodes should dial: as given, else the listen address if it is specific, else (joining)
        the local address that routes to the manager, as Docker picks it."""
        if advertise_addr:
            return parse_host_port(advertise_addr, listen[1])
        if listen[0] not in ("0.0.0.0", "::", ""):
            return listen
        if toward is not None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(toward)  # UDP connect sends nothing; it only picks the route
                return probe.getsockname()[0], listen[1]
        raise ControlError(
            "could not choose an IP address to advertise since this node listens on all addresses; "
            "give --advertise-addr"
        )

    # -- swarm init / join / leave ---------------------------------------------------------------------

    async def init_swarm(
        self,
        listen_addr: str,
        advertise_addr: str | None,
        autolock: bool,
        cert_expiry: timedelta | None,
        availability: str = "active",
        spec: dict[str, Any] | None = None,
    ) -> str:
        """`swarm init`: a new swarm with this node its only manager, `availability` its own, and the settings
        of `spec` given (as dockerd's init merges them: only what is set; the rest keeps the defaults)."""
        async with self._busy:
            self._refuse_if_in_swarm()
            listen = self._listen(listen_addr)
            advertise = self._advertise(listen, advertise_addr or self.config.advertise_addr)
            ca = CertificateAuthority.create(**({"node_cert_lifetime": cert_expiry} if cert_expiry else {}))
            key = new_node_key()
            enrollment = ca.issue_for_join(ca.join_token(NodeRole.MANAGER), node_csr(key).public_bytes(Encoding.PEM))
            certificate = NodeCertificate.with_key(enrollment.cert_pem, key)
            advertised = f"{advertise[0]}:{advertise[1]}"
            unlock_key = generate_unlock_key() if autolock else None
            unlock_kek = unlock_key_kek(unlock_key) if unlock_key else None
            provision_manager(
                self.state_dir, ca.trust_bundle(), certificate, listen=listen, advertise=advertise,
                initial_members={enrollment.node_id: advertise}, unlock_kek=unlock_kek,
            )
            await self._start_roles(unlock_kek=unlock_kek)
            assert self.manager is not None and self.manager.driver is not None
            node = new_node_object(
                enrollment.node_id, NodeRole.MANAGER, advertised, socket.gethostname(), engine_labels=self.config.labels,
                availability=availability,
            )
            control = ControlApi(self.manager.store)
            await control.initialize(ca, node, unlock_key)
            if spec:
                await control.update_swarm((await control.cluster()).version, spec)
            return enrollment.node_id

    async def join_swarm(
        self,
        remote_addrs: list[str],
        token: str,
        listen_addr: str,
        advertise_addr: str | None,
        availability: str = "active",
    ) -> None:
        async with self._busy:
            self._refuse_if_in_swarm()
            if not remote_addrs:
                raise ControlError("give the address of a manager of the swarm to join")
            parsed = JoinToken.parse(token)  # a malformed token is refused before anything is contacted
            remote = split_addr(remote_addrs[0])
            listen = self._listen(listen_addr)
            advertise = self._advertise(listen, advertise_addr or self.config.advertise_addr, toward=remote)
            trust = await fetch_pinned_roots(remote, parsed)
            key = new_node_key()
            answer = await call_pinned(
                remote, trust, "ca.join",
                {
                    "token": token,
                    "csr": node_csr(key).public_bytes(Encoding.PEM),
                    "addr": f"{advertise[0]}:{advertise[1]}",
                    "hostname": socket.gethostname(),
                    "labels": self.config.labels,
                    "availability": availability,
                },
            )
            certificate = NodeCertificate.with_key(answer["cert"], key)
            trust = x509.load_pem_x509_certificates(answer["roots"])
            managers = {nid: addr for nid, addr in answer["managers"].items()}
            if answer["role"] == NodeRole.MANAGER.value:
                peers = {nid: split_addr(addr) for nid, addr in managers.items()}
                provision_manager(self.state_dir, trust, certificate, listen=listen, advertise=advertise, join_peers=peers)
                await self._start_roles()
                await join_raft(certificate, trust, list(managers.values()), f"{advertise[0]}:{advertise[1]}")
            else:
                provision_worker(self.state_dir, trust, certificate, managers=managers, listen=listen, advertise=advertise)
                await self._start_roles()

    async def unlock(self, key: str) -> None:
        """`swarm unlock`: the swarm's unlock key opens this manager's Raft log; then it serves again."""
        async with self._busy:
            if not self.locked:
                raise ControlError("swarm is not locked!", 503)
            await self._start_roles(unlock_kek=unlock_key_kek(key))

    async def update_node(self, node_id: str, version: int, spec: dict) -> None:
        """Docker's node update. A demotion takes the manager out of the Raft membership first; the node
        itself then renews its certificate and stops its manager role when its heartbeat shows the change
        (a promotion likewise starts one)."""
        control = self.control()
        current = await control.node(node_id)
        if current.version != version:
            raise ControlError(
                f"update out of sequence: node {current.id} is at version {current.version}, not {version}", 409
            )
        if current.data["Spec"]["Role"] == "manager" and spec.get("Role") == "worker":
            assert self.manager is not None and self.manager.driver is not None
            if current.id == self.node_id():
                # Once removed, this manager would never learn that its removal committed: let the leader
                # (another manager, after a transfer if this one leads) do it.
                await self._demote_self_through_leader(current.id, version, spec)
                return
            if raft_id_of(current.id) == self.manager.driver.leader_id:
                # Demoting the leader: it hands leadership over first, so the swarm never waits out an election.
                await self._hand_to_leader(current.id, version, spec)
                return
            await self._remove_manager(control, current.id)
            current = await control.node(current.id)
        await control.update_node(current.id, current.version, spec)

    async def _demote_self_through_leader(self, node_id: str, version: int, spec: dict) -> None:
        assert self.manager is not None and self.manager.driver is not None
        driver = self.manager.driver
        others = driver.core.conf_state.voters - {driver.id}
        if not others:
            raise ControlError("attempting to demote the last manager of the swarm", 400)
        if driver.is_leader:
            progress = driver.core.progress()
            await driver.transfer_leadership(max(others, key=lambda voter: progress.get(voter, (0,))[0]))
        await self._hand_to_leader(node_id, version, spec)

    async def _hand_to_leader(self, node_id: str, version: int, spec: dict) -> None:
        assert self.manager is not None and self.manager.driver is not None
        driver = self.manager.driver
        leader = driver.peer_addresses().get(driver.leader_id)
        if leader is None:
            raise ControlError("no leader is known to hand the demotion to; retry", 503)
        trust = x509.load_pem_x509_certificates(self.state_dir.root_ca_cert.read_bytes())
        _, certificate = self.state_dir.load_certificates()
        await call_as(
            certificate, trust, [f"{leader[0]}:{leader[1]}"], "node.update", {"node_id": node_id, "version": version, "spec": spec}
        )

    async def _rpc_node_update(self, identity, params: dict) -> dict:
        await self.update_node(str(params["node_id"]), int(params["version"]), dict(params["spec"]))
        return {}

    async def _remove_manager(self, control: ControlApi, node_id: str) -> None:
        assert self.manager is not None and self.manager.driver is not None
        driver = self.manager.driver
        raft_id = raft_id_of(node_id)
        voters = driver.core.conf_state.voters
        if raft_id not in voters:
            return
        remaining = voters - {raft_id}
        if not remaining:
            raise ControlError("attempting to demote the last manager of the swarm", 400)
        reachable = {
            raft_id_of(n.id) for n in await control.nodes()
            if n.data.get("ManagerStatus") and n.data["Status"].get("State") == "ready"
        } & remaining
        if len(reachable) < len(remaining) // 2 + 1:
            raise ControlError(
                f"can't demote node {node_id}: only {len(reachable)} of the {len(remaining)} managers that would "
                f"remain are reachable, fewer than the {len(remaining) // 2 + 1} a quorum needs",
                400,
            )
        await driver.remove(raft_id)
        # If it led, it steps down once the removal commits: wait for its successor before writing more.
        deadline = asyncio.get_running_loop().time() + JOIN_TIMEOUT
        while driver.leader_id in (raft_id, 0):
            if asyncio.get_running_loop().time() > deadline:
                raise ControlError("no new leader was elected after the demotion; retry", 503)
            await asyncio.sleep(0.05)
        await control.set_manager_status(node_id, None)

    def _heartbeat_params(self) -> dict:
        """What the dispatcher learns from each heartbeat: which root CA issued this node's certificate, what is
        failing here, and the engine labels this daemon was started with (a restart may change them)."""
        _, node = self.state_dir.load_certificates()
        return {
            "issuer": certificate_issuer_key_id(node.certificate),
            "problems": self._problems(),
            "engine_labels": self.config.labels,
        }

    def _problems(self) -> list[str]:
        """What is failing on this node now (its loops, its data plane), for its status in `node inspect`."""
        failing = {**self._worker_loops.report(), **(self.manager.loops.report() if self.manager is not None else {})}
        loops = [f"this node's {name} loop keeps failing: {problem}" for name, problem in sorted(failing.items())]
        networking = [f"overlay networking: {problem}" for problem in self.networks.problems()] if self.networks else []
        return loops + networking

    def _on_heartbeat(self, answer: dict) -> None:
        networks = self.networks
        keys, attachments = answer.get("gossip_keys") or [], answer.get("attachments") or []
        if networks is not None and keys and self._gossip_setup is None and networks.needs_configure(keys, attachments):
            self._gossip_setup = asyncio.create_task(
                networks.configure(keys, list((answer.get("managers") or {}).values()), attachments)
            )
            self._gossip_setup.add_done_callback(self._gossip_configured)
        rotation = answer.get("rotation")
        if rotation and self._rotation_renewal is None and rotation != self._heartbeat_params()["issuer"]:
            # A root rotation is under way: move to a certificate from the new root now, not at renewal time.
            self._rotation_renewal = asyncio.create_task(self._renew_certificate(), name="rotation-renewal")
            self._rotation_renewal.add_done_callback(self._rotation_renewed)
        desired = answer.get("role")
        if desired not in ("manager", "worker") or self._role_change is not None:
            return
        if desired != self.state_dir.load_node_state().role:
            self._role_change = asyncio.create_task(self._change_role(desired, answer.get("managers") or {}))
            self._role_change.add_done_callback(self._role_changed)

    def _gossip_configured(self, task: asyncio.Task[None]) -> None:
        self._gossip_setup = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not start gossip (retrying at the next heartbeat): %s", task.exception())

    def _rotation_renewed(self, task: asyncio.Task[None]) -> None:
        self._rotation_renewal = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not renew for the root rotation (retrying at the next heartbeat): %s", task.exception())

    def _role_changed(self, task: asyncio.Task[None]) -> None:
        self._role_change = None
        if not task.cancelled() and task.exception() is not None:
            log.error("could not change this node's role", exc_info=task.exception())

    async def _change_role(self, desired: str, managers: dict[str, str]) -> None:
        """Become what the swarm says: renew the certificate for the new role, then swap the roles run here."""
        async with self._busy:
            state = self.state_dir.load_node_state()
            trust = x509.load_pem_x509_certificates(self.state_dir.root_ca_cert.read_bytes())
            _, old = self.state_dir.load_certificates()
            key = new_node_key()
            answer = await call_as(old, trust, list(managers.values()), "ca.renew", {"csr": node_csr(key).public_bytes(Encoding.PEM)})
            certificate = NodeCertificate.with_key(answer["cert"], key)
            trust = x509.load_pem_x509_certificates(answer["roots"])
            listen, advertise = split_addr(state.listen_addr), split_addr(state.advertise_addr)
            await self._stop_roles(stop_tasks=False)
            shutil.rmtree(self.state_dir.raft, ignore_errors=True)
            self.state_dir.kek.unlink(missing_ok=True)
            others = {nid: addr for nid, addr in managers.items() if nid != state.node_id}
            if desired == "manager":
                peers = {nid: split_addr(addr) for nid, addr in others.items()}
                provision_manager(self.state_dir, trust, certificate, listen=listen, advertise=advertise, join_peers=peers)
                await self._start_roles()
                await join_raft(certificate, trust, list(others.values()), state.advertise_addr)
            else:
                provision_worker(self.state_dir, trust, certificate, managers=others, listen=listen, advertise=advertise)
                await self._start_roles()
            log.info("this node is now a %s", desired)

    async def leave_swarm(self, force: bool) -> None:
        async with self._busy:
            if not self.state_dir.has_swarm():
                raise ControlError("This node is not part of a swarm", 503)
            if self.manager is not None and not force:
                raise ControlError(
                    "You are attempting to leave the swarm on a node that is participating as a manager. "
                    "Removing this node leaves the swarm's managers with one fewer; demote it first with "
                    '"raftswarm node demote", or use --force to ignore this message.',
                    503,
                )
            await self._stop_roles()
            self.state_dir.remove_swarm_state()

