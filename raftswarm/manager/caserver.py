"""The CA's calls on 2377: what a joining node fetches and sends, and certificate renewal.

- `ca.root` (anyone): the trust bundle PEM, which the joiner checks against the digest in its token;
- `ca.join` (anyone, with a join token): certify a CSR for the token's role and record the node;
- `ca.renew` (a node with a valid certificate): a fresh certificate, with the role the swarm wants now;
- `raft.join` (a manager): add the caller to the Raft membership (learner, then voter once caught up).
"""

from __future__ import annotations

from typing import Any

from ..addresses import parse_host_port
from ..ca.certificates import NodeIdentity, NodeRole
from ..raft.driver import RaftDriver
from ..raft.transport import raft_id_of
from ..store import ReplicatedStore
from .controlapi import ControlApi
from .rpc import RpcError, RpcServer

MANAGER_JOIN_TIMEOUT = 60.0
"""Seconds a new manager may take to catch up before it is made a voter."""


class CAServer:
    def __init__(self, store: ReplicatedStore, driver: RaftDriver, rpc: RpcServer) -> None:
        self.control = ControlApi(store)
        self.driver = driver
        rpc.register("ca.root", self.root, allowed={"anonymous", "worker", "manager"})
        rpc.register("ca.join", self.join, allowed={"anonymous"})
        rpc.register("ca.renew", self.renew, allowed={"worker", "manager"})
        rpc.register("raft.join", self.raft_join, allowed={"manager"})

    async def root(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        ca, _ = await self.control.authority()
        return {"roots": ca.trust_bundle_pem()}

    async def join(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        node_id, cert_pem, roots_pem, role = await self.control.enroll(
            str(params["token"]), bytes(params["csr"]), str(params["addr"]), params.get("hostname")
        )
        managers = {
            node.id: node.data["ManagerStatus"]["Addr"]
            for node in await self.control.nodes()
            if node.data.get("ManagerStatus") and node.id != node_id
        }
        return {"node_id": node_id, "cert": cert_pem, "roots": roots_pem, "role": role.value, "managers": managers}

    async def renew(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        assert identity is not None
        ca, _ = await self.control.authority()
        node = await self.control.node(identity.node_id)
        desired = NodeRole.MANAGER if node.data["Spec"]["Role"] == "manager" else NodeRole.WORKER
        return {"cert": ca.renew(identity, bytes(params["csr"]), desired), "roots": ca.trust_bundle_pem()}

    async def raft_join(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        assert identity is not None
        if not self.driver.is_leader:
            leader = self.driver.peer_addresses().get(self.driver.leader_id)
            raise RpcError("not_leader", f"{leader[0]}:{leader[1]}" if leader else "")
        host, port = parse_host_port(str(params["addr"]))
        await self.driver.add_voter(raft_id_of(identity.node_id), host, port, MANAGER_JOIN_TIMEOUT)
        await self.control.set_manager_status(identity.node_id, f"{host}:{port}")
        return {"voters": len(self.driver.core.conf_state.voters)}
