"""Pull and push against a real registry (Debian's docker-registry on 127.0.0.1), between node image stores.

Each test starts its own registry process (about 0.1 s) and ends it by PID; the stores are directories under
the test's tmp_path, one per "node". Images are built here: a busybox-static layer (the 2 MB binary) as the
base, and small layers above it, written as OCI layouts by hand.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from raftswarm.images import samples
from raftswarm.images.errors import DigestMismatch, ImageNotFound
from raftswarm.images.manifest import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from raftswarm.objects.reference import parse
from raftswarm.images.registry import Endpoint, RegistryClient, RegistryError, _error
from raftswarm.localcluster.registry import HtpasswdUnavailable, LocalRegistry, bcrypt_hash, spawn_detached, stop_pid
from raftswarm.images.store import ImageStore
from raftswarm.localcluster.processes import process_start_time

pytestmark = pytest.mark.skipif(
    not (shutil.which("skopeo") and Path("/usr/bin/docker-registry").is_file()),
    reason="needs the Debian packages skopeo and docker-registry (./setup installs them)",
)

BUSYBOX = Path("/bin/busybox")


def _layer(files: dict[str, bytes]) -> bytes:
    """A gzipped tar layer with `files`, the same bytes every time (fixed times and owners)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _write_blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _oci_layout(layout: Path, layers: list[bytes], cmd: list[str]) -> Path:
    """An OCI image layout of a linux/amd64 image with `layers` (gzipped tars, bottom first)."""
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    diff_ids = [f"sha256:{hashlib.sha256(gzip.decompress(layer)).hexdigest()}" for layer in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **_write_blob(layout, json.dumps(config).encode())},
        "layers": [{"mediaType": OCI_LAYER_GZIP, **_write_blob(layout, layer)} for layer in layers],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, **_write_blob(layout, json.dumps(manifest).encode())}],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return layout


BASE = _layer({"bin/busybox": BUSYBOX.read_bytes()}) if BUSYBOX.is_file() else b""


def _build(store: ImageStore, tmp_path: Path, reference: str, extra: dict[str, bytes] | None = None) -> object:
    """An image in `store` tagged `reference`: the busybox base layer, plus a layer of `extra` files."""
    layers = [BASE] + ([_layer(extra)] if extra else [])
    layout = _oci_layout(tmp_path / f"layout-{secrets.token_hex(4)}", layers, ["/bin/busybox", "sh"])
    return store.add_from_oci_layout(layout, [reference])


def _dead_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _blob_gets(registry: LocalRegistry, digest: str) -> int:
    return sum(1 for r in registry.requests() if r.method == "GET" and r.path.endswith(f"/blobs/{digest}"))


@pytest.fixture
async def registry(tmp_path):
    async with LocalRegistry(tmp_path / "registry", tmp_path / "registry-run") as running:
        yield running


@pytest.fixture
def node1(tmp_path):
    return ImageStore(tmp_path / "node1")


@pytest.fixture
def node2(tmp_path):
    return ImageStore(tmp_path / "node2")


async def test_an_image_pushed_from_one_node_is_pulled_by_another_with_the_same_id_config_and_digest(
    registry, node1, node2, tmp_path
):
    name = f"{registry.address}/app"
    built = _build(node1, tmp_path, f"{name}:1", {"app.txt": b"v1\n"})
    pushed: list[dict] = []
    digest = await RegistryClient(node1).push(f"{name}:1", progress=pushed.append)

    statuses = [m.get("status") for m in pushed]
    assert statuses[0] == f"The push refers to repository [{name}]"
    assert statuses.count("Pushed") == 2 and "Layer already exists" not in statuses
    size = pushed[-1]["aux"]["Size"]
    assert statuses[-2] == f"1: digest: {digest} size: {size}"
    assert pushed[-1] == {"progressDetail": {}, "aux": {"Tag": "1", "Digest": digest, "Size": size}}
    assert f"{name}@{digest}" in node1.resolve(f"{name}:1").repo_digests

    pulled: list[dict] = []
    image = await RegistryClient(node2).pull(f"{name}:1", progress=pulled.append)
    assert image.id == built.id
    assert image.config == built.config
    assert f"{name}:1" in image.repo_tags and f"{name}@{digest}" in image.repo_digests
    statuses = [m.get("status") for m in pulled]
    assert statuses[0] == "Pulling from app"
    assert statuses.count("Pulling fs layer") == 2 and statuses.count("Pull complete") == 2
    assert statuses[-2:] == [f"Digest: {digest}", f"Status: Downloaded newer image for {name}:1"]

    # Pushed again: the registry has every layer.
    again: list[dict] = []
    assert await RegistryClient(node1).push(f"{name}:1", progress=again.append) == digest
    assert [m.get("status") for m in again].count("Layer already exists") == 2

    # Pulled again: nothing fetched, and Docker's words for it.
    again = []
    assert (await RegistryClient(node2).pull(f"{name}:1", progress=again.append)).id == built.id
    statuses = [m.get("status") for m in again]
    assert statuses.count("Already exists") == 2 and "Pulling fs layer" not in statuses
    assert statuses[-1] == f"Status: Image is up to date for {name}:1"


async def test_a_layer_the_node_has_is_not_fetched_again(registry, node1, node2, tmp_path):
    name = f"{registry.address}/app"
    _build(node1, tmp_path, f"{name}:1", {"app.txt": b"v1\n"})
    _build(node1, tmp_path, f"{name}:2", {"app.txt": b"v2\n"})
    client = RegistryClient(node1)
    await client.push(f"{name}:1")
    await client.push(f"{name}:2")
    base = f"sha256:{hashlib.sha256(BASE).hexdigest()}"

    await RegistryClient(node2).pull(f"{name}:1")
    assert _blob_gets(registry, base) == 1
    second: list[dict] = []
    await RegistryClient(node2).pull(f"{name}:2", progress=second.append)
    assert _blob_gets(registry, base) == 1
    assert {"status": "Already exists", "progressDetail": {}, "id": base[7:19]} in second


async def test_concurrent_pulls_of_one_reference_share_one_transfer(registry, node1, node2, tmp_path):
    name = f"{registry.address}/app"
    _build(node1, tmp_path, f"{name}:1", {"app.txt": b"v1\n"})
    await RegistryClient(node1).push(f"{name}:1")
    manifest_requests = len([r for r in registry.requests() if r.path == "/v2/app/manifests/1"])

    client = RegistryClient(node2)
    first, second = await asyncio.gather(client.pull(f"{name}:1"), client.pull(f"{name}:1"))
    assert first.id == second.id
    # One pull asks for the tag once (then fetches by digest); two separate pulls would ask twice.
    assert len([r for r in registry.requests() if r.path == "/v2/app/manifests/1"]) == manifest_requests + 1
    base = f"sha256:{hashlib.sha256(BASE).hexdigest()}"
    assert _blob_gets(registry, base) == 1


async def test_an_unknown_tag_is_refused_in_dockers_words_and_nothing_is_recorded(registry, node2):
    with pytest.raises(RegistryError) as error:
        await RegistryClient(node2).pull(f"{registry.address}/app:2")
    assert str(error.value) == f"manifest for {registry.address}/app:2 not found: manifest unknown: manifest unknown"
    with pytest.raises(ImageNotFound):
        node2.resolve(f"{registry.address}/app:2")


async def test_an_unreachable_registry_gives_the_connection_error(node2):
    with pytest.raises(RegistryError, match="connection refused"):
        await RegistryClient(node2).pull(f"127.0.0.1:{_dead_port()}/app:1")


async def test_distribution_describes_the_manifest_as_the_registry_has_it(registry, node1, tmp_path):
    name = f"{registry.address}/app"
    _build(node1, tmp_path, f"{name}:1")
    client = RegistryClient(node1)
    digest = await client.push(f"{name}:1")
    answer = await client.distribution(f"{name}:1")
    assert answer["Descriptor"]["digest"] == digest
    assert answer["Descriptor"]["mediaType"] == OCI_MANIFEST
    assert answer["Descriptor"]["size"] > 0
    assert answer["Platforms"] == [{"architecture": "amd64", "os": "linux"}]


async def test_basic_auth_is_required_and_the_password_never_touches_disk_or_argv(node1, node2, tmp_path):
    try:
        bcrypt_hash("probe")
    except HtpasswdUnavailable as e:
        pytest.skip(str(e))
    since = time.time() - 1  # file times have coarser ticks than time.time()
    password = f"pw-{secrets.token_hex(16)}"
    auth = {"username": "alice", "password": password}
    async with LocalRegistry(tmp_path / "private", tmp_path / "private-run", users={"alice": password}) as private:
        name = f"{private.address}/app"
        _build(node1, tmp_path, f"{name}:1", {"app.txt": b"secret app\n"})
        with pytest.raises(RegistryError, match="unauthorized: authentication required"):
            await RegistryClient(node1).push(f"{name}:1")
        await RegistryClient(node1).push(f"{name}:1", auth=auth)

        client = RegistryClient(node2)
        with pytest.raises(RegistryError, match="unauthorized: authentication required"):
            await client.pull(f"{name}:1")
        with pytest.raises(RegistryError, match="unauthorized: authentication required"):
            await client.pull(f"{name}:1", auth={"username": "alice", "password": "wrong"})

        seen_in_argv: list[str] = []

        def scan_argv(message: dict) -> None:
            # Called while skopeo transfers layers: no process may carry the password in its command line.
            if message.get("status") == "Pulling fs layer":
                for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                    try:
                        if password.encode() in cmdline.read_bytes():
                            seen_in_argv.append(str(cmdline))
                    except OSError:
                        pass

        image = await client.pull(f"{name}:1", auth=auth, progress=scan_argv)
        assert f"{name}:1" in image.repo_tags
        assert seen_in_argv == []
    for top in {tmp_path, Path(tempfile.gettempdir())}:
        assert not _files_containing(top, password.encode(), since), f"the password was written under {top}"


def _files_containing(top: Path, needle: bytes, since: float) -> list[Path]:
    """Regular files under `top` written since `since` (not following links, skipping unreadable ones)
    that contain `needle`."""
    found = []
    for directory, _, files in os.walk(top):
        for file in files:
            path = Path(directory) / file
            try:
                if path.is_symlink() or not path.is_file() or path.stat().st_mtime < since:
                    continue
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                pass
    return found


async def test_a_blob_tampered_in_the_registry_is_refused_and_nothing_is_recorded(registry, node1, node2, tmp_path):
    name = f"{registry.address}/app"
    _build(node1, tmp_path, f"{name}:3", {"app.txt": b"to be tampered with\n"})
    await RegistryClient(node1).push(f"{name}:3")
    layer = json.loads(next(iter(_manifests(registry))))["layers"][-1]["digest"]
    stored = registry.blob_path(layer)
    tampered = bytearray(stored.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF  # same length: only the content's digest tells
    stored.write_bytes(bytes(tampered))

    with pytest.raises(DigestMismatch, match=f"filesystem layer verification failed for digest {layer}"):
        await RegistryClient(node2).pull(f"{name}:3")
    with pytest.raises(ImageNotFound):
        node2.resolve(f"{name}:3")
    assert not (node2.shared_blob_dir / "sha256" / layer.removeprefix("sha256:")).exists()


def _manifests(registry: LocalRegistry):
    """The manifests in the registry's storage (the blobs that parse as image manifests)."""
    for data in registry.blob_dir.glob("*/*/data"):
        try:
            document = json.loads(data.read_bytes())
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(document, dict) and "layers" in document:
            yield data.read_bytes()


async def test_docker_hub_pulls_go_to_the_mirrors_in_order(node1, node2, tmp_path):
    async with LocalRegistry(tmp_path / "mirror", tmp_path / "mirror-run") as mirror:
        built = _build(node1, tmp_path, f"{mirror.address}/library/busybox:latest")
        await RegistryClient(node1).push(f"{mirror.address}/library/busybox:latest")

        # The first mirror is down: dockerd goes on to the next one (and only then to Docker Hub, which is
        # aliased to a dead loopback port here: a test sends nothing beyond loopback even when it fails).
        client = RegistryClient(
            node2,
            mirrors=[f"http://127.0.0.1:{_dead_port()}", f"http://{mirror.address}"],
            aliases={"docker.io": f"127.0.0.1:{_dead_port()}"},
        )
        messages: list[dict] = []
        image = await client.pull("busybox", progress=messages.append)
    assert image.id == built.id
    assert "busybox:latest" in image.repo_tags
    assert messages[0] == {"status": "Pulling from library/busybox", "id": "latest"}
    assert messages[-1] == {"status": "Status: Downloaded newer image for busybox:latest"}


async def test_an_alias_reaches_the_registry_elsewhere_and_records_the_name_as_written(
    registry, node1, node2, tmp_path
):
    built = _build(node1, tmp_path, f"{registry.address}/app:1")
    digest = await RegistryClient(node1).push(f"{registry.address}/app:1")

    client = RegistryClient(node2, aliases={"localhost:5000": registry.address})
    image = await client.pull("localhost:5000/app:1")
    assert image.id == built.id
    assert "localhost:5000/app:1" in image.repo_tags
    assert f"localhost:5000/app@{digest}" in image.repo_digests


async def test_a_missing_skopeo_is_named_with_its_debian_package(node2, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RegistryError, match="Debian package skopeo"):
        await RegistryClient(node2).pull("localhost:5000/app:1")


def test_docker_hub_refusals_are_reported_in_dockers_words():
    # skopeo's stderr for a Docker Hub repository that does not exist (Hub answers as for a private one).
    stderr = (
        'time="2026-12-07T03:31:47Z" level=fatal '
        'msg="Error parsing image name \\"docker://docker.io/library/nosuch:latest\\": reading manifest '
        'latest in docker.io/library/nosuch: errors:\\ndenied: requested access to the resource is denied\\n'
        'unauthorized: authentication required\\n"'
    )
    ref = parse("nosuch")
    error = _error(stderr, ref, Endpoint("docker.io", ref.path, tls_verify=True), pushing=False)
    assert str(error) == (
        "pull access denied for nosuch, repository does not exist or may require 'docker login': "
        "denied: requested access to the resource is denied"
    )


async def test_a_detached_registry_is_ended_through_its_pidfile(tmp_path):
    pid = await spawn_detached(tmp_path / "storage", tmp_path / "run")
    pidfile = tmp_path / "run" / "registry.pid"
    try:
        assert int(pidfile.read_text().split()[0]) == pid
        # A session of its own: a Ctrl-C in the terminal of `raftswarm cluster up` does not reach it.
        assert os.getsid(pid) == pid
    finally:
        assert stop_pid(pidfile)
    assert process_start_time(pid) is None
    assert not pidfile.exists()
    assert stop_pid(pidfile)  # already gone: nothing to do


async def test_an_image_pushed_in_dockers_format_keeps_its_id_and_digest_when_pulled(registry, node2, tmp_path):
    """A Docker schema 2 image (what `docker push` sends) keeps the registry's config digest as its ID: the
    store records the registry's own manifest and config, not skopeo's OCI conversion of them."""
    sample = samples.busybox(tmp_path / "cache")
    samples.push(sample, f"{registry.address}/library/busybox:latest")
    with tarfile.open(sample.tarball) as archive:
        config_name = json.load(archive.extractfile("manifest.json"))[0]["Config"]
    image = await RegistryClient(node2).pull(f"{registry.address}/library/busybox:latest")
    assert image.id == "sha256:" + config_name.rsplit("/", 1)[1]
    pushed = await RegistryClient(node2).distribution(f"{registry.address}/library/busybox:latest")
    assert image.repo_digests == (f"{registry.address}/library/busybox@{pushed['Descriptor']['digest']}",)
    assert pushed["Descriptor"]["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
