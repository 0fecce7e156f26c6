"""The docker SDK for Python and the real docker CLI (the `docker` binary, where installed) driving a raftswarm swarm through the Docker
Engine API on a manager's socket: nodes, networks, secrets, services (with docker's own convergence
monitor), logs, stacks from a compose file; and a clear, quick error for what raftswarm does not do.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import pytest

from raftswarm.localcluster.swarm import SwarmCluster
from raftswarm.runtime.containers import unavailable

pytestmark = pytest.mark.slow
needs_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
needs_containers = pytest.mark.skipif(
    unavailable() is not None, reason=f"tasks cannot run as containers here: {unavailable()}"
)

COMPOSE = """
services:
  app:
    image: busybox
    command: ["sleep", "1000"]
    deploy:
      replicas: 2
"""


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("clusters")
    # --init: the tasks' `sleep` stops at SIGTERM, so scaling down and removing converge in moments.
    cluster = asyncio.run(
        SwarmCluster.up(
            "dkr", managers=1, workers=1, base_dir=base, network="loopback", heartbeat_period=0.5, init=True
        )
    )
    yield cluster
    cluster.down()


@pytest.fixture
def docker(swarm, tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "DOCKER_HOST": f"unix://{swarm.node('manager1').socket}",
    }

    def run(*args: str, stdin: str | None = None, ok: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout)
        if ok:
            assert done.returncode == 0, f"docker {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    return run


def eventually_output(run, args: tuple[str, ...], expected, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    while True:
        out = run(*args).stdout
        if expected(out) or time.monotonic() > deadline:
            return out
        time.sleep(0.3)


@needs_cli
def test_docker_sees_the_swarm_and_manages_networks_and_secrets(docker):
    assert docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip() == "1.50"
    assert docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}").stdout.split() == ["active", "true"]
    nodes = docker("node", "ls", "--format", "{{.Hostname}}|{{.Status}}|{{.ManagerStatus}}").stdout.splitlines()
    assert sorted(line.split("|")[2] for line in nodes) == ["", "Leader"] and all("|Ready|" in line for line in nodes)

    docker("network", "create", "-d", "overlay", "n1")
    assert docker("network", "ls", "--filter", "name=n1", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout.split() == ["n1", "overlay", "swarm"]
    docker("secret", "create", "s1", "-", stdin="hunter2")
    assert "s1" in docker("secret", "ls", "--format", "{{.Name}}").stdout.split()
    refused = docker("network", "create", "-d", "overlay", "--opt", "encrypted", "n2", ok=False)
    assert refused.returncode != 0 and "no IPsec ESP" in refused.stderr
    docker("secret", "rm", "s1")
    docker("network", "rm", "n1")


@needs_cli
@needs_containers
def test_docker_service_create_waits_for_convergence_then_scale_logs_and_rm(docker):
    docker("network", "create", "-d", "overlay", "n3")
    docker("secret", "create", "s3", "-", stdin="pw")
    created = docker("service", "create", "--name", "web", "--replicas", "2", "--secret", "s3", "--network", "n3", "busybox", "sh", "-c", "echo hello; sleep 1000")
    assert "converged" in created.stdout + created.stderr  # docker's own progress monitor finished
    assert docker("service", "ls", "--format", "{{.Name}} {{.Replicas}}").stdout.split() == ["web", "2/2"]
    states = docker("service", "ps", "web", "--format", "{{.Name}} {{.CurrentState}}").stdout.splitlines()
    assert sorted(line.split()[0] for line in states) == ["web.1", "web.2"] and all("Running" in line for line in states)
    docker("service", "scale", "web=1")
    assert eventually_output(docker, ("service", "ls", "--format", "{{.Replicas}}"), lambda out: out.strip() == "1/1").strip() == "1/1"
    logs = eventually_output(docker, ("service", "logs", "web"), lambda out: "hello" in out)
    assert "hello" in logs and "web." in logs
    docker("service", "rm", "web")
    docker("secret", "rm", "s3")
    docker("network", "rm", "n3")


@needs_cli
@needs_containers
def test_docker_stack_deploy_services_ps_and_rm(docker, tmp_path):
    compose = tmp_path / "compose.yml"
    compose.write_text(COMPOSE)
    docker("stack", "deploy", "-c", str(compose), "st")
    assert docker("stack", "ls", "--format", "{{.Name}} {{.Services}}").stdout.split() == ["st", "1"]
    assert docker("stack", "services", "st", "--format", "{{.Name}}").stdout.split() == ["st_app"]
    tasks = eventually_output(docker, ("stack", "ps", "st", "--format", "{{.Name}} {{.CurrentState}}"), lambda out: out.count("Running") == 2)
    assert out_names(tasks) == ["st_app.1", "st_app.2"]
    docker("stack", "rm", "st")
    assert docker("service", "ls", "--format", "{{.Name}}").stdout.strip() == ""


def out_names(text: str) -> list[str]:
    return sorted(line.split()[0] for line in text.splitlines() if line.strip())


@needs_cli
def test_what_raftswarm_does_not_do_fails_fast_with_a_message(docker):
    done = docker("ps", ok=False, timeout=20)  # a hang would fail here
    assert done.returncode != 0 and "Error response from daemon" in done.stderr


@needs_containers
def test_the_docker_sdk_for_python_drives_the_swarm(swarm):
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.DockerClient(base_url=f"unix://{swarm.node('manager1').socket}", version="1.50")
    try:
        assert client.ping() and client.version()["ApiVersion"] == "1.50"
        assert client.swarm.attrs["ID"] and len(client.nodes.list()) == 2
        network = client.networks.create("sdknet", driver="overlay")
        secret = client.secrets.create(name="sdksecret", data=b"pw")
        service = client.services.create(
            "busybox",
            ["sh", "-c", "echo from-sdk; sleep 1000"],
            name="sdkweb",
            networks=["sdknet"],
            secrets=[docker_sdk.types.SecretReference(secret.id, "sdksecret")],
            mode=docker_sdk.types.ServiceMode("replicated", replicas=2),
        )
        running = lambda: [t for t in service.tasks(filters={"desired-state": "running"}) if t["Status"]["State"] == "running"]  # noqa: E731
        deadline = time.monotonic() + 30
        while len(running()) != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(running()) == 2, [t["Status"] for t in service.tasks()]
        service.scale(3)
        deadline = time.monotonic() + 30
        while len(running()) != 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(running()) == 3
        assert b"from-sdk" in b"".join(service.logs(stdout=True, stderr=True))
        with pytest.raises(docker_sdk.errors.APIError):
            secret.remove()  # in use by sdkweb
        service.remove()
        secret.remove()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                network.remove()
                break
            except docker_sdk.errors.APIError:
                time.sleep(0.2)
        assert [n.name for n in client.networks.list()] == ["ingress"]
        with pytest.raises(docker_sdk.errors.APIError):
            client.containers.list()  # no containers here: a clear error, not a hang
    finally:
        client.close()
