"""Image tarballs: `docker load` of docker-archive and OCI-layout tarballs, and `docker save` as docker-archive.

A docker-archive (what `docker save` writes) has manifest.json: a list of {Config, RepoTags, Layers} with
paths inside the tarball, either `<id>.json` and `<id>/layer.tar` (Docker before 25) or blobs/sha256/<hex>
(Docker 25+, which also writes index.json; manifest.json wins, as in dockerd). An OCI-layout tarball has
oci-layout, index.json and blobs/; its entries are named by the `io.containerd.image.name` annotation (a full
reference, what containerd and Docker's containerd store write) or else `org.opencontainers.image.ref.name`
when that is a full reference rather than a bare tag.

Loading streams the tarball into a directory under the store's `work_dir` (never the whole tar in memory),
with Python's "data" extraction filter: the archive's files are plain data, so links that leave the
directory, absolute names, devices and special modes are refused. A docker-archive image becomes an OCI
layout there (its config and layer files renamed into blobs/ under their digests, and an OCI manifest
written for them), and every image is then added with `ImageStore.add_from_oci_layout`, which verifies it.
The directory is removed afterwards, whatever happened.

Saving writes a docker-archive with the store's blobs as they are (layers keep their compression, which
`docker load` and skopeo's docker-archive: transport both accept), named blobs/sha256/<hex>.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from . import digest as digests
from . import manifest as manifests
from .errors import InvalidImage
from ..objects.reference import InvalidReference, Reference, parse
from .store import Image, ImageStore
from .unpack import MAGIC_LENGTH, compression_of

_LAYER_MEDIA_TYPES = {"": manifests.OCI_LAYER_TAR, "gzip": manifests.OCI_LAYER_GZIP, "zstd": manifests.OCI_LAYER_ZSTD}
"""The OCI media type of a docker-archive layer file, by the compression its magic number shows."""

_SAVE_MTIME = 0
"""Times of the members `save` writes: fixed, so saving the same images twice gives the same tarball."""


def load(store: ImageStore, tar: BinaryIO) -> list[str]:
    """`docker load`: add every image of the docker-archive or OCI-layout tarball `tar` (plain or
    compressed) to `store`, tagged as the tarball says. Returns dockerd's lines: "Loaded image:
    busybox:latest" for each tag, "Loaded image ID: sha256:..." for an image without one."""
    work = Path(tempfile.mkdtemp(prefix="load-", dir=store.work_dir()))
    try:
        try:
            with tarfile.open(fileobj=tar, mode="r|*") as archive:
                archive.extractall(work, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise InvalidImage(f"cannot read the tarball: {e}") from None
        if (work / "manifest.json").is_file():
            loaded = _load_docker_archive(store, work)
        elif (work / "index.json").is_file():
            loaded = _load_oci_layout(store, work)
        else:
            raise InvalidImage(
                "not a docker-archive or OCI-layout tarball: it has neither manifest.json nor index.json"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = []
    for image, refs in loaded:
        lines.extend(f"Loaded image: {ref.familiar}" for ref in refs)
        if not refs:
            lines.append(f"Loaded image ID: {image.id}")
    return lines


def save(store: ImageStore, images: Sequence[Image], out: BinaryIO) -> None:
    """`docker save`: write `images` as one docker-archive tarball to the stream `out` (manifest.json, each
    image's config and layer blobs under blobs/sha256/, each blob once), tagged with their repo tags."""
    entries = []
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for name in ("blobs", f"blobs/{digests.ALGORITHM}"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _SAVE_MTIME
            archive.addfile(info)
        for image in images:
            blobs = [image.id, *(layer.digest for layer in image.layers)]
            for blob in blobs:
                if blob in written:
                    continue
                written.add(blob)
                path = store.blob_path(blob)
                info = tarfile.TarInfo(_blob_name(blob))
                info.size, info.mode, info.mtime = path.stat().st_size, 0o644, _SAVE_MTIME
                with open(path, "rb") as f:
                    archive.addfile(info, f)
            entries.append({
                "Config": _blob_name(image.id),
                "RepoTags": list(image.repo_tags),
                "Layers": [_blob_name(layer.digest) for layer in image.layers],
            })
        raw = json.dumps(entries).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mode, info.mtime = len(raw), 0o644, _SAVE_MTIME
        archive.addfile(info, io.BytesIO(raw))


def _blob_name(digest: str) -> str:
    return f"blobs/{digests.ALGORITHM}/{digests.hex_of(digest)}"


def _docker_manifest(work: Path) -> list[dict[str, Any]]:
    raw = (work / "manifest.json").read_bytes()
    try:
        entries = json.loads(raw)
    except ValueError as e:
        raise InvalidImage(f"the docker-archive's manifest.json is not JSON: {e}") from None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise InvalidImage("the docker-archive's manifest.json is not a list of images")
    return entries


def _load_docker_archive(store: ImageStore, work: Path) -> list[tuple[Image, list[Reference]]]:
    """Each image of a docker-archive, made into an OCI layout (its files renamed into blobs/ under their
    digests, a manifest written for them) and added from there, one index.json entry at a time."""
    layout = Path(tempfile.mkdtemp(prefix="layout-", dir=work))
    blobs = layout / "blobs" / digests.ALGORITHM
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_bytes(manifests.layout_marker())
    moved: dict[Path, manifests.Descriptor] = {}
    loaded = []
    for i, entry in enumerate(_docker_manifest(work)):
        what = f"the docker-archive's image {i}"
        config_path = _member(work, entry.get("Config"), f"{what}'s Config", moved)
        config_desc = _move_blob(config_path, blobs, manifests.OCI_CONFIG, moved)
        if config_desc.size > manifests.MAX_DOCUMENT_BYTES:
            raise InvalidImage(f"{what}'s config is {config_desc.size} bytes, more than an image config may be")
        config = manifests.load_json((blobs / digests.hex_of(config_desc.digest)).read_bytes(), f"{what}'s config")
        layer_names = entry.get("Layers")
        if not isinstance(layer_names, list):
            raise InvalidImage(f"{what} has no Layers list")
        manifests.check_config(config, len(layer_names), f"{what}'s config")
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list):
            raise InvalidImage(f"{what}'s RepoTags is not a list")
        refs = [_reference(tag, f"{what}'s RepoTags") for tag in tags]
        layers = [
            _move_blob(_member(work, name, f"{what}'s layer {j}", moved), blobs, None, moved)
            for j, name in enumerate(layer_names)
        ]
        manifest_raw = manifests.build_manifest(config_desc, layers)
        manifest_digest = digests.of_bytes(manifest_raw)
        (blobs / digests.hex_of(manifest_digest)).write_bytes(manifest_raw)
        top = manifests.Descriptor(manifests.OCI_MANIFEST, manifest_digest, len(manifest_raw), {})
        (layout / "index.json").write_bytes(manifests.build_layout_index([top]))
        loaded.append((store.add_from_oci_layout(layout, [str(ref) for ref in refs]), refs))
    return loaded


def _load_oci_layout(store: ImageStore, work: Path) -> list[tuple[Image, list[Reference]]]:
    """Each entry of the layout's index.json, added in turn (index.json rewritten to hold just that entry)."""
    index_path = work / "index.json"
    index = manifests.load_json(index_path.read_bytes(), "the tarball's index.json")
    entries = manifests.parse_index(index, "the tarball's index.json")
    if not entries:
        raise InvalidImage("the tarball's index.json lists no image")
    loaded = []
    for entry in entries:
        refs = []
        annotations = entry.annotations
        name = annotations.get(manifests.CONTAINERD_NAME_ANNOTATION) or annotations.get(manifests.REF_NAME_ANNOTATION)
        # A bare ref.name ("latest") is only a tag within the layout: it names no repository.
        if name and ("/" in name or ":" in name):
            refs.append(_reference(name, "the tarball's index.json annotation"))
        index_path.write_bytes(manifests.build_layout_index([entry]))
        loaded.append((store.add_from_oci_layout(work, [str(ref) for ref in refs]), refs))
    return loaded


def _member(work: Path, name: object, what: str, moved: dict[Path, manifests.Descriptor]) -> Path:
    """The regular file `name` (a path from manifest.json) names inside the extracted tarball (resolved:
    Docker before 25 links a layer listed twice to its first copy)."""
    if not isinstance(name, str) or not name:
        raise InvalidImage(f"{what} is not a file name")
    path = (work / name).resolve()
    if not path.is_relative_to(work.resolve()) or not (path in moved or path.is_file()):
        raise InvalidImage(f"{what} names {name!r}, which is not a file in the tarball")
    return path


def _move_blob(
    path: Path, blobs: Path, media_type: str | None, moved: dict[Path, manifests.Descriptor]
) -> manifests.Descriptor:
    """Rename `path` into the layout's blobs/ under its digest (once: `moved` remembers it); a layer's media
    type is from its magic number."""
    if path not in moved:
        with open(path, "rb") as f:
            head = f.read(MAGIC_LENGTH)
            f.seek(0)
            digest = digests.of_file(f)
        moved[path] = manifests.Descriptor(
            media_type or _LAYER_MEDIA_TYPES[compression_of(head)], digest, path.stat().st_size, {}
        )
        path.rename(blobs / digests.hex_of(digest))
    return moved[path]


def _reference(text: object, what: str) -> Reference:
    if not isinstance(text, str):
        raise InvalidImage(f"{what} holds {text!r}, which is not a reference")
    try:
        return parse(text)
    except InvalidReference as e:
        raise InvalidImage(f"{what} holds {text!r}: {e}") from None
