"""The host's side of a local cluster's network: the `ip` and `nft` commands, the host's own networks (so a
cluster's subnet overlaps none of them), free loopback addresses and ports, and what keeps network namespaces
from working here."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import zlib
from collections.abc import Sequence
from pathlib import Path

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
