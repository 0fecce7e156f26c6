"""`NodeNetworks`: this node's part of the swarm's overlay networks, driven by its tasks and by gossip.
It lives with the node (which assembles the roles) because it joins the agent to `gossip` and
`dataplane`; the agent calls it through `agent.agent.TaskNetworks`.

When a task with NetworksAttachments starts (between the creation of its namespaces and the start of its
command: `runtime.containers.ContainerRuntime.start(prepare=...)`), for each of its networks:

- the network's overlay exists on this node (`dataplane.overlay`: a namespace with a bridge and a VXLAN
  device on the node's advertise address), created on first use and removed when the node's last task
  on it ends;
- the task gets `eth<N>` with its allocated address, in network order (eth0 is its first network);
- its endpoint (address, MAC, this node's underlay address, service, task name, the service's VIP and
  endpoint mode) goes into the network's gossip table `endpoints`, which reaches exactly the nodes that
  have tasks on the network (`gossip`);
- inside the task, a resolver at 127.0.0.11 (`dataplane.dns`) answers for the services and tasks of its
  networks, and an nftables table (`dataplane.loadbalancer`) sends each service VIP to the service's tasks.

Every node applies every endpoint it hears of on its networks: a remote one becomes a static neighbour and
FDB entry on the overlay, and each endpoint updates the DNS records and the VIP backends of the local tasks.
A task that ends, or a node declared dead by gossip, deletes its endpoints everywhere, so its address leaves
DNS and the load balancers.

This is level-triggered. What the node's kernel should hold is worked out anew from its tasks and gossip's
tables (`_wanted`; the DNS records too), never from what it did before; a repair pass compares it, step by step (IPv4
forwarding, the routing mesh's table, the gateway bridge, each overlay, each task's VIP table), with what the
kernel holds, and applies the difference. A pass runs after every change (a task attached or detached, an
endpoint event from gossip), using what earlier passes read and did, and every `REPAIR_INTERVAL` seconds
reading the kernel anew: whatever was deleted behind the node's back (a table, a map element, an FDB or
neighbour entry, an overlay's namespace or device) or never made comes back by itself. A step that fails is
retried with backoff, logged once per distinct error, and listed by `problems()` until it succeeds.

The data plane needs root and an address of the node's own (a namespace per node, as `cluster up` makes
as root); on loopback addresses, nodes share one network namespace and their VXLAN devices would collide,
so the node says so and runs tasks with loopback only. Netlink and nft calls block: they run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..dataplane import DataplaneError
from ..dataplane.dns import DnsRecords, DnsServer
from ..dataplane.gateway import BRIDGE as GATEWAY_BRIDGE
from ..dataplane.gateway import TABLE as GATEWAY_TABLE
from ..dataplane.gateway import GatewayBridge, GatewayState, table_intact
from ..dataplane.loadbalancer import (
    LoadBalancerError,
    LoadBalancerState,
    apply_nft,
    held_state,
    read_tables,
    render_ruleset,
    repair_script,
)
from ..dataplane.overlay import OverlayNetwork, OverlayRepair, OverlayState, Peer, plan_repair
from ..dataplane.repair import Repairs
from ..gossip.node import GossipConfig, GossipNode
from ..gossip.table import TableConfig
from ..gossip.wire import Keyring
from ..manager.keymanager import gossip_keyring_order
from ..manager.networkapi import vxlan_id
from ..runtime.containers import Container
from ..runtime.files import configured_nameservers

log = logging.getLogger(__name__)

GOSSIP_PORT = 7946
ENDPOINTS = "endpoints"
"""The gossip table of task endpoints, one per network."""
TASK_TABLE = "raftswarm"
"""The nftables table of VIPs inside each task's namespace."""
MESH_TABLE = "raftswarm-mesh"
"""The nftables table of published ports in the node's own namespace (the routing mesh)."""
INGRESS_IFNAME = "rswingress0"
"""The node's own interface on the ingress overlay."""
OWN_NETNS = "/proc/self/ns/net"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
EPHEMERAL_PORTS = "/proc/sys/net/ipv4/ip_local_port_range"
DEFAULT_EPHEMERAL_PORTS = (32768, 60999)
"""Where host-mode ports published as 0 are taken from: the kernel's ephemeral range, and its default."""
OVERLAY_CREATE_ATTEMPTS = 25
"""Tries at making a network's overlay, 0.2 s apart: a VNI freed by a removed network is reused at once."""
TABLE_SYNC_INTERVAL = 5.0
"""How often a node exchanges a network's whole table with a peer on it: what repairs an endpoint event
lost on the way (UDP). networkdb's 30 s would leave a task unresolvable that long."""
REPAIR_INTERVAL = 5.0
"""How often a node reads what its kernel holds of its networks: the same bound as an endpoint lost by gossip.
A reading is one netlink dump per overlay and one `nft -j list ruleset` for the node and per task (about
10 ms each, process start included): for 30 tasks, some 5% of one core."""
REPAIR_PAUSE = 0.05
"""The pause after each pass, so that a burst of gossip events (a service of many tasks starting) costs a few
passes, not one each."""


def namespace_prefix(node_id: str) -> str:
    """What the names of a node's overlay namespaces start with (`<prefix>ov-<vni>`): unique per node on a
    machine, so a harness can find what a killed node left."""
    return f"rsw{node_id[:6]}"


DATA_PLANE_TOOLS = (("nft", "nftables"), ("ip", "iproute2"))
"""Programs the data plane runs, with the Debian package of each: checked once at start, so a node without
one says so then, instead of every task failing on it."""


def data_plane_unavailable(advertise_ip: str) -> str | None:
    """Why this node cannot run overlays, or None."""
    if os.geteuid() != 0:
        return "the node is not running as root"
    if ipaddress.ip_address(advertise_ip).is_loopback:
        return f"the node's address {advertise_ip} is a loopback address shared with other nodes"
    return missing_data_plane_tool()


def missing_data_plane_tool() -> str | None:
    """What a node that should have a data plane lacks to run it, naming the package, or None."""
    for tool, package in DATA_PLANE_TOOLS:
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed: install the Debian package {package} (./setup does) and restart the node"
    return None


@dataclass
class _Endpoint:
    network_id: str
    task_id: str
    ip: str
    """Without the prefix length."""
    mac: str
    node_ip: str
    service_id: str
    service_name: str
    task_name: str
    vip: str | None
    endpoint_mode: str
    ports: list[list[Any]] = field(default_factory=list)
    """Ingress-published ports of the service: [protocol, target port, published port]."""
    aliases: list[str] = field(default_factory=list)
    """The service's other names on this network (`--network name=N,alias=A`)."""

    def encode(self) -> bytes:
        return msgpack.packb(self.__dict__, use_bin_type=True)

    @classmethod
    def decode(cls, value: bytes) -> _Endpoint:
        return cls(**msgpack.unpackb(value, raw=False))


@dataclass
class _LocalTask:
    task_id: str
    netns_path: str
    endpoints: list[_Endpoint]
    interfaces: dict[str, str] = field(default_factory=dict)
    """Network ID -> the task's interface on it (eth<N>, in network order)."""
    gateway_address: ipaddress.IPv4Address | None = None
    gateway_ifname: str = ""
    """The task's interface on the gateway bridge."""
    host_ports: list[tuple[str, int, int]] = field(default_factory=list)
    """Host-mode published ports: (protocol, published port, target port)."""
    dns: DnsServer | None = None
    has_table: bool = False
    """Whether its VIP table was made (attach got that far): from then on the repair pass keeps it."""


@dataclass(frozen=True)
class _OverlayWanted:
    endpoints: dict[str, tuple[str, str, str]]
    """Local endpoints: IP -> (namespace path, MAC, interface name)."""
    peers: frozenset[Peer]


_Step = tuple[str, ...]
"""A repair step's key: ("forwarding",), ("mesh",), ("gateway",), ("overlay", network ID), ("table", task ID)."""


class NodeNetworks:
    def __init__(
        self,
        node_id: str,
        advertise_ip: str,
        prefix: str,
        dns_upstreams: list[tuple[str, int]] | None = None,
        repair_interval: float = REPAIR_INTERVAL,
    ) -> None:
        """`prefix` starts the name of every namespace this node makes (unique per node on a machine);
        `dns_upstreams`: where tasks' resolvers forward other names (None: the host's resolv.conf);
        `repair_interval`: seconds between two readings of the kernel (see the module docstring)."""
        self.node_id = node_id
        self.dns_upstreams = dns_upstreams
        self.advertise_ip = advertise_ip
        self.prefix = prefix
        self.repair_interval = repair_interval
        self.gossip: GossipNode | None = None
        self.records = DnsRecords()
        self.overlays: dict[str, OverlayNetwork] = {}
        """The overlays this node must have: of its tasks' networks and of the ingress network."""
        self.local: dict[str, _LocalTask] = {}
        self.endpoints: dict[str, dict[str, _Endpoint]] = {}
        """Network ID -> task ID -> endpoint, of every task on the node's networks (own ones included), as
        gossip had them at the last repair pass."""
        self.ingress: _Endpoint | None = None
        """This node's own endpoint on the ingress network, once the managers gave it an address."""
        self.gateway = GatewayBridge()
        self.repairs = Repairs()
        self._network_names: dict[str, str] = {}
        self._gateway_ready = False
        self._meshed = False
        self._keys: list[bytes] = []
        self._kernel = asyncio.Lock()
        """Held by whatever changes the kernel (attach, detach, a repair pass), so each sees the others whole."""
        self._held: dict[_Step, Any] = {}
        """What each step's part of the kernel held after the step last read or changed it; a step not in it
        is read before its next repair. Emptied by every periodic pass: the kernel may have changed behind us."""
        self._wake = asyncio.Event()
        self._repairer: asyncio.Task[None] | None = None

    def problems(self) -> list[str]:
        """What the node fails to make its kernel hold, one line per failing step (retried with backoff):
        for `docker info`'s Warnings and the node's status message. Empty when all is well."""
        return self.repairs.problems()

    # -- gossip ----------------------------------------------------------------------------------------

    def needs_configure(self, keys: list[bytes], attachments: list[dict[str, Any]]) -> bool:
        """Whether a heartbeat brings anything `configure` has not applied yet (most bring nothing new)."""
        return self.gossip is None or keys != self._keys or (self.ingress is None and bool(attachments))

    async def configure(self, keys: list[bytes], managers: list[str], attachments: list[dict[str, Any]] = ()) -> None:
        """The swarm's gossip keys (newest first), its managers' addresses and this node's attachments (its
        ingress address), from a heartbeat: starts gossip on the first call, rotates the keyring on later
        ones, and joins the routing mesh once the node has its ingress address."""
        seeds = sorted({f"{host.rpartition(':')[0] or host}:{GOSSIP_PORT}" for host in managers} - {self._own_seed()})
        if not keys:
            return
        keyring = Keyring(gossip_keyring_order(keys))
        self._keys = list(keys)
        if self.gossip is None:
            self.gossip = GossipNode(
                self.node_id,
                self.advertise_ip,
                GOSSIP_PORT,
                keyring=keyring,
                seeds=seeds,
                meta=self.advertise_ip.encode(),
                on_table=self._on_table,
                config=GossipConfig(tables=TableConfig(sync_interval=TABLE_SYNC_INTERVAL)),
            )
            await self.gossip.start()
        else:
            self.gossip.set_keyring(keyring)
        self._start_repairs()
        if self.ingress is None and attachments:
            async with self._kernel:
                await self._join_ingress(attachments[0])
                await self._repair(full=False)

    def peers(self, network_id: str) -> list[dict[str, str]]:
        """The nodes on a network as this node's gossip knows them, for `network inspect`'s Peers (as dockerd
        shows networkdb's): the member's name (the node's ID) and gossip address, by name. Empty unless
        this node is on the network itself; a node on it that gossip has no address for shows "unknown", as
        in dockerd."""
        if self.gossip is None:
            return []
        on_network = self.gossip.nodes_on(network_id)
        if self.gossip.name not in on_network:
            return []
        addresses = {m.name: m.addr.rpartition(":")[0].strip("[]") for m in self.gossip.members()}
        return [{"Name": name, "IP": addresses.get(name, "unknown")} for name in sorted(on_network)]

    async def _join_ingress(self, attachment: dict[str, Any]) -> None:
        """The node's own interface on the ingress overlay; the repair pass then makes its published-port
        table (routing mesh)."""
        assert self.gossip is not None
        network, address = attachment["Network"], attachment["Addresses"][0]
        overlay = await self._overlay(network)
        mac = await asyncio.to_thread(overlay.attach, OWN_NETNS, address, None, INGRESS_IFNAME)
        endpoint = _Endpoint(
            network_id=network["ID"],
            task_id=f"node-{self.node_id}",
            ip=str(ipaddress.IPv4Interface(address).ip),
            mac=mac,
            node_ip=self.advertise_ip,
            service_id="",
            service_name="",
            task_name="",
            vip=None,
            endpoint_mode="vip",
        )
        self.gossip.join_network(network["ID"])
        if endpoint.task_id in self.gossip.entries(network["ID"], ENDPOINTS):
            self.gossip.update_entry(network["ID"], ENDPOINTS, endpoint.task_id, endpoint.encode())
        else:
            self.gossip.create_entry(network["ID"], ENDPOINTS, endpoint.task_id, endpoint.encode())
        self.ingress = endpoint
        self._held.pop(("overlay", network["ID"]), None)

    def _own_seed(self) -> str:
        return f"{self.advertise_ip}:{GOSSIP_PORT}"

    async def close(self) -> None:
        """Stop following gossip and repairing. The overlays of tasks still running stay (a restarted agent
        takes them back); `detach` each task first to remove everything."""
        await self._stop_repairs()
        for local in self.local.values():
            if local.dns is not None:
                await local.dns.close()
        if self.gossip is not None:
            await self.gossip.close()
            self.gossip = None

    async def remove_all(self) -> None:
        """Take the node out of every network (it leaves the swarm or stops): tasks' interfaces, the routing
        mesh's table and interface, the overlays. Repairs stop first, or they would build it all again."""
        await self._stop_repairs()
        async with self._kernel:
            for task_id in list(self.local):
                await self._detach(task_id)
            if self._meshed:
                try:
                    script = f"add table ip {MESH_TABLE}\ndelete table ip {MESH_TABLE}\n"
                    await asyncio.to_thread(apply_nft, None, script)
                except DataplaneError as exc:  # never made, most likely: nft is what is missing
                    log.warning("could not remove the routing mesh's table: %s", exc)
                self._meshed = False
            if self._gateway_ready:
                await asyncio.to_thread(self.gateway.remove)
                self._gateway_ready = False
            if self.ingress is not None:
                ingress, self.ingress = self.ingress, None
                if self.gossip is not None and ingress.task_id in self.gossip.entries(ingress.network_id, ENDPOINTS):
                    self.gossip.delete_entry(ingress.network_id, ENDPOINTS, ingress.task_id)
                overlay = self.overlays.pop(ingress.network_id, None)
                if overlay is not None:
                    await asyncio.to_thread(overlay.detach, ingress.ip)
                    await asyncio.to_thread(overlay.remove)
            self._held.clear()

    # -- tasks -------------------------------------------------------------------------------------------

    async def attach(self, task: dict[str, Any], running: Container) -> None:
        """Plug a starting task into its networks (see the module docstring), then the gateway bridge (its
        way out, and in for its host-mode published ports). What is the task's own (its interfaces, resolver
        and VIP table) is made here or the task fails; the rest (peers, the routing mesh) is the repair
        pass's, which runs once before this returns and retries whatever failed."""
        attachments = task.get("NetworksAttachments") or []
        if attachments and self.gossip is None:
            raise RuntimeError("the node has no gossip key from the managers yet; the task will be retried")
        self._start_repairs()
        async with self._kernel:
            await self._attach(task, running, attachments)
            await self._repair(full=False)

    async def _attach(self, task: dict[str, Any], running: Container, attachments: list[dict[str, Any]]) -> None:
        local = _LocalTask(task["ID"], running.netns_path, [])
        self.local[task["ID"]] = local
        service_name = (task.get("ServiceAnnotations") or {}).get("Name", "")
        task_name = f"{service_name}.{task.get('Slot') or task.get('NodeID', '')}.{task['ID']}"
        for index, attachment in enumerate(attachments):
            network = attachment["Network"]
            address = attachment["Addresses"][0]
            overlay = await self._overlay(network)
            ifname = f"eth{index}"
            mac = await asyncio.to_thread(overlay.attach, running.netns_path, address, None, ifname)
            vip, mode = _service_vip(task, network["ID"])
            ports = [
                [p.get("Protocol", "tcp"), p["TargetPort"], p["PublishedPort"]]
                for p in (task.get("Endpoint") or {}).get("Ports") or []
                if p.get("PublishMode", "ingress") == "ingress" and p.get("PublishedPort")
            ]
            endpoint = _Endpoint(
                network_id=network["ID"],
                task_id=task["ID"],
                ip=str(ipaddress.IPv4Interface(address).ip),
                mac=mac,
                node_ip=self.advertise_ip,
                service_id=task.get("ServiceID", ""),
                service_name=service_name,
                task_name=task_name,
                vip=vip,
                endpoint_mode=mode,
                ports=ports if network.get("Spec", {}).get("Ingress") else [],
                aliases=_aliases(task, network),
            )
            local.endpoints.append(endpoint)
            local.interfaces[network["ID"]] = ifname
            self._held.pop(("overlay", network["ID"]), None)
            self.gossip.join_network(network["ID"])
            if task["ID"] in self.gossip.entries(network["ID"], ENDPOINTS):
                self.gossip.update_entry(network["ID"], ENDPOINTS, task["ID"], endpoint.encode())  # plugged again
            else:
                self.gossip.create_entry(network["ID"], ENDPOINTS, task["ID"], endpoint.encode())
        await self._attach_gateway(task, local, f"eth{len(attachments)}")
        self._refresh_endpoints()
        # A task's --dns servers are where its resolver forwards other names, as Docker's embedded DNS does.
        nameservers = configured_nameservers((task.get("Spec") or {}).get("ContainerSpec") or {})
        upstreams = [(server, 53) for server in nameservers] if nameservers else self.dns_upstreams
        local.dns = DnsServer(running.netns_path, [e.network_id for e in local.endpoints], self.records, upstreams=upstreams)
        await local.dns.start()
        vips = _task_vips(local, self.endpoints)
        await asyncio.to_thread(apply_nft, running.netns_path, render_ruleset(TASK_TABLE, vips))
        local.has_table = True
        self._held[("table", task["ID"])] = vips

    async def _attach_gateway(self, task: dict[str, Any], local: _LocalTask, ifname: str) -> None:
        if not self._gateway_ready:
            await asyncio.to_thread(self.gateway.create)
            self._gateway_ready = True
        taken = {t.gateway_address for t in self.local.values()}
        address = next(a for a in self.gateway.subnet.hosts() if a != self.gateway.gateway and a not in taken)
        local.gateway_address, local.gateway_ifname = address, ifname
        await asyncio.to_thread(self.gateway.attach, local.netns_path, address, ifname, _gateway_ifname(task["ID"]))
        self._held.pop(("gateway",), None)
        # Checked here, so a port published in both modes fails the task rather than the whole routing mesh.
        mesh = _mesh_state(self.ingress, self.endpoints, [t for t in self.local.values() if t is not local])
        for port in (task.get("Endpoint") or {}).get("Ports") or []:
            if port.get("PublishMode") == "host":
                protocol = port.get("Protocol", "tcp")
                published = port.get("PublishedPort") or _free_host_port(protocol, mesh)
                mesh = mesh.with_host_port(published, protocol, str(address), port["TargetPort"])
                local.host_ports.append((protocol, published, port["TargetPort"]))

    def host_ports(self, task_id: str) -> list[tuple[str, int, int]]:
        """The task's host-mode published ports as this node publishes them: (protocol, published port, target
        port), a port published as 0 with the port chosen for it (Docker's task PortStatus)."""
        local = self.local.get(task_id)
        return list(local.host_ports) if local is not None else []

    async def detach(self, task_id: str) -> None:
        """The task ended: its endpoints leave the swarm's tables, its interfaces and resolver go."""
        async with self._kernel:
            await self._detach(task_id)
        self._wake.set()  # the others' tables and the routing mesh follow in the next pass

    async def _detach(self, task_id: str) -> None:
        local = self.local.pop(task_id, None)
        if local is None:
            return
        self._held.pop(("table", task_id), None)
        self._held.pop(("gateway",), None)
        if local.dns is not None:
            await local.dns.close()
        if local.gateway_address is not None:
            await asyncio.to_thread(self.gateway.detach, _gateway_ifname(task_id))
        for endpoint in local.endpoints:
            self._held.pop(("overlay", endpoint.network_id), None)
            if self.gossip is not None and task_id in self.gossip.entries(endpoint.network_id, ENDPOINTS):
                self.gossip.delete_entry(endpoint.network_id, ENDPOINTS, task_id)
            overlay = self.overlays.get(endpoint.network_id)
            if overlay is not None:
                await asyncio.to_thread(overlay.detach, endpoint.ip)
        for network_id in {e.network_id for e in local.endpoints}:
            in_use = any(e.network_id == network_id for t in self.local.values() for e in t.endpoints)
            if not in_use and not (self.ingress is not None and self.ingress.network_id == network_id):
                if self.gossip is not None:
                    self.gossip.leave_network(network_id)
                overlay = self.overlays.pop(network_id, None)
                if overlay is not None:
                    await asyncio.to_thread(overlay.remove)
        self._refresh_endpoints()

    async def _overlay(self, network: dict[str, Any]) -> OverlayNetwork:
        """The network's overlay, made now if the node has none yet (its peers are the repair pass's)."""
        overlay = self.overlays.get(network["ID"])
        if overlay is not None:
            return overlay
        config = network["IPAMOptions"]["Configs"][0]
        vni = vxlan_id(network)
        for old_id, old in list(self.overlays.items()):
            if old.vni == vni:  # a removed network's overlay, its VNI handed out again: it goes first
                del self.overlays[old_id]
                await asyncio.to_thread(old.remove)
        subnet, gateway = config["Subnet"], config["Gateway"]
        overlay = OverlayNetwork(self.prefix, network["ID"], vni, subnet, gateway, self.advertise_ip)
        for attempt in range(OVERLAY_CREATE_ATTEMPTS):
            try:
                await asyncio.to_thread(overlay.create)
                break
            except DataplaneError:
                # The kernel may still be tearing down the previous device with this VNI.
                if attempt == OVERLAY_CREATE_ATTEMPTS - 1:
                    raise
                await asyncio.to_thread(overlay.remove)
                await asyncio.sleep(0.2)
        self.overlays[network["ID"]] = overlay
        self._network_names[network["ID"]] = (network.get("Spec") or {}).get("Name") or network["ID"]
        return overlay

    # -- what gossip tells -------------------------------------------------------------------------------

    def _on_table(self, event: Any) -> None:
        if event.table == ENDPOINTS:
            self._wake.set()

    def _refresh_endpoints(self) -> None:
        """`endpoints` and the DNS records from what gossip holds now and this node's own endpoints."""
        own = [e for t in self.local.values() for e in t.endpoints] + ([self.ingress] if self.ingress else [])
        endpoints: dict[str, dict[str, _Endpoint]] = {e.network_id: {} for e in own}
        for network_id, found in endpoints.items():
            entries = self.gossip.entries(network_id, ENDPOINTS) if self.gossip is not None else {}
            for key, value in entries.items():
                try:
                    found[key] = _Endpoint.decode(value)
                except (ValueError, TypeError) as exc:
                    log.debug("ignoring endpoint %s on network %s that does not decode: %s", key, network_id, exc)
        for endpoint in own:
            endpoints[endpoint.network_id][endpoint.task_id] = endpoint
        self.endpoints = endpoints
        if self.records.replace(_records(endpoints)):
            log.debug("DNS records updated")

    # -- the repair pass -----------------------------------------------------------------------------------

    def _start_repairs(self) -> None:
        if self._repairer is None:
            self._repairer = asyncio.create_task(self._repair_continually(), name="network-repair")

    async def _stop_repairs(self) -> None:
        if self._repairer is not None:
            async with self._kernel:  # between passes: a cancelled pass's threads would go on changing the kernel
                self._repairer.cancel()
            await asyncio.gather(self._repairer, return_exceptions=True)
            self._repairer = None

    async def _repair_continually(self) -> None:
        """A pass after every change gossip reports, and one reading the whole kernel every
        `repair_interval`; passes for failed steps when their backoff ends."""
        next_full = time.monotonic()
        while True:
            self._wake.clear()
            full = time.monotonic() >= next_full
            if full:
                next_full = time.monotonic() + self.repair_interval
            try:
                async with self._kernel:
                    await self._repair(full)
            except Exception:
                log.exception("a network repair pass failed; the next one reads the kernel anew")
                self._held.clear()
            retry = self.repairs.next_due()
            wake_at = next_full if retry is None else min(next_full, retry)
            await asyncio.sleep(REPAIR_PAUSE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wake_at - time.monotonic(), 0))

    async def _repair(self, full: bool) -> None:
        """One pass (with `_kernel` held): for each step, what the kernel holds (read unless known) against
        what it should hold, and the difference applied; `full` forgets what is known first."""
        believed = dict(self._held) if full else {}
        if full:
            self._held.clear()
        self._refresh_endpoints()
        wanted = self._wanted()
        self._meshed = self._meshed or ("mesh",) in wanted
        self.repairs.retain(wanted)
        due = [step for step in wanted if self.repairs.due(step)]
        unknown = [step for step in due if step not in self._held]
        if unknown:
            read = await asyncio.to_thread(self._read, unknown, wanted)
        else:
            read = {}
        for step in due:
            held = self._held[step] if step in self._held else read[step]
            if isinstance(held, Exception):
                self.repairs.failed(step, self._what(step), str(held))
                continue
            try:
                done = await asyncio.to_thread(self._apply, step, held, wanted[step])
            except (DataplaneError, OSError) as exc:
                self.repairs.failed(step, self._what(step), str(exc))
                self._held.pop(step, None)
                continue
            self.repairs.succeeded(step)
            self._held[step] = _held_after(step, wanted[step])
            if done and step in believed and held != believed[step]:
                log.info("%s had changed behind the node's back; repaired: %s", self._what(step), done)
            elif done:
                log.debug("%s: %s", self._what(step), done)  # a change gossip or a task brought

    def _wanted(self) -> dict[_Step, Any]:
        """What each step should make the kernel hold, from the node's tasks and `endpoints`."""
        local = [t for t in self.local.values() if os.path.exists(t.netns_path)]  # the rest are being detached
        wanted: dict[_Step, Any] = {}
        if self.ingress is not None or any(t.host_ports for t in local):
            wanted[("forwarding",)] = True
            wanted[("mesh",)] = _mesh_state(self.ingress, self.endpoints, local)
        if self._gateway_ready:
            wanted[("forwarding",)] = True
            wanted[("gateway",)] = {
                _gateway_ifname(t.task_id): (t.netns_path, t.gateway_address, t.gateway_ifname)
                for t in local
                if t.gateway_address is not None
            }
        for network_id in self.overlays:
            own = {
                e.ip: (t.netns_path, e.mac, t.interfaces[network_id])
                for t in local
                for e in t.endpoints
                if e.network_id == network_id
            }
            if self.ingress is not None and self.ingress.network_id == network_id:
                own[self.ingress.ip] = (OWN_NETNS, self.ingress.mac, INGRESS_IFNAME)
            peers = frozenset(
                Peer(e.ip, e.mac.lower(), e.node_ip)
                for e in self.endpoints.get(network_id, {}).values()
                if e.node_ip != self.advertise_ip
            )
            wanted[("overlay", network_id)] = _OverlayWanted(own, peers)
        for t in local:
            if t.has_table:
                wanted[("table", t.task_id)] = _task_vips(t, self.endpoints)
        return wanted

    def _read(self, steps: list[_Step], wanted: dict[_Step, Any]) -> dict[_Step, Any]:
        """What the kernel holds for each of `steps` (blocking; or the exception reading it raised): one
        `nft -j list ruleset` for the node's namespace and one per task, one netlink dump per overlay."""
        read: dict[_Step, Any] = {}
        node_tables: dict[str, list[dict[str, Any]]] | Exception | None = None
        for step in steps:
            try:
                if step[0] in ("mesh", "gateway") and node_tables is None:
                    try:
                        node_tables = read_tables(None)
                    except DataplaneError as exc:
                        node_tables = exc
                if step == ("forwarding",):
                    with open(IP_FORWARD) as forwarding:
                        read[step] = forwarding.read().strip() == "1"
                elif step == ("mesh",):
                    if isinstance(node_tables, Exception):
                        raise node_tables
                    read[step] = held_state(node_tables.get(MESH_TABLE))
                elif step == ("gateway",):
                    if isinstance(node_tables, Exception):
                        raise node_tables
                    read[step] = (table_intact(node_tables.get(GATEWAY_TABLE)), self.gateway.read(wanted[step]))
                elif step[0] == "overlay":
                    read[step] = self.overlays[step[1]].read()
                elif step[0] == "table":
                    read[step] = held_state(read_tables(self.local[step[1]].netns_path).get(TASK_TABLE))
            except (DataplaneError, OSError) as exc:
                read[step] = exc
        return read

    def _apply(self, step: _Step, held: Any, wanted: Any) -> str:
        """Make the step's part of the kernel hold `wanted`, given that it holds `held` (blocking). Says
        what it did, or "" if nothing needed doing."""
        if step == ("forwarding",):
            if held:
                return ""
            with open(IP_FORWARD, "w") as forwarding:
                forwarding.write("1")  # the node forwards published ports to tasks on other nodes, and tasks out
            return "turned IPv4 forwarding on"
        if step == ("mesh",) or step[0] == "table":
            netns, table = (None, MESH_TABLE) if step == ("mesh",) else (self.local[step[1]].netns_path, TASK_TABLE)
            script = repair_script(table, held, wanted)
            if not script:
                return ""
            apply_nft(netns, script)
            return f"wrote table {table} anew" if held is None else f"updated table {table}"
        if step == ("gateway",):
            return self._repair_gateway(held, wanted)
        return _repair_overlay(self.overlays[step[1]], plan_repair(held, wanted.endpoints, wanted.peers), wanted)

    def _repair_gateway(self, held: tuple[bool, GatewayState], wanted: dict[str, tuple[str, Any, str]]) -> str:
        table_intact_, state = held
        done = []
        if not (table_intact_ and state.bridge):
            self.gateway.create()
            done.append("made the bridge and its table anew")
        replug = [name for name in sorted(wanted) if name not in state.ports and os.path.exists(wanted[name][0])]
        for name in replug:
            netns_path, address, ifname = wanted[name]
            self.gateway.attach(netns_path, address, ifname, name)
        if replug:
            done.append(f"plugged {len(replug)} task(s) in again")
        return "; ".join(done)

    def _what(self, step: _Step) -> str:
        if step == ("forwarding",):
            return "IPv4 forwarding (net.ipv4.ip_forward)"
        if step == ("mesh",):
            return f"the routing mesh (nftables table {MESH_TABLE})"
        if step == ("gateway",):
            return f"the gateway bridge {GATEWAY_BRIDGE} (nftables table {GATEWAY_TABLE})"
        if step[0] == "overlay":
            return f"overlay network {self._network_names.get(step[1], step[1])}"
        return f"the VIP table of task {step[1]}"


def _repair_overlay(overlay: OverlayNetwork, plan: OverlayRepair, wanted: _OverlayWanted) -> str:
    """Apply `plan` (blocking): every part is tried, and the errors come together at the end."""
    if not plan:
        return ""
    if plan.create:
        overlay.create()
    errors = []
    try:
        overlay.remove_entries(plan.stale_neighbours, plan.stale_forwarding)
    except DataplaneError as exc:
        errors.append(str(exc))
    for ip in sorted(plan.attach):
        netns_path, mac, ifname = wanted.endpoints[ip]
        if os.path.exists(netns_path):
            try:
                overlay.attach(netns_path, ip, mac, ifname)
            except DataplaneError as exc:
                errors.append(str(exc))
    try:
        overlay.add_peers(sorted(plan.add_peers, key=lambda p: (p.ip, p.mac)))
    except DataplaneError as exc:
        errors.append(str(exc))
    if errors:
        raise DataplaneError("; ".join(errors))
    done = [
        "made its namespace and devices anew" if plan.create else "",
        f"removed {len(plan.stale_neighbours | plan.stale_forwarding)} stale entry(ies)"
        if plan.stale_neighbours or plan.stale_forwarding
        else "",
        f"plugged {len(plan.attach)} endpoint(s) in" if plan.attach else "",
        f"added {len(plan.add_peers)} peer(s)" if plan.add_peers else "",
    ]
    return "; ".join(d for d in done if d)


def _held_after(step: _Step, wanted: Any) -> Any:
    """What a step's part of the kernel holds once the step succeeded: what was wanted."""
    if step[0] == "overlay":
        return OverlayState(
            built=True,
            endpoints=frozenset(wanted.endpoints),
            neighbours=frozenset((p.ip, p.mac) for p in wanted.peers),
            forwarding=frozenset((p.mac, p.underlay_ip) for p in wanted.peers),
        )
    if step == ("gateway",):
        return True, GatewayState(True, frozenset(wanted))
    return wanted


def _free_host_port(protocol: str, mesh: LoadBalancerState) -> int:
    """dockerd's choice for a host-mode port published as 0: the first port of the kernel's ephemeral range
    (ip_local_port_range, which libnetwork's port allocator reads too) that this node publishes in neither mode
    and no process here has bound."""
    try:
        with open(EPHEMERAL_PORTS) as ports:
            low, high = (int(word) for word in ports.read().split())
    except (OSError, ValueError):
        low, high = DEFAULT_EPHEMERAL_PORTS
    for number in range(low, high + 1):
        if (protocol, number) not in mesh.host_ports and (protocol, number) not in mesh.published and _unbound(
            number, protocol
        ):
            return number
    raise DataplaneError(f"no free {protocol} port left in {low}-{high} for a host-mode port published as 0")


def _unbound(number: int, protocol: str) -> bool:
    kind = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}.get(protocol)
    if kind is None:
        return True  # sctp: no socket of this node can hold it that the routing mesh would not shadow anyway
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("0.0.0.0", number))
        except OSError:
            return False
    return True


def _mesh_state(
    ingress: _Endpoint | None, endpoints: dict[str, dict[str, _Endpoint]], local: list[_LocalTask]
) -> LoadBalancerState:
    """The routing mesh: published ports on this node's addresses -> the service's tasks on the ingress
    network, wherever they run; host-mode ports -> the local task publishing them. A host-mode port wins
    over a published port of the same number (`_attach_gateway` refuses the task that would make both)."""
    state = LoadBalancerState()
    for t in local:
        for protocol, published, target in t.host_ports:
            state = state.with_host_port(published, protocol, str(t.gateway_address), target)
    backends: dict[tuple[int, str], list[tuple[str, int]]] = {}
    if ingress is not None:
        for endpoint in endpoints.get(ingress.network_id, {}).values():
            for protocol, target, port in endpoint.ports:
                backends.setdefault((port, protocol), []).append((endpoint.ip, target))
    for (port, protocol), found in sorted(backends.items()):
        try:
            state = state.with_published(port, protocol, sorted(found))
        except LoadBalancerError as exc:
            log.debug("published port %s/%s left out of the routing mesh: %s", port, protocol, exc)
    return state


def _task_vips(local: _LocalTask, endpoints: dict[str, dict[str, _Endpoint]]) -> LoadBalancerState:
    """A task's VIPs: each service VIP on its networks -> the addresses of that service's tasks."""
    backends: dict[str, list[str]] = {}
    for network_id in {e.network_id for e in local.endpoints}:
        for endpoint in endpoints.get(network_id, {}).values():
            if endpoint.vip:
                backends.setdefault(endpoint.vip, []).append(endpoint.ip)
    state = LoadBalancerState()
    for vip, ips in sorted(backends.items()):
        try:
            state = state.with_vip(vip, sorted(ips))
        except LoadBalancerError as exc:
            log.debug("VIP %s left out of task %s's table: %s", vip, local.task_id, exc)
    return state


def _records(endpoints: dict[str, dict[str, _Endpoint]]) -> DnsRecords:
    """The names the resolvers answer: every service and task on the node's networks."""
    records = DnsRecords()
    for network_id, found in endpoints.items():
        named = [e for e in found.values() if e.service_name]  # not a node's own ingress endpoint
        for endpoint in named:
            mode = "dnsrr" if endpoint.vip is None else "vip"
            with contextlib.suppress(ValueError):  # an address that is not one, from a peer: nothing to publish
                records.set_service(network_id, endpoint.service_name, endpoint.aliases, endpoint.vip, mode)
        for endpoint in named:
            with contextlib.suppress(ValueError):
                records.set_task(network_id, endpoint.service_name, endpoint.task_name, endpoint.ip)
    return records


def _aliases(task: dict[str, Any], network: dict[str, Any]) -> list[str]:
    names = {network["ID"], (network.get("Spec") or {}).get("Name")}
    for attachment in (task.get("Spec") or {}).get("Networks") or []:
        if attachment.get("Target") in names:
            return [str(alias) for alias in attachment.get("Aliases") or []]
    return []


def _gateway_ifname(task_id: str) -> str:
    return f"rswgw{task_id[:9]}"


def _service_vip(task: dict[str, Any], network_id: str) -> tuple[str | None, str]:
    """The VIP of the task's service on `network_id` (from the task's copy of the service endpoint) and
    the endpoint mode."""
    endpoint = task.get("Endpoint") or {}
    mode = ((endpoint.get("Spec") or {}).get("Mode")) or "vip"
    for vip in endpoint.get("VirtualIPs") or []:
        if vip["NetworkID"] == network_id:
            return str(ipaddress.IPv4Interface(vip["Addr"]).ip), mode
    return None, mode

