"""Swarm networks in the replicated store: `network create/ls/inspect/rm`, the `ingress` network made at
`swarm init`, and the allocation lock every allocating write takes.

Every write that hands out a subnet, VXLAN ID, virtual IP, task address or published port reads the store,
decides with the pure `allocator`, and commits with a version check on one `allocations` object that it
also bumps. Two managers allocating at once therefore cannot both succeed with the same view: one gets a
conflict and decides again from the newer store. Nothing else is kept: what is in use is always what the
store holds (see `allocator`).

Stored networks have the swarm API's shape (ID, Spec, DriverState, IPAMOptions, CreatedAt, UpdatedAt);
`network_resource` shows one as Docker's engine API (`GET /networks`) does, which is what `docker network
ls/inspect` read.
"""

from __future__ import annotations

from typing import Any

from ..store import Conflict, Operation, ReplicatedStore, create, delete
from ..objects.stored import StoredObject
from .allocator import allocate_network, network_in_use
from ..objects.kinds import NODES
from ..objects.times import now_iso
from ..errors import ControlError
from ..objects.networks import VXLAN_ID_OPTION, ingress_network_spec, refuse_node_addresses, validate_network_spec
from .allocator import ALLOCATION_RETRIES, allocation_lock
from ..objects.kinds import NETWORK_NAMES, NETWORKS, SERVICES, TASKS, new_object_id
from ..objects.stored import resolve, spec_name, views


def new_network(spec: dict[str, Any], networks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A network object for a checked create body: allocated, with its ID and timestamps."""
    stamp = now_iso()
    return {"ID": new_object_id(), "CreatedAt": stamp, "UpdatedAt": stamp, **allocate_network(spec, networks)}


def ingress_operations() -> list[Operation]:
    """What `swarm init` adds to its first transaction: the `ingress` network (10.0.0.0/24, VXLAN ID 4096)."""
    network = new_network(validate_network_spec(ingress_network_spec()), {})
    return [create(NETWORK_NAMES, "ingress", {"ID": network["ID"]}), create(NETWORKS, network["ID"], network)]


class NetworkApi:
    def __init__(self, store: ReplicatedStore) -> None:
        self.store = store

    async def networks(self) -> list[StoredObject]:
        return await self.store.list(NETWORKS)

    async def network(self, ref: str) -> StoredObject:
        return resolve(await self.networks(), ref, "network", spec_name)

    async def create_network(self, body: Any) -> str:
        """Docker's `POST /networks/create` for a swarm (overlay) network; returns its ID. A given subnet must
        overlap no other network's (the allocator's rule) and hold no node's address."""
        spec = validate_network_spec(body)
        refuse_node_addresses(spec, (node.data for node in await self.store.list(NODES)))
        for _ in range(ALLOCATION_RETRIES):
            lock = await allocation_lock(self.store)
            network = new_network(spec, views(await self.networks()))
            try:
                await self.store.transact(
                    [lock, create(NETWORK_NAMES, spec["Name"], {"ID": network["ID"]}), create(NETWORKS, network["ID"], network)]
                )
                return network["ID"]
            except Conflict:
                if await self.store.get(NETWORK_NAMES, spec["Name"]) is not None:
                    raise ControlError(f"network with name {spec['Name']} already exists", 409) from None
        raise ControlError("too many concurrent allocations; retry", 503)

    async def remove_network(self, ref: str) -> None:
        """Docker's `DELETE /networks/{id}`: refused while a service or a task uses the network, with 400 as
        dockerd answers SwarmKit's FailedPrecondition (403 is for a node-local network's active endpoints)."""
        current = await self.network(ref)
        services = views(await self.store.list(SERVICES))
        users = network_in_use(current.id, services, views(await self.store.list(TASKS)))
        if users:
            raise ControlError(
                f"network {spec_name(current)} is in use by service{'s' if len(users) > 1 else ''} {', '.join(users)}",
                400,
            )
        # Services that start using it meanwhile allocate under the lock this write takes too.
        await self.store.transact(
            [
                await allocation_lock(self.store),
                delete(NETWORKS, current.id, expect=current.version),
                delete(NETWORK_NAMES, spec_name(current)),
            ]
        )



def vxlan_id(network: dict[str, Any]) -> int:
    return int(((network.get("DriverState") or {}).get("Options") or {})[VXLAN_ID_OPTION].split(",")[0])
