"""`ApiClient`: an asyncio client of a node's API socket (used by the CLI, the tests, chaos and bench)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from ..errors import RaftswarmError


class ApiError(RaftswarmError):
    """The node answered with an error status; `status` is the HTTP code, the message is the node's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=socket_path), timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None) -> Any:
        async with self._session.request(method, f"http://raftswarm{path}", json=json, params=params) as response:
            if response.content_type == "application/json":
                body = await response.json()
            else:
                body = await response.text()
            if response.status >= 400:
                message = body.get("message", str(body)) if isinstance(body, dict) else str(body)
                raise ApiError(response.status, message)
            return body

    async def ping(self) -> str:
        return await self.request("GET", "/_ping")

    async def raft_status(self) -> dict[str, Any]:
        return await self.request("GET", "/raftswarm/raft")

    async def add_voter(self, raft_id: int, addr: str) -> dict[str, Any]:
        """Add a manager: as a learner, promoted once caught up."""
        return await self.request("POST", "/raftswarm/raft/members", {"action": "add-voter", "raft_id": raft_id, "addr": addr})

    async def add_learner(self, raft_id: int, addr: str) -> dict[str, Any]:
        return await self.request("POST", "/raftswarm/raft/members", {"action": "add-learner", "raft_id": raft_id, "addr": addr})

    async def promote(self, raft_id: int) -> dict[str, Any]:
        return await self.request("POST", "/raftswarm/raft/members", {"action": "promote", "raft_id": raft_id})

    async def remove_member(self, raft_id: int) -> dict[str, Any]:
        return await self.request("POST", "/raftswarm/raft/members", {"action": "remove", "raft_id": raft_id})

    async def transfer_leadership(self, raft_id: int) -> dict[str, Any]:
        return await self.request("POST", "/raftswarm/raft/transfer", {"to": raft_id})

    async def transact(self, operations: list[list[Any]], timeout: float | None = None) -> int:
        """Operations as `[action|None, kind, id, data, expect]` (see store.state.Operation)."""
        body = await self.request("POST", "/raftswarm/store/transact", {"operations": operations, "timeout": timeout})
        return body["version"]

    async def get(self, kind: str, object_id: str, consistency: str = "linearizable") -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"/raftswarm/store/{kind}/{object_id}", params={"consistency": consistency})
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, consistency: str = "linearizable") -> list[dict[str, Any]]:
        return await self.request("GET", f"/raftswarm/store/{kind}", params={"consistency": consistency})

    # Docker Engine API, swarm subset. Shapes are Docker's (Swarm, Node, Task, Info); query values are
    # strings because that is what goes on the wire.

    async def info(self) -> dict[str, Any]:
        return await self.request("GET", "/info")

    async def version(self) -> dict[str, Any]:
        return await self.request("GET", "/version")

    async def swarm_init(self, request: dict[str, Any]) -> str:
        """`request` is Docker's InitRequest; returns the new manager's node ID."""
        return await self.request("POST", "/swarm/init", request)

    async def swarm_join(self, request: dict[str, Any]) -> None:
        """`request` is Docker's JoinRequest (ListenAddr, AdvertiseAddr, RemoteAddrs, JoinToken, ...)."""
        await self.request("POST", "/swarm/join", request)

    async def swarm_leave(self, force: bool = False) -> None:
        await self.request("POST", "/swarm/leave", params={"force": _flag(force)})

    async def swarm_inspect(self) -> dict[str, Any]:
        return await self.request("GET", "/swarm")

    async def swarm_update(
        self,
        version: int,
        spec: dict[str, Any],
        rotate_worker_token: bool = False,
        rotate_manager_token: bool = False,
        rotate_manager_unlock_key: bool = False,
    ) -> None:
        params = {
            "version": str(version),
            "rotateWorkerToken": _flag(rotate_worker_token),
            "rotateManagerToken": _flag(rotate_manager_token),
            "rotateManagerUnlockKey": _flag(rotate_manager_unlock_key),
        }
        await self.request("POST", "/swarm/update", spec, params=params)

    async def swarm_unlock(self, unlock_key: str) -> None:
        await self.request("POST", "/swarm/unlock", {"UnlockKey": unlock_key})

    async def swarm_unlock_key(self) -> str:
        body = await self.request("GET", "/swarm/unlockkey")
        return body.get("UnlockKey", "")

    async def node_list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return await self.request("GET", "/nodes", params=_filters(filters))

    async def node_inspect(self, node_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/nodes/{node_id}")

    async def node_update(self, node_id: str, version: int, spec: dict[str, Any]) -> None:
        await self.request("POST", f"/nodes/{node_id}/update", spec, params={"version": str(version)})

    async def node_remove(self, node_id: str, force: bool = False) -> None:
        await self.request("DELETE", f"/nodes/{node_id}", params={"force": _flag(force)})

    async def task_list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return await self.request("GET", "/tasks", params=_filters(filters))

    async def service_inspect(self, service_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/services/{service_id}")

    async def service_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        """`spec` is Docker's ServiceSpec; returns {"ID": ..., "Warnings": [...]}."""
        return await self.request("POST", "/services/create", spec)

    async def service_list(
        self, filters: dict[str, list[str]] | None = None, status: bool = False
    ) -> list[dict[str, Any]]:
        """With `status`, each service carries ServiceStatus (running and desired task counts)."""
        params = _filters(filters) or {}
        if status:
            params["status"] = "true"
        return await self.request("GET", "/services", params=params or None)

    async def service_update(
        self, service_id: str, version: int, spec: dict[str, Any], rollback: bool = False
    ) -> dict[str, Any]:
        """Write the whole `spec` at `version` (a stale version is refused); with `rollback` the node goes back
        to the service's previous spec instead. Returns {"Warnings": [...]}."""
        params = {"version": str(version)}
        if rollback:
            params["rollback"] = "previous"
        return await self.request("POST", f"/services/{service_id}/update", spec, params=params) or {}

    async def service_remove(self, service_id: str) -> None:
        await self.request("DELETE", f"/services/{service_id}")

    async def secret_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        """`spec` is Docker's SecretSpec (Name, Labels, Data in base64); returns {"ID": ...}."""
        return await self.request("POST", "/secrets/create", spec)

    async def secret_list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return await self.request("GET", "/secrets", params=_filters(filters))

    async def secret_inspect(self, ref: str) -> dict[str, Any]:
        return await self.request("GET", f"/secrets/{ref}")

    async def secret_update(self, secret_id: str, version: int, spec: dict[str, Any]) -> None:
        """Only the labels of a secret may change."""
        await self.request("POST", f"/secrets/{secret_id}/update", spec, params={"version": str(version)})

    async def secret_remove(self, ref: str) -> None:
        await self.request("DELETE", f"/secrets/{ref}")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _filters(filters: dict[str, list[str]] | None) -> dict[str, str] | None:
    """Docker's `filters` query parameter: JSON of {key: [values]}; absent when there are none."""
    return {"filters": json.dumps(filters)} if filters else None
