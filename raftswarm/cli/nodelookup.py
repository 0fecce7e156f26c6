"""Looking up the swarm's nodes: NODE arguments resolved to node IDs, and which nodes are up.

A NODE argument is a full node ID, a unique ID prefix, a node name or hostname, or `self` (the node the CLI is
connected to); it is resolved against `GET /nodes` so that the node's endpoints are called by full ID.
"""

from __future__ import annotations

from typing import Any

from ..api.client import ApiClient
from .errors import CommandError
from .shapes import description_of, spec_of, status_of, swarm_info


class NodeResolver:
    """Turns NODE arguments into node IDs with one `GET /nodes` (and `GET /info` for `self`), matching in
    swarmkit's order: exact ID, then name or hostname, then unique ID prefix."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self._nodes: list[dict[str, Any]] | None = None

    async def nodes(self) -> list[dict[str, Any]]:
        if self._nodes is None:
            self._nodes = await self.api.node_list()
        return self._nodes

    async def resolve(self, ref: str) -> str:
        if ref == "self":
            node_id = swarm_info(await self.api.info()).get("NodeID", "")
            if not node_id:
                await self.nodes()  # the node's own error ("not a swarm manager") says more than ours
                raise CommandError("node ID not found in /info")
            return node_id
        nodes = await self.nodes()
        if any(n["ID"] == ref for n in nodes):
            return ref
        named = [n for n in nodes if ref in (spec_of(n).get("Name"), description_of(n).get("Hostname"))]
        candidates = named or [n for n in nodes if n["ID"].startswith(ref)]
        if len(candidates) == 1:
            return candidates[0]["ID"]
        if candidates:
            raise CommandError(f"Error: node {ref} is ambiguous ({len(candidates)} matches found)")
        raise CommandError(f"Error: No such node: {ref}")


async def active_node_ids(api: ApiClient) -> set[str]:
    """The IDs of the nodes that are not down (whose tasks docker counts as running)."""
    return {n["ID"] for n in await api.node_list() if status_of(n).get("State") != "down"}
