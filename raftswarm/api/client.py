"""`ApiClient`: an asyncio client of a node's API socket (used by the CLI, the tests, chaos and bench)."""

from __future__ import annotations

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
