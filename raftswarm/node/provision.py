"""Writing a manager's state directory: certificates, the Raft KEK, node state and the first Raft log.

These are the offline halves of `swarm init` (a one-member log) and of a manager `swarm join` (an empty
log the leader then fills): the daemon calls them once it has its certificate. Tests and the local
cluster harness call them directly to lay out a whole cluster at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography import x509

from ..ca.certificates import NodeCertificate
from ..raft.core import RaftCore
from ..raft.driver import encode_address
from ..raft.storage import RaftStorage
from ..raft.transport import raft_id_of
from .state_dir import NodeState, StateDir

KEK_BYTES = 32


def provision_manager(
    state_dir: StateDir,
    trust: list[x509.Certificate],
    certificate: NodeCertificate,
    *,
    listen: tuple[str, int],
    advertise: tuple[str, int] | None = None,
    initial_members: Mapping[str, tuple[str, int]] | None = None,
    join_peers: Mapping[str, tuple[str, int]] | None = None,
    unlock_kek: bytes | None = None,
) -> None:
    """Lay out a manager's state directory for `certificate` (issued by the swarm's CA, whose roots are
    `trust`). With `initial_members` (node ID -> advertised address, this node included) its log starts as a new cluster of those voters; without, it starts empty and waits for
    a leader to add it, reaching the managers at `join_peers` (node ID -> address) meanwhile."""
    advertise = advertise or listen
    identity = certificate.identity
    state_dir.save_certificates(trust, certificate)
    # With autolock the KEK is the swarm's unlock key and never touches the disk.
    kek = unlock_kek or os.urandom(KEK_BYTES)
    if unlock_kek is None:
        state_dir.save_kek(kek)
    storage = RaftStorage.create(state_dir.raft, kek)
    try:
        if initial_members:
            members = {raft_id_of(nid): encode_address(*addr) for nid, addr in initial_members.items()}
            boot = RaftCore.bootstrap(members, members)
            storage.save(boot.hard_state, boot.entries, None)
    finally:
        storage.close()
    state_dir.save_node_state(
        NodeState(
            node_id=identity.node_id,
            cluster_id=identity.cluster_id,
            role="manager",
            listen_addr=f"{listen[0]}:{listen[1]}",
            advertise_addr=f"{advertise[0]}:{advertise[1]}",
            join_peers={f"{raft_id_of(nid):x}": f"{h}:{p}" for nid, (h, p) in (join_peers or {}).items()},
        )
    )


def provision_worker(
    state_dir: StateDir,
    trust: list[x509.Certificate],
    certificate: NodeCertificate,
    *,
    managers: Mapping[str, str],
    listen: tuple[str, int],
    advertise: tuple[str, int],
) -> None:
    """Lay out a worker's state directory: certificates and whom to reach (never any key of the Raft log)."""
    identity = certificate.identity
    state_dir.save_certificates(trust, certificate)
    state_dir.save_node_state(
        NodeState(
            node_id=identity.node_id,
            cluster_id=identity.cluster_id,
            role="worker",
            listen_addr=f"{listen[0]}:{listen[1]}",  # used if the node is promoted
            advertise_addr=f"{advertise[0]}:{advertise[1]}",
            join_peers={f"{raft_id_of(nid):x}": addr for nid, addr in managers.items()},
        )
    )
