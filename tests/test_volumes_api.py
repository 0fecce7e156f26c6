"""Docker's volume API on a node, driven as users drive dockerd: the real docker CLI (`docker volume ...`, and
`docker service create --mount` on a swarm), the docker SDK for Python and `raftswarm volume`. A standalone node
serves the commands (volumes are node-local, in a swarm or not); a one-node swarm runs services with mounts:
a named volume created on first use with the mount's labels, kept after its service, refused removal while a
task uses it, and a task rejected with Docker's words for a missing bind source and for a bind of the node's
state directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker as docker_sdk
import pytest
from click.testing import CliRunner

from raftswarm.api.client import ApiClient, ApiError
from raftswarm.cli.main import main
from raftswarm.localcluster.swarm import SwarmCluster
from raftswarm.runtime.containers import unavailable

pytestmark = pytest.mark.slow
needs_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
needs_containers = pytest.mark.skipif(unavailable() is not None, reason=f"tasks cannot run as containers here: {unavailable()}")

HEX64 = re.compile(r"[0-9a-f]{64}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_ready(socket_path: Path, process: subprocess.Popen, log: Path) -> None:
    for _ in range(400):
        if process.poll() is not None:
            break
        if socket_path.exists():
            try:
                async with ApiClient(str(socket_path), 5.0) as client:
                    await client.ping()
                return
            except (OSError, ApiError):
                pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"the node did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A node process not in a swarm: its API socket, and its state directory."""
    base = tmp_path_factory.mktemp("volumes-node")
    socket_path, log, state = base / "api.sock", base / "node.log", base / "state"
    with open(log, "ab") as out:
        node = subprocess.Popen(
            [sys.executable, "-m", "raftswarm.node", "--state-dir", str(state),
             "--listen-addr", f"127.0.0.1:{_free_port()}", "--socket", str(socket_path)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        asyncio.run(_wait_ready(socket_path, node, log))
        yield socket_path, state
    finally:
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def docker_runner(socket_path: Path, home: Path):
    environment = {
        "PATH": os.environ["PATH"], "HOME": str(home), "DOCKER_CONFIG": str(home / "docker-config"),
        "DOCKER_HOST": f"unix://{socket_path}",
    }

    def run(*args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, env=environment, timeout=60, check=False)
        if ok:
            assert done.returncode == 0, f"docker {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    return run


@pytest.fixture
def docker(standalone, tmp_path):
    return docker_runner(standalone[0], tmp_path)


@needs_cli
def test_docker_volume_create_ls_inspect_rm_and_prune(docker, standalone):
    state = standalone[1]
    assert docker("volume", "create", "--label", "tier=db", "data").stdout == "data\n"
    assert docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m", "ram").stdout == "ram\n"
    anonymous = docker("volume", "create").stdout.strip()
    assert HEX64.fullmatch(anonymous)

    assert docker("volume", "ls").stdout.splitlines()[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert docker("volume", "ls", "-q").stdout.split() == sorted([anonymous, "data", "ram"])
    assert docker("volume", "ls", "--filter", "label=tier=db", "--format", "{{.Driver}} {{.Name}} {{.Scope}}").stdout == "local data local\n"
    assert docker("volume", "ls", "-f", "name=^ra", "-q").stdout == "ram\n"
    assert docker("volume", "ls", "-f", "dangling=true", "-q").stdout.split() == sorted([anonymous, "data", "ram"])

    (inspected,) = json.loads(docker("volume", "inspect", "data").stdout)
    assert inspected == {
        "CreatedAt": inspected["CreatedAt"], "Driver": "local", "Labels": {"tier": "db"},
        "Mountpoint": str(state.resolve() / "volumes" / "data" / "_data"), "Name": "data", "Options": None,
        "Scope": "local",
    }
    assert docker("volume", "inspect", "ram", "--format", "{{.Options.type}} {{.Options.o}}").stdout == "tmpfs size=1m\n"

    missing = docker("volume", "rm", "nosuch", ok=False)
    assert missing.returncode == 1 and missing.stderr.strip() == "Error response from daemon: get nosuch: no such volume"
    assert docker("volume", "inspect", "nosuch", ok=False).stderr.strip().endswith("get nosuch: no such volume")
    bad = docker("volume", "create", "../x", ok=False)
    assert bad.returncode == 1 and 'create ../x: "../x" includes invalid characters for a local volume name' in bad.stderr
    refused = docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={state}", "evil", ok=False)
    assert "a task sees nothing of its node" in refused.stderr

    pruned = docker("volume", "prune", "-f").stdout  # Docker 23: only anonymous volumes
    assert pruned == f"Deleted Volumes:\n{anonymous}\n\nTotal reclaimed space: 0B\n"
    pruned = docker("volume", "prune", "-a", "-f", "--filter", "label!=tier").stdout
    assert pruned == "Total reclaimed space: 0B\n"  # data has the label; ram has driver options
    assert docker("volume", "prune", "--all", "--force").stdout.startswith("Deleted Volumes:\ndata\n")
    assert docker("volume", "rm", "-f", "ram", "nosuch").stdout.split() == ["ram", "nosuch"]
    assert docker("volume", "ls", "-q").stdout == ""


def test_docker_sdk_manages_volumes(standalone):
    client = docker_sdk.DockerClient(base_url=f"unix://{standalone[0]}", version="1.50")
    try:
        created = client.volumes.create(name="sdk-vol", labels={"owner": "sdk"})
        assert created.name == "sdk-vol" and created.attrs["Labels"] == {"owner": "sdk"}
        assert [v.name for v in client.volumes.list(filters={"label": "owner=sdk"})] == ["sdk-vol"]
        assert client.volumes.get("sdk-vol").attrs["Driver"] == "local"
        with pytest.raises(docker_sdk.errors.NotFound, match="get nope: no such volume"):
            client.volumes.get("nope")
        (volume_dir := Path(created.attrs["Mountpoint"])).joinpath("payload").write_bytes(b"z" * 1234)
        assert client.volumes.prune() == {"VolumesDeleted": [], "SpaceReclaimed": 0}
        assert client.volumes.prune(filters={"all": "true", "label": "owner=sdk"}) == {
            "VolumesDeleted": ["sdk-vol"], "SpaceReclaimed": 1234,
        }
        assert not volume_dir.exists()
        with pytest.raises(docker_sdk.errors.APIError, match="invalid filter 'until'"):
            client.volumes.list(filters={"until": "1h"})
    finally:
        client.close()


def test_an_api_older_than_1_42_prunes_named_volumes_too(standalone):
    async def scenario():
        async with ApiClient(str(standalone[0])) as api:
            await api.request("POST", "/volumes/create", {"Name": "old-client"})
            assert (await api.request("POST", "/v1.41/volumes/prune"))["VolumesDeleted"] == ["old-client"]
            with pytest.raises(ApiError) as info:
                await api.request("POST", "/volumes/create", {"Name": "c", "ClusterVolumeSpec": {}})
            assert info.value.status == 400 and "cluster (CSI) volumes are not supported" in str(info.value)

    asyncio.run(scenario())


def test_raftswarm_volume_commands(standalone):
    def raftswarm(*args: str, input: str | None = None):
        return CliRunner().invoke(main, ["-H", f"unix://{standalone[0]}", "volume", *args], input=input)

    assert raftswarm("create", "--label", "a=1", "cli-vol").output == "cli-vol\n"
    listed = raftswarm("ls").output.splitlines()
    assert listed[0].split() == ["DRIVER", "VOLUME", "NAME"] and listed[1].split() == ["local", "cli-vol"]
    assert raftswarm("ls", "--format", "{{.Name}}:{{.Labels}}").output == "cli-vol:a=1\n"
    assert json.loads(raftswarm("inspect", "cli-vol").output)[0]["Labels"] == {"a": "1"}
    assert raftswarm("inspect", "-f", "{{.Driver}}", "cli-vol").output == "local\n"
    cancelled = raftswarm("prune", "--all", input="n\n")
    assert cancelled.exit_code == 1 and "volume prune has been cancelled" in cancelled.output
    assert raftswarm("ls", "-q").output == "cli-vol\n"
    pruned = raftswarm("prune", "-a", input="y\n")
    assert "WARNING! This will remove all local volumes" in pruned.output and "Deleted Volumes:\ncli-vol\n" in pruned.output
    gone = raftswarm("rm", "cli-vol")
    assert gone.exit_code == 1 and "Error response from daemon: get cli-vol: no such volume" in gone.output


# -- services with mounts on a swarm ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("volume-clusters")
    cluster = asyncio.run(
        SwarmCluster.up("vol", managers=1, workers=0, base_dir=base, network="loopback", heartbeat_period=0.5, init=True)
    )
    yield cluster
    cluster.down()


def eventually_true(check, what: str, within: float = 60.0):
    deadline = time.monotonic() + within
    while True:
        last = check()
        if last or time.monotonic() > deadline:
            assert last, f"timed out waiting for {what}"
            return last
        time.sleep(0.3)


@needs_cli
@needs_containers
def test_a_service_volume_is_made_on_first_use_outlives_the_service_and_cannot_be_removed_while_used(swarm, tmp_path):
    docker = docker_runner(swarm.node("manager1").socket, tmp_path)
    docker(
        "service", "create", "--detach", "--name", "writer",
        "--mount", "type=volume,source=shared,target=/data,volume-label=team=blue",
        "busybox", "sh", "-c", "echo written-by-writer > /data/file; sleep 1000",
    )
    eventually_true(lambda: "Running" in docker("service", "ps", "writer", "--format", "{{.CurrentState}}").stdout, "writer to run")
    (volume,) = json.loads(docker("volume", "inspect", "shared").stdout)
    assert volume["Labels"] == {"team": "blue"} and volume["Driver"] == "local"
    in_use = docker("volume", "rm", "shared", ok=False)
    assert in_use.returncode == 1 and re.search(r"remove shared: volume is in use - \[[0-9a-f]{64}\]", in_use.stderr)
    docker("service", "rm", "writer")
    eventually_true(lambda: docker("volume", "ls", "-f", "dangling=true", "-q").stdout == "shared\n", "the task to let go")

    docker("service", "create", "--detach", "--name", "reader", "--mount", "source=shared,target=/again",
           "busybox", "sh", "-c", "cat /again/file; sleep 1000")
    eventually_true(lambda: "written-by-writer" in docker("service", "logs", "reader").stdout, "the reader's output")
    docker("service", "rm", "reader")
    eventually_true(lambda: docker("volume", "rm", "shared", ok=False).returncode == 0, "the volume to be removable")


@needs_cli
@needs_containers
def test_tasks_with_binds_the_node_cannot_give_are_rejected_with_dockers_words(swarm, tmp_path):
    docker = docker_runner(swarm.node("manager1").socket, tmp_path)
    state = swarm.node("manager1").state_dir
    for name, source, words in (
        ("missing", "/nonexistent/raftswarm-volume-test", 'invalid mount config for type "bind": bind source path does not exist: /nonexistent/raftswarm-volume-test'),
        ("stealer", str(state), "a task sees nothing of its node"),
    ):
        docker("service", "create", "--detach", "--name", name, "--mount", f"type=bind,source={source},target=/b", "busybox", "true")
        errors = eventually_true(
            lambda name=name: [
                e for e in docker("service", "ps", name, "--no-trunc", "--format", "{{.Error}}").stdout.splitlines() if e
            ],
            f"{name} to be rejected",
        )
        assert words in errors[0]
        docker("service", "rm", name)
    relative = docker("service", "create", "--detach", "--name", "relative", "--mount", "type=volume,source=x/../../y,target=/b", "busybox", "true", ok=False)
    assert "includes invalid characters for a local volume name" in relative.stderr
