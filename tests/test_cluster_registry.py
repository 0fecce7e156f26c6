"""The local cluster's registry: `localhost:5000` on the host and, under the same name, on every node (in
network namespaces through the bridge's host address), the nodes' Docker Hub mirror, its storage kept across
`down` and `up`, and nothing of it left behind by `down` but that storage.

Each test makes its own cluster under a temporary clusters directory and removes it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import urllib.request

import pytest

from raftswarm.images import samples
from raftswarm.localcluster.registry import HtpasswdUnavailable, LocalRegistry
from raftswarm.localcluster.swarm import REGISTRY_STORAGE, SwarmCluster
from raftswarm.localcluster.hostnet import netns_unavailable_reason
from raftswarm.runtime.containers import unavailable

pytestmark = pytest.mark.slow

needs_netns = pytest.mark.skipif(
    netns_unavailable_reason() is not None, reason=f"network namespaces: {netns_unavailable_reason()}"
)
needs_containers = pytest.mark.skipif(
    unavailable() is not None, reason=f"tasks cannot run as containers here: {unavailable()}"
)


def _catalog_from_host(address: str) -> list[str]:
    with urllib.request.urlopen(f"http://{address}/v2/_catalog", timeout=5) as answer:
        return json.load(answer)["repositories"]


def _catalog_from_node(cluster: SwarmCluster, name: str) -> list[str]:
    """What the node `name` gets from the registry under the address its flags give it, from its namespace."""
    node = cluster.node(name)
    argv = node.argv
    reached = argv[argv.index("--registry-mirror") + 1].removeprefix("http://")
    command = ["python3", "-c", f"import urllib.request; print(urllib.request.urlopen('http://{reached}/v2/_catalog', timeout=5).read().decode())"]
    if node.namespace:
        command = ["ip", "netns", "exec", node.namespace, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["repositories"]


def _nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


@needs_netns
async def test_every_node_reaches_the_hosts_localhost_5000_and_down_leaves_only_its_storage(tmp_path):
    cluster = await SwarmCluster.up(
        "reg", managers=1, workers=1, base_dir=tmp_path, network="netns", registry=True, samples=["busybox"]
    )
    try:
        assert cluster.registry is not None and cluster.registry.startswith("127.0.0.1:")
        assert _catalog_from_host(cluster.registry) == ["library/busybox"]
        for node in cluster.nodes:
            assert _catalog_from_node(cluster, node.name) == ["library/busybox"]
            assert f"localhost:5000={cluster._registry_from_nodes()}" in node.argv
        pid = int((cluster.directory / "registry" / "registry.pid").read_text().split()[0])
        table = f"rswreg-{cluster.bridge.removeprefix('rswb-')}"
        assert table in _nft_tables()
    finally:
        cluster.down()
    assert not _running(pid)
    assert table not in _nft_tables()
    assert not cluster.directory.exists()
    assert (tmp_path / REGISTRY_STORAGE / "docker").is_dir()  # the images stay for the next cluster

    again = await SwarmCluster.up("reg2", managers=1, workers=0, base_dir=tmp_path, network="netns", registry=True)
    try:
        assert _catalog_from_host(again.registry) == ["library/busybox"]  # nothing pushed this time
    finally:
        again.down()


async def test_on_loopback_addresses_the_nodes_use_the_registry_directly(tmp_path):
    cluster = await SwarmCluster.up(
        "regl", managers=1, workers=1, base_dir=tmp_path, network="loopback", registry=True, samples=["busybox"]
    )
    try:
        for node in cluster.nodes:
            assert _catalog_from_node(cluster, node.name) == ["library/busybox"]
    finally:
        cluster.down()


@needs_netns
async def test_the_users_flow_load_tag_push_on_one_node_and_pull_on_another_through_localhost_5000(tmp_path):
    """`docker load -i app.tar`, `docker tag`, `docker push localhost:5000/app:1` against one node, then
    `docker pull localhost:5000/app:1` on another and `docker pull busybox` through the mirror: every node knows
    the registry as localhost:5000 although each sits in its own network namespace."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    tarball = samples.busybox(tmp_path / "cache").tarball
    cluster = await SwarmCluster.up(
        "regu", managers=1, workers=1, base_dir=tmp_path, network="netns", registry=True, samples=["busybox"]
    )
    try:
        def docker(node: str, *args: str) -> str:
            env = {**os.environ, "DOCKER_HOST": f"unix://{cluster.node(node).socket}"}
            done = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=60)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done.stdout

        assert "Loaded image: busybox:latest" in docker("manager1", "load", "-i", str(tarball))
        docker("manager1", "tag", "busybox:latest", "localhost:5000/app:1")
        pushed = docker("manager1", "push", "localhost:5000/app:1")
        digest = next(word for word in pushed.split() if word.startswith("sha256:"))
        assert "localhost:5000/app:1" not in docker("worker1", "images", "--format", "{{.Repository}}:{{.Tag}}")
        docker("worker1", "pull", "localhost:5000/app:1")
        assert docker("worker1", "image", "inspect", "--format", "{{index .RepoDigests 0}}", "localhost:5000/app:1").strip() == (
            f"localhost:5000/app@{digest}"
        )
        docker("worker1", "pull", "busybox")  # Docker Hub's name, served by the cluster's registry as its mirror
        same = {docker(node, "image", "inspect", "--format", "{{.Id}}", ref).strip() for node, ref in (
            ("manager1", "busybox:latest"), ("worker1", "localhost:5000/app:1"), ("worker1", "busybox:latest"))}
        assert len(same) == 1  # one image, the same ID on every node and under every name
    finally:
        cluster.down()


@needs_containers
async def test_with_registry_auth_credentials_reach_the_tasks_node_and_are_never_shown_or_written(tmp_path):
    """`service create --with-registry-auth` of an image in a registry that needs a password: the task's node
    pulls it with the docker CLI's credentials; without the flag it cannot; no API answer shows them and no
    file of any node holds them."""
    password = "pw-" + os.urandom(8).hex()
    tarball = samples.busybox(tmp_path / "cache").tarball
    private = LocalRegistry(tmp_path / "private", tmp_path / "private-run", users={"alice": password})
    try:
        await private.start()
    except HtpasswdUnavailable as exc:
        pytest.skip(str(exc))
    cluster = await SwarmCluster.up("rega", managers=1, workers=1, base_dir=tmp_path, network="loopback")
    try:
        image = f"{private.address}/private/app:1"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"--dest-creds=alice:{password}",
             f"docker-archive:{tarball}:busybox:latest", f"docker://{image}"],
            check=True, capture_output=True, timeout=60,
        )
        config = tmp_path / "docker-config"
        config.mkdir()
        auth = base64.b64encode(f"alice:{password}".encode()).decode()
        (config / "config.json").write_text(json.dumps({"auths": {private.address: {"auth": auth}}}))
        manager = cluster.node("manager1")

        def raftswarm(*args: str) -> subprocess.CompletedProcess:
            env = {**os.environ, "DOCKER_CONFIG": str(config)}
            return subprocess.run(
                ["raftswarm", "-H", f"unix://{manager.socket}", *args],
                capture_output=True, text=True, env=env, timeout=120,
            )

        with_auth = raftswarm("service", "create", "--with-registry-auth", "--name", "priv", image, "sleep", "1000")
        assert with_auth.returncode == 0, with_auth.stderr
        without = raftswarm("service", "create", "-d", "--name", "nopriv", image, "sleep", "1000")
        assert without.returncode == 0, without.stderr
        async with cluster.client(manager) as api:
            running = await api.task_list({"service": ["priv"], "desired-state": ["running"]})
            assert [t["Status"]["State"] for t in running] == ["running"]
            for _ in range(300):
                refused = [t for t in await api.task_list({"service": ["nopriv"]}) if t["Status"]["State"] == "rejected"]
                if refused:
                    break
                await asyncio.sleep(0.1)
            assert refused and "authentication required" in refused[0]["Status"]["Err"], refused
            views = [await api.request("GET", "/services/priv"), *await api.request("GET", "/tasks")]
            views += await api.request("GET", "/services")
        shown = json.dumps(views)
        assert password not in shown and "PullOptions" not in shown and auth not in shown
        assert "RegistryAuth" not in shown
        for path in cluster.directory.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert password.encode() not in data and auth.encode() not in data, path
    finally:
        cluster.down()
        private.stop()
