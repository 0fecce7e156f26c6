"""The ContainerSpec settings dockerd honours, honoured by a node's task runtime in real containers (crun under
conmon, in process, from busybox images, as tests/test_runtime.py runs them): the stop signal reaches the
process (and still does after an agent restart), added and dropped capabilities, a read-only root, sysctls,
ulimits, the DNS config and extra hosts in /etc/resolv.conf and /etc/hosts, added groups, the OOM score
adjustment and no-new-privileges, and templated hostnames and environment values; and a setting no container
can have rejects the task, saying why.

Needs root with CAP_SYS_ADMIN, crun and conmon (`raftswarm.runtime.containers.unavailable`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import socket
import tarfile
import time
from pathlib import Path

import pytest
from test_runtime import SECOND, WAIT, Tasks, _app_rootfs, lines_of, output_of, until_logged

from raftswarm.images import archive, samples
from raftswarm.images.store import ImageStore
from raftswarm.runtime import containers
from raftswarm.objects.containerspec import InvalidContainerSpec, sysctls
from raftswarm.runtime.containers import ContainerRuntime, TaskRejected
from raftswarm.runtime.netsysctls import SysctlFailed, set_interface_sysctls

_UNAVAILABLE = containers.unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"containers cannot run here: {_UNAVAILABLE}")

DOCKER_DEFAULT_CAPS = 0xA80425FB
CAP_CHOWN, CAP_NET_ADMIN = 0, 12

TRAP_AND_WAIT = "trap 'echo got-{0}; exit 0' {0}; echo ready; while true; do sleep 0.1; done"
"""A shell that exits cleanly on signal {0} (a name without SIG), and only on it: PID 1 ignores every signal it
does not handle, so neither SIGTERM nor another one ends it."""


def _docker_archive(layer: bytes, config: dict, reference: str) -> bytes:
    """`docker save`'s format for a one-layer image: what `docker import` cannot make (a STOPSIGNAL)."""
    diff_id = f"sha256:{hashlib.sha256(layer).hexdigest()}"
    image_config = {"architecture": "amd64", "os": "linux", "config": config,
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    manifest = [{"Config": "config.json", "RepoTags": [reference], "Layers": ["layer.tar"]}]
    files = {
        "manifest.json": json.dumps(manifest).encode(),
        "config.json": json.dumps(image_config).encode(),
        "layer.tar": layer,
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> ImageStore:
    """busybox:latest; app:latest (test_runtime's: user app in group staff); usr1:latest, whose image config
    says STOPSIGNAL SIGUSR1."""
    store = ImageStore(tmp_path_factory.mktemp("images"))
    with open(samples.busybox().tarball, "rb") as tarball:
        archive.load(store, tarball)
    rootfs = _app_rootfs()
    store.import_tarball(io.BytesIO(rootfs), "app:latest", {"Env": ["PATH=/bin"]})
    usr1 = _docker_archive(rootfs, {"Env": ["PATH=/bin"], "StopSignal": "SIGUSR1"}, "usr1:latest")
    archive.load(store, io.BytesIO(usr1))
    yield store
    assert os.listdir(store.root / "containers") == []


@pytest.fixture
async def tasks(tmp_path, images):
    tracker = Tasks(ContainerRuntime(tmp_path / "rt", images), images)
    yield tracker
    await tracker.close()


# -- StopSignal ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", ["SIGINT", "INT", "2"])
async def test_stop_sends_the_specs_stop_signal_to_the_process(tasks, stop_signal):
    container = await tasks.start(tasks.task("sh", "-c", TRAP_AND_WAIT.format("INT"), StopSignal=stop_signal))
    await until_logged(container, b"ready")
    began = time.monotonic()
    assert await asyncio.wait_for(container.stop(60 * SECOND), WAIT) == 0  # it trapped SIGINT and exited
    assert time.monotonic() - began < 30  # long before the grace period: no SIGKILL was needed
    assert [line for _, _, line in await lines_of(container)] == [b"ready", b"got-INT"]


async def test_stop_sends_the_images_stop_signal_when_the_spec_names_none(tasks):
    container = await tasks.start(tasks.task("sh", "-c", TRAP_AND_WAIT.format("USR1"), image="usr1:latest"))
    await until_logged(container, b"ready")
    assert await asyncio.wait_for(container.stop(60 * SECOND), WAIT) == 0
    assert [line for _, _, line in await lines_of(container)] == [b"ready", b"got-USR1"]


async def test_the_specs_stop_signal_wins_over_the_images(tasks):
    task = tasks.task("sh", "-c", TRAP_AND_WAIT.format("HUP"), image="usr1:latest", StopSignal="SIGHUP")
    container = await tasks.start(task)
    await until_logged(container, b"ready")
    assert await asyncio.wait_for(container.stop(60 * SECOND), WAIT) == 0
    assert (await lines_of(container))[-1][2] == b"got-HUP"


async def test_a_runtime_that_reattaches_after_an_agent_restart_stops_with_the_same_signal(tasks, images):
    task = tasks.task("sh", "-c", TRAP_AND_WAIT.format("QUIT"), StopSignal="SIGQUIT")
    container = await tasks.start(task)
    await until_logged(container, b"ready")
    container.forget()  # the agent goes away; the task runs on

    found = await ContainerRuntime(tasks.runtime.directory, images).attach(task["ID"])
    assert found is not None
    assert await asyncio.wait_for(found.stop(60 * SECOND), WAIT) == 0
    assert (await lines_of(found))[-1][2] == b"got-QUIT"
    await found.release()


async def test_a_process_that_ignores_the_stop_signal_is_killed_after_the_grace_period(tasks):
    container = await tasks.start(tasks.task("sh", "-c", TRAP_AND_WAIT.format("INT"), StopSignal="SIGUSR2"))
    await until_logged(container, b"ready")
    began = time.monotonic()
    assert await asyncio.wait_for(container.stop(SECOND), WAIT) == 137  # SIGUSR2 did nothing to PID 1
    assert time.monotonic() - began >= 1.0


# -- CapabilityAdd / CapabilityDrop ----------------------------------------------------------------------


def _cap_eff(out: str) -> int:
    (line,) = [line for line in out.splitlines() if line.startswith("CapEff:")]
    return int(line.split()[1], 16)


async def test_a_dropped_capability_is_gone_and_an_added_one_is_there(tasks):
    script = "grep CapEff /proc/self/status; touch /tmp/f; chown 1 /tmp/f; echo chown=$?"
    code, out, _ = await tasks.run("sh", "-c", script)
    assert _cap_eff(out) == DOCKER_DEFAULT_CAPS and "chown=0" in out  # the default, unchanged
    code, out, err = await tasks.run("sh", "-c", script, CapabilityDrop=["CHOWN"], CapabilityAdd=["CAP_NET_ADMIN"])
    assert code == 0
    assert _cap_eff(out) == DOCKER_DEFAULT_CAPS & ~(1 << CAP_CHOWN) | 1 << CAP_NET_ADMIN
    assert "chown=1" in out and "Operation not permitted" in err  # even root cannot chown without it


async def test_dropping_all_capabilities_and_adding_one_leaves_only_that_one(tasks):
    code, out, _ = await tasks.run("sh", "-c", "grep CapEff /proc/self/status", CapabilityDrop=["ALL"],
                                   CapabilityAdd=["NET_BIND_SERVICE"])
    assert (code, _cap_eff(out)) == (0, 1 << 10)


# -- ReadOnly ----------------------------------------------------------------------------------------------


async def test_a_read_only_root_refuses_writes_but_dev_shm_stays_writable(tasks):
    script = (
        "touch /file; echo root=$?; touch /tmp/file; echo tmp=$?; echo x >> /etc/hosts; echo hosts=$?; "
        "touch /dev/shm/file; echo shm=$?; cat /etc/hostname >/dev/null; echo read=$?"
    )
    code, out, err = await tasks.run("sh", "-c", script, ReadOnly=True)
    assert code == 0
    outcomes = dict(line.split("=") for line in out.splitlines())
    assert outcomes == {"root": "1", "tmp": "1", "hosts": "1", "shm": "0", "read": "0"}
    assert "Read-only file system" in err
    _, out, _ = await tasks.run("sh", "-c", script)
    writable = {"root": "0", "tmp": "0", "hosts": "0", "shm": "0", "read": "0"}
    assert dict(line.split("=") for line in out.splitlines()) == writable


# -- Sysctls -----------------------------------------------------------------------------------------------


async def test_namespaced_sysctls_are_set_in_the_tasks_namespaces_only(tasks):
    sysctls = {"net.ipv4.ip_unprivileged_port_start": "80", "kernel.shmmni": "1234", "fs.mqueue.msg_max": "17"}
    script = "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni /proc/sys/fs/mqueue/msg_max"
    code, out, _ = await tasks.run("sh", "-c", script, Sysctls=sysctls)
    assert (code, out.split()) == (0, ["80", "1234", "17"])
    assert Path("/proc/sys/kernel/shmmni").read_text().strip() != "1234"  # the host's own is untouched


async def _plug_eth0(container) -> None:
    """What the node's networking does, reduced to one interface: an `eth0` in the task's namespace (a veth
    pair with both ends there, gone with the namespace)."""
    done = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={container.netns_path}", "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert await done.wait() == 0, (await done.stderr.read()).decode()


async def test_sysctls_of_the_tasks_interfaces_are_set_once_they_are_plugged_in(tasks):
    # crun writes a container's sysctls before eth0 is there; the runtime writes these after `prepare`.
    sysctls = {"net.ipv4.conf.eth0.rp_filter": "2", "net.ipv4.neigh.eth0.retrans_time_ms": "1200",
               "net.ipv4.conf.all.arp_ignore": "1"}
    script = "cat /proc/sys/net/ipv4/conf/eth0/rp_filter /proc/sys/net/ipv4/neigh/eth0/retrans_time_ms " \
             "/proc/sys/net/ipv4/conf/all/arp_ignore"
    host = Path("/proc/sys/net/ipv4/conf/all/arp_ignore").read_text()
    container = await tasks.start(tasks.task("sh", "-c", script, Sysctls=sysctls), prepare=_plug_eth0)
    code = await asyncio.wait_for(container.wait(), WAIT)
    out, _ = output_of(await lines_of(container))
    assert (code, out.split()) == (0, ["2", "1200", "1"])
    assert Path("/proc/sys/net/ipv4/conf/all/arp_ignore").read_text() == host  # the host's own is untouched


@pytest.mark.parametrize(
    "sysctls, message",
    [
        ({"net.ipv4.conf.eth1.rp_filter": "2"}, 'sysctl "net.ipv4.conf.eth1.rp_filter": the task has no interface eth1'),
        ({"net.ipv4.conf.eth0.no_such_setting": "1"}, 'sysctl "net.ipv4.conf.eth0.no_such_setting" = "1": there is no such'),
        ({"net.ipv4.conf.eth0.rp_filter": "many"}, 'sysctl "net.ipv4.conf.eth0.rp_filter" = "many": Invalid argument'),
    ],
)
async def test_a_sysctl_of_an_interface_that_cannot_be_set_rejects_the_task(tasks, sysctls, message):
    task = tasks.task("true", Sysctls=sysctls)
    with pytest.raises(TaskRejected, match=message):
        await tasks.start(task, prepare=_plug_eth0)
    assert not (tasks.runtime.tasks_dir / task["ID"]).exists()
    assert await tasks.leftovers() == []


@pytest.mark.security
async def test_a_sysctl_name_cannot_lead_the_node_out_of_proc_sys(tasks, tmp_path):
    # The node writes an interface's sysctls itself, as root, under /proc/sys: a name whose words make a host
    # path (an absolute one, or one climbing out with ..) must write nothing, at the API's check, at the
    # runtime's and in the writer itself (for a task that reached the node around both).
    target = tmp_path / "host"
    (target / "x").mkdir(parents=True)
    keys = [f"net.ipv4.conf.{target}.x.y", f"net.ipv4.conf.eth0/../../../../../..{target}.x.y", "net.ipv4.conf..x.y"]
    for key in keys:
        with pytest.raises(InvalidContainerSpec, match="is not a sysctl name"):
            sysctls({key: "1"}, [{"type": "network"}])
        with pytest.raises(TaskRejected, match="is not a sysctl name"):
            await tasks.start(tasks.task("true", Sysctls={key: "1"}), prepare=_plug_eth0)
        with pytest.raises(SysctlFailed, match="is not the sysctl of a network interface"):
            set_interface_sysctls("/proc/self/ns/net", {key: "1"})
    assert [str(p) for p in target.rglob("*")] == [str(target / "x")]
    assert await tasks.leftovers() == []


def test_the_namespace_of_a_task_that_is_gone_is_a_clear_failure():
    with pytest.raises(SysctlFailed, match="cannot enter the task's network namespace: No such file"):
        set_interface_sysctls("/proc/0/ns/net", {"net.ipv4.conf.eth0.rp_filter": "1"})


# -- Ulimits -----------------------------------------------------------------------------------------------
# -- Ulimits -----------------------------------------------------------------------------------------------


async def test_ulimits_are_the_processes_resource_limits(tasks):
    ulimits = [{"Name": "nofile", "Soft": 123, "Hard": 456}, {"Name": "core", "Soft": -1, "Hard": -1}]
    code, out, _ = await tasks.run("sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c", Ulimits=ulimits)
    assert (code, out.split()) == (0, ["123", "456", "unlimited"])


# -- DNSConfig and Hosts -----------------------------------------------------------------------------------


async def test_dns_config_and_extra_hosts_are_in_the_tasks_etc_files(tasks):
    networks = [{"Network": {"ID": "net1"}, "Addresses": ["10.0.1.5/24"]}]
    dns = {"Nameservers": ["192.0.2.53"], "Search": ["corp.example"], "Options": ["ndots:3", "timeout:2"]}
    hosts = ["192.0.2.10 db db.internal", "2001:db8::7 v6"]
    script = "cat /etc/resolv.conf; echo ---; cat /etc/hosts"
    code, out, _ = await tasks.run("sh", "-c", script, Hostname="web", networks=networks, DNSConfig=dns, Hosts=hosts)
    resolv, _, etc_hosts = out.partition("---\n")
    assert code == 0
    # On networks the resolver's own option follows the task's, as libnetwork writes them.
    assert resolv.splitlines() == ["nameserver 127.0.0.11", "search corp.example", "options ndots:3 timeout:2 ndots:0"]
    assert etc_hosts.splitlines()[-3:] == ["192.0.2.10\tdb db.internal", "2001:db8::7\tv6", "10.0.1.5\tweb"]

    code, out, _ = await tasks.run("sh", "-c", script, DNSConfig=dns, Hosts=hosts[:1])
    resolv, _, etc_hosts = out.partition("---\n")
    assert resolv.splitlines() == ["nameserver 192.0.2.53", "search corp.example", "options ndots:3 timeout:2"]
    assert etc_hosts.splitlines()[-1] == "192.0.2.10\tdb db.internal"


# -- Groups ------------------------------------------------------------------------------------------------


async def test_groups_are_added_to_the_users_own(tasks):
    code, out, _ = await tasks.run("sh", "-c", "id -G", image="app:latest", User="app", Groups=["root", "4242"])
    # app's own group and staff, and the added ones (`id -G` lists the primary group, then the kernel's sorted set)
    assert (code, out.split()) == (0, ["1000", "0", "50", "4242"])
    code, out, _ = await tasks.run("sh", "-c", "id -G", image="app:latest", User="app")
    assert out.split() == ["1000", "50"]


# -- OomScoreAdj and Privileges.NoNewPrivileges -----------------------------------------------------------


async def test_the_oom_score_adjustment_and_no_new_privileges_are_the_specs(tasks):
    script = "cat /proc/self/oom_score_adj; grep NoNewPrivs /proc/self/status"
    # A raised score: lowering one needs CAP_SYS_RESOURCE, which root in a sandbox may not have.
    code, out, _ = await tasks.run("sh", "-c", script, OomScoreAdj=321, Privileges={"NoNewPrivileges": True})
    assert (code, out.splitlines()) == (0, ["321", "NoNewPrivs:\t1"])
    code, out, _ = await tasks.run("sh", "-c", script)
    assert (code, out.splitlines()) == (0, ["0", "NoNewPrivs:\t0"])  # Docker's defaults for a swarm task


# -- templates -----------------------------------------------------------------------------------------------


async def test_a_templated_hostname_and_environment_are_expanded_on_the_node(tasks):
    task = tasks.task(
        "sh", "-c", "hostname; cat /etc/hostname; echo $HOSTNAME; echo $WHERE; tail -n 1 /etc/hosts",
        Hostname="{{.Service.Name}}-{{.Task.Slot}}",
        Env=["WHERE={{.Node.Hostname}}/{{.Node.Platform.OS}}/{{.Task.Name}}"],
        networks=[{"Network": {"ID": "net1"}, "Addresses": ["10.0.1.5/24"]}],
    )
    task.update(ServiceID="svc1", ServiceAnnotations={"Name": "web"}, Slot=2, NodeID="node1")
    container = await tasks.start(task)
    assert await asyncio.wait_for(container.wait(), WAIT) == 0
    out, _ = output_of(await lines_of(container))
    assert out.splitlines() == [
        "web-2", "web-2", "web-2", f"{socket.gethostname()}/linux/web.2.{task['ID']}", "10.0.1.5\tweb-2"
    ]


async def test_a_task_with_a_tty_has_a_terminal_and_its_output_is_logged(tasks):
    container = await tasks.start(tasks.task("sh", "-c", "test -t 1 && echo terminal; echo $TERM", TTY=True))
    assert await asyncio.wait_for(container.wait(), WAIT) == 0
    out, _ = output_of(await lines_of(container))
    assert [line.rstrip("\r") for line in out.splitlines()] == ["terminal", "xterm"]


# -- what no container can have ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"StopSignal": "SIGFOO"}, "invalid signal: SIGFOO"),
        ({"CapabilityAdd": ["SYS_EVERYTHING"]}, 'unknown capability: "CAP_SYS_EVERYTHING"'),
        ({"Sysctls": {"vm.swappiness": "10"}}, 'sysctl "vm.swappiness" is not in a separate kernel namespace'),
        ({"Sysctls": {"net.ipv4.ip_forward": "yes"}}, "ip_forward"),  # runc's own words on writing it
        # A task started with no network has no interface but lo.
        ({"Sysctls": {"net.ipv4.conf.eth0.rp_filter": "2"}}, 'sysctl "net.ipv4.conf.eth0.rp_filter": the task has no interface eth0'),
        ({"Ulimits": [{"Name": "files", "Soft": 1, "Hard": 1}]}, "invalid ulimit type: files"),
        ({"Ulimits": [{"Name": "nofile", "Soft": 9, "Hard": 1}]}, "soft limit must be less than or equal to hard"),
        ({"Hosts": ["db:192.0.2.10"]}, 'extra host "db:192.0.2.10" is not "IP_ADDRESS HOSTNAME'),
        ({"DNSConfig": {"Nameservers": ["dns.example"]}}, "nameserver 'dns.example' is not an IP address"),
        ({"Groups": ["no-such-group"]}, "unable to find group no-such-group"),
        ({"Hostname": "{{.Service.Nme}}"}, "expanding the hostname .* can't evaluate field Nme"),
        ({"Env": ["X={{range .Service.Labels}}"]}, "expanding env X .* is not supported"),
    ],
)
async def test_a_setting_no_container_can_have_rejects_the_task_saying_why_and_leaves_nothing(tasks, spec, message):
    task = tasks.task("true", **spec)
    with pytest.raises(TaskRejected, match=message):
        await tasks.start(task)
    assert not (tasks.runtime.tasks_dir / task["ID"]).exists()
    assert await tasks.leftovers() == []
