"""The host's side of a local cluster's network: the `ip` and `nft` commands, the host's own networks (so a
cluster's subnet overlaps none of them), free loopback addresses and ports, what keeps network namespaces from
working here, and the nodes' namespaces on a private bridge: each namespace and interface recorded before it is
made, and removed from that record (raftswarm's own clusters and `DockerSwarm` alike)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from ..errors import RaftswarmError


# Private /24s for the bridge, tried in order; the first that overlaps no address or route of the host wins.
# 10.211/16 is far from the low end of 10.0.0.0/8 where swarm's default address pool hands out overlay
# subnets; 172.30/16 is the fallback (Docker's own bridges, which also live in 172.16/12, show up as routes).
SUBNET_CANDIDATES = [f"10.211.{x}.0/24" for x in range(256)] + [f"172.30.{x}.0/24" for x in range(256)]


class ClusterError(RaftswarmError):
    """`cluster up/down/...` cannot do what was asked; the message says why and what to do."""


def ip_command(*args: str) -> str:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ClusterError("the `ip` command (iproute2) is not installed") from None
    if result.returncode != 0:
        raise ClusterError(
            f"`ip {' '.join(args)}` failed: {result.stderr.strip() or f'exit status {result.returncode}'}"
        )
    return result.stdout


def network_namespaces() -> set[str]:
    return {line.split()[0] for line in ip_command("netns", "list").splitlines() if line.strip()}


def links() -> set[str]:
    return {link["ifname"] for link in json.loads(ip_command("-j", "link", "show") or "[]")}


def netns_unavailable_reason() -> str | None:
    """Why this process cannot give nodes network namespaces, or None if it can."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"rsw-probe-{os.getpid()}"
    try:
        ip_command("netns", "add", probe)
    except ClusterError as exc:
        return str(exc)
    ip_command("netns", "delete", probe)
    return None


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to (the default route aside)."""
    networks = []
    for iface in json.loads(ip_command("-j", "addr", "show") or "[]"):
        for info in iface.get("addr_info", []):
            if info.get("family") == "inet":
                networks.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network)
    for route in json.loads(ip_command("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            networks.append(ipaddress.ip_network(dst, strict=False))
    return networks


def choose_subnet(taken: Sequence[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    for candidate in map(ipaddress.IPv4Network, SUBNET_CANDIDATES):
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise ClusterError("every candidate subnet (10.211.0.0/16, 172.30.0.0/16) overlaps a network of this host")


def port_free(ip: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the node binds: TIME_WAIT is no conflict
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


def bridge_netfilter_hint() -> str:
    """Bridged traffic that goes through iptables may be dropped by a FORWARD policy (Docker sets one)."""
    try:
        if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1":
            return (
                "\nnote: bridged traffic passes through iptables on this host (net.bridge.bridge-nf-call-iptables=1); "
                "if the FORWARD chain drops it, as on a host running Docker, use `--network loopback`"
            )
    except OSError:
        pass
    return ""


def nft_tables() -> set[str]:
    """Names of the host's `ip` family nftables tables (none if nft is not installed)."""
    try:
        done = subprocess.run(["nft", "list", "tables", "ip"], capture_output=True, text=True)
    except FileNotFoundError:
        return set()
    return {line.split()[-1] for line in done.stdout.splitlines() if line.startswith("table ")}


def loopback_addresses(count: int, taken: set[str], name: str, port: int) -> list[str]:
    """127.0.0.N, skipping those other clusters recorded and those where something holds port 2377. The scan
    starts at an offset of the cluster's name: clusters of other directories, planned at the same moment,
    would otherwise both find 127.0.0.2 free before either binds it."""
    found = []
    start = zlib.crc32(name.encode()) % 253
    for host in (2 + (start + i) % 253 for i in range(253)):
        ip = f"127.0.0.{host}"
        if ip not in taken and port_free(ip, port):
            found.append(ip)
            if len(found) == count:
                return found
    raise ClusterError(f"fewer than {count} loopback addresses 127.0.0.N have port {port} free")


Resource = dict[str, str]
"""A host resource as a cluster's record lists it: {"kind": "bridge" | "netns" | "veth" | ..., "name": ...}."""


class BridgedNamespace(NamedTuple):
    """A node's network namespace on the cluster's bridge: `eth0` inside at `ip`, `veth` its peer on the host."""

    namespace: str
    veth: str
    ip: str


def record_before_making(
    resources: list[Resource], save: Callable[[], None], kind: str, name: str, existing: set[str], whose: str
) -> None:
    """Record a resource (and `save` the record) before making it, so that removal finds it even after a
    failure halfway; refuse one that exists already: it is someone else's, and `whose` tells the user so."""
    if name in existing:
        raise ClusterError(f"the {kind} {name} already exists: {whose}")
    resources.append({"kind": kind, "name": name})
    save()


def make_bridged_namespaces(
    bridge: str,
    subnet: ipaddress.IPv4Network,
    nodes: Sequence[BridgedNamespace],
    record: Callable[[str, str, set[str]], None],
) -> str:
    """The bridge, holding the host's address (the subnet's first), then per node: the namespace and a veth
    pair with `eth0` inside, addressed and up. `record(kind, name, existing)` is called before each is made
    (see `record_before_making`). Returns the host's address."""
    host = str(next(subnet.hosts()))
    existing_links, existing_namespaces = links(), network_namespaces()
    record("bridge", bridge, existing_links)
    ip_command("link", "add", bridge, "type", "bridge")
    ip_command("addr", "add", f"{host}/{subnet.prefixlen}", "dev", bridge)
    ip_command("link", "set", bridge, "up")
    for node in nodes:
        record("netns", node.namespace, existing_namespaces)
        ip_command("netns", "add", node.namespace)
        record("veth", node.veth, existing_links)
        ip_command("link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.namespace)
        ip_command("link", "set", node.veth, "master", bridge, "up")
        ip_command("-n", node.namespace, "addr", "add", f"{node.ip}/{subnet.prefixlen}", "dev", "eth0")
        ip_command("-n", node.namespace, "link", "set", "eth0", "up")
        ip_command("-n", node.namespace, "link", "set", "lo", "up")
    return host


def remove_recorded(
    resources: Sequence[Resource], remove_other: Callable[[Resource], None] | None = None
) -> tuple[list[Resource], list[str]]:
    """Remove the recorded resources that exist, newest first (a veth before its namespace, the bridge last):
    bridges, veths and namespaces here, any other kind through `remove_other`. Returns what remains recorded
    (it could not be removed), in record order, and why."""
    remaining: list[Resource] = []
    failures: list[str] = []
    if not resources:
        return remaining, failures
    existing_links, existing_namespaces = links(), network_namespaces()
    for resource in reversed(resources):
        kind, name = resource["kind"], resource["name"]
        try:
            if kind in ("veth", "bridge"):
                if name in existing_links:
                    ip_command("link", "delete", name)  # a veth's peer in the namespace goes with it
                    existing_links = links()
            elif kind == "netns":
                if name in existing_namespaces:
                    ip_command("netns", "delete", name)
                    existing_links = links()  # and a veth with the namespace of its peer
            elif remove_other is not None:
                remove_other(resource)
            else:
                raise ClusterError(f"a {kind} {name!r} is recorded that this version of raftswarm cannot remove")
        except ClusterError as exc:
            failures.append(str(exc))
            remaining.insert(0, resource)
    return remaining, failures
