"""raftswarm as a library: a one-manager swarm in this process, its replicated store used as a
linearizable register with compare-and-set, a watch following the changes, and the HTTP API client.

    python3 examples/embed.py
"""

from __future__ import annotations

import asyncio
import socket
import tempfile

from raftswarm.embedding import EmbeddedNode
from raftswarm.store import Conflict, create, update


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="raftswarm-embed-") as state_dir:
        async with EmbeddedNode(state_dir, listen_addr=f"127.0.0.1:{free_port()}") as node:
            print("node", await node.init_swarm())
            while not node.is_leader:
                await asyncio.sleep(0.05)
            print("leader:", node.is_leader)

            changes = []

            async def follow() -> None:
                async for change in node.store.watch(since=0):
                    if change.object.kind == "registers":
                        changes.append((change.action.name.lower(), change.object.data["value"]))

            watcher = asyncio.create_task(follow())
            await node.store.transact([create("registers", "x", {"value": 1})])
            current = await node.store.get("registers", "x")
            await node.store.transact([update("registers", "x", {"value": 2}, expect=current.version)])
            try:
                await node.store.transact([update("registers", "x", {"value": 3}, expect=current.version)])
            except Conflict:
                print("compare-and-set at a stale version: refused")
            print("x =", (await node.store.get("registers", "x")).data["value"])
            await asyncio.sleep(0.1)
            watcher.cancel()
            print("watched:", changes)

            async with node.client() as api:
                print("nodes:", [n["Description"]["Hostname"] for n in await api.node_list()])


if __name__ == "__main__":
    asyncio.run(main())
