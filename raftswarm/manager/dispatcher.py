"""The dispatcher: every node keeps a session with the leader, proving it is alive with heartbeats.

Heartbeats are kept in the leader's memory, as SwarmKit does; only a change of a node's state (ready,
down) is written to the store. A node that misses `DOWN_AFTER_MISSED` heartbeat periods is marked down.
A follower asked for a heartbeat answers `not_leader` with the leader's address, and the node moves its
session there. (Task assignments and status reports arrive with orchestration.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..ca.authority import CertificateAuthority
from ..ca.certificates import NodeIdentity, subject_key_id
from ..raft.driver import RaftDriver
from ..store import ReplicatedStore, update
from .controlapi import CLUSTER, CLUSTER_KEY, NODES, ControlApi
from .rpc import RpcError, RpcServer

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_PERIOD = 5.0
DOWN_AFTER_MISSED = 3


class Dispatcher:
    def __init__(self, store: ReplicatedStore, driver: RaftDriver, rpc: RpcServer, period: float = DEFAULT_HEARTBEAT_PERIOD) -> None:
        self.control = ControlApi(store)
        self.driver = driver
        self.period = period
        self._last_seen: dict[str, float] = {}
        self._leading_since: float | None = None
        self._view: tuple[dict[str, str], str | None] = ({}, None)
        self._view_version = -1
        self._issuers: dict[str, str] = {}
        """Node ID -> key ID of the root that issued the certificate it last heartbeated with."""
        rpc.register("dispatcher.heartbeat", self.heartbeat, allowed={"worker", "manager"})

    def leader_address(self) -> str:
        leader = self.driver.peer_addresses().get(self.driver.leader_id)
        return f"{leader[0]}:{leader[1]}" if leader else ""

    async def heartbeat(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        assert identity is not None
        if not self.driver.is_leader:
            raise RpcError("not_leader", self.leader_address())
        # Remembered only once recorded: a write lost to a concurrent update (say, the node's own Raft join
        # changing its object), or a node not in the store yet (`swarm init` still writing it), is retried
        # at the next heartbeat.
        if identity.node_id in self._last_seen or await self.control.set_node_status(identity.node_id, "ready"):
            self._last_seen[identity.node_id] = time.monotonic()
        self._issuers[identity.node_id] = str(params.get("issuer", ""))
        node = self.control.store.state.get(NODES, identity.node_id)
        managers, rotation = self._swarm_view()
        # The role the swarm wants this node in: a node whose certificate says otherwise renews it and
        # switches roles (promote/demote), as SwarmKit's agents do. During a root rotation, the root every
        # node should move to.
        return {
            "period": self.period,
            "role": node.data["Spec"]["Role"] if node else None,
            "managers": managers,
            "rotation": rotation,
        }

    def _swarm_view(self) -> tuple[dict[str, str], str | None]:
        """The managers' addresses and the pending root's key ID, as of this manager's applied state. Every
        heartbeat needs them, so they are derived again only when the store has changed since (scanning all
        nodes and parsing the CA for each of thousands of heartbeats a second would not scale)."""
        state = self.control.store.state
        if self._view_version != state.version:
            managers = {n.id: n.data["ManagerStatus"]["Addr"] for n in state.list(NODES) if n.data.get("ManagerStatus")}
            cluster = state.get(CLUSTER, CLUSTER_KEY)
            rotation = CertificateAuthority.from_state(cluster.data["CA"]).rotation if cluster else None
            self._view = (managers, subject_key_id(rotation.pending_root.certificate) if rotation else None)
            self._view_version = state.version
        return self._view

    async def _maybe_finish_root_rotation(self) -> None:
        """Once every node that is up holds a certificate from the new root, the old root is retired."""
        if await self.control.store.get(CLUSTER, CLUSTER_KEY, linearizable=False) is None:
            return  # not initialized yet
        ca, version = await self.control.authority(linearizable=False)
        if ca.rotation is None:
            return
        pending = subject_key_id(ca.rotation.pending_root.certificate)
        for node in await self.control.nodes():
            if node.data["Status"].get("State") != "down" and self._issuers.get(node.id) != pending:
                return
        cluster = await self.control.cluster()
        data = {**cluster.data, "CA": ca.finish_root_rotation().to_state()}
        await self.control.store.transact([update(CLUSTER, CLUSTER_KEY, data, expect=version)])
        log.info("root CA rotation finished: every node holds a certificate from the new root")

    async def run(self) -> None:
        """On the leader, mark nodes down once they stop heartbeating; elsewhere, wait to lead."""
        while True:
            await asyncio.sleep(self.period)
            if not self.driver.is_leader:
                self._leading_since = None
                self._last_seen.clear()
                continue
            now = time.monotonic()
            if self._leading_since is None:
                self._leading_since = now  # give every node a full grace period with a new leader
                continue
            await self._maybe_finish_root_rotation()
            deadline = self.period * DOWN_AFTER_MISSED
            for node in await self.control.nodes():
                seen = self._last_seen.get(node.id, self._leading_since)
                if node.data["Status"].get("State") != "down" and now - seen > deadline:
                    self._last_seen.pop(node.id, None)
                    try:
                        await self.control.set_node_status(node.id, "down", "heartbeat failure")
                    except Exception as exc:  # a conflict or lost leadership: the next round retries
                        log.info("could not mark node %s down: %s", node.id, exc)
