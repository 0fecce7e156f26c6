"""Image manifests, image indexes and configs, in both dialects a registry serves: Docker's schema 2 and OCI.

Parsing checks what the store relies on (descriptors with sha256 digests and sizes, a container config,
as many layers as the config has diff_ids) and says what is wrong in terms of the document. An index
(OCI image index or Docker manifest list) is resolved to this node's platform, linux/amd64, as
`docker pull` on such a host does. Building writes the OCI manifest and layout index the store makes for
images that arrive without a manifest (`docker load` of a docker-archive, `docker import`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import digest as digests
from .errors import InvalidImage

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
"""Largest manifest, index or config read: containerd's and distribution's manifest limit (4 MiB). A
document larger than this is an attack on memory, not an image."""

MAX_INDEX_DEPTH = 4
"""Indexes nested deeper than this are refused (real ones nest one level: layout index -> list -> image)."""

PLATFORM_OS = "linux"
PLATFORM_ARCHITECTURE = "amd64"
"""The one platform this store runs (DESIGN.md: tasks are Linux processes on x86-64 hosts)."""

OCI_LAYOUT_VERSION = "1.0.0"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)
LAYER_TYPES = (
    OCI_LAYER_TAR,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    # Foreign (non-distributable) layers are ordinary layers once their blob is present.
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
"""An OCI layout's name for an index entry: a tag ("latest") or, as docker save and buildx write it, a full
reference."""

CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
"""The full reference containerd (and Docker with the containerd store) records on a saved index entry."""


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest or index says about one blob."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str]
    platform: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            value["annotations"] = dict(self.annotations)
        return value


@dataclass(frozen=True)
class Manifest:
    """An image manifest: its config descriptor and its layer descriptors, base layer first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def load_json(raw: bytes, what: str) -> dict[str, Any]:
    """`raw` as a JSON object, or `InvalidImage` naming `what`."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise InvalidImage(
            f"{what} is {len(raw)} bytes, more than the {MAX_DOCUMENT_BYTES} a manifest or config may be"
        )
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise InvalidImage(f"{what} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidImage(f"{what} is not a JSON object")
    return value


def descriptor(value: object, what: str) -> Descriptor:
    """A descriptor from its JSON form, its digest and size checked."""
    if not isinstance(value, dict):
        raise InvalidImage(f"{what} is not a descriptor object")
    media_type = value.get("mediaType", "")
    size = value.get("size")
    annotations = value.get("annotations") or {}
    platform = value.get("platform")
    if not isinstance(media_type, str):
        raise InvalidImage(f"{what} has a mediaType that is not a string")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidImage(f"{what} has no valid size")
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise InvalidImage(f"{what} has annotations that are not strings")
    if platform is not None and not isinstance(platform, dict):
        raise InvalidImage(f"{what} has a platform that is not an object")
    return Descriptor(media_type, digests.check(value.get("digest"), f"{what}'s digest"), size, annotations, platform)


def kind(media_type: str, document: Mapping[str, Any]) -> str:
    """"index" or "manifest": from the descriptor's media type, else the document's own, else its shape
    (OCI lets both leave the media type out). Schema 1 and non-image documents are refused."""
    media_type = media_type or document.get("mediaType", "")
    if media_type in DOCKER_SCHEMA1_TYPES or document.get("schemaVersion") == 1:
        raise InvalidImage(
            "Docker image manifest schema 1 is not supported (Docker removed it too); push the image again "
            "with a current docker or skopeo to convert it"
        )
    if media_type in INDEX_TYPES or (not media_type and "manifests" in document):
        return "index"
    if media_type in MANIFEST_TYPES or (not media_type and "config" in document and "layers" in document):
        return "manifest"
    raise InvalidImage(f"unsupported manifest media type {media_type!r}: not a container image")


def parse_index(document: Mapping[str, Any], what: str) -> list[Descriptor]:
    """The entries of an image index, manifest list or layout index.json."""
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise InvalidImage(f"{what} has no manifests list")
    return [descriptor(entry, f"{what} entry {i}") for i, entry in enumerate(entries)]


def select_platform(entries: Sequence[Descriptor], what: str) -> Descriptor:
    """The linux/amd64 entry of an index; one without a variant wins over a variant (v2, v3) of amd64.
    Entries without a platform are not images (attestations, signatures) and are never chosen."""
    matches = [
        entry for entry in entries
        if entry.platform is not None
        and entry.platform.get("os") == PLATFORM_OS
        and entry.platform.get("architecture") == PLATFORM_ARCHITECTURE
    ]
    if not matches:
        offered = sorted({_platform_name(entry.platform) for entry in entries if entry.platform is not None})
        raise InvalidImage(
            f"no matching manifest for {PLATFORM_OS}/{PLATFORM_ARCHITECTURE} in the manifest list entries of "
            f"{what} (it offers: {', '.join(offered) or 'none'})"
        )
    matches.sort(key=lambda entry: bool(entry.platform and entry.platform.get("variant")))
    return matches[0]


def parse_manifest(document: Mapping[str, Any], media_type: str, what: str) -> Manifest:
    """An image manifest: a container config and its layers, each of a supported media type."""
    config = descriptor(document.get("config"), f"{what}'s config")
    if config.media_type not in CONFIG_TYPES:
        raise InvalidImage(
            f"{what} is not a container image: its config media type is {config.media_type!r} "
            f"(an artifact, not something `docker run` can start)"
        )
    layers_json = document.get("layers")
    if not isinstance(layers_json, list):
        raise InvalidImage(f"{what} has no layers list")
    layers = tuple(descriptor(layer, f"{what}'s layer {i}") for i, layer in enumerate(layers_json))
    for i, layer in enumerate(layers):
        if layer.media_type not in LAYER_TYPES:
            raise InvalidImage(f"{what}'s layer {i} has media type {layer.media_type!r}, which is not a layer")
    return Manifest(media_type or document.get("mediaType") or OCI_MANIFEST, config, layers)


def check_config(config: Mapping[str, Any], layer_count: int, what: str) -> list[str]:
    """The config's rootfs.diff_ids, after checking it is a Linux image with one diff_id per layer."""
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" or not isinstance(rootfs.get("diff_ids"), list):
        raise InvalidImage(f"{what} has no rootfs of type layers with diff_ids")
    ids = [digests.check(d, f"{what}'s diff_id") for d in rootfs["diff_ids"]]
    if len(ids) != layer_count:
        raise InvalidImage(f"{what} lists {len(ids)} diff_ids for {layer_count} layers")
    if config.get("os", PLATFORM_OS) != PLATFORM_OS:
        raise InvalidImage(f"{what} is an image for {config.get('os')}, and this node runs {PLATFORM_OS} images")
    return ids


def build_manifest(config: Descriptor, layers: Sequence[Descriptor]) -> bytes:
    """An OCI image manifest for a config and layers, serialized deterministically (sorted keys, no spaces),
    so the same image always gets the same manifest digest."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return canonical_json(document)


def build_layout_index(entries: Sequence[Descriptor]) -> bytes:
    """An OCI layout's index.json listing `entries`."""
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e.to_json() for e in entries]})


def layout_marker() -> bytes:
    """The `oci-layout` file every OCI image layout has."""
    return canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION})


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _platform_name(platform: Mapping[str, Any] | None) -> str:
    platform = platform or {}
    parts = [str(platform.get("os", "?")), str(platform.get("architecture", "?"))]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)
