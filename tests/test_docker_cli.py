"""The docker SDK for Python and the real docker CLI (the `docker` binary, where installed) driving a raftswarm swarm through the Docker
Engine API on a manager's socket: nodes, networks, secrets, configs, services (with docker's own convergence
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


@needs_cli
@needs_containers
def test_docker_stack_deploy_sends_empty_values_that_read_as_dockers_defaults(docker, tmp_path):
    # The docker CLI sends "" and 0 for whatever the compose file leaves out: FailureAction, Order, Monitor.
    compose = tmp_path / "compose.yml"
    compose.write_text(
        COMPOSE.replace("replicas: 2", "replicas: 1\n      update_config: {parallelism: 1, delay: 1s}")
    )
    docker("stack", "deploy", "-c", str(compose), "upd")
    shown = docker("service", "inspect", "upd_app", "--format", "{{json .Spec.UpdateConfig}}").stdout
    assert '"FailureAction":"pause"' in shown and '"Order":"stop-first"' in shown and '"Delay":1000000000' in shown
    docker("stack", "rm", "upd")


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


@needs_cli
@needs_containers
def test_docker_config_is_a_file_at_its_target_and_is_rotated_by_service_update(docker, tmp_path):
    docker("config", "create", "-l", "env=test", "app.conf", "-", stdin="version=1\n")
    (tmp_path / "v2").write_text("version=2\n")
    docker("config", "create", "app.conf.v2", str(tmp_path / "v2"))
    assert docker("config", "ls", "--format", "{{.Name}}").stdout.split() == ["app.conf", "app.conf.v2"]
    pretty = docker("config", "inspect", "--pretty", "app.conf").stdout
    assert "Name:\t\t\tapp.conf\nLabels:\n - env=test\n" in pretty and pretty.endswith("Data:\nversion=1\n\n")
    (tmp_path / "big").write_bytes(b"x" * 1000 * 1024)
    too_big = docker("config", "create", "big", str(tmp_path / "big"), ok=False)
    assert too_big.returncode != 0
    assert "Error response from daemon: Data: config data must be larger than 0 and less than 1024000 bytes" in too_big.stderr

    # /etc/app does not exist in the image: the target is made, as Docker does.
    show = "while true; do cat /etc/app/app.conf; stat -c 'mode=%a owner=%u:%g' /etc/app/app.conf; sleep 0.5; done"
    docker(
        "service", "create", "--name", "cfg", "--config", "source=app.conf,target=/etc/app/app.conf,uid=1000,mode=0440",
        "busybox", "sh", "-c", show,
    )  # fmt: skip
    logs = eventually_output(docker, ("service", "logs", "cfg"), lambda out: "version=1" in out)
    assert "version=1" in logs and "mode=440 owner=1000:0" in logs
    refused = docker("config", "rm", "app.conf", ok=False)
    assert "config 'app.conf' is in use by the following service: cfg" in refused.stderr

    docker("service", "update", "--config-rm", "app.conf", "--config-add", "source=app.conf.v2,target=/etc/app/app.conf", "cfg")
    assert docker("service", "inspect", "cfg", "--format", "{{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{.ConfigName}}{{end}}").stdout.strip() == "app.conf.v2"
    rotated = eventually_output(docker, ("service", "logs", "--tail", "4", "cfg"), lambda out: "version=2" in out)
    assert "version=2" in rotated
    docker("config", "rm", "app.conf")  # no service uses it any more
    docker("service", "rm", "cfg")
    docker("config", "rm", "app.conf.v2")


@needs_cli
@needs_containers
def test_docker_stack_deploy_creates_the_compose_files_configs(docker, tmp_path):
    (tmp_path / "app.conf").write_text("from compose\n")
    compose = tmp_path / "compose.yml"
    compose.write_text(
        COMPOSE.replace("replicas: 2", "replicas: 1")
        .replace('command: ["sleep", "1000"]', 'command: ["sh", "-c", "cat /app.conf; sleep 1000"]\n    configs: [app.conf]')
        + "configs:\n  app.conf:\n    file: ./app.conf\n"
    )
    docker("stack", "deploy", "-c", str(compose), "cfgst")
    assert docker("config", "ls", "--format", "{{.Name}}").stdout.split() == ["cfgst_app.conf"]
    logs = eventually_output(docker, ("service", "logs", "cfgst_app"), lambda out: "from compose" in out)
    assert "from compose" in logs
    docker("stack", "rm", "cfgst")
    assert eventually_output(docker, ("config", "ls", "-q"), lambda out: not out.strip()).strip() == ""


@needs_containers
def test_the_docker_sdk_creates_a_service_with_configs(swarm):
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.DockerClient(base_url=f"unix://{swarm.node('manager1').socket}", version="1.50")
    try:
        config = client.configs.create(name="sdkconf", data=b"from-sdk-config\n")
        service = client.services.create(
            "busybox",
            ["sh", "-c", "cat /etc/sdk/sdk.conf; sleep 1000"],
            name="sdkcfg",
            configs=[docker_sdk.types.ConfigReference(config.id, "sdkconf", "/etc/sdk/sdk.conf")],
        )
        deadline = time.monotonic() + 30
        while b"from-sdk-config" not in b"".join(service.logs(stdout=True)) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert b"from-sdk-config" in b"".join(service.logs(stdout=True))
        service.remove()
        config.remove()
        assert client.configs.list() == []
    finally:
        client.close()
