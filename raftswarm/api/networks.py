"""Docker's `/networks*` endpoints for swarm (overlay) networks, answered by a manager's network API
(`manager.networkapi`). Networks are shown in the engine API's shape (`docker network ls/inspect` read it);
inspect adds Peers, the nodes on the network as this node's gossip knows them, when this node is on it (as
dockerd does from networkdb). Filters follow Docker's: name (substring), id (prefix), label, driver, scope,
type (custom/builtin)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import ControlError
from .backend import NetworkBackend, Node
from ..objects.networks import network_resource
from .bodies import json_object
from .services import _check_filters, _labels_match
from .swarm import query_filters

_FILTERS = ("name", "id", "label", "driver", "scope", "type")


def _network_matches(network: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    if "name" in filters and not any(v in network["Name"] for v in filters["name"]):
        return False
    if "id" in filters and not any(network["Id"].startswith(v) for v in filters["id"]):
        return False
    if "label" in filters and not _labels_match(network["Labels"], filters["label"]):
        return False
    if "driver" in filters and network["Driver"] not in filters["driver"]:
        return False
    if "scope" in filters and network["Scope"] not in filters["scope"]:
        return False
    if "type" in filters:
        for value in filters["type"]:
            if value not in ("custom", "builtin"):
                raise ControlError(f"invalid filter: 'type'='{value}'", 400)
        return "custom" in filters["type"]  # every swarm network here is user-defined or ingress (custom)
    return True


class NetworkRoutes:
    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/networks", self.networks),
            web.post("/networks/create", self.network_create),
            web.get("/networks/{id}", self.network),
            web.delete("/networks/{id}", self.network_remove),
        ]

    def _api(self) -> NetworkBackend:
        return self.daemon.swarm_networks()

    async def networks(self, request: web.Request) -> web.Response:
        filters = query_filters(request)
        _check_filters(filters, _FILTERS)
        shown = [network_resource(n) for n in await self._api().networks()]
        return web.json_response([n for n in shown if _network_matches(n, filters)])

    async def network(self, request: web.Request) -> web.Response:
        network = await self._api().network(request.match_info["id"])
        return web.json_response(network_resource(network, self.daemon.network_peers(network.id)))

    async def network_create(self, request: web.Request) -> web.Response:
        network_id = await self._api().create_network(await json_object(request))
        return web.json_response({"Id": network_id, "Warning": ""}, status=201)

    async def network_remove(self, request: web.Request) -> web.Response:
        await self._api().remove_network(request.match_info["id"])
        return web.Response(status=204)
