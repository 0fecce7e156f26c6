"""Volumes and service mounts, the parts that need no container: Docker's rules for a task's mounts (the API edge's
checks, the node's parser, the OCI mounts dockerd would write), the local volume driver and volume service on disk
(names, labels, in use, prune, filters, what survives a restart), and copying an image's directory into a new
volume (owners, modes, links, never through a symlink). Mounting a tmpfs or a bind as a volume's device needs
root; those tests skip without it.
"""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import pytest

from raftswarm.objects.specs import validate_service_spec
from raftswarm.objects.validation import InvalidSpec
from raftswarm.runtime.mounts import (
    InvalidMount,
    in_mount_order,
    merge_tmpfs_options,
    mount_of,
    oci_mount,
    parse_mountinfo,
    plan_mounts,
    propagation_problem,
    rootfs_propagation,
)
from raftswarm.runtime.spec import task_spec
from raftswarm.runtime.volumes import (
    NoSuchVolume,
    VolumeError,
    VolumeInUse,
    VolumeStore,
    copy_tree,
    fill_from_image,
    remove_tree,
    tree_size,
    unmount_all,
)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounting a volume's device needs root")


def plan(*mounts: dict, image_volumes=()) -> list:
    return plan_mounts(list(mounts), image_volumes)


def refused(*mounts: dict) -> str:
    with pytest.raises(InvalidMount) as info:
        plan(*mounts)
    return str(info.value)


# -- a task's mounts on the node: Docker's checks and OCI mounts -------------------------------------------


@pytest.mark.parametrize(
    "mount, message",
    [
        ({"Type": "volume", "Source": "data", "Target": "data"}, "invalid mount target, must be an absolute path: data"),
        ({"Type": "bind", "Source": "srv", "Target": "/srv"}, "invalid bind mount source, must be an absolute path: srv"),
        ({"Type": "volume", "Source": "/srv", "Target": "/srv"}, "invalid volume mount source, must not be an absolute path: /srv"),
        ({"Type": "tmpfs", "Source": "x", "Target": "/t"}, "invalid tmpfs source, source must be empty"),
        ({"Type": "npipe", "Source": "x", "Target": "/t"}, "invalid mount type: npipe"),
        ({"Type": "volume", "Target": "/"}, 'invalid mount config for type "volume": invalid specification: destination can\'t be \'/\''),
        (
            {"Type": "volume", "Source": "v", "Target": "/v", "BindOptions": {"Propagation": "shared"}},
            'invalid mount config for type "volume": field BindOptions must not be specified',
        ),
        (
            {"Type": "bind", "Source": "/srv", "Target": "/v", "TmpfsOptions": {"SizeBytes": 1}},
            'invalid mount config for type "bind": field TmpfsOptions must not be specified',
        ),
        (
            {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"Options": [["uid", "0"]]}},
            'invalid mount config for type "tmpfs": invalid option: uid',
        ),
        (
            {"Type": "bind", "Source": "/srv", "Target": "/s", "BindOptions": {"ReadOnlyNonRecursive": True}},
            "mount options conflict: !ReadOnly && BindOptions.ReadOnlyNonRecursive",
        ),
        (
            {"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {"DriverConfig": {"Name": "rexray"}}},
            'create v: error looking up volume plugin rexray: plugin "rexray" not found',
        ),
        # swarmkit's first MountType is BIND: a mount without a Type is a bind, and a name is no bind source.
        ({"Source": "data", "Target": "/data"}, "invalid bind mount source, must be an absolute path: data"),
    ],
)
def test_a_mount_docker_refuses_is_refused_with_dockers_words(mount, message):
    assert refused(mount) == message


def test_two_mounts_at_one_destination_are_a_duplicate_mount_point_even_spelled_differently():
    message = refused({"Type": "volume", "Source": "a", "Target": "/data"}, {"Type": "tmpfs", "Target": "/data/"})
    assert message == "Duplicate mount point: /data"


def test_image_volumes_become_anonymous_volumes_where_no_mount_covers_them():
    points = plan({"Type": "tmpfs", "Target": "/cache/"}, image_volumes=["/var/lib/db", "/cache", "/var/lib/db/"])
    assert [(p.type, p.destination, p.anonymous, p.from_image, p.copy_data) for p in points] == [
        ("tmpfs", "/cache", False, False, True),
        ("volume", "/var/lib/db", True, True, True),
    ]


def test_a_volume_mount_carries_its_labels_driver_options_and_nocopy():
    (point,) = plan(
        {
            "Type": "volume", "Source": "db", "Target": "/db", "ReadOnly": True,
            "VolumeOptions": {"NoCopy": True, "Labels": {"com.docker.stack.namespace": "shop"},
                              "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs", "device": "tmpfs"}}},
        }
    )
    assert (point.source, point.readonly, point.copy_data, point.anonymous) == ("db", True, False, False)
    assert point.labels == {"com.docker.stack.namespace": "shop"}
    assert point.driver_options == {"type": "tmpfs", "device": "tmpfs"}


def test_binds_and_volumes_become_rbinds_read_only_ones_recursively_where_the_node_can():
    bind, volume, nonrecursive, writable_below = plan(
        {"Type": "bind", "Source": "/srv/data/", "Target": "/srv", "ReadOnly": True},
        {"Type": "volume", "Source": "v", "Target": "/v", "ReadOnly": True},
        {"Type": "bind", "Source": "/opt", "Target": "/opt", "BindOptions": {"NonRecursive": True, "Propagation": "rslave"}},
        {"Type": "bind", "Source": "/mnt", "Target": "/mnt", "ReadOnly": True, "BindOptions": {"ReadOnlyNonRecursive": True}},
    )
    assert bind.source == "/srv/data"
    assert oci_mount(bind, "/srv/data", recursive_readonly=True) == {
        "destination": "/srv", "type": "bind", "source": "/srv/data", "options": ["rbind", "rro", "rprivate"],
    }
    assert oci_mount(bind, "/srv/data", recursive_readonly=False)["options"] == ["rbind", "ro", "rprivate"]
    assert oci_mount(volume, "/vols/v/_data", recursive_readonly=True)["options"] == ["rbind", "rro"]  # no propagation
    assert oci_mount(nonrecursive, "/opt", recursive_readonly=True)["options"] == ["bind", "rslave"]
    assert oci_mount(writable_below, "/mnt", recursive_readonly=True)["options"] == ["rbind", "ro", "rprivate"]


def test_forcing_recursive_read_only_where_the_node_cannot_is_refused():
    (point,) = plan(
        {"Type": "bind", "Source": "/srv", "Target": "/s", "ReadOnly": True, "BindOptions": {"ReadOnlyForceRecursive": True}}
    )
    with pytest.raises(InvalidMount, match="ReadOnlyForceRecursive"):
        oci_mount(point, "/srv", recursive_readonly=False)


def test_tmpfs_options_are_dockers_defaults_then_size_mode_and_flags_merged():
    (point,) = plan(
        {"Type": "tmpfs", "Target": "/t", "ReadOnly": True,
         "TmpfsOptions": {"SizeBytes": 3 << 20, "Mode": 0o1770, "Options": [["exec"]]}}
    )
    assert oci_mount(point, "tmpfs", recursive_readonly=True) == {
        "destination": "/t", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "rprivate", "ro", "mode=1770", "size=3m", "exec"],
    }
    (odd,) = plan({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1000}})
    assert oci_mount(odd, "tmpfs", recursive_readonly=True)["options"][-1] == "size=1000"


def test_merge_tmpfs_options_keeps_the_last_of_each_flag_and_key():
    assert merge_tmpfs_options(["noexec", "size=1k", "rprivate", "exec", "size=2k", "rshared"]) == ["exec", "size=2k", "rshared"]
    with pytest.raises(InvalidMount, match='invalid tmpfs option "bogus"'):
        merge_tmpfs_options(["bogus=1"])


def test_mounts_go_in_by_depth_so_none_hides_a_deeper_one():
    mounts = [{"destination": d} for d in ("/etc/app/conf", "/etc", "/var/lib/db", "/etc/app")]
    assert [m["destination"] for m in in_mount_order(mounts)] == ["/etc", "/etc/app", "/etc/app/conf", "/var/lib/db"]


def test_shared_and_slave_binds_need_such_a_source_mount_and_set_the_root_propagation():
    mounts = parse_mountinfo(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "30 22 0:5 / /srv rw - tmpfs tmpfs rw\n"
        "31 22 0:6 / /mnt/with\\040space rw master:2 - tmpfs tmpfs rw\n"
    )
    assert mount_of("/srv/data", mounts).mount_point == "/srv"
    assert mount_of("/mnt/with space/x", mounts).optional == ("master:2",)
    assert propagation_problem("/srv/data", "rshared", mounts) == "path /srv/data is mounted on /srv but it is not a shared mount"
    assert propagation_problem("/mnt/with space", "rslave", mounts) is None
    assert propagation_problem("/home", "shared", mounts) is None
    points = plan({"Type": "bind", "Source": "/home", "Target": "/h", "BindOptions": {"Propagation": "rshared"}})
    assert rootfs_propagation(points) == "shared"
    assert rootfs_propagation(plan({"Type": "bind", "Source": "/h", "Target": "/h"})) is None


def test_the_tasks_mounts_replace_dockers_and_its_files_at_their_destinations_and_go_in_by_depth():
    own = [
        {"destination": "/dev/shm", "type": "tmpfs", "source": "tmpfs", "options": ["size=1g"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/srv/hosts", "options": ["rbind", "rro"]},
        {"destination": "/run", "type": "bind", "source": "/v/_data", "options": ["rbind"]},
    ]
    spec = task_spec(
        task={"ID": "t1", "Spec": {"ContainerSpec": {"Image": "busybox", "Args": ["sh"]}}}, image_config={},
        rootfs="/r", hostname="h", passwd=None, group=None, netns=None, secrets_dir="/t1/secrets",
        resolv_conf="/t1/resolv.conf", hosts="/t1/hosts", hostname_file="/t1/hostname", cgroups_path="/c", mounts=own,
    )
    mounts = [(m["destination"], m["source"]) for m in spec["mounts"]]
    assert ("/dev/shm", "shm") not in mounts and ("/dev/shm", "tmpfs") in mounts
    assert ("/etc/hosts", "/t1/hosts") not in mounts and ("/etc/hosts", "/srv/hosts") in mounts
    assert mounts.index(("/run", "/v/_data")) < mounts.index(("/run/secrets", "/t1/secrets"))


# -- the API edge ---------------------------------------------------------------------------------------------


def service(*mounts: dict) -> dict:
    return {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Mounts": list(mounts)}}}


def edge_refusal(*mounts: dict) -> str:
    with pytest.raises(InvalidSpec) as info:
        validate_service_spec(service(*mounts))
    return str(info.value)


@pytest.mark.parametrize(
    "mount, message",
    [
        ({"Type": "volume", "Source": "d", "Target": "data"}, "Mounts[0].Target: invalid mount target, must be an absolute path: data"),
        ({"Type": "volume", "Source": "d", "Target": "/"}, "Mounts[0].Target: invalid specification: destination can't be '/'"),
        ({"Type": "bind", "Source": "rel", "Target": "/x"}, "Mounts[0].Source: invalid bind mount source, must be an absolute path: rel"),
        ({"Type": "volume", "Source": "/abs", "Target": "/x"}, "Mounts[0].Source: invalid volume mount source, must not be an absolute path: /abs"),
        ({"Type": "tmpfs", "Source": "t", "Target": "/x"}, "Mounts[0].Source: invalid tmpfs source, source must be empty"),
        ({"Type": "volume", "Source": "../x", "Target": "/x"}, 'Mounts[0].Source: "../x" includes invalid characters for a local volume name'),
        ({"Type": "volume", "Source": "a", "Target": "/x"}, "Mounts[0].Source: volume name is too short"),
        (
            {"Type": "tmpfs", "Target": "/x", "VolumeOptions": {"NoCopy": True}},
            'Mounts[0].VolumeOptions: invalid mount config for type "tmpfs": field VolumeOptions must not be specified',
        ),
        (
            {"Type": "volume", "Source": "vol", "Target": "/x", "BindOptions": {}},
            'Mounts[0].BindOptions: invalid mount config for type "volume": field BindOptions must not be specified',
        ),
        (
            {"Type": "tmpfs", "Target": "/x", "TmpfsOptions": {"Options": [["mode", "1"]]}},
            'Mounts[0].TmpfsOptions.Options[0]: invalid mount config for type "tmpfs": invalid option: mode',
        ),
        (
            {"Type": "volume", "Source": "vol", "Target": "/x", "VolumeOptions": {"DriverConfig": {"Options": {"type": "ext4", "device": "/dev/vda"}}}},
            'Mounts[0].VolumeOptions.DriverConfig.Options: invalid option: type "ext4"',
        ),
        (
            {"Type": "volume", "Source": "vol", "Target": "/x", "VolumeOptions": {"DriverConfig": {"Options": {"o": "size=1m"}}}},
            'Mounts[0].VolumeOptions.DriverConfig.Options: missing required option: "device"',
        ),
        (
            {"Type": "volume", "Source": "vol", "Target": "/x", "VolumeOptions": {"DriverConfig": {"Name": "nfs-plugin"}}},
            'Mounts[0].VolumeOptions.DriverConfig.Name: volume driver "nfs-plugin" is not available',
        ),
        ({"Type": "volume", "Source": "vol", "Target": "/x", "VolumeOptions": {"Subpath": "a"}}, "volume subpaths are not supported"),
        ({"Type": "cluster", "Source": "vol", "Target": "/x"}, "Mounts[0].Type: cluster (CSI) volumes are not supported"),
        ({"Type": "image", "Source": "busybox", "Target": "/x"}, 'Mounts[0].Type: invalid MountType: "image"'),
        (
            {"Type": "bind", "Source": "/srv", "Target": "/x", "BindOptions": {"ReadOnlyForceRecursive": True}},
            "Mounts[0].BindOptions.ReadOnlyForceRecursive: mount options conflict: !ReadOnly && BindOptions.ReadOnlyForceRecursive",
        ),
    ],
)
def test_the_api_edge_refuses_what_a_node_would_with_the_field_named(mount, message):
    assert message in edge_refusal(mount)


def test_the_api_edge_accepts_dockers_mounts_and_leaves_templates_and_bind_sources_to_the_node():
    spec = service(
        {"Type": "volume", "Source": "data-{{.Task.Slot}}", "Target": "/data", "VolumeOptions": {"NoCopy": True}},
        {"Type": "volume", "Target": "/cache"},
        {"Type": "bind", "Source": "/does/not/exist/here", "Target": "/b", "ReadOnly": True,
         "BindOptions": {"Propagation": "rslave", "ReadOnlyNonRecursive": True}},
        {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o700, "Options": [["exec"]]}},
        {"Type": "volume", "Source": "ram", "Target": "/ram",
         "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}}}},
    )
    assert validate_service_spec(copy.deepcopy(spec)) == spec
    assert "duplicate mount point: /data/" in edge_refusal(
        {"Type": "volume", "Source": "v", "Target": "/data"}, {"Type": "tmpfs", "Target": "/data/"}
    )


# -- the local driver and the volume service -----------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> VolumeStore:
    (tmp_path / "state").mkdir()
    made = VolumeStore(tmp_path / "state" / "volumes", protected={tmp_path / "state": "the node's state directory"})
    yield made
    assert unmount_all(made.root) == []  # what a failed test left mounted, before its directory is deleted


def test_a_volume_is_dockers_shape_with_its_data_under_the_store(store):
    created = store.create("data", labels={"tier": "db"}, options={"type": "tmpfs", "device": "tmpfs"})
    assert created == {
        "CreatedAt": created["CreatedAt"], "Driver": "local", "Labels": {"tier": "db"},
        "Mountpoint": str(store.root / "data" / "_data"), "Name": "data",
        "Options": {"type": "tmpfs", "device": "tmpfs"}, "Scope": "local",
    }
    assert created["CreatedAt"].endswith(("Z", "+00:00")) or created["CreatedAt"][-6] in "+-"
    assert stat.S_IMODE(os.stat(created["Mountpoint"]).st_mode) == 0o755
    # An existing name is the existing volume, as it is.
    assert store.create("data", labels={"other": "x"}) == created
    assert store.inspect("data") == created


def test_a_volume_without_a_name_is_anonymous_and_named_by_64_hex_digits(store):
    created = store.create()
    assert len(created["Name"]) == 64 and int(created["Name"], 16) >= 0
    assert created["Labels"] == {"com.docker.volume.anonymous": ""}


@pytest.mark.parametrize(
    "name, message",
    [
        ("../x", '"../x" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed.'),
        ("a/b", "includes invalid characters"),
        (".hidden", "includes invalid characters"),
        ("x", "volume name is too short, names should be at least two alphanumeric characters"),
    ],
)
def test_names_that_could_leave_the_store_are_refused(store, name, message):
    with pytest.raises(VolumeError) as info:
        store.create(name)
    assert info.value.status == 400 and str(info.value).startswith(f"create {name}: ") and message in str(info.value)
    assert os.listdir(store.root) == []


def test_driver_options_are_the_local_drivers_and_unknown_drivers_are_not_found(store):
    for options, message in (
        ({"foo": "bar"}, 'invalid option: "foo"'),
        ({"type": "tmpfs"}, 'missing required option: "device"'),
        ({"size": "10m"}, "quota size requested but no quota support"),
        ({"type": "nfs", "device": ":/export", "o": "addr=10.0.0.1"}, 'invalid option: type "nfs"'),
    ):
        with pytest.raises(VolumeError, match=message):
            store.create("v1", options=options)
    with pytest.raises(VolumeError) as info:
        store.create("v1", driver="rexray")
    assert info.value.status == 404 and str(info.value) == 'create v1: error looking up volume plugin rexray: plugin "rexray" not found'


def test_a_volume_used_by_a_task_cannot_be_removed_and_names_its_containers(store):
    data = store.mount("data", user="task1", container_id="c" * 64, labels={"a": "1"})
    assert store.inspect("data")["Labels"] == {"a": "1"}  # created on first use with the mount's labels
    (data / "file").write_text("kept")
    with pytest.raises(VolumeInUse) as info:
        store.remove("data", force=True)
    assert info.value.status == 409 and str(info.value) == f"remove data: volume is in use - [{'c' * 64}]"
    store.release("task1")
    assert (data / "file").read_text() == "kept"  # a volume outlives its tasks
    store.remove("data")
    with pytest.raises(NoSuchVolume) as missing:
        store.inspect("data")
    assert missing.value.status == 404 and str(missing.value) == "get data: no such volume"
    with pytest.raises(NoSuchVolume, match="get data: no such volume"):
        store.remove("data")
    store.remove("data", force=True)  # --force: an unknown name is no error


def test_an_anonymous_volume_goes_with_its_task_unless_another_uses_it(store):
    data = store.mount("", user="task1", container_id="c1", remove_with_user=True)
    name = data.parent.name
    store.mount(name, user="task2", container_id="c2")  # mounted by name by another task
    store.release("task1")
    assert store.inspect(name)["Name"] == name
    store.release("task2")
    assert store.inspect(name)  # task2 named it: its release removes nothing
    again = store.mount("", user="task3", container_id="c3", remove_with_user=True)
    store.release("task3")
    with pytest.raises(NoSuchVolume):
        store.inspect(again.parent.name)


def test_users_and_volumes_survive_the_node_and_tasks_gone_meanwhile_are_forgotten(store):
    store.mount("data", user="task1", container_id="c1")
    store.mount("logs", user="task2", container_id="c2")
    again = VolumeStore(store.root, protected=store.protected)
    assert [v["Name"] for v in again.list()] == ["data", "logs"]
    assert [v["Name"] for v in again.list({"dangling": ["true"]})] == []
    again.keep_users(["task2"])
    assert [v["Name"] for v in again.list({"dangling": ["1"]})] == ["data"]
    with pytest.raises(VolumeInUse):
        again.remove("logs")


def test_list_filters_are_dockers(store):
    store.create("web-data", labels={"stack": "shop", "tier": "web"})
    store.create("db-data", labels={"stack": "shop"})
    store.create("scratch")
    store.mount("db-data", user="t", container_id="c")

    def names(**filters):
        return [v["Name"] for v in store.list(filters)]

    assert names() == ["db-data", "scratch", "web-data"]
    assert names(name=["data$"]) == ["db-data", "web-data"]  # a regular expression
    assert names(label=["stack=shop", "tier"]) == ["web-data"]
    assert names(dangling=["false"]) == ["db-data"]
    assert names(driver=["local"]) == names() and names(driver=["nfs"]) == []
    for bad, message in (({"until": ["1h"]}, "invalid filter 'until'"), ({"dangling": ["maybe"]}, "invalid filter 'dangling")):
        with pytest.raises(VolumeError, match=message):
            store.list(bad)


def test_prune_removes_unused_anonymous_volumes_unless_all_and_reports_the_space(store):
    anonymous = store.create()["Name"]
    used = store.mount("", user="t", container_id="c").parent.name
    (store.root / anonymous / "_data" / "blob").write_bytes(b"x" * 1000)
    os.link(store.root / anonymous / "_data" / "blob", store.root / anonymous / "_data" / "again")
    store.create("keep", labels={"keep": "yes"})
    store.create("named")
    store.create("ram", options={"type": "tmpfs", "device": "tmpfs"})  # options: never pruned
    assert store.prune() == {"VolumesDeleted": [anonymous], "SpaceReclaimed": 1000}  # the hard link once
    assert store.prune({"all": ["true"], "label!": ["keep"]}) == {"VolumesDeleted": ["named"], "SpaceReclaimed": 0}
    assert sorted(v["Name"] for v in store.list()) == sorted(["keep", "ram", used])
    with pytest.raises(VolumeError, match="invalid filter 'all'"):
        store.prune({"all": ["perhaps"]})


# -- copy-up and the node's walks over what tasks wrote -----------------------------------------------------


def _image_dir(root: Path) -> Path:
    """An image's /srv/app: a tree with owners, modes, a set-gid directory, a hard link, symlinks (one pointing
    out of any root), a FIFO and an empty directory; the directory itself owned by 1000:1000, mode 0750."""
    app = root / "srv" / "app"
    (app / "conf" / "empty").mkdir(parents=True)
    (app / "conf" / "app.ini").write_text("port=80\n")
    os.chmod(app / "conf" / "app.ini", 0o640)
    os.chmod(app / "conf", 0o2775)
    (app / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(app / "run.sh", 0o4755)
    os.link(app / "run.sh", app / "run-again.sh")
    os.symlink("/etc/shadow", app / "shadow")
    os.symlink("conf/app.ini", app / "ini")
    os.mkfifo(app / "pipe")
    if ROOT:
        os.chown(app / "conf" / "app.ini", 1000, 50)
        os.lchown(app / "shadow", 1000, 1000)
        os.chown(app, 1000, 1000)
    os.chmod(app, 0o750)
    return app


def _tree(root: Path) -> dict[str, tuple]:
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        link = os.readlink(path) if path.is_symlink() else None
        found[str(path.relative_to(root))] = (stat.filemode(info.st_mode), info.st_uid, info.st_gid, link, info.st_nlink)
    info = root.stat()
    found["."] = (stat.filemode(info.st_mode), info.st_uid, info.st_gid, None, None)
    return found


def test_copy_up_keeps_owners_modes_links_and_symlinks_and_gives_the_volume_the_directorys_owner(tmp_path):
    rootfs, volume = tmp_path / "rootfs", tmp_path / "volume"
    app = _image_dir(rootfs)
    volume.mkdir(mode=0o755)
    fill_from_image(rootfs, "/srv/app", volume)
    assert _tree(volume) == _tree(app)
    assert os.stat(volume / "run.sh").st_ino == os.stat(volume / "run-again.sh").st_ino
    assert (volume / "ini").read_text() == "port=80\n"
    assert os.readlink(volume / "shadow") == "/etc/shadow"  # copied as a link: the node never read /etc/shadow


def test_copy_up_only_fills_an_empty_volume_and_only_from_a_directory(tmp_path):
    rootfs, volume = tmp_path / "rootfs", tmp_path / "volume"
    _image_dir(rootfs)
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "motd").write_text("hi")
    volume.mkdir()
    (volume / "mine").write_text("already")
    fill_from_image(rootfs, "/srv/app", volume)
    assert os.listdir(volume) == ["mine"]
    empty = tmp_path / "empty"
    empty.mkdir()
    fill_from_image(rootfs, "/nowhere", empty)
    fill_from_image(rootfs, "/etc/motd", empty)
    assert os.listdir(empty) == []
    with pytest.raises(InvalidMount, match="cannot mount volume over existing file, file exists /etc/motd"):
        fill_from_image(rootfs, "/etc/motd", empty, from_image=True)


def test_copy_up_resolves_the_images_symlinks_inside_the_image(tmp_path):
    """An image whose /data is a symlink to ../../../.. (or to an absolute path) resolves it as its task would:
    inside its root. The node copies the image's own directory, never one of the node's."""
    host = tmp_path / "host-secret"
    host.mkdir()
    (host / "key").write_text("node's key")
    rootfs = tmp_path / "rootfs"
    own = rootfs / str(host).lstrip("/")  # the same path, in the image
    own.mkdir(parents=True)
    (own / "decoy").write_text("the image's own")
    os.symlink("../../../../../../../../" + str(host).lstrip("/"), rootfs / "data")
    os.symlink(str(host), rootfs / "abs")
    for link in ("/data", "/abs"):
        volume = tmp_path / f"volume{link.replace('/', '-')}"
        volume.mkdir()
        fill_from_image(rootfs, link, volume)
        assert os.listdir(volume) == ["decoy"]


def test_copy_up_into_a_directory_made_a_symlink_fails_instead_of_writing_through_it(tmp_path):
    source, target, outside = tmp_path / "source", tmp_path / "target", tmp_path / "outside"
    (source / "conf").mkdir(parents=True)
    (source / "conf" / "a").write_text("x")
    target.mkdir()
    outside.mkdir()
    os.symlink(outside, target / "conf")  # what a task sharing the volume put there meanwhile
    src, dst = os.open(source, os.O_RDONLY | os.O_DIRECTORY), os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            copy_tree(src, dst)
    finally:
        os.close(src)
        os.close(dst)
    assert os.listdir(outside) == []


def test_removing_and_sizing_never_follow_a_symlink_out_and_reach_any_depth(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_bytes(b"p" * 5000)
    data = tmp_path / "volume" / "_data"
    data.mkdir(parents=True)
    os.symlink(victim, data / "dir-link")
    os.symlink(victim / "precious", data / "file-link")
    (data / "own").write_bytes(b"o" * 10)
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):  # deeper than PATH_MAX, a descriptor table or a recursion limit allow to reach by path
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    bottom = os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(bottom, b"b" * 7)
    os.close(bottom)
    os.close(fd)
    assert tree_size(data) == 10 + 7 + len(str(victim)) + len(str(victim / "precious"))
    remove_tree(tmp_path / "volume")
    assert not (tmp_path / "volume").exists()
    assert (victim / "precious").read_bytes() == b"p" * 5000


@needs_root
def test_a_device_volume_is_mounted_while_used_and_removal_never_crosses_a_mount(tmp_path, store):
    data = store.mount("ram", user="t1", container_id="c1", options={"type": "tmpfs", "device": "tmpfs", "o": "size=1m,mode=1777"})
    assert _fstype(data) == "tmpfs" and stat.S_IMODE(os.stat(data).st_mode) == 0o1777
    store.mount("ram", user="t2", container_id="c2")
    store.release("t1")
    assert _fstype(data) == "tmpfs"  # still used by t2
    store.release("t2")
    assert _fstype(data) != "tmpfs"
    # Something else mounted inside a volume: the node refuses to delete through it.
    store.create("plain")
    inner = store.root / "plain" / "_data" / "inner"
    inner.mkdir()
    os.system(f"mount -t tmpfs tmpfs {inner}")
    try:
        (inner / "file").write_text("x")
        with pytest.raises(VolumeError, match="is mounted; unmount it first"):
            store.remove("plain")
        assert (inner / "file").exists()
    finally:
        os.system(f"umount {inner}")
    store.remove("plain")


@needs_root
def test_a_bind_like_volume_binds_its_device_and_cannot_name_the_nodes_directories(tmp_path, store):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the node")
    data = store.mount("binder", user="t1", container_id="c1", options={"type": "none", "o": "bind,ro", "device": str(shared)})
    assert (data / "hello").read_text() == "from the node"
    with pytest.raises(OSError):
        (data / "new").write_text("x")  # o=ro: bound read-only
    store.release("t1")
    assert not (data / "hello").exists()
    store.remove("binder")
    assert (shared / "hello").exists()
    for device in (tmp_path / "state", tmp_path / "state" / "volumes" / "x", Path("/")):
        with pytest.raises(VolumeError, match="a task sees nothing of its node"):
            store.create("evil", options={"type": "none", "o": "bind", "device": str(device)})


def _fstype(path: Path) -> str:
    with open("/proc/self/mountinfo") as mountinfo:
        mounts = parse_mountinfo(mountinfo.read())
    return mount_of(str(path), mounts).fstype
