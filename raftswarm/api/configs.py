"""Docker's `/configs*` endpoints, answered by a manager's config API (`manager.configapi`): create, list (filters
id and name by prefix, label by key or key=value, as dockerd's), inspect, update (labels only) and remove.
A config is shown with its data (Spec.Data, base64), as Docker shows it."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from ..objects.stored import StoredObject, api_view, config_data
from .backend import ConfigBackend, Node
from .bodies import json_object
from .services import _check_filters, _labels_match
from .swarm import query_filters, query_version

_FILTERS = ("id", "name", "label")


def config_view(stored: StoredObject) -> dict[str, Any]:
    """Docker's Config: its Spec with the data, base64 as Go encodes []byte."""
    view = api_view(stored)
    view["Spec"] = {**view["Spec"], "Data": base64.b64encode(config_data(stored)).decode("ascii")}
    return view


def _config_matches(config: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    if "id" in filters and not any(config["ID"].startswith(v) for v in filters["id"]):
        return False
    if "name" in filters and not any(config["Spec"]["Name"].startswith(v) for v in filters["name"]):
        return False
    return "label" not in filters or _labels_match(config["Spec"].get("Labels") or {}, filters["label"])


class ConfigRoutes:
    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/configs", self.configs),
            web.post("/configs/create", self.config_create),
            web.get("/configs/{id}", self.config),
            web.post("/configs/{id}/update", self.config_update),
            web.delete("/configs/{id}", self.config_remove),
        ]

    def _api(self) -> ConfigBackend:
        return self.daemon.configs()

    async def configs(self, request: web.Request) -> web.Response:
        filters = query_filters(request)
        _check_filters(filters, _FILTERS)
        views = [config_view(c) for c in await self._api().configs()]
        return web.json_response([v for v in views if _config_matches(v, filters)])

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response(config_view(await self._api().config(request.match_info["id"])))

    async def config_create(self, request: web.Request) -> web.Response:
        config_id = await self._api().create_config(await json_object(request))
        return web.json_response({"ID": config_id}, status=201)

    async def config_update(self, request: web.Request) -> web.Response:
        await self._api().update_config(request.match_info["id"], query_version(request), await json_object(request))
        return web.Response(status=200)

    async def config_remove(self, request: web.Request) -> web.Response:
        await self._api().remove_config(request.match_info["id"])
        return web.Response(status=204)
