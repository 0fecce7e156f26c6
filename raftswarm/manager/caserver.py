"""The CA's calls on 2377: what a joining node fetches and sends, and certificate renewal.

- `ca.root` (anyone): the trust bundle PEM, which the joiner checks against the digest in its token;
- `ca.join` (anyone, with a join token): certify a CSR for the token's role and record the node;
- `ca.renew` (a node with a valid certificate): a fresh certificate, with the role the swarm wants now;
- `raft.join` (a manager): add the caller to the Raft membership (learner, then voter once caught up).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..addresses import InvalidAddress, parse_host_port
from ..ca.certificates import NodeIdentity, NodeRole
from ..objects.specs import NODE_AVAILABILITIES
from ..raft.driver import RaftDriver
from ..raft.transport import raft_id_of
from ..store import ReplicatedStore
from .controlapi import ControlApi
from ..rpc.channel import RpcError, RpcServer

MANAGER_JOIN_TIMEOUT = 60.0
"""Seconds a new manager may take to catch up before it is made a voter."""


MAX_TOKEN_CHARS = 256
"""A join token is about 90 characters (`SWMTKN-1-<50>-<25>`); anything much longer is not one."""

MAX_CSR_BYTES = 16 << 10
"""A node's CSR (one P-256 key, a fixed subject) is under 1 KiB in PEM; 16 KiB leaves room for any sane
encoding while keeping a join cheap to refuse."""

MAX_HOSTNAME_CHARS = 253
"""A DNS name's longest form (RFC 1035), which bounds every hostname a machine can report."""

MAX_ADDRESS_CHARS = 261
"""`[` + the longest IPv6 text (45) + `]:65535`, or a 253-character DNS name with a port."""

MAX_ENGINE_LABELS_CHARS = 64 << 10
"""All of a joining node's engine labels (`raftswarm-node --label`), keys and values together. A node's labels
are a few short words; the bound keeps one join with the worker token from putting much into every manager's
store (and every scheduling round's reading of it)."""

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.:_-]*[A-Za-z0-9])?")
"""What a node may give as its address's host: an IP literal or a DNS name, nothing a shell or a log could
misread."""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A `ca.join` call's parameters, checked by type and size before anything reads or stores them: one
    join with the worker token must not be able to put a value in the store that breaks a control loop."""

    token: str
    csr: bytes
    addr: str
    hostname: str
    engine_labels: dict[str, str]
    availability: str

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> JoinRequest:
        token = params.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise RpcError("invalid", "token must be a join token string (SWMTKN-1-...)")
        csr = _csr(params)
        host, port = _address(params.get("addr"))
        hostname = params.get("hostname")
        if (
            not isinstance(hostname, str)
            or not 0 < len(hostname) <= MAX_HOSTNAME_CHARS
            or not hostname.isprintable()
            or any(c.isspace() for c in hostname)
        ):
            raise RpcError(
                "invalid", f"hostname must be a printable string of 1 to {MAX_HOSTNAME_CHARS} characters without spaces"
            )
        labels = engine_labels_param(params.get("labels"))
        availability = params.get("availability") or "active"  # absent or "": the default, as dockerd reads it
        if availability not in NODE_AVAILABILITIES:
            raise RpcError("invalid", f"availability must be one of {', '.join(NODE_AVAILABILITIES)}")
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls(token, csr, address, hostname, labels, availability)


def engine_labels_param(value: Any) -> dict[str, str]:
    """A node's engine labels, as it joins or heartbeats: a map of printable strings (None or absent: none)."""
    if value is None:
        return {}
    problem = f"labels must map printable strings to printable strings, {MAX_ENGINE_LABELS_CHARS} characters in all"
    if not isinstance(value, dict):
        raise RpcError("invalid", problem)
    size = 0
    for key, label in value.items():
        if not (isinstance(key, str) and isinstance(label, str) and key and key.isprintable() and label.isprintable()):
            raise RpcError("invalid", problem)
        size += len(key) + len(label)
    if size > MAX_ENGINE_LABELS_CHARS:
        raise RpcError("invalid", problem)
    return dict(value)


def _csr(params: dict[str, Any]) -> bytes:
    csr = params.get("csr")
    if not isinstance(csr, bytes) or not 0 < len(csr) <= MAX_CSR_BYTES:
        raise RpcError("invalid", f"csr must be a PEM certificate signing request of at most {MAX_CSR_BYTES} bytes")
    return csr


def _address(value: Any) -> tuple[str, int]:
    if not isinstance(value, str) or len(value) > MAX_ADDRESS_CHARS:
        raise RpcError("invalid", "addr must be the node's HOST:PORT")
    try:
        host, port = parse_host_port(value)
    except InvalidAddress as exc:
        raise RpcError("invalid", str(exc)) from None
    if not _HOST.fullmatch(host):
        raise RpcError("invalid", f"addr {value!r}: the host must be an IP address or a DNS name")
    return host, port


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
        request = JoinRequest.from_params(params)
        node_id, cert_pem, roots_pem, role = await self.control.enroll(
            request.token, request.csr, request.addr, request.hostname, request.engine_labels, request.availability
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
        return {"cert": ca.renew(identity, _csr(params), desired), "roots": ca.trust_bundle_pem()}

    async def raft_join(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        assert identity is not None
        if not self.driver.is_leader:
            leader = self.driver.peer_addresses().get(self.driver.leader_id)
            raise RpcError("not_leader", f"{leader[0]}:{leader[1]}" if leader else "")
        host, port = _address(params.get("addr"))
        self.control.check_address_free(f"{host}:{port}", identity.node_id)
        await self.driver.add_voter(raft_id_of(identity.node_id), host, port, MANAGER_JOIN_TIMEOUT)
        await self.control.set_manager_status(identity.node_id, f"{host}:{port}")
        return {"voters": len(self.driver.core.conf_state.voters)}
