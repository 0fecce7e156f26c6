"""The collections of the replicated store (its `kind`s), their well-known keys, and object IDs."""

from __future__ import annotations

import secrets as random_source

# Docker's objects, keyed by their ID
CLUSTER = "cluster"
NODES = "nodes"
SERVICES = "services"
TASKS = "tasks"
SECRETS = "secrets"
CONFIGS = "configs"
NETWORKS = "networks"

# name -> ID indexes, so that two creates of one name cannot both commit
SERVICE_NAMES = "service-names"
SECRET_NAMES = "secret-names"
CONFIG_NAMES = "config-names"
NETWORK_NAMES = "network-names"

ALLOCATIONS = "allocations"
"""One object ("swarm") that every write handing out addresses, subnets, VXLAN IDs or ports bumps with a
version check (`allocation_lock`), so concurrent allocations cannot both commit from the same view."""

CLUSTER_KEY = "default"
"""The ID of the one cluster object, as SwarmKit's."""
ALLOCATIONS_KEY = "swarm"

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_ID_LENGTH = 25


def new_object_id() -> str:
    """A random object ID in Docker's format: 25 lowercase base-36 characters."""
    return "".join(random_source.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
