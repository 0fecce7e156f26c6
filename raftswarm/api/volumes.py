"""Docker's `/volumes*` endpoints: this node's own volumes (`docker volume ls/create/inspect/rm/prune` against any
node), answered by its volume store through api/backend.py, in Docker's shapes (moby api/swagger.yaml, daemon/
server/router/volume):

    GET    /volumes              ?filters= dangling, name, driver, label -> {"Volumes": [...], "Warnings": null}
    POST   /volumes/create       {"Name", "Driver", "DriverOpts", "Labels"} -> 201, the volume (an existing one of
                                 that name as it is; a new anonymous one without a name)
    GET    /volumes/{name}       the volume, or 404 "get NAME: no such volume"
    DELETE /volumes/{name}       ?force= -> 204; 409 "remove NAME: volume is in use - [container IDs]"
    POST   /volumes/prune        ?filters= label, label!, all -> {"VolumesDeleted": [...], "SpaceReclaimed": bytes}

A client of API 1.41 or older prunes every unused volume, as dockerd lets it; newer ones only anonymous volumes
unless the filter all is true. Cluster (CSI) volumes are refused.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..objects.validation import string, string_map, unsupported, validated
from .backend import Node, VolumeBackend
from .bodies import json_object
from .swarm import query_filters

_PRUNE_ALL_BEFORE = (1, 42)
"""The API version from which a prune without the filter all=true keeps named volumes (Docker 23)."""

_CREATE_REQUEST = {
    "Name": string,
    "Driver": string,
    "DriverOpts": string_map,
    "Labels": string_map,
    "ClusterVolumeSpec": unsupported("cluster (CSI) volumes are not supported by raftswarm; create a local volume"),
}


class VolumeRoutes:
    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/volumes", self.volumes),
            web.post("/volumes/create", self.volume_create),
            web.post("/volumes/prune", self.volume_prune),
            web.get("/volumes/{name}", self.volume),
            web.delete("/volumes/{name}", self.volume_remove),
        ]

    def _store(self) -> VolumeBackend:
        return self.daemon.volumes

    async def volumes(self, request: web.Request) -> web.Response:
        found = await asyncio.to_thread(self._store().list, query_filters(request))
        return web.json_response({"Volumes": found, "Warnings": None})

    async def volume_create(self, request: web.Request) -> web.Response:
        body = validated(await json_object(request), "the volume create request", _CREATE_REQUEST)
        volume = await asyncio.to_thread(
            self._store().create, body.get("Name", ""), body.get("Driver", ""), body.get("DriverOpts"), body.get("Labels")
        )
        return web.json_response(volume, status=201)

    async def volume(self, request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(self._store().inspect, request.match_info["name"]))

    async def volume_remove(self, request: web.Request) -> web.Response:
        # dockerd's BoolValue: anything but "", 0, no, false and none.
        force = request.query.get("force", "").strip().lower() not in ("", "0", "no", "false", "none")
        await asyncio.to_thread(self._store().remove, request.match_info["name"], force)
        return web.Response(status=204)

    async def volume_prune(self, request: web.Request) -> web.Response:
        filters = query_filters(request)
        version = request.match_info.get("api_version")
        if version is not None and tuple(int(part) for part in version.split(".")) < _PRUNE_ALL_BEFORE:
            filters.setdefault("all", []).append("true")
        return web.json_response(await asyncio.to_thread(self._store().prune, filters))
