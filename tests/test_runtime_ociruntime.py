"""crun as the OCI runtime (`runtime.ociruntime`): how it is run on a host with hybrid cgroups, and its errors in
Docker's words. The containers it runs are tested in test_runtime.py and test_security_containers.py."""

from __future__ import annotations

import os
import stat

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

    return set_layout


@pytest.mark.parametrize(
    "root, unified, controllers, hybrid",
    [
        ("tmpfs", "cgroup2", "hugetlb", True),  # v1 hierarchies and a v2 one with a controller: crun refuses
        ("tmpfs", "cgroup2", "", False),  # a v2 hierarchy with no controller: crun accepts it
        ("tmpfs", None, "", False),  # v1 only
        ("cgroup2", None, "cpu memory pids", False),  # v2 only
    ],
)
def test_hybrid_cgroups_are_v1_hierarchies_beside_a_v2_one_with_controllers(cgroups, root, unified, controllers, hybrid):
    cgroups(root, unified, controllers)
    assert ociruntime.hybrid_cgroups() is hybrid


def test_on_a_hybrid_host_crun_runs_through_a_wrapper_only_root_can_change(cgroups, tmp_path):
    cgroups("tmpfs", "cgroup2", "hugetlb")
    command = ociruntime.runtime_command(tmp_path)
    wrapper = tmp_path / ociruntime.WRAPPER_NAME
    assert command == str(wrapper)
    mode = wrapper.stat().st_mode
    assert stat.S_IMODE(mode) == 0o700 and wrapper.stat().st_uid == os.getuid()
    text = wrapper.read_text()
    assert "unshare --mount --propagation slave" in text and f"umount {ociruntime.UNIFIED}" in text
    assert (ociruntime.shutil.which("crun") or "crun") in text
    wrapper.write_text("#!/bin/sh\nexec /bin/evil \"$@\"\n")  # changed behind the node's back
    assert ociruntime.runtime_command(tmp_path) == command and wrapper.read_text() == text


def test_elsewhere_crun_runs_as_it_is(cgroups, tmp_path):
    cgroups("cgroup2", None, "cpu memory")
    assert ociruntime.runtime_command(tmp_path) == (ociruntime.shutil.which("crun") or "crun")
    assert not (tmp_path / ociruntime.WRAPPER_NAME).exists()


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
