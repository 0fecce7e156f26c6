"""A task's configs in its container, in process and without a cluster (crun under conmon, the busybox sample):
each config is a read-only file at its target, any path in the container, with its owner and mode, even where
the image has no such directory or the root file system is read-only; a templated one is expanded for the task;
its bytes live in memory only; a target that cannot be made rejects the task with a message and leaves nothing.

Every test's teardown releases what it started and checks that nothing is left (`test_runtime.Tasks`).
Needs root with CAP_SYS_ADMIN, crun and conmon.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_runtime import WAIT, Tasks, _files_holding, _mountinfo, lines_of, output_of, secret_ref

from raftswarm.images import archive, samples
from raftswarm.images.store import ImageStore
from raftswarm.runtime import containers
from raftswarm.runtime.containers import Container, ContainerRuntime, TaskRejected

_UNAVAILABLE = containers.unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"containers cannot run here: {_UNAVAILABLE}")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> ImageStore:
    """The node's image store, with the busybox sample."""
    store = ImageStore(tmp_path_factory.mktemp("images"))
    with open(samples.busybox().tarball, "rb") as tarball:
        archive.load(store, tarball)
    return store


@pytest.fixture
async def tasks(tmp_path, images):
    tracker = Tasks(ContainerRuntime(tmp_path / "rt", images), images)
    yield tracker
    await tracker.close()


def config_ref(config_id: str, target: str, uid: str = "0", gid: str = "0", mode: int = 0o444) -> dict[str, Any]:
    return {"ConfigID": config_id, "ConfigName": f"name-{config_id}", "File": {"Name": target, "UID": uid, "GID": gid, "Mode": mode}}


def delivered(data: bytes, templating: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"Name": "app.conf", "Labels": {}}
    if templating:
        spec["Templating"] = {"Name": templating}
    return {"Spec": spec, "Data": data}


async def start(owner: Tasks, task: dict, configs: dict[str, Any], secrets: dict[str, bytes] | None = None) -> Container:
    container = await owner.runtime.start(task, secrets or {}, configs=configs)
    owner.started.append(container)
    return container


async def run(owner: Tasks, task: dict, configs: dict[str, Any], secrets: dict[str, bytes] | None = None) -> tuple[int, str, str]:
    container = await start(owner, task, configs, secrets)
    code = await asyncio.wait_for(container.wait(), WAIT)
    return (code, *output_of(await lines_of(container)))


async def test_each_config_is_a_read_only_file_at_its_target_with_its_owner_and_mode(tasks):
    script = (
        "cat /etc/app/conf.d/app.conf; echo; cat /app.conf; echo; "
        "stat -c '%a %u %g' /etc/app/conf.d/app.conf /app.conf; "
        "echo x > /etc/app/conf.d/app.conf; echo write=$?; rm /app.conf; echo remove=$?; "
        "umount /app.conf; echo unmount=$?; cat /app.conf; echo"
    )
    task = tasks.task(
        "sh", "-c", script,
        Configs=[config_ref("c1", "/etc/app/conf.d/app.conf", "101", "102", 0o440), config_ref("c2", "app.conf")],
    )  # fmt: skip
    code, out, err = await run(tasks, task, {"c1": delivered(b"deep=1"), "c2": delivered(b"top=2")})
    assert code == 0, err
    lines = out.splitlines()
    # /etc/app/conf.d is not in the busybox image: made for the target, as Docker does; a relative target is at /.
    assert lines[:4] == ["deep=1", "top=2", "440 101 102", "444 0 0"]
    outcomes = dict(line.split("=") for line in lines[4:7])
    assert set(outcomes) == {"write", "remove", "unmount"} and "0" not in outcomes.values(), outcomes
    assert lines[7] == "top=2"  # even root in the task cannot change or remove it


async def test_a_config_reaches_a_task_whose_root_file_system_is_read_only(tasks):
    task = tasks.task("sh", "-c", "cat /srv/new/app.conf", ReadOnly=True, Configs=[config_ref("c1", "/srv/new/app.conf")])
    code, out, err = await run(tasks, task, {"c1": delivered(b"on a read-only root")})
    assert (code, out) == (0, "on a read-only root\n"), err


async def test_a_templated_config_is_expanded_for_the_task(tasks):
    task = tasks.task("cat", "/app.conf", Configs=[config_ref("c1", "/app.conf")])
    task |= {"Slot": 4, "ServiceID": "svc1", "ServiceAnnotations": {"Name": "web"}}
    code, out, _ = await run(tasks, task, {"c1": delivered(b"{{.Service.Name}}.{{.Task.Slot}} {{.Task.ID}}", "golang")})
    assert (code, out) == (0, f"web.4 {task['ID']}\n")


async def test_configs_and_secrets_of_one_task_each_appear_where_they_belong(tasks):
    task = tasks.task(
        "sh", "-c", "cat /run/secrets/db; echo; cat /etc/app.conf; echo; ls -A /run/secrets",
        Configs=[config_ref("c1", "/etc/app.conf")], secrets=[secret_ref("s1", "db")],
    )  # fmt: skip
    code, out, _ = await run(tasks, task, {"c1": delivered(b"config")}, {"s1": b"secret"})
    assert (code, out) == (0, "secret\nconfig\ndb\n")  # the config is not among the secrets


@pytest.mark.security
async def test_a_configs_bytes_are_on_no_disk_file_and_its_host_mount_is_a_read_only_tmpfs(tasks, tmp_path, images):
    data = f"config-{uuid.uuid4().hex}".encode()
    container = await start(tasks, tasks.task("sleep", "100", Configs=[config_ref("c1", "/etc/app.conf")]), {"c1": delivered(data)})
    mount_point = str(tasks.runtime.tasks_dir / container.task_id / "configs")
    (mount,) = [(fstype, options) for point, fstype, options in _mountinfo() if point == mount_point]
    assert mount[0] == "tmpfs" and "ro" in mount[1].split(",")
    assert _files_holding([data], [Path(mount_point)]) == [f"{mount_point}/0"]  # there, in memory only
    assert _files_holding([data, base64.b64encode(data)], [tmp_path, images.root]) == []
    assert data in Path(f"/proc/{container.pid}/root/etc/app.conf").read_bytes()


@pytest.mark.parametrize(
    ("references", "configs", "secrets", "message"),
    [
        ([config_ref("c9", "/app.conf")], {}, {}, r"config name-c9 \(c9\) was not delivered"),
        ([config_ref("c1", "/proc/app.conf")], {"c1": delivered(b"x")}, {}, "is in /proc, where no file can be added"),
        ([config_ref("c1", "/run/secrets/x")], {"c1": delivered(b"x")}, {"s1": b"s"}, "is in /run/secrets"),
        ([config_ref("c1", "/app.conf")], {"c1": delivered(b'{{ secret "x" }}', "golang")}, {}, "failed to expand templated config"),
        ([config_ref("c1", "/bin")], {"c1": delivered(b"x")}, {}, "cannot"),  # a file over the image's directory
    ],
)
async def test_a_config_that_cannot_be_delivered_rejects_the_task_and_leaves_nothing(tasks, references, configs, secrets, message):
    task = tasks.task("true", Configs=references, secrets=[secret_ref("s1", "db")] if secrets else None)
    with pytest.raises(TaskRejected, match=message):
        await tasks.runtime.start(task, secrets, configs=configs)
    assert not (tasks.runtime.tasks_dir / task["ID"]).exists()
    assert await tasks.leftovers() == []
