"""Validation of the network create body users send to the swarm API (`docker network create -d overlay`).
Pure: no I/O.

The body is Docker's NetworkCreateRequest: Name, Driver, Scope, EnableIPv6, IPAM {Driver, Options,
Config [{Subnet, IPRange, Gateway}]}, Internal, Attachable, Ingress, Options, Labels. As in `specs`, the
first problem raises `InvalidSpec` with the path of the field at fault, unknown keys are kept as given, and
the returned body is a deep copy with no defaults filled in (`allocator.allocate_network` turns it into the
stored Network object).

Where raftswarm refuses what Docker accepts, on purpose:

- `--opt encrypted`: this kernel has no IPsec ESP, and an overlay asked to be encrypted must never carry
  its traffic in cleartext instead (Docker's own overlay silently falls back on hosts without ESP).
- Drivers other than "overlay", IPAM drivers other than "default", IPv6, config-only networks, auxiliary
  addresses and more than one subnet per network: raftswarm's data plane has nothing behind them.
- A subnet must be an RFC 1918 private IPv4 network from /8 to /29 written as its network address: an
  overlay on public addresses would shadow real hosts, and /30 leaves no room for a task next to the gateway.
- A VXLAN ID cannot be chosen: the allocator hands them out, so two networks never share one.
- A subnet may not hold the address of a node of the swarm (`refuse_node_addresses`): the overlay would
  shadow that node's own network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from .validation import (
    InvalidSpec,
    an_object,
    at,
    boolean,
    canonical_keys,
    check_field,
    fail,
    objects_in,
    shown,
    string,
    string_map,
    without_nulls,
)
from .stored import StoredObject

__all__ = [
    "DEFAULT_DRIVER",
    "DEFAULT_IPAM_DRIVER",
    "ENCRYPTED_OPTION",
    "VXLAN_ID_OPTION",
    "ingress_network_spec",
    "network_resource",
    "parse_subnet",
    "refuse_node_addresses",
    "validate_network_spec",
]

DEFAULT_DRIVER = "overlay"
DEFAULT_IPAM_DRIVER = "default"
ENCRYPTED_OPTION = "encrypted"
VXLAN_ID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"

_NAME_MAX = 255  # Docker sets no limit; this one only keeps a bad request from storing a megabyte-long name
_PREDEFINED_NAMES = ("bridge", "host", "none", "default")  # moby runconfig.IsPreDefinedNetwork
_MIN_PREFIX = 8  # the largest private range, 10.0.0.0/8
_MAX_PREFIX = 29  # network, gateway and broadcast leave 5 addresses for VIPs and tasks
_PRIVATE_RANGES = tuple(ipaddress.IPv4Network(r) for r in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # RFC 1122 "this host on this network": never routed
# NetworkCreateRequest's fields, for matching keys as Go does (see `specs`: case-insensitively).
_REQUEST_FIELDS = (
    "Name",
    "Driver",
    "Scope",
    "EnableIPv6",
    "IPAM",
    "Internal",
    "Attachable",
    "Ingress",
    "ConfigOnly",
    "ConfigFrom",
    "Options",
    "Labels",
    "CheckDuplicate",
)
_IPAM_FIELDS = ("Driver", "Options", "Config")
_IPAM_CONFIG_FIELDS = ("Subnet", "IPRange", "Gateway", "AuxiliaryAddresses")


def validate_network_spec(spec: Any) -> dict[str, Any]:
    """Check a network create body; return it (a deep copy, unknown keys kept, nothing defaulted).

    Raises `InvalidSpec` naming the first field at fault."""
    if not isinstance(spec, dict):
        raise InvalidSpec(f"the network spec must be a JSON object, got {shown(spec)}")
    network = without_nulls(spec)
    canonical_keys(network, _REQUEST_FIELDS)
    _name(network)
    driver = check_field(network, "", "Driver", string)
    if driver not in (None, "", DEFAULT_DRIVER):
        fail(
            "Driver",
            f"network driver {shown(driver)} is not supported in swarm mode; swarm networks use the"
            f' "{DEFAULT_DRIVER}" driver (leave Driver out to get it)',
        )
    scope = check_field(network, "", "Scope", string)
    if scope not in (None, "", "swarm"):
        fail("Scope", f'a network created through the swarm has scope "swarm", got {shown(scope)}')
    for key in ("Attachable", "Ingress", "Internal", "EnableIPv6", "CheckDuplicate", "ConfigOnly"):
        check_field(network, "", key, boolean)
    if network.get("EnableIPv6"):
        fail("EnableIPv6", "IPv6 overlay networks are not supported by raftswarm; leave EnableIPv6 out")
    if network.get("ConfigOnly") or network.get("ConfigFrom"):
        fail(
            "ConfigOnly" if network.get("ConfigOnly") else "ConfigFrom",
            "config-only networks are not supported by raftswarm; give the IPAM settings to the network itself",
        )
    if network.get("Ingress") and network.get("Attachable"):
        fail("Attachable", "ingress network cannot be attachable; the routing mesh is for services only")
    check_field(network, "", "Labels", string_map)
    check_field(network, "", "Options", _options)
    check_field(network, "", "IPAM", _ipam)
    return network


def ingress_network_spec() -> dict[str, Any]:
    """The create body of the `ingress` network Docker makes at `swarm init`: the routing mesh's overlay,
    with the subnet left to the allocator (10.0.0.0/24 in a new swarm) and no labels."""
    return {
        "Name": "ingress",
        "Driver": DEFAULT_DRIVER,
        "Ingress": True,
        "Attachable": False,
        "IPAM": {"Driver": DEFAULT_IPAM_DRIVER},
        "Labels": {},
    }


def parse_subnet(text: str, path: str, refusal: str) -> ipaddress.IPv4Network:
    """A Subnet or IPRange as a network; raises `InvalidSpec` at `path` unless it is IPv4 CIDR notation
    written as the network address. `refusal` starts the message for text that is no CIDR at all: Docker's
    words for that field, so a script matching dockerd's message matches raftswarm's."""
    address_text, slash, prefix = text.partition("/")
    try:
        address = ipaddress.ip_interface(text)
    except ValueError:
        address = None
    # Go's net.ParseCIDR, which dockerd uses, takes a decimal prefix length only (no netmask) and needs one.
    if address is not None and not slash:
        fail(path, f"{refusal}; give the prefix length too, e.g. {address_text}/24")
    if address is None or not (prefix.isascii() and prefix.isdigit()):
        fail(path, f"{refusal}; expected IPv4 CIDR notation such as 10.0.9.0/24")
    if address.version != 4:
        fail(path, f"{text} is an IPv6 subnet; raftswarm overlay networks are IPv4 only")
    if address.ip != address.network.network_address:
        fail(path, f"invalid subnet {text}: it should be {address.network}")
    return address.network


def refuse_node_addresses(spec: dict[str, Any], nodes: Iterable[dict[str, Any]]) -> None:
    """Raise `InvalidSpec` if the subnet of a checked create body holds the address of one of `nodes` (Node
    objects, by Status.Addr and ManagerStatus.Addr): the node would route its own network's traffic into the
    overlay, and lose its managers or its workers. Only the nodes' addresses are known, not their prefix
    lengths, so a subnet beside a node's address passes."""
    configs = (spec.get("IPAM") or {}).get("Config") or [{}]
    if not configs[0].get("Subnet"):
        return  # the allocator picks one
    subnet = ipaddress.IPv4Network(configs[0]["Subnet"])
    for node in nodes:
        for address in _node_addresses(node):
            if address in subnet:
                name = (node.get("Description") or {}).get("Hostname") or node.get("ID", "")
                fail(
                    "IPAM.Config[0].Subnet",
                    f"{subnet} overlaps the network of node {name} ({address}): the overlay would take over that"
                    " node's own traffic; pick a subnet that holds no node's address",
                )


def _node_addresses(node: dict[str, Any]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    texts = [(node.get("Status") or {}).get("Addr"), (node.get("ManagerStatus") or {}).get("Addr")]
    found = []
    for text in texts:
        if not isinstance(text, str):
            continue
        host = text.rpartition(":")[0].strip("[]") if text.count(":") == 1 or text.startswith("[") else text
        try:
            found.append(ipaddress.ip_address(host))
        except ValueError:  # a host name: nothing to compare
            continue
    return found


# -- field checks ------------------------------------------------------------------------------------------


def _name(network: dict[str, Any]) -> None:
    if "Name" not in network:
        fail("Name", 'required; name the network, e.g. "backend"')
    name = string(network["Name"], "Name")
    if not name:
        fail("Name", "name must be provided")
    if len(name) > _NAME_MAX:
        fail("Name", f"must be {_NAME_MAX} characters or fewer, got {len(name)}")
    if not (name[0].isascii() and name[0].isalnum()) or not all(
        c.isascii() and (c.isalnum() or c in "_.-") for c in name
    ):
        fail(
            "Name",
            f"invalid name {shown(name)}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
        )
    if name in _PREDEFINED_NAMES:
        fail("Name", f"{name} is a pre-defined network and cannot be created")


def _options(value: Any, path: str) -> None:
    string_map(value, path)
    if ENCRYPTED_OPTION in value:
        fail(
            at(path, ENCRYPTED_OPTION),
            "encrypted overlay networks are not supported: this kernel has no IPsec ESP, and raftswarm never"
            " sends the traffic of a network asked to be encrypted in cleartext instead; leave out"
            " --opt encrypted and protect the traffic in the application (TLS)",
        )
    if VXLAN_ID_OPTION in value:
        fail(
            at(path, VXLAN_ID_OPTION),
            "the VXLAN ID is chosen by the swarm, so no two networks share one; leave this option out",
        )


def _ipam(value: Any, path: str) -> None:
    ipam = an_object(value, path)
    canonical_keys(ipam, _IPAM_FIELDS)
    driver = check_field(ipam, path, "Driver", string)
    if driver not in (None, "", DEFAULT_IPAM_DRIVER):
        fail(
            at(path, "Driver"),
            f'IPAM driver {shown(driver)} is not supported; raftswarm allocates addresses itself ("default")',
        )
    check_field(ipam, path, "Options", string_map)
    configs = objects_in(ipam.get("Config") or [], at(path, "Config"))
    if len(configs) > 1:
        fail(at(path, "Config"), f"raftswarm gives a network one IPv4 subnet; got {len(configs)} configs")
    for config_path, config in configs:
        _ipam_config(config, config_path)


def _special_space(subnet: ipaddress.IPv4Network) -> str:
    """For the refusal's message: what a subnet outside the private ranges is, if more than public addresses."""
    if subnet.subnet_of(_THIS_NETWORK):
        return 'in 0.0.0.0/8 ("this network", never routed), '
    for test, words in (
        (subnet.is_loopback, "loopback (127.0.0.0/8, each host's own), "),
        (subnet.is_multicast, "multicast (224.0.0.0/4), "),
        (subnet.is_link_local, "link-local (169.254.0.0/16), "),
        (subnet.is_reserved, "reserved (240.0.0.0/4), "),
    ):
        if test:
            return words
    return ""


def _as_given(text: str) -> str:
    """A value as the user wrote it, unquoted as Docker echoes it, cut short enough for an error message."""
    return text if len(text) <= 60 else text[:57] + "..."


def _ipam_config(config: dict[str, Any], path: str) -> None:
    canonical_keys(config, _IPAM_CONFIG_FIELDS)
    if config.get("AuxiliaryAddresses"):
        fail(at(path, "AuxiliaryAddresses"), "auxiliary addresses are not supported by raftswarm; leave them out")
    subnet_text = check_field(config, path, "Subnet", string)
    if not subnet_text:
        for key in ("IPRange", "Gateway"):
            if config.get(key):
                fail(at(path, key), f"{key} needs a Subnet to belong to; give Subnet too")
        return
    given = _as_given(subnet_text)
    # dockerd's words (daemon.getIpamConfig, which sees the body before SwarmKit does)
    subnet = parse_subnet(subnet_text, at(path, "Subnet"), f"Invalid subnet {given} : invalid CIDR address: {given}")
    if not _MIN_PREFIX <= subnet.prefixlen <= _MAX_PREFIX:
        fail(
            at(path, "Subnet"),
            f"{subnet} is a /{subnet.prefixlen}; an overlay subnet must be from /{_MIN_PREFIX} to /{_MAX_PREFIX}",
        )
    if not any(subnet.subnet_of(private) for private in _PRIVATE_RANGES):
        fail(
            at(path, "Subnet"),
            f"{subnet} is {_special_space(subnet)}not a private range; use one inside 10.0.0.0/8, 172.16.0.0/12"
            " or 192.168.0.0/16 so the overlay never shadows real hosts",
        )
    ip_range_text = check_field(config, path, "IPRange", string)
    if ip_range_text:
        # SwarmKit's words (controlapi.validateIPAMConfiguration)
        refusal = f"ipam configuration: invalid range {_as_given(ip_range_text)}"
        ip_range = parse_subnet(ip_range_text, at(path, "IPRange"), refusal)
        if not ip_range.subnet_of(subnet):
            fail(at(path, "IPRange"), f"IP range {ip_range} is not inside subnet {subnet}")
    gateway_text = check_field(config, path, "Gateway", string)
    if gateway_text:
        try:
            gateway = ipaddress.IPv4Address(gateway_text)
        except ValueError:
            fail(at(path, "Gateway"), f"invalid gateway address {shown(gateway_text)}: expected e.g. 10.0.9.1")
        if gateway not in subnet:
            fail(at(path, "Gateway"), f"gateway {gateway} is not in subnet {subnet}")
        if gateway in (subnet.network_address, subnet.broadcast_address):
            which = "network" if gateway == subnet.network_address else "broadcast"
            fail(at(path, "Gateway"), f"gateway {gateway} is the {which} address of {subnet}; pick a host address")


def network_resource(stored: StoredObject | dict[str, Any], peers: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """A swarm network as Docker's engine API shows it (`GET /networks`, `docker network inspect`). `peers`
    ({Name, IP}, the nodes on it) are shown as Peers when there are any: dockerd omits the key otherwise, and
    has none in its listing or for a network the answering node is not on."""
    network = stored.data if isinstance(stored, StoredObject) else stored
    spec = network["Spec"]
    ipam = network.get("IPAMOptions") or {}
    options = dict(((network.get("DriverState") or {}).get("Options")) or {})
    options.update((spec.get("DriverConfiguration") or {}).get("Options") or {})
    return {
        "Name": spec["Name"],
        "Id": network["ID"],
        "Created": network.get("CreatedAt", ""),
        "Scope": "swarm",
        "Driver": (network.get("DriverState") or {}).get("Name", "overlay"),
        "EnableIPv6": False,
        "IPAM": {
            "Driver": (ipam.get("Driver") or {}).get("Name", "default"),
            "Options": (ipam.get("Driver") or {}).get("Options"),
            "Config": [
                {k: v for k, v in (("Subnet", c.get("Subnet")), ("Gateway", c.get("Gateway")), ("IPRange", c.get("Range"))) if v}
                for c in ipam.get("Configs") or []
            ],
        },
        "Internal": bool(spec.get("Internal")),
        "Attachable": bool(spec.get("Attachable")),
        "Ingress": bool(spec.get("Ingress")),
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {},
        "Options": options,
        "Labels": dict(spec.get("Labels") or {}),
    } | ({"Peers": list(peers)} if peers else {})
