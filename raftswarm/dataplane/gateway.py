"""The gateway bridge of one node (Docker's docker_gwbridge): how tasks on overlay networks reach anything
outside their overlays, and how host-mode published ports reach a task.

In the node's own namespace, a bridge `rswgw0` holds the gateway address of a node-local subnet (Docker's
default 172.18.0.0/16: every node has its own namespace, so the same subnet on every node is fine). A task
gets one more interface, a veth whose other end is a port of the bridge, with a node-local address and
its default route through the gateway. An nftables table `raftswarm-gw`:

- masquerades what tasks send out of the node (`ip saddr <subnet> oifname != rswgw0`), as Docker does;
- refuses what tasks send through it to the swarm's overlay address pool (`OVERLAY_POOL`);
- forwards into the bridge only connections the node itself DNATed (host-mode published ports) or replies:
  nothing else from outside reaches a task, and tasks cannot reach each other through the bridge (its
  ports are isolated from each other, like Docker's `icc=false` on docker_gwbridge).

Addresses are the agent's own to hand out (`GatewayBridge.attach` takes the one to give): they never leave
the node. `read` and `table_intact` say whether the bridge, its ports and its table are still there (what the
node's repair pass checks). Synchronous and blocking; callers on an asyncio loop run it in a thread.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import DataplaneError
from .netns import ignoring, rtnl

BRIDGE = "rswgw0"
TABLE = "raftswarm-gw"
DEFAULT_SUBNET = ipaddress.IPv4Network("172.18.0.0/16")
OVERLAY_POOL = ipaddress.IPv4Network("10.0.0.0/8")
"""The swarm's default address pool: a task's way out never leads into an overlay it is not on (through
the node's ingress interface, say), so networks stay isolated and published ports are the only way in."""
_BR_ISOLATED = 1  # IFLA_BRPORT_ISOLATED's value when on
_IFF_UP = 0x1


@dataclass(frozen=True)
class GatewayState:
    """What the kernel holds of the gateway bridge (`GatewayBridge.read`); its table is `table_intact`'s."""

    bridge: bool
    """The bridge is there, up, with the gateway address."""
    ports: frozenset[str]
    """Those of the asked-for tasks' bridge ends that are there, up, and in the bridge."""


class GatewayBridge:
    def __init__(self, subnet: ipaddress.IPv4Network = DEFAULT_SUBNET) -> None:
        self.subnet = subnet
        self.gateway = next(subnet.hosts())

    def create(self) -> None:
        """The bridge with the gateway address, up, and the table; repeating it is harmless."""
        what = f"create gateway bridge {BRIDGE}"
        with rtnl(None, what) as ipr:
            if not ipr.link_lookup(ifname=BRIDGE):
                ipr.link("add", ifname=BRIDGE, kind="bridge")
            index = ipr.link_lookup(ifname=BRIDGE)[0]
            with ignoring(errno.EEXIST):
                ipr.addr("add", index=index, address=str(self.gateway), prefixlen=self.subnet.prefixlen)
            ipr.link("set", index=index, state="up")
        with open("/proc/sys/net/ipv4/ip_forward", "w") as forwarding:
            forwarding.write("1")
        # The node's own networks may lie inside the pool (a local cluster's bridge does): those stay reachable.
        reachable = ", ".join(str(net) for net in _node_subnets()) or str(self.subnet)
        chains = _table_chains(self.subnet, reachable)
        body = "\n".join(
            f"chain {name} {{\n{header}\n" + "\n".join(rules) + "\n}" for name, (header, rules) in chains.items()
        )
        _nft(f"table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n{body}\n}}\n")

    def read(self, host_ifnames: Iterable[str]) -> GatewayState:
        """Whether the bridge is there, and which of `host_ifnames` (tasks' bridge ends) are plugged in."""
        wanted = set(host_ifnames)
        with rtnl(None, "read the gateway bridge") as ipr:
            links = {link.get("ifname"): link for link in ipr.get_links()}
            bridge = links.get(BRIDGE)
            if bridge is None:
                return GatewayState(False, frozenset())
            held = ipr.get_addr(family=socket.AF_INET, index=bridge["index"])
            addresses = {(a.get("address"), a["prefixlen"]) for a in held}
            ports = frozenset(
                name
                for name in wanted
                if name in links and links[name]["flags"] & _IFF_UP and links[name].get("master") == bridge["index"]
            )
        ready = bool(bridge["flags"] & _IFF_UP) and (str(self.gateway), self.subnet.prefixlen) in addresses
        return GatewayState(ready, ports)

    def attach(self, task_netns_path: str, address: ipaddress.IPv4Address, ifname: str, host_ifname: str) -> None:
        """Give the task `ifname` on the bridge with `address` and its default route through the gateway.
        `host_ifname` names the bridge's end (unique on the node, at most 15 bytes)."""
        what = f"attach {address} to gateway bridge as {ifname} in {task_netns_path}"
        with rtnl(None, what) as ipr:
            bridge = ipr.link_lookup(ifname=BRIDGE)
            if not bridge:
                raise DataplaneError(f"{what}: the gateway bridge does not exist; call create() first")
            for stale in ipr.link_lookup(ifname=host_ifname):
                ipr.link("del", index=stale)
            ipr.link("add", ifname=host_ifname, kind="veth", peer={"ifname": ifname, "net_ns_fd": task_netns_path})
            port = ipr.link_lookup(ifname=host_ifname)[0]
            ipr.link("set", index=port, master=bridge[0], state="up")
            ipr.brport("set", index=port, isolated=_BR_ISOLATED)
        with rtnl(task_netns_path, what) as task:
            index = task.link_lookup(ifname=ifname)[0]
            task.addr("replace", index=index, address=str(address), prefixlen=self.subnet.prefixlen)
            task.link("set", index=index, state="up")
            with ignoring(errno.EEXIST):
                task.route("add", dst="0.0.0.0/0", gateway=str(self.gateway))

    def detach(self, host_ifname: str) -> None:
        with rtnl(None, f"detach {host_ifname} from the gateway bridge") as ipr:
            for index in ipr.link_lookup(ifname=host_ifname):
                with ignoring(errno.ENODEV, errno.ENOENT):
                    ipr.link("del", index=index)

    def remove(self) -> None:
        with rtnl(None, "remove the gateway bridge") as ipr:
            for index in ipr.link_lookup(ifname=BRIDGE):
                with ignoring(errno.ENODEV, errno.ENOENT):
                    ipr.link("del", index=index)
        _nft(f"table ip {TABLE}\ndelete table ip {TABLE}\n")


def table_intact(objects: Sequence[Mapping[str, Any]] | None) -> bool:
    """Whether the gateway's table, as `loadbalancer.read_tables` lists it, still has its chains and the
    number of rules `create` writes in each (a missing table, chain or rule means `create` again)."""
    if objects is None:
        return False
    expected = {name: len(rules) for name, (_, rules) in _table_chains(DEFAULT_SUBNET, str(DEFAULT_SUBNET)).items()}
    held = {body["name"]: 0 for item in objects for kind, body in item.items() if kind == "chain"}
    for item in objects:
        for kind, body in item.items():
            if kind == "rule" and body["chain"] in held:
                held[body["chain"]] += 1
    return all(held.get(name) == count for name, count in expected.items())


def _table_chains(subnet: ipaddress.IPv4Network, reachable: str) -> dict[str, tuple[str, list[str]]]:
    """The chains of the gateway's table: name -> (hook line, rules)."""
    return {
        "postrouting": (
            "type nat hook postrouting priority 100; policy accept;",
            [f'ip saddr {subnet} oifname != "{BRIDGE}" masquerade'],
        ),
        "forward": (
            "type filter hook forward priority 0; policy accept;",
            [
                "ct state established,related accept",
                f'iifname "{BRIDGE}" ip daddr {{ {reachable} }} accept',
                f'iifname "{BRIDGE}" ip daddr {OVERLAY_POOL} meta l4proto tcp reject with tcp reset',
                f'iifname "{BRIDGE}" ip daddr {OVERLAY_POOL} reject with icmp type admin-prohibited',
                f'oifname "{BRIDGE}" ct status dnat accept',
                f'oifname "{BRIDGE}" drop',
            ],
        ),
    }


def _node_subnets() -> list[ipaddress.IPv4Network]:
    """The subnets of the node's own addresses (its underlay), not those of its bridges into overlays."""
    subnets = []
    with rtnl(None, "list the node's addresses") as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for addr in ipr.get_addr(family=2):
            name = names.get(addr["index"], "")
            if name == "lo" or name == BRIDGE or name.startswith("rswingress"):
                continue
            subnets.append(ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}").network)
    return subnets


def _nft(script: str) -> None:
    done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise DataplaneError(f"nft refused the gateway table: {done.stderr.strip()}")
