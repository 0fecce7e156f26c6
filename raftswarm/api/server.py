"""The node's client API server.

Docker-shaped basics (`/_ping`, `/version`) and raftswarm's own endpoints, used by the CLI, the tests, the
chaos workloads and tools that drive a cluster from outside:

    GET  /raftswarm/raft                       this manager's Raft status
    POST /raftswarm/raft/members               {"action": "add-voter"|"add-learner"|"promote"|"remove", "raft_id", "addr"}
    POST /raftswarm/raft/transfer              {"to": raft_id}
    POST /raftswarm/store/transact             {"operations": [[action|null, kind, id, data, expect], ...]}
                                               any kind but the swarm's own (`SWARM_KINDS`), which only
                                               change through the endpoints that validate them
    GET  /raftswarm/store/{kind}               ?consistency=linearizable (default) | local; any kind but
                                               those holding keys or secret data (`UNREADABLE_KINDS`)
    GET  /raftswarm/store/{kind}/{id}          same
    GET  /raftswarm/agent                      what this node's agent holds: task IDs and states, secret and
                                               config IDs and names (never their data)

Errors are Docker's shape: a status code and `{"message": "..."}`. Bad input is a 4xx; a 500 is a bug of
the node, logged with its traceback, and the node keeps serving.
"""

from __future__ import annotations

import json
import logging
import platform
import ssl
from typing import Any

from aiohttp import web

from .. import __version__
from ..addresses import parse_host_port
from ..errors import InvalidInput, RaftswarmError, Unavailable, VersionConflict
from ..objects.kinds import CLUSTER, NODES
from ..errors import ControlError
from ..objects.kinds import ALLOCATIONS, NETWORK_NAMES, NETWORKS, SECRET_NAMES, SECRETS, SERVICE_NAMES, SERVICES, TASKS
from ..objects.kinds import CONFIG_NAMES, CONFIGS
from ..store import Operation, StoreError
from ..objects.stored import StoredObject
from .backend import ManagerRole, Node
from .bodies import field, json_object
from .configs import ConfigRoutes
from .images import ImageRoutes
from .logs import LogRoutes
from .networks import NetworkRoutes
from .services import ServiceRoutes
from .swarm import SwarmRoutes
from .volumes import VolumeRoutes

log = logging.getLogger(__name__)

API_VERSION = "1.50"
MIN_API_VERSION = "1.24"

SWARM_KINDS = {
    SERVICES: "/services",
    SERVICE_NAMES: "/services",
    TASKS: "/services (tasks are the orchestrator's)",
    SECRETS: "/secrets",
    SECRET_NAMES: "/secrets",
    CONFIGS: "/configs",
    CONFIG_NAMES: "/configs",
    NETWORKS: "/networks",
    NETWORK_NAMES: "/networks",
    ALLOCATIONS: "/services and /networks (allocations are the allocator's)",
    NODES: "/nodes",
    CLUSTER: "/swarm",
}
"""The store kinds the swarm itself keeps, and the endpoints that change them. /raftswarm/store/transact
refuses writes to these: it takes any data, and a service, task or node written around the validation of
those endpoints can stop the control loops or every client that reads it."""

UNREADABLE_KINDS = {
    SECRETS: "holds secret data; use /secrets",
    CONFIGS: "holds config data (bytes, which JSON cannot carry); use /configs",
    CLUSTER: "holds the swarm's root CA key, unlock key and gossip keys; use /swarm",
}
"""Kinds the raw store endpoints do not show: only the endpoints that leave their keys out read them."""


def _error(status: int, message: str) -> web.Response:
    # Exactly "application/json": the docker CLI decodes {"message"} only then (not with "; charset=utf-8").
    return web.Response(body=json.dumps({"message": message}).encode(), status=status, content_type="application/json")


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and not exc.text.startswith("{"):
            return _error(exc.status, exc.reason if exc.status == 404 else exc.text)
        raise
    except ControlError as exc:
        return _error(exc.status, str(exc))
    except VersionConflict as exc:
        return _error(409, str(exc))
    except StoreError as exc:
        return _error(400, f"invalid request: {exc}")
    except InvalidInput as exc:
        return _error(400, str(exc))
    except Unavailable as exc:
        return _error(503, str(exc))
    except RaftswarmError as exc:
        return _error(500, str(exc))
    except Exception as exc:  # a bug of this node: say so, log why, and keep serving everyone else
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error ({type(exc).__name__}); the node logged the details")
    response.headers["Api-Version"] = API_VERSION
    return response


def _object(o: StoredObject) -> dict[str, Any]:
    return {"kind": o.kind, "id": o.id, "version": o.version, "created": o.created, "data": o.data}


class ApiServer:
    """Serves the API of one node daemon (`node.daemon.NodeDaemon`); store and Raft endpoints need the node
    to be a manager and answer 503 otherwise."""

    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon
        self.app = web.Application(middlewares=[_errors], client_max_size=8 << 20)
        logs = LogRoutes(daemon)
        self.app.on_shutdown.append(logs.shutdown)  # end `logs -f` streams, or closing waits for them
        images = ImageRoutes(daemon)
        self.app.on_shutdown.append(images.shutdown)  # and pulls, pushes, loads and saves in flight
        routes = [
            web.get("/_ping", self.ping),
            web.get("/version", self.version),
            web.get("/raftswarm/raft", self.raft_status),
            web.post("/raftswarm/raft/members", self.raft_members),
            web.post("/raftswarm/raft/transfer", self.raft_transfer),
            web.post("/raftswarm/store/transact", self.store_transact),
            web.get("/raftswarm/store/{kind}", self.store_list),
            web.get("/raftswarm/store/{kind}/{id}", self.store_get),
            web.get("/raftswarm/agent", self.agent_status),
            *SwarmRoutes(daemon).routes(),
            *ServiceRoutes(daemon).routes(),
            *ConfigRoutes(daemon).routes(),
            *logs.routes(),
            *NetworkRoutes(daemon).routes(),
            *VolumeRoutes(daemon).routes(),
            *images.routes(),
        ]
        # Docker clients put the API version in front of every path: /v1.50/services/...
        versioned = [web.RouteDef(r.method, "/v{api_version:[0-9]+[.][0-9]+}" + r.path, r.handler, r.kwargs) for r in routes]
        self.app.add_routes(routes + versioned)
        self._runner: web.AppRunner | None = None

    async def start_unix(self, path: str) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, path).start()

    async def start_tcp(self, host: str, port: int, tls: ssl.SSLContext) -> None:
        """Also serve on TCP, with TLS requiring a client certificate (dockerd's `-H tcp://... --tlsverify`)."""
        assert self._runner is not None, "start_unix first"
        await web.TCPSite(self._runner, host, port, ssl_context=tls).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers --------------------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="OK", headers={"Api-Version": API_VERSION, "Swarm": self._swarm_header()})

    def _swarm_header(self) -> str:
        state = self.daemon.local_state()
        if state != "active":
            return state
        return "active/manager" if self.daemon.manager is not None else "active/worker"

    async def version(self, request: web.Request) -> web.Response:
        """Docker's SystemVersion. Arch is named as Go names it (GOARCH), as dockerd reports it. raftswarm is not
        a Go build: the component's GitCommit, GoVersion and BuildTime are empty, and left out at the top level
        as Go's omitempty does."""
        machine = platform.machine()
        arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
        kernel = platform.release()
        details = {
            "ApiVersion": API_VERSION,
            "Arch": arch,
            "BuildTime": "",
            "Experimental": "false",
            "GitCommit": "",
            "GoVersion": "",
            "KernelVersion": kernel,
            "MinAPIVersion": MIN_API_VERSION,
            "Os": "linux",
        }
        return web.json_response(
            {
                "Platform": {"Name": "raftswarm"},
                "Components": [{"Name": "raftswarm", "Version": __version__, "Details": details}],
                "Version": __version__,
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": arch,
                "KernelVersion": kernel,
            }
        )

    def _manager(self) -> ManagerRole:
        manager = self.daemon.manager
        if manager is None or manager.driver is None:
            raise ControlError("this node is not a swarm manager", 503)
        return manager

    async def agent_status(self, request: web.Request) -> web.Response:
        agent = self.daemon.agent
        if agent is None:
            raise ControlError("this node is not part of a swarm", 503)
        return web.json_response(agent.status())

    async def raft_status(self, request: web.Request) -> web.Response:
        return web.json_response(self._manager().status())

    async def raft_members(self, request: web.Request) -> web.Response:
        driver = self._manager().driver
        body = await json_object(request)
        action, raft_id = field(body, "action", str), field(body, "raft_id", int)
        if action in ("add-voter", "add-learner"):
            host, port = parse_host_port(field(body, "addr", str))
            add = driver.add_voter if action == "add-voter" else driver.add_learner
            await add(raft_id, host, port)
        elif action == "promote":
            await driver.promote(raft_id)
        elif action == "remove":
            await driver.remove(raft_id)
        else:
            raise ControlError(f"unknown membership action {action!r}: use add-voter, add-learner, promote or remove")
        return web.json_response(self._manager().status())

    async def raft_transfer(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        await self._manager().driver.transfer_leadership(field(body, "to", int))
        return web.json_response(self._manager().status())

    async def store_transact(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        operations = [Operation.decode(raw) for raw in field(body, "operations", list)]
        for operation in operations:
            if operation.action is not None and operation.kind in SWARM_KINDS:  # a version check writes nothing
                raise ControlError(
                    f"kind {operation.kind!r} belongs to the swarm; use {SWARM_KINDS[operation.kind]}", 400
                )
        timeout = field(body, "timeout", (int, float), None)
        committed = await self._manager().store.transact(operations, timeout=timeout)
        return web.json_response({"version": committed.version})

    def _linearizable(self, request: web.Request) -> bool:
        consistency = request.query.get("consistency", "linearizable")
        if consistency not in ("linearizable", "local"):
            raise ControlError("consistency must be 'linearizable' or 'local'")
        return consistency == "linearizable"

    def _readable(self, kind: str) -> str:
        if kind in UNREADABLE_KINDS:
            raise ControlError(f"kind {kind!r} {UNREADABLE_KINDS[kind]}", 400)
        return kind

    async def store_get(self, request: web.Request) -> web.Response:
        found = await self._manager().store.get(
            self._readable(request.match_info["kind"]), request.match_info["id"], self._linearizable(request)
        )
        if found is None:
            return _error(404, f"no {request.match_info['kind']} object {request.match_info['id']!r}")
        return web.json_response(_object(found))

    async def store_list(self, request: web.Request) -> web.Response:
        kind = self._readable(request.match_info["kind"])
        found = await self._manager().store.list(kind, self._linearizable(request))
        return web.json_response([_object(o) for o in found])

