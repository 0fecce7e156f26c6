"""Docker's swarm endpoints: `/swarm*`, `/nodes*` and `/info`, answered by the node daemon and, for
cluster state, by a manager's control API (`manager.controlapi`). Shapes and status codes follow Docker's."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

from aiohttp import web

from .. import __version__
from ..errors import ControlError
from ..objects.specs import init_settings, node_certificate_lifetime, validate_init_request, validate_join_request, validate_node_spec, validate_swarm_spec
from ..objects.stored import StoredObject
from .backend import Node
from .bodies import field, json_object, parse_json

_VERSION = re.compile(r"[0-9]{1,19}")  # Docker parses it with strconv.ParseUint: ASCII digits, 64 bits

ALREADY_IN_SWARM = (
    'This node is already part of a swarm. Use "raftswarm swarm leave" to leave this swarm and join another one.'
)
"""dockerd's errSwarmExists, naming raftswarm's command (the daemon refuses with the same words)."""

_NODE_KEYS = ("ID", "CreatedAt", "UpdatedAt", "Spec", "Description", "Status", "ManagerStatus")
"""The fields of Docker's Node (api/swagger.yaml) a stored node has. The store's node also holds SwarmKit's
Attachments (its address on the ingress network), which dockerd does not show."""


def query_version(request: web.Request) -> int:
    """The `version` query parameter of an update: the object version the client read."""
    text = request.query.get("version", "")
    if not _VERSION.fullmatch(text):
        raise ControlError(f"the version query parameter is required and must be an integer, got {text[:40]!r}")
    return int(text)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() in ("1", "true")


def node_tls_info(swarm: dict[str, Any]) -> dict[str, str]:
    """A node's Description.TLSInfo, given the Swarm object (`ControlBackend.swarm_view`).

    In SwarmKit every node reports its TLSInfo. A raftswarm node tells only the leader's dispatcher, in memory,
    which root issued its certificate: the node object has no field for it. Outside a root rotation every node
    that is up holds a certificate from the swarm's root (the dispatcher ends a rotation only once each of them
    holds one from the new root), so its TLSInfo is the swarm's, which the docker CLI shows as "Ready". During a
    rotation which root issued a node's certificate is not known here: its TLSInfo names only the root it
    trusts, and the docker CLI shows "Needs Rotation" until the rotation ends. A node that was down through a
    whole rotation is shown on the new root, though the swarm refuses its old certificate."""
    if swarm["RootRotationInProgress"]:
        return {"TrustRoot": swarm["TLSInfo"]["TrustRoot"]}
    return dict(swarm["TLSInfo"])


def node_view(node: StoredObject, leader_raft_id: int | None, tls: dict[str, str] | None) -> dict[str, Any]:
    """Docker's Node: `tls` is its Description.TLSInfo (`node_tls_info`); Status.Message is left out while empty,
    as Go's omitempty does."""
    data = {key: node.data[key] for key in _NODE_KEYS if key in node.data}
    data["Version"] = {"Index": node.version}
    if tls is not None:
        data["Description"] = {**data.get("Description", {}), "TLSInfo": tls}
    status = data.get("Status")
    if status is not None and not status.get("Message"):
        data["Status"] = {key: value for key, value in status.items() if key != "Message"}
    manager = data.get("ManagerStatus")
    if manager:
        # A manager the swarm marked down (its heartbeats stopped) is one the others cannot reach: Docker shows
        # such a node as "Down" and "Unreachable", not "Down" and "Reachable".
        down = (data.get("Status") or {}).get("State") == "down"
        data["ManagerStatus"] = {
            "Leader": manager.get("RaftID") == leader_raft_id,
            "Reachability": "unreachable" if down else manager.get("Reachability", "reachable"),
            "Addr": manager.get("Addr", ""),
        }
    return data


def query_filters(request: web.Request) -> dict[str, list[str]]:
    """Docker's `filters` query parameter as {key: [values]}."""
    raw = request.query.get("filters")
    if not raw:
        return {}
    parsed = parse_json(raw, "the filters parameter")
    # Docker accepts {"k": ["v"]} and {"k": {"v": true}}.
    if not isinstance(parsed, dict) or not all(
        (isinstance(v, list) and all(isinstance(x, str) for x in v))
        or (isinstance(v, dict) and all(isinstance(on, bool) for on in v.values()))
        for v in parsed.values()
    ):
        raise ControlError('filters must be a JSON object of string lists, such as {"role": ["manager"]}')
    return {k: list(v) if isinstance(v, list) else [x for x, on in v.items() if on] for k, v in parsed.items()}


def _matches(node: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "id" and not any(node["ID"].startswith(v) for v in values):
            return False
        if key == "name" and node["Description"]["Hostname"] not in values:
            return False
        if key == "role" and node["Spec"]["Role"] not in values:
            return False
        if key == "membership" and "accepted" not in values:
            return False
        if key in ("label", "node.label"):
            labels = node["Spec"].get("Labels", {})
            for value in values:
                k, _, v = value.partition("=")
                if k not in labels or (v and labels[k] != v):
                    return False
    return True


class SwarmRoutes:
    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/swarm/init", self.init),
            web.post("/swarm/join", self.join),
            web.post("/swarm/leave", self.leave),
            web.get("/swarm", self.inspect),
            web.post("/swarm/update", self.update),
            web.get("/swarm/unlockkey", self.unlock_key),
            web.post("/swarm/unlock", self.unlock),
            web.get("/nodes", self.nodes),
            web.get("/nodes/{id}", self.node),
            web.post("/nodes/{id}/update", self.node_update),
            web.delete("/nodes/{id}", self.node_remove),
            web.get("/info", self.info),
        ]

    def _refuse_if_in_swarm(self) -> None:
        """dockerd refuses `swarm init` on a node in a swarm before it looks at the request's fields
        (Cluster.Init). The daemon checks again, under its lock."""
        if self.daemon.local_state() != "inactive":
            raise ControlError(ALREADY_IN_SWARM, 503)

    async def init(self, request: web.Request) -> web.Response:
        raw = await json_object(request, optional=True)
        if isinstance(raw, dict) and raw.get("ForceNewCluster") is not True:
            self._refuse_if_in_swarm()
        body = validate_init_request(raw)
        lifetime = node_certificate_lifetime(body)
        node_id = await self.daemon.init_swarm(
            body.get("ListenAddr", ""), body.get("AdvertiseAddr") or None, body.get("AutoLockManagers", False), lifetime,
            availability=body["Availability"], spec=init_settings(body),
        )
        return web.json_response(node_id)

    async def join(self, request: web.Request) -> web.Response:
        body = validate_join_request(await json_object(request))
        await self.daemon.join_swarm(
            body.get("RemoteAddrs", []),
            body["JoinToken"],
            body.get("ListenAddr", ""),
            body.get("AdvertiseAddr") or None,
            availability=body["Availability"],
        )
        return web.Response(status=200)

    async def leave(self, request: web.Request) -> web.Response:
        await self.daemon.leave_swarm(_flag(request, "force"))
        return web.Response(status=200)

    async def inspect(self, request: web.Request) -> web.Response:
        control = self.daemon.control()
        return web.json_response(control.swarm_view(await control.cluster()))

    async def update(self, request: web.Request) -> web.Response:
        control = self.daemon.control()
        body = await json_object(request, optional=True)
        spec = validate_swarm_spec(body) if body else None
        await control.update_swarm(
            query_version(request),
            spec,
            _flag(request, "rotateWorkerToken"),
            _flag(request, "rotateManagerToken"),
            _flag(request, "rotateManagerUnlockKey"),
        )
        return web.Response(status=200)

    async def unlock_key(self, request: web.Request) -> web.Response:
        return web.json_response({"UnlockKey": await self.daemon.control().unlock_key()})

    async def unlock(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        await self.daemon.unlock(field(body, "UnlockKey", str))
        return web.Response(status=200)

    def _leader(self) -> int | None:
        manager = self.daemon.manager
        return manager.driver.leader_id if manager and manager.driver else None

    async def _node_tls_info(self) -> dict[str, str]:
        # Called once the nodes are read (linearizably): this manager's applied state is then at least as new.
        control = self.daemon.control()
        return node_tls_info(control.swarm_view(await control.cluster(linearizable=False)))

    async def nodes(self, request: web.Request) -> web.Response:
        filters = query_filters(request)
        nodes = await self.daemon.control().nodes()
        tls = await self._node_tls_info()
        views = [node_view(n, self._leader(), tls) for n in nodes]
        return web.json_response([v for v in views if _matches(v, filters)])

    async def node(self, request: web.Request) -> web.Response:
        node = await self.daemon.control().node(request.match_info["id"])
        return web.json_response(node_view(node, self._leader(), await self._node_tls_info()))

    async def node_update(self, request: web.Request) -> web.Response:
        spec = validate_node_spec(await json_object(request))
        await self.daemon.update_node(request.match_info["id"], query_version(request), spec)
        return web.Response(status=200)

    async def node_remove(self, request: web.Request) -> web.Response:
        await self.daemon.control().remove_node(request.match_info["id"], _flag(request, "force"))
        return web.Response(status=200)

    async def info(self, request: web.Request) -> web.Response:
        daemon = self.daemon
        swarm: dict[str, Any] = {
            "NodeID": daemon.node_id(),
            "NodeAddr": "",
            "LocalNodeState": daemon.local_state(),
            "ControlAvailable": daemon.manager is not None,
            "Error": daemon.swarm_error(),
            "RemoteManagers": None,
        }
        if daemon.manager is not None and daemon.manager.driver is not None:
            control = daemon.control()
            nodes = await control.nodes()
            cluster = await control.cluster(linearizable=False)
            swarm.update(
                {
                    "Nodes": len(nodes),
                    "Managers": sum(1 for n in nodes if n.data["Spec"]["Role"] == "manager"),
                    # dockerd's ClusterInfo: the Swarm object without its join tokens.
                    "Cluster": {k: v for k, v in control.swarm_view(cluster).items() if k != "JoinTokens"},
                    "RemoteManagers": [
                        {"NodeID": n.id, "Addr": n.data["ManagerStatus"]["Addr"]} for n in nodes if n.data.get("ManagerStatus")
                    ],
                }
            )
        return web.json_response(
            {
                "ID": daemon.node_id(),
                "Name": socket.gethostname(),
                "ServerVersion": __version__,
                "Labels": [f"{key}={value}" for key, value in sorted(daemon.engine_labels().items())],
                "Swarm": swarm,
                "Warnings": await asyncio.to_thread(daemon.warnings),
            }
        )
