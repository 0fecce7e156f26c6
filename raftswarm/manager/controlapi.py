"""The swarm's own objects in the store -- the cluster (CA, join tokens, settings) and the nodes -- and the
operations on them that `swarm ...` and `node ...` commands map to.

Every operation is a read of the store plus one transaction with version checks, so two managers acting
at once never overwrite each other: the loser gets a Conflict and nothing changes. Objects are kept in
the shapes of Docker's API (`Swarm`, `Node`), so the API layer returns them as they are.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import platform
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..addresses import parse_host_port
from ..ca.authority import CertificateAuthority
from ..ca.certificates import NodeRole
from ..ca.unlockkey import generate_unlock_key
from ..errors import ControlError, RaftswarmError, VersionConflict
from ..raft.transport import raft_id_of
from ..store import ReplicatedStore, check, create, delete, update
from ..objects.stored import StoredObject
from ..objects.kinds import CLUSTER, CLUSTER_KEY, NODES
from ..objects.times import now_iso
from .allocator import DEFAULT_SUBNET_SIZE
from .networkapi import ingress_operations

MIN_HEARTBEAT_PERIOD_NS = 100_000_000
"""Shorter heartbeats would have thousands of nodes flood the leader; 100 ms is plenty for tests."""

DATA_PATH_PORT = 4789
"""The UDP port of the swarm's VXLAN traffic (`dataplane.overlay.VXLAN_PORT`, Docker's default); raftswarm
takes `swarm init --data-path-port` and does not act on it."""

ENGINE_PLUGINS = [{"Type": "Network", "Name": "overlay"}, {"Type": "Volume", "Name": "local"}]
"""Description.Engine.Plugins: the drivers a raftswarm node has, in dockerd's order (by type, then name).
Swarm networks are `overlay` only and volumes `local` only (`objects.networks`, `runtime.volumes`). No Log
plugin: a task's output is kept in conmon's files for `service logs`, and log drivers are not used, so
naming json-file would promise what `--log-driver json-file` does not do."""


def role_name(role: NodeRole) -> str:
    return "manager" if role is NodeRole.MANAGER else "worker"


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


NODE_WRITE_ATTEMPTS = 5
"""Reads and writes of a node's object before a write that keeps meeting concurrent changes gives up."""

def new_node_object(
    node_id: str,
    role: NodeRole,
    addr: str,
    hostname: str | None = None,
    *,
    in_raft: bool = True,
    engine_labels: Mapping[str, str] | None = None,
    availability: str = "active",
) -> dict[str, Any]:
    """A Node object as Docker shapes it. A manager gets its ManagerStatus only once it is in the Raft
    membership (`in_raft`): a joining manager is shown as one when `raft.join` has added it, never before.
    `engine_labels` are the labels the node's daemon was started with (`raftswarm-node --label`), shown as
    Description.Engine.Labels (left out when there are none, as Docker's omitempty does) and matched by
    `engine.labels.<name>` placement constraints."""
    stamp = now_iso()
    engine: dict[str, Any] = {"EngineVersion": "raftswarm"}
    if engine_labels:
        engine["Labels"] = dict(engine_labels)
    engine["Plugins"] = [dict(plugin) for plugin in ENGINE_PLUGINS]
    node: dict[str, Any] = {
        "ID": node_id,
        "CreatedAt": stamp,
        "UpdatedAt": stamp,
        "Spec": {"Labels": {}, "Role": role_name(role), "Availability": availability},
        "Description": {
            "Hostname": hostname or socket.gethostname(),
            "Platform": {"Architecture": platform.machine() or "x86_64", "OS": "linux"},
            "Resources": {"NanoCPUs": (os.cpu_count() or 1) * 1_000_000_000, "MemoryBytes": _memory_bytes()},
            "Engine": engine,
        },
        "Status": {"State": "unknown", "Addr": parse_host_port(addr)[0]},
    }
    if role is NodeRole.MANAGER and in_raft:
        node["ManagerStatus"] = {"Reachability": "reachable", "Addr": addr, "RaftID": raft_id_of(node_id)}
    return node


def new_cluster_object(ca: CertificateAuthority, autolock: bool) -> dict[str, Any]:
    stamp = now_iso()
    return {
        "ID": ca.cluster_id,
        "CreatedAt": stamp,
        "UpdatedAt": stamp,
        "Spec": {
            "Name": "default",
            "Labels": {},
            "Orchestration": {"TaskHistoryRetentionLimit": 5},
            # SwarmKit's defaults; raftswarm's Raft takes its own settings from the node's flags.
            "Raft": {
                "SnapshotInterval": 10000,
                "KeepOldSnapshots": 0,
                "LogEntriesForSlowFollowers": 500,
                "ElectionTick": 10,
                "HeartbeatTick": 1,
            },
            "Dispatcher": {"HeartbeatPeriod": 5_000_000_000},
            "CAConfig": {"NodeCertExpiry": int(ca.node_cert_lifetime.total_seconds() * 1e9)},
            "TaskDefaults": {},
            "EncryptionConfig": {"AutoLockManagers": autolock},
        },
        "CA": ca.to_state(),
        # SwarmKit's NetworkBootstrapKeys: what nodes encrypt gossip with, handed out by the dispatcher.
        "NetworkBootstrapKeys": [
            {
                "Subsystem": "networking:gossip",
                "Key": base64.b64encode(os.urandom(32)).decode(),
                "LamportTime": 1,
                "CreatedAt": datetime.now(UTC).timestamp(),
            }
        ],
    }


def _spec_view(spec: dict[str, Any]) -> dict[str, Any]:
    """The swarm spec as dockerd shows it: CAConfig.ForceRotate left out while 0 (Go's omitempty), and a signing
    CA's certificate and key never shown (SwarmKit redacts them: the key is a secret)."""
    ca_config = {
        key: value
        for key, value in (spec.get("CAConfig") or {}).items()
        if key not in ("SigningCACert", "SigningCAKey") and not (key == "ForceRotate" and value == 0)
    }
    return {**spec, "CAConfig": ca_config}


class ControlApi:
    """Swarm and node operations over a manager's replicated store."""

    def __init__(self, store: ReplicatedStore) -> None:
        self.store = store

    # -- the cluster -----------------------------------------------------------------------------------

    async def cluster(self, linearizable: bool = True) -> StoredObject:
        found = await self.store.get(CLUSTER, CLUSTER_KEY, linearizable)
        if found is None:
            raise ControlError("this node is not part of an initialized swarm yet", 503)
        return found

    async def authority(self, linearizable: bool = True) -> tuple[CertificateAuthority, int]:
        cluster = await self.cluster(linearizable)
        return CertificateAuthority.from_state(cluster.data["CA"]), cluster.version

    async def initialize(self, ca: CertificateAuthority, node: dict[str, Any], unlock_key: str | None) -> None:
        cluster = new_cluster_object(ca, unlock_key is not None)
        if unlock_key is not None:
            cluster["UnlockKey"] = unlock_key

        # As dockerd: a new swarm has the `ingress` network of the routing mesh from the start.
        await self.store.transact(
            [create(CLUSTER, CLUSTER_KEY, cluster), create(NODES, node["ID"], node), *ingress_operations()]
        )

    def swarm_view(self, cluster: StoredObject) -> dict[str, Any]:
        """The `Swarm` object of Docker's `GET /swarm`; without JoinTokens it is `GET /info`'s Swarm.Cluster.

        DefaultAddrPool is null and SubnetSize 24, as dockerd 20.10 shows a swarm on the default pool (the
        allocator's 10.0.0.0/8 in /24s); raftswarm takes `swarm init --default-addr-pool` and does not act on it."""
        ca = CertificateAuthority.from_state(cluster.data["CA"])
        data = cluster.data
        return {
            "ID": data["ID"],
            "Version": {"Index": cluster.version},
            "CreatedAt": data["CreatedAt"],
            "UpdatedAt": data["UpdatedAt"],
            "Spec": _spec_view(data["Spec"]),
            "TLSInfo": ca.tls_info(),
            "RootRotationInProgress": ca.rotation is not None,
            "DefaultAddrPool": None,
            "SubnetSize": DEFAULT_SUBNET_SIZE,
            "DataPathPort": DATA_PATH_PORT,
            "JoinTokens": {"Worker": ca.join_token(NodeRole.WORKER), "Manager": ca.join_token(NodeRole.MANAGER)},
        }

    async def update_swarm(
        self,
        version: int,
        spec: dict[str, Any] | None,
        rotate_worker: bool = False,
        rotate_manager: bool = False,
        rotate_unlock_key: bool = False,
    ) -> None:
        """Docker's `POST /swarm/update`: a new spec (autolock, certificate lifetime, ...) and rotations.
        A stale version is refused, not merged."""
        cluster = await self.cluster()
        if cluster.version != version:
            raise ControlError(
                f"update out of sequence: the swarm is at version {cluster.version}, not {version}", 409
            )
        ca = CertificateAuthority.from_state(cluster.data["CA"])
        if rotate_worker:
            ca = ca.rotate_join_token(NodeRole.WORKER)
        if rotate_manager:
            ca = ca.rotate_join_token(NodeRole.MANAGER)
        merged = dict(cluster.data["Spec"])
        for section, value in (spec or {}).items():
            merged[section] = {**merged.get(section, {}), **value} if isinstance(value, dict) else value
        autolock = merged.get("EncryptionConfig", {}).get("AutoLockManagers", False)
        if not isinstance(autolock, bool):
            raise ControlError("EncryptionConfig.AutoLockManagers must be true or false")
        force_rotate = merged.get("CAConfig", {}).get("ForceRotate", 0)
        if force_rotate != cluster.data["Spec"].get("CAConfig", {}).get("ForceRotate", 0):
            ca = ca.begin_root_rotation()  # `swarm ca --rotate`: nodes move to the new root, then it takes over
        heartbeat = merged.get("Dispatcher", {}).get("HeartbeatPeriod")
        if heartbeat is not None and (type(heartbeat) is not int or heartbeat < MIN_HEARTBEAT_PERIOD_NS):
            raise ControlError("Dispatcher.HeartbeatPeriod must be a duration in nanoseconds of at least 100ms")
        limit = merged.get("Orchestration", {}).get("TaskHistoryRetentionLimit")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ControlError("Orchestration.TaskHistoryRetentionLimit must be a whole number of tasks, 0 or more")
        expiry = merged.get("CAConfig", {}).get("NodeCertExpiry")
        if expiry is not None and (type(expiry) is not int or expiry < 0):
            raise ControlError("CAConfig.NodeCertExpiry must be a duration in nanoseconds")
        if expiry and expiry != cluster.data["Spec"]["CAConfig"].get("NodeCertExpiry"):
            try:
                ca = dataclasses.replace(ca, node_cert_lifetime=timedelta(seconds=int(expiry) / 1e9))
            except RaftswarmError as exc:
                raise ControlError(str(exc)) from None
        data = {**cluster.data, "Spec": merged, "CA": ca.to_state(), "UpdatedAt": now_iso()}
        if autolock and (rotate_unlock_key or not data.get("UnlockKey")):
            data["UnlockKey"] = generate_unlock_key()
        elif not autolock:
            data.pop("UnlockKey", None)
        await self.store.transact([update(CLUSTER, CLUSTER_KEY, data, expect=cluster.version)])

    async def unlock_key(self) -> str:
        return (await self.cluster()).data.get("UnlockKey", "")

    # -- joining ---------------------------------------------------------------------------------------

    async def enroll(
        self,
        token: str,
        csr_pem: bytes,
        addr: str,
        hostname: str | None,
        engine_labels: Mapping[str, str] | None = None,
        availability: str = "active",
    ) -> tuple[str, bytes, bytes, NodeRole]:
        """Certify a joining node and record it, with the labels its daemon was started with and the
        availability it asked for (`swarm join --availability`). Returns (node ID, certificate PEM, trust
        bundle PEM, role)."""
        ca, version = await self.authority()
        enrollment = ca.issue_for_join(token, csr_pem)
        role = enrollment.identity.role
        self.check_address_free(addr, enrollment.node_id)
        node = new_node_object(
            enrollment.node_id, role, addr, hostname, in_raft=False, engine_labels=engine_labels,
            availability=availability,
        )
        # The CA may have changed (a token rotated) since we read it: then this join is refused, not merged.
        await self.store.transact([check(CLUSTER, CLUSTER_KEY, version), create(NODES, enrollment.node_id, node)])
        return enrollment.node_id, enrollment.cert_pem, enrollment.root_pem, role

    def check_address_free(self, addr: str, node_id: str) -> None:
        """Refuse a node that claims the Raft address of another manager: Raft and every node's session reach
        a manager by that address, so two nodes on it would each get the other's traffic. Workers may share
        an IP (behind NAT, as with Docker); a manager's HOST:PORT is one node's alone.

        Reads this manager's applied state: a join racing a manager's own Raft join at the same address is
        caught again by `raft.join`, which checks before adding the voter."""
        for node in self.store.state.list(NODES):
            manager = node.data.get("ManagerStatus") or {}
            if node.id != node_id and manager.get("Addr") == addr:
                raise ControlError(
                    f"address {addr} is already the address of manager {node.id}; if that manager is gone for good, "
                    f"run `raftswarm node demote {node.id}` and `raftswarm node rm {node.id}` on a manager first, "
                    "or join with another --advertise-addr",
                    409,
                )

    # -- nodes -----------------------------------------------------------------------------------------

    async def nodes(self) -> list[StoredObject]:
        return await self.store.list(NODES)

    async def node(self, node_id: str) -> StoredObject:
        found = await self.store.get(NODES, node_id)
        if found is None:
            for candidate in await self.nodes():
                if candidate.id.startswith(node_id) or candidate.data["Description"]["Hostname"] == node_id:
                    return candidate
            raise ControlError(f"node {node_id} not found", 404)
        return found

    async def update_node(self, node_id: str, version: int, spec: dict[str, Any]) -> StoredObject:
        """Docker's `POST /nodes/{id}/update?version=N`: a stale version is refused, not merged."""
        current = await self.node(node_id)
        if current.version != version:
            raise ControlError(
                f"update out of sequence: node {current.id} is at version {current.version}, not {version}", 409
            )
        availability = spec.get("Availability", current.data["Spec"]["Availability"])
        if availability not in ("active", "pause", "drain"):
            raise ControlError(f"invalid availability {availability!r}: use active, pause or drain")
        role = spec.get("Role", current.data["Spec"]["Role"])
        if role not in ("manager", "worker"):
            raise ControlError(f"invalid role {role!r}: use manager or worker")
        labels = spec.get("Labels", current.data["Spec"].get("Labels", {}))
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ControlError("labels must map strings to strings")
        data = {
            **current.data,
            "Spec": {**current.data["Spec"], **spec, "Availability": availability, "Role": role, "Labels": labels},
            "UpdatedAt": now_iso(),
        }
        await self.store.transact([update(NODES, current.id, data, expect=current.version)])
        return await self.node(current.id)

    async def set_node_status(self, node_id: str, state: str, message: str = "") -> bool:
        """Record a node's state; False if the node is not (yet) in the store, so the caller tries again."""

        def change(data: dict[str, Any]) -> dict[str, Any] | None:
            status = data["Status"]
            if status.get("State") == state and status.get("Message", "") == message:
                return None
            return {**data, "Status": {**status, "State": state, "Message": message}}

        return await self._change_node(node_id, change)

    async def set_engine_labels(self, node_id: str, labels: Mapping[str, str]) -> bool:
        """Record the engine labels a node's daemon now runs with (Description.Engine.Labels, left out when
        there are none); False if the node is not (yet) in the store."""

        def change(data: dict[str, Any]) -> dict[str, Any] | None:
            description = data.get("Description") or {}
            engine = description.get("Engine") or {}
            if (engine.get("Labels") or {}) == labels:
                return None
            engine = {key: value for key, value in engine.items() if key != "Labels"}
            if labels:
                engine = {"EngineVersion": engine.pop("EngineVersion", "raftswarm"), "Labels": dict(labels), **engine}
            return {**data, "Description": {**description, "Engine": engine}}

        return await self._change_node(node_id, change)

    async def set_manager_status(self, node_id: str, addr: str | None) -> None:
        """Record that a node joined (`addr`: its Raft address) or left (None) the managers' Raft membership."""

        def change(data: dict[str, Any]) -> dict[str, Any]:
            data = dict(data)
            if addr is None:
                data.pop("ManagerStatus", None)
            else:
                data["ManagerStatus"] = {"Reachability": "reachable", "Addr": addr, "RaftID": raft_id_of(node_id)}
            return data

        if not await self._change_node(node_id, change):
            await self.node(node_id)  # raises Docker's "node ... not found"

    async def _change_node(self, node_id: str, change) -> bool:
        """Apply `change` (the node's data -> its new data, or None for no change) to the node's object as the
        store holds it, reading it again and retrying when another write to the same node came in between:
        a node's heartbeat (its status) and its own Raft join (its ManagerStatus) write the same object at the
        same moment, and a lost write would otherwise wait for the node's next heartbeat, seconds later.
        False if the node is not in the store."""
        for attempt in range(NODE_WRITE_ATTEMPTS):
            current = await self.store.get(NODES, node_id, linearizable=attempt > 0)
            if current is None:
                return False
            data = change(current.data)
            if data is None:
                return True
            try:
                await self.store.transact([update(NODES, node_id, data, expect=current.version)])
                return True
            except VersionConflict:
                if attempt == NODE_WRITE_ATTEMPTS - 1:
                    raise
        return True

    async def remove_node(self, node_id: str, force: bool) -> StoredObject:
        """Docker's `DELETE /nodes/{id}`: refused for a manager (demote it first) and, without force, for a
        node that is still up; the node's certificate is blocked from then on."""
        node = await self.node(node_id)
        if node.data["Spec"]["Role"] == "manager":
            raise ControlError(
                f"node {node.id} is a cluster manager and is a member of the raft cluster. It must be demoted "
                "to worker before removal",
                400,
            )
        if not force and node.data["Status"].get("State") == "ready":
            raise ControlError(
                f"node {node.id} is not down and can't be removed; use --force to remove it anyway", 400
            )
        ca, version = await self.authority()
        blocked = ca.block(node.id)
        cluster = await self.cluster()
        await self.store.transact(
            [
                update(CLUSTER, CLUSTER_KEY, {**cluster.data, "CA": blocked.to_state()}, expect=version),
                delete(NODES, node.id, expect=node.version),
            ]
        )
        return node

