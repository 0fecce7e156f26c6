"""Docker's image API on a standalone node (not in a swarm: dockerd serves images either way), driven by the real
docker CLI, the docker SDK for Python and `raftswarm image`, against real registries (Debian's docker-registry
on 127.0.0.1, one open and one with a password): load, list, tag, push, remove, pull back, inspect, import,
save, and dockerd's words for what is missing. The pure parts (`docker import --change` lines, the reference
filter's patterns, the X-Registry-Auth header) are checked without a node at the end.

One node process and two registry processes serve the whole module; each is ended by its PID in teardown.
Tests use image names of their own, so they do not depend on each other's order.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftswarm.api.client import ApiClient, ApiError
from raftswarm.api.images import import_changes, path_match
from raftswarm.objects.registryauth import decode_auth
from raftswarm.cli.main import main
from raftswarm.images import samples
from raftswarm.localcluster.registry import HtpasswdUnavailable, LocalRegistry
from raftswarm.errors import ControlError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("skopeo") and Path("/usr/bin/docker-registry").is_file() and Path("/bin/busybox").is_file()),
        reason="needs the Debian packages skopeo, docker-registry and busybox-static (./setup installs them)",
    ),
]
needs_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")

USER, PASSWORD = "alice", "correct-horse-battery"
BIG_FILE = 12 << 20
"""A file larger than the API's JSON body limit (8 MiB): tarball bodies are streamed, not limited."""


@dataclass(frozen=True)
class SampleImage:
    """The busybox sample as the tests expect to see it: its ID and layers, from the tarball itself."""

    tarball: Path
    image_id: str
    diff_ids: list[str]
    cmd: list[str]


@dataclass
class Env:
    socket: Path
    log: Path
    registry: str
    """host:port of the open registry."""
    private: str | None
    """host:port of the registry that wants USER and PASSWORD (None if bcrypt is unavailable here)."""
    busybox: SampleImage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample() -> SampleImage:
    sample = samples.busybox()
    with tarfile.open(sample.tarball) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        config = json.load(archive.extractfile(manifest["Config"]))
    image_id = "sha256:" + manifest["Config"].rsplit("/", 1)[-1]
    return SampleImage(sample.tarball, image_id, config["rootfs"]["diff_ids"], config["config"]["Cmd"])


async def _wait_ready(socket_path: Path, process: subprocess.Popen, log: Path) -> None:
    for _ in range(200):
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
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("images")
    registries: list[LocalRegistry] = []
    node: subprocess.Popen | None = None
    try:
        registry = LocalRegistry(base / "registry", base / "registry-run")
        asyncio.run(registry.start())
        registries.append(registry)
        private: LocalRegistry | None = LocalRegistry(base / "private", base / "private-run", users={USER: PASSWORD})
        try:
            asyncio.run(private.start())
            registries.append(private)
        except HtpasswdUnavailable:
            private = None
        socket_path, log = base / "node" / "api.sock", base / "node" / "node.log"
        log.parent.mkdir()
        with open(log, "ab") as out:
            node = subprocess.Popen(
                [sys.executable, "-m", "raftswarm.node", "--state-dir", str(base / "node" / "state"),
                 "--listen-addr", f"127.0.0.1:{_free_port()}", "--socket", str(socket_path)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        asyncio.run(_wait_ready(socket_path, node, log))
        yield Env(socket_path, log, registry.address, private.address if private else None, _sample())
    finally:
        if node is not None:
            node.terminate()
            try:
                node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        for registry in registries:
            registry.stop()


@pytest.fixture
def docker(env, tmp_path):
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "DOCKER_HOST": f"unix://{env.socket}",
    }

    def run(*args: str, ok: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", *args], input=stdin, capture_output=True, env=environment, timeout=60)
        result = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())
        if ok:
            assert done.returncode == 0, f"docker {' '.join(args)}: {result.stdout}{result.stderr}"
        return result

    return run


def api(env: Env, method: str, path: str, **kwargs):
    async def call():
        async with ApiClient(str(env.socket), 60.0) as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(call())


@needs_cli
def test_docker_load_images_tag_push_rmi_pull_and_inspect(env, docker, tmp_path):
    image, registry = env.busybox, env.registry
    assert "Loaded image: busybox:latest" in docker("load", "-i", str(image.tarball)).stdout
    listed = docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.splitlines()
    assert f"busybox:latest {image.image_id[7:19]}" in listed
    assert docker("images").stdout.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]

    docker("tag", "busybox:latest", f"{registry}/app:1")
    pushed = docker("push", f"{registry}/app:1").stdout
    assert f"The push refers to repository [{registry}/app]" in pushed
    digest = re.search(r"^1: digest: (sha256:[0-9a-f]{64}) size: \d+$", pushed, re.M).group(1)
    # What `docker service create` asks to pin the image: the registry's descriptor, with the pushed digest.
    distribution = api(env, "GET", f"/v1.50/distribution/{registry}/app:1/json")
    assert distribution["Descriptor"]["digest"] == digest
    assert distribution["Platforms"] == [{"architecture": "amd64", "os": "linux"}]

    removed = docker("rmi", f"{registry}/app:1", "busybox").stdout.splitlines()
    assert f"Untagged: {registry}/app:1" in removed and "Untagged: busybox:latest" in removed
    assert f"Deleted: {image.image_id}" in removed
    assert image.image_id[7:19] not in docker("images", "-q").stdout

    pulled = docker("pull", f"{registry}/app:1").stdout
    assert f"Digest: {digest}" in pulled and f"Status: Downloaded newer image for {registry}/app:1" in pulled
    [inspected] = json.loads(docker("image", "inspect", f"{registry}/app:1").stdout)
    assert inspected["Id"] == image.image_id  # the same image, byte for byte, after the round trip
    assert inspected["Config"]["Cmd"] == image.cmd and inspected["Os"] == "linux"
    assert inspected["RootFS"] == {"Type": "layers", "Layers": image.diff_ids}
    assert inspected["RepoDigests"] == [f"{registry}/app@{digest}"]

    saved = tmp_path / "saved.tar"
    docker("save", "-o", str(saved), f"{registry}/app:1")
    docker("rmi", f"{registry}/app:1")
    assert f"Loaded image: {registry}/app:1" in docker("load", "-i", str(saved)).stdout
    docker("rmi", f"{registry}/app:1")


@needs_cli
def test_what_is_missing_gets_dockerds_words(env, docker):
    registry = env.registry
    pulled = docker("pull", f"{registry}/nothing:1", ok=False)
    assert pulled.returncode == 1
    assert f"Error response from daemon: manifest for {registry}/nothing:1 not found: manifest unknown" in pulled.stderr
    removed = docker("rmi", "nosuch:1", ok=False)
    assert removed.returncode == 1 and "Error response from daemon: No such image: nosuch:1" in removed.stderr
    inspected = docker("image", "inspect", "nosuch:1", ok=False)
    assert inspected.returncode == 1 and "No such image: nosuch:1" in inspected.stderr
    pushed = docker("push", f"{registry}/never:1", ok=False)
    assert pushed.returncode == 1 and f"An image does not exist locally with the tag: {registry}/never" in pushed.stderr
    loaded = docker("load", ok=False, stdin=b"not a tarball")
    assert loaded.returncode == 1 and "cannot read the tarball" in loaded.stderr
    # Statuses as dockerd's: a missing manifest is a 404 before any progress is streamed.
    with pytest.raises(ApiError) as missing:
        api(env, "POST", "/v1.50/images/create", params={"fromImage": f"{registry}/nothing", "tag": "1"})
    assert missing.value.status == 404
    with pytest.raises(ApiError) as unknown:
        api(env, "DELETE", "/images/nosuch:1")
    assert unknown.value.status == 404


@needs_cli
def test_docker_import_applies_dockerfile_changes_and_streams_big_bodies(env, docker, tmp_path):
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as archive:
        for name, data in (("hello.txt", b"hi\n"), ("big.bin", os.urandom(BIG_FILE))):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    imported = docker(
        "import", "--change", 'CMD ["/bin/cat", "/hello.txt"]', "--change", "ENV A=B", "--change", "WORKDIR /srv",
        "--change", "EXPOSE 8080", str(rootfs), "imported:1",
    ).stdout
    image_id = re.fullmatch(r"(sha256:[0-9a-f]{64})\n", imported).group(1)
    [inspected] = json.loads(docker("image", "inspect", "imported:1").stdout)
    config = inspected["Config"]
    assert inspected["Id"] == image_id and inspected["Size"] == BIG_FILE + 3
    assert config["Cmd"] == ["/bin/cat", "/hello.txt"] and config["Env"] == ["A=B"]
    assert config["WorkingDir"] == "/srv" and config["ExposedPorts"] == {"8080/tcp": {}}
    refused = docker("import", "--change", "RUN make", str(rootfs), "imported:2", ok=False)
    assert refused.returncode == 1 and "run is not a valid change command" in refused.stderr
    docker("rmi", "imported:1")


def test_docker_sdk_loads_pushes_lists_gets_and_pulls(env):
    docker_sdk = pytest.importorskip("docker")
    image, registry = env.busybox, env.registry
    client = docker_sdk.DockerClient(base_url=f"unix://{env.socket}", version="1.50")
    try:
        [loaded] = client.images.load(image.tarball.read_bytes())
        assert loaded.id == image.image_id
        loaded.tag(f"{registry}/sdk", "1")
        pushed = list(client.images.push(f"{registry}/sdk", tag="1", stream=True, decode=True))
        digest = pushed[-1]["aux"]["Digest"]
        client.images.remove(f"{registry}/sdk:1")
        assert client.images.get_registry_data(f"{registry}/sdk:1").id == digest

        pulled = client.images.pull(f"{registry}/sdk", tag="1")
        assert pulled.id == image.image_id and f"{registry}/sdk:1" in pulled.tags
        assert image.image_id in [listed.id for listed in client.images.list()]
        assert [i.id for i in client.images.list(filters={"reference": f"{registry}/sdk"})] == [image.image_id]
        got = client.images.get(f"{registry}/sdk:1")
        assert got.attrs["RootFS"]["Layers"] == image.diff_ids and got.attrs["Config"]["Cmd"] == image.cmd
        assert got.attrs["RepoDigests"] == [f"{registry}/sdk@{digest}"]
        with pytest.raises(docker_sdk.errors.NotFound):
            client.images.pull(f"{registry}/sdk", tag="nope")
        with pytest.raises(docker_sdk.errors.ImageNotFound):
            client.images.get("nosuch:1")
        client.images.remove(f"{registry}/sdk:1")
    finally:
        client.close()


def test_credentials_travel_in_x_registry_auth_and_stay_out_of_the_log(env):
    docker_sdk = pytest.importorskip("docker")
    if env.private is None:
        pytest.skip("nothing here makes bcrypt hashes for the registry's htpasswd")
    private, credentials = env.private, {"username": USER, "password": PASSWORD}
    client = docker_sdk.DockerClient(base_url=f"unix://{env.socket}", version="1.50")
    try:
        client.images.load(env.busybox.tarball.read_bytes())
        client.images.get("busybox:latest").tag(f"{private}/secret", "1")
        refused = list(client.images.push(f"{private}/secret", tag="1", stream=True, decode=True))[-1].get("error", "")
        assert "unauthorized" in refused or "authentication required" in refused
        pushed = list(client.images.push(f"{private}/secret", "1", stream=True, decode=True, auth_config=credentials))
        assert "error" not in pushed[-1] and pushed[-1]["aux"]["Tag"] == "1"
        client.images.remove(f"{private}/secret:1")
        with pytest.raises(docker_sdk.errors.APIError) as anonymous:
            client.images.pull(f"{private}/secret", tag="1")
        assert anonymous.value.status_code == 401
        assert client.images.pull(f"{private}/secret", tag="1", auth_config=credentials).id == env.busybox.image_id
        client.images.remove(f"{private}/secret:1")
    finally:
        client.close()
    assert PASSWORD not in env.log.read_text()


def test_raftswarm_image_commands(env, tmp_path):
    registry, image = env.registry, env.busybox

    def raftswarm(*args: str):
        runner = CliRunner(env={"RAFTSWARM_HOST": None, "DOCKER_HOST": None})
        return runner.invoke(main, ["-H", f"unix://{env.socket}", "image", *args])

    loaded = raftswarm("load", "-i", str(image.tarball))
    assert loaded.exit_code == 0 and "Loaded image: busybox:latest" in loaded.output
    assert raftswarm("tag", "busybox", f"{registry}/cli:2").exit_code == 0
    listed = raftswarm("ls", f"{registry}/cli").output.splitlines()
    assert listed[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert listed[1].split()[:3] == [f"{registry}/cli", "2", image.image_id[7:19]]
    pushed = raftswarm("push", f"{registry}/cli:2")
    assert pushed.exit_code == 0 and re.search(r"^2: digest: sha256:[0-9a-f]{64} size: \d+$", pushed.output, re.M)
    removed = raftswarm("rm", f"{registry}/cli:2", "nosuch:1")
    assert removed.exit_code == 1 and f"Untagged: {registry}/cli:2" in removed.stdout
    assert removed.stderr == "Error response from daemon: No such image: nosuch:1\n"
    pulled = raftswarm("pull", f"{registry}/cli:2")
    assert pulled.exit_code == 0 and pulled.output.endswith(f"{registry}/cli:2\n")
    inspected = raftswarm("inspect", "-f", "{{.Id}}", f"{registry}/cli:2")
    assert inspected.output == image.image_id + "\n"
    missing = raftswarm("pull", f"{registry}/cli:nope")
    assert missing.exit_code == 1 and "manifest unknown" in missing.stderr
    raftswarm("rm", f"{registry}/cli:2")


# -- without a node ----------------------------------------------------------------------------------------------


def test_import_changes_are_dockerfile_instructions():
    config = import_changes([
        'CMD ["sh", "-c", "echo hi"]', "ENTRYPOINT /init --flag", 'ENV A=1 B="two words"', "ENV A 3",
        "LABEL team=core", "EXPOSE 80 53/udp 7000-7001", "USER nobody", "VOLUME /data", "WORKDIR /srv", "WORKDIR app",
    ])
    assert config == {
        "Cmd": ["sh", "-c", "echo hi"],
        "Entrypoint": ["/bin/sh", "-c", "/init --flag"],
        "Env": ["B=two words", "A=3"],
        "Labels": {"team": "core"},
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "7000/tcp": {}, "7001/tcp": {}},
        "User": "nobody",
        "Volumes": {"/data": {}},
        "WorkingDir": "/srv/app",
    }
    for refused in ("RUN make", "HEALTHCHECK NONE", "CMD", "ENV A=1 stray", "EXPOSE http"):
        with pytest.raises(ControlError) as error:
            import_changes([refused])
        assert error.value.status == 400


def test_reference_filter_patterns_are_gos_path_match():
    assert path_match("busy*", "busybox") and path_match("*/app", "127.0.0.1:5000/app")
    assert not path_match("*", "myorg/app")  # * stops at "/", as in Go
    assert path_match("app:[0-9]", "app:1") and not path_match("app:[^0-9]", "app:1")
    with pytest.raises(ControlError):
        path_match("app[", "app")


def test_registry_auth_header_is_base64url_json_with_or_without_padding():
    encoded = base64.urlsafe_b64encode(json.dumps({"username": "u", "password": "p?>", "email": ""}).encode()).decode()
    assert decode_auth(encoded) == decode_auth(encoded.rstrip("=")) == {"username": "u", "password": "p?>"}
    assert decode_auth(base64.urlsafe_b64encode(b"{}").decode()) is None
    assert decode_auth("not base64 json!") is None and decode_auth("") is None

