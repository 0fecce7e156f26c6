"""VIP load balancing and the routing mesh with nftables (this kernel has no IPVS).

Modelled on Kubernetes' nftables kube-proxy. One `LoadBalancer` owns one nftables table in one network
namespace; nothing outside that table is touched. The table holds:

- `service-ips`: a verdict map `vip . proto . port -> goto svc-<vip>-<proto>-<port>`; each service chain is a
  single rule `dnat to numgen random mod N map { 0 : backend0, ... }`, so every new connection picks a
  backend at random and conntrack keeps the rest of the connection on it (NAT is only evaluated for the
  first packet of a connection).
- `vips`: a verdict map `vip -> goto vip-<vip>` that forwards every TCP and UDP port of a VIP, as Docker's
  IPVS firewall-mark service does: the chain's one rule `dnat to numgen random mod N map { ... }` changes
  only the address, so web:8080 reaches a task on 8080 though the service published nothing. It is consulted
  after `service-ips` and skips keys in `no-endpoint-services`, so a per-port service on the same VIP
  (even one with zero backends) decides for its own port.
- `node-ports`: a verdict map `proto . port -> chain` consulted only for packets addressed to one of this
  namespace's own addresses (`fib daddr type local`). A published (ingress) port's chain marks the packet
  for masquerade and DNATs it to `task_ip . target_port` chosen by numgen, so replies come back through
  this node exactly as with Docker's ingress sandbox; a host-mode port's chain DNATs to its one local task.
- `no-endpoint-services` / `no-endpoint-vips` / `no-endpoint-ports`: services, VIPs and published ports
  with zero backends. New connections to them are rejected with ICMP port-unreachable, which a TCP client
  sees as "connection refused" (ECONNREFUSED) and a UDP client as ECONNREFUSED on its next call, instead
  of hanging.

Every change is one `nft -f -` transaction that only adds, flushes and deletes the chain and elements of the
service it changes; other services and established connections are not disturbed. Deletions are written
as "add, then delete" so each script succeeds whatever the kernel already holds (nft 1.0.6 has no
`destroy`). Only creating the `LoadBalancer` replaces the table as a whole.

What a table holds can be read back (`read_tables`: one `nft -j list ruleset` per namespace, then
`held_state`, pure): `repair_script` turns it into the one transaction that makes it hold the desired state
again, the delta of the entries that differ, or the whole table when its skeleton was damaged or it is gone.

Forwarding (`net.ipv4.ip_forward=1`) in a namespace that serves the routing mesh is its owner's job.
IPv4 only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raftswarm.dataplane import DataplaneError

PROTOCOLS = ("tcp", "udp")

# The packet-mark bit that asks the postrouting chain to masquerade a routing-mesh connection. kube-proxy
# uses the same bit; the mark is cleared again before the packet leaves, so nothing else ever sees it.
MASQUERADE_MARK = 0x4000

# Standard netfilter hook priorities (NF_IP_PRI_NAT_DST, NF_IP_PRI_FILTER, NF_IP_PRI_NAT_SRC). Written as
# numbers because nft 1.0.6 refuses the symbolic names in `add chain` commands.
_PRIORITY_DSTNAT = -100
_PRIORITY_FILTER = 0
_PRIORITY_SRCNAT = 100

# nft identifiers: a letter, then letters, digits, '-' and '_'; the caller's prefix goes in front.
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

ServiceKey = tuple[str, str, int]  # (vip, protocol, port)
PortKey = tuple[str, int]  # (protocol, published port)
Endpoint = tuple[str, int]  # (ip, port)


class LoadBalancerError(DataplaneError):
    """nft refused a change (the message is nft's own), or a request was invalid. Nothing was changed."""


@dataclasses.dataclass(frozen=True)
class LoadBalancerState:
    """The desired load-balancing state of one namespace. Pure value: the `with_*`/`without_*` methods
    validate their arguments and return a new state."""

    services: Mapping[ServiceKey, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    vips: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    published: Mapping[PortKey, tuple[Endpoint, ...]] = dataclasses.field(default_factory=dict)
    host_ports: Mapping[PortKey, Endpoint] = dataclasses.field(default_factory=dict)

    def with_service(self, vip: str, port: int, protocol: str, backends: Iterable[str]) -> LoadBalancerState:
        key = (_ip(vip), _protocol(protocol), _port(port))
        return dataclasses.replace(self, services={**self.services, key: _unique(_ip(b) for b in backends)})

    def without_service(self, vip: str, port: int, protocol: str) -> LoadBalancerState:
        key = (_ip(vip), _protocol(protocol), _port(port))
        return dataclasses.replace(self, services={k: v for k, v in self.services.items() if k != key})

    def with_vip(self, vip: str, backends: Iterable[str]) -> LoadBalancerState:
        key = _ip(vip)
        return dataclasses.replace(self, vips={**self.vips, key: _unique(_ip(b) for b in backends)})

    def without_vip(self, vip: str) -> LoadBalancerState:
        key = _ip(vip)
        return dataclasses.replace(self, vips={k: v for k, v in self.vips.items() if k != key})

    def with_published(self, port: int, protocol: str, backends: Iterable[str | Endpoint]) -> LoadBalancerState:
        key = (_protocol(protocol), _port(port))
        if key in self.host_ports:
            raise LoadBalancerError(f"port {port}/{protocol} is already published in host mode on this node")
        endpoints = _unique(_endpoint(b) for b in backends)
        return dataclasses.replace(self, published={**self.published, key: endpoints})

    def without_published(self, port: int, protocol: str) -> LoadBalancerState:
        key = (_protocol(protocol), _port(port))
        return dataclasses.replace(self, published={k: v for k, v in self.published.items() if k != key})

    def with_host_port(self, port: int, protocol: str, task_ip: str, target_port: int) -> LoadBalancerState:
        key = (_protocol(protocol), _port(port))
        if key in self.published:
            raise LoadBalancerError(
                f"port {port}/{protocol} is already published in ingress mode (routing mesh) on this node"
            )
        target = (_ip(task_ip), _port(target_port))
        return dataclasses.replace(self, host_ports={**self.host_ports, key: target})

    def without_host_port(self, port: int, protocol: str) -> LoadBalancerState:
        key = (_protocol(protocol), _port(port))
        return dataclasses.replace(self, host_ports={k: v for k, v in self.host_ports.items() if k != key})


def render_ruleset(table: str, state: LoadBalancerState) -> str:
    """The nft script that replaces table `ip <table>` with one holding exactly `state`."""
    _check_table(table)
    lines = [f"add table ip {table}", f"delete table ip {table}", f"add table ip {table}", *_skeleton(table)]
    lines += _upserts(table, LoadBalancerState(), state)
    return "\n".join(lines) + "\n"


def render_delta(table: str, old: LoadBalancerState, new: LoadBalancerState) -> str:
    """The nft script that turns a table holding `old` into one holding `new`, touching only the
    services and ports that differ. Empty when there is nothing to do."""
    _check_table(table)
    lines = _removals(table, old, new) + _upserts(table, old, new)
    return "\n".join(lines) + "\n" if lines else ""


def repair_script(table: str, held: LoadBalancerState | None, desired: LoadBalancerState) -> str:
    """The nft script that makes a table that holds `held` (`held_state`; None: missing or damaged) hold
    `desired`: only the entries that differ, or the whole table anew. Empty when they agree."""
    return render_ruleset(table, desired) if held is None else render_delta(table, held, desired)


def read_tables(netns: str | None) -> dict[str, list[dict[str, Any]]]:
    """The `ip` family tables of the namespace at path `netns` (None: the caller's own), each as the list of
    its objects (sets, maps, chains, rules) in nft's JSON form, from one `nft -j list ruleset`."""
    output = _run_nft(netns, ["-j", "list", "ruleset"], None, "could not list the ruleset")
    try:
        listed = json.loads(output or '{"nftables": []}')["nftables"]
    except (ValueError, KeyError, TypeError) as error:
        raise LoadBalancerError(f"cannot parse nft's JSON listing: {error}") from error
    tables: dict[str, list[dict[str, Any]]] = {}
    for item in listed:
        for kind, body in item.items():
            if kind == "table" and body.get("family") == "ip":
                tables.setdefault(body["name"], [])
            elif kind != "metainfo" and body.get("family") == "ip" and "table" in body:
                tables.setdefault(body["table"], []).append({kind: body})
    return tables


def held_state(objects: Sequence[Mapping[str, Any]] | None) -> LoadBalancerState | None:
    """What a table holds, from its objects as `read_tables` lists them; None when it is missing or not
    what `render_ruleset` and `render_delta` keep it as (a set, map, chain or skeleton rule gone, an entry
    in both a balanced map and its no-endpoint set, a chain that is not the one its entry names): only
    writing it anew repairs that. Rules are checked by number, not content."""
    if objects is None:
        return None
    chains: dict[str, Mapping[str, Any]] = {}
    rules: dict[str, list[list[Any]]] = {}
    elements: dict[str, list[Any]] = {}
    for item in objects:
        for kind, body in item.items():
            if kind == "chain":
                chains[body["name"]] = body
            elif kind == "rule":
                rules.setdefault(body["chain"], []).append(body.get("expr") or [])
            elif kind in ("set", "map"):
                elements[body["name"]] = body.get("elem") or []
    if any(name not in elements for name in _SKELETON_SETS):
        return None
    for name, hook in _SKELETON_CHAINS.items():
        chain = chains.get(name)
        if chain is None or (hook is not None and (chain.get("type"), chain.get("hook"), chain.get("prio")) != hook):
            return None
        if len(rules.get(name, [])) != _SKELETON_RULES[name]:
            return None
    try:
        return _held_entries(elements, rules)
    except (KeyError, TypeError, ValueError, IndexError, LoadBalancerError):
        return None


def _held_entries(elements: Mapping[str, list[Any]], rules: Mapping[str, list[list[Any]]]) -> LoadBalancerState | None:
    services: dict[ServiceKey, tuple[str, ...]] = {}
    vips: dict[str, tuple[str, ...]] = {}
    published: dict[PortKey, tuple[Endpoint, ...]] = {}
    host_ports: dict[PortKey, Endpoint] = {}
    for key, chain in _verdicts(elements["service-ips"]):
        service = _service_key(*key["concat"])
        if chain != _service_chain(service):
            return None
        services[service] = tuple(_ip(b) for b in _dnat_choices(rules.get(chain), 1))
    for key, chain in _verdicts(elements["vips"]):
        vip = _ip(key)
        if chain != _vip_chain(vip):
            return None
        vips[vip] = tuple(_ip(b) for b in _dnat_choices(rules.get(chain), 1))
    for key, chain in _verdicts(elements["node-ports"]):
        protocol, port = key["concat"]
        node_port = (_protocol(protocol), _port(port))
        if chain == _published_chain(node_port):
            choices = _dnat_choices(rules.get(chain), 2)
            published[node_port] = tuple(_endpoint(tuple(choice["concat"])) for choice in choices)
        elif chain == _host_chain(node_port):
            host_ports[node_port] = _host_target(rules.get(chain))
        else:
            return None
    refused = [
        ("no-endpoint-services", services, lambda e: _service_key(*e["concat"])),
        ("no-endpoint-vips", vips, _ip),
        ("no-endpoint-ports", published, lambda e: (_protocol(e["concat"][0]), _port(e["concat"][1]))),
    ]
    for set_name, balanced, parse in refused:
        for element in elements[set_name]:
            key = parse(element)
            if key in balanced or key in host_ports:
                return None
            balanced[key] = ()
    return LoadBalancerState(services, vips, published, host_ports)


def _service_key(vip: str, protocol: str, port: int) -> ServiceKey:
    return _ip(vip), _protocol(protocol), _port(port)


def _verdicts(map_elements: list[Any]) -> Iterable[tuple[Any, str]]:
    """(key, chain) of each `key : goto chain` element of a verdict map."""
    for key, verdict in map_elements:
        yield key, verdict["goto"]["target"]


def _dnat_choices(chain_rules: list[list[Any]] | None, count: int) -> list[Any]:
    """The values of the `numgen random mod N map { 0 : v0, ... }` that the last of the chain's `count`
    rules DNATs to, in index order. Raises ValueError if the chain is not that."""
    if chain_rules is None or len(chain_rules) != count:
        raise ValueError("not a balanced chain")
    (dnat,) = [expr["dnat"] for expr in chain_rules[-1] if "dnat" in expr]
    choice = dnat["addr"]["map"]
    modulus = choice["key"]["numgen"]["mod"]
    pairs = sorted(choice["data"]["set"], key=lambda pair: pair[0])
    if [index for index, _ in pairs] != list(range(modulus)):
        raise ValueError("numgen map does not cover its modulus")
    return [value for _, value in pairs]


def _host_target(chain_rules: list[list[Any]] | None) -> Endpoint:
    if chain_rules is None or len(chain_rules) != 1:
        raise ValueError("not a host port chain")
    (dnat,) = [expr["dnat"] for expr in chain_rules[0] if "dnat" in expr]
    return _ip(dnat["addr"]), _port(dnat["port"])


def apply_nft(netns: str | None, script: str) -> None:
    """Run `script` as one atomic `nft -f -` transaction inside the network namespace at path `netns`
    (None: the caller's own). Raises LoadBalancerError with nft's message if nft refuses it."""
    _run_nft(netns, ["-f", "-"], script, "refused a change")


def _run_nft(netns: str | None, arguments: list[str], script: str | None, doing: str) -> str:
    command = ["nft", *arguments]
    if netns is not None:
        command = ["nsenter", f"--net={netns}", *command]
    try:
        result = subprocess.run(command, input=script, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError as error:
        raise LoadBalancerError(f"cannot run {command[0]}: install nftables (nft) and util-linux") from error
    except subprocess.TimeoutExpired as error:
        raise LoadBalancerError(f"nft did not finish within 30 s in namespace {netns or 'of this process'}") from error
    if result.returncode != 0:
        where = f"network namespace {netns}" if netns else "this network namespace"
        raise LoadBalancerError(f"nft {doing} in {where}: {result.stderr.strip()}")
    return result.stdout


class LoadBalancer:
    """Programs VIPs, published (routing-mesh) ports and host-mode ports into one nftables table of one
    network namespace. Every method is idempotent and applies one atomic transaction; on an error the
    kernel and this object's `state` are both left as they were."""

    def __init__(self, netns: str | None, table: str, state: LoadBalancerState | None = None) -> None:
        """Create (or replace) table `ip <table>` in the namespace at path `netns` (None: our own)."""
        _check_table(table)
        self.netns = netns
        self.table = table
        initial = state or LoadBalancerState()
        apply_nft(netns, render_ruleset(table, initial))
        self.state = initial

    def set_service(self, vip: str, port: int, protocol: str, backends: Sequence[str]) -> None:
        """Balance new connections to vip:port over `backends` (task IPs; the port is unchanged).
        With no backends, new connections are refused."""
        self._change(self.state.with_service(vip, port, protocol, backends))

    def remove_service(self, vip: str, port: int, protocol: str) -> None:
        self._change(self.state.without_service(vip, port, protocol))

    def set_vip(self, vip: str, backends: Sequence[str]) -> None:
        """Balance new connections to every TCP and UDP port of `vip` over `backends` (task IPs; the port
        is unchanged). A `set_service` on the same VIP takes precedence for its own port. With no
        backends, new connections are refused."""
        self._change(self.state.with_vip(vip, backends))

    def remove_vip(self, vip: str) -> None:
        self._change(self.state.without_vip(vip))

    def set_published(self, port: int, protocol: str, backends: Sequence[str | Endpoint]) -> None:
        """Routing mesh: connections to `port` on any of this namespace's addresses go to one of
        `backends` ("ip:port" or (ip, port); may be on other nodes), masqueraded behind this node.
        With no backends, new connections are refused."""
        self._change(self.state.with_published(port, protocol, backends))

    def remove_published(self, port: int, protocol: str) -> None:
        self._change(self.state.without_published(port, protocol))

    def set_host_port(self, port: int, protocol: str, task_ip: str, target_port: int) -> None:
        """Host-mode publishing: connections to `port` on this namespace's addresses go to the one local
        task at task_ip:target_port, without masquerade."""
        self._change(self.state.with_host_port(port, protocol, task_ip, target_port))

    def remove_host_port(self, port: int, protocol: str) -> None:
        self._change(self.state.without_host_port(port, protocol))

    def close(self) -> None:
        """Delete the table. Established connections keep their conntrack NAT bindings until they end.
        A no-op when the namespace is already gone (its tables went with it)."""
        if self.netns is not None and not os.path.exists(self.netns):
            return
        apply_nft(self.netns, f"add table ip {self.table}\ndelete table ip {self.table}\n")
        self.state = LoadBalancerState()

    def _change(self, new: LoadBalancerState) -> None:
        script = render_delta(self.table, self.state, new)
        if script:
            apply_nft(self.netns, script)
        self.state = new


def _skeleton(t: str) -> list[str]:
    nat_hooks = [("nat-prerouting", "prerouting"), ("nat-output", "output")]
    filter_hooks = [("filter-input", "input"), ("filter-forward", "forward"), ("filter-output", "output")]
    lines = [
        f"add map ip {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}",
        f"add map ip {t} vips {{ type ipv4_addr : verdict ; }}",
        f"add map ip {t} node-ports {{ type inet_proto . inet_service : verdict ; }}",
        f"add set ip {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service ; }}",
        f"add set ip {t} no-endpoint-vips {{ type ipv4_addr ; }}",
        f"add set ip {t} no-endpoint-ports {{ type inet_proto . inet_service ; }}",
        f"add chain ip {t} services",
        f"add rule ip {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        (
            f"add rule ip {t} services meta l4proto {{ {', '.join(PROTOCOLS)} }} "
            f"ip daddr . meta l4proto . th dport != @no-endpoint-services ip daddr vmap @vips"
        ),
        f"add rule ip {t} services fib daddr type local meta l4proto . th dport vmap @node-ports",
        f"add chain ip {t} endpoints-check",
        f"add rule ip {t} endpoints-check ip daddr . meta l4proto . th dport @no-endpoint-services reject",
        f"add rule ip {t} endpoints-check meta l4proto {{ {', '.join(PROTOCOLS)} }} ip daddr @no-endpoint-vips reject",
        f"add rule ip {t} endpoints-check fib daddr type local meta l4proto . th dport @no-endpoint-ports reject",
        f"add chain ip {t} nat-postrouting {{ type nat hook postrouting priority {_PRIORITY_SRCNAT} ; policy accept ; }}",
        f"add rule ip {t} nat-postrouting meta mark & {MASQUERADE_MARK:#x} == 0 return",
        f"add rule ip {t} nat-postrouting meta mark set meta mark ^ {MASQUERADE_MARK:#x} masquerade fully-random",
    ]
    for chain, hook in nat_hooks:
        lines.append(
            f"add chain ip {t} {chain} {{ type nat hook {hook} priority {_PRIORITY_DSTNAT} ; policy accept ; }}"
        )
        lines.append(f"add rule ip {t} {chain} jump services")
    for chain, hook in filter_hooks:
        lines.append(
            f"add chain ip {t} {chain} {{ type filter hook {hook} priority {_PRIORITY_FILTER} ; policy accept ; }}"
        )
        lines.append(f"add rule ip {t} {chain} ct state new jump endpoints-check")
    return lines


def _skeleton_shape() -> tuple[dict[str, tuple[str, str, int] | None], Counter[str], frozenset[str]]:
    """From `_skeleton` itself: its chains (with (type, hook, priority) for base chains), how many rules
    each holds, and its sets and maps. What `held_state` checks a table read back against."""
    chains: dict[str, tuple[str, str, int] | None] = {}
    rules: Counter[str] = Counter()
    sets: set[str] = set()
    for line in _skeleton("t"):
        words = line.split()
        kind, name = words[1], words[4]
        if kind in ("map", "set"):
            sets.add(name)
        elif kind == "chain":
            base = re.search(r"type (\w+) hook (\w+) priority (-?\d+)", line)
            chains[name] = (base[1], base[2], int(base[3])) if base else None
        elif kind == "rule":
            rules[name] += 1
    return chains, rules, frozenset(sets)


def _removals(t: str, old: LoadBalancerState, new: LoadBalancerState) -> list[str]:
    """Everything in `old` and not in `new`, written so it succeeds even if already gone. Emitted before
    any upsert, so a port moving between host and ingress mode frees its `node-ports` key first."""
    lines: list[str] = []
    for key in old.services.keys() - new.services.keys():
        lines += _map_entry_absent(t, "service-ips", _service_element(key), _service_chain(key))
        lines += _set_entry_absent(t, "no-endpoint-services", _service_element(key))
    for vip in old.vips.keys() - new.vips.keys():
        lines += _map_entry_absent(t, "vips", vip, _vip_chain(vip))
        lines += _set_entry_absent(t, "no-endpoint-vips", vip)
    for key in old.published.keys() - new.published.keys():
        lines += _map_entry_absent(t, "node-ports", _port_element(key), _published_chain(key))
        lines += _set_entry_absent(t, "no-endpoint-ports", _port_element(key))
    for key in old.host_ports.keys() - new.host_ports.keys():
        lines += _map_entry_absent(t, "node-ports", _port_element(key), _host_chain(key))
    return lines


def _upserts(t: str, old: LoadBalancerState, new: LoadBalancerState) -> list[str]:
    lines: list[str] = []
    for key, backends in sorted(new.services.items()):
        if old.services.get(key) == backends:
            continue
        lines += _balanced(t, "service-ips", "no-endpoint-services", _service_element(key), _service_chain(key), backends)
    for vip, backends in sorted(new.vips.items()):
        if old.vips.get(vip) == backends:
            continue
        lines += _balanced(t, "vips", "no-endpoint-vips", vip, _vip_chain(vip), backends)
    for key, endpoints in sorted(new.published.items()):
        if old.published.get(key) == endpoints:
            continue
        element, chain = _port_element(key), _published_chain(key)
        if endpoints:
            choice = ", ".join(f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(endpoints))
            lines += [
                f"add chain ip {t} {chain}",
                f"flush chain ip {t} {chain}",
                f"add rule ip {t} {chain} meta mark set meta mark | {MASQUERADE_MARK:#x}",
                (
                    f"add rule ip {t} {chain} meta l4proto {key[0]} "
                    f"dnat ip addr . port to numgen random mod {len(endpoints)} map {{ {choice} }}"
                ),
                f"add element ip {t} node-ports {{ {element} : goto {chain} }}",
                *_set_entry_absent(t, "no-endpoint-ports", element),
            ]
        else:
            lines += _map_entry_absent(t, "node-ports", element, chain)
            lines.append(f"add element ip {t} no-endpoint-ports {{ {element} }}")
    for key, (ip, port) in sorted(new.host_ports.items()):
        if old.host_ports.get(key) == (ip, port):
            continue
        element, chain = _port_element(key), _host_chain(key)
        lines += [
            f"add chain ip {t} {chain}",
            f"flush chain ip {t} {chain}",
            f"add rule ip {t} {chain} meta l4proto {key[0]} dnat to {ip}:{port}",
            f"add element ip {t} node-ports {{ {element} : goto {chain} }}",
        ]
    return lines


def _balanced(t: str, vmap: str, no_endpoints: str, element: str, chain: str, backends: tuple[str, ...]) -> list[str]:
    """A service's or VIP's chain, DNAT to one of `backends` at random, entered from `vmap`; with no
    backends, its element goes to the `no_endpoints` set instead (refused)."""
    if not backends:
        return [*_map_entry_absent(t, vmap, element, chain), f"add element ip {t} {no_endpoints} {{ {element} }}"]
    return [
        f"add chain ip {t} {chain}",
        f"flush chain ip {t} {chain}",
        f"add rule ip {t} {chain} dnat to numgen random mod {len(backends)} map {{ {_choice(backends)} }}",
        f"add element ip {t} {vmap} {{ {element} : goto {chain} }}",
        *_set_entry_absent(t, no_endpoints, element),
    ]


def _map_entry_absent(t: str, map_name: str, element: str, chain: str) -> list[str]:
    """Delete a verdict-map entry and the chain it jumps to, whether or not they exist."""
    return [
        f"add chain ip {t} {chain}",
        f"add element ip {t} {map_name} {{ {element} : goto {chain} }}",
        f"delete element ip {t} {map_name} {{ {element} }}",
        f"flush chain ip {t} {chain}",
        f"delete chain ip {t} {chain}",
    ]


def _set_entry_absent(t: str, set_name: str, element: str) -> list[str]:
    return [f"add element ip {t} {set_name} {{ {element} }}", f"delete element ip {t} {set_name} {{ {element} }}"]


def _choice(backends: Sequence[str]) -> str:
    """The numgen map that picks one backend IP (port unchanged) per new connection."""
    return ", ".join(f"{i} : {ip}" for i, ip in enumerate(backends))


def _service_element(key: ServiceKey) -> str:
    vip, protocol, port = key
    return f"{vip} . {protocol} . {port}"


def _port_element(key: PortKey) -> str:
    protocol, port = key
    return f"{protocol} . {port}"


def _service_chain(key: ServiceKey) -> str:
    vip, protocol, port = key
    return f"svc-{vip.replace('.', '_')}-{protocol}-{port}"


def _vip_chain(vip: str) -> str:
    return f"vip-{vip.replace('.', '_')}"


def _published_chain(key: PortKey) -> str:
    return f"ingress-{key[0]}-{key[1]}"


def _host_chain(key: PortKey) -> str:
    return f"hostport-{key[0]}-{key[1]}"


def _check_table(table: str) -> None:
    if not _TABLE_NAME.fullmatch(table):
        raise LoadBalancerError(
            f"invalid nftables table name {table!r}: use a letter followed by up to 63 letters, digits, '-' or '_'"
        )


def _ip(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError as error:
        raise LoadBalancerError(f"{value!r} is not an IPv4 address (the load balancer is IPv4 only)") from error


def _protocol(value: str) -> str:
    protocol = value.lower()
    if protocol not in PROTOCOLS:
        raise LoadBalancerError(f"unsupported protocol {value!r}: use one of {', '.join(PROTOCOLS)}")
    return protocol


def _port(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise LoadBalancerError(f"invalid port {value!r}: use an integer from 1 to 65535")
    return value


def _endpoint(value: str | Endpoint) -> Endpoint:
    if isinstance(value, str):
        ip, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise LoadBalancerError(f"invalid backend {value!r}: write it as IP:PORT")
        return _ip(ip), _port(int(port))
    ip, port = value
    return _ip(ip), _port(port)


def _unique(items: Iterable) -> tuple:
    """Drop repeats (a repeated backend would get twice the share of connections), keeping order."""
    return tuple(dict.fromkeys(items))


_SKELETON_CHAINS, _SKELETON_RULES, _SKELETON_SETS = _skeleton_shape()
