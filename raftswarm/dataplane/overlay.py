"""The VXLAN overlay of one network on one node, built the way libnetwork's overlay driver builds it.

Per network and node there is a namespace `<prefix>ov-<vni>` holding

    br0     a bridge carrying the network's gateway address (subnet prefix length)
    vxlan0  the VXLAN device, enslaved to br0: VNI, UDP 4789, `local <underlay ip>`, learning off and
            ARP proxy on, so ARP is answered from the static neighbour table and nothing floods
    veXXXXXXXX  one veth per local task, enslaved to br0; its peer is `eth0` in the task's namespace

The VXLAN device is created in the namespace that holds the underlay address (the caller's own, or
`underlay_netns`) and then moved into the network's namespace: its UDP socket stays with the underlay while
its frames are bridged next to the tasks. The tunnel is never learned: `add_peer` writes the neighbour
(overlay IP -> MAC) and FDB (MAC -> remote node's underlay IP) entries that network gossip announces.

Every method is idempotent and derives all names from the constructor's arguments, so a restarted node (or
another process) can pick up, extend or remove what an earlier one built. `read()` says what the kernel
holds of the network, and `plan_repair` (pure) what must be redone for it to hold what it should: what
keeps a node's overlays right whatever was deleted or failed (`node.networking`). Only IPv4 is supported.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_NOARP, NUD_PERMANENT

from raftswarm.dataplane import DataplaneError
from raftswarm.dataplane.netns import ensure_netns, ignoring, netns_exists, netns_path, remove_netns, rtnl

# IANA's VXLAN port; Docker's default data-path port.
VXLAN_PORT = 4789
# Outer Ethernet (14) + IPv4 (20) + UDP (8) + VXLAN (8) headers, as libnetwork subtracts from the underlay MTU.
VXLAN_OVERHEAD = 50
# VNIs are 24 bits on the wire.
MAX_VNI = (1 << 24) - 1
BRIDGE_IFNAME = "br0"
VXLAN_IFNAME = "vxlan0"
# Linux interface names hold at most 15 characters (IFNAMSIZ - 1).
_IFNAMSIZ = 15
_IFF_UP = 0x1


@dataclass(frozen=True)
class Peer:
    """An endpoint on another node, as network gossip announces it."""

    ip: str
    mac: str
    """Lower case."""
    underlay_ip: str
    """The address of the node it runs on."""


@dataclass(frozen=True)
class OverlayState:
    """What the kernel holds of one overlay network on this node (`OverlayNetwork.read()`)."""

    built: bool = False
    """The namespace, br0 (up, holding the gateway address) and vxlan0 (this VNI, up, in br0) are all there."""
    endpoints: frozenset[str] = frozenset()
    """The addresses of local tasks whose veth is in br0 and up."""
    neighbours: frozenset[tuple[str, str]] = frozenset()
    """Neighbour entries on vxlan0: (overlay IP, MAC)."""
    forwarding: frozenset[tuple[str, str]] = frozenset()
    """FDB entries of vxlan0 towards other nodes: (MAC, underlay IP)."""


@dataclass(frozen=True)
class OverlayRepair:
    """What to redo so that an overlay holds what it should (`plan_repair`), in this order."""

    create: bool = False
    """Build (or complete) the namespace, bridge and VXLAN device."""
    stale_neighbours: frozenset[tuple[str, str]] = frozenset()
    stale_forwarding: frozenset[tuple[str, str]] = frozenset()
    attach: frozenset[str] = frozenset()
    """Addresses of local tasks to plug (again)."""
    add_peers: frozenset[Peer] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.create or self.stale_neighbours or self.stale_forwarding or self.attach or self.add_peers)


def plan_repair(held: OverlayState, endpoints: Iterable[str], peers: Iterable[Peer]) -> OverlayRepair:
    """The difference between what an overlay holds and what it should: the addresses of its local tasks
    (`endpoints`) plugged in, and a neighbour and FDB entry for each of `peers`, nothing else towards other
    nodes. Building the overlay anew removes its devices' entries and veths, so then everything is redone."""
    peers = frozenset(peers)
    if not held.built:
        held = OverlayState()
    neighbours = {(p.ip, p.mac) for p in peers}
    forwarding = {(p.mac, p.underlay_ip) for p in peers}
    return OverlayRepair(
        create=not held.built,
        stale_neighbours=held.neighbours - neighbours,
        stale_forwarding=held.forwarding - forwarding,
        attach=frozenset(endpoints) - held.endpoints,
        add_peers=frozenset(
            p for p in peers if (p.ip, p.mac) not in held.neighbours or (p.mac, p.underlay_ip) not in held.forwarding
        ),
    )


def mac_for_ip(ip: ipaddress.IPv4Address | str) -> str:
    """Docker's deterministic endpoint MAC: locally administered 02:42 followed by the IPv4 address."""
    packed = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{byte:02x}" for byte in packed)


class OverlayNetwork:
    """One overlay network on this node. Constructing it touches nothing; `create()` builds it.

    `name_prefix` goes in front of every name this makes outside the network's own namespace, so nodes
    sharing a machine (and tests) never collide. `underlay_ip` must be assigned to an interface in the
    underlay namespace (`underlay_netns`, a name under /run/netns, or None for the caller's own). `mtu`
    defaults to the underlay interface's MTU minus the VXLAN overhead.

    All methods block on netlink; run them in a thread from asyncio code.
    """

    def __init__(
        self,
        name_prefix: str,
        network_id: str,
        vni: int,
        subnet: str,
        gateway: str,
        underlay_ip: str,
        underlay_netns: str | None = None,
        mtu: int | None = None,
    ) -> None:
        if not 1 <= vni <= MAX_VNI:
            raise DataplaneError(f"VNI {vni} is out of range: a VXLAN network identifier is 1..{MAX_VNI}")
        try:
            self.subnet = ipaddress.IPv4Network(subnet)
            self.gateway = ipaddress.IPv4Address(gateway)
            self.underlay_ip = ipaddress.IPv4Address(underlay_ip)
        except ValueError as exc:
            raise DataplaneError(f"overlay network {network_id}: {exc} (only IPv4 overlays are supported)") from exc
        if self.gateway not in self.subnet:
            raise DataplaneError(f"gateway {gateway} is not inside subnet {subnet}")
        if mtu is not None and mtu < 68:
            raise DataplaneError(f"MTU {mtu} is below the IPv4 minimum of 68")
        self.name_prefix = name_prefix
        self.network_id = network_id
        self.vni = vni
        self.underlay_netns = underlay_netns
        self.requested_mtu = mtu
        self.netns = f"{name_prefix}ov-{vni}"
        netns_path(self.netns)  # rejects a prefix that cannot name a namespace
        # The name the VXLAN device has in the underlay namespace between creation and the move. It must not
        # collide there and must fit IFNAMSIZ, so it is a digest of the (prefixed) namespace name.
        digest = hashlib.blake2s(self.netns.encode(), digest_size=6).hexdigest()
        self.vxlan_transit_ifname = f"vx-{digest}"[:_IFNAMSIZ]

    def __repr__(self) -> str:
        return f"OverlayNetwork(netns={self.netns!r}, vni={self.vni}, subnet={str(self.subnet)!r})"

    # -- the network itself ------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether this node has the network's namespace (it may be half-built; `create()` completes it)."""
        return netns_exists(self.netns)

    def read(self) -> OverlayState:
        """What the kernel holds of this network now: one netlink dump of links, the bridge's addresses,
        and vxlan0's neighbour and FDB tables."""
        if not netns_exists(self.netns):
            return OverlayState()
        with rtnl(self.netns, f"read overlay {self.netns}") as ipr:
            links = {link.get("ifname"): link for link in ipr.get_links()}
            bridge, vxlan = links.get(BRIDGE_IFNAME), links.get(VXLAN_IFNAME)
            if bridge is None or vxlan is None:
                return OverlayState()
            addresses = {
                (a.get("address"), a["prefixlen"]) for a in ipr.get_addr(family=socket.AF_INET, index=bridge["index"])
            }
            built = (
                _is_up(bridge)
                and (str(self.gateway), self.subnet.prefixlen) in addresses
                and _is_up(vxlan)
                and vxlan.get("master") == bridge["index"]
                and vxlan.get(("linkinfo", "data", "vxlan_id")) == self.vni
            )
            endpoints = frozenset(
                str(ipaddress.IPv4Address(bytes.fromhex(name[2:])))
                for name, link in links.items()
                if _is_endpoint_ifname(name) and _is_up(link) and link.get("master") == bridge["index"]
            )
            neighbours = frozenset(
                (entry.get("dst"), (entry.get("lladdr") or "").lower())
                for entry in ipr.get_neighbours(family=socket.AF_INET, ifindex=vxlan["index"])
                if entry["state"] & NUD_PERMANENT
            )
            forwarding = frozenset(
                ((entry.get_attr("NDA_LLADDR") or "").lower(), entry.get_attr("NDA_DST"))
                for entry in ipr.fdb("dump", ifindex=vxlan["index"])
                if entry["ifindex"] == vxlan["index"] and entry.get_attr("NDA_DST") is not None
            )
        return OverlayState(built, endpoints, neighbours, forwarding)

    def create(self) -> None:
        """Build the namespace, bridge and VXLAN device, or complete/confirm what is already there."""
        mtu = self._resolve_mtu()
        ensure_netns(self.netns)
        with rtnl(self.netns, f"set up bridge of overlay {self.netns}") as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            bridge = self._ensure_bridge(ipr, mtu)
            vxlan = _lookup(ipr, VXLAN_IFNAME)
            if vxlan is not None:
                self._check_vxlan(ipr, vxlan)
        if vxlan is None:
            self._create_vxlan(mtu)
        with rtnl(self.netns, f"connect VXLAN device of overlay {self.netns}") as ipr:
            vxlan = _lookup(ipr, VXLAN_IFNAME)
            ipr.link("set", index=vxlan, master=bridge, state="up")
            ipr.link("set", index=bridge, state="up")

    def remove(self) -> None:
        """Delete everything `create()` and `attach()` made: the namespace, its devices (so the task ends of
        the veths go too) and a VXLAN device stranded in the underlay by an interrupted `create()`."""
        if netns_exists(self.netns):
            with rtnl(self.netns, f"remove devices of overlay {self.netns}") as ipr:
                # Deleted explicitly rather than left to namespace teardown, which the kernel does
                # asynchronously: the VNI must be free for a new network as soon as this returns.
                for link in ipr.get_links():
                    if link.get("ifname") != "lo":
                        with ignoring(errno.ENODEV, errno.ENOENT):
                            ipr.link("del", index=link["index"])
            remove_netns(self.netns)
        self._delete_stranded_vxlan()

    # -- remote endpoints, as network gossip announces them ------------------------------------------------

    def add_peer(self, peer_ip: str, peer_mac: str, peer_underlay_ip: str) -> None:
        """Route `peer_ip` (an endpoint on another node) to that node: a permanent neighbour entry
        IP -> MAC, answered by the VXLAN device's ARP proxy, and a permanent FDB entry MAC -> underlay IP."""
        self.add_peers([Peer(peer_ip, peer_mac, peer_underlay_ip)])

    def add_peers(self, peers: Iterable[Peer]) -> None:
        """`add_peer` for each of `peers` over one netlink socket. A peer the kernel refuses does not keep
        the others out: the error, naming every refused peer, comes at the end."""
        peers = list(peers)
        if not peers:
            return
        what = f"add {len(peers)} peer(s) to overlay {self.netns}"
        refused = []
        with rtnl(self._created_netns(what), what) as ipr:
            vxlan = self._vxlan_index(ipr, what)
            for peer in peers:
                try:
                    ip = self._overlay_ip(peer.ip)
                    underlay = _ipv4(peer.underlay_ip, "peer underlay address")
                    ipr.neigh("replace", dst=str(ip), lladdr=peer.mac, ifindex=vxlan, state=NUD_PERMANENT)
                    ipr.fdb(
                        "replace",
                        ifindex=vxlan,
                        lladdr=peer.mac,
                        dst=str(underlay),
                        state=NUD_PERMANENT | NUD_NOARP,
                        flags=NTF_SELF,
                    )
                except (DataplaneError, NetlinkError) as exc:
                    reason = os.strerror(exc.code) if isinstance(exc, NetlinkError) else str(exc)
                    refused.append(f"{peer.ip} ({peer.mac}) via {peer.underlay_ip}: {reason}")
        if refused:
            raise DataplaneError(f"overlay {self.netns} refused peer(s): {'; '.join(refused)}")

    def remove_entries(self, neighbours: Iterable[tuple[str, str]], forwarding: Iterable[tuple[str, str]]) -> None:
        """Delete the neighbour entries (IP, MAC) and FDB entries (MAC, underlay IP) of vxlan0 that still
        say exactly that; entries already gone or since re-pointed are left alone."""
        neighbours, forwarding = set(neighbours), set(forwarding)
        if not (neighbours or forwarding) or not netns_exists(self.netns):
            return
        with rtnl(self.netns, f"remove stale peers from overlay {self.netns}") as ipr:
            vxlan = _lookup(ipr, VXLAN_IFNAME)
            if vxlan is None:
                return
            for entry in ipr.get_neighbours(family=socket.AF_INET, ifindex=vxlan):
                ip, mac = entry.get("dst"), (entry.get("lladdr") or "").lower()
                if (ip, mac) in neighbours:
                    with ignoring(errno.ENOENT):
                        ipr.neigh("del", dst=ip, lladdr=mac, ifindex=vxlan)
            for mac, underlay in forwarding:
                with ignoring(errno.ENOENT):
                    ipr.fdb("del", ifindex=vxlan, lladdr=mac, dst=underlay)

    def remove_peer(self, peer_ip: str, peer_mac: str, peer_underlay_ip: str) -> None:
        """Undo `add_peer`. Entries since re-pointed elsewhere (another MAC for the IP, another node for
        the MAC) are left alone, so a late delete event cannot break a newer endpoint."""
        ip = self._overlay_ip(peer_ip)
        underlay = _ipv4(peer_underlay_ip, "peer underlay address")
        if not netns_exists(self.netns):
            return
        what = f"remove peer {ip} ({peer_mac}) via {underlay} from overlay {self.netns}"
        with rtnl(self.netns, what) as ipr:
            vxlan = _lookup(ipr, VXLAN_IFNAME)
            if vxlan is None:
                return
            for entry in ipr.get_neighbours(family=socket.AF_INET, ifindex=vxlan):
                if entry.get("dst") == str(ip) and _same_mac(entry.get("lladdr"), peer_mac):
                    with ignoring(errno.ENOENT):
                        ipr.neigh("del", dst=str(ip), lladdr=peer_mac, ifindex=vxlan)
            with ignoring(errno.ENOENT):
                ipr.fdb("del", ifindex=vxlan, lladdr=peer_mac, dst=str(underlay))

    # -- local tasks --------------------------------------------------------------------------------------

    def attach(self, task_netns_path: str, ip_cidr: str, mac: str | None = None, ifname: str = "eth0") -> str:
        """Connect a task: a veth whose bridge end is enslaved to br0 and whose other end is `ifname` in the
        task's namespace (a path such as /proc/<pid>/ns/net), with the address, MAC and MTU, up.

        `ip_cidr` may omit the prefix length (the subnet's is used). Returns the MAC, by default
        `mac_for_ip(ip)`. Attaching the same IP again re-applies the settings."""
        interface = self._endpoint_interface(ip_cidr)
        mac = (mac or mac_for_ip(interface.ip)).lower()
        host_ifname = _endpoint_ifname(interface.ip)
        what = f"attach {interface} ({mac}) to overlay {self.netns} as {ifname} in {task_netns_path}"
        with rtnl(self._created_netns(what), what) as ipr:
            bridge = _lookup(ipr, BRIDGE_IFNAME)
            if bridge is None:
                raise DataplaneError(f"{what}: overlay has no bridge; call create() first")
            mtu = ipr.link("get", index=bridge)[0].get("mtu")
            existing = _lookup(ipr, host_ifname)
            if existing is not None and not _task_has_link(task_netns_path, ifname, mac, what):
                ipr.link("del", index=existing)
                existing = None
            if existing is None:
                ipr.link(
                    "add",
                    ifname=host_ifname,
                    kind="veth",
                    mtu=mtu,
                    peer={"ifname": ifname, "net_ns_fd": task_netns_path, "address": mac, "mtu": mtu},
                )
            ipr.link("set", index=_lookup(ipr, host_ifname), master=bridge, state="up")
        with rtnl(task_netns_path, what) as task:
            index = _lookup(task, ifname)
            if index is None:
                raise DataplaneError(f"{what}: {ifname} is missing in the task's namespace")
            task.addr("replace", index=index, address=str(interface.ip), prefixlen=interface.network.prefixlen)
            task.link("set", index=index, state="up")
        return mac

    def detach(self, ip_cidr: str) -> None:
        """Disconnect the task attached with this IP (prefix length optional): deleting the bridge end of
        its veth deletes the task end too. Nothing to do if it is not attached."""
        host_ifname = _endpoint_ifname(self._endpoint_interface(ip_cidr).ip)
        if not netns_exists(self.netns):
            return
        with rtnl(self.netns, f"detach {ip_cidr} from overlay {self.netns}") as ipr:
            index = _lookup(ipr, host_ifname)
            if index is not None:
                with ignoring(errno.ENODEV, errno.ENOENT):
                    ipr.link("del", index=index)

    # -- internals ----------------------------------------------------------------------------------------

    def _underlay_where(self) -> str:
        return f"network namespace {self.underlay_netns!r}" if self.underlay_netns else "this node's namespace"

    def _resolve_mtu(self) -> int:
        """Check the underlay address is local (a VXLAN bound to a foreign address sends nothing) and
        derive the overlay MTU from its interface unless one was given."""
        what = f"find underlay address {self.underlay_ip} in {self._underlay_where()}"
        with rtnl(self.underlay_netns, what) as ipr:
            for addr in ipr.get_addr(family=socket.AF_INET):
                if addr.get("address") == str(self.underlay_ip):
                    underlay_mtu = ipr.link("get", index=addr["index"])[0].get("mtu")
                    break
            else:
                raise DataplaneError(
                    f"underlay address {self.underlay_ip} is not assigned to any interface in "
                    f"{self._underlay_where()}; pass this node's data-path address"
                )
        mtu = self.requested_mtu or underlay_mtu - VXLAN_OVERHEAD
        if mtu > underlay_mtu - VXLAN_OVERHEAD:
            raise DataplaneError(
                f"MTU {mtu} does not fit the underlay: {underlay_mtu} minus {VXLAN_OVERHEAD} bytes of VXLAN "
                f"headers allows at most {underlay_mtu - VXLAN_OVERHEAD}"
            )
        return mtu

    def _ensure_bridge(self, ipr: IPRoute, mtu: int) -> int:
        bridge = _lookup(ipr, BRIDGE_IFNAME)
        if bridge is None:
            ipr.link("add", ifname=BRIDGE_IFNAME, kind="bridge", mtu=mtu)
            bridge = _lookup(ipr, BRIDGE_IFNAME)
        ipr.link("set", index=bridge, ifalias=f"raftswarm overlay {self.network_id}")
        ipr.addr("replace", index=bridge, address=str(self.gateway), prefixlen=self.subnet.prefixlen)
        return bridge

    def _check_vxlan(self, ipr: IPRoute, index: int) -> None:
        link = ipr.link("get", index=index)[0]
        found = link.get(("linkinfo", "data", "vxlan_id"))
        if found != self.vni:
            raise DataplaneError(
                f"namespace {self.netns} already holds a VXLAN device with VNI {found}, not {self.vni}; "
                f"remove that network first"
            )

    def _create_vxlan(self, mtu: int) -> None:
        what = f"create VXLAN device for VNI {self.vni} on {self.underlay_ip} in {self._underlay_where()}"
        self._delete_stranded_vxlan()
        with rtnl(self.underlay_netns, what) as ipr:
            try:
                ipr.link(
                    "add",
                    ifname=self.vxlan_transit_ifname,
                    kind="vxlan",
                    vxlan_id=self.vni,
                    vxlan_local=str(self.underlay_ip),
                    vxlan_port=VXLAN_PORT,
                    vxlan_learning=0,
                    vxlan_proxy=1,
                    mtu=mtu,
                )
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise DataplaneError(
                        f"{what}: VNI {self.vni} on UDP {VXLAN_PORT} is already used by another VXLAN device "
                        f"in that namespace; each overlay network needs its own VNI on a node"
                    ) from exc
                raise
            index = _lookup(ipr, self.vxlan_transit_ifname)
            try:
                ipr.link("set", index=index, net_ns_fd=netns_path(self.netns), ifname=VXLAN_IFNAME)
            except BaseException:
                ipr.link("del", index=index)
                raise

    def _delete_stranded_vxlan(self) -> None:
        what = f"remove stranded VXLAN device {self.vxlan_transit_ifname} from {self._underlay_where()}"
        with rtnl(self.underlay_netns, what) as ipr:
            index = _lookup(ipr, self.vxlan_transit_ifname)
            if index is None:
                return
            link = ipr.link("get", index=index)[0]
            if link.get(("linkinfo", "kind")) == "vxlan" and link.get(("linkinfo", "data", "vxlan_id")) == self.vni:
                with ignoring(errno.ENODEV, errno.ENOENT):
                    ipr.link("del", index=index)

    def _created_netns(self, what: str) -> str:
        if not netns_exists(self.netns):
            raise DataplaneError(f"{what}: overlay namespace {self.netns} does not exist; call create() first")
        return self.netns

    def _vxlan_index(self, ipr: IPRoute, what: str) -> int:
        index = _lookup(ipr, VXLAN_IFNAME)
        if index is None:
            raise DataplaneError(f"{what}: overlay has no VXLAN device; call create() first")
        return index

    def _overlay_ip(self, ip: str) -> ipaddress.IPv4Address:
        address = _ipv4(ip.split("/")[0], "overlay address")
        if address not in self.subnet:
            raise DataplaneError(f"{ip} is not inside the overlay subnet {self.subnet}")
        return address

    def _endpoint_interface(self, ip_cidr: str) -> ipaddress.IPv4Interface:
        text = ip_cidr if "/" in ip_cidr else f"{ip_cidr}/{self.subnet.prefixlen}"
        try:
            interface = ipaddress.IPv4Interface(text)
        except ValueError as exc:
            raise DataplaneError(f"invalid endpoint address {ip_cidr!r}: {exc}") from exc
        if interface.ip not in self.subnet:
            raise DataplaneError(f"endpoint address {ip_cidr} is not inside the overlay subnet {self.subnet}")
        if interface.ip == self.gateway:
            raise DataplaneError(f"endpoint address {ip_cidr} is the network's gateway")
        return interface


def _endpoint_ifname(ip: ipaddress.IPv4Address) -> str:
    """The bridge end of a task's veth, named after the task's IP (unique within one network)."""
    return "ve" + ip.packed.hex()


def _is_endpoint_ifname(name: str) -> bool:
    return len(name) == 10 and name.startswith("ve") and all(c in "0123456789abcdef" for c in name[2:])


def _is_up(link) -> bool:
    return bool(link["flags"] & _IFF_UP)


def _lookup(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _task_has_link(task_netns_path: str, ifname: str, mac: str, what: str) -> bool:
    with rtnl(task_netns_path, what) as task:
        index = _lookup(task, ifname)
        return index is not None and _same_mac(task.link("get", index=index)[0].get("address"), mac)


def _same_mac(a: str | None, b: str) -> bool:
    return a is not None and a.lower() == b.lower()


def _ipv4(text: str, role: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError as exc:
        raise DataplaneError(f"invalid {role} {text!r}: {exc}") from exc
