"""The allocator's decisions: subnets and VXLAN IDs for networks, virtual IPs and published ports for
services, addresses for tasks. Pure functions over a view of the store; no I/O.

SwarmKit's manager/allocator keeps its own in-memory bitmaps (cnmallocator, portallocator) and rebuilds
them when a manager takes over; when the two drift apart, addresses leak or are handed out twice
(moby/moby#37338, #43052). Here there is no second copy: what is in use is computed from the view every
time (`addresses_in_use`), so an address is held exactly as long as something in the store holds it.

The view is three mappings of ID -> stored object in Docker's API shapes: networks (Network: ID, Spec,
DriverState, IPAMOptions), services (Service: ID, Spec, Endpoint) and tasks (Task: ID, ServiceID, Status,
NetworksAttachments). What holds an address:

- every network's gateway (and its network and broadcast addresses, which are never handed out);
- every service's Endpoint.VirtualIPs;
- every task whose observed state is not terminal, through its NetworksAttachments. A task told to shut
  down still runs until its node says otherwise, so DesiredState does not free anything.

Which free address is chosen: the lowest one that no *ended* task still in the view (the task history
kept per slot) had. Handing out the address a task just gave up is what round-robin allocators avoid:
other nodes may still hold its neighbor and FDB entries, and resolvers the old task's record, so the new
task would receive the old one's traffic. The ended tasks in the history are exactly the recent owners,
so this gets round-robin's protection without keeping a cursor outside the store; an address of the
history is reused only when nothing else is free, and reaping the history frees it completely.

One `AddressBook` serves one allocation pass: each `allocate_*` call adds what it hands out, so several
services and tasks allocated before anything is written back still get distinct addresses.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ControlError
from ..objects.networks import DEFAULT_DRIVER, DEFAULT_IPAM_DRIVER, VXLAN_ID_OPTION
from ..objects.tasks import TaskState, desired_state, is_terminal, observed_state
from ..store import Operation, ReplicatedStore, create, update
from ..objects.kinds import ALLOCATIONS, ALLOCATIONS_KEY

__all__ = [
    "DEFAULT_ADDRESS_POOL",
    "DEFAULT_SUBNET_SIZE",
    "DYNAMIC_PORTS",
    "FIRST_VXLAN_ID",
    "AddressBook",
    "AllocationError",
    "PoolExhausted",
    "addresses_in_use",
    "allocate_endpoint",
    "allocate_network",
    "allocate_node_attachments",
    "allocate_task_networks",
    "ingress_network",
    "network_in_use",
]

View = Mapping[str, dict[str, Any]]

# Docker's defaults: `swarm init --default-addr-pool 10.0.0.0/8 --default-addr-pool-mask-length 24`.
DEFAULT_ADDRESS_POOL = ipaddress.IPv4Network("10.0.0.0/8")
DEFAULT_SUBNET_SIZE = 24
# VXLAN IDs below 4096 are left to VLAN-style use, as in Docker's overlay driver; a VNI is 24 bits.
FIRST_VXLAN_ID = 4096
LAST_VXLAN_ID = 2**24 - 1
# SwarmKit's portallocator: published port 0 takes one of 30000-32767; explicit ports may be anything.
DYNAMIC_PORTS = range(30000, 32768)


class AllocationError(ControlError):
    """A network, endpoint or task cannot be given what it asks for because something else has it."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message, status)


class PoolExhausted(AllocationError):
    """Every subnet, VXLAN ID, address or dynamic port of the range is in use."""


# -- networks ----------------------------------------------------------------------------------------------


def allocate_network(
    spec: dict[str, Any],
    networks: View,
    *,
    pool: ipaddress.IPv4Network = DEFAULT_ADDRESS_POOL,
    subnet_size: int = DEFAULT_SUBNET_SIZE,
) -> dict[str, Any]:
    """The stored fields of a new network from a create body `validate_network_spec` accepted:
    {"Spec": <swarm NetworkSpec>, "DriverState": {"Name": "overlay", "Options": {<vxlanid_list>: "4097"}},
    "IPAMOptions": {"Driver": {"Name": "default"}, "Configs": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]}}.
    The caller adds ID, Version and timestamps.

    The subnet is the one given, or the first `subnet_size` block of `pool` that overlaps no existing
    network; the gateway the one given, or the subnet's first host address; the VXLAN ID the lowest free
    one from 4096. Raises `AllocationError` for a taken name, a second ingress network or an overlapping
    subnet, `PoolExhausted` when no subnet or VXLAN ID is left."""
    name = spec["Name"]
    for network in networks.values():
        if network["Spec"]["Name"] == name:
            raise AllocationError(f"network with name {name} already exists ({network['ID']})")
        if spec.get("Ingress") and network["Spec"].get("Ingress"):
            raise AllocationError(
                f"ingress network ({network['ID']}) is already present; remove it before creating another"
            )
    ipam = spec.get("IPAM") or {}
    given = (ipam.get("Config") or [{}])[0]
    if given.get("Subnet"):
        subnet = ipaddress.IPv4Network(given["Subnet"])
        for network, used in _subnets(networks):
            if subnet.overlaps(used):
                raise AllocationError(
                    f"subnet {subnet} overlaps with network {network['Spec']['Name']} ({used}); pick another"
                    " subnet or leave Subnet out to get a free one"
                )
    else:
        subnet = _free_subnet(pool, subnet_size, [used for _, used in _subnets(networks)])
    gateway = given.get("Gateway") or str(subnet.network_address + 1)
    config = {"Subnet": str(subnet), "Gateway": gateway}
    if given.get("IPRange"):
        config["Range"] = given["IPRange"]
    ipam_driver = {"Name": ipam.get("Driver") or DEFAULT_IPAM_DRIVER}
    if ipam.get("Options"):
        ipam_driver["Options"] = dict(ipam["Options"])
    driver: dict[str, Any] = {"Name": DEFAULT_DRIVER}
    if spec.get("Options"):
        driver["Options"] = dict(spec["Options"])
    network_spec: dict[str, Any] = {
        "Name": name,
        "Labels": dict(spec.get("Labels") or {}),
        "DriverConfiguration": driver,
        "Scope": "swarm",
        "Attachable": bool(spec.get("Attachable")),
        "Ingress": bool(spec.get("Ingress")),
    }
    if spec.get("Internal"):
        network_spec["Internal"] = True
    if ipam.get("Config"):  # the spec shows what the user asked for; the allocation is in IPAMOptions
        network_spec["IPAMOptions"] = {"Driver": dict(ipam_driver), "Configs": _spec_configs(ipam["Config"])}
    return {
        "Spec": network_spec,
        "DriverState": {"Name": DEFAULT_DRIVER, "Options": {VXLAN_ID_OPTION: str(_free_vxlan_id(networks))}},
        "IPAMOptions": {"Driver": ipam_driver, "Configs": [config]},
    }


def _spec_configs(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """IPAM configs of a create body in the swarm NetworkSpec's spelling (IPRange is "Range" there)."""
    renamed = {"IPRange": "Range"}
    return [{renamed.get(key, key): value for key, value in config.items() if value} for config in configs]


def ingress_network(networks: View) -> dict[str, Any] | None:
    """The swarm's ingress network (the one with Spec.Ingress), if it has one."""
    return next((n for n in networks.values() if n["Spec"].get("Ingress")), None)


def _subnets(networks: View) -> Iterable[tuple[dict[str, Any], ipaddress.IPv4Network]]:
    for network in networks.values():
        for config in (network.get("IPAMOptions") or {}).get("Configs") or ():
            yield network, ipaddress.IPv4Network(config["Subnet"])


def _free_subnet(pool: ipaddress.IPv4Network, size: int, used: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    block = 2 ** (32 - size)
    ranges = sorted((int(u.network_address), int(u.broadcast_address)) for u in used)
    candidate, end = int(pool.network_address), int(pool.broadcast_address)
    for first, last in ranges:  # walk the used ranges in order, jumping past each one that is in the way
        if last < candidate:
            continue
        if first > candidate + block - 1:
            break
        candidate = (last // block + 1) * block
    if candidate + block - 1 > end:
        raise PoolExhausted(
            f"could not find an available, non-overlapping /{size} subnet in the address pool {pool};"
            " remove unused networks or give a Subnet outside it"
        )
    return ipaddress.IPv4Network((candidate, size))


def _vxlan_ids(network: dict[str, Any]) -> list[int]:
    listed = ((network.get("DriverState") or {}).get("Options") or {}).get(VXLAN_ID_OPTION, "")
    return [int(vni) for vni in listed.split(",") if vni]


def _free_vxlan_id(networks: View) -> int:
    used = {vni for network in networks.values() for vni in _vxlan_ids(network)}
    for vni in range(FIRST_VXLAN_ID, LAST_VXLAN_ID + 1):
        if vni not in used:
            return vni
    raise PoolExhausted(f"every VXLAN ID from {FIRST_VXLAN_ID} to {LAST_VXLAN_ID} is in use; remove unused networks")


# -- addresses ---------------------------------------------------------------------------------------------


@dataclass
class AddressBook:
    """Addresses per network ID: `held` ones are never handed out; `recent` ones (of ended tasks still in
    the view) only when nothing else is free."""

    held: dict[str, set[ipaddress.IPv4Address]] = field(default_factory=dict)
    recent: dict[str, set[ipaddress.IPv4Address]] = field(default_factory=dict)
    exhausted: dict[str, PoolExhausted] = field(default_factory=dict)
    """Networks found to have no address left. A book only fills up, so each later request on one of them
    fails at once instead of scanning the subnet again: a /24 ingress network and 1,000 nodes made every
    reconciler pass scan it 750 times (`bench schedule --scenario scale`, the leader's CPU 4x)."""

    def hold(self, network_id: str, address: ipaddress.IPv4Address) -> None:
        self.held.setdefault(network_id, set()).add(address)


def addresses_in_use(networks: View, services: View, tasks: View, nodes: View | None = None) -> AddressBook:
    """What the view holds: every service's virtual IPs, every unfinished task's addresses and every node's
    ingress address (gateways are reserved by the network itself)."""
    book = AddressBook()
    for node in (nodes or {}).values():
        for attachment in node.get("Attachments") or ():
            for text in attachment.get("Addresses") or ():
                book.hold(attachment["Network"]["ID"], _address(text))
    for service in services.values():
        for vip in (service.get("Endpoint") or {}).get("VirtualIPs") or ():
            book.hold(vip["NetworkID"], _address(vip["Addr"]))
    for task in tasks.values():
        attachments = task.get("NetworksAttachments")
        if not attachments:
            continue
        ended = is_terminal(observed_state(task))
        for attachment in attachments:
            network_id = attachment["Network"]["ID"]
            for text in attachment.get("Addresses") or ():
                if ended:
                    book.recent.setdefault(network_id, set()).add(_address(text))
                else:
                    book.hold(network_id, _address(text))
    return book


def _address(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Interface(text).ip


def _allocate_address(network: dict[str, Any], book: AddressBook) -> str:
    """A free address of `network` in CIDR form ("10.0.1.5/24"), now held in `book`."""
    if (exhausted := book.exhausted.get(network["ID"])) is not None:
        raise exhausted
    config = network["IPAMOptions"]["Configs"][0]
    subnet = ipaddress.IPv4Network(config["Subnet"])
    span = ipaddress.IPv4Network(config["Range"]) if config.get("Range") else subnet
    reserved = {subnet.network_address, subnet.broadcast_address, ipaddress.IPv4Address(config["Gateway"])}
    held = book.held.get(network["ID"], set())
    recent = book.recent.get(network["ID"], set())

    def usable(address: ipaddress.IPv4Address) -> bool:
        return address not in reserved and address not in held

    chosen = next((a for a in _addresses(span) if usable(a) and a not in recent), None)
    if chosen is None:
        chosen = next((a for a in sorted(recent) if a in span and usable(a)), None)
    if chosen is None:
        exhausted = book.exhausted[network["ID"]] = PoolExhausted(
            f"no available addresses on network {network['Spec']['Name']} ({span}): every address is held by a"
            " service or task; scale down, remove services, or use a network with a larger subnet"
        )
        raise exhausted
    book.hold(network["ID"], chosen)
    return f"{chosen}/{subnet.prefixlen}"


def _addresses(span: ipaddress.IPv4Network) -> Iterable[ipaddress.IPv4Address]:
    first = int(span.network_address)
    return (ipaddress.IPv4Address(first + offset) for offset in range(span.num_addresses))


# -- services ----------------------------------------------------------------------------------------------


def allocate_endpoint(service: dict[str, Any], networks: View, services: View, book: AddressBook) -> dict[str, Any]:
    """The service's Endpoint: {"Spec": <EndpointSpec, {"Mode": "vip"} when none>, "Ports": [...],
    "VirtualIPs": [{"NetworkID": ..., "Addr": "10.0.1.2/24"}]}, the last two left out when empty; and only
    {"Spec": {}} for a service that joins no network and publishes no port, which SwarmKit's allocator never
    takes up (Docker swarm shows it so, whatever its EndpointSpec says).

    Ingress-mode ports are unique across the swarm: a requested one another service publishes (in either
    mode) is refused naming that service, and PublishedPort 0 takes the first free of 30000-32767.
    Host-mode ports are kept as given (the scheduler places them). With Mode "vip" there is one virtual IP
    per network of TaskTemplate.Networks, after one on the ingress network when ingress ports are published;
    "dnsrr" gets none. On update, ports and addresses the service already has are kept when they still
    apply; those of networks it left are dropped, which frees them."""
    spec = service["Spec"]
    endpoint_spec = copy.deepcopy(spec.get("EndpointSpec") or {"Mode": "vip"})
    previous = service.get("Endpoint") or {}
    others = {sid: other for sid, other in services.items() if sid != service.get("ID")}
    ports = _resolve_ports(endpoint_spec.get("Ports") or [], previous.get("Ports") or [], others)
    with_ingress = _publishes_ingress(ports)
    joined = _service_networks(spec.get("TaskTemplate") or {}, networks, with_ingress)
    if not ports and not joined:
        return {"Spec": {}}
    endpoint: dict[str, Any] = {"Spec": endpoint_spec}
    if ports:
        endpoint["Ports"] = ports
    if (endpoint_spec.get("Mode") or "vip") == "vip":
        previous_vips = {vip["NetworkID"]: vip["Addr"] for vip in previous.get("VirtualIPs") or ()}
        vips = []
        for network_id in joined:
            addr = previous_vips.get(network_id) or _allocate_address(networks[network_id], book)
            vips.append({"NetworkID": network_id, "Addr": addr})
        if vips:
            endpoint["VirtualIPs"] = vips
    return endpoint


def _publishes_ingress(ports: list[dict[str, Any]]) -> bool:
    return any(port.get("PublishMode", "ingress") == "ingress" for port in ports)


def _service_networks(template: dict[str, Any], networks: View, with_ingress: bool) -> list[str]:
    """The IDs of the networks the service's tasks join, ingress first when it publishes ingress ports."""
    ingress = ingress_network(networks)
    chosen: list[str] = []
    if with_ingress:
        if ingress is None:
            raise AllocationError(
                "the service publishes ports in ingress mode but the swarm has no ingress network;"
                " create one (docker network create --ingress -d overlay ingress) or publish in host mode",
                400,
            )
        chosen.append(ingress["ID"])
    for attachment in template.get("Networks") or ():
        network = _resolve_network(attachment["Target"], networks)
        if network is ingress:
            raise AllocationError(
                f'service cannot be explicitly attached to the ingress network "{network["Spec"]["Name"]}";'
                " publish a port in ingress mode instead",
                400,
            )
        if network["ID"] not in chosen:
            chosen.append(network["ID"])
    return chosen


def _resolve_network(target: str, networks: View) -> dict[str, Any]:
    if target in networks:
        return networks[target]
    named = [n for n in networks.values() if n["Spec"]["Name"] == target]
    if len(named) == 1:
        return named[0]
    raise AllocationError(f"network {target} not found", 404)


def _port_key(port: dict[str, Any]) -> tuple[int, str]:
    return port.get("PublishedPort", 0), port.get("Protocol", "tcp")


def _resolve_ports(wanted: list[dict[str, Any]], previous: list[dict[str, Any]], others: View) -> list[dict[str, Any]]:
    # (published port, protocol) -> (service, publish mode) for every port another service publishes.
    published: dict[tuple[int, str], tuple[dict[str, Any], str]] = {}
    for other in others.values():
        for port in (other.get("Endpoint") or {}).get("Ports") or ():
            if port.get("PublishedPort"):
                published.setdefault(_port_key(port), (other, port.get("PublishMode", "ingress")))
    resolved = []
    for port in wanted:
        shown = {key: port[key] for key in ("Name",) if key in port}
        shown |= {
            "Protocol": port.get("Protocol", "tcp"),
            "TargetPort": port["TargetPort"],
            "PublishedPort": port.get("PublishedPort", 0),
            "PublishMode": port.get("PublishMode", "ingress"),
        }
        key = _port_key(shown)
        if shown["PublishedPort"] and any(_port_key(earlier) == key for earlier in resolved):
            raise AllocationError(f"duplicate published ports provided: {key[0]}/{key[1]}", 400)
        if shown["PublishedPort"] and key in published:
            holder, holder_mode = published[key]
            # An ingress port listens on every node, so it conflicts with host-mode ports too.
            if "ingress" in (shown["PublishMode"], holder_mode):
                kind = "an ingress port" if holder_mode == "ingress" else "a host-published port"
                raise AllocationError(
                    f"port '{key[0]}' is already in use by service '{holder['Spec']['Name']}' ({holder['ID']})"
                    f" as {kind}"
                )
        resolved.append(shown)
    own = {_port_key(port) for port in resolved if port["PublishedPort"]}
    kept = list(previous)
    for port in resolved:
        if port["PublishMode"] != "ingress" or port["PublishedPort"]:
            continue
        port["PublishedPort"] = _dynamic_port(port, kept, own, published)
        own.add(_port_key(port))
    return resolved


def _dynamic_port(
    port: dict[str, Any],
    previous: list[dict[str, Any]],
    own: set[tuple[int, str]],
    published: dict[tuple[int, str], Any],
) -> int:
    protocol = port["Protocol"]
    for index, old in enumerate(previous):  # the port this service was given before, if still free
        same = (old.get("Protocol", "tcp"), old.get("TargetPort"), old.get("PublishMode", "ingress")) == (
            protocol,
            port["TargetPort"],
            "ingress",
        )
        number = old.get("PublishedPort", 0)
        if same and number in DYNAMIC_PORTS and (number, protocol) not in own and (number, protocol) not in published:
            del previous[index]
            return number
    for number in DYNAMIC_PORTS:
        if (number, protocol) not in own and (number, protocol) not in published:
            return number
    raise PoolExhausted(
        f"no dynamic {protocol} port left in {DYNAMIC_PORTS.start}-{DYNAMIC_PORTS.stop - 1}; publish an"
        " explicit port or remove services"
    )


# -- tasks -------------------------------------------------------------------------------------------------


def allocate_task_networks(
    task: dict[str, Any], service_endpoint: dict[str, Any], networks: View, book: AddressBook
) -> list[dict[str, Any]]:
    """The task's NetworksAttachments: [{"Network": <the network object>, "Addresses": ["10.0.1.5/24"]}],
    one address per network of its Spec.Networks, after the ingress network when its service publishes
    ingress ports. Addresses the task already has are kept."""
    wanted = _service_networks(
        task.get("Spec") or {}, networks, _publishes_ingress(service_endpoint.get("Ports") or [])
    )
    existing = {a["Network"]["ID"]: a.get("Addresses") or [] for a in task.get("NetworksAttachments") or ()}
    attachments = []
    for network_id in wanted:
        network = networks[network_id]
        addresses = existing.get(network_id) or [_allocate_address(network, book)]
        shown = {key: copy.deepcopy(value) for key, value in network.items() if not key.startswith("_")}
        attachments.append({"Network": shown, "Addresses": list(addresses)})
    return attachments


def allocate_node_attachments(node: dict[str, Any], networks: View, book: AddressBook) -> list[dict[str, Any]]:
    """The node's own address on the ingress network, [{"Network": <ingress>, "Addresses": ["10.0.0.3/24"]}]
    (Docker's ingress-sbox endpoint): the routing mesh forwards published ports from every node to the
    service's tasks over the ingress overlay, with this address as the source, so replies come back
    through the node that took the request. [] when the swarm has no ingress network; kept once given."""
    ingress = ingress_network(networks)
    if ingress is None:
        return []
    for attachment in node.get("Attachments") or ():
        if attachment["Network"]["ID"] == ingress["ID"]:
            return [attachment]
    address = _allocate_address(ingress, book)  # first: a full subnet fails before anything is copied
    shown = {key: copy.deepcopy(value) for key, value in ingress.items() if not key.startswith("_")}
    return [{"Network": shown, "Addresses": [address]}]


def network_in_use(network_id: str, services: View, tasks: View) -> list[str]:
    """Names of the services that use the network (by their spec, a virtual IP or an unfinished task on
    it), sorted; `network rm` is refused while this is not empty."""
    names: set[str] = set()
    for service in services.values():
        spec = service["Spec"]
        targets = {n.get("Target") for n in (spec.get("TaskTemplate") or {}).get("Networks") or ()}
        vips = {vip["NetworkID"] for vip in (service.get("Endpoint") or {}).get("VirtualIPs") or ()}
        if network_id in targets or network_id in vips:
            names.add(spec["Name"])
    for task in tasks.values():
        # As SwarmKit: a task told to stop no longer holds the network (`docker stack rm` removes the
        # services, then at once their networks); its address stays held until it has stopped.
        if is_terminal(observed_state(task)) or desired_state(task) >= TaskState.SHUTDOWN:
            continue
        if any(a["Network"]["ID"] == network_id for a in task.get("NetworksAttachments") or ()):
            owner = services.get(task.get("ServiceID", ""))
            named = (task.get("ServiceAnnotations") or {}).get("Name") or task.get("ServiceID", task["ID"])
            names.add(owner["Spec"]["Name"] if owner else named)
    return sorted(names)


ALLOCATION_RETRIES = 5
"""How often an allocating write is decided again after losing to a concurrent one before giving up."""


async def allocation_lock(store: ReplicatedStore) -> Operation:
    """The operation that makes a transaction conflict with every other allocating one committed meanwhile."""
    current = await store.get(ALLOCATIONS, ALLOCATIONS_KEY)
    if current is None:
        return create(ALLOCATIONS, ALLOCATIONS_KEY, {"Writes": 1})
    return update(ALLOCATIONS, ALLOCATIONS_KEY, {"Writes": current.data["Writes"] + 1}, expect=current.version)
