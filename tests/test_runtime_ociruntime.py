"""crun as the OCI runtime (`runtime.ociruntime`): how it is run on a host with hybrid cgroups, and its errors in
Docker's words. The containers it runs are tested in test_runtime.py and test_security_containers.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from raftswarm.runtime import ociruntime


@pytest.fixture
def cgroups(tmp_path, monkeypatch):
    """A fake /sys/fs/cgroup layout: `set(root, unified, controllers)` says what is mounted where."""
    unified = tmp_path / "unified"
    unified.mkdir()
    monkeypatch.setattr(ociruntime, "UNIFIED", str(unified))

    def set_layout(root: str | None, unified_type: str | None, controllers: str = "") -> None:
        types = {ociruntime.CGROUP_ROOT: root, str(unified): unified_type}
        monkeypatch.setattr(ociruntime, "_mount_types", lambda: {k: v for k, v in types.items() if v})
        (unified / "cgroup.controllers").write_text(controllers + "\n")
        ociruntime.hybrid_cgroups.cache_clear()  # read once per process: this test's layout is read anew

    yield set_layout
    ociruntime.hybrid_cgroups.cache_clear()  # and the host's own after it


@pytest.mark.parametrize(
    "root, unified, controllers, hybrid",
    [
        ("tmpfs", "cgroup2", "hugetlb", True),  # v1 hierarchies and a v2 one with a controller: crun refuses
        ("tmpfs", "cgroup2", "", False),  # a v2 hierarchy with no controller: crun accepts it
        ("tmpfs", None, "", False),  # v1 only
        ("cgroup2", None, "cpu memory pids", False),  # v2 only
    ],
)
def test_hybrid_cgroups_are_v1_hierarchies_beside_a_v2_one_with_controllers(
    cgroups, root, unified, controllers, hybrid
):
    cgroups(root, unified, controllers)
    assert ociruntime.hybrid_cgroups() is hybrid


def test_on_a_hybrid_host_create_and_exec_run_crun_in_a_mount_namespace_without_the_cgroup2_mount(cgroups):
    cgroups("tmpfs", "cgroup2", "hugetlb")
    argv = ociruntime.create_argv()
    assert os.path.basename(argv[0]) == "unshare" and argv[1:5] == ["--mount", "--propagation", "slave", "--"]
    assert os.path.basename(argv[5]) == "sh" and argv[6] == "-c" and argv[7].startswith(f"umount {ociruntime.UNIFIED} ")
    assert argv[8] == ociruntime.crun() and os.path.basename(argv[8]) == "crun"


def test_crun_in_that_namespace_sees_no_cgroup2_mount_and_the_host_keeps_its_own():
    """On this host, as it is (./setup may have moved cgroup2's controllers away, so this host need not be
    hybrid any more): what `create` and `exec` run under on a hybrid host shows cgroup v1 only."""
    if not os.path.ismount(ociruntime.UNIFIED) or not os.path.ismount("/sys/fs/cgroup/memory"):
        pytest.skip("this host has no cgroup v1 hierarchies beside a cgroup2 one")
    if os.geteuid() != 0:
        pytest.skip("a mount namespace needs root")
    argv = ociruntime.without_cgroup2_argv()
    mounts = subprocess.run([*argv[:-1], "cat", "/proc/self/mounts"], capture_output=True, text=True, check=True)
    assert ociruntime.UNIFIED not in [line.split()[1] for line in mounts.stdout.splitlines()]
    assert " /sys/fs/cgroup/memory cgroup " in mounts.stdout
    assert os.path.ismount(ociruntime.UNIFIED)  # the node's own namespace is untouched


def test_starting_what_was_never_created_or_has_no_init_any_more_is_a_clear_error(tmp_path):
    with pytest.raises(ociruntime.StartFailed, match="container c1 is not created"):
        ociruntime.start(tmp_path, "c1")
    (tmp_path / "c2").mkdir()
    os.mkfifo(tmp_path / "c2" / "exec.fifo")  # what crun create left, with no init reading it
    with pytest.raises(ociruntime.StartFailed, match="container c2 is not running"):
        ociruntime.start(tmp_path, "c2")
    assert (tmp_path / "c2" / "exec.fifo").exists()  # nothing changed


def test_elsewhere_crun_runs_as_it_is(cgroups):
    cgroups("cgroup2", None, "cpu memory")
    assert ociruntime.create_argv() == [ociruntime.crun()]


def test_crun_errors_read_as_docker_says_them():
    said = b"executable file `no-such-command` not found in $PATH: No such file or directory\n"
    assert ociruntime.error_text(said) == 'exec: "no-such-command": executable file not found in $PATH'
    assert ociruntime.error_text(b"mount `/x` to `/y`: Permission denied\n") == "mount `/x` to `/y`: Permission denied"
    assert ociruntime.error_text(b"") == "crun failed"


@pytest.mark.parametrize(
    "message, gone",
    [
        ("cannot signal the container: open pidfd: No such process", True),
        ("the container `abc` is not running", True),
        ("error opening file `/run/x/crun/abc/status`: No such file or directory", True),
        ("cannot signal the container: Operation not permitted", False),
    ],
)
def test_a_kill_or_delete_of_what_is_gone_already_is_no_failure(message, gone):
    assert ociruntime.gone(message) is gone
