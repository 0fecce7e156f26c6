"""`ApiClient`: an asyncio client of a node's API socket (used by the CLI, the tests, chaos and bench)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..errors import RaftswarmError
from .stdcopy import RAW_STREAM, FrameDecoder


class ApiError(RaftswarmError):
    """The node answered with an error status; `status` is the HTTP code, the message is the node's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=socket_path), timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        async with self._session.request(
            method, f"http://raftswarm{path}", json=json, params=params, headers=headers
        ) as response:
            if response.content_type == "application/json":
                body = await response.json()
            else:
                body = await response.text()
            if response.status >= 400:
                raise _api_error(response.status, body)
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

    async def task_inspect(self, task_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/tasks/{task_id}")

    async def service_inspect(self, service_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/services/{service_id}")

    async def service_create(self, spec: dict[str, Any], registry_auth: str | None = None) -> dict[str, Any]:
        """`spec` is Docker's ServiceSpec; returns {"ID": ..., "Warnings": [...]}. `registry_auth` (an encoded
        X-Registry-Auth) goes with it to the nodes that run its tasks (`--with-registry-auth`)."""
        headers = {"X-Registry-Auth": registry_auth} if registry_auth else None
        return await self.request("POST", "/services/create", spec, headers=headers)

    async def service_list(
        self, filters: dict[str, list[str]] | None = None, status: bool = False
    ) -> list[dict[str, Any]]:
        """With `status`, each service carries ServiceStatus (running and desired task counts)."""
        params = _filters(filters) or {}
        if status:
            params["status"] = "true"
        return await self.request("GET", "/services", params=params or None)

    async def service_update(
        self,
        service_id: str,
        version: int,
        spec: dict[str, Any],
        rollback: bool = False,
        registry_auth: str | None = None,
    ) -> dict[str, Any]:
        """Write the whole `spec` at `version` (a stale version is refused); with `rollback` the node goes back
        to the service's previous spec instead. Returns {"Warnings": [...]}. `registry_auth` as for create;
        without it the service keeps the credentials it has."""
        params = {"version": str(version)}
        if rollback:
            params["rollback"] = "previous"
        headers = {"X-Registry-Auth": registry_auth} if registry_auth else None
        return await self.request("POST", f"/services/{service_id}/update", spec, params=params, headers=headers) or {}

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

    async def config_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        """`spec` is Docker's ConfigSpec (Name, Labels, Data in base64, Templating); returns {"ID": ...}."""
        return await self.request("POST", "/configs/create", spec)

    async def config_list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return await self.request("GET", "/configs", params=_filters(filters))

    async def config_inspect(self, ref: str) -> dict[str, Any]:
        return await self.request("GET", f"/configs/{ref}")

    async def config_update(self, config_id: str, version: int, spec: dict[str, Any]) -> None:
        """Only the labels of a config may change."""
        await self.request("POST", f"/configs/{config_id}/update", spec, params={"version": str(version)})

    async def config_remove(self, ref: str) -> None:
        await self.request("DELETE", f"/configs/{ref}")

    async def network_create(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /networks/create`: {"Id", "Warning"}."""
        return await self.request("POST", "/networks/create", body)

    async def network_list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return await self.request("GET", "/networks", params=_filters(filters))

    async def network_inspect(self, ref: str) -> dict[str, Any]:
        return await self.request("GET", f"/networks/{ref}")

    async def network_remove(self, ref: str) -> None:
        await self.request("DELETE", f"/networks/{ref}")

    def service_logs(self, ref: str, **options: Any) -> AsyncIterator[tuple[str, bytes]]:
        """`GET /services/{ref}/logs`; see `logs` for the options and what it yields."""
        return self.logs(f"/services/{ref}/logs", **options)

    def task_logs(self, ref: str, **options: Any) -> AsyncIterator[tuple[str, bytes]]:
        """`GET /tasks/{ref}/logs`; see `logs`."""
        return self.logs(f"/tasks/{ref}/logs", **options)

    async def logs(
        self,
        path: str,
        *,
        follow: bool = False,
        tail: str = "all",
        since: str = "",
        timestamps: bool = False,
        details: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> AsyncIterator[tuple[str, bytes]]:
        """A logs endpoint's frames as they arrive, one per line: ("stdout" | "stderr", the line as the node
        prefixed it), or ("system", message) for an error the node reports after the stream started. `since`
        goes as given (unix seconds[.nanoseconds], as docker's client sends it). With `follow` it runs until
        the caller stops iterating, so it has no overall time limit."""
        params = {"tail": tail}
        for name, on in (
            ("stdout", stdout),
            ("stderr", stderr),
            ("follow", follow),
            ("timestamps", timestamps),
            ("details", details),
        ):
            if on:
                params[name] = "1"
        if since:
            params["since"] = since
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout)
        async with self._session.get(f"http://raftswarm{path}", params=params, timeout=timeout) as response:
            if response.status >= 400:
                body = await response.json() if response.content_type == "application/json" else await response.text()
                raise _api_error(response.status, body)
            if response.content_type == RAW_STREAM:
                async for chunk in response.content.iter_any():
                    yield "stdout", chunk
                return
            decoder = FrameDecoder()
            async for chunk in response.content.iter_any():
                for frame in decoder.feed(chunk):
                    yield frame
            decoder.finish()

    async def json_stream(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The JSON messages of one of Docker's progress streams (pull, push, load, import) as they arrive. An
        error status raises `ApiError`; an error inside the stream is a message with "errorDetail", left to the
        caller. `body` (bytes or a file, sent as it is read) is the request body. No overall time limit: a pull
        or load of a large image takes as long as it takes."""
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout)
        async with self._session.request(
            method, f"http://raftswarm{path}", params=params, data=body, headers=headers, timeout=timeout
        ) as response:
            if response.status >= 400:
                error = await response.json() if response.content_type == "application/json" else await response.text()
                raise _api_error(response.status, error)
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)


def _api_error(status: int, body: Any) -> ApiError:
    return ApiError(status, body.get("message", str(body)) if isinstance(body, dict) else str(body))


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _filters(filters: dict[str, list[str]] | None) -> dict[str, str] | None:
    """Docker's `filters` query parameter: JSON of {key: [values]}; absent when there are none."""
    return {"filters": json.dumps(filters)} if filters else None
