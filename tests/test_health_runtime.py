"""Healthcheck probes in real containers (crun under conmon, in process, as tests/test_runtime.py runs them):
`Container.exec` runs a command inside the running container as its own process does and returns its exit code
and output; one that outlives its timeout, or whose caller gives up, is killed with what it started; a task's
effective check comes from its image's HEALTHCHECK under its spec's; `watch` follows a container to healthy or
unhealthy.

Every test's teardown releases its containers and checks that nothing of them is left (see test_runtime.Tasks).
Needs root with CAP_SYS_ADMIN, crun and conmon.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from raftswarm.images import archive, samples
from raftswarm.images.store import ImageStore
from raftswarm.runtime import containers, health
from raftswarm.runtime.containers import ContainerRuntime
from raftswarm.runtime.health import Health, HealthStatus

from test_runtime import WAIT, Tasks, until_logged

_UNAVAILABLE = containers.unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"containers cannot run here: {_UNAVAILABLE}")

SECOND = 1_000_000_000
IMAGE_CHECK = {"Test": ["CMD-SHELL", "test -f /tmp/ready"], "Interval": 7 * SECOND, "Retries": 4}


def busybox_with(reference: str, **config: Any) -> bytes:
    """A docker-archive (what `docker load` reads) of the busybox sample tagged `reference`, its image config
    given `config` (say a Healthcheck, which `docker import` cannot set)."""
    with tarfile.open(samples.busybox().tarball) as sample:
        (entry,) = json.loads(sample.extractfile("manifest.json").read())
        image_config = json.loads(sample.extractfile(entry["Config"]).read())
        layers = {name: sample.extractfile(name).read() for name in entry["Layers"]}
    image_config["config"].update(config)
    raw_config = json.dumps(image_config).encode()
    config_name = f"blobs/sha256/{hashlib.sha256(raw_config).hexdigest()}"
    manifest = [{"Config": config_name, "RepoTags": [reference], "Layers": entry["Layers"]}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as built:
        for name, data in {"manifest.json": json.dumps(manifest).encode(), config_name: raw_config, **layers}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            built.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> ImageStore:
    """busybox:latest, and checked:latest: busybox with IMAGE_CHECK as its HEALTHCHECK."""
    store = ImageStore(tmp_path_factory.mktemp("images"))
    with open(samples.busybox().tarball, "rb") as tarball:
        archive.load(store, tarball)
    archive.load(store, io.BytesIO(busybox_with("checked:latest", Healthcheck=IMAGE_CHECK)))
    return store


@pytest.fixture
async def tasks(tmp_path, images):
    tracker = Tasks(ContainerRuntime(tmp_path / "rt", images), images)
    yield tracker
    await tracker.close()


def processes_running(argv: list[bytes]) -> list[int]:
    """Live processes whose command line is exactly `argv`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:-1] == argv:
                    found.append(int(entry))
            except OSError:
                pass
    return found


# -- Container.exec ----------------------------------------------------------------------------------------


async def test_exec_returns_the_exit_code_and_stdout_and_stderr_of_a_command_run_as_the_containers_process(tasks):
    container = await tasks.start(tasks.task("sleep", "100", User="nobody", Dir="/tmp", Env=["GREETING=hi"]))
    show = 'echo "$GREETING $(id -u) $(pwd) $(hostname)"; echo oops >&2; exit 3'
    code, output = await container.exec(["sh", "-c", show], WAIT, output_limit=1000)
    assert code == 3
    # Both streams, each in its order (crun copies them apart, as dockerd does a probe's).
    assert sorted(output.splitlines()) == sorted([f"hi 65534 /tmp {container.container_id[:12]}".encode(), b"oops"])
    # In the container's PID namespace: the task's own process is PID 1 there.
    code, output = await container.exec(["cat", "/proc/1/cmdline"], WAIT, output_limit=1000)
    assert (code, output) == (0, b"sleep\x00100\x00")


async def test_exec_keeps_the_first_bytes_of_the_output_and_a_chatty_command_still_ends(tasks):
    container = await tasks.start(tasks.task("sleep", "100"))
    code, output = await container.exec(["sh", "-c", "yes | head -c 1000000"], WAIT, output_limit=10)
    assert (code, output) == (0, b"y\ny\ny\ny\ny\n")


async def test_exec_kills_a_command_at_its_timeout_with_what_it_started(tasks):
    container = await tasks.start(tasks.task("sleep", "100"))
    began = time.monotonic()
    code, output = await container.exec(["sh", "-c", "echo waiting; sleep 4242 & sleep 4343"], 0.5, output_limit=100)
    took = time.monotonic() - began
    assert (code, output) == (None, b"waiting\n")
    assert 0.5 <= took < 0.5 + WAIT
    assert processes_running([b"sleep", b"4242"]) == processes_running([b"sleep", b"4343"]) == []
    assert [name for name in os.listdir(container.directory) if name.startswith("exec-")] == []  # its PID file


async def test_exec_given_up_by_its_caller_kills_the_command(tasks):
    container = await tasks.start(tasks.task("sleep", "100"))
    probing = asyncio.create_task(container.exec(["sleep", "4444"], WAIT, output_limit=100))
    async with asyncio.timeout(WAIT):
        while not processes_running([b"sleep", b"4444"]):
            await asyncio.sleep(0.01)
    probing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probing
    assert processes_running([b"sleep", b"4444"]) == []


async def test_exec_in_a_container_that_ended_fails_with_the_runtimes_reason(tasks):
    container = await tasks.start(tasks.task("true"))
    assert await asyncio.wait_for(container.wait(), WAIT) == 0
    code, output = await container.exec(["true"], WAIT, output_limit=1000)
    assert code not in (0, None) and b"is not running" in output


# -- a task's check, followed ------------------------------------------------------------------------------


async def test_a_tasks_check_is_its_images_healthcheck_under_its_specs(tasks, images):
    image_only = tasks.task("sleep", "100", image="checked:latest")
    assert health.task_healthcheck(image_only, images) == health.Healthcheck(
        ("CMD-SHELL", "test -f /tmp/ready"), interval=7.0, retries=4
    )
    merged = tasks.task("sleep", "100", image="checked:latest", Healthcheck={"Interval": SECOND, "Retries": 0})
    assert health.task_healthcheck(merged, images) == health.Healthcheck(
        ("CMD-SHELL", "test -f /tmp/ready"), interval=1.0, retries=4
    )
    disabled = tasks.task("sleep", "100", image="checked:latest", Healthcheck={"Test": ["NONE"]})
    assert health.task_healthcheck(disabled, images) is None
    assert health.task_healthcheck(tasks.task("sleep", "100"), images) is None


async def test_watch_finds_a_container_healthy_once_its_check_passes_and_unhealthy_once_it_keeps_failing(tasks, images):
    task = tasks.task(
        "sh", "-c", "echo up; sleep 1; touch /tmp/ready; sleep 2; rm /tmp/ready; exec sleep 100",
        image="checked:latest",
        # Its probes fail for a second at first: the start period spares them, not the failures after healthy.
        Healthcheck={"Interval": SECOND // 10, "StartInterval": SECOND // 10, "StartPeriod": 60 * SECOND, "Retries": 2},
    )
    container = await tasks.start(task)
    await until_logged(container, b"up")
    check = health.task_healthcheck(task, images)
    assert check is not None
    followed = Health(check, health.started_at(container.pid) or time.monotonic())
    seen: list[tuple[HealthStatus, float]] = []
    began = time.monotonic()

    def changed(status: HealthStatus) -> None:
        seen.append((status, time.monotonic() - began))

    await asyncio.wait_for(health.watch(container, followed, changed), WAIT)
    assert [status for status, _ in seen] == [HealthStatus.HEALTHY, HealthStatus.UNHEALTHY]
    assert 0.5 < seen[0][1] < seen[1][1]  # healthy once the file is there, unhealthy once it is gone
    assert followed.failing_streak == 2 and followed.last is not None and followed.last.exit_code == 1


async def test_a_probe_that_times_out_counts_as_a_failure_and_leaves_no_process(tasks):
    container = await tasks.start(tasks.task("sleep", "100"))
    check = health.Healthcheck(("CMD", "sleep", "4545"), interval=0.05, timeout=0.2, retries=2)
    followed = Health(check, started_at=time.monotonic())
    seen: list[HealthStatus] = []
    await asyncio.wait_for(health.watch(container, followed, seen.append), WAIT)
    assert seen == [HealthStatus.UNHEALTHY]
    assert followed.last is not None
    assert (followed.last.exit_code, followed.last.output) == (-1, "Health check exceeded timeout (0.2s)")
    assert followed.last.end - followed.last.start >= 0.2
    assert processes_running([b"sleep", b"4545"]) == []


async def test_started_at_is_when_the_containers_first_process_started(tasks):
    before = time.monotonic()
    container = await tasks.start(tasks.task("sleep", "100"))
    after = time.monotonic()
    tick = 1 / os.sysconf("SC_CLK_TCK")  # the kernel's resolution of a process's start time
    assert before - tick <= health.started_at(container.pid) <= after
    assert health.started_at(int(Path("/proc/sys/kernel/pid_max").read_text())) is None  # no such process
