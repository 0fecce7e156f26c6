"""The node image store: Docker-compatible images on one node's disk, and the root filesystems of its tasks.

On-disk layout under the store root (one filesystem: everything is written in tmp/ and renamed into place):

    blobs/sha256/<hex>                  content-addressed blobs (manifests, configs, layer blobs). blobs/ is an
                                        OCI "shared blob directory": skopeo's --src-/--dest-shared-blob-dir
    layers/sha256/<diff_id hex>/diff/   each layer unpacked once, keyed by its diff_id (the digest of its
                                        uncompressed tar) and shared by every image that has it
    layers/sha256/<diff_id hex>/layer.json   {"diff_id", "size"}: Docker's Size of the layer
    l/<26 chars>                        short symlinks to layers, for overlay's one-page mount options
    repositories.json                   the index: images and references (tags, repo digests) -> image ID
    containers/<task_id>/upper, work, merged, image.json
                                        a task's overlay rootfs and the image (and layers) it uses
    tmp/                                scratch: layers being unpacked, tarballs being loaded, and the
                                        registry client's OCI layouts (`work_dir`)

An image's ID is the digest of its config, as in Docker. Every image has a manifest in blobs/: the one it
was pulled with, or one the store writes (deterministically) for images loaded from a docker-archive or
imported, so `write_oci_layout` can always hand an image to skopeo for a push.

How content is trusted: every blob an image uses is hashed against its digest, and every layer's
uncompressed stream against the config's diff_id, before the image is recorded (a blob already part of a
recorded image was checked when that image was added). Adding an image is all or nothing: the blobs and
layers it touched that no image references afterwards are deleted, whether it failed or was a duplicate.
A layer is unpacked into tmp/ and renamed into layers/ once complete, so a crash never leaves half a layer.
Removing an image deletes the blobs and layers nothing else references; blobs and layers that an add in
progress or a task's mounted rootfs uses are never deleted.

Thread safety: methods do disk I/O synchronously and are meant to be called with asyncio.to_thread; one
lock guards the index and task records, a lock per diff_id makes concurrent adds unpack a shared layer
once, and the (slow) hashing and unpacking run outside the index lock. One ImageStore per root at a time.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import datetime
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from . import digest as digests
from . import manifest as manifests
from . import overlay
from .errors import (
    DigestMismatch,
    ImageConflict,
    ImageError,
    ImageInUse,
    ImageNotFound,
    InvalidImage,
    RootfsUnavailable,
)
from ..objects.reference import Reference, parse
from .unpack import COPY_CHUNK, decompressed, unpack_layer

log = logging.getLogger(__name__)

__all__ = [
    "DigestMismatch",
    "Image",
    "ImageConflict",
    "ImageError",
    "ImageInUse",
    "ImageNotFound",
    "ImageStore",
    "InvalidImage",
    "Layer",
    "RootfsUnavailable",
]

INDEX_FILE = "repositories.json"
INDEX_VERSION = 1

SHORT_ID_LENGTH = 12
"""Docker's stringid.TruncateID: IDs in messages are the first 12 hex digits."""

GZIP_LEVEL = 6
"""Compression of `docker import`ed layers: Go's gzip.DefaultCompression, what Docker uses."""

IMPORT_CHANGES = ("Cmd", "Entrypoint", "Env", "ExposedPorts", "Labels", "User", "Volumes", "WorkingDir")
"""The image config keys `docker import --change` can set (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER,
VOLUME, WORKDIR)."""

_TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""Task IDs become directory names and mount options: no "/", ",", ":" or leading dot."""

_HEX_RE = re.compile(r"^[a-f0-9]+$")

_libc = ctypes.CDLL(None, use_errno=True)


class Layer(NamedTuple):
    """One layer of an image: its blob (as the manifest lists it) and its diff_id."""

    digest: str
    """Digest of the layer blob as stored and pushed (compressed or not)."""
    diff_id: str
    """Digest of the uncompressed tar: names the unpacked layer."""
    media_type: str
    size: int
    """Bytes of the blob (the manifest descriptor's size)."""


@dataclass(frozen=True)
class Image:
    """An image in the store, shaped like Docker's image inspect."""

    id: str
    """"sha256:<hex>": the digest of the config."""
    repo_tags: tuple[str, ...]
    """Familiar references, as docker shows them: "busybox:latest", "localhost:5000/app:1"."""
    repo_digests: tuple[str, ...]
    """Familiar name@digest of the manifest a registry serves the image as: "localhost:5000/app@sha256:..."."""
    config: Mapping[str, Any] = field(compare=False, repr=False)
    """The image config JSON: `config` (Env, Entrypoint, Cmd, User, WorkingDir, ExposedPorts, Volumes,
    Labels), `rootfs.diff_ids`, `architecture`, `os`, `created`, `history`."""
    manifest_digest: str
    layers: tuple[Layer, ...]
    size: int
    """Docker's Size: bytes of file content in the unpacked layers (not the compressed download size)."""
    created: str | None

    @property
    def short_id(self) -> str:
        """The 12 hex digits docker shows as IMAGE ID."""
        return _short(self.id)


@dataclass
class _Ingest:
    """An image being added: the blobs and layers it pinned (safe from garbage collection meanwhile)."""

    blobs: set[str] = field(default_factory=set)
    layers: set[str] = field(default_factory=set)


class ImageStore:
    """The image store of one node, rooted at `root` (created if missing). See the module docstring for the
    layout on disk and what is verified when."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs" / digests.ALGORITHM
        self._layers = self.root / "layers" / digests.ALGORITHM
        self._containers = self.root / "containers"
        self._tmp = self.root / "tmp"
        # 0700 throughout: unpacked layers hold setuid binaries and task upper dirs hold task data.
        links = self.root / overlay.LINK_DIR
        for directory in (self.root, self._blobs, self._layers, links, self._containers, self._tmp):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._layer_locks: dict[str, threading.Lock] = {}
        self._pinned_blobs: Counter[str] = Counter()
        self._pinned_layers: Counter[str] = Counter()
        self._configs: dict[str, dict[str, Any]] = {}
        self._images, self._references = self._read_index()
        self._tasks = self._read_tasks()

    # -- blobs -------------------------------------------------------------------------------------------

    @property
    def shared_blob_dir(self) -> Path:
        """The OCI shared blob directory (it holds sha256/<hex>): skopeo's --src-/--dest-shared-blob-dir."""
        return self.root / "blobs"

    def work_dir(self) -> Path:
        """Scratch space on the store's filesystem (for OCI layouts skopeo writes or reads). Make your own
        entry in it (tempfile.mkdtemp(dir=...)) and remove it when done. A file under it given to `add_blob`
        or found in a layout given to `add_from_oci_layout` is moved into the store, not copied."""
        return self._tmp

    def blob_path(self, digest: str) -> Path:
        """Where the blob `digest` is (or would be) stored."""
        return self._blobs / digests.hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def add_blob(self, source: BinaryIO | Path, expected_digest: str | None = None) -> str:
        """Store the content of `source` (a stream, or a file), hashing it on the way; returns its digest.
        With `expected_digest`, content that hashes otherwise is refused with `DigestMismatch` and nothing
        is kept."""
        if expected_digest is not None:
            digests.check(expected_digest, "expected digest")
        if isinstance(source, Path) and self._is_own_scratch(source):
            with open(source, "rb") as f:
                digest = digests.of_file(f, COPY_CHUNK)
                os.fsync(f.fileno())
            _check_expected(digest, expected_digest, f"blob {source}")
            os.rename(source, self.blob_path(digest))
        else:
            with contextlib.ExitStack() as stack:
                stream = stack.enter_context(open(source, "rb")) if isinstance(source, Path) else source
                fd, temp_name = tempfile.mkstemp(prefix="blob-", dir=self._tmp)
                temp = Path(temp_name)
                try:
                    with os.fdopen(fd, "wb") as out:
                        hasher = digests.HashingReader(stream)
                        shutil.copyfileobj(hasher, out, COPY_CHUNK)
                        out.flush()
                        os.fsync(out.fileno())
                    digest = hasher.digest
                    _check_expected(digest, expected_digest, "blob")
                    os.rename(temp, self.blob_path(digest))
                except BaseException:
                    temp.unlink(missing_ok=True)
                    raise
        _fsync_dir(self._blobs)
        return digest

    def _is_own_scratch(self, path: Path) -> bool:
        """A regular file under tmp/ with no other name: moving it cannot alias content outside the store."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and path.resolve().is_relative_to(self._tmp.resolve())

    # -- adding images -----------------------------------------------------------------------------------

    def add_from_oci_layout(self, layout: Path, references: list[str]) -> Image:
        """Add the image of the OCI image layout `layout` (oci-layout, index.json, blobs/) and record
        `references`: a reference with a tag tags the image, one with a digest is recorded as a repo digest
        (what the registry served it as). Blobs may be in the layout's blobs/ or already in
        `shared_blob_dir`. An index (OCI image index, Docker manifest list) resolves to linux/amd64; an
        index.json with several entries is itself treated as such an index. Every blob used is verified."""
        layout = Path(layout)
        refs = [parse(reference) for reference in references]
        what = f"OCI layout {layout}"
        if not (layout / "oci-layout").is_file():
            raise InvalidImage(f"{what} has no oci-layout file: not an OCI image layout")
        try:
            raw = (layout / "index.json").read_bytes()
        except FileNotFoundError:
            raise InvalidImage(f"{what} has no index.json") from None
        entries = manifests.parse_index(manifests.load_json(raw, f"{what}/index.json"), f"{what}/index.json")
        if not entries:
            raise InvalidImage(f"{what}/index.json lists no image")
        if len(entries) == 1:
            top = entries[0]
        elif any(entry.platform for entry in entries):
            top = manifests.select_platform(entries, f"{what}/index.json")
        else:
            raise InvalidImage(
                f"{what}/index.json lists {len(entries)} images and no platforms: add them one at a time"
            )
        return self._add_image(top, layout, refs, what)

    def import_tarball(self, tar: BinaryIO, reference: str | None, changes: Mapping[str, Any] | None = None) -> Image:
        """`docker import`: the tarball (plain, gzip or zstd) is a root filesystem, stored as one gzip'd
        layer of a new linux/amd64 image whose config holds `changes` (keys of `IMPORT_CHANGES`)."""
        ref = parse(reference) if reference is not None else None
        if ref is not None and ref.digest:
            raise ImageError("cannot import digest reference")
        unknown = sorted(set(changes or {}) - set(IMPORT_CHANGES))
        if unknown:
            raise ImageError(
                f"cannot apply {', '.join(unknown)} on import; the changes that apply are {', '.join(IMPORT_CHANGES)}"
            )
        fd, temp_name = tempfile.mkstemp(prefix="import-", dir=self._tmp)
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                compressed = _HashingWriter(out)
                with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as gz:
                    uncompressed = digests.HashingReader(decompressed(tar, "the imported tarball"))
                    shutil.copyfileobj(uncompressed, gz, COPY_CHUNK)
            layer_digest = self.add_blob(temp, compressed.digest)
        finally:
            temp.unlink(missing_ok=True)
        now = _now()
        config = {
            "architecture": manifests.PLATFORM_ARCHITECTURE,
            "os": manifests.PLATFORM_OS,
            "created": now,
            "config": dict(changes or {}),
            "rootfs": {"type": "layers", "diff_ids": [uncompressed.digest]},
            "history": [{"created": now, "comment": "Imported from -"}],
        }
        layer = manifests.Descriptor(manifests.OCI_LAYER_GZIP, layer_digest, compressed.size, {})
        top = self._store_manifest(config, [layer])
        return self._add_image(top, None, [ref] if ref else [], "the imported tarball")

    def _store_manifest(self, config: Mapping[str, Any], layers: list[manifests.Descriptor]) -> manifests.Descriptor:
        """Store a config and an OCI manifest for it; returns the manifest's descriptor."""
        config_raw = manifests.canonical_json(config)
        config_digest = self.add_blob(io.BytesIO(config_raw))
        config_desc = manifests.Descriptor(manifests.OCI_CONFIG, config_digest, len(config_raw), {})
        manifest_raw = manifests.build_manifest(config_desc, layers)
        manifest_digest = self.add_blob(io.BytesIO(manifest_raw))
        return manifests.Descriptor(manifests.OCI_MANIFEST, manifest_digest, len(manifest_raw), {})

    def _add_image(self, top: manifests.Descriptor, layout: Path | None, refs: list[Reference], what: str) -> Image:
        ingest = _Ingest()
        try:
            with self._lock:
                trusted = self._referenced_blobs()
            desc = top
            for _ in range(manifests.MAX_INDEX_DEPTH):
                raw = self._read_document(ingest, layout, desc, what)
                document = manifests.load_json(raw, f"{what}: {desc.digest}")
                if manifests.kind(desc.media_type, document) == "manifest":
                    break
                desc = manifests.select_platform(manifests.parse_index(document, f"{what}: index {desc.digest}"), what)
            else:
                raise InvalidImage(f"{what}: image indexes nest more than {manifests.MAX_INDEX_DEPTH} deep")
            manifest = manifests.parse_manifest(document, desc.media_type, f"{what}: manifest {desc.digest}")
            for layer in manifest.layers:  # pinned now, so a failure below also cleans up the ones not reached
                self._pin(ingest, blob=layer.digest)
            self._keep(desc.digest, raw)
            config_raw = self._read_document(ingest, layout, manifest.config, what)
            self._keep(manifest.config.digest, config_raw)
            config = manifests.load_json(config_raw, f"{what}: config {manifest.config.digest}")
            diff_ids = manifests.check_config(config, len(manifest.layers), f"{what}: config {manifest.config.digest}")
            layers = []
            size = 0
            for i, (layer, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
                layer_what = f"{what}: layer {i} ({layer.digest})"
                size += self._ensure_layer(ingest, layout, layer, diff_id, trusted, layer_what)
                layers.append(Layer(layer.digest, diff_id, layer.media_type, layer.size))
            image_id = manifest.config.digest
            with self._lock:
                record = self._images.get(image_id)
                if record is None:
                    record = {
                        "manifest": desc.digest,
                        "manifest_media_type": manifest.media_type,
                        "layers": [list(layer) for layer in layers],
                        "size": size,
                        "repo_digests": [],
                    }
                    self._images[image_id] = record
                    self._configs[image_id] = config
                for ref in refs:
                    if ref.digest:
                        repo_digest = str(Reference(ref.domain, ref.path, None, ref.digest))
                        if repo_digest not in record["repo_digests"]:
                            record["repo_digests"].append(repo_digest)
                    if ref.tag:
                        self._references[str(Reference(ref.domain, ref.path, ref.tag, None))] = image_id
                self._write_index()
                return self._image(image_id)
        finally:
            with self._lock:
                self._finish(ingest)

    def _read_document(self, ingest: _Ingest, layout: Path | None, desc: manifests.Descriptor, what: str) -> bytes:
        """A manifest, index or config blob from the store or the layout, verified."""
        if desc.size > manifests.MAX_DOCUMENT_BYTES:
            raise InvalidImage(f"{what}: {desc.digest} is {desc.size} bytes, more than a manifest or config may be")
        self._pin(ingest, blob=desc.digest)
        path = self._locate(layout, desc.digest, what)
        with open(path, "rb") as f:
            raw = f.read(manifests.MAX_DOCUMENT_BYTES + 1)
        _check_expected(digests.of_bytes(raw), desc.digest, f"{what}: {path}")
        _check_size(len(raw), desc, what)
        return raw

    def _keep(self, digest: str, raw: bytes) -> None:
        if not self.has_blob(digest):
            self.add_blob(io.BytesIO(raw), digest)

    def _ensure_layer(
        self,
        ingest: _Ingest,
        layout: Path | None,
        desc: manifests.Descriptor,
        diff_id: str,
        trusted: set[str],
        what: str,
    ) -> int:
        """Make sure the layer blob is stored and verified and the layer unpacked; returns its size."""
        self._pin(ingest, blob=desc.digest, layer=diff_id)
        path = self._locate(layout, desc.digest, what)
        verified = desc.digest in trusted
        if path != self.blob_path(desc.digest):
            self.add_blob(path, desc.digest)
            verified = True
        _check_size(self.blob_path(desc.digest).stat().st_size, desc, what)
        with self._layer_lock(diff_id):
            layer_dir = self._layer_dir(diff_id)
            if layer_dir.exists():
                if not verified:
                    with open(self.blob_path(desc.digest), "rb") as f:
                        _check_expected(digests.of_file(f, COPY_CHUNK), desc.digest, what)
                return self._layer_size(diff_id)
            return self._unpack(desc.digest, diff_id, layer_dir, what)

    def _unpack(self, digest: str, diff_id: str, layer_dir: Path, what: str) -> int:
        temp = Path(tempfile.mkdtemp(prefix=f"layer-{digests.hex_of(diff_id)[:SHORT_ID_LENGTH]}-", dir=self._tmp))
        try:
            diff = temp / "diff"
            diff.mkdir()
            os.chmod(diff, 0o755)  # the image's "/" unless its tar says otherwise
            with open(self.blob_path(digest), "rb") as blob:
                size = unpack_layer(blob, diff, digest=digest, diff_id=diff_id, what=what)
            (temp / "layer.json").write_bytes(manifests.canonical_json({"diff_id": diff_id, "size": size}))
            _syncfs(temp)  # the layer's files are on disk before its name says it is complete
            os.rename(temp, layer_dir)
            return size
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise

    def _locate(self, layout: Path | None, digest: str, what: str) -> Path:
        """The blob in the store, else in the layout's blobs/; `InvalidImage` if in neither."""
        stored = self.blob_path(digest)
        if stored.is_file():
            return stored
        if layout is not None:
            candidate = layout / "blobs" / digests.ALGORITHM / digests.hex_of(digest)
            # Regular files only: a symlink or a fifo in a layout is not content to read.
            if stat.S_ISREG(_lstat_mode(candidate)):
                return candidate
        raise InvalidImage(
            f"{what}: blob {digest} is neither in the layout nor in the store; pull or load the image again"
        )

    # -- queries -----------------------------------------------------------------------------------------

    def images(self) -> list[Image]:
        """Every image, newest first (as `docker images` lists them)."""
        with self._lock:
            found = [self._image(image_id) for image_id in self._images]
        return sorted(found, key=lambda image: (image.created or "", image.id), reverse=True)

    def resolve(self, name_or_id: str) -> Image:
        """The image `name_or_id` names, as dockerd resolves it: a reference (familiar or full, tag or
        name@digest), a full ID ("sha256:<hex>" or the 64 hex digits) or a unique prefix of the ID's hex
        digits. Raises `ImageNotFound` ("No such image: busybox:latest") or `InvalidReference`."""
        with self._lock:
            return self._image(self._resolve_id(name_or_id))

    def tag(self, source: str, target: str) -> None:
        """`docker tag`: `target` (a reference with a tag, default "latest") now names the image `source`
        names; the tag moves if it named another image (which keeps its other references)."""
        with self._lock:
            image_id = self._resolve_id(source)
            ref = parse(target)
            if ref.digest:
                raise ImageError("refusing to create a tag with a digest reference")
            self._references[str(ref)] = image_id
            self._write_index()

    def in_use(self) -> dict[str, set[str]]:
        """Image ID -> the tasks whose root filesystem it is (mounted by `mount_rootfs`, not yet released)."""
        with self._lock:
            users: dict[str, set[str]] = {}
            for task_id, record in self._tasks.items():
                if record["image"] is not None:
                    users.setdefault(record["image"], set()).add(task_id)
            return users

    # -- removing ----------------------------------------------------------------------------------------

    def remove(self, name_or_id: str, force: bool = False, prune: bool = True) -> list[dict[str, str]]:
        """`docker rmi`, with dockerd's rules and its DELETE /images answer ([{"Untagged": ...},
        {"Deleted": "sha256:..."}]):

        - by reference: untag it (and the repository's digest references when no tag of that repository is
          left); the image is deleted when that was its last reference. If a task uses the image and this
          is its only reference, refused unless forced (forced: untagged, the image stays for the task);
        - by ID: with one reference (or tag plus digests of one repository), untag and delete; with tags in
          several repositories, refused unless forced (`ImageConflict`);
        - an image a task uses is never deleted, forced or not (`ImageInUse`).

        Blobs and unpacked layers no other image uses are deleted with the image. `prune` is Docker's
        (noprune keeps untagged parent images); images here are flat (pulled, loaded or imported, never
        built on a parent image), so there is never a parent for it to keep."""
        del prune  # accepted for the API's shape: a flat store has no parent images
        with self._lock:
            image_id = self._resolve_id(name_or_id)
            records: list[dict[str, str]] = []
            saved = False
            try:
                quiet = False
                if not _is_id_prefix(image_id, name_or_id):
                    refs = self._refs_of(image_id)
                    tasks = self._tasks_using(image_id)
                    if not force and _is_single_reference(refs) and tasks:
                        raise ImageInUse(
                            f'conflict: unable to remove repository reference "{name_or_id}" (must force) - '
                            f"container {_short(tasks[0])} is using its referenced image {_short(image_id)}"
                        )
                    ref = parse(name_or_id)
                    if ref.digest:
                        ref = Reference(ref.domain, ref.path, None, ref.digest)
                    self._untag(image_id, ref, records)
                    if ref.tag and not any(r.tag and r.name == ref.name for r in self._refs_of(image_id)):
                        for other in self._refs_of(image_id):
                            if other.digest and other.name == ref.name:
                                self._untag(image_id, other, records)
                    if self._refs_of(image_id):
                        return records
                    quiet = True
                elif _is_single_reference(self._refs_of(image_id)):
                    conflict = self._conflict(image_id, soft=False)
                    if conflict is not None:
                        raise conflict
                    for ref in self._refs_of(image_id):
                        self._untag(image_id, ref, records)
                conflict = self._conflict(image_id, soft=not force)
                if conflict is not None:
                    if quiet:
                        # Untagged above; the image stays (dangling) for the task that uses it, as dockerd does.
                        return records
                    raise conflict
                for ref in self._refs_of(image_id):
                    self._untag(image_id, ref, records)
                record = self._images.pop(image_id)
                self._configs.pop(image_id, None)
                records.append({"Deleted": image_id})
                # The index forgets the image before its blobs go: a crash never leaves it naming missing ones.
                self._write_index()
                saved = True
                self._collect(
                    blobs={record["manifest"], image_id, *(layer[0] for layer in record["layers"])},
                    layers={layer[1] for layer in record["layers"]},
                )
                return records
            finally:
                if records and not saved:
                    self._write_index()

    def _untag(self, image_id: str, ref: Reference, records: list[dict[str, str]]) -> None:
        if ref.digest:
            self._images[image_id]["repo_digests"].remove(str(ref))
        else:
            del self._references[str(ref)]
        records.append({"Untagged": ref.familiar})

    def _conflict(self, image_id: str, *, soft: bool) -> ImageConflict | None:
        """dockerd's checkImageDeleteConflict: a task using the image is a hard conflict (no force helps);
        references left are a soft one (force overrides)."""
        tasks = self._tasks_using(image_id)
        if tasks:
            return ImageInUse(
                f"conflict: unable to delete {_short(image_id)} (cannot be forced) - "
                f"image is being used by running container {_short(tasks[0])}"
            )
        if soft and self._refs_of(image_id):
            return ImageConflict(
                f"conflict: unable to delete {_short(image_id)} (must be forced) - "
                f"image is referenced in multiple repositories"
            )
        return None

    # -- task root filesystems ---------------------------------------------------------------------------

    def mount_rootfs(self, task_id: str, image: Image | str) -> Path:
        """Mount the root filesystem of task `task_id`: an overlay of the image's layers with the task's
        own upper directory, at containers/<task_id>/merged (returned). Idempotent for the same task and
        image; after a reboot it mounts again over the task's existing upper directory. The image counts as
        in use by the task (persisted) until `release_rootfs`. Raises `RootfsUnavailable` without root."""
        _check_task_id(task_id)
        overlay.check_available()
        with self._lock:
            image_id = image.id if isinstance(image, Image) else self._resolve_id(image)
            record = self._images.get(image_id)
            if record is None:
                raise ImageNotFound(f"No such image: {image_id}")
            task_dir = self._containers / task_id
            merged = task_dir / "merged"
            existing = self._tasks.get(task_id)
            if existing is not None and existing["image"] not in (image_id, None):
                raise ImageError(
                    f"task {task_id} already has a root filesystem of image {_short(existing['image'])}; "
                    f"release it first"
                )
            if existing is not None and os.path.ismount(merged):
                return merged
            diff_ids = [layer[1] for layer in record["layers"]]
            if not diff_ids:
                raise InvalidImage(f"image {_short(image_id)} has no layers: there is no filesystem to run")
            for name in ("upper", "work", "merged"):
                (task_dir / name).mkdir(mode=0o755, parents=True, exist_ok=True)
            task_record = {"image": image_id, "layers": diff_ids}
            # Not fsynced: written under the store's lock at every task start, and a machine crash that lost
            # it ends the task's container too (`_read_tasks` takes an unreadable record for no image).
            _write_json_atomic(task_dir / "image.json", task_record, durable=False)
            self._tasks[task_id] = task_record
            lowers = [
                overlay.ensure_link(self.root, digests.hex_of(diff_id), self._layer_dir(diff_id) / "diff")
                for diff_id in reversed(diff_ids)
            ]
            relative = task_dir.relative_to(self.root)
            try:
                overlay.mount(self.root, lowers, f"{relative}/upper", f"{relative}/work", merged)
            except BaseException:
                if existing is None:
                    self._remove_task_dir(task_id)
                raise
            return merged

    def release_rootfs(self, task_id: str) -> None:
        """Unmount the task's rootfs (lazily if a process still uses it) and delete its upper and work
        directories; the image is no longer in use by the task. Does nothing for an unknown task."""
        _check_task_id(task_id)
        with self._lock:
            task_dir = self._containers / task_id
            if task_id not in self._tasks and not task_dir.exists():
                return
            merged = task_dir / "merged"
            if os.path.ismount(merged):
                overlay.unmount(merged)
            if os.path.ismount(merged):
                raise ImageError(f"cannot release the rootfs of task {task_id}: {merged} is still mounted")
            self._remove_task_dir(task_id)

    def _remove_task_dir(self, task_id: str) -> None:
        # The record goes last: a crash halfway leaves the task still known, and releasing again finishes.
        task_dir = self._containers / task_id
        for name in ("upper", "work", "merged"):
            shutil.rmtree(task_dir / name, ignore_errors=True)
        (task_dir / "image.json").unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            task_dir.rmdir()
        self._tasks.pop(task_id, None)

    def _tasks_using(self, image_id: str) -> list[str]:
        return sorted(task_id for task_id, record in self._tasks.items() if record["image"] == image_id)

    # -- OCI layouts for skopeo --------------------------------------------------------------------------

    def write_oci_layout(self, image: Image, layout: Path, tag: str) -> None:
        """Write an OCI image layout at `layout` whose index.json names the image's manifest as `tag`,
        with the blobs left in `shared_blob_dir`: `skopeo copy --src-shared-blob-dir <shared_blob_dir>
        oci:<layout>:<tag> docker://...` pushes it."""
        with self._lock:
            record = self._images.get(image.id)
            if record is None:
                raise ImageNotFound(f"No such image: {image.id}")
            manifest_digest = record["manifest"]
            entry = manifests.Descriptor(
                record["manifest_media_type"],
                manifest_digest,
                self.blob_path(manifest_digest).stat().st_size,
                {manifests.REF_NAME_ANNOTATION: tag},
            )
        layout = Path(layout)
        (layout / "blobs" / digests.ALGORITHM).mkdir(parents=True, exist_ok=True)
        (layout / "oci-layout").write_bytes(manifests.layout_marker())
        _write_bytes_atomic(layout / "index.json", manifests.build_layout_index([entry]))

    # -- internals ---------------------------------------------------------------------------------------

    def _resolve_id(self, text: str) -> str:
        """dockerd's GetImage: ID or digest, then reference, then unique ID prefix. Lock held."""
        if re.fullmatch(r"[a-f0-9]{64}", text):
            text = f"{digests.ALGORITHM}:{text}"
        if re.fullmatch(r"sha256:[a-f0-9]{64}", text):
            if text in self._images:
                return text
            raise ImageNotFound(f"No such image: {text}")
        ref = parse(text)
        if ref.digest:
            wanted = str(Reference(ref.domain, ref.path, None, ref.digest))
            for image_id, record in self._images.items():
                if wanted in record["repo_digests"]:
                    return image_id
        else:
            image_id = self._references.get(str(ref))
            if image_id is not None:
                return image_id
        prefix = text.removeprefix(f"{digests.ALGORITHM}:")
        if _HEX_RE.match(prefix):
            matches = [image_id for image_id in self._images if digests.hex_of(image_id).startswith(prefix)]
            if len(matches) == 1:
                return matches[0]
        raise ImageNotFound(f"No such image: {ref.familiar}")

    def _refs_of(self, image_id: str) -> list[Reference]:
        """The image's tags and repo digests, as references."""
        tags = [parse(name) for name, target in self._references.items() if target == image_id]
        return tags + [parse(name) for name in self._images[image_id]["repo_digests"]]

    def _image(self, image_id: str) -> Image:
        record = self._images[image_id]
        config = self._configs.get(image_id)
        if config is None:
            config = json.loads(self.blob_path(image_id).read_bytes())
            self._configs[image_id] = config
        tags = sorted(parse(name).familiar for name, target in self._references.items() if target == image_id)
        return Image(
            id=image_id,
            repo_tags=tuple(tags),
            repo_digests=tuple(sorted(parse(name).familiar for name in record["repo_digests"])),
            config=copy.deepcopy(config),  # the cached config stays as stored whatever callers do with theirs
            manifest_digest=record["manifest"],
            layers=tuple(Layer(*layer) for layer in record["layers"]),
            size=record["size"],
            created=config.get("created"),
        )

    def _referenced_blobs(self) -> set[str]:
        blobs = set()
        for image_id, record in self._images.items():
            blobs.update((image_id, record["manifest"], *(layer[0] for layer in record["layers"])))
        return blobs

    def _referenced_layers(self) -> set[str]:
        layers = {layer[1] for record in self._images.values() for layer in record["layers"]}
        layers.update(diff_id for record in self._tasks.values() for diff_id in record["layers"])
        return layers

    def _pin(self, ingest: _Ingest, *, blob: str, layer: str | None = None) -> None:
        with self._lock:
            if blob not in ingest.blobs:
                ingest.blobs.add(blob)
                self._pinned_blobs[blob] += 1
            if layer is not None and layer not in ingest.layers:
                ingest.layers.add(layer)
                self._pinned_layers[layer] += 1

    def _finish(self, ingest: _Ingest) -> None:
        """Unpin an ingest's blobs and layers and delete those no image references. Lock held."""
        self._pinned_blobs.subtract(ingest.blobs)
        self._pinned_layers.subtract(ingest.layers)
        self._pinned_blobs += Counter()  # drop the zero counts
        self._pinned_layers += Counter()
        self._collect(ingest.blobs, ingest.layers)

    def _collect(self, blobs: set[str], layers: set[str]) -> None:
        """Delete those of `blobs` and `layers` that no image, task or add in progress uses. Lock held."""
        referenced = self._referenced_blobs()
        for blob in blobs - referenced - set(self._pinned_blobs):
            self.blob_path(blob).unlink(missing_ok=True)
        used = self._referenced_layers()
        for diff_id in layers - used - set(self._pinned_layers):
            layer_dir = self._layer_dir(diff_id)
            if not layer_dir.exists():
                continue
            overlay.remove_link(self.root, digests.hex_of(diff_id))
            # Renamed away first, so layers/ never shows a half-deleted layer.
            doomed = Path(tempfile.mkdtemp(prefix="gc-", dir=self._tmp))
            os.rename(layer_dir, doomed / "layer")
            shutil.rmtree(doomed)

    def _layer_dir(self, diff_id: str) -> Path:
        return self._layers / digests.hex_of(diff_id)

    def _layer_size(self, diff_id: str) -> int:
        return json.loads((self._layer_dir(diff_id) / "layer.json").read_bytes())["size"]

    def _layer_lock(self, diff_id: str) -> threading.Lock:
        with self._lock:
            return self._layer_locks.setdefault(diff_id, threading.Lock())

    def _read_index(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        path = self.root / INDEX_FILE
        try:
            index = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}, {}
        except ValueError as e:
            raise ImageError(
                f"the image index {path} is unreadable ({e}); move it away to start with an empty store"
            ) from None
        if index.get("version") != INDEX_VERSION:
            raise ImageError(
                f"the image index {path} has version {index.get('version')!r}; "
                f"this raftswarm reads version {INDEX_VERSION}"
            )
        return index["images"], index["references"]

    def _write_index(self) -> None:
        index = {"version": INDEX_VERSION, "images": self._images, "references": self._references}
        _write_json_atomic(self.root / INDEX_FILE, index)

    def _read_tasks(self) -> dict[str, dict[str, Any]]:
        tasks = {}
        for record in self._containers.glob("*/image.json"):
            try:
                task_record = json.loads(record.read_bytes())
                if not isinstance(task_record.get("image"), str) or not isinstance(task_record.get("layers"), list):
                    raise ValueError("not a task record")
            except (OSError, ValueError, AttributeError) as exc:
                # What a machine crash can leave of a record written without fsync: the task is still known,
                # so releasing it removes its directories, but it holds no image or layer in use.
                log.warning("task %s: unreadable root filesystem record %s: %s", record.parent.name, record, exc)
                task_record = {"image": None, "layers": []}
            tasks[record.parent.name] = task_record
        return tasks


class _HashingWriter:
    """A write-only stream that hashes and counts what passes through to `target`."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._target.write(data)

    def flush(self) -> None:
        self._target.flush()

    @property
    def digest(self) -> str:
        return f"{digests.ALGORITHM}:{self._hash.hexdigest()}"


def _check_task_id(task_id: str) -> None:
    if not _TASK_ID_RE.match(task_id):
        raise ImageError(f"invalid task ID {task_id!r}: letters, digits, '_', '.' and '-' only")


def _is_id_prefix(image_id: str, text: str) -> bool:
    """dockerd's isImageIDPrefix: `text` is (a prefix of) the ID, with or without "sha256:"."""
    return image_id.startswith(text) or image_id.startswith(f"{digests.ALGORITHM}:{text}")


def _is_single_reference(refs: list[Reference]) -> bool:
    """dockerd's isSingleReference: at most one tag, and every reference in one repository."""
    if len(refs) <= 1:
        return len(refs) == 1
    tags = [ref for ref in refs if not ref.digest]
    if len(tags) > 1:
        return False
    digest_names = {ref.name for ref in refs if ref.digest}
    single = tags[0] if tags else refs[0]
    return digest_names == {single.name}


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def _short(identifier: str) -> str:
    return identifier.removeprefix(f"{digests.ALGORITHM}:")[:SHORT_ID_LENGTH]


def _check_expected(actual: str, expected: str | None, what: str) -> None:
    if expected is not None and actual != expected:
        raise DigestMismatch(f"{what}: content has digest {actual}, expected {expected}")


def _check_size(actual: int, desc: manifests.Descriptor, what: str) -> None:
    if actual != desc.size:
        raise InvalidImage(f"{what}: blob {desc.digest} is {actual} bytes and its descriptor says {desc.size}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _write_json_atomic(path: Path, value: Any, durable: bool = True) -> None:
    _write_bytes_atomic(path, json.dumps(value, indent=1, sort_keys=True).encode(), durable)


def _write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to a temporary file beside `path` and rename it over `path`: a crash of the process leaves
    the old content or the new, never a mix. `durable`: fsync the file and its directory, so that a crash of
    the machine does too."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.rename(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> None:
    """syncfs(2) the filesystem of `path`: one call that flushes a whole unpacked layer."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise ImageError(f"cannot sync {path} to disk: {os.strerror(error)}")
    finally:
        os.close(fd)
