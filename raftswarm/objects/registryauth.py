"""Registry credentials as Docker encodes them: the X-Registry-Auth header of the image API, and the
RegistryAuth a service keeps for `--with-registry-auth` (the same text, handed to the nodes with its tasks)."""

from __future__ import annotations

import base64
import binascii
import json

AUTH_HEADER = "X-Registry-Auth"
AUTH_FIELDS = ("username", "password", "auth", "serveraddress", "identitytoken", "registrytoken")
"""The AuthConfig fields the registry client uses (docker also sends "email", which no registry checks)."""


def decode_auth(encoded: str) -> dict[str, str] | None:
    """Docker's X-Registry-Auth header: base64url of a JSON AuthConfig ({"username", "password",
    "serveraddress"} or {"identitytoken"}), padding optional. None when empty or unreadable: like dockerd, a
    pull or push with credentials it cannot read goes on without any. Never logged."""
    encoded = encoded.strip()
    if not encoded:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    auth = {key: value[key] for key in AUTH_FIELDS if isinstance(value.get(key), str) and value[key]}
    return auth or None


def encode_auth(auth: dict[str, str]) -> str:
    """The header's text for an AuthConfig, as the docker CLI writes it (base64url of the JSON)."""
    return base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()
