"""`raftswarm stack deploy/ls/services/ps/rm` on a real swarm (1 manager, 1 worker, loopback): a compose file
becomes namespaced networks, secrets and services; a redeploy changes only what changed; `--prune` removes
what the file dropped; a broken file names the file and key and creates nothing; `rm` removes it all. A named
volume, a config, a healthcheck, a stop signal and an update_config all reach the tasks and act there.
"""

from __future__ import annotations

import asyncio
import json
import re

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
    assert deployed.stdout.splitlines() == [
        "Creating network shop_back",
        "Creating network shop_default",
        "Creating secret shop_token",
        "Creating service shop_api",
        "Creating service shop_worker",
    ]
    # The node's Warnings, each once: the stack's namespace label on the containers is not kept.
    assert deployed.stderr.splitlines() == [
        "TaskTemplate.ContainerSpec.Labels is ignored: container labels are not kept: raftswarm has no container API"
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

    # As docker/cli does, a secret that exists is updated with the file's spec: new content is refused.
    (tmp_path / "token.txt").write_text("changed")
    refused = await run(swarm, "stack", "deploy", "--detach", "-c", str(compose), "shop")
    assert refused.exit_code != 0
    assert "failed to update secret shop_token: " in refused.output, refused.output
    assert "only updates to Labels are allowed" in refused.output
    (tmp_path / "token.txt").write_text("s3cr3t")

    compose.write_text(STACK.replace("  worker:\n    image: busybox\n    command: [\"sleep\", \"1000\"]\n", ""))
    changed = await run(swarm, "stack", "deploy", "--detach", "--prune", "-c", str(compose), "shop", env={"API_REPLICAS": "3"})
    assert changed.exit_code == 0, changed.output
    assert [line.split(" (")[0] for line in changed.stdout.splitlines()] == ["Updating service shop_api", "Removing service shop_worker"]

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


# The task prints the volume's history (with what it adds: the config's content) and what the volume holds, and
# records in it how it was stopped; its healthcheck leaves a mark in the volume too.
VOLUME_STACK = """
services:
  app:
    image: busybox
    command:
      - sh
      - -c
      - |
        echo "start: $$(cat /etc/app/settings.conf)" >> /data/history
        [ -f /etc/app/settings.conf ] && echo "the config is a file"
        cat /data/history
        ls /data
        trap 'echo "stopped by SIGUSR1" >> /data/history; exit 0' USR1
        while true; do sleep 1; done
    stop_signal: SIGUSR1
    stop_grace_period: 30s
    volumes: [data:/data]
    configs: [{source: settings, target: /etc/app/settings.conf, mode: 0440}]
    healthcheck:
      test: test -f /etc/app/settings.conf && touch /data/probed
      interval: 1s
      timeout: 10s
      retries: 3
    deploy:
      placement: {constraints: [node.role == worker]}  # one node, so that its local volume is the one used
      update_config: {parallelism: 1, delay: 0s, order: stop-first}
volumes:
  data: {labels: {purpose: history}}
configs:
  settings: {file: ./settings.conf}
"""


@needs_containers
async def test_a_named_volume_outlives_a_forced_update_and_the_stop_signal_and_healthcheck_act(swarm, tmp_path):
    (tmp_path / "settings.conf").write_text("colour=blue\n")
    compose = tmp_path / "stack.yml"
    compose.write_text(VOLUME_STACK)
    deployed = await run(swarm, "stack", "deploy", "-c", str(compose), "vol")
    assert deployed.exit_code == 0, deployed.output  # converged: the task is running, so its healthcheck passed
    assert deployed.stdout.splitlines()[:2] == ["Creating network vol_default", "Creating config vol_settings"]

    async def logs() -> str:
        return (await run(swarm, "service", "logs", "--raw", "vol_app")).output

    async def first_started() -> bool:
        return "start: colour=blue" in await logs()

    await eventually(first_started, "the first task's output", within=30)
    assert "the config is a file" in await logs()

    forced = await run(swarm, "service", "update", "--force", "--detach", "vol_app")
    assert forced.exit_code == 0, forced.output

    async def second_started() -> re.Match[str] | None:
        # The new task's view of the volume: the first task's start (and, if it had stopped by then, how), its own
        # start, and the mark the first task's healthcheck probes left.
        pattern = r"start: colour=blue\n(stopped by SIGUSR1\n)?start: colour=blue\nhistory\nprobed\n"
        return re.search(pattern, await logs())

    await eventually(second_started, "the second task's output", within=60)

    async def first_task_ended() -> dict | None:
        async with swarm.client(swarm.node("manager1")) as api:
            tasks = await api.task_list({"service": ["vol_app"]})
        ended = [task for task in tasks if task["Status"]["State"] == "shutdown"]
        return ended[0]["Status"] if ended and "ExitCode" in ended[0]["Status"].get("ContainerStatus", {}) else None

    # Stopped by SIGUSR1, whose trap exits 0 (SIGTERM would have killed the shell: 143).
    status = await eventually(first_task_ended, "the first task's exit", within=60)
    assert status["ContainerStatus"]["ExitCode"] == 0, status

    worker = ["-H", f"unix://{swarm.node('worker1').socket}"]
    volume = await asyncio.to_thread(CliRunner().invoke, main, [*worker, "volume", "inspect", "vol_data"])
    assert volume.exit_code == 0, volume.output
    assert json.loads(volume.output)[0]["Labels"] == {"purpose": "history", "com.docker.stack.namespace": "vol"}

    again = await run(swarm, "stack", "deploy", "--detach", "-c", str(compose), "vol")
    assert again.exit_code == 0 and again.output == ""  # the forced update is kept, nothing else changed

    removed = await run(swarm, "stack", "rm", "vol")
    assert removed.exit_code == 0, removed.output
