"""A fake node API for CLI tests: an aiohttp server on a unix socket, in a background thread, that records
every request and answers with canned Docker-shaped JSON.

    engine = FakeEngine(tmp_path / "engine.sock")
    engine.reply("GET", "/swarm", {...})                 # every GET /swarm answers this
    engine.reply("GET", "/swarm", first, second)         # answers in turn; the last one repeats
    engine.fail("POST", "/swarm/init", 503, "This node is already part of a swarm.")
    engine.stream("GET", "/services/web/logs", frames)   # a raw body: a logs endpoint's stdcopy frames
    engine.requests                                      # [Request(method, path, query, body), ...]

A route with no reply answers 404 {"message": "page not found"}, as dockerd does for unknown paths.
`standard_swarm(engine)` loads a coherent three-node swarm (self is the leader).
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able; None means an empty body; bytes are sent as they are
    content_type: str = "application/json"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any

    @property
    def filters(self) -> Any:
        return json.loads(self.query["filters"]) if "filters" in self.query else None


@dataclass
class FakeEngine:
    socket_path: Path
    requests: list[Request] = field(default_factory=list)
    _replies: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def reply(self, method: str, path: str, *bodies: Any, status: int = 200) -> None:
        """Answer `method path` with `bodies` in turn (the last repeats); none means an empty 200/204."""
        self._replies[(method, path)] = [Reply(status, body) for body in bodies] or [Reply(status)]

    def stream(
        self, method: str, path: str, data: bytes, content_type: str = "application/vnd.docker.multiplexed-stream"
    ) -> None:
        """Answer `method path` with `data` as the body, of `content_type`."""
        self._replies[(method, path)] = [Reply(200, data, content_type)]

    def fail(self, method: str, path: str, status: int, message: str) -> None:
        self._replies[(method, path)] = [Reply(status, {"message": message})]

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)]

    def mutations(self) -> list[Request]:
        """Requests that would change something on a real node."""
        return [r for r in self.requests if r.method != "GET"]

    # -- server ---------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(Request(request.method, request.path, dict(request.query), body))
        queue = self._replies.get((request.method, request.path))
        if not queue:
            return web.json_response({"message": "page not found"}, status=404)
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if reply.body is None:
            return web.Response(status=reply.status)
        if isinstance(reply.body, bytes):
            return web.Response(body=reply.body, status=reply.status, content_type=reply.content_type)
        return web.json_response(reply.body, status=reply.status)

    def __enter__(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-engine", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.socket_path)).start()


# -- a canned swarm -----------------------------------------------------------------------------------------

SELF_ID = "9j3pbdwlkqgmce8o7j4fzmdcq"
MANAGER2_ID = "x1cb2gf6p3lq7t9r8wkzvn4ha"
WORKER_ID = "7hxn0bmvu2zqk3c4e5ryw6jtd"

WORKER_TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"
MANAGER_TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-7p73s1dx5in4tatdymyhg9hu2"
UNLOCK_KEY = "SWMKEY-1-7c37Cc8654o6p38HnroywCi19pllOnGtbdZEgtKxZu8"
CLUSTER_ID = "wfm3pqm9yb3x1kdv6t0qmjnwl"
TRUST_ROOT = "-----BEGIN CERTIFICATE-----\nMIIBazCCARCgAwIBAgIUfake\n-----END CERTIFICATE-----\n"
TLS_INFO = {
    "TrustRoot": TRUST_ROOT,
    "CertIssuerSubject": "MBMxETAPBgNVBAMTCHN3YXJtLWNh",
    "CertIssuerPublicKey": "MFkwEwYHKoZI",
}


def make_node(
    node_id: str,
    hostname: str,
    role: str,
    version: int,
    *,
    leader: bool = False,
    reachability: str = "reachable",
    addr: str = "10.0.0.1",
    state: str = "ready",
    availability: str = "active",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "ID": node_id,
        "Version": {"Index": version},
        "CreatedAt": "2024-05-01T10:00:00.123456789Z",
        "UpdatedAt": "2024-05-01T10:05:00Z",
        "Spec": {"Labels": labels or {}, "Role": role, "Availability": availability},
        "Description": {
            "Hostname": hostname,
            "Platform": {"Architecture": "x86_64", "OS": "linux"},
            "Resources": {"NanoCPUs": 4_000_000_000, "MemoryBytes": 8_589_934_592},
            "Engine": {"EngineVersion": "0.1.0"},
            "TLSInfo": TLS_INFO,
        },
        "Status": {"State": state, "Addr": addr},
    }
    if role == "manager":
        node["ManagerStatus"] = {"Leader": leader, "Reachability": reachability, "Addr": f"{addr}:2377"}
    return node


def standard_nodes() -> list[dict[str, Any]]:
    # Listed out of hostname order on purpose: `node ls` sorts naturally (node-2 before node-10).
    return [
        make_node(WORKER_ID, "node-10", "worker", 31, addr="10.0.0.10"),
        make_node(SELF_ID, "node-1", "manager", 12, leader=True, addr="10.0.0.1"),
        make_node(MANAGER2_ID, "node-2", "manager", 20, addr="10.0.0.2"),
    ]


def swarm_spec(autolock: bool = False) -> dict[str, Any]:
    return {
        "Name": "default",
        "Labels": {},
        "Orchestration": {"TaskHistoryRetentionLimit": 5},
        "Raft": {
            "SnapshotInterval": 10000,
            "KeepOldSnapshots": 0,
            "LogEntriesForSlowFollowers": 500,
            "ElectionTick": 10,
            "HeartbeatTick": 1,
        },
        "Dispatcher": {"HeartbeatPeriod": 5_000_000_000},
        "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000},
        "TaskDefaults": {},
        "EncryptionConfig": {"AutoLockManagers": autolock},
    }


def swarm_object(autolock: bool = False, worker_token: str = WORKER_TOKEN, rotating: bool = False) -> dict[str, Any]:
    return {
        "ID": CLUSTER_ID,
        "Version": {"Index": 42},
        "CreatedAt": "2024-05-01T10:00:00Z",
        "UpdatedAt": "2024-05-01T10:05:00Z",
        "Spec": swarm_spec(autolock),
        "TLSInfo": TLS_INFO,
        "RootRotationInProgress": rotating,
        "JoinTokens": {"Worker": worker_token, "Manager": MANAGER_TOKEN},
    }


def info(state: str = "active", control: bool = True, node_id: str = SELF_ID) -> dict[str, Any]:
    return {
        "ID": "raftswarm-node",
        "Name": "node-1",
        "ServerVersion": "0.1.0",
        "Swarm": {
            "NodeID": node_id,
            "NodeAddr": "10.0.0.1",
            "LocalNodeState": state,
            "ControlAvailable": control,
            "Error": "",
            "RemoteManagers": [{"NodeID": SELF_ID, "Addr": "10.0.0.1:2377"}],
            "Nodes": 3,
            "Managers": 2,
            "Cluster": {"ID": CLUSTER_ID, "Version": {"Index": 42}, "Spec": swarm_spec(), "TLSInfo": TLS_INFO},
        },
    }


def standard_swarm(engine: FakeEngine) -> None:
    """The node the CLI talks to is the leader of a three-node swarm: node-1 (leader, self), node-2 (manager),
    node-10 (worker)."""
    nodes = standard_nodes()
    engine.reply("GET", "/swarm", swarm_object())
    engine.reply("GET", "/info", info())
    engine.reply("GET", "/nodes", nodes)
    for node in nodes:
        engine.reply("GET", f"/nodes/{node['ID']}", node)
    engine.reply("GET", "/swarm/unlockkey", {"UnlockKey": UNLOCK_KEY})
