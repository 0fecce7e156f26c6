"""The README's demo, after `raftswarm cluster up` and `raftswarm stack deploy -c examples/demo-stack.yml demo`:
waits for the stack's 3 web replicas, then asks every node's published port 8080 and prints who answered
(the routing mesh sends each request to a replica on any node).

It also shows raftswarm used as a library: `SwarmCluster` finds the local cluster, `ApiClient` talks to a
node's API socket.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request

from raftswarm.api.client import ApiClient
from raftswarm.localcluster.swarm import SwarmCluster


async def wait_for_replicas(api: ApiClient, service: str, count: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        tasks = await api.task_list({"service": [service], "desired-state": ["running"]})
        if sum(t["Status"]["State"] == "running" for t in tasks) == count:
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"{service} did not reach {count} running replicas; see `raftswarm service ps {service}`")


def ask(address: str) -> str:
    for _ in range(20):  # the servers may still be starting
        try:
            with urllib.request.urlopen(f"http://{address}:8080/", timeout=3) as response:
                return response.read().decode().strip()
        except OSError as exc:
            error = exc
            time.sleep(0.5)
    return f"no answer: {error}"


async def main() -> int:
    cluster = SwarmCluster.load()
    async with cluster.client(cluster.managers[0]) as api:
        await wait_for_replicas(api, "demo_web", 3)
    print("demo_web: 3 replicas running")
    if cluster.network != "netns":
        print("this cluster runs on loopback addresses (not root): no overlay data plane, so no routing mesh to show")
        return 0
    for node in cluster.nodes:
        print(f"http://{node.ip}:8080/ ({node.name}) -> {ask(node.ip)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
