"""The image a service runs: pinned to the digest its registry has now, so that every task runs the same image,
and the registry credentials `--with-registry-auth` sends along (used by `service create/update` and
`stack deploy`)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from ...api.client import ApiClient, ApiError
from ...objects.reference import InvalidReference
from ...objects.reference import parse as parse_reference
from ...objects.registryauth import encode_auth

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
"""The key docker's config.json files Docker Hub's credentials under."""


def registry_auth(image: str) -> str | None:
    """The X-Registry-Auth for `image`'s registry from the docker CLI's own credentials (`docker login`:
    $DOCKER_CONFIG/config.json, else ~/.docker/config.json), as `--with-registry-auth` sends them; None if it
    has none for that registry. Credential helpers (credsStore) are not asked: raftswarm reads only the file."""
    try:
        domain = parse_reference(image).domain
    except InvalidReference:
        return None
    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        auths = json.loads(config.read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    entry = auths.get(DOCKER_HUB_AUTH_KEY if domain == "docker.io" else domain) or {}
    try:
        username, _, password = base64.b64decode(entry.get("auth", "")).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    if not username:
        return None
    return encode_auth({"username": username, "password": password, "serveraddress": domain})


async def pin_image(api: ApiClient, container: dict[str, Any]) -> str | None:
    """docker's image resolution on `service create/update`: ContainerSpec.Image becomes `name:tag@digest`, the
    digest the registry has now (asked through the node's `/distribution`), so every task runs the same image.
    If the registry cannot be asked, the image stays as given and docker's warning is returned."""
    image = container["Image"]
    try:
        ref = parse_reference(image)
    except InvalidReference:
        return None  # the node refuses the spec with its own message
    if ref.digest:
        return None
    try:
        answer = await api.request("GET", f"/distribution/{image}/json")
        digest = answer["Descriptor"]["digest"]
    except (ApiError, KeyError, TypeError):
        return (
            f"image {image} could not be accessed on a registry to record\nits digest. Each node will access "
            f"{image} independently,\npossibly leading to different nodes running different\nversions of the image.\n"
        )
    container["Image"] = f"{ref.familiar}@{digest}"
    return None
