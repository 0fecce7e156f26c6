"""Healthchecks on a real swarm (1 manager, 1 worker, real node processes), as a user of Docker's swarm sees
them: a task with a check is `starting` until a probe passes and only then `running`, so a service converges
and an update moves on only once its tasks are healthy; the check comes from the image's HEALTHCHECK unless the
spec says otherwise (`--no-healthcheck`); a task whose check fails is stopped, fails in Docker's words and is
replaced; an update to a spec whose tasks turn unhealthy counts that as a failure; an agent that is killed and
started again goes on probing the tasks it takes back.

Probes run every 0.2 s here (the spec's Interval; Docker's default is 30 s), so a check takes effect in under a
second. Needs root with CAP_SYS_ADMIN, crun and conmon. The worker runs with `--init` (tini as PID 1), so a
stopped `sleep` ends at SIGTERM: exit code 143.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from raftswarm.api.client import ApiClient
from raftswarm.localcluster.swarm import ClusterNode, SwarmCluster
from raftswarm.objects.times import parse_rfc3339
from raftswarm.runtime.containers import unavailable

from test_agent import processes_with
from test_health_runtime import busybox_with
from test_services import converged, eventually, ids_by_name, spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=f"tasks cannot run as containers here: {unavailable()}"),
]

HEARTBEAT = 2.0
"""Long enough that a worker restarted by a test is back before the swarm marks it down (3 heartbeats)."""
SECOND = 1_000_000_000
PROBE = SECOND // 5
UNHEALTHY = "dockerexec: unhealthy container"
READY_CHECK = {
    "Test": ["CMD-SHELL", "test -f /tmp/ready"], "Interval": PROBE, "StartInterval": PROBE,
    "StartPeriod": 120 * SECOND, "Retries": 2,
}
"""checked:1's HEALTHCHECK: healthy once /tmp/ready exists; failures count only after a first success (the start
period is longer than any test)."""


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("clusters")
    cluster = asyncio.run(
        SwarmCluster.up(
            "hlt", managers=1, workers=1, base_dir=base, network="loopback", heartbeat_period=HEARTBEAT, init=True
        )
    )
    asyncio.run(_load(cluster.node("worker1"), busybox_with("checked:1", Healthcheck=READY_CHECK)))
    yield cluster
    cluster.down()


async def _load(node: ClusterNode, archive: bytes) -> None:
    """`docker load` of `archive` into `node`'s image store."""
    connector = aiohttp.UnixConnector(path=str(node.socket))
    async with aiohttp.ClientSession(connector=connector) as session, session.post(
        "http://raftswarm/images/load", data=archive
    ) as answer:
        text = await answer.text()
    assert answer.status == 200 and "Loaded image: checked:1" in text, text


@pytest.fixture
def marker() -> str:
    return f"RAFTSWARM_HEALTH_TEST={uuid.uuid4().hex}"


def api(swarm: SwarmCluster) -> ApiClient:
    return swarm.client(swarm.node("manager1"))


async def on_worker(swarm: SwarmCluster, name: str, script: str, marker: str, **template) -> dict:
    worker = (await ids_by_name(swarm))["worker1"]
    made = spec(name, ["sh", "-c", script], Placement={"Constraints": [f"node.id=={worker}"]}, **template)
    made["TaskTemplate"]["ContainerSpec"]["Env"] = [marker]
    return made


async def states(client: ApiClient, service: str) -> list[str]:
    return [t["Status"]["State"] for t in await client.task_list({"service": [service]})]


async def the_task(client: ApiClient, service: str, state: str) -> dict | None:
    found = [t for t in await client.task_list({"service": [service]}) if t["Status"]["State"] == state]
    return found[0] if found else None


async def test_a_task_with_the_images_check_is_starting_until_its_first_probe_passes_then_running(swarm, marker):
    async with api(swarm) as client:
        made = await on_worker(swarm, "ready", "exec sleep 1000", marker)
        made["TaskTemplate"]["ContainerSpec"]["Image"] = "checked:1"
        await client.service_create(made)
        starting = await eventually(lambda: the_task(client, "ready", "starting"), "the task to start")
        await asyncio.sleep(2)  # 10 probes, all failing: not running, and (start period) not failed either
        assert await states(client, "ready") == ["starting"]
        assert await converged(client, "ready", 1) is None

        # From the host, into the task's root filesystem (through one of its processes: a starting task's status
        # has no PID yet).
        Path(f"/proc/{processes_with(marker)[0]}/root/tmp/ready").touch()
        made_ready = time.time()
        running = await eventually(lambda: converged(client, "ready", 1), "the task to run once healthy")
        assert running[0]["ID"] == starting["ID"]
        assert parse_rfc3339(running[0]["Status"]["Timestamp"]).timestamp() >= made_ready - 0.01
        await client.service_remove("ready")
        await eventually(lambda: _none_left(marker), "the task's processes to end")


async def test_no_healthcheck_turns_the_images_check_off(swarm, marker):
    async with api(swarm) as client:
        made = await on_worker(swarm, "unchecked", "exec sleep 1000", marker)
        made["TaskTemplate"]["ContainerSpec"].update({"Image": "checked:1", "Healthcheck": {"Test": ["NONE"]}})
        await client.service_create(made)
        await eventually(lambda: converged(client, "unchecked", 1), "the task to run without a check")
        await client.service_remove("unchecked")


async def test_a_task_that_turns_unhealthy_is_stopped_failed_in_dockers_words_and_replaced(swarm, marker):
    async with api(swarm) as client:
        check = {"Test": ["CMD", "false"], "Interval": PROBE, "Retries": 2}
        made = await on_worker(swarm, "sick", "exec sleep 1000", marker, RestartPolicy={"Delay": SECOND // 10})
        made["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = check
        await client.service_create(made)
        failed = await eventually(lambda: the_task(client, "sick", "failed"), "the unhealthy task to fail")
        status = failed["Status"]
        assert status["Err"] == f"task: non-zero exit (143): {UNHEALTHY}"  # SIGTERM ended it: stopped, not crashed
        assert status["ContainerStatus"]["ExitCode"] == 143
        assert status["Message"] == "starting"  # never healthy, so never running

        async def replaced() -> list[dict] | None:
            tasks = await client.task_list({"service": ["sick"]})
            return tasks if len(tasks) >= 2 else None

        tasks = await eventually(replaced, "a replacement task in the same slot")
        assert {t["Slot"] for t in tasks} == {failed["Slot"]}
        await client.service_remove("sick")
        await eventually(lambda: _none_left(marker), "the tasks' processes, probes included, to end")


async def test_an_update_to_a_spec_whose_tasks_turn_unhealthy_is_paused_as_a_failure(swarm, marker):
    async with api(swarm) as client:
        made = await on_worker(swarm, "rollout", "exec sleep 1000", marker, RestartPolicy={"Delay": SECOND // 10})
        made["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = {"Test": ["CMD", "true"], "Interval": PROBE}
        made["UpdateConfig"] = {"FailureAction": "pause", "Monitor": 5 * SECOND}
        await client.service_create(made)
        await eventually(lambda: converged(client, "rollout", 1), "the healthy task to run")
        service = await client.service_inspect("rollout")
        broken = {**service["Spec"]}
        broken["TaskTemplate"] = {**broken["TaskTemplate"], "ContainerSpec": {
            **broken["TaskTemplate"]["ContainerSpec"], "Healthcheck": {"Test": ["CMD", "false"], "Interval": PROBE, "Retries": 1}
        }}
        await client.service_update(service["ID"], service["Version"]["Index"], broken)

        async def paused() -> dict | None:
            status = (await client.service_inspect("rollout")).get("UpdateStatus") or {}
            return status if status.get("State") == "paused" else None

        status = await eventually(paused, "the update to pause", within=60)
        failed = [t for t in await client.task_list({"service": ["rollout"]}) if t["Status"]["State"] == "failed"]
        assert failed and all(t["Status"]["Err"].endswith(UNHEALTHY) for t in failed)
        assert any(f"due to failure or early termination of task {t['ID']}" in status["Message"] for t in failed)
        await client.service_remove("rollout")
        await eventually(lambda: _none_left(marker), "the tasks' processes to end")


async def test_an_agent_started_again_goes_on_probing_the_task_it_takes_back(swarm, marker):
    worker = swarm.node("worker1")
    async with api(swarm) as client:
        made = await on_worker(swarm, "kept", "touch /tmp/ready; exec sleep 1000", marker, RestartPolicy={"Condition": "none"})
        # The image's check, with a start period of 1 ms (0 would take the image's): every failure counts.
        made["TaskTemplate"]["ContainerSpec"].update({"Image": "checked:1", "Healthcheck": {"StartPeriod": 1_000_000}})
        await client.service_create(made)
        (task,) = await eventually(lambda: converged(client, "kept", 1), "the task to run once healthy")

        swarm.kill(worker)
        swarm.start(worker)
        await swarm.wait_ready(worker)
        async with swarm.client(worker) as node_client:
            await eventually(lambda: _agent_holds(node_client, task["ID"]), "the restarted agent to take the task back")
        assert await states(client, "kept") == ["running"]

        Path(f"/proc/{task['Status']['ContainerStatus']['PID']}/root/tmp/ready").unlink()
        failed = await eventually(lambda: the_task(client, "kept", "failed"), "the new agent's probes to fail it")
        assert failed["ID"] == task["ID"]
        assert failed["Status"]["Err"] == f"task: non-zero exit (143): {UNHEALTHY}"
        assert failed["Status"]["Message"] == "started"
        await client.service_remove("kept")
        await eventually(lambda: _none_left(marker), "the task's processes to end")


async def _agent_holds(node_client: ApiClient, task_id: str) -> bool:
    return (await node_client.request("GET", "/raftswarm/agent"))["tasks"].get(task_id) == "running"


async def _none_left(marker: str) -> bool:
    return not processes_with(marker)
