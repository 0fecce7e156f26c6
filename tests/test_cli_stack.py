"""`raftswarm stack deploy/ls/services/ps/rm` on a real swarm (1 manager, 1 worker, loopback): a compose file
becomes namespaced networks, secrets and services; a redeploy changes only what changed; `--prune` removes
what the file dropped; a broken file names the file and key and creates nothing; `rm` removes it all.
"""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner
from test_services import eventually

from raftswarm.cli.main import main
from raftswarm.localcluster.swarm import SwarmCluster
from raftswarm.runtime.containers import unavailable

pytestmark = pytest.mark.slow
needs_containers = pytest.mark.skipif(
    unavailable() is not None, reason=f"tasks cannot run as containers here: {unavailable()}"
)

STACK = """
services:
  api:
    image: busybox
    command: ["sleep", "1000"]
    networks: [back]
    secrets: [token]
    deploy:
      replicas: ${API_REPLICAS:-2}
  worker:
    image: busybox
    command: ["sleep", "1000"]
networks:
  back:
    driver: overlay
secrets:
  token:
    file: ./token.txt
"""


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("clusters")
    # --init: the tasks' `sleep` stops at SIGTERM, so updates and removals do not wait out grace periods.
    cluster = asyncio.run(
        SwarmCluster.up(
            "stk", managers=1, workers=1, base_dir=base, network="loopback", heartbeat_period=0.5, init=True
        )
    )
    yield cluster
    cluster.down()


def cli(swarm: SwarmCluster, *args: str, env: dict[str, str] | None = None):
    return CliRunner(env=env).invoke(main, ["-H", f"unix://{swarm.node('manager1').socket}", *args])


async def run(swarm: SwarmCluster, *args: str, env: dict[str, str] | None = None):
    return await asyncio.to_thread(cli, swarm, *args, env=env)


@needs_containers
async def test_a_stack_is_deployed_redeployed_pruned_and_removed(swarm, tmp_path):
    (tmp_path / "token.txt").write_text("s3cr3t")
    compose = tmp_path / "stack.yml"
    compose.write_text(STACK)
    deployed = await run(swarm, "stack", "deploy", "-c", str(compose), "shop")
    assert deployed.exit_code == 0, deployed.output
    assert "verify: Service" in deployed.output and "converged" in deployed.output  # waited, as docker shows it
    deployed = await run(swarm, "stack", "rm", "shop")
    deployed = await run(swarm, "stack", "deploy", "--detach", "-c", str(compose), "shop")
    assert deployed.exit_code == 0, deployed.output
    assert deployed.output.splitlines() == [
        "Creating network shop_back",
        "Creating network shop_default",
        "Creating secret shop_token",
        "Creating service shop_api",
        "Creating service shop_worker",
    ]
    assert (await run(swarm, "stack", "ls")).output.split()[2:] == ["shop", "2"]
    services = (await run(swarm, "stack", "services", "shop", "--format", "{{.Name}} {{.Replicas}}")).output

    async def running() -> bool:
        shown = (await run(swarm, "stack", "ps", "shop", "--format", "{{.Name}} {{.CurrentState}}")).output
        return shown.count("Running") == 3

    await eventually(running, "3 running tasks", within=30)
    assert sorted(line.split()[0] for line in services.splitlines()) == ["shop_api", "shop_worker"]

    async with swarm.client(swarm.node("manager1")) as api:
        images = [s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] for s in await api.service_list()]
    assert images and all(image.startswith("busybox:latest@sha256:") for image in images)  # pinned, as docker does

    again = await run(swarm, "stack", "deploy", "--detach", "-c", str(compose), "shop")
    assert again.exit_code == 0 and again.output == ""  # nothing changed, nothing touched

    compose.write_text(STACK.replace("  worker:\n    image: busybox\n    command: [\"sleep\", \"1000\"]\n", ""))
    changed = await run(swarm, "stack", "deploy", "--detach", "--prune", "-c", str(compose), "shop", env={"API_REPLICAS": "3"})
    assert changed.exit_code == 0, changed.output
    assert [line.split(" (")[0] for line in changed.output.splitlines()] == ["Updating service shop_api", "Removing service shop_worker"]

    removed = await run(swarm, "stack", "rm", "shop")
    assert removed.exit_code == 0, removed.output
    assert "Removing service shop_api" in removed.output and "Removing secret shop_token" in removed.output
    assert (await run(swarm, "stack", "ls")).output.split() == ["NAME", "SERVICES"]


async def test_a_broken_compose_file_names_the_file_and_key_and_creates_nothing(swarm, tmp_path):
    compose = tmp_path / "broken.yml"
    compose.write_text("services:\n  web:\n    image: busybox\n    deploy:\n      replicas: many\n")
    refused = await run(swarm, "stack", "deploy", "-c", str(compose), "bad")
    assert refused.exit_code != 0
    assert str(compose) in refused.output and "services.web.deploy.replicas" in refused.output
    assert "bad" not in (await run(swarm, "network", "ls")).output
    assert (await run(swarm, "stack", "ls")).output.split() == ["NAME", "SERVICES"]
