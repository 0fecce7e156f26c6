"""The OCI runtime spec a task runs under: Docker's process, user, isolation and resource rules, and the
ContainerSpec settings dockerd applies on top (StopSignal, CapabilityAdd/Drop, ReadOnly, Sysctls, Ulimits,
Groups, TTY, Privileges.NoNewPrivileges, OomScoreAdj)."""

import json

import pytest

from raftswarm.runtime.seccomp import default_profile
from raftswarm.objects.containerspec import (
    ALL_CAPABILITIES,
    RLIM_INFINITY,
    InvalidContainerSpec,
    parse_signal,
    sysctl_interface,
)
from raftswarm.runtime.spec import DEFAULT_PATH, STOP_SIGNAL_ANNOTATION, NoCommand, UnknownUser, resolve_user, task_spec

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
app:x:1000:1000::/home/app:/bin/sh
"""

GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
www-data:x:33:
app:x:1000:
audio:x:29:app,www-data
video:x:44:app
"""


def make_spec(container=None, image=None, **overrides):
    arguments = dict(
        task={"ID": "t1", "Spec": {"ContainerSpec": {"Image": "web@sha256:abc", **(container or {})}}},
        image_config=image if image is not None else {"Cmd": ["nginx"]},
        rootfs="/var/lib/raftswarm/tasks/t1/rootfs",
        hostname="0123456789ab",
        passwd=PASSWD,
        group=GROUP,
        netns=None,
        secrets_dir=None,
        resolv_conf=None,
        hosts=None,
        hostname_file=None,
        cgroups_path="/raftswarm/t1",
    )
    arguments.update(overrides)
    return task_spec(**arguments)


@pytest.mark.parametrize(
    "entrypoint, cmd, command, args, expected",
    [
        (None, ["nginx", "-g", "daemon off;"], None, None, ["nginx", "-g", "daemon off;"]),
        (["/entry.sh"], ["serve"], None, None, ["/entry.sh", "serve"]),
        (["/entry.sh"], ["serve"], None, ["migrate"], ["/entry.sh", "migrate"]),
        (["/entry.sh"], ["serve"], ["sh", "-c"], ["echo hi"], ["sh", "-c", "echo hi"]),
        # An overridden entrypoint resets the image's Cmd.
        (["/entry.sh"], ["serve"], ["sleep", "1"], None, ["sleep", "1"]),
        (None, ["serve"], None, ["top"], ["top"]),
    ],
)
def test_command_replaces_entrypoint_and_args_replace_cmd(entrypoint, cmd, command, args, expected):
    spec = make_spec({"Command": command, "Args": args}, {"Entrypoint": entrypoint, "Cmd": cmd})
    assert spec["process"]["args"] == expected


def test_nothing_to_run_is_refused_with_dockers_words():
    with pytest.raises(NoCommand, match="no command specified"):
        make_spec({}, {})


def test_spec_env_wins_over_image_env_and_path_has_a_default():
    spec = make_spec({"Env": ["MODE=prod", "EXTRA=1"]}, {"Cmd": ["x"], "Env": ["MODE=dev", "LANG=C.UTF-8"]})
    env = spec["process"]["env"]
    assert f"PATH={DEFAULT_PATH}" in env
    assert "HOSTNAME=0123456789ab" in env
    assert "MODE=prod" in env and "MODE=dev" not in env
    assert "LANG=C.UTF-8" in env and "EXTRA=1" in env


def test_image_path_replaces_the_default():
    env = make_spec({}, {"Cmd": ["x"], "Env": ["PATH=/opt/bin"]})["process"]["env"]
    assert [e for e in env if e.startswith("PATH=")] == ["PATH=/opt/bin"]


@pytest.mark.parametrize(
    "spec_dir, image_dir, expected",
    [("/srv", "/app", "/srv"), (None, "/app", "/app"), (None, None, "/")],
)
def test_cwd_spec_dir_then_image_workdir_then_root(spec_dir, image_dir, expected):
    spec = make_spec({"Dir": spec_dir}, {"Cmd": ["x"], "WorkingDir": image_dir})
    assert spec["process"]["cwd"] == expected


@pytest.mark.parametrize(
    "user, expected",
    [
        ("", (0, 0, [])),
        ("www-data", (33, 33, [29])),
        ("app", (1000, 1000, [29, 44])),
        ("1000", (1000, 1000, [29, 44])),
        ("4242", (4242, 0, [])),  # a uid the image does not list is fine
        ("app:tty", (1000, 5, [])),  # an explicit group means no supplementary groups
        ("app:5000", (1000, 5000, [])),
        ("4242:4242", (4242, 4242, [])),
    ],
)
def test_user_is_resolved_in_the_image(user, expected):
    assert resolve_user(user, PASSWD, GROUP) == expected


def test_user_comes_from_spec_then_image():
    user = make_spec({"User": "app"}, {"Cmd": ["x"], "User": "www-data"})["process"]["user"]
    assert user == {"uid": 1000, "gid": 1000, "additionalGids": [29, 44]}
    user = make_spec({}, {"Cmd": ["x"], "User": "www-data"})["process"]["user"]
    assert user == {"uid": 33, "gid": 33, "additionalGids": [29]}


def test_unknown_user_or_group_refused_with_dockers_words():
    with pytest.raises(UnknownUser, match="unable to find user nobody: no matching entries in passwd file"):
        make_spec({"User": "nobody"})
    with pytest.raises(UnknownUser, match="unable to find group staff: no matching entries in group file"):
        resolve_user("app:staff", PASSWD, GROUP)
    with pytest.raises(UnknownUser):
        resolve_user("app", None, None)  # an image without /etc/passwd knows no names


def test_capabilities_are_dockers_fourteen_not_inheritable():
    caps = make_spec()["process"]["capabilities"]
    expected = {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE",
    }
    for kind in ("bounding", "effective", "permitted"):
        assert set(caps[kind]) == expected and len(caps[kind]) == 14
    assert "inheritable" not in caps and "ambient" not in caps


def test_masked_and_readonly_proc_paths():
    linux = make_spec()["linux"]
    assert set(linux["maskedPaths"]) == {
        "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    }
    assert set(linux["readonlyPaths"]) == {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}


def test_default_mounts_with_64m_shm_and_readonly_sys():
    mounts = {m["destination"]: m for m in make_spec()["mounts"]}
    assert set(mounts) == {"/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"}
    shm = mounts["/dev/shm"]
    assert shm["type"] == "tmpfs"
    assert f"size={64 * 1024 * 1024}" in shm["options"]
    assert {"nosuid", "noexec", "nodev", "mode=1777"} <= set(shm["options"])
    assert "ro" in mounts["/sys"]["options"] and "ro" in mounts["/sys/fs/cgroup"]["options"]


def test_secrets_read_only_and_generated_etc_files_bound():
    spec = make_spec(secrets_dir="/run/rs/t1/secrets", resolv_conf="/rs/t1/resolv.conf", hosts="/rs/t1/hosts",
                     hostname_file="/rs/t1/hostname")
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/run/secrets"]["source"] == "/run/rs/t1/secrets"
    assert "ro" in mounts["/run/secrets"]["options"] and "rbind" in mounts["/run/secrets"]["options"]
    for destination, source in (("/etc/resolv.conf", "/rs/t1/resolv.conf"), ("/etc/hosts", "/rs/t1/hosts"),
                                ("/etc/hostname", "/rs/t1/hostname")):
        assert mounts[destination]["type"] == "bind" and mounts[destination]["source"] == source
        assert "ro" not in mounts[destination]["options"]


def test_namespaces_with_and_without_a_prepared_network():
    types = lambda spec: {n["type"]: n for n in spec["linux"]["namespaces"]}  # noqa: E731
    fresh = types(make_spec())
    assert set(fresh) == {"pid", "ipc", "uts", "mount", "cgroup", "network"}
    assert "path" not in fresh["network"]
    joined = types(make_spec(netns="/run/netns/t1"))
    assert joined["network"] == {"type": "network", "path": "/run/netns/t1"}


def test_resources_from_limits():
    spec = make_spec(limits={"MemoryBytes": 256 * 2**20, "NanoCPUs": 1_500_000_000, "Pids": 100})
    resources = spec["linux"]["resources"]
    assert resources["memory"] == {"limit": 256 * 2**20}
    assert resources["cpu"] == {"quota": 150_000, "period": 100_000}
    assert resources["pids"] == {"limit": 100}
    assert "memory" not in make_spec()["linux"]["resources"]


def test_device_cgroup_denies_all_then_allows_dockers_defaults():
    rules = make_spec()["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r["type"], r.get("major"), r.get("minor")) for r in rules[1:] if r["allow"]}
    assert {("c", 1, 3), ("c", 1, 5), ("c", 1, 9), ("c", 136, None), ("c", 5, 2)} <= allowed
    assert ("b", 8, 0) not in allowed


def test_root_hostname_cgroup_and_version():
    spec = make_spec()
    assert spec["ociVersion"] == "1.0.2"
    assert spec["root"] == {"path": "/var/lib/raftswarm/tasks/t1/rootfs", "readonly": False}
    assert spec["hostname"] == "0123456789ab"
    assert spec["linux"]["cgroupsPath"] == "/raftswarm/t1"
    assert spec["linux"]["seccomp"] == default_profile()


def test_seccomp_allows_by_default_and_denies_dockers_documented_list():
    profile = default_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert "SCMP_ARCH_X86_64" in profile["architectures"]
    always = [rule for rule in profile["syscalls"] if "args" not in rule]
    denied = {name for rule in always if rule["action"] == "SCMP_ACT_ERRNO" for name in rule["names"]}
    assert {"mount", "unshare", "setns", "ptrace", "keyctl", "bpf", "reboot", "fsopen", "move_mount"} <= denied
    assert not {"read", "write", "openat", "clone", "execve"} & denied
    assert all(rule["errnoRet"] == (38 if rule["names"] == ["clone3"] else 1) for rule in profile["syscalls"])
    clone_flags = [rule["args"][0]["value"] for rule in profile["syscalls"] if rule["names"] == ["clone"]]
    assert sum(clone_flags) == 0x7E020000  # every CLONE_NEW* flag is refused


def test_spec_is_json_serializable():
    spec = make_spec({"User": "app"}, netns="/run/netns/t1", secrets_dir="/s", limits={"MemoryBytes": 1 << 20})
    assert json.loads(json.dumps(spec)) == spec


# -- StopSignal ------------------------------------------------------------------------------------------


def stop_signal_of(spec: dict) -> int:
    return int(spec["annotations"][STOP_SIGNAL_ANNOTATION])


@pytest.mark.parametrize(
    "spec_signal, image_signal, expected",
    [
        (None, None, 15),  # Docker's default: SIGTERM
        ("SIGINT", None, 2),
        ("INT", None, 2),
        ("sigint", None, 2),
        ("2", None, 2),
        ("SIGUSR1", None, 10),
        ("SIGRTMIN+3", None, 37),
        ("RTMAX", None, 64),
        (None, "SIGQUIT", 3),  # the image's STOPSIGNAL when the service names none
        ("SIGHUP", "SIGQUIT", 1),  # the service's wins
    ],
)
def test_the_stop_signal_is_the_specs_then_the_images_then_sigterm(spec_signal, image_signal, expected):
    image = {"Cmd": ["x"], **({"StopSignal": image_signal} if image_signal else {})}
    assert stop_signal_of(make_spec({"StopSignal": spec_signal}, image)) == expected


@pytest.mark.parametrize("text", ["SIGFOO", "FOO", "0", "65", "-1", "SIG", "2.0", "١"])
def test_a_stop_signal_docker_would_not_parse_is_refused(text):
    with pytest.raises(InvalidContainerSpec, match="invalid signal"):
        make_spec({"StopSignal": text})
    with pytest.raises(InvalidContainerSpec, match="invalid signal"):
        parse_signal(text)


# -- CapabilityAdd / CapabilityDrop ----------------------------------------------------------------------

DEFAULT_CAPS = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
}


def capability_mask(names) -> int:
    return sum(1 << ALL_CAPABILITIES.index(name) for name in names)


def test_the_default_capabilities_are_dockers_mask():
    assert capability_mask(make_spec()["process"]["capabilities"]["bounding"]) == 0xA80425FB
    assert ALL_CAPABILITIES.index("CAP_SYS_ADMIN") == 21 and len(ALL_CAPABILITIES) == 41


@pytest.mark.parametrize(
    "add, drop, expected",
    [
        ([], [], DEFAULT_CAPS),
        (["NET_ADMIN"], [], DEFAULT_CAPS | {"CAP_NET_ADMIN"}),
        (["cap_net_admin", "sys_ptrace"], [], DEFAULT_CAPS | {"CAP_NET_ADMIN", "CAP_SYS_PTRACE"}),
        ([], ["CHOWN", "cap_kill"], DEFAULT_CAPS - {"CAP_CHOWN", "CAP_KILL"}),
        (["NET_ADMIN"], ["NET_RAW"], DEFAULT_CAPS - {"CAP_NET_RAW"} | {"CAP_NET_ADMIN"}),
        (["CHOWN"], [], DEFAULT_CAPS),  # adding one it has already changes nothing
        (["NET_ADMIN"], ["NET_ADMIN"], DEFAULT_CAPS | {"CAP_NET_ADMIN"}),  # CapAdd takes precedence
        (["ALL"], [], set(ALL_CAPABILITIES)),
        (["all"], ["SYS_ADMIN", "CAP_SYS_MODULE"], set(ALL_CAPABILITIES) - {"CAP_SYS_ADMIN", "CAP_SYS_MODULE"}),
        ([], ["ALL"], set()),
        (["NET_BIND_SERVICE"], ["ALL"], {"CAP_NET_BIND_SERVICE"}),
    ],
)
def test_capabilities_are_added_and_dropped_as_mobys_tweak_capabilities(add, drop, expected):
    caps = make_spec({"CapabilityAdd": add, "CapabilityDrop": drop})["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        assert set(caps[kind]) == expected and len(caps[kind]) == len(expected)  # each once
    assert "inheritable" not in caps and "ambient" not in caps


@pytest.mark.parametrize("field", ["CapabilityAdd", "CapabilityDrop"])
@pytest.mark.parametrize("name, shown", [("FOO", "CAP_FOO"), ("cap_bar", "CAP_BAR"), ("", "CAP_")])
def test_an_unknown_capability_is_refused_with_dockers_words(field, name, shown):
    with pytest.raises(InvalidContainerSpec, match=f'unknown capability: "{shown}"'):
        make_spec({field: [name]})


# -- ReadOnly ----------------------------------------------------------------------------------------------


def test_read_only_makes_the_root_and_the_etc_files_read_only_as_docker_does():
    spec = make_spec({"ReadOnly": True}, secrets_dir="/s", resolv_conf="/r", hosts="/h", hostname_file="/n")
    assert spec["root"]["readonly"] is True
    options = {m["destination"]: m["options"] for m in spec["mounts"]}
    for read_only in ("/etc/resolv.conf", "/etc/hosts", "/etc/hostname", "/run/secrets", "/sys", "/sys/fs/cgroup"):
        assert "ro" in options[read_only], read_only
    for writable in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"):
        assert "ro" not in options[writable], writable
    assert options["/sys"].count("ro") == 1


def test_without_read_only_the_root_is_writable():
    assert make_spec({"ReadOnly": False})["root"]["readonly"] is False


# -- Sysctls -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "net.ipv4.ip_forward", "net.core.somaxconn", "net.ipv4.conf.all.rp_filter",  # the task's netns
        "kernel.shmmax", "kernel.shmall", "kernel.shmmni", "kernel.shm_rmid_forced", "kernel.msgmax",
        "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "fs.mqueue.msg_max",  # its IPC namespace
        "kernel.domainname",  # its UTS namespace
    ],
)
def test_a_namespaced_sysctl_is_set(key):
    assert make_spec({"Sysctls": {key: "1"}})["linux"]["sysctl"] == {key: "1"}
    assert make_spec({"Sysctls": {key: "1"}}, netns="/run/netns/t1")["linux"]["sysctl"] == {key: "1"}


@pytest.mark.parametrize(
    "key, message",
    [
        ("vm.swappiness", 'sysctl "vm.swappiness" is not in a separate kernel namespace'),
        ("kernel.panic", "is not in a separate kernel namespace"),
        ("fs.file-max", "is not in a separate kernel namespace"),
        ("kernel.shm", "is not in a separate kernel namespace"),  # a prefix of the IPC ones is not one
        ("kernel.core_pattern", "is not in a separate kernel namespace"),
        ("kernel.hostname", "set the hostname with ContainerSpec.Hostname"),
    ],
)
def test_a_sysctl_of_the_host_is_refused(key, message):
    with pytest.raises(InvalidContainerSpec, match=message):
        make_spec({"Sysctls": {"net.ipv4.ip_forward": "1", key: "1"}})


def test_no_sysctl_section_without_sysctls():
    assert "sysctl" not in make_spec()["linux"]


@pytest.mark.parametrize(
    "key, interface",
    [
        ("net.ipv4.conf.eth0.rp_filter", "eth0"), ("net.ipv6.conf.eth1.accept_ra", "eth1"),
        ("net.ipv4.neigh.eth0.retrans_time_ms", "eth0"), ("net.ipv6.neigh.eth2.base_reachable_time_ms", "eth2"),
        # every namespace has these from the start, and crun sets them
        ("net.ipv4.conf.all.rp_filter", None), ("net.ipv6.conf.default.accept_ra", None),
        ("net.ipv4.conf.lo.rp_filter", None), ("net.ipv4.ip_forward", None), ("net.ipv4.conf", None),
        ("net.core.somaxconn", None), ("kernel.shmmax", None),
    ],
)
def test_sysctls_of_interfaces_are_left_to_the_runtime_after_the_interfaces_are_plugged_in(key, interface):
    assert sysctl_interface(key) == interface
    settings = {key: "1", "net.core.somaxconn": "1024"}
    expected = {"net.core.somaxconn": "1024"} if interface else settings
    assert make_spec({"Sysctls": settings})["linux"]["sysctl"] == expected
    assert "sysctl" not in make_spec({"Sysctls": {"net.ipv4.conf.eth0.rp_filter": "2"}})["linux"]


# -- Ulimits -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ulimits, expected",
    [
        ([{"Name": "nofile", "Soft": 1024, "Hard": 4096}], [("RLIMIT_NOFILE", 1024, 4096)]),
        ([{"Name": "nproc", "Soft": 10, "Hard": 10}, {"Name": "core", "Soft": 0, "Hard": 0}],
         [("RLIMIT_NPROC", 10, 10), ("RLIMIT_CORE", 0, 0)]),
        ([{"Name": "memlock", "Soft": -1, "Hard": -1}], [("RLIMIT_MEMLOCK", RLIM_INFINITY, RLIM_INFINITY)]),
        ([{"Name": "stack", "Soft": 8388608, "Hard": -1}], [("RLIMIT_STACK", 8388608, RLIM_INFINITY)]),
        ([{"Name": "nofile", "Soft": 1, "Hard": 2}, {"Name": "nofile", "Soft": 3, "Hard": 4}],
         [("RLIMIT_NOFILE", 3, 4)]),  # the last one for a name
        *[([{"Name": name, "Soft": 1, "Hard": 1}], [(f"RLIMIT_{name.upper()}", 1, 1)]) for name in (
            "cpu", "data", "fsize", "locks", "msgqueue", "nice", "rss", "rtprio", "rttime", "sigpending")],
    ],
)
def test_ulimits_become_rlimits_by_dockers_names(ulimits, expected):
    rlimits = make_spec({"Ulimits": ulimits})["process"]["rlimits"]
    assert [(r["type"], r["soft"], r["hard"]) for r in rlimits] == expected


@pytest.mark.parametrize(
    "ulimit, message",
    [
        ({"Name": "files", "Soft": 1, "Hard": 1}, "invalid ulimit type: files"),
        ({"Name": "NOFILE", "Soft": 1, "Hard": 1}, "invalid ulimit type: NOFILE"),
        ({"Name": "as", "Soft": 1, "Hard": 1}, "invalid ulimit type: as"),  # not one of go-units' names
        ({"Soft": 1, "Hard": 1}, "invalid ulimit type"),
        ({"Name": "nofile", "Soft": 10, "Hard": 5}, "soft limit must be less than or equal to hard limit: 10 > 5"),
        ({"Name": "nofile", "Soft": -1, "Hard": 5}, "soft limit must be less than or equal to hard limit: -1 > 5"),
        ({"Name": "nofile", "Soft": -2, "Hard": 5}, "-2 is not a limit"),
    ],
)
def test_a_ulimit_docker_would_refuse_is_refused(ulimit, message):
    with pytest.raises(InvalidContainerSpec, match=message):
        make_spec({"Ulimits": [ulimit]})


def test_no_rlimits_without_ulimits():
    assert "rlimits" not in make_spec()["process"]


# -- Groups ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user, groups, expected",
    [
        ("", ["audio"], [29]),
        ("", ["audio", "44"], [29, 44]),  # by name or by gid
        ("", ["4242"], [4242]),  # a gid the image does not list is used as is
        ("app", ["tty"], [29, 44, 5]),  # after the user's own supplementary groups
        ("app", ["video", "audio"], [29, 44]),  # each once
        ("app:tty", ["audio"], [29]),  # an explicit group drops the user's, not the added ones
        ("www-data", ["33"], [29, 33]),
    ],
)
def test_groups_are_added_to_the_users_supplementary_groups(user, groups, expected):
    process_user = make_spec({"User": user, "Groups": groups})["process"]["user"]
    assert process_user["additionalGids"] == expected


def test_an_unknown_group_name_is_refused_with_runcs_words():
    with pytest.raises(UnknownUser, match="unable to find group staff: no matching entries in group file"):
        make_spec({"Groups": ["audio", "staff"]})
    with pytest.raises(UnknownUser, match="unable to find group audio"):
        make_spec({"Groups": ["audio"]}, group=None)  # an image without /etc/group knows no names
    with pytest.raises(UnknownUser, match="out of range"):
        make_spec({"Groups": [str(2**31)]})


# -- TTY ---------------------------------------------------------------------------------------------------


def test_a_tty_gives_the_process_a_terminal_and_term_xterm():
    process = make_spec({"TTY": True})["process"]
    assert process["terminal"] is True and "TERM=xterm" in process["env"]
    process = make_spec({"TTY": True, "Env": ["TERM=vt100"]})["process"]
    assert [e for e in process["env"] if e.startswith("TERM=")] == ["TERM=vt100"]  # the spec's wins
    process = make_spec()["process"]
    assert process["terminal"] is False and not any(e.startswith("TERM=") for e in process["env"])


# -- Privileges.NoNewPrivileges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "privileges, expected",
    [
        (None, False),  # Docker's default for a swarm task: setuid binaries in the image still work
        ({}, False),
        ({"NoNewPrivileges": False}, False),
        ({"NoNewPrivileges": True}, True),
        ({"NoNewPrivileges": True, "Seccomp": {"Mode": "default"}}, True),
    ],
)
def test_no_new_privileges_is_the_specs(privileges, expected):
    container = {"Privileges": privileges} if privileges is not None else {}
    assert make_spec(container)["process"]["noNewPrivileges"] is expected


# -- OomScoreAdj -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", [-1000, -500, 1, 100, 1000])
def test_oom_score_adj_is_the_specs(score):
    spec = make_spec({"OomScoreAdj": score})
    assert spec["process"]["oomScoreAdj"] == score
    assert json.loads(json.dumps(spec))["process"]["oomScoreAdj"] == score  # as config.json carries it


def test_without_oom_score_adj_the_task_gets_0_not_the_nodes_own():
    assert make_spec()["process"]["oomScoreAdj"] == 0  # moby writes HostConfig.OomScoreAdj, 0 included
