"""Docker's `/services*`, `/tasks*` and `/secrets*` endpoints, answered by a manager's service API
(`manager.serviceapi`). Shapes, filters and status codes follow Docker's Engine API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import ControlError
from ..objects.tasks import TaskState, is_current
from ..objects.jobs import service_status
from .backend import Node, ServiceBackend
from ..objects.stored import api_view, resolve, shown_service_spec, shown_task_spec, spec_name
from ..objects.registryauth import AUTH_HEADER, decode_auth
from ..objects.stored import StoredObject
from .bodies import json_object
from .swarm import query_filters, query_version
from ..objects.specs import service_warnings


def _labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for value in wanted:
        key, has_value, expected = value.partition("=")
        if key not in labels or (has_value and labels[key] != expected):
            return False
    return True


def _check_filters(filters: dict[str, list[str]], allowed: tuple[str, ...]) -> None:
    for key in filters:
        if key not in allowed:
            raise ControlError(f"invalid filter '{key}'", 400)


def _service_matches(service: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    spec = service["Spec"]
    if "id" in filters and not any(service["ID"].startswith(v) for v in filters["id"]):
        return False
    if "name" in filters and not any(spec["Name"].startswith(v) for v in filters["name"]):
        return False
    if "label" in filters and not _labels_match(spec.get("Labels") or {}, filters["label"]):
        return False
    given = spec.get("Mode") or {}
    names = (("Global", "global"), ("ReplicatedJob", "replicated-job"), ("GlobalJob", "global-job"))
    mode = next((name for key, name in names if key in given), "replicated")
    return "mode" not in filters or mode in filters["mode"]


PULL_OPTIONS = "PullOptions"
"""Where a service keeps the registry credentials `--with-registry-auth` sent (SwarmKit's
ContainerSpec.PullOptions.RegistryAuth): in the encrypted Raft store, in its tasks' specs, and so delivered
with the assignments to the nodes that run them -- and nowhere else: no client API answer shows it."""


def with_registry_auth(request: web.Request, spec: Any, current: dict[str, Any] | None) -> Any:
    """`spec` with the credentials of the request's X-Registry-Auth header (`docker service create/update
    --with-registry-auth`), or, on an update without them, the ones the service has. A client cannot set them in
    the body: Docker's ServiceSpec has no such field."""
    template = spec.get("TaskTemplate") if isinstance(spec, dict) else None
    container = template.get("ContainerSpec") if isinstance(template, dict) else None
    if not isinstance(container, dict):
        return spec  # validation refuses it with its own message
    container.pop(PULL_OPTIONS, None)
    header = request.headers.get(AUTH_HEADER, "")
    if header and decode_auth(header):
        container[PULL_OPTIONS] = {"RegistryAuth": header}
    elif current is not None:
        kept = ((current.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get(PULL_OPTIONS)
        if kept:
            container[PULL_OPTIONS] = kept
    return spec


def public_view(stored: StoredObject) -> dict[str, Any]:
    """A service or task as the client API shows it: without the registry credentials of its spec(s)."""
    view = api_view(stored)
    for key in ("Spec", "PreviousSpec"):
        spec = view.get(key)
        if not isinstance(spec, dict):
            continue
        template = spec.get("TaskTemplate", spec)  # a service's spec holds a TaskTemplate; a task's is one
        container = template.get("ContainerSpec") if isinstance(template, dict) else None
        if isinstance(container, dict) and PULL_OPTIONS in container:
            container = {k: v for k, v in container.items() if k != PULL_OPTIONS}
            if template is spec:
                view[key] = {**spec, "ContainerSpec": container}
            else:
                view[key] = {**spec, "TaskTemplate": {**template, "ContainerSpec": container}}
    return view


def service_view(stored: StoredObject, insert_defaults: bool = False) -> dict[str, Any]:
    """A service as Docker's API shows it: `public_view`, its specs as dockerd writes them back
    (`shown_service_spec`); SwarmKit's defaults go into the current spec only, as dockerd's `insertDefaults`."""
    view = public_view(stored)
    view["Spec"] = shown_service_spec(view["Spec"], insert_defaults)
    if isinstance(view.get("PreviousSpec"), dict):
        view["PreviousSpec"] = shown_service_spec(view["PreviousSpec"])
    return view


TASK_INTERNALS = ("Endpoint", "ServiceAnnotations")
"""A task's copies of its service's endpoint and annotations: SwarmKit's Task has them and its agents use them
(published ports, `{{.Service.Name}}` templates), Docker's Task has not."""


def task_view(stored: StoredObject, network_versions: dict[str, int]) -> dict[str, Any]:
    """A task as Docker's API shows it (daemon/cluster/convert/task.go): `public_view` without `TASK_INTERNALS`;
    Labels, Status.PortStatus and a ContainerStatus's three fields always there; its Spec as `shown_task_spec`
    but without a Runtime (dockerd shows one for services only); each attached network with its Version, that
    of the network in `network_versions` (network ID -> version; 0 for a network removed since)."""
    view = {key: value for key, value in public_view(stored).items() if key not in TASK_INTERNALS}
    view.setdefault("Labels", {})
    view["Spec"] = {key: value for key, value in shown_task_spec(view.get("Spec") or {}).items() if key != "Runtime"}
    status = view["Status"] = dict(view.get("Status") or {})
    status.setdefault("PortStatus", {})
    if isinstance(status.get("ContainerStatus"), dict):
        status["ContainerStatus"] = {"ContainerID": "", "PID": 0, "ExitCode": 0, **status["ContainerStatus"]}
    if view.get("NetworksAttachments"):
        view["NetworksAttachments"] = [
            {**attachment, "Network": _with_version(attachment.get("Network") or {}, network_versions)}
            for attachment in view["NetworksAttachments"]
        ]
    return view


def _with_version(network: dict[str, Any], versions: dict[str, int]) -> dict[str, Any]:
    return {"Version": {"Index": versions.get(network.get("ID", ""), 0)}, **network}


class ServiceRoutes:
    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/services", self.services),
            web.post("/services/create", self.service_create),
            web.get("/services/{id}", self.service),
            web.post("/services/{id}/update", self.service_update),
            web.delete("/services/{id}", self.service_remove),
            web.get("/tasks", self.tasks),
            web.get("/tasks/{id}", self.task),
            web.get("/secrets", self.secrets),
            web.post("/secrets/create", self.secret_create),
            web.get("/secrets/{id}", self.secret),
            web.post("/secrets/{id}/update", self.secret_update),
            web.delete("/secrets/{id}", self.secret_remove),
        ]

    def _api(self) -> ServiceBackend:
        return self.daemon.services()

    # -- services --------------------------------------------------------------------------------------

    async def services(self, request: web.Request) -> web.Response:
        filters = query_filters(request)
        _check_filters(filters, ("id", "name", "label", "mode"))
        api = self._api()
        views = [service_view(s) for s in await api.services()]
        views = [v for v in views if _service_matches(v, filters)]
        if request.query.get("status", "false").lower() in ("1", "true"):
            by_service: dict[str, list[dict[str, Any]]] = {}
            for task in await api.tasks():
                by_service.setdefault(task.data.get("ServiceID", ""), []).append(task.data)
            for view in views:
                view["ServiceStatus"] = service_status(view, by_service.get(view["ID"], []))
        return web.json_response(views)

    async def service(self, request: web.Request) -> web.Response:
        insert_defaults = request.query.get("insertDefaults", "false").lower() in ("1", "true")
        service = await self._api().service(request.match_info["id"])
        return web.json_response(service_view(service, insert_defaults))

    async def service_create(self, request: web.Request) -> web.Response:
        spec = with_registry_auth(request, await json_object(request), None)
        service_id = await self._api().create_service(spec)
        return web.json_response({"ID": service_id, "Warnings": service_warnings(spec)}, status=201)

    async def service_update(self, request: web.Request) -> web.Response:
        rollback = request.query.get("rollback", "")
        if rollback not in ("", "previous"):
            raise ControlError(f"invalid rollback value {rollback!r}: only 'previous' is supported", 400)
        spec = await json_object(request, optional=bool(rollback))
        if not rollback:
            current = await self._api().service(request.match_info["id"])
            spec = with_registry_auth(request, spec, current.data["Spec"])
        updated = await self._api().update_service(
            request.match_info["id"], query_version(request), spec, rollback=bool(rollback)
        )
        return web.json_response({"Warnings": service_warnings(updated.data["Spec"])})

    async def service_remove(self, request: web.Request) -> web.Response:
        await self._api().remove_service(request.match_info["id"])
        return web.Response(status=200)

    # -- tasks -----------------------------------------------------------------------------------------

    async def tasks(self, request: web.Request) -> web.Response:
        filters = query_filters(request)
        # `_up-to-date` and `runtime` are what the docker CLI's convergence monitor asks for.
        _check_filters(filters, ("id", "name", "service", "node", "label", "desired-state", "_up-to-date", "runtime"))
        api = self._api()
        services = await api.services()
        service_names = {s.id: s.data["Spec"]["Name"] for s in services}
        if "service" in filters:
            wanted = {resolve(services, ref, "service", spec_name).id for ref in filters["service"]}
            filters = {**filters, "service": sorted(wanted)}
        if "node" in filters:
            control = self.daemon.control()
            filters = {**filters, "node": [(await control.node(ref)).id for ref in filters["node"]]}
        tasks = await api.tasks()
        if "_up-to-date" in filters:  # only tasks made from their service's current spec
            templates = {s.id: s.data["Spec"].get("TaskTemplate") or {} for s in services}
            tasks = [t for t in tasks if is_current(t.data, templates.get(t.data.get("ServiceID", ""), {}))]
        tasks = [t for t in tasks if _task_matches(t.data, filters, service_names)]
        versions = await self._network_versions() if any(t.data.get("NetworksAttachments") for t in tasks) else {}
        return web.json_response([task_view(t, versions) for t in tasks])

    async def task(self, request: web.Request) -> web.Response:
        task = await self._api().task(request.match_info["id"])
        versions = await self._network_versions() if task.data.get("NetworksAttachments") else {}
        return web.json_response(task_view(task, versions))

    async def _network_versions(self) -> dict[str, int]:
        return {network.id: network.version for network in await self.daemon.swarm_networks().networks()}

    # -- secrets ---------------------------------------------------------------------------------------

    async def secrets(self, request: web.Request) -> web.Response:
        filters = query_filters(request)
        _check_filters(filters, ("id", "name", "label", "names"))
        views = [api_view(s) for s in await self._api().secrets()]
        return web.json_response([v for v in views if _secret_matches(v, filters)])

    async def secret(self, request: web.Request) -> web.Response:
        return web.json_response(api_view(await self._api().secret(request.match_info["id"])))

    async def secret_create(self, request: web.Request) -> web.Response:
        secret_id = await self._api().create_secret(await json_object(request))
        return web.json_response({"ID": secret_id}, status=201)

    async def secret_update(self, request: web.Request) -> web.Response:
        await self._api().update_secret(request.match_info["id"], query_version(request), await json_object(request))
        return web.Response(status=200)

    async def secret_remove(self, request: web.Request) -> web.Response:
        await self._api().remove_secret(request.match_info["id"])
        return web.Response(status=204)


def _task_matches(task: dict[str, Any], filters: dict[str, list[str]], service_names: dict[str, str]) -> bool:
    if "id" in filters and not any(task["ID"].startswith(v) for v in filters["id"]):
        return False
    if "service" in filters and task.get("ServiceID") not in filters["service"]:
        return False
    if "node" in filters and task.get("NodeID") not in filters["node"]:
        return False
    if "name" in filters:
        name = f"{service_names.get(task.get('ServiceID', ''), '')}.{task.get('Slot') or task.get('NodeID', '')}"
        if not any(name.startswith(v) for v in filters["name"]):
            return False
    # As SwarmKit: a task's labels are its service's (`docker stack ps` filters on the stack's).
    if "label" in filters and not _labels_match((task.get("ServiceAnnotations") or {}).get("Labels") or {}, filters["label"]):
        return False
    if "desired-state" in filters:
        desired = TaskState.of(task.get("DesiredState", "running"))
        for value in filters["desired-state"]:
            if value not in ("running", "shutdown", "accepted", "complete"):
                raise ControlError(f"invalid filter 'desired-state={value}'", 400)
        # Docker: "running" also covers tasks about to run; "shutdown" every state past it but a job's
        # tasks' "complete".
        matches = {
            "running": desired <= TaskState.RUNNING,
            "shutdown": desired >= TaskState.SHUTDOWN,
            "accepted": desired == TaskState.ACCEPTED,
            "complete": desired == TaskState.COMPLETE,
        }
        if not any(matches[v] for v in filters["desired-state"]):
            return False
    return True


def _secret_matches(secret: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    name = secret["Spec"]["Name"]
    if "id" in filters and not any(secret["ID"].startswith(v) for v in filters["id"]):
        return False
    if "name" in filters and not any(name.startswith(v) for v in filters["name"]):
        return False
    if "names" in filters and name not in filters["names"]:
        return False
    return "label" not in filters or _labels_match(secret["Spec"].get("Labels") or {}, filters["label"])
