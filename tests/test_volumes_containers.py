"""Volumes and service mounts in real containers, in process (a node's ContainerRuntime with its VolumeStore, the
busybox sample and images of the tests' own): named volumes that outlive their tasks, read-only mounts, tmpfs
size and mode, binds of existing and missing directories, anonymous volumes for an image's VOLUMEs, copy-up and
NoCopy, a tmpfs volume of the local driver, and removal refused while a task uses a volume. Then attacks on
security property 5 as the author of a service would try them: binds of the node's own directories, a volume
named ../x, an image whose VOLUME is a symlink out of its root, and symlinks a task leaves in a volume for the
node to follow.

Needs root with CAP_SYS_ADMIN, runc and conmon, as tests/test_runtime.py.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_runtime import Tasks, _mounts_under, output_of, until_logged

from raftswarm.images import archive, samples
from raftswarm.images.store import ImageStore
from raftswarm.runtime import containers
from raftswarm.runtime.containers import ContainerRuntime, TaskRejected
from raftswarm.runtime.volumes import VolumeInUse, VolumeStore, unmount_all

_UNAVAILABLE = containers.unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"containers cannot run here: {_UNAVAILABLE}")

APPLETS = ("sh", "ls", "cat", "stat", "echo", "ln", "df", "dd", "grep", "sleep", "readlink", "rm", "mkdir", "touch", "id")
HOST_SECRET = Path("/tmp/raftswarm-test-volumes-host-secret")
"""A directory of "the node" that an image's VOLUME symlink names; the image has a decoy at the same path."""


def _rootfs(build) -> bytes:
    """busybox with its applets, /etc/passwd and what `build(add)` adds; add(name, kind, **fields)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:

        def add(name: str, kind: bytes = tarfile.DIRTYPE, data: bytes = b"", **fields) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, fields.pop("mode", 0o755)
            for key, value in fields.items():
                setattr(info, key, value)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for directory in ("bin", "etc", "proc", "sys", "dev", "run", "tmp", "srv"):
            add(directory, mode=0o1777 if directory == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, samples.BUSYBOX.read_bytes())
        for applet in APPLETS:
            add(f"bin/{applet}", tarfile.SYMTYPE, linkname="busybox")
        add("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/srv/app:/bin/sh\n", mode=0o644)
        add("etc/group", tarfile.REGTYPE, b"root:x:0:\nstaff:x:50:\napp:x:1000:\n", mode=0o644)
        build(add)
    return out.getvalue()


def _app(add) -> None:
    """/srv/app as a database image ships its data directory: owned by app, private, with a set-gid
    directory, a set-uid file and its hard link, and a symlink."""
    add("srv/app", uid=1000, gid=1000, mode=0o750)
    add("srv/app/conf", uid=1000, gid=1000, mode=0o2775)
    add("srv/app/conf/app.ini", tarfile.REGTYPE, b"port=80\n", uid=1000, gid=50, mode=0o640)
    add("srv/app/run.sh", tarfile.REGTYPE, b"#!/bin/sh\n", mode=0o4755)
    add("srv/app/run-again.sh", tarfile.LNKTYPE, linkname="srv/app/run.sh")
    add("srv/app/ini", tarfile.SYMTYPE, linkname="conf/app.ini")
    add("cache")


def _escaping(add) -> None:
    """/srv/app is a symlink climbing out of any root to the node's HOST_SECRET; the image has its own
    directory at that path, which is what the task, and so its volume, must see."""
    add("srv/app", tarfile.SYMTYPE, linkname="../../../../../../.." + str(HOST_SECRET))
    parts = HOST_SECRET.parts[1:]
    for depth in range(2, len(parts) + 1):  # the image has /tmp already
        add("/".join(parts[:depth]))
    add("/".join(parts) + "/decoy", tarfile.REGTYPE, b"the image's own\n", mode=0o644)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> ImageStore:
    """busybox:latest, app:latest (VOLUMEs /srv/app and /cache, filled as `_app` says) and escape:latest (VOLUME
    /srv/app, a symlink out of its root)."""
    store = ImageStore(tmp_path_factory.mktemp("images"))
    with open(samples.busybox().tarball, "rb") as tarball:
        archive.load(store, tarball)
    env = {"Env": ["PATH=/bin"]}
    store.import_tarball(io.BytesIO(_rootfs(_app)), "app:latest", {**env, "Volumes": {"/srv/app": {}, "/cache": {}}})
    store.import_tarball(io.BytesIO(_rootfs(_escaping)), "escape:latest", {**env, "Volumes": {"/srv/app": {}}})
    yield store
    assert _mounts_under(store.root) == []


class Node:
    """A node's state directory with its volume store and runtime, as the daemon makes them."""

    def __init__(self, state: Path, socket_dir: Path, images: ImageStore) -> None:
        self.state = state
        self.socket_dir = socket_dir
        socket_dir.mkdir()
        self.volumes = VolumeStore(
            state / "volumes",
            protected={state: "the node's state directory", socket_dir: "the directory of the node's API socket"},
        )
        self.runtime = ContainerRuntime(state / "worker" / "containers", images, volumes=self.volumes)


@pytest.fixture
async def node(tmp_path, images):
    made = Node(tmp_path / "state", tmp_path / "run", images)
    tracker = Tasks(made.runtime, images)
    made.tasks = tracker
    yield made
    try:
        await tracker.close()
        assert _mounts_under(made.volumes.root) == []
    finally:
        unmount_all(made.volumes.root)


async def run(node: Node, *args: str, **spec) -> tuple[int, str, str]:
    """Run a task to its end: its exit code, stdout and stderr (its container stays until `release`)."""
    return await node.tasks.run(*args, **spec)


async def release(node: Node) -> None:
    """Release every task started so far, as the agent does once tasks are removed."""
    for container in node.tasks.started:
        await container.release()
    node.tasks.started.clear()


def volume_mount(source: str, target: str, **fields) -> dict:
    return {"Type": "volume", "Source": source, "Target": target, **fields}


async def rejected(node: Node, *args: str, **spec) -> str:
    task = node.tasks.task(*args, **spec)
    with pytest.raises(TaskRejected) as info:
        await node.tasks.start(task)
    assert task["ID"] not in node.runtime.task_ids()  # nothing of it left
    return str(info.value)


# -- volumes, binds and tmpfs as a task sees them -----------------------------------------------------------


async def test_data_in_a_named_volume_outlives_its_task_and_the_next_task_sees_it(node):
    code, out, _ = await run(node, "sh", "-c", "echo kept > /data/file; echo done", Mounts=[volume_mount("data", "/data")])
    assert (code, out) == (0, "done\n")
    await release(node)
    assert node.runtime.task_ids() == []
    assert [v["Name"] for v in node.volumes.list()] == ["data"]
    code, out, _ = await run(node, "cat", "/again/file", Mounts=[volume_mount("data", "/again")])
    assert (code, out) == (0, "kept\n")


async def test_read_only_mounts_cannot_be_written(node, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    code, _, err = await run(
        node, "sh", "-c", "echo x > /v/f; echo x > /b/g; touch /v/t /b/t",
        Mounts=[volume_mount("ro-data", "/v", ReadOnly=True), {"Type": "bind", "Source": str(shared), "Target": "/b", "ReadOnly": True}],
    )
    assert code != 0 and err.count("Read-only file system") == 4
    assert os.listdir(shared) == []


async def test_a_tmpfs_mount_has_its_size_and_mode(node):
    _, out, _ = await run(
        node, "sh", "-c", "stat -c %a /t; dd if=/dev/zero of=/t/fill bs=1024 count=2048 2>&1; stat -c %s /t/fill; grep ' /t ' /proc/mounts",
        Mounts=[{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o700}}],
    )
    lines = out.splitlines()
    assert lines[0] == "700"
    assert "No space left on device" in out and lines[-2] == str(1 << 20)
    mount = lines[-1].split()
    assert mount[2] == "tmpfs" and {"nosuid", "nodev", "noexec", "size=1024k", "mode=700"} <= set(mount[3].split(","))


async def test_a_bind_of_an_existing_directory_is_shared_with_the_node_and_a_missing_one_is_refused(node, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-node").write_text("hello task\n")
    code, out, _ = await run(
        node, "sh", "-c", "cat /b/from-node; echo hello node > /b/from-task",
        Mounts=[{"Type": "bind", "Source": str(shared), "Target": "/b"}],
    )
    assert (code, out) == (0, "hello task\n") and (shared / "from-task").read_text() == "hello node\n"
    code, out, _ = await run(  # a file, as /etc/localtime is often bound
        node, "cat", "/etc/from-node", Mounts=[{"Type": "bind", "Source": str(shared / "from-node"), "Target": "/etc/from-node", "ReadOnly": True}],
    )
    assert (code, out) == (0, "hello task\n")
    missing = tmp_path / "missing"
    message = await rejected(node, "true", Mounts=[{"Type": "bind", "Source": str(missing), "Target": "/b"}])
    assert message == f'invalid mount config for type "bind": bind source path does not exist: {missing}'
    assert not missing.exists()
    code, _, _ = await run(
        node, "true", Mounts=[{"Type": "bind", "Source": str(missing), "Target": "/b", "BindOptions": {"CreateMountpoint": True}}]
    )
    assert code == 0 and missing.is_dir()
    message = await rejected(node, "true", Mounts=[{"Type": "bind", "Source": "relative", "Target": "/b"}])
    assert message == "invalid bind mount source, must be an absolute path: relative"


async def test_a_shared_bind_sees_what_the_node_mounts_in_its_source_later_and_a_private_one_does_not(node, tmp_path):
    """Docker's bind propagation through the node's pinned, staged bind: rshared (and rslave) keep the task's
    bind in the source's peer group, so a tmpfs the node mounts under the source after the task started shows in
    it; rprivate, Docker's default, does not."""
    source = tmp_path / "exported"
    source.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(source)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(source)], check=True)
        watch = "while [ ! -e /b/go ] && [ $n -lt 200 ]; do n=$((n+1)); sleep 0.05; done; ls /b/late; echo done"
        started = {}
        for propagation in ("rshared", "rslave", "rprivate"):
            (source / propagation).mkdir()
            started[propagation] = await node.tasks.start(node.tasks.task(
                "sh", "-c", f"n=0; echo ready; {watch.replace('/b/late', f'/b/{propagation}')}",
                Mounts=[{"Type": "bind", "Source": str(source), "Target": "/b", "BindOptions": {"Propagation": propagation}}],
            ))
        for propagation, container in started.items():
            await until_logged(container, b"ready")
        for propagation in started:
            subprocess.run(["mount", "-t", "tmpfs", "late", str(source / propagation)], check=True)
            (source / propagation / "mark").write_text("")
        (source / "go").write_text("")  # in the source itself: every task sees it, whatever its propagation
        seen = {p: output_of(await until_logged(c, b"done"))[0] for p, c in started.items()}
        assert seen == {"rshared": "ready\nmark\ndone\n", "rslave": "ready\nmark\ndone\n", "rprivate": "ready\ndone\n"}
    finally:
        for propagation in ("rshared", "rslave", "rprivate"):
            subprocess.run(["umount", str(source / propagation)], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(source)], check=False)


async def test_an_image_volume_gets_an_anonymous_volume_filled_from_the_image_and_removed_with_the_task(node):
    container = await node.tasks.start(
        node.tasks.task("sh", "-c", "stat -c '%a %u:%g' /srv/app /srv/app/conf /srv/app/conf/app.ini /srv/app/run.sh; "
                        "stat -c %i /srv/app/run.sh /srv/app/run-again.sh; cat /srv/app/ini; echo ready; sleep 1000",
                        image="app:latest")
    )
    lines = await until_logged(container, b"ready")
    out = output_of(lines)[0].splitlines()
    assert out[:4] == ["750 1000:1000", "2775 1000:1000", "640 1000:50", "4755 0:0"]
    assert out[4] == out[5] and out[6] == "port=80"  # the hard link kept; the symlink too
    anonymous = node.volumes.list()
    assert len(anonymous) == 2 and all(v["Labels"] == {"com.docker.volume.anonymous": ""} for v in anonymous)
    assert all(len(v["Name"]) == 64 for v in anonymous)
    await container.release()
    assert node.volumes.list() == []  # swarmkit removes a task's container with its anonymous volumes


async def test_copy_up_fills_a_new_volume_once_and_nocopy_leaves_it_empty(node):
    code, out, _ = await run(
        node, "sh", "-c", "ls -A /srv/app; stat -c '%a %u' /srv/app; rm /srv/app/run.sh",
        image="app:latest", Mounts=[volume_mount("filled", "/srv/app")],
    )
    assert code == 0 and out.split() == ["conf", "ini", "run-again.sh", "run.sh", "750", "1000"]
    code, out, _ = await run(node, "ls", "-A", "/srv/app", image="app:latest", Mounts=[volume_mount("filled", "/srv/app")])
    assert out.split() == ["conf", "ini", "run-again.sh"]  # not empty any more: not filled again
    code, out, _ = await run(
        node, "ls", "-A", "/srv/app", image="app:latest",
        Mounts=[volume_mount("bare", "/srv/app", VolumeOptions={"NoCopy": True})],
    )
    assert (code, out) == (0, "")


async def test_a_local_tmpfs_volume_is_a_tmpfs_while_used_and_keeps_its_name_after(node):
    options = {"type": "tmpfs", "device": "tmpfs", "o": "size=2m,uid=1000"}
    container = await node.tasks.start(
        node.tasks.task(
            "sh", "-c", "grep ' /v ' /proc/mounts; stat -c %u /v; echo ready; sleep 1000",
            Mounts=[volume_mount("ram", "/v", VolumeOptions={"Labels": {"stack": "s1"}, "DriverConfig": {"Options": options}})],
        )
    )
    out = output_of(await until_logged(container, b"ready"))[0].splitlines()
    assert out[0].split()[2] == "tmpfs" and "size=2048k" in out[0] and out[1] == "1000"
    data = Path(node.volumes.inspect("ram")["Mountpoint"])
    assert _mounts_under(data) == [str(data)]
    assert node.volumes.inspect("ram")["Labels"] == {"stack": "s1"} and node.volumes.inspect("ram")["Options"] == options
    await container.release()
    assert _mounts_under(data) == [] and node.volumes.inspect("ram")["Name"] == "ram"


async def test_a_volume_a_task_uses_cannot_be_removed_until_the_task_is(node):
    container = await node.tasks.start(node.tasks.task("sleep", "1000", Mounts=[volume_mount("busy", "/busy")]))
    with pytest.raises(VolumeInUse) as info:
        node.volumes.remove("busy", force=True)
    assert str(info.value) == f"remove busy: volume is in use - [{container.container_id}]"
    assert node.volumes.prune({"all": ["true"]})["VolumesDeleted"] == []
    await container.release()
    node.volumes.remove("busy")
    assert node.volumes.list() == []


# -- attacks on security property 5 ---------------------------------------------------------------------------


@pytest.mark.security
async def test_binds_of_the_nodes_directories_are_refused_however_they_are_named(node, tmp_path):
    state = node.state
    link = tmp_path / "innocent-looking"
    link.symlink_to(state / "worker")
    attempts = {
        str(state): "is the node's state directory",
        str(state / "worker" / "containers"): "is inside the node's state directory",
        str(state / "volumes"): "is inside the node's state directory",
        str(node.socket_dir): "is the directory of the node's API socket",
        str(node.socket_dir / "api.sock"): "is inside the directory of the node's API socket",
        "/": "contains the node's state directory",
        str(tmp_path): "contains the node's state directory",
        str(link): f"(which is {state / 'worker'}) is inside the node's state directory",
        str(state / "worker" / ".." / "volumes"): "is inside the node's state directory",
        "/proc": "proc file system",
        "/proc/self/root": "contains the node's state directory",  # the magic link resolves to /
        "/proc/1/root": "/proc/1/root",  # unreadable here, or /
    }
    for source, words in attempts.items():
        for mount in (
            {"Type": "bind", "Source": source, "Target": "/host"},
            volume_mount(f"bindlike{abs(hash(source))}", "/host",
                         VolumeOptions={"DriverConfig": {"Options": {"type": "none", "o": "bind", "device": source}}}),
        ):
            message = await rejected(node, "ls", "/host", Mounts=[mount])
            assert words in message, message
    assert node.volumes.list() == []


@pytest.mark.security
async def test_a_volume_named_to_climb_out_of_the_store_is_refused_and_nothing_is_made(node, tmp_path):
    for name in ("../x", "..", "a/../../x", "/etc"):
        message = await rejected(node, "true", Mounts=[volume_mount(name, "/data")])
        assert "includes invalid characters for a local volume name" in message or "must not be an absolute path" in message
    assert not (node.state / "x").exists() and not (tmp_path / "x").exists()
    assert os.listdir(node.volumes.root) == []


@pytest.mark.security
async def test_an_image_volume_that_is_a_symlink_out_of_the_image_is_filled_from_the_image(node):
    HOST_SECRET.mkdir(exist_ok=True)
    try:
        (HOST_SECRET / "node-key").write_text("the node's key\n")
        code, out, _ = await run(node, "ls", "/srv/app/", image="escape:latest")
        assert (code, out) == (0, "decoy\n")
    finally:
        (HOST_SECRET / "node-key").unlink()
        HOST_SECRET.rmdir()


@pytest.mark.security
async def test_symlinks_a_task_leaves_in_a_volume_stay_inside_tasks_and_the_node_never_follows_them(node, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_bytes(b"p" * 4096)
    plant = (
        f"ln -s {victim} /data/dir-link; ln -s {victim}/precious /data/file-link; ln -s / /data/root-link; "
        "mkdir /data/d; ln -s ../../../../../.. /data/d/up; echo planted"
    )
    code, out, _ = await run(node, "sh", "-c", plant, Mounts=[volume_mount("trap", "/data")])
    assert (code, out) == (0, "planted\n")
    # Another task follows them inside its own root: nothing of the node.
    code, out, err = await run(
        node, "sh", "-c", "cat /data/file-link; ls /data/dir-link; ls /data/d/up/",
        Mounts=[volume_mount("trap", "/data")],
    )
    assert "p" * 10 not in out and "precious" not in out and err.count("No such file or directory") == 2
    assert {"bin", "proc", "data"} <= set(out.split())  # ../../.. of the volume is the task's own root
    await release(node)
    # The node sizing and removing the volume does not follow them either.
    report = node.volumes.prune({"all": ["true"]})
    assert report["VolumesDeleted"] == ["trap"] and report["SpaceReclaimed"] < 4096
    assert (victim / "precious").read_bytes() == b"p" * 4096 and os.listdir(victim) == ["precious"]
    # And a new volume over the image's directory is filled by copying links as links, never their targets.
    code, out, _ = await run(node, "readlink", "/srv/app/ini", image="app:latest", Mounts=[volume_mount("links", "/srv/app")])
    assert (code, out) == (0, "conf/app.ini\n")
    data = Path(node.volumes.inspect("links")["Mountpoint"])
    assert stat.S_ISLNK(os.lstat(data / "ini").st_mode)


def _swap_for_link_to_state(source: Path, node: Node) -> None:
    """What a task that can write beside `source` does to a bind another task is about to get: the directory
    moved away and a symlink to the node's state directory put in its place."""
    source.rename(source.with_name(source.name + ".moved"))
    source.symlink_to(node.state)


@pytest.mark.security
@pytest.mark.parametrize("kind", ["bind", "volume"])
async def test_a_bind_source_swapped_for_a_symlink_after_its_check_is_refused(node, tmp_path, monkeypatch, kind):
    """The race of a bind source's check against its mount, lost by the node on purpose: right after the check
    before the mount has passed, the directory becomes a symlink to the node's state directory. The pin, which
    follows no symlink, refuses it, and nothing is mounted: a task's bind, and a bind-like volume's device (whose
    creation checks it once before)."""
    shared = tmp_path / "shared" / "d"
    shared.mkdir(parents=True)
    checked = node.volumes.bind_source
    checks = []

    def check_then_swap(source: str, **kwargs) -> str:
        real = checked(source, **kwargs)
        checks.append(source)
        if checks.count(str(shared)) == (1 if kind == "bind" else 2):  # the check the mount is made after
            _swap_for_link_to_state(shared, node)
        return real

    monkeypatch.setattr(node.volumes, "bind_source", check_then_swap)
    if kind == "bind":
        mount = {"Type": "bind", "Source": str(shared), "Target": "/b"}
    else:
        options = {"type": "none", "o": "bind", "device": str(shared)}
        mount = volume_mount("swapped", "/b", VolumeOptions={"DriverConfig": {"Options": options}})
    message = await rejected(node, "ls", "/b", Mounts=[mount])
    assert f'invalid mount config for type "{kind}": bind source path {shared} changed while it was checked' in message
    assert _mounts_under(tmp_path) == []


@pytest.mark.security
async def test_a_bind_source_swapped_for_a_symlink_after_it_is_pinned_still_mounts_what_was_checked(node, tmp_path, monkeypatch):
    """The same race lost later, between the pin and the runtime's mount (crun, in the container's namespace):
    the task sees the directory that was checked, never the node's state directory the symlink names."""
    shared = tmp_path / "shared" / "d"
    shared.mkdir(parents=True)
    (shared / "whose").write_text("the task's own\n")
    (node.state / "whose").write_text("the node's state\n")
    create = node.runtime._create

    async def swap_then_create(task_id, directory):
        _swap_for_link_to_state(shared, node)
        return await create(task_id, directory)

    monkeypatch.setattr(node.runtime, "_create", swap_then_create)
    code, out, _ = await run(node, "sh", "-c", "cat /b/whose; ls /b", Mounts=[{"Type": "bind", "Source": str(shared), "Target": "/b"}])
    assert (code, out) == (0, "the task's own\nwhose\n")
    assert _mounts_under(tmp_path) == []  # the staging bind is gone once the container is made


@pytest.mark.security
async def test_a_task_cannot_reach_the_volume_store_through_its_volume(node):
    """The volume's directory is bound, not its parent: the store, other volumes and their records are out of
    sight, and `..` at the mount's root is the container's own /."""
    await run(node, "sh", "-c", "echo theirs > /other/f", Mounts=[volume_mount("other", "/other")])
    code, out, _ = await run(node, "ls", "-a", "/data/..", "/data/../..", Mounts=[volume_mount("mine", "/data")])
    assert code == 0 and {"bin", "proc", "data"} <= set(out.split())
    assert not {"volume.json", "_data", "other", "mine", "volumes"} & set(out.split())


async def test_nothing_of_a_removed_task_stays_mounted(node):
    """Every volume device a task used is unmounted once it is released, whatever it ended with."""
    options = {"type": "tmpfs", "device": "tmpfs"}
    for _ in range(3):
        code, _, _ = await run(
            node, "sh", "-c", "exit 3", Mounts=[volume_mount("ram2", "/r", VolumeOptions={"DriverConfig": {"Options": options}})]
        )
        assert code == 3
    assert len(_mounts_under(node.volumes.root)) == 1  # one device, however many tasks use it
    await release(node)
    assert _mounts_under(node.volumes.root) == []
