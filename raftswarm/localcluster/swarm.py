"""`SwarmCluster`: `raftswarm cluster up` as a Python API -- a swarm of real `raftswarm-node` processes on this
machine, formed the way a user forms one: standalone nodes, `swarm init` on the first manager, `swarm join`
with the swarm's own join tokens on the others, all through the nodes' API sockets.

Network. As root, where network namespaces work, each node runs in a namespace of its own (`rsw-<name>-<n>`)
with its own hostname and an `eth0` on a private bridge (`rswb-<tag>`), in a /24 that overlaps nothing the
host routes; the host holds .1 on the bridge, so it reaches every node, and every node listens on its own
address with the standard ports. Otherwise each node gets its own loopback address (127.0.0.N) with the
standard ports, and there is no data plane.

Registry. With `registry=True` (what `raftswarm cluster up` asks for) the cluster gets a real registry (Debian's
`docker-registry`, `localcluster.registry`) that the host reaches at `localhost:5000` (127.0.0.1; another free port
if 5000 is taken) and every node reaches under the same name: a node in a namespace through an alias to the
bridge's host address, where an nftables DNAT rule (with route_localnet on the bridge) hands the connection to
127.0.0.1. It is also every node's Docker Hub mirror, so `image: busybox` pulls `library/busybox` from it.
Its storage is shared by the clusters of one clusters directory and kept across `down`/`up`; `samples`
(`images.samples`) are pushed into it as `library/<name>` when `up` starts.

Execution roots. As root, the nodes' `--exec-root`s (their containers' bundles and crun's state, written and
removed at every task start and stop) are directories of one tmpfs per cluster (`run/`, source `rsw-<name>`),
as /run is on a host with systemd; on this machine's ext4 each new file costs a search past recently deleted
inodes. Task logs stay in the state directories.

Records. Everything lives in one directory per cluster: each node's state dir, log, API socket and pidfile,
and `cluster.json`. Every node, namespace and interface is written to `cluster.json` before it is made, and
every node process writes its pidfile itself before it becomes the node, so `down` -- from this process or,
through `SwarmCluster.load`, from another one -- removes all of it, even after an `up` that failed or was
killed halfway.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from ..node.networking import namespace_prefix
from ..api.client import ApiClient, ApiError
from ..raft.transport import raft_id_of
from .registry import PIDFILE, LocalRegistry, stop_pid
from ..images.samples import SAMPLES
from ..images.samples import push as push_sample
from ..images.store import ImageStore
from ..runtime.containers import release_all
from .processes import NodeProcess, NodeStartError, log_tail, spawn, stop_all, wait_for_api
from ..node.state_dir import StateDir
from .hostnet import BridgedNamespace, ClusterError, Resource, bridge_netfilter_hint, choose_subnet, host_networks, ip_command, loopback_addresses, make_bridged_namespaces, netns_unavailable_reason, network_namespaces, nft_tables, port_free, record_before_making, remove_recorded
from ..runtime.volumes import unmount_all

REGISTRY_PORT = 5000
"""Where `raftswarm cluster up`'s registry answers, as kind's and k3d's local registries do."""
REGISTRY_NAME = f"localhost:{REGISTRY_PORT}"
REGISTRY_STORAGE = ".registry"
"""Under the clusters directory, shared by its clusters and kept across `down`; the dot keeps it from being
taken for a cluster."""

DEFAULT_NAME = "default"
EXEC_ROOTS = "run"
RECORD_FILE = "cluster.json"
RECORD_VERSION = 1
SWARM_PORT = 2377

# Names become file names, namespace names, hostnames and (through `interface_tag`) interface names, so they
# keep to what is valid in all of them.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# Interface names hold at most 15 characters (IFNAMSIZ - 1). The longest is a node's veth,
# "rswv" + node number (at most 2 digits) + "-" + tag, which leaves 8 for the tag.
TAG_MAX = 8
MAX_NODES = 99
# sun_path holds 108 bytes, one of them the terminating NUL.
SOCKET_PATH_MAX = 107

NETNS = "netns"
LOOPBACK = "loopback"
NETWORKS = ("auto", NETNS, LOOPBACK)


# Waits while the swarm forms. A node's API socket answers within a second or two of its start, and a 3+2
# cluster is Ready within 3-5 s; the default bound of the whole `up` leaves ample room on a loaded machine
# (every node is a Python process that has to start, and managers join one at a time).
API_START_TIMEOUT = 30.0
UP_TIMEOUT_BASE = 30.0
UP_TIMEOUT_PER_NODE = 3.0
POLL_INTERVAL = 0.05

# `ip netns exec` keeps the host's UTS namespace; `unshare --uts` gives the node its own, and this sets the
# hostname in it before it becomes the node (exec keeps the PID, so the recorded PID is the node's).
_EXEC_WITH_HOSTNAME = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])"


class ClusterExists(ClusterError):
    """`up` with a name that is taken (by a running cluster, or the state `down --keep-state` kept)."""


class ClusterNotFound(ClusterError):
    """No cluster of that name in the clusters directory."""


def default_clusters_dir() -> Path:
    """Where clusters live unless told otherwise (next to the node daemon's own default state dir)."""
    if os.geteuid() == 0:
        return Path("/var/lib/raftswarm/clusters")
    return Path.home() / ".local/share/raftswarm/clusters"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ClusterError(
            f"invalid cluster name {name!r}: use 1 to 32 lowercase letters, digits and '-', starting with a "
            "letter or digit"
        )
    return name


def interface_tag(name: str) -> str:
    """The part of the cluster's interface names that says which cluster they belong to: the name itself
    when it fits, else its first letters and a digest of the whole name."""
    if len(name) <= TAG_MAX:
        return name
    return name[:3] + hashlib.sha256(name.encode()).hexdigest()[: TAG_MAX - 3]


# -- the `ip` command -------------------------------------------------------------------------------------


# -- the cluster ------------------------------------------------------------------------------------------


@dataclass(eq=False)  # a handle on a live node: equal only to itself, usable in sets and as a key
class ClusterNode:
    """One node of the cluster: `manager1`, ..., `worker1`, ...; `number` counts from 1 across both."""

    name: str
    role: str
    number: int
    addr: str
    directory: Path
    namespace: str | None = None
    hostname: str | None = None
    node_id: str = ""
    argv: list[str] = field(default_factory=list)
    process: NodeProcess | None = None

    @property
    def ip(self) -> str:
        return self.addr.rpartition(":")[0]

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def socket(self) -> Path:
        return self.directory / "api.sock"

    @property
    def log_path(self) -> Path:
        return self.directory / "node.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / "node.pid"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def raft_id(self) -> int | None:
        return raft_id_of(self.node_id) if self.node_id else None

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "number": self.number,
            "addr": self.addr,
            "namespace": self.namespace,
            "hostname": self.hostname,
            "node_id": self.node_id,
            "argv": self.argv,
            "pid": self.process.pid if self.process else None,
            "start_time": self.process.start_time if self.process else None,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], cluster_dir: Path) -> ClusterNode:
        """The node's pidfile, written by the node's process itself, wins over the record: whoever started
        the process may have died before recording it."""
        process = NodeProcess.from_pidfile(cluster_dir / record["name"] / "node.pid")
        if process is None and record.get("pid"):
            process = NodeProcess(record["pid"], record["start_time"])
        return cls(
            record["name"],
            record["role"],
            record["number"],
            record["addr"],
            cluster_dir / record["name"],
            record.get("namespace"),
            record.get("hostname"),
            record.get("node_id", ""),
            record.get("argv", []),
            process,
        )


@dataclass
class ManagerState:
    """A manager as `cluster status` shows it. `lag`: committed entries it does not have yet, by the
    leader's account (so it is known for a manager that is down, too)."""

    node: ClusterNode
    raft_role: str | None = None
    term: int | None = None
    commit: int | None = None
    applied: int | None = None
    lag: int | None = None
    error: str = ""


@dataclass
class WorkerState:
    node: ClusterNode
    state: str | None = None
    availability: str | None = None
    error: str = ""


@dataclass
class ClusterStatus:
    managers: list[ManagerState]
    workers: list[WorkerState]
    leader: ClusterNode | None


@dataclass(eq=False)
class SwarmCluster:
    name: str
    directory: Path
    network: str
    nodes: list[ClusterNode] = field(default_factory=list)
    subnet: str | None = None
    bridge: str | None = None
    resources: list[dict[str, str]] = field(default_factory=list)
    state: str = "creating"
    created: str = ""
    up_seconds: float | None = None
    note: str = ""
    registry: str | None = None
    """host:port where the host reaches the cluster's registry (nodes know it as localhost:5000)."""
    docker_hub: bool = True
    """Whether nodes fall back to Docker Hub itself after the cluster's registry (see `up`)."""
    form_seconds: float | None = None
    """Of `up_seconds`, from `swarm init` to every node Ready (the rest: the registry, nodes starting)."""

    # -- making one ------------------------------------------------------------------------------------

    @classmethod
    async def up(
        cls,
        name: str = DEFAULT_NAME,
        managers: int = 3,
        workers: int = 2,
        base_dir: Path | str | None = None,
        network: str = "auto",
        heartbeat_period: float | None = None,
        node_args: Mapping[str, Sequence[str]] | None = None,
        keep_on_failure: bool = False,
        timeout: float | None = None,
        registry: bool = True,
        samples: Sequence[str] = ("busybox",),
        docker_hub: bool = False,
        init: bool = False,
    ) -> SwarmCluster:
        """Start a swarm of `managers` + `workers` nodes and wait until every node is Ready.

        `network`: "netns" (root: a namespace per node), "loopback" (127.0.0.N per node) or "auto" (netns
        where possible; the reason it was not is in `.note`). `node_args` adds arguments to named nodes'
        command lines. `timeout` bounds the whole `up` (default: 30 s + 3 s per node). If anything fails,
        everything made so far is removed, unless `keep_on_failure` (then `down()` removes it). Refuses a
        name that already exists under `base_dir`. `registry` starts the cluster's registry (see the module
        docstring) and pushes the sample images named in `samples` into it ("busybox", "python", or with a tag
        of their own: "busybox:2"). Without `docker_hub`, Docker Hub names reach only that registry (nothing
        leaves the machine: what tests want); with it, the registry is tried first, then Docker Hub, as a
        dockerd with a mirror does. Without a registry, nodes pull from where references point. `init` starts
        every node with `--init` (dockerd's: tasks run under tini unless their ContainerSpec.Init says not to),
        so a task whose process ignores SIGTERM as PID 1 stops at once instead of after its grace period.
        """
        check_name(name)
        if network not in NETWORKS:
            raise ClusterError(f"unknown network {network!r}: use one of {', '.join(NETWORKS)}")
        if managers < 1:
            raise ClusterError("a swarm needs at least one manager")
        if workers < 0 or managers + workers > MAX_NODES:
            raise ClusterError(f"a local cluster holds 1 to {MAX_NODES} nodes")
        names = [f"manager{i}" for i in range(1, managers + 1)] + [f"worker{i}" for i in range(1, workers + 1)]
        unknown = set(node_args or {}) - set(names)
        if unknown:
            raise ClusterError(f"node_args names nodes this cluster does not have: {', '.join(sorted(unknown))}")
        base = Path(base_dir) if base_dir is not None else default_clusters_dir()
        base.mkdir(parents=True, exist_ok=True)
        directory = base / name
        socket_path = directory / max(names, key=len) / "api.sock"
        if len(str(socket_path).encode()) > SOCKET_PATH_MAX:
            raise ClusterError(
                f"the API socket path {socket_path} is longer than a unix socket address can hold "
                f"({SOCKET_PATH_MAX} bytes); use a shorter clusters directory"
            )
        if timeout is None:
            timeout = UP_TIMEOUT_BASE + UP_TIMEOUT_PER_NODE * len(names)
        try:
            directory.mkdir()
        except FileExistsError:
            raise ClusterExists(
                f"a cluster named {name!r} already exists in {base}; remove it with "
                f"`raftswarm cluster down --name {name}`, or choose another name with --name"
            ) from None
        started = time.monotonic()
        cluster = cls(name, directory, LOOPBACK, created=datetime.now(UTC).isoformat(timespec="seconds"))
        cluster.save()
        try:
            others = [c for c in cls.existing(base) if c.name != name]
            addresses = cluster._choose_network(network, others, len(names))
            if registry:
                await cluster._start_registry(base, samples)
                cluster.docker_hub = docker_hub
            extra = {name: [*(["--init"] if init else []), *(node_args or {}).get(name, ())] for name in names}
            cluster._mount_exec_roots()
            cluster._plan(names, addresses, heartbeat_period, extra)
            if cluster.network == NETNS:
                cluster._create_network()
            for node in cluster.nodes:
                node.directory.mkdir()
                cluster.start(node)
            deadline = started + timeout
            await _concurrently(cluster.wait_ready(n, min(API_START_TIMEOUT, _left(deadline))) for n in cluster.nodes)
            forming = time.monotonic()
            await cluster._form_swarm(deadline)
            await cluster._wait_until_all_ready(deadline)
            cluster.form_seconds = round(time.monotonic() - forming, 2)
        except BaseException as failure:
            if keep_on_failure:
                cluster.state = "failed"
                cluster.save()
            else:
                try:
                    cluster.down()
                except ClusterError as cleanup:
                    failure.add_note(str(cleanup))
            raise
        cluster.state = "up"
        cluster.up_seconds = round(time.monotonic() - started, 2)
        cluster.save()
        return cluster

    def _choose_network(self, network: str, others: list[SwarmCluster], count: int) -> list[str]:
        """Settle `self.network` (and the subnet) and return `count` node addresses."""
        if network != LOOPBACK:
            reason = netns_unavailable_reason()
            if reason is None:
                self.network = NETNS
            elif network == NETNS:
                raise ClusterError(f"cannot give nodes network namespaces: {reason}")
            else:
                self.note = (
                    f"network namespaces are not available ({reason}): nodes use loopback addresses, no data plane"
                )
        if self.network == NETNS:
            subnet = choose_subnet(host_networks() + [ipaddress.IPv4Network(c.subnet) for c in others if c.subnet])
            self.subnet = str(subnet)
            return [str(ip) for ip in list(subnet.hosts())[1 : count + 1]]  # .1 is the host's, on the bridge
        return loopback_addresses(count, {n.ip for c in others for n in c.nodes}, self.name, SWARM_PORT)

    def _plan(
        self,
        names: list[str],
        addresses: list[str],
        heartbeat_period: float | None,
        node_args: Mapping[str, Sequence[str]],
    ) -> None:
        """Record every node (name, address, namespace, command line) before anything is made for it."""
        for number, (node_name, ip) in enumerate(zip(names, addresses, strict=True), start=1):
            node = ClusterNode(
                node_name,
                "manager" if node_name.startswith("manager") else "worker",
                number,
                f"{ip}:{SWARM_PORT}",
                self.directory / node_name,
            )
            if self.network == NETNS:
                node.namespace = f"rsw-{self.name}-{number}"
                if shutil.which("unshare"):
                    node.hostname = f"{self.name}-{node_name}"
            node.argv = self._node_argv(node, heartbeat_period, node_args.get(node_name, ()))
            self.nodes.append(node)
        self.save()

    def _mount_exec_roots(self) -> None:
        """As root, a tmpfs for the nodes' execution roots (their `--exec-root`: bundles and crun's state, made
        and removed at every task start and stop), recorded before it is mounted. Without root, nodes keep
        them in their state directories."""
        if os.geteuid() != 0:
            return
        run_dir = self.directory / EXEC_ROOTS
        run_dir.mkdir(mode=0o700)
        self.resources.append({"kind": "tmpfs", "name": str(run_dir)})
        self.save()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0700,nosuid,nodev", f"rsw-{self.name}", str(run_dir)],
            capture_output=True, text=True,
        )
        if mounted.returncode != 0:
            raise ClusterError(f"could not mount a tmpfs at {run_dir}: {mounted.stderr.strip()}")

    def _exec_roots(self) -> Path | None:
        """The tmpfs of the nodes' execution roots, if this cluster has one (`_mount_exec_roots`)."""
        run_dir = self.directory / EXEC_ROOTS
        return run_dir if {"kind": "tmpfs", "name": str(run_dir)} in self.resources else None

    def exec_root(self, node: ClusterNode) -> Path:
        """Where `node` keeps its containers' bundles and crun's state: its directory of the cluster's tmpfs, or
        without one the node's default, in its state directory."""
        run_dir = self._exec_roots()
        return run_dir / node.name if run_dir is not None else StateDir(node.state_dir).worker_containers

    def _node_argv(self, node: ClusterNode, heartbeat_period: float | None, extra: Sequence[str]) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "raftswarm.node",
            "--state-dir",
            str(node.state_dir),
            "--listen-addr",
            node.addr,
            "--advertise-addr",
            node.addr,
            "--socket",
            str(node.socket),
        ]
        if self._exec_roots() is not None:
            argv += ["--exec-root", str(self.exec_root(node))]
        if heartbeat_period is not None:
            argv += ["--heartbeat-period", str(heartbeat_period)]
        if self.registry is not None:
            reached = self._registry_from_nodes()
            argv += ["--registry-mirror", f"http://{reached}"]
            if reached != REGISTRY_NAME:
                argv += ["--registry-alias", f"{REGISTRY_NAME}={reached}"]
            if not self.docker_hub:
                argv += ["--registry-alias", f"docker.io={reached}"]
        argv += list(extra)
        if node.namespace:
            # nsenter, not `ip netns exec`: that one gives the process a mount namespace of its own, and the
            # named namespaces a node makes for its overlays would exist only inside it.
            prefix = ["nsenter", f"--net=/run/netns/{node.namespace}"]
            if node.hostname:
                prefix += ["unshare", "--uts", sys.executable, "-c", _EXEC_WITH_HOSTNAME, node.hostname]
            argv = prefix + argv
        return argv

    async def _start_registry(self, base: Path, samples: Sequence[str]) -> None:
        """The cluster's registry on the host's loopback, recorded before it starts; then the samples."""
        run_dir = self.directory / "registry"
        self.resources.append({"kind": "registry", "name": str(run_dir / PIDFILE)})
        self.save()
        port = REGISTRY_PORT if port_free("127.0.0.1", REGISTRY_PORT) else None
        registry = LocalRegistry(base / REGISTRY_STORAGE, run_dir, port=port)
        await registry.start(detach=True)
        self.registry = registry.address
        self.save()
        for entry in samples:
            name, _, tag = entry.partition(":")
            if name not in SAMPLES:
                raise ClusterError(f"no sample image {name!r}: choose from {', '.join(sorted(SAMPLES))}")
            sample = await asyncio.to_thread(SAMPLES[name])
            repository, _, default_tag = sample.reference.partition(":")
            await asyncio.to_thread(push_sample, sample, f"{self.registry}/library/{repository}:{tag or default_tag}")

    def _registry_from_nodes(self) -> str:
        """Where the nodes reach the registry: through the bridge's host address in namespaces, directly on
        loopback addresses."""
        assert self.registry is not None
        port = self.registry.rsplit(":", 1)[1]
        if self.network == NETNS:
            assert self.subnet is not None
            return f"{next(ipaddress.IPv4Network(self.subnet).hosts())}:{port}"
        return f"127.0.0.1:{port}" if port != str(REGISTRY_PORT) else REGISTRY_NAME

    def _forward_registry(self, gateway: str) -> None:
        """Connections from the nodes to the bridge's host address on the registry's port go to the registry
        on 127.0.0.1 (which needs route_localnet on the bridge: the kernel otherwise drops packets from
        outside toward loopback addresses)."""
        assert self.registry is not None and self.bridge is not None
        port = int(self.registry.rsplit(":", 1)[1])
        table = f"rswreg-{interface_tag(self.name)}"
        self._make("nftables", table, nft_tables())
        ruleset = (
            f"table ip {table} {{\n"
            "  chain prerouting {\n"
            "    type nat hook prerouting priority dstnat; policy accept;\n"
            f'    iifname "{self.bridge}" ip daddr {gateway} tcp dport {port} dnat to 127.0.0.1:{port}\n'
            "  }\n"
            "}\n"
        )
        done = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True)
        if done.returncode != 0:
            raise ClusterError(f"could not forward the registry to the nodes: nft: {done.stderr.strip()}")
        Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/route_localnet").write_text("1\n")

    def _create_network(self) -> None:
        """The bridge with the host's address, then per node: namespace, veth pair with `eth0` inside."""
        assert self.subnet is not None
        tag = interface_tag(self.name)
        self.bridge = f"rswb-{tag}"
        namespaces = []
        for node in self.nodes:
            assert node.namespace is not None
            namespaces.append(BridgedNamespace(node.namespace, f"rswv{node.number}-{tag}", node.ip))
        gateway = make_bridged_namespaces(self.bridge, ipaddress.IPv4Network(self.subnet), namespaces, self._make)
        if self.registry is not None:
            self._forward_registry(gateway)

    def _make(self, kind: str, name: str, existing: set[str]) -> None:
        record_before_making(
            self.resources,
            self.save,
            kind,
            name,
            existing,
            f"it belongs to another cluster named {self.name!r} (in another clusters directory?) or to something "
            "else; remove that first, or choose another name",
        )

    async def _form_swarm(self, deadline: float) -> None:
        """`swarm init` on the first manager, then `swarm join` on every other node with the real tokens.
        Managers join one at a time (each is a Raft membership change); workers join meanwhile."""
        first, *rest = self.nodes
        try:
            async with self.client(first, _left(deadline)) as api:
                first.node_id = await api.swarm_init({"ListenAddr": first.addr, "AdvertiseAddr": first.addr})
                tokens = (await api.swarm_inspect())["JoinTokens"]
        except (ApiError, OSError, TimeoutError) as exc:
            raise ClusterError(
                f"{first.name} could not init the swarm: {exc or type(exc).__name__}\n"
                f"{first.name}'s log:\n{log_tail(first.log_path)}"
            ) from None
        self.save()

        async def join(node: ClusterNode) -> None:
            request = {
                "ListenAddr": node.addr,
                "AdvertiseAddr": node.addr,
                "RemoteAddrs": [first.addr],
                "JoinToken": tokens["Manager" if node.role == "manager" else "Worker"],
            }
            try:
                async with self.client(node, _left(deadline)) as api:
                    await api.swarm_join(request)
                    node.node_id = (await api.info())["Swarm"]["NodeID"]
            except (ApiError, OSError, TimeoutError) as exc:
                hint = bridge_netfilter_hint() if self.network == NETNS else ""
                raise ClusterError(
                    f"{node.name} could not join the swarm at {first.addr}: {exc or type(exc).__name__}\n"
                    f"{node.name}'s log:\n{log_tail(node.log_path)}{hint}"
                ) from None
            self.save()

        async def join_managers() -> None:
            for node in rest:
                if node.role == "manager":
                    await join(node)

        await _concurrently([join_managers(), *(join(node) for node in rest if node.role == "worker")])

    async def _wait_until_all_ready(self, deadline: float) -> None:
        """Until `node ls` on the first manager shows every node Ready, each manager reachable, one leader."""
        first = self.nodes[0]
        wanted = {node.node_id for node in self.nodes}
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                async with self.client(first, 5.0) as api:
                    seen = await api.node_list()
            except (ApiError, OSError, TimeoutError):
                seen = []
            if _swarm_ready(seen, wanted):
                return
            await asyncio.sleep(POLL_INTERVAL)
        shown = {n["ID"]: n for n in seen}
        late = [n for n in self.nodes if n.node_id not in shown or not _node_ready(shown[n.node_id])] or self.managers
        raise ClusterError(
            f"the swarm was not ready in time (not Ready, or no leader): {', '.join(n.name for n in late)}\n"
            + "\n".join(f"{n.name}'s log:\n{log_tail(n.log_path)}" for n in late)
        )

    # -- finding one again -----------------------------------------------------------------------------

    @classmethod
    def load(cls, name: str = DEFAULT_NAME, base_dir: Path | str | None = None) -> SwarmCluster:
        """The cluster as recorded in its `cluster.json` (by this process or another)."""
        check_name(name)
        base = Path(base_dir) if base_dir is not None else default_clusters_dir()
        directory = base / name
        try:
            record = json.loads((directory / RECORD_FILE).read_text())
        except FileNotFoundError:
            if directory.is_dir():
                # `up` died between making the directory and writing the record: there is nothing else.
                return cls(name, directory, LOOPBACK, state="failed")
            raise ClusterNotFound(f"there is no cluster named {name!r} in {base}") from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read {directory / RECORD_FILE}: {exc}") from None
        return cls(
            record["name"],
            directory,
            record["network"],
            [ClusterNode.from_record(n, directory) for n in record["nodes"]],
            record.get("subnet"),
            record.get("bridge"),
            record.get("resources", []),
            record.get("state", "up"),
            record.get("created", ""),
            record.get("up_seconds"),
            record.get("note", ""),
            record.get("registry"),
        )

    @classmethod
    def existing(cls, base_dir: Path | str | None = None) -> list[SwarmCluster]:
        """Every cluster recorded under `base_dir`, by name."""
        base = Path(base_dir) if base_dir is not None else default_clusters_dir()
        if not base.is_dir():
            return []
        found = []
        for directory in sorted(base.iterdir()):
            if directory.is_dir() and NAME_PATTERN.fullmatch(directory.name):
                try:
                    found.append(cls.load(directory.name, base))
                except ClusterError:
                    continue  # unreadable record: `cluster down --name` on it says why
        return found

    def save(self) -> None:
        """Write `cluster.json` atomically (a reader never sees half a record)."""
        record = {
            "version": RECORD_VERSION,
            "name": self.name,
            "network": self.network,
            "subnet": self.subnet,
            "bridge": self.bridge,
            "state": self.state,
            "created": self.created,
            "up_seconds": self.up_seconds,
            "note": self.note,
            "registry": self.registry,
            "resources": self.resources,
            "nodes": [node.record() for node in self.nodes],
        }
        staging = self.directory / (RECORD_FILE + ".tmp")
        staging.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(staging, self.directory / RECORD_FILE)

    # -- its nodes -------------------------------------------------------------------------------------

    @property
    def managers(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.role == "manager"]

    @property
    def workers(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.role == "worker"]

    def node(self, name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterError(f"cluster {self.name!r} has no node {name!r}")

    def client(self, node: ClusterNode, timeout: float = 30.0) -> ApiClient:
        return ApiClient(str(node.socket), timeout)

    def start(self, node: ClusterNode) -> None:
        """Start the node's process (it comes back in the role its state dir records)."""
        if node.running():
            return
        node.process = NodeProcess.started(spawn(node.argv, node.log_path, detach=True, pidfile=node.pidfile))
        self.save()

    async def wait_ready(self, node: ClusterNode, timeout: float = API_START_TIMEOUT) -> None:
        """Until the node's API socket answers."""
        try:
            await wait_for_api(node.name, node.socket, node.running, node.log_path, timeout)
        except NodeStartError as exc:
            raise ClusterError(str(exc)) from None

    def stop(self, node: ClusterNode) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after the grace period."""
        if node.process is not None:
            stop_all([node.process])

    def kill(self, node: ClusterNode) -> None:
        """kill -9: no clean shutdown, nothing flushed that was not already fsynced."""
        if node.process is not None:
            node.process.kill()

    async def restart(self, node: ClusterNode) -> None:
        """Stop the node cleanly if it runs, start it again and wait until its API answers."""
        await asyncio.to_thread(self.stop, node)
        self.start(node)
        await self.wait_ready(node)

    async def raft_status(self, node: ClusterNode, timeout: float = 1.0) -> dict[str, Any] | None:
        """A manager's own view of Raft (role, term, leader, commit, ...); None if it is not running or does
        not answer within `timeout`."""
        if not node.running():
            return None
        try:
            async with self.client(node, timeout) as api:
                return await api.raft_status()
        except (ApiError, OSError, TimeoutError):
            return None

    async def leader(self) -> ClusterNode | None:
        """The manager that says it leads, in the highest term any manager claims; None during an election."""
        managers = self.managers
        statuses = await asyncio.gather(*(self.raft_status(m) for m in managers))
        leaders = [(s["term"], m) for m, s in zip(managers, statuses) if s and s["role"] == "leader"]
        return max(leaders, key=lambda pair: pair[0])[1] if leaders else None

    def log_tail(self, node: ClusterNode, lines: int = 15) -> str:
        return log_tail(node.log_path, lines)

    async def status(self) -> ClusterStatus:
        """Each manager's Raft state (from its own /raftswarm/raft) and each worker's node state (from /nodes
        on a manager that answers, the leader if it does)."""

        async def raft(node: ClusterNode) -> tuple[ClusterNode, dict[str, Any] | str]:
            if not node.running():
                return node, "not running"
            try:
                async with self.client(node, 3.0) as api:
                    return node, await api.raft_status()
            except (ApiError, OSError, TimeoutError) as exc:
                return node, str(exc) or type(exc).__name__

        answers = await asyncio.gather(*(raft(m) for m in self.managers))
        statuses = {node.name: answer for node, answer in answers if isinstance(answer, dict)}
        leaders = [s for s in statuses.values() if s["role"] == "leader"]
        leader_status = max(leaders, key=lambda s: s["term"]) if leaders else None
        leader = next((m for m in self.managers if statuses.get(m.name) is leader_status), None)
        managers = []
        for node, answer in answers:
            state = ManagerState(node)
            if isinstance(answer, dict):
                state.raft_role, state.term = answer["role"], answer["term"]
                state.commit, state.applied = answer["commit"], answer["applied"]
            else:
                state.error = answer
            if leader_status is not None and node.raft_id is not None:
                match = leader_status["progress"].get(str(node.raft_id))
                if match is not None:
                    state.lag = max(0, leader_status["commit"] - match[0])
            managers.append(state)
        nodes_by_id: dict[str, dict[str, Any]] = {}
        error = "no manager answered"
        for manager in ([leader] if leader else []) + [m for m in self.managers if m.name in statuses]:
            try:
                async with self.client(manager, 3.0) as api:
                    nodes_by_id = {n["ID"]: n for n in await api.node_list()}
                break
            except (ApiError, OSError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
        workers = []
        for node in self.workers:
            found = nodes_by_id.get(node.node_id)
            if found is None:
                workers.append(WorkerState(node, error=error if not nodes_by_id else "not in the swarm"))
            else:
                workers.append(WorkerState(node, found["Status"]["State"], found["Spec"].get("Availability")))
        return ClusterStatus(managers, workers, leader)

    # -- removing it -----------------------------------------------------------------------------------

    def down(self, keep_state: bool = False) -> None:
        """End every process by PID, remove every namespace and interface, then the directory (unless
        `keep_state`). What could not be removed stays recorded, and the error lists it; `down` again retries."""
        failures = []
        stuck = stop_all([node.process for node in self.nodes if node.process is not None])
        for node in self.nodes:
            if node.process is not None and node.process in stuck:
                failures.append(f"{node.name} (PID {node.pid}) is still running: not permitted to end it, or stuck")
            else:
                node.process = None
                node.pidfile.unlink(missing_ok=True)
        for node in self.nodes:
            # Tasks outlive a node killed with SIGKILL (their monitors wait for the next agent): end them too,
            # and the overlay namespaces such a node could not remove.
            state = StateDir(node.state_dir)
            if state.worker_containers.is_dir():
                failures += release_all(
                    state.worker_containers, ImageStore(state.images), exec_root=self.exec_root(node)
                )
            if state.volumes.is_dir():
                # A bind-like volume left mounted would have the directory's removal delete what it binds.
                failures += unmount_all(state.volumes)
        prefixes = tuple(f"{namespace_prefix(node.node_id)}ov-" for node in self.nodes if node.node_id)
        for namespace in network_namespaces() if prefixes else ():
            if namespace.startswith(prefixes):
                try:
                    ip_command("netns", "delete", namespace)
                except ClusterError as exc:
                    failures.append(str(exc))
        self.resources, removal_failures = remove_recorded(self.resources, _remove_other_resource)
        failures += removal_failures
        self.state = "down"
        if failures or keep_state:
            self.save()
        if failures:
            raise ClusterError(
                f"cluster {self.name!r} is not completely down:\n"
                + "\n".join(failures)
                + f"\nwhat remains is recorded in {self.directory / RECORD_FILE}; `raftswarm cluster down` retries"
            )
        if not keep_state:
            shutil.rmtree(self.directory)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _remove_other_resource(resource: Resource) -> None:
    """Remove what a cluster records besides its bridge, veths and namespaces: the tmpfs of its nodes'
    execution roots, the registry's nftables table and the registry itself."""
    kind, name = resource["kind"], resource["name"]
    if kind == "tmpfs":
        if os.path.ismount(name):
            done = subprocess.run(["umount", name], capture_output=True, text=True)
            if done.returncode != 0:
                raise ClusterError(f"could not unmount the tmpfs at {name}: {done.stderr.strip()}")
    elif kind == "nftables":
        if name in nft_tables():
            done = subprocess.run(["nft", "delete", "table", "ip", name], capture_output=True, text=True)
            if done.returncode != 0:
                raise ClusterError(f"could not remove nftables table {name}: {done.stderr.strip()}")
    elif kind == "registry":
        if not stop_pid(Path(name)):
            raise ClusterError(f"the cluster's registry (pidfile {name}) is still running")
    else:
        raise ClusterError(f"{RECORD_FILE} lists a {kind} {name!r} that this version of raftswarm cannot remove")


def _node_ready(node: dict[str, Any]) -> bool:
    manager = node.get("ManagerStatus")
    return node["Status"]["State"] == "ready" and (not manager or manager.get("Reachability") == "reachable")


def _swarm_ready(nodes: list[dict[str, Any]], wanted: set[str]) -> bool:
    """Exactly the wanted nodes, every one Ready (and reachable, for managers), and one leader."""
    leaders = sum(bool((n.get("ManagerStatus") or {}).get("Leader")) for n in nodes)
    return {n["ID"] for n in nodes} == wanted and all(map(_node_ready, nodes)) and leaders == 1


async def _concurrently(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run them in a task group; the first failure cancels the others and is raised as itself (the others
    are usually its echoes)."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())
