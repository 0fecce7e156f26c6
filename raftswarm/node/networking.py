"""`NodeNetworks`: this node's part of the swarm's overlay networks, driven by its tasks and by gossip.
It lives with the node (which assembles the roles) because it joins the agent to `gossip` and
`dataplane`; the agent calls it through `agent.worker.TaskNetworks`.

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

Every node applies every endpoint it hears of on its networks (`_on_table`): a remote one becomes a static
neighbour and FDB entry on the overlay, and each endpoint updates the DNS records and the VIP backends of
the local tasks. A task that ends, or a node declared dead by gossip, deletes its endpoints everywhere, so
its address leaves DNS and the load balancers.

The data plane needs root and an address of the node's own (a namespace per node, as `cluster up` makes
as root); on loopback addresses, nodes share one network namespace and their VXLAN devices would collide,
so the node says so and runs tasks with loopback only. Netlink and nft calls block: they run in threads.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..dataplane import DataplaneError
from ..dataplane.dns import DnsRecords, DnsServer
from ..dataplane.gateway import GatewayBridge
from ..dataplane.loadbalancer import LoadBalancer
from ..dataplane.overlay import OverlayNetwork
from ..gossip.node import GossipConfig, GossipNode
from ..gossip.table import TableConfig
from ..gossip.wire import Keyring
from ..manager.keymanager import gossip_keyring_order
from ..manager.networkapi import vxlan_id
from ..runtime.containers import Container

log = logging.getLogger(__name__)

GOSSIP_PORT = 7946
ENDPOINTS = "endpoints"
"""The gossip table of task endpoints, one per network."""
TASK_TABLE = "raftswarm"
"""The nftables table of VIPs inside each task's namespace."""
MESH_TABLE = "raftswarm-mesh"
"""The nftables table of published ports in the node's own namespace (the routing mesh)."""
INGRESS_IFNAME = "rswingress0"
OVERLAY_CREATE_ATTEMPTS = 25
"""Tries at making a network's overlay, 0.2 s apart: a VNI freed by a removed network is reused at once."""
TABLE_SYNC_INTERVAL = 5.0
"""How often a node exchanges a network's whole table with a peer on it: what repairs an endpoint event
lost on the way (UDP). networkdb's 30 s would leave a task unresolvable that long."""
"""The node's own interface on the ingress overlay."""


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
    gateway_address: ipaddress.IPv4Address | None = None
    host_ports: list[tuple[int, str]] = field(default_factory=list)
    dns: DnsServer | None = None
    balancer: LoadBalancer | None = None
    vips: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """What the task's load balancer holds: VIP -> backend addresses."""


class NodeNetworks:
    def __init__(
        self, node_id: str, advertise_ip: str, prefix: str, dns_upstreams: list[tuple[str, int]] | None = None
    ) -> None:
        """`prefix` starts the name of every namespace this node makes (unique per node on a machine);
        `dns_upstreams`: where tasks' resolvers forward other names (None: the host's resolv.conf)."""
        self.node_id = node_id
        self.dns_upstreams = dns_upstreams
        self.advertise_ip = advertise_ip
        self.prefix = prefix
        self.gossip: GossipNode | None = None
        self.records = DnsRecords()
        self.overlays: dict[str, OverlayNetwork] = {}
        self.local: dict[str, _LocalTask] = {}
        self.endpoints: dict[str, dict[str, _Endpoint]] = {}
        """Network ID -> task ID -> endpoint, of every task on the node's networks (own ones included)."""
        self._lock = asyncio.Lock()
        self.ingress: _Endpoint | None = None
        """This node's own endpoint on the ingress network, once the managers gave it an address."""
        self.mesh: LoadBalancer | None = None
        self.gateway = GatewayBridge()
        self._gateway_ready = False
        self._published: dict[tuple[int, str], tuple[tuple[str, int], ...]] = {}
        self._keys: list[bytes] = []
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._applier: asyncio.Task[None] | None = None
        """Applies gossip's table events in order (they arrive in a callback)."""

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
            self._applier = asyncio.create_task(self._apply_events(), name="network-events")
            await self.gossip.start()
        else:
            self.gossip.set_keyring(keyring)
        if self.ingress is None and attachments:
            await self._join_ingress(attachments[0])

    async def _join_ingress(self, attachment: dict[str, Any]) -> None:
        """The node's own interface on the ingress overlay, and its published-port table (routing mesh)."""
        assert self.gossip is not None
        network, address = attachment["Network"], attachment["Addresses"][0]
        overlay = await self._overlay(network)
        mac = await asyncio.to_thread(overlay.attach, "/proc/self/ns/net", address, None, INGRESS_IFNAME)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as forwarding:
            forwarding.write("1")  # the node forwards published ports to tasks on other nodes
        await self._ensure_mesh()
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
        self._learn(endpoint)
        await self._reprogram()

    def _own_seed(self) -> str:
        return f"{self.advertise_ip}:{GOSSIP_PORT}"

    async def close(self) -> None:
        """Stop following gossip. The overlays of tasks still running stay (a restarted agent takes them
        back); `detach` each task first to remove everything."""
        if self._applier is not None:
            self._applier.cancel()
            await asyncio.gather(self._applier, return_exceptions=True)
            self._applier = None
        for local in self.local.values():
            if local.dns is not None:
                await local.dns.close()
        if self.gossip is not None:
            await self.gossip.close()
            self.gossip = None

    async def remove_all(self) -> None:
        """Take the node out of every network (it leaves the swarm or stops): tasks' interfaces, the routing
        mesh's table and interface, the overlays."""
        for task_id in list(self.local):
            await self.detach(task_id)
        if self.mesh is not None:
            await asyncio.to_thread(self.mesh.close)
            self.mesh = None
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

    # -- tasks -------------------------------------------------------------------------------------------

    async def _ensure_mesh(self) -> LoadBalancer:
        if self.mesh is None:
            self.mesh = await asyncio.to_thread(LoadBalancer, None, MESH_TABLE)
        return self.mesh

    async def attach(self, task: dict[str, Any], running: Container) -> None:
        """Plug a starting task into its networks (see the module docstring), then the gateway bridge (its
        way out, and in for its host-mode published ports)."""
        attachments = task.get("NetworksAttachments") or []
        if attachments and self.gossip is None:
            raise RuntimeError("the node has no gossip key from the managers yet; the task will be retried")
        local = _LocalTask(task["ID"], running.netns_path, [])
        self.local[task["ID"]] = local
        service_name = (task.get("ServiceAnnotations") or {}).get("Name", "")
        task_name = f"{service_name}.{task.get('Slot') or task.get('NodeID', '')}.{task['ID']}"
        for index, attachment in enumerate(attachments):
            network = attachment["Network"]
            address = attachment["Addresses"][0]
            overlay = await self._overlay(network)
            mac = await asyncio.to_thread(overlay.attach, running.netns_path, address, None, f"eth{index}")
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
            self.gossip.join_network(network["ID"])
            if task["ID"] in self.gossip.entries(network["ID"], ENDPOINTS):
                self.gossip.update_entry(network["ID"], ENDPOINTS, task["ID"], endpoint.encode())  # plugged again
            else:
                self.gossip.create_entry(network["ID"], ENDPOINTS, task["ID"], endpoint.encode())
            self._learn(endpoint)
        await self._attach_gateway(task, local, f"eth{len(attachments)}")
        local.dns = DnsServer(
            running.netns_path, [e.network_id for e in local.endpoints], self.records, upstreams=self.dns_upstreams
        )
        await local.dns.start()
        local.balancer = await asyncio.to_thread(LoadBalancer, running.netns_path, TASK_TABLE)
        await self._program(local)

    async def _attach_gateway(self, task: dict[str, Any], local: _LocalTask, ifname: str) -> None:
        if not self._gateway_ready:
            await asyncio.to_thread(self.gateway.create)
            self._gateway_ready = True
        taken = {t.gateway_address for t in self.local.values()}
        address = next(a for a in self.gateway.subnet.hosts() if a != self.gateway.gateway and a not in taken)
        local.gateway_address = address
        await asyncio.to_thread(self.gateway.attach, local.netns_path, address, ifname, _gateway_ifname(task["ID"]))
        host_ports = [
            p for p in (task.get("Endpoint") or {}).get("Ports") or [] if p.get("PublishMode") == "host" and p.get("PublishedPort")
        ]
        if host_ports:
            mesh = await self._ensure_mesh()
            for port in host_ports:
                protocol = port.get("Protocol", "tcp")
                await asyncio.to_thread(mesh.set_host_port, port["PublishedPort"], protocol, str(address), port["TargetPort"])
                local.host_ports.append((port["PublishedPort"], protocol))

    async def detach(self, task_id: str) -> None:
        """The task ended: its endpoints leave the swarm's tables, its interfaces and resolver go."""
        local = self.local.pop(task_id, None)
        if local is None:
            return
        if local.dns is not None:
            await local.dns.close()
        for port, protocol in local.host_ports:
            if self.mesh is not None:
                await asyncio.to_thread(self.mesh.remove_host_port, port, protocol)
        if local.gateway_address is not None:
            await asyncio.to_thread(self.gateway.detach, _gateway_ifname(task_id))
        for endpoint in local.endpoints:
            if self.gossip is not None and task_id in self.gossip.entries(endpoint.network_id, ENDPOINTS):
                self.gossip.delete_entry(endpoint.network_id, ENDPOINTS, task_id)
            self._forget(endpoint.network_id, task_id)
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
                self.endpoints.pop(network_id, None)
        await self._reprogram()

    async def _overlay(self, network: dict[str, Any]) -> OverlayNetwork:
        async with self._lock:
            overlay = self.overlays.get(network["ID"])
            if overlay is None:
                config = network["IPAMOptions"]["Configs"][0]
                vni = vxlan_id(network)
                for old_id, old in list(self.overlays.items()):
                    if old.vni == vni:  # a removed network's overlay, its VNI handed out again: it goes first
                        del self.overlays[old_id]
                        await asyncio.to_thread(old.remove)
                overlay = OverlayNetwork(
                    self.prefix, network["ID"], vni, config["Subnet"], config["Gateway"], self.advertise_ip
                )
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
                for endpoint in self.endpoints.get(network["ID"], {}).values():
                    if endpoint.node_ip != self.advertise_ip:
                        await asyncio.to_thread(overlay.add_peer, endpoint.ip, endpoint.mac, endpoint.node_ip)
            return overlay

    # -- what gossip tells -------------------------------------------------------------------------------

    def _on_table(self, event: Any) -> None:
        if event.table == ENDPOINTS:
            self._events.put_nowait(event)

    async def _apply_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._apply(event)
            except Exception:
                log.exception("could not apply the change of endpoint %s on network %s", event.key, event.network)

    async def _apply(self, event: Any) -> None:
        old = self.endpoints.get(event.network, {}).get(event.key)
        if event.kind == "delete":
            self._forget(event.network, event.key)
            if old is not None and old.node_ip != self.advertise_ip and event.network in self.overlays:
                await asyncio.to_thread(self.overlays[event.network].remove_peer, old.ip, old.mac, old.node_ip)
        else:
            endpoint = _Endpoint.decode(event.value)
            self._learn(endpoint)
            if endpoint.node_ip != self.advertise_ip and event.network in self.overlays:
                await asyncio.to_thread(self.overlays[event.network].add_peer, endpoint.ip, endpoint.mac, endpoint.node_ip)
        await self._reprogram()

    def _learn(self, endpoint: _Endpoint) -> None:
        self.endpoints.setdefault(endpoint.network_id, {})[endpoint.task_id] = endpoint
        if not endpoint.service_name:
            return  # a node's own ingress endpoint: nothing to resolve
        self.records.set_service(
            endpoint.network_id,
            endpoint.service_name,
            endpoint.aliases,
            endpoint.vip,
            "dnsrr" if endpoint.vip is None else "vip",
        )
        self.records.set_task(endpoint.network_id, endpoint.service_name, endpoint.task_name, endpoint.ip)

    def _forget(self, network_id: str, task_id: str) -> None:
        endpoint = self.endpoints.get(network_id, {}).pop(task_id, None)
        if endpoint is None or not endpoint.service_name:
            return
        self.records.remove_task(network_id, endpoint.service_name, endpoint.task_name)
        if not any(e.service_id == endpoint.service_id for e in self.endpoints.get(network_id, {}).values()):
            self.records.remove_service(network_id, endpoint.service_name)

    async def _reprogram(self) -> None:
        for local in list(self.local.values()):
            await self._program(local)
        await self._program_mesh()

    async def _program_mesh(self) -> None:
        """Published ports on this node's addresses -> the service's tasks on the ingress network, wherever
        they run."""
        if self.mesh is None or self.ingress is None:
            return
        wanted: dict[tuple[int, str], list[tuple[str, int]]] = {}
        for endpoint in self.endpoints.get(self.ingress.network_id, {}).values():
            for protocol, target, published in endpoint.ports:
                wanted.setdefault((published, protocol), []).append((endpoint.ip, target))
        programmed = {key: tuple(sorted(backends)) for key, backends in wanted.items()}
        for (port, protocol), backends in programmed.items():
            if self._published.get((port, protocol)) != backends:
                await asyncio.to_thread(self.mesh.set_published, port, protocol, list(backends))
        for port, protocol in set(self._published) - set(programmed):
            await asyncio.to_thread(self.mesh.remove_published, port, protocol)
        self._published = programmed

    async def _program(self, local: _LocalTask) -> None:
        """The task's VIPs: each service VIP on its networks -> the addresses of that service's tasks."""
        if local.balancer is None:
            return
        wanted: dict[str, tuple[str, ...]] = {}
        for network_id in {e.network_id for e in local.endpoints}:
            by_vip: dict[str, list[str]] = {}
            for endpoint in self.endpoints.get(network_id, {}).values():
                if endpoint.vip:
                    by_vip.setdefault(endpoint.vip, []).append(endpoint.ip)
            wanted.update((vip, tuple(sorted(ips))) for vip, ips in by_vip.items())
        try:
            for vip, backends in wanted.items():
                if local.vips.get(vip) != backends:
                    await asyncio.to_thread(local.balancer.set_vip, vip, list(backends))
            for vip in set(local.vips) - set(wanted):
                await asyncio.to_thread(local.balancer.remove_vip, vip)
        except DataplaneError:
            if os.path.exists(local.netns_path):
                raise
            return  # the task ended meanwhile; its detach is on the way
        local.vips = wanted


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

