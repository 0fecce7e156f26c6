"""`raftswarm service create/update/inspect/ls/ps` against the real docker CLI: the same flags sent through
`docker service ...` and `raftswarm service ...` to one fake node must make the same request bodies (and the
same output, for the listing commands), and a value docker refuses is refused with docker's message.

Where raftswarm differs on purpose the test says so: raftswarm leaves out `"Init": false` (so that the node's
`--init` default applies) and an empty `"DNSConfig": {}`, which the node reads as Docker does; generic resources
come in the order given (docker's is random).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from fake_engine import SELF_ID, WORKER_ID, FakeEngine, standard_swarm

from raftswarm.cli.main import main

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")

SERVICE_ID = "kzqr6fwm5rh7fzjxvfhqxn1zv"
CONFIG_ID = "cfgq7ohwsy2kpjcbnlq1vjc0a"
# The API version the docker CLI is told to speak (the fake node answers no version of its own).
API_VERSION = "1.50"


class VersionedEngine(FakeEngine):
    """The fake node, answering docker's versioned paths (`/v1.50/services/create`) as the plain ones."""

    async def _handle(self, request: web.Request) -> web.Response:
        path = re.sub(r"^/v\d+\.\d+/", "/", request.path)
        return await super()._handle(request.clone(rel_url=request.rel_url.with_path(path)))


@pytest.fixture
def engine(tmp_path: Path):
    with VersionedEngine(tmp_path / "engine.sock") as fake:
        standard_swarm(fake)
        fake.reply("POST", "/services/create", {"ID": SERVICE_ID}, status=201)
        fake.reply("GET", "/configs", [{"ID": CONFIG_ID, "Version": {"Index": 3}, "Spec": {"Name": "gmsa"}}])
        for network in ("backend", "frontend"):
            fake.reply("GET", f"/networks/{network}", {"ID": network, "Name": network, "Scope": "swarm"})
        yield fake


# Variables of this environment the docker CLI is given too (a bare `-e NAME` takes its value from there).
SHARED_VARIABLES = ("FROM_HOST",)


def docker(engine: FakeEngine, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **{name: os.environ[name] for name in SHARED_VARIABLES if name in os.environ},
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / "docker-config"),
        "DOCKER_HOST": engine.url,
        "DOCKER_API_VERSION": API_VERSION,
    }
    return subprocess.run(["docker", *args], check=False, capture_output=True, text=True, env=env, timeout=60)


def raftswarm(engine: FakeEngine, *args: str):
    return CliRunner(env={"RAFTSWARM_HOST": None, "DOCKER_HOST": None}).invoke(main, ["-H", engine.url, *args])


def bodies(engine: FakeEngine, method: str, path: str) -> list[Any]:
    return [r.body for r in engine.requests if r.method == method and r.path == path]


def sent_by_both(engine: FakeEngine, home: Path, args: list[str], method: str, path: str) -> tuple[Any, Any]:
    """The body each CLI sends for `args` (docker's first); each must succeed and send exactly one."""
    engine.requests.clear()
    done = docker(engine, home, *args)
    assert done.returncode == 0, done.stderr
    (by_docker,) = bodies(engine, method, path)
    engine.requests.clear()
    result = raftswarm(engine, *args)
    assert result.exit_code == 0, result.output
    (by_raftswarm,) = bodies(engine, method, path)
    return by_docker, by_raftswarm


def as_raftswarm_sends(body: dict[str, Any], args: list[str]) -> dict[str, Any]:
    """docker's body with the zero values raftswarm leaves out (see the module docstring), generic resources
    in a fixed order."""
    body = copy.deepcopy(body)
    container = body["TaskTemplate"]["ContainerSpec"]
    if container.get("Init") is False and not any(a.startswith("--init") for a in args):
        del container["Init"]
    if container.get("DNSConfig") == {}:
        del container["DNSConfig"]
    return with_sorted_generic_resources(body)


def with_sorted_generic_resources(body: dict[str, Any]) -> dict[str, Any]:
    reservations = (body["TaskTemplate"].get("Resources") or {}).get("Reservations") or {}
    if "GenericResources" in reservations:
        reservations["GenericResources"].sort(key=lambda r: r["DiscreteResourceSpec"].get("Kind", ""))
    return body


# -- service create -------------------------------------------------------------------------------------------

CREATE_CASES = {
    "mounts": [
        "--mount", "type=bind,src=./data,dst=/data,ro",
        "--mount", "type=bind,source=/srv,target=/srv,readonly=false,bind-propagation=RSLAVE,consistency=cached",
        "--mount", "type=bind,src=/a,dst=/a,bind-nonrecursive",
        "--mount", "type=bind,src=/b,dst=/b,ro=1,bind-recursive=writable",
        "--mount", "type=bind,src=/c,dst=/c,ro,bind-recursive=readonly,bind-propagation=rprivate",
        "--mount", "type=bind,src=/d,dst=/d,bind-recursive=enabled",
        "--mount", "src=cache,dst=/cache,volume-label=a=b,volume-label=c,volume-opt=o=1,volume-nocopy,volume-driver=local",
        "--mount", "type=volume,dst=/anon",
        "--mount", "type=volume,src=v,dst=/v,volume-nocopy=false,volume-subpath=sub",
        "--mount", "type=tmpfs,dst=/tmp,tmpfs-size=64m,tmpfs-mode=1777",
        "--mount", "type=tmpfs,destination=/run",
        "--mount", '"type=bind","src=/with,comma",dst=/e',
        "--mount", "type=image,src=busybox,dst=/img,image-subpath=bin",
    ],
    "mount options left empty": [
        "--mount", "type=volume,dst=/v,volume-opt=,volume-label=,volume-driver=",
        "--mount", "type=bind,src=/b,dst=/b,bind-propagation=",
        "--mount", "type=tmpfs,dst=/t,tmpfs-size=0",
        "--mount", "type=volume,dst=/w,readonly=false,ro=true,ro=0",
    ],
    "ulimits": ["--ulimit", "nofile=1024:4096", "--ulimit", "core=-1", "--ulimit", "nproc=10", "--ulimit", "nofile=2048"],
    "healthcheck": [
        "--health-cmd", "curl -f http://localhost/ || exit 1", "--health-interval", "30s", "--health-timeout", "5s",
        "--health-retries", "3", "--health-start-period", "1m", "--health-start-interval", "2s",
    ],
    "healthcheck without a command": ["--health-interval", "0s", "--health-retries", "0x2"],
    "no healthcheck": ["--no-healthcheck"],
    "no healthcheck false": ["--no-healthcheck=false"],
    "capabilities": ["--cap-add", "net_admin", "--cap-add", "CAP_SYS_TIME", "--cap-drop", " chown ", "--cap-drop", "NET_ADMIN", "--cap-drop", "reset"],
    "all capabilities": ["--cap-add", "ALL", "--cap-add", "net_raw", "--cap-drop", "all"],
    "dns": [
        "--dns", "8.8.8.8", "--dns", " 2001:DB8::1 ", "--dns", "::ffff:1.2.3.4", "--dns-search", "example.com.",
        "--dns-search", ".", "--dns-search", " corp.example ", "--dns-option", "ndots:2", "--dns-option", "timeout:1",
    ],
    "odd values docker takes": [
        "--dns-search", ":example.com", "--sysctl", "a=b=c", "--log-driver", "syslog", "--log-opt", "tag",
        "--log-opt", "a=b=c", "--init=1", "--entrypoint", '"a\\"b" \\ c', "--oom-score-adj", "0x10",
    ],
    "hosts": ["--host", "db:10.0.0.5", "--host", "v6:::1", "--host", "gw=host-gateway", "--host", "b:[fe80::2]"],
    "container fields": [
        "--group", "wheel", "--group", "100", "--sysctl", "net.core.somaxconn=1024", "--sysctl", "net.ipv4.ip_forward",
        "--sysctl", "net.core.somaxconn=2048", "--stop-signal", "SIGINT", "-dt", "--read-only", "--isolation", "default",
        "--oom-score-adj", "-500",
    ],
    "false booleans": ["--tty=false", "--read-only=0", "--init=false"],
    "init": ["--init"],
    "booleans with values, short and long": ["-dt=false", "--read-only=true", "--no-healthcheck=1"],
    "entrypoint": ["--entrypoint", "sh -c 'echo \"hi there\"' # a comment\nnext"],
    "empty entrypoint": ["--entrypoint", ""],
    "log driver": ["--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3"],
    "log options without a driver": ["--log-opt", "max-size=10m"],
    "credential spec file": ["--credential-spec", "file://spec.json"],
    "credential spec registry": ["--credential-spec", "registry://HKLM\\spec"],
    "credential spec config": ["--credential-spec", "config://gmsa"],
    "empty credential spec": ["--credential-spec", ""],
    "generic resources": ["--generic-resource", "gpu=2", "--generic-resource", " fpga = 1 ", "--generic-resource", "ssd=0"],
    "replicated job": ["--mode", "replicated-job", "--replicas", "5", "--max-concurrent", "2"],
    "replicated job, replicas only": ["--mode", "replicated-job", "--replicas", "3"],
    "replicated job, defaults": ["--mode", "replicated-job", "--restart-condition", "none"],
    "replicated job, zero": ["--mode", "replicated-job", "--replicas", "0"],
    "global job": ["--mode", "global-job", "--replicas-max-per-node", "0"],
    "uints in Go's bases": ["--replicas", "0x10", "--replicas-max-per-node", "010", "--update-parallelism", "1_0"],
    "everything at once": [
        "--name", "web", "--network", "frontend", "-e", "A=1", "--mount", "type=tmpfs,dst=/scratch",
        "--ulimit", "nofile=10", "--health-cmd", "true", "--cap-add", "sys_ptrace", "--dns", "1.1.1.1",
        "--host", "a:1.2.3.4", "--group", "g", "--sysctl", "k=v", "--log-driver", "local", "--tty",
        "--entrypoint", "/bin/sh", "--generic-resource", "gpu=1", "--oom-score-adj", "10", "--stop-signal", "9",
    ],
}  # fmt: skip


@pytest.mark.parametrize("flags", list(CREATE_CASES.values()), ids=list(CREATE_CASES))
def test_create_sends_what_docker_sends(engine, tmp_path, flags):
    args = ["service", "create", "-d", "--no-resolve-image", *flags, "nginx:1.27", "nginx", "-g", "daemon off;"]

    by_docker, by_raftswarm = sent_by_both(engine, tmp_path, args, "POST", "/services/create")

    assert with_sorted_generic_resources(by_raftswarm) == as_raftswarm_sends(by_docker, flags)


def test_create_with_an_env_file_sends_what_docker_sends(engine, tmp_path, monkeypatch):
    env_file = tmp_path / "app.env"
    env_file.write_bytes(
        b"\xef\xbb\xbfFIRST=1\n# a comment\n\n   INDENTED=two words  \nQUOTED=\"kept\"\nFROM_HOST\nNOT_SET\nFIRST=override\r\n"
    )
    monkeypatch.setenv("FROM_HOST", "from the host")
    other = tmp_path / "other.env"
    other.write_text("SECOND=2\nA=from file\n")
    flags = ["--env-file", str(env_file), "--env-file", str(other), "-e", "A=from flag", "-e", "SECOND"]

    args = ["service", "create", "-d", "--no-resolve-image", *flags, "nginx:1.27"]
    by_docker, by_raftswarm = sent_by_both(engine, tmp_path, args, "POST", "/services/create")

    assert by_raftswarm == as_raftswarm_sends(by_docker, flags)
    assert by_raftswarm["TaskTemplate"]["ContainerSpec"]["Env"] == [
        "INDENTED=two words  ",
        'QUOTED="kept"',
        "FROM_HOST=from the host",
        "FIRST=override",
        "A=from flag",
        "SECOND",
    ]


BAD_VALUES = [
    ("--mount", "type=bind"),
    ("--mount", "src=/x"),
    ("--mount", "type=bind,dst=/x,volume-nocopy"),
    ("--mount", "type=volume,dst=/x,tmpfs-size=1m"),
    ("--mount", "type=tmpfs,dst=/x,bind-propagation=shared"),
    ("--mount", "type=bind,dst=/x,image-subpath=a"),
    ("--mount", "type=bind,dst=/x,foo=1"),
    ("--mount", "type=bind,dst=/x,ro=maybe"),
    ("--mount", "type=tmpfs,dst=/x,tmpfs-mode=9"),
    ("--mount", "type=tmpfs,dst=/x,tmpfs-size=1q"),
    ("--mount", "dst=/x,bogus"),
    ("--mount", "type=bind,src=/a,dst=/b,bind-recursive=x"),
    ("--mount", "type=bind,src=/a,dst=/b,bind-recursive=writable"),
    ("--mount", "type=bind,src=/a,dst=/b,ro,bind-recursive=readonly"),
    ("--mount", "type=,dst=/b"),
    ("--ulimit", "nofile"),
    ("--ulimit", "foo=1"),
    ("--ulimit", "nofile=2:1"),
    ("--ulimit", "nofile=unlimited"),
    ("--ulimit", "nofile=-1:10"),
    ("--ulimit", "nofile=1:2:3"),
    ("--ulimit", "nofile=99999999999999999999"),
    ("--host", "foo"),
    ("--host", "foo:bar"),
    ("--host", ":1.2.3.4"),
    ("--dns", "1.2.3"),
    ("--dns", "fe80::1%eth0"),
    ("--dns-search", "-x"),
    ("--dns-search", "123"),
    ("--generic-resource", "gpu"),
    ("--health-interval", "-1s"),
    ("--health-retries", "x"),
    ("--credential-spec", "foo"),
    ("--oom-score-adj", "x"),
    ("--max-concurrent", "-1"),
    ("--replicas", "1.5"),
    ("--entrypoint", "'unclosed"),
    ("--entrypoint", "trailing\\"),
    ("--tty=maybe", None),
    ("--detach=maybe", None),
]


@pytest.mark.parametrize(("flag", "value"), BAD_VALUES)
def test_a_value_docker_refuses_is_a_usage_error_with_dockers_reason(engine, tmp_path, flag, value):
    args = ["service", "create", "--no-resolve-image", flag, *([value] if value is not None else []), "nginx:1.27"]

    done = docker(engine, tmp_path, *args)
    engine.requests.clear()
    result = raftswarm(engine, *args)

    assert done.returncode == 125, done.stderr
    reason = re.match(r'invalid argument ".*" for "[^"]+" flag: (.*)', done.stderr, re.DOTALL)
    assert reason is not None, done.stderr
    assert result.exit_code == 2, result.output
    assert reason.group(1).splitlines()[0] in result.stderr
    assert engine.mutations() == []


REFUSED = [
    ["--no-healthcheck", "--health-retries", "2"],
    ["--no-healthcheck", "--health-cmd", "true"],
    ["--mode", "bogus"],
    ["--max-concurrent", "2"],
    ["--mode", "global", "--max-concurrent", "2"],
    ["--mode", "global-job", "--max-concurrent", "2"],
    ["--mode", "global-job", "--replicas", "2"],
    ["--mode", "global-job", "--replicas-max-per-node", "2"],
    ["--mode", "replicated-job", "--update-delay", "1s"],
    ["--mode", "global-job", "--rollback-parallelism", "2"],
    ["--generic-resource", "gpu=a"],
    ["--generic-resource", "gpu=1", "--generic-resource", "gpu=a"],
    ["--generic-resource", "gpu=-1"],
    ["--generic-resource", "a=b=c"],
    ["--env-file", "/nonexistent/app.env"],
    ["--credential-spec", "config://missing"],
]


@pytest.mark.parametrize("flags", REFUSED, ids=[" ".join(f) for f in REFUSED])
def test_a_combination_docker_refuses_is_refused_with_dockers_message(engine, tmp_path, flags):
    engine.reply("GET", "/configs", [])
    args = ["service", "create", "--no-resolve-image", *flags, "nginx:1.27"]

    done = docker(engine, tmp_path, *args)
    engine.requests.clear()
    result = raftswarm(engine, *args)

    assert done.returncode == 1, done.stderr
    assert result.exit_code == 1, result.output
    assert result.stderr == done.stderr
    assert engine.mutations() == []


# -- service update ---------------------------------------------------------------------------------------


def service(container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """`web` as the node answers GET /services/web, its Spec as Go writes it (so that docker, which decodes
    and re-encodes it, sends back what it did not change as it was)."""
    return {
        "ID": SERVICE_ID,
        "Version": {"Index": 17},
        "CreatedAt": "2024-05-01T10:00:00Z",
        "UpdatedAt": "2024-05-01T10:05:00Z",
        "Spec": {
            "Name": "web",
            "Labels": {"tier": "front"},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "nginx:1.27", "Init": False, **(container or {})},
                "Resources": {"Limits": {}, "Reservations": {}},
                "Placement": {},
                "ForceUpdate": 0,
            },
            "Mode": {"Replicated": {"Replicas": 2}},
            "EndpointSpec": {"Mode": "vip"},
            **spec,
        },
        "Endpoint": {"Spec": {"Mode": "vip"}},
    }


MOUNTS = [
    {"Type": "bind", "Source": "/srv/b", "Target": "/b"},
    {"Type": "volume", "Source": "data", "Target": "/data", "VolumeOptions": {"NoCopy": True}},
    {"Type": "bind", "Source": "/srv/a", "Target": "/a", "ReadOnly": True},
    {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 1024}},
]
ULIMITS = [{"Name": "nproc", "Hard": 20, "Soft": 10}, {"Name": "core", "Hard": -1, "Soft": -1}]
HEALTHCHECK = {"Test": ["CMD-SHELL", "true"], "Interval": 10**10, "Timeout": 10**9, "Retries": 3}
DNS = {"Nameservers": ["8.8.8.8", "1.1.1.1"], "Search": ["example.com"], "Options": ["ndots:2"]}
HOSTS = ["10.0.0.1 a b c", "10.0.0.2 a", "::1 v6"]
CREDENTIAL_PRIVILEGES = {
    "CredentialSpec": {"Config": "", "File": "spec.json", "Registry": ""},
    "SELinuxContext": None,
    "NoNewPrivileges": False,
}

UPDATE_CASES = {
    "no flags re-sorts mounts and ulimits": ({"Mounts": MOUNTS, "Ulimits": ULIMITS}, []),
    "mounts": (
        {"Mounts": MOUNTS},
        ["--mount-add", "type=bind,src=/srv/new,dst=/b", "--mount-add", "type=tmpfs,dst=/run", "--mount-rm", "/data"],
    ),
    "mount removed by a target it does not have": ({"Mounts": MOUNTS}, ["--mount-rm", "/nowhere"]),
    "all mounts removed": ({"Mounts": MOUNTS[:1]}, ["--mount-rm", "/b"]),
    "ulimits": ({"Ulimits": ULIMITS}, ["--ulimit-add", "nofile=10:20", "--ulimit-add", "nproc=5", "--ulimit-rm", "core=whatever"]),
    "healthcheck command replaces NONE": ({"Healthcheck": {"Test": ["NONE"]}}, ["--health-cmd", "curl -f localhost"]),
    "healthcheck fields": (
        {"Healthcheck": HEALTHCHECK},
        ["--health-retries", "0", "--health-interval", "1m", "--health-start-period", "5s"],
    ),
    "healthcheck command removed": ({"Healthcheck": HEALTHCHECK}, ["--health-cmd", ""]),
    "no healthcheck": ({"Healthcheck": HEALTHCHECK}, ["--no-healthcheck"]),
    "no healthcheck false": ({"Healthcheck": {"Test": ["NONE"]}}, ["--no-healthcheck=false"]),
    "healthcheck made": ({}, ["--health-timeout", "3s"]),
    "capabilities": (
        {"CapabilityAdd": ["CAP_NET_ADMIN", "CAP_SYS_TIME"], "CapabilityDrop": ["CAP_CHOWN"]},
        ["--cap-add", "chown", "--cap-add", "cap_net_raw", "--cap-drop", "net_admin", "--cap-drop", "sys_time", "--cap-add", "sys_time"],
    ),
    "capabilities reset": (
        {"CapabilityAdd": ["CAP_NET_ADMIN"], "CapabilityDrop": ["CAP_CHOWN", "CAP_KILL"]},
        ["--cap-add", "RESET", "--cap-add", "sys_admin", "--cap-drop", "reset"],
    ),
    "capabilities all": ({"CapabilityAdd": ["CAP_NET_ADMIN"]}, ["--cap-add", "ALL"]),
    "dns": (
        {"DNSConfig": DNS},
        ["--dns-add", "9.9.9.9", "--dns-add", "8.8.8.8", "--dns-rm", "1.1.1.1", "--dns-search-add", "corp", "--dns-option-rm", "ndots:2"],
    ),
    "dns made": ({}, ["--dns-search-add", "example.org"]),
    "dns emptied": ({"DNSConfig": {"Nameservers": ["8.8.8.8"]}}, ["--dns-rm", "8.8.8.8"]),
    "hosts": (
        {"Hosts": HOSTS},
        ["--host-rm", "a:10.0.0.1", "--host-rm", "c", "--host-add", "d:10.0.0.4", "--host-add", "v6:::1", "--host-add", "e=10.0.0.5"],
    ),
    "hosts removed": ({"Hosts": HOSTS}, ["--host-rm", "a", "--host-rm", "v6:::1"]),
    "groups": ({"Groups": ["wheel", "adm"]}, ["--group-add", "staff", "--group-add", "100", "--group-rm", "adm"]),
    "sysctls": (
        {"Sysctls": {"net.core.somaxconn": "1024", "kernel.msgmax": "1"}},
        ["--sysctl-rm", "kernel.msgmax", "--sysctl-add", "net.core.somaxconn=2048", "--sysctl-add", "net.ipv4.ip_forward=1"],
    ),
    "sysctls added": ({}, ["--sysctl-add", "kernel.shmmax=1"]),
    "log driver": ({}, ["--log-driver", "json-file", "--log-opt", "max-size=1m"]),
    "log options without a driver": ({}, ["--log-opt", "max-size=1m"]),
    "entrypoint": ({"Command": ["old"]}, ["--entrypoint", "/bin/sh -c 'exec app'"]),
    "entrypoint removed": ({"Command": ["old"]}, ["--entrypoint", ""]),
    "booleans": ({"TTY": True, "ReadOnly": True, "Init": True}, ["--tty=false", "--read-only=false", "--init=false"]),
    "booleans on": ({}, ["-t", "--read-only", "--init"]),
    "strings and numbers": (
        {"StopSignal": "SIGTERM", "OomScoreAdj": 100, "Isolation": "default"},
        ["--stop-signal", "SIGQUIT", "--oom-score-adj", "0", "--isolation", "process"],
    ),
    "credential spec": ({}, ["--credential-spec", "registry://key"]),
    "credential spec replaced": ({"Privileges": CREDENTIAL_PRIVILEGES}, ["--credential-spec", "file://other.json"]),
    "removals of what is not there": (
        {"DNSConfig": {}},
        ["--group-rm", "x", "--sysctl-rm", "y", "--dns-rm", "9.9.9.9", "--host-rm", "z", "--ulimit-rm", "nofile"],
    ),
    "strings emptied": (
        {"StopSignal": "SIGTERM", "Isolation": "default", "Healthcheck": {"Retries": 1}},
        ["--stop-signal", "", "--isolation", "", "--health-cmd", ""],
    ),
    "everything": (
        {"Mounts": MOUNTS, "Ulimits": ULIMITS, "Healthcheck": HEALTHCHECK, "DNSConfig": DNS, "Hosts": HOSTS},
        [
            "--mount-add", "type=volume,src=logs,dst=/logs", "--ulimit-add", "nofile=5", "--health-timeout", "9s",
            "--dns-search-rm", "example.com", "--host-add", "x:10.9.9.9", "--group-add", "g", "--sysctl-add", "k=v",
            "--cap-drop", "mknod", "--log-driver", "local", "-t", "--entrypoint", "run", "--force", "--env-add", "A=1",
            "--label-add", "l=1", "--replicas", "3", "--oom-score-adj", "7",
        ],
    ),
    "credential spec from a config": ({}, ["--credential-spec", "config://gmsa"]),
    "credential spec removed": ({"Privileges": CREDENTIAL_PRIVILEGES}, ["--credential-spec", ""]),
}  # fmt: skip


@pytest.mark.parametrize(("container", "flags"), list(UPDATE_CASES.values()), ids=list(UPDATE_CASES))
def test_update_sends_what_docker_sends(engine, tmp_path, container, flags):
    engine.reply("GET", "/services/web", service(container))
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})
    args = ["service", "update", "-d", *flags, "web"]

    by_docker, by_raftswarm = sent_by_both(engine, tmp_path, args, "POST", f"/services/{SERVICE_ID}/update")

    assert by_raftswarm == by_docker


def test_update_of_generic_resources_sends_what_docker_sends(engine, tmp_path):
    current = service()
    current["Spec"]["TaskTemplate"]["Resources"]["Reservations"]["GenericResources"] = [
        {"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}},
        {"DiscreteResourceSpec": {"Kind": "ssd", "Value": 1}},
    ]
    engine.reply("GET", "/services/web", current)
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})
    args = ["service", "update", "-d", "--generic-resource-add", "fpga=1", "--generic-resource-add", "gpu=4"]
    args += ["--generic-resource-rm", "ssd", "web"]

    by_docker, by_raftswarm = sent_by_both(engine, tmp_path, args, "POST", f"/services/{SERVICE_ID}/update")

    assert with_sorted_generic_resources(by_raftswarm) == with_sorted_generic_resources(by_docker)


def test_update_of_a_job_sends_what_docker_sends(engine, tmp_path):
    job = service(Mode={"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 4}})
    engine.reply("GET", "/services/web", job)
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    by_docker, by_raftswarm = sent_by_both(
        engine, tmp_path, ["service", "update", "-d", "--force", "--entrypoint", "run", "web"], "POST", f"/services/{SERVICE_ID}/update"
    )

    assert by_raftswarm == by_docker


UPDATE_REFUSED = [
    ({"Mounts": MOUNTS}, ["--mount-add", "type=tmpfs,dst=/x", "--mount-add", "type=tmpfs,dst=/x"]),
    ({"Healthcheck": HEALTHCHECK}, ["--no-healthcheck", "--health-timeout", "1s"]),
    ({}, ["--generic-resource-rm", "gpu"]),
    ({}, ["--generic-resource-add", "gpu=uuid1"]),
    ({}, ["--replicas", "2", "--rollback"]),
    ({}, ["--tty=false", "--rollback"]),
]


@pytest.mark.parametrize(("container", "flags"), UPDATE_REFUSED, ids=[" ".join(f) for _, f in UPDATE_REFUSED])
def test_an_update_docker_refuses_is_refused_with_dockers_message(engine, tmp_path, container, flags):
    engine.reply("GET", "/services/web", service(container))
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})
    args = ["service", "update", "-d", *flags, "web"]

    done = docker(engine, tmp_path, *args)
    engine.requests.clear()
    result = raftswarm(engine, *args)

    assert done.returncode == 1, done.stderr
    assert result.exit_code == 1, result.output
    assert result.stderr == done.stderr
    assert engine.mutations() == []


def test_scale_of_a_replicated_job_sets_its_total_completions_as_docker_does(engine, tmp_path):
    job = service(Mode={"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}})
    engine.reply("GET", "/services/web", job)
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    by_docker, by_raftswarm = sent_by_both(
        engine, tmp_path, ["service", "scale", "-d", "web=7"], "POST", f"/services/{SERVICE_ID}/update"
    )

    assert by_raftswarm == by_docker
    assert by_raftswarm["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 7}}


# -- what docker shows --------------------------------------------------------------------------------------


def shown_by_both(engine: FakeEngine, home: Path, args: list[str]) -> tuple[str, str]:
    done = docker(engine, home, *args)
    assert done.returncode == 0, done.stderr
    result = raftswarm(engine, *args)
    assert result.exit_code == 0, result.output
    return done.stdout, result.stdout


def test_inspect_pretty_shows_the_container_fields_as_docker_does(engine, tmp_path):
    shown = service(
        {
            "Args": ["-g", "daemon off;"],
            "User": "www",
            "CapabilityAdd": ["CAP_NET_ADMIN", "CAP_SYS_TIME"],
            "CapabilityDrop": ["ALL"],
            "Sysctls": {"net.core.somaxconn": "1024", "kernel.shmmax": ""},
            "Ulimits": ULIMITS,
            "Mounts": MOUNTS,
            "Healthcheck": HEALTHCHECK,
        },
    )
    shown["Spec"]["TaskTemplate"]["LogDriver"] = {"Name": "json-file", "Options": {"max-size": "1m", "compress": ""}}
    shown["Spec"]["TaskTemplate"]["Resources"] = {"Limits": {"MemoryBytes": 2**26}, "Reservations": {}}
    shown["Endpoint"]["Ports"] = [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]
    engine.reply("GET", "/services/web", shown)

    by_docker, by_raftswarm = shown_by_both(engine, tmp_path, ["service", "inspect", "--pretty", "web"])

    assert by_raftswarm == by_docker


def test_inspect_pretty_of_a_job_with_a_log_driver_and_no_ports(engine, tmp_path):
    shown = service({"Healthcheck": {"Test": ["NONE"]}}, Mode={"GlobalJob": {}})
    shown["Spec"]["TaskTemplate"]["LogDriver"] = {"Name": "local"}
    engine.reply("GET", "/services/web", shown)

    by_docker, by_raftswarm = shown_by_both(engine, tmp_path, ["service", "inspect", "--pretty", "web"])

    assert by_raftswarm == by_docker


def listed(service_id: str, name: str, mode: dict[str, Any], running: int, desired: int, completed: int) -> dict[str, Any]:
    listed_service = service(Mode=mode, Name=name)
    listed_service["ID"] = service_id
    listed_service["ServiceStatus"] = {"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": completed}
    return listed_service


def test_service_ls_shows_jobs_as_docker_does(engine, tmp_path):
    engine.reply(
        "GET",
        "/services",
        [
            listed("a" * 25, "batch", {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 10}}, 2, 2, 3),
            listed("b" * 25, "migrate", {"GlobalJob": {}}, 1, 2, 1),
            listed("c" * 25, "web", {"Replicated": {"Replicas": 2}}, 2, 2, 0),
            listed("d" * 25, "agent", {"Global": {}}, 3, 3, 0),
        ],
    )

    by_docker, by_raftswarm = shown_by_both(engine, tmp_path, ["service", "ls"])

    assert by_raftswarm == by_docker
    assert "replicated job   2/2 (3/10 completed)" in by_raftswarm


def test_service_ls_without_a_status_from_the_node_shows_what_docker_shows(engine, tmp_path):
    web = service()
    batch = service(Mode={"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 4}}, Name="batch")
    batch["ID"] = "b" * 25
    sweep = service(Mode={"GlobalJob": {}}, Name="sweep")
    sweep["ID"] = "s" * 25
    engine.reply("GET", "/services", [web, batch, sweep])
    engine.reply("GET", "/tasks", [job_task("t1" + "x" * 23, 1, "running", desired="running")])

    by_docker, by_raftswarm = shown_by_both(engine, tmp_path, ["service", "ls"])

    assert by_raftswarm == by_docker


def job_task(task_id: str, slot: int, state: str, desired: str = "complete", node: str = WORKER_ID) -> dict[str, Any]:
    return {
        "ID": task_id,
        "ServiceID": SERVICE_ID,
        "NodeID": node,
        "Slot": slot,
        "CreatedAt": "2024-05-01T10:00:00Z",
        "DesiredState": desired,
        "JobIteration": {"Index": 1},
        "Spec": {"ContainerSpec": {"Image": "busybox:1.36"}},
        "Status": {"State": state, "Timestamp": "2024-05-01T10:00:00Z", "Err": ""},
    }


def test_service_ps_shows_a_jobs_tasks_as_docker_does(engine, tmp_path):
    job = service(Mode={"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}})
    engine.reply("GET", "/services", [job])
    engine.reply("GET", f"/services/{SERVICE_ID}", job)
    engine.reply(
        "GET",
        "/tasks",
        [
            job_task("t0" + "x" * 23, 0, "complete"),
            job_task("t1" + "x" * 23, 1, "running", node=SELF_ID),
            job_task("t2" + "x" * 23, 2, "failed", desired="shutdown"),
            job_task("t3" + "x" * 23, 2, "pending"),
        ],
    )

    by_docker, by_raftswarm = shown_by_both(engine, tmp_path, ["service", "ps", "web"])

    assert by_raftswarm == by_docker
    assert f"web.{WORKER_ID}" in by_raftswarm and "Complete" in by_raftswarm
