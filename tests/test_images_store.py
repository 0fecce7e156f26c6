"""The node image store: load/save/import, references and `docker rmi` rules, verification, layers shared and
unpacked once, overlay rootfs for tasks, and tar members that try to write outside their layer.

Images are built in-process: a base layer with a few files (setuid, owner, xattr, device, symlinks, a hard
link) and a second layer that deletes a file (whiteout) and replaces a directory's content (opaque).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from raftswarm.images import archive, overlay, store as store_module
from raftswarm.objects.reference import InvalidReference
from raftswarm.images.store import (
    DigestMismatch,
    ImageConflict,
    ImageError,
    ImageInUse,
    ImageNotFound,
    ImageStore,
    InvalidImage,
    RootfsUnavailable,
)

MTIME = 1_700_000_000
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="unpacking layers (ownership, devices, trusted xattrs) and overlay mounts need root"
)


# -- building images --------------------------------------------------------------------------------------


def entry(name, kind="file", data=b"", mode=None, uid=0, gid=0, target="", xattrs=None, dev=(0, 0), mtime=MTIME):
    info = tarfile.TarInfo(name)
    info.uid, info.gid, info.mtime = uid, gid, mtime
    info.type = {
        "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
    }[kind]
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    info.linkname = target
    info.devmajor, info.devminor = dev
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    if kind == "file":
        info.size = len(data)
    return info, data if kind == "file" else None


def tar_bytes(entries) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


BASE_LAYER = tar_bytes([
    entry("./", "dir"),
    entry("bin/", "dir"),
    entry("bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o4755),
    entry("bin/tool-link", "hardlink", target="bin/tool"),
    entry("etc/", "dir"),
    entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
    entry("etc/hostname", data=b"base\n"),
    entry("home/", "dir"),
    entry("home/user/", "dir", uid=1000, gid=1000, mode=0o700),
    entry("home/user/notes", data=b"mine", uid=1000, gid=1000, mtime=1_234_567_890, xattrs={"user.comment": "hello"}),
    entry("data/", "dir"),
    entry("data/old1", data=b"1"),
    entry("data/old2", data=b"22"),
    entry("passwd-link", "symlink", target="/etc/passwd"),
    entry("dev/", "dir"),
    entry("dev/null", "chr", mode=0o666, dev=(1, 3)),
    entry("dev/pipe", "fifo"),
])
BASE_SIZE = sum(len(d) for d in (b"#!/bin/sh\necho tool\n", b"root:x:0:0:root:/root:/bin/sh\n", b"base\n", b"mine", b"1", b"22"))

TOP_LAYER = tar_bytes([
    entry("etc/", "dir"),
    entry("etc/.wh.hostname"),
    entry("etc/added", data=b"added\n"),
    entry("data/", "dir"),
    entry("data/.wh..wh..opq"),
    entry("data/new", data=b"new"),
])

OTHER_TOP_LAYER = tar_bytes([entry("etc/", "dir"), entry("etc/other", data=b"other image\n")])


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Built:
    """An image as a registry would hold it: config, layer blobs (gzip), manifest."""

    config: bytes
    tars: list[bytes]
    blobs: list[bytes]
    manifest: bytes
    manifest_type: str

    @property
    def id(self) -> str:
        return sha(self.config)

    @property
    def manifest_digest(self) -> str:
        return sha(self.manifest)

    def descriptor(self, **extra) -> dict:
        return {"mediaType": self.manifest_type, "digest": self.manifest_digest, "size": len(self.manifest), **extra}

    def all_blobs(self) -> list[bytes]:
        return [self.config, self.manifest, *self.blobs]


def build(tars, *, cmd=("/bin/tool",), arch="amd64", docker_types=False, diff_ids=None, created="2024-01-01T00:00:00Z") -> Built:
    config = json.dumps({
        "architecture": arch, "os": "linux", "created": created,
        "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(t) for t in tars]},
        "history": [{"created": created} for _ in tars],
    }).encode()
    blobs = [gzip.compress(t, mtime=0) for t in tars]
    layer_type = "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker_types else "application/vnd.oci.image.layer.v1.tar+gzip"
    config_type = "application/vnd.docker.container.image.v1+json" if docker_types else "application/vnd.oci.image.config.v1+json"
    manifest_type = DOCKER_MANIFEST if docker_types else OCI_MANIFEST
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": sha(b), "size": len(b)} for b in blobs],
    }).encode()
    return Built(config, list(tars), blobs, manifest, manifest_type)


def write_layout(path: Path, index_entries: list[dict], blobs: list[bytes]) -> Path:
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries}))
    for blob in blobs:
        (path / "blobs" / "sha256" / sha(blob)[7:]).write_bytes(blob)
    return path


def tarball_of(directory: Path) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    buffer.seek(0)
    return buffer


def docker_archive(images: list[tuple[Built, list[str]]], legacy=False) -> io.BytesIO:
    """What `docker save` writes: manifest.json, configs and uncompressed layer tars (Docker < 25 layout
    with `legacy`, blobs/sha256 otherwise)."""
    files, manifest = {}, []
    for built, tags in images:
        config_name = f"{built.id[7:]}.json" if legacy else f"blobs/sha256/{built.id[7:]}"
        layer_names = [f"{sha(t)[7:]}/layer.tar" if legacy else f"blobs/sha256/{sha(t)[7:]}" for t in built.tars]
        files[config_name] = built.config
        files.update(zip(layer_names, built.tars))
        manifest.append({"Config": config_name, "RepoTags": tags, "Layers": layer_names})
    files["manifest.json"] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


# -- fixtures ---------------------------------------------------------------------------------------------


def mounts_under(root: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(root))]


@pytest.fixture
def store(tmp_path):
    image_store = ImageStore(tmp_path / "store")
    yield image_store
    for tasks in image_store.in_use().values():
        for task in tasks:
            image_store.release_rootfs(task)
    for mountpoint in mounts_under(tmp_path):  # whatever a failed test left mounted
        overlay.unmount(Path(mountpoint))
    assert not mounts_under(tmp_path)


@pytest.fixture
def busybox(store) -> Built:
    built = build([BASE_LAYER, TOP_LAYER])
    assert archive.load(store, docker_archive([(built, ["busybox:latest"])])) == ["Loaded image: busybox:latest"]
    return built


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def layer_dir(store: ImageStore, tar: bytes) -> Path:
    return store.root / "layers" / "sha256" / sha(tar)[7:] / "diff"


def assert_store_empty(store: ImageStore):
    assert store.images() == []
    assert files_in(store.shared_blob_dir / "sha256") == []
    assert files_in(store.root / "layers" / "sha256") == []
    assert files_in(store.work_dir()) == []


# -- load, resolve, references ----------------------------------------------------------------------------


def test_load_docker_archive_then_resolve_as_docker(store, busybox):
    [image] = store.images()
    assert image.id == busybox.id
    assert image.repo_tags == ("busybox:latest",)
    assert image.repo_digests == ()
    assert image.config["config"]["Cmd"] == ["/bin/tool"]
    assert image.size == BASE_SIZE + len(b"added\n") + len(b"new")  # unpacked content, as Docker's Size
    assert [layer.diff_id for layer in image.layers] == [sha(BASE_LAYER), sha(TOP_LAYER)]
    assert image.created == "2024-01-01T00:00:00Z"
    for name in ("busybox", "busybox:latest", "docker.io/library/busybox:latest", "library/busybox",
                 busybox.id, busybox.id[7:], busybox.id[7:10], busybox.id[:12]):
        assert store.resolve(name) == image, name
    with pytest.raises(ImageNotFound, match=r"^No such image: nosuch:latest$"):
        store.resolve("nosuch")
    with pytest.raises(ImageNotFound, match=r"^No such image: busybox:1$"):
        store.resolve("busybox:1")
    with pytest.raises(InvalidReference, match="invalid reference format"):
        store.resolve("Busy Box")


def test_loaded_layer_keeps_docker_semantics(store, busybox):
    base = layer_dir(store, BASE_LAYER)
    tool = base / "bin" / "tool"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o4755  # setuid kept
    assert (base / "bin" / "tool-link").stat().st_ino == tool.stat().st_ino  # hard link
    notes = base / "home" / "user" / "notes"
    assert (notes.stat().st_uid, notes.stat().st_gid) == (1000, 1000)
    assert notes.stat().st_mtime == 1_234_567_890
    assert os.getxattr(notes, "user.comment") == b"hello"
    assert stat.S_IMODE((base / "home" / "user").stat().st_mode) == 0o700
    assert (base / "etc").stat().st_mtime == MTIME  # directory times set after their entries
    assert os.readlink(base / "passwd-link") == "/etc/passwd"  # absolute symlink kept as is
    null = (base / "dev" / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_ISFIFO((base / "dev" / "pipe").lstat().st_mode)
    top = layer_dir(store, TOP_LAYER)
    whiteout = (top / "etc" / "hostname").lstat()
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0  # overlayfs whiteout
    assert os.getxattr(top / "data", "trusted.overlay.opaque") == b"y"
    assert not (top / "data" / ".wh..wh..opq").exists()


def test_tag_and_remove_follow_docker_rmi(store, busybox):
    short = busybox.id[7:19]
    store.tag("busybox", "myorg/app:1")
    assert store.resolve("myorg/app:1").repo_tags == ("busybox:latest", "myorg/app:1")
    with pytest.raises(ImageConflict, match=(
        rf"^conflict: unable to delete {short} \(must be forced\) - image is referenced in multiple repositories$"
    )):
        store.remove(busybox.id)
    assert store.remove("myorg/app:1") == [{"Untagged": "myorg/app:1"}]
    assert store.remove("busybox") == [{"Untagged": "busybox:latest"}, {"Deleted": busybox.id}]
    with pytest.raises(ImageNotFound, match=r"^No such image: busybox:latest$"):
        store.resolve("busybox")
    assert_store_empty(store)


def test_forced_remove_by_id_untags_everything(store, busybox):
    store.tag(busybox.id, "localhost:5000/app:2")
    assert store.remove(busybox.id[7:19], force=True) == [
        {"Untagged": "busybox:latest"}, {"Untagged": "localhost:5000/app:2"}, {"Deleted": busybox.id},
    ]
    assert_store_empty(store)


def test_tag_moves_and_refuses_digests(store, busybox):
    other = build([BASE_LAYER, OTHER_TOP_LAYER])
    archive.load(store, docker_archive([(other, ["other:1"])]))
    store.tag("other:1", "busybox")
    assert store.resolve("busybox").id == other.id
    assert store.resolve(busybox.id).repo_tags == ()  # dangling, as in Docker; still there
    with pytest.raises(ImageError, match="refusing to create a tag with a digest reference"):
        store.tag("other:1", f"busybox@{other.id}")


def test_pulled_references_record_tag_and_repo_digest(store, tmp_path):
    built = build([BASE_LAYER], docker_types=True)
    layout = write_layout(tmp_path / "layout", [built.descriptor()], built.all_blobs())
    repo_digest = f"localhost:5000/app@{built.manifest_digest}"
    image = store.add_from_oci_layout(layout, ["localhost:5000/app:1", repo_digest])
    assert image.repo_tags == ("localhost:5000/app:1",)
    assert image.repo_digests == (repo_digest,)
    assert image.manifest_digest == built.manifest_digest
    assert image.layers[0].media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert store.resolve(repo_digest) == image
    # Removing the repository's last tag takes its digest references with it, then the image.
    assert store.remove("localhost:5000/app:1") == [
        {"Untagged": "localhost:5000/app:1"}, {"Untagged": repo_digest}, {"Deleted": built.id},
    ]
    assert_store_empty(store)


def test_adding_the_same_image_again_only_adds_references(store, tmp_path, busybox):
    built = build([BASE_LAYER, TOP_LAYER])
    layout = write_layout(tmp_path / "layout", [built.descriptor()], built.all_blobs())
    image = store.add_from_oci_layout(layout, ["registry.example.com/bb:1"])
    assert image.id == busybox.id
    assert image.repo_tags == ("busybox:latest", "registry.example.com/bb:1")
    assert len(store.images()) == 1


# -- OCI layouts and tarballs -----------------------------------------------------------------------------


def test_load_oci_layout_tarball_names_images_from_annotations(store, tmp_path):
    named = build([BASE_LAYER, TOP_LAYER])
    unnamed = build([BASE_LAYER, OTHER_TOP_LAYER])
    layout = write_layout(
        tmp_path / "layout",
        [
            named.descriptor(annotations={"io.containerd.image.name": "docker.io/library/busybox:1.36",
                                          "org.opencontainers.image.ref.name": "1.36"}),
            unnamed.descriptor(annotations={"org.opencontainers.image.ref.name": "latest"}),  # a bare tag names nothing
        ],
        named.all_blobs() + unnamed.all_blobs(),
    )
    assert archive.load(store, tarball_of(layout)) == ["Loaded image: busybox:1.36", f"Loaded image ID: {unnamed.id}"]
    assert {image.id for image in store.images()} == {named.id, unnamed.id}
    assert files_in(store.work_dir()) == []


def test_manifest_list_resolves_to_linux_amd64(store, tmp_path):
    amd64 = build([BASE_LAYER, TOP_LAYER], arch="amd64")
    arm64 = build([BASE_LAYER, OTHER_TOP_LAYER], arch="arm64")
    attestation = b'{"schemaVersion":2}'
    index = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [
            arm64.descriptor(platform={"architecture": "arm64", "os": "linux", "variant": "v8"}),
            amd64.descriptor(platform={"architecture": "amd64", "os": "linux"}),
            {"mediaType": OCI_MANIFEST, "digest": sha(attestation), "size": len(attestation),
             "platform": {"architecture": "unknown", "os": "unknown"}},
        ],
    }).encode()
    # The arm64 image's layer blobs are absent, as after a single-platform pull: never needed.
    layout = write_layout(tmp_path / "layout", [{"mediaType": DOCKER_LIST, "digest": sha(index), "size": len(index)}],
                          [index, *amd64.all_blobs(), arm64.manifest, arm64.config])
    image = store.add_from_oci_layout(layout, ["multi:1"])
    assert image.id == amd64.id
    assert image.manifest_digest == amd64.manifest_digest
    assert files_in(store.shared_blob_dir / "sha256") == sorted(sha(b)[7:] for b in amd64.all_blobs())


def test_manifest_list_without_linux_amd64_refused(store, tmp_path):
    arm64 = build([BASE_LAYER], arch="arm64")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [arm64.descriptor(platform={"architecture": "arm64", "os": "linux"})]}).encode()
    layout = write_layout(tmp_path / "layout", [{"mediaType": OCI_INDEX, "digest": sha(index), "size": len(index)}],
                          [index, *arm64.all_blobs()])
    with pytest.raises(InvalidImage, match=r"no matching manifest for linux/amd64 .*offers: linux/arm64"):
        store.add_from_oci_layout(layout, ["multi:1"])
    assert_store_empty(store)


def test_legacy_and_compressed_docker_archives_load(store):
    built = build([BASE_LAYER, TOP_LAYER])
    assert archive.load(store, docker_archive([(built, ["old:1", "old:2"])], legacy=True)) == [
        "Loaded image: old:1", "Loaded image: old:2"]
    assert store.resolve("old:2").id == built.id
    gzipped = io.BytesIO(gzip.compress(docker_archive([(built, ["zipped:1"])]).getvalue()))  # docker save | gzip
    assert archive.load(store, gzipped) == ["Loaded image: zipped:1"]
    assert store.resolve("zipped:1").id == built.id


def test_tarball_that_is_no_image_archive_refused(store):
    with pytest.raises(InvalidImage, match="neither manifest.json nor index.json"):
        archive.load(store, io.BytesIO(tar_bytes([entry("hello", data=b"hi")])))
    assert_store_empty(store)


def test_save_then_load_round_trips(store, busybox, tmp_path):
    other = build([BASE_LAYER, OTHER_TOP_LAYER])
    archive.load(store, docker_archive([(other, [])]))
    saved = io.BytesIO()
    archive.save(store, store.images(), saved)
    saved.seek(0)
    copy = ImageStore(tmp_path / "copy")
    assert sorted(archive.load(copy, saved)) == sorted(["Loaded image: busybox:latest", f"Loaded image ID: {other.id}"])
    assert {(i.id, i.repo_tags) for i in copy.images()} == {(busybox.id, ("busybox:latest",)), (other.id, ())}


def test_import_tarball_makes_a_one_layer_image(store):
    rootfs = tar_bytes([entry("bin/", "dir"), entry("bin/sh", data=b"shell", mode=0o755)])
    image = store.import_tarball(io.BytesIO(gzip.compress(rootfs)), "imported:1", {"Cmd": ["/bin/sh"], "WorkingDir": "/bin"})
    assert image.repo_tags == ("imported:1",)
    assert image.config["config"] == {"Cmd": ["/bin/sh"], "WorkingDir": "/bin"}
    assert (image.config["os"], image.config["architecture"]) == ("linux", "amd64")
    assert [(layer.diff_id, layer.media_type) for layer in image.layers] == [(sha(rootfs), "application/vnd.oci.image.layer.v1.tar+gzip")]
    assert (layer_dir(store, rootfs) / "bin" / "sh").read_bytes() == b"shell"
    with pytest.raises(ImageError, match="cannot apply Healthcheck on import"):
        store.import_tarball(io.BytesIO(rootfs), None, {"Healthcheck": {}})


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_pushes_from_and_pulls_into_the_shared_blob_dir(store, busybox, tmp_path):
    """The registry client's seams: write_oci_layout + --src-shared-blob-dir (push) and
    --dest-shared-blob-dir + add_from_oci_layout (pull), with a second store as the "registry"."""
    other = ImageStore(tmp_path / "other")
    source = tmp_path / "source-layout"
    store.write_oci_layout(store.resolve("busybox"), source, "latest")
    pulled = Path(os.path.join(other.work_dir(), "pull"))
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-shared-blob-dir", str(store.shared_blob_dir),
         "--dest-shared-blob-dir", str(other.shared_blob_dir), f"oci:{source}:latest", f"oci:{pulled}:latest"],
        check=True, capture_output=True,
    )
    image = other.add_from_oci_layout(pulled, ["localhost:5000/busybox:latest"])
    assert image.id == busybox.id
    assert image.repo_tags == ("localhost:5000/busybox:latest",)


# -- verification ------------------------------------------------------------------------------------------


def test_corrupt_layer_blob_refused_and_nothing_left(store, tmp_path):
    built = build([BASE_LAYER, TOP_LAYER])
    layout = write_layout(tmp_path / "layout", [built.descriptor()], built.all_blobs())
    blob = layout / "blobs" / "sha256" / sha(built.blobs[1])[7:]
    blob.write_bytes(gzip.compress(OTHER_TOP_LAYER, mtime=0)[: len(built.blobs[1])].ljust(len(built.blobs[1]), b"\0"))
    with pytest.raises(DigestMismatch, match=f"expected {sha(built.blobs[1])}"):
        store.add_from_oci_layout(layout, ["bad:1"])
    assert_store_empty(store)


def test_wrong_diff_id_refused_and_nothing_left(store, tmp_path):
    built = build([BASE_LAYER, TOP_LAYER], diff_ids=[sha(BASE_LAYER), sha(OTHER_TOP_LAYER)])
    layout = write_layout(tmp_path / "layout", [built.descriptor()], built.all_blobs())
    with pytest.raises(DigestMismatch, match=f"not the diff_id {sha(OTHER_TOP_LAYER)}"):
        store.add_from_oci_layout(layout, ["bad:1"])
    assert_store_empty(store)


def test_corrupt_blob_already_in_the_shared_dir_is_refused_and_removed(store, tmp_path):
    """What skopeo wrote into the shared directory is verified too, not trusted."""
    built = build([BASE_LAYER])
    for blob in built.all_blobs():
        (store.shared_blob_dir / "sha256" / sha(blob)[7:]).write_bytes(blob)
    (store.shared_blob_dir / "sha256" / sha(built.config)[7:]).write_bytes(built.config.replace(b"linux", b"LINUX"))
    layout = write_layout(tmp_path / "layout", [built.descriptor()], [])
    with pytest.raises(DigestMismatch):
        store.add_from_oci_layout(layout, ["bad:1"])
    assert_store_empty(store)


def test_add_blob_with_wrong_digest_keeps_nothing(store):
    with pytest.raises(DigestMismatch, match="expected sha256:0000"):
        store.add_blob(io.BytesIO(b"content"), "sha256:" + "0" * 64)
    assert files_in(store.shared_blob_dir / "sha256") == []
    assert files_in(store.work_dir()) == []
    digest = store.add_blob(io.BytesIO(b"content"))
    assert store.has_blob(digest) and store.blob_path(digest).read_bytes() == b"content"


def test_digest_that_is_a_path_refused(store, tmp_path):
    layout = write_layout(tmp_path / "layout", [{"mediaType": OCI_MANIFEST, "digest": "sha256:../../../../etc/passwd", "size": 1}], [])
    with pytest.raises(InvalidImage, match="is not a sha256 digest"):
        store.add_from_oci_layout(layout, ["bad:1"])


@pytest.mark.skipif(importlib.util.find_spec("zstandard") is not None, reason="zstandard is installed: zstd layers are supported")
def test_zstd_layer_refused_without_the_zstandard_module(store, tmp_path):
    fake_zstd = b"\x28\xb5\x2f\xfd" + b"\0" * 16
    built = build([BASE_LAYER])
    built.blobs = [fake_zstd]
    manifest = json.loads(built.manifest)
    manifest["layers"][0].update(digest=sha(fake_zstd), size=len(fake_zstd), mediaType="application/vnd.oci.image.layer.v1.tar+zstd")
    built.manifest = json.dumps(manifest).encode()
    layout = write_layout(tmp_path / "layout", [built.descriptor()], built.all_blobs())
    with pytest.raises(ImageError, match=r"zstd-compressed .*pip install zstandard"):
        store.add_from_oci_layout(layout, ["z:1"])
    assert_store_empty(store)


# -- layers shared, unpacked once ----------------------------------------------------------------------------


def test_shared_base_layer_unpacked_once_and_collected_last(store, busybox):
    base = layer_dir(store, BASE_LAYER)
    inode = base.stat().st_ino
    other = build([BASE_LAYER, OTHER_TOP_LAYER])
    archive.load(store, docker_archive([(other, ["other:1"])]))
    assert base.stat().st_ino == inode  # not unpacked again
    assert len(os.listdir(store.root / "layers" / "sha256")) == 3
    store.remove("busybox")
    assert base.is_dir() and not layer_dir(store, TOP_LAYER).exists()
    # docker-archive layers are plain tars: their blob digest is their diff_id.
    assert not store.has_blob(busybox.id) and not store.has_blob(sha(TOP_LAYER))
    assert store.has_blob(sha(BASE_LAYER))  # the shared base layer's blob stays with "other"
    store.remove("other:1")
    assert_store_empty(store)


def test_concurrent_adds_unpack_a_shared_layer_once(store, tmp_path, monkeypatch):
    unpacked = []
    original = store_module.unpack_layer

    def counting_unpack(blob, dest, *, digest, diff_id, what):
        unpacked.append(diff_id)
        threading.Event().wait(0.05)  # widen the window in which a second unpack could start
        return original(blob, dest, digest=digest, diff_id=diff_id, what=what)

    monkeypatch.setattr(store_module, "unpack_layer", counting_unpack)
    images = [build([BASE_LAYER, TOP_LAYER]), build([BASE_LAYER, OTHER_TOP_LAYER])]
    layouts = [write_layout(tmp_path / f"layout{i}", [b.descriptor()], b.all_blobs()) for i, b in enumerate(images)]
    barrier = threading.Barrier(2)
    errors = []

    def add(i):
        barrier.wait()
        try:
            store.add_from_oci_layout(layouts[i], [f"img:{i}"])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(unpacked) == sorted([sha(BASE_LAYER), sha(TOP_LAYER), sha(OTHER_TOP_LAYER)])
    assert len(store.images()) == 2


# -- task root filesystems ----------------------------------------------------------------------------------


def test_mount_rootfs_shows_the_merged_image_and_keeps_writes_in_the_task(store, busybox):
    merged = store.mount_rootfs("task1", "busybox")
    assert str(merged) in mounts_under(store.root)
    assert (merged / "etc" / "passwd").read_bytes().startswith(b"root:")
    assert (merged / "etc" / "added").exists()
    assert not (merged / "etc" / "hostname").exists()  # whiteout
    assert sorted(os.listdir(merged / "data")) == ["new"]  # opaque directory
    assert stat.S_IMODE((merged / "bin" / "tool").stat().st_mode) == 0o4755
    (merged / "etc" / "passwd").write_text("changed\n")
    (merged / "written").write_text("by the task\n")
    upper = store.root / "containers" / "task1" / "upper"
    assert (upper / "written").read_text() == "by the task\n"
    assert (layer_dir(store, BASE_LAYER) / "etc" / "passwd").read_bytes().startswith(b"root:")
    assert not (layer_dir(store, TOP_LAYER) / "written").exists()
    assert store.mount_rootfs("task1", busybox.id) == merged  # idempotent
    assert mounts_under(store.root).count(str(merged)) == 1
    assert store.in_use() == {busybox.id: {"task1"}}
    store.release_rootfs("task1")
    assert mounts_under(store.root) == []
    assert not (store.root / "containers" / "task1").exists()
    assert store.in_use() == {}


def test_release_detaches_a_busy_rootfs_lazily(store, busybox):
    merged = store.mount_rootfs("busy", "busybox")
    with open(merged / "etc" / "passwd") as held_open:  # a task process still using its rootfs
        store.release_rootfs("busy")
        assert mounts_under(store.root) == []
        assert held_open.read().startswith("root:")
    assert not (store.root / "containers" / "busy").exists()
    assert store.in_use() == {}


@pytest.mark.parametrize("task_id", ["../../etc", "a/b", "a,upperdir=/", ".hidden", ""])
def test_task_ids_that_are_not_names_refused(store, busybox, task_id):
    with pytest.raises(ImageError, match="invalid task ID"):
        store.mount_rootfs(task_id, "busybox")
    with pytest.raises(ImageError, match="invalid task ID"):
        store.release_rootfs(task_id)


def test_image_in_use_cannot_be_removed(store, busybox):
    short = busybox.id[7:19]
    store.mount_rootfs("task-using-busybox", "busybox")
    with pytest.raises(ImageInUse, match=(
        rf'^conflict: unable to remove repository reference "busybox" \(must force\) - '
        rf"container task-using-b is using its referenced image {short}$"
    )):
        store.remove("busybox")
    with pytest.raises(ImageInUse, match=(
        rf"^conflict: unable to delete {short} \(cannot be forced\) - image is being used by running container task-using-b$"
    )):
        store.remove(busybox.id, force=True)
    # Forced by name, Docker untags and keeps the image for the container.
    assert store.remove("busybox", force=True) == [{"Untagged": "busybox:latest"}]
    assert store.resolve(busybox.id).repo_tags == ()
    assert layer_dir(store, BASE_LAYER).is_dir()
    store.release_rootfs("task-using-busybox")
    assert store.remove(busybox.id) == [{"Deleted": busybox.id}]
    assert_store_empty(store)


def test_in_use_survives_a_restart_and_mount_resumes(store, busybox):
    merged = store.mount_rootfs("task1", "busybox")
    (merged / "kept").write_text("x")
    overlay.unmount(merged)  # as after a reboot
    restarted = ImageStore(store.root)
    assert restarted.in_use() == {busybox.id: {"task1"}}
    with pytest.raises(ImageInUse):
        restarted.remove(busybox.id, force=True)
    assert restarted.mount_rootfs("task1", "busybox") == merged
    assert (merged / "kept").read_text() == "x"  # the task's upper directory was kept
    restarted.release_rootfs("task1")
    assert mounts_under(store.root) == []


@pytest.mark.parametrize("left", [b"", b"{", b"[]", b'{"image": 1, "layers": []}'])
def test_a_task_record_a_machine_crash_mangled_is_a_task_holding_no_image(store, busybox, left):
    # The record is written without fsync at every task start; after a crash its container is gone anyway.
    merged = store.mount_rootfs("task1", "busybox")
    (merged / "kept").write_text("x")
    overlay.unmount(merged)  # as after a reboot
    (store.root / "containers" / "task1" / "image.json").write_bytes(left)
    restarted = ImageStore(store.root)
    assert restarted.in_use() == {}
    assert restarted.mount_rootfs("task1", "busybox") == merged  # the task can still be mounted and released
    assert (merged / "kept").read_text() == "x"
    assert restarted.in_use() == {busybox.id: {"task1"}}
    restarted.release_rootfs("task1")
    assert mounts_under(store.root) == [] and not (store.root / "containers" / "task1").exists()
    assert restarted.remove(busybox.id, force=True)


def test_many_layers_mount_through_short_links(store, tmp_path):
    tars = [tar_bytes([entry(f"layer{i}", data=str(i).encode())]) for i in range(100)]
    built = build(tars)
    store.add_from_oci_layout(write_layout(tmp_path / "layout", [built.descriptor()], built.all_blobs()), ["deep:1"])
    # Absolute layer paths would need ~100 * 120 bytes of lowerdir, far over the kernel's one page.
    assert len(str(layer_dir(store, tars[0]))) * len(tars) > 4096
    merged = store.mount_rootfs("deep", "deep:1")
    assert (merged / "layer0").read_text() == "0" and (merged / "layer99").read_text() == "99"
    store.release_rootfs("deep")


def mount_options(target: Path) -> str:
    """The mount's superblock options; mountinfo writes space, tab, newline and backslash as octal escapes."""

    def unescape(field: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)

    with open("/proc/self/mountinfo") as f:
        return next(unescape(line.split(" - ")[1].split()[2]) for line in f if unescape(line.split()[4]) == str(target))


def test_a_shallow_image_mounts_in_one_call_with_absolute_layer_paths(store, busybox, monkeypatch):
    # No mount(8) child: its ~7 ms were spent with the store's lock held, and tasks started at once queued on it.
    monkeypatch.setattr(overlay.subprocess, "run", lambda *a, **k: pytest.fail("mount(8) was run"))
    merged = store.mount_rootfs("task1", "busybox")
    lowerdirs = dict(option.split("=", 1) for option in mount_options(merged).split(",") if "=" in option)["lowerdir"]
    assert lowerdirs.split(":") == [
        str(store.root / "l" / overlay.link_name(sha(tar)[7:])) for tar in (TOP_LAYER, BASE_LAYER)
    ]
    assert (merged / "bin").is_dir()
    store.release_rootfs("task1")


@pytest.mark.parametrize("odd", ["a,upperdir=x", "a:b", "a\\b"])
def test_a_store_whose_path_has_an_overlay_separator_still_mounts_relative_to_it(tmp_path, odd):
    image_store = ImageStore(tmp_path / odd / "store")
    built = build([BASE_LAYER, TOP_LAYER])
    archive.load(image_store, docker_archive([(built, ["busybox:latest"])]))
    merged = image_store.mount_rootfs("task1", "busybox")
    try:
        assert mount_options(merged).split(",")[1].startswith("lowerdir=l/")  # by mount(8), in the store root
        assert (merged / "bin").is_dir()
    finally:
        image_store.release_rootfs("task1")
    assert not mounts_under(tmp_path)


def test_mount_without_root_explains(store, busybox, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RootfsUnavailable, match="needs root"):
        store.mount_rootfs("task1", "busybox")
    assert store.in_use() == {}


# -- tar members that try to escape their layer ------------------------------------------------------------


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory outside the store that the attacks aim at; it must look the same afterwards."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_text("host data")
    (directory / "victim").write_text("do not delete")
    return directory


def outside_untouched(directory: Path) -> bool:
    return (files_in(directory) == ["secret", "victim"]
            and (directory / "secret").read_text() == "host data"
            and (directory / "secret").stat().st_nlink == 1
            and "trusted.overlay.opaque" not in os.listxattr(directory))


def add_layer(store: ImageStore, tmp_path: Path, layer: bytes):
    built = build([layer])
    return store.add_from_oci_layout(write_layout(tmp_path / "attack", [built.descriptor()], built.all_blobs()), ["attack:1"])


def test_member_climbing_out_refuses_the_layer(store, tmp_path, outside):
    layer = tar_bytes([entry("../../outside/secret", data=b"pwned"), entry("ok", data=b"")])
    with pytest.raises(InvalidImage, match=r"outside the layer \(refused\)"):
        add_layer(store, tmp_path, layer)
    assert outside_untouched(outside)
    assert_store_empty(store)


def test_absolute_member_lands_inside_the_layer(store, tmp_path, outside):
    layer = tar_bytes([entry(f"{outside}/secret", data=b"pwned")])
    add_layer(store, tmp_path, layer)
    assert outside_untouched(outside)
    assert (layer_dir(store, layer) / str(outside).lstrip("/") / "secret").read_bytes() == b"pwned"


@pytest.mark.parametrize("climbing", [False, True], ids=["absolute", "climbing-relative"])
def test_write_through_a_symlink_stays_inside_the_layer(store, tmp_path, outside, climbing):
    """As under Docker's chroot: the symlink is followed with the layer as "/" (and ".." stops there), so
    the write lands in <layer>/<outside path>/secret."""
    target = "../" * 12 + str(outside).lstrip("/") if climbing else str(outside)
    layer = tar_bytes([entry("evil", "symlink", target=target), entry("evil/secret", data=b"pwned")])
    add_layer(store, tmp_path, layer)
    assert outside_untouched(outside)
    assert (layer_dir(store, layer) / str(outside).lstrip("/") / "secret").read_bytes() == b"pwned"
    assert os.readlink(layer_dir(store, layer) / "evil") == target  # the symlink itself is kept


def test_file_replacing_a_symlink_does_not_write_through_it(store, tmp_path, outside):
    layer = tar_bytes([entry("f", "symlink", target=f"{outside}/secret"), entry("f", data=b"pwned")])
    add_layer(store, tmp_path, layer)
    assert outside_untouched(outside)
    assert (layer_dir(store, layer) / "f").read_bytes() == b"pwned"


@pytest.mark.parametrize("linkname", ["../../outside/secret", "s/secret"])
def test_hard_link_to_outside_refuses_the_layer(store, tmp_path, outside, linkname):
    layer = tar_bytes([entry("s", "symlink", target=str(outside)), entry("h", "hardlink", target=linkname)])
    with pytest.raises(InvalidImage, match="outside the layer|not a file earlier in the layer"):
        add_layer(store, tmp_path, layer)
    assert outside_untouched(outside)
    assert_store_empty(store)


def test_whiteouts_through_a_symlink_stay_inside_the_layer(store, tmp_path, outside):
    layer = tar_bytes([
        entry("d", "symlink", target=str(outside)),
        entry("d/.wh.victim"),
        entry("d/.wh..wh..opq"),
    ])
    add_layer(store, tmp_path, layer)
    assert outside_untouched(outside)
    inside = layer_dir(store, layer) / str(outside).lstrip("/")
    assert stat.S_ISCHR((inside / "victim").lstat().st_mode)
    assert os.getxattr(inside, "trusted.overlay.opaque") == b"y"


def test_overlay_xattrs_from_the_tar_are_dropped(store, tmp_path):
    layer = tar_bytes([entry("dir/", "dir", xattrs={"trusted.overlay.redirect": "/etc", "user.kept": "yes"})])
    add_layer(store, tmp_path, layer)
    attributes = os.listxattr(layer_dir(store, layer) / "dir")
    assert "user.kept" in attributes and "trusted.overlay.redirect" not in attributes


def test_archive_member_escaping_the_load_directory_refused(store, tmp_path, outside):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../../../outside/secret")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"pwned"))
    buffer.seek(0)
    with pytest.raises(InvalidImage, match="cannot read the tarball"):
        archive.load(store, buffer)
    assert outside_untouched(outside)
    assert files_in(store.work_dir()) == []
