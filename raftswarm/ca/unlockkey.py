"""Unlock keys of autolocked swarms: `SWMKEY-1-<base64 of 32 random bytes>`, Docker's format.

With autolock the 32 bytes are the key-encryption key (KEK) of every manager's Raft log: it is never
written to disk, so a restarted manager cannot read its log until someone gives it the key.
"""

from __future__ import annotations

import base64
import binascii
import os

from ..errors import InvalidInput

PREFIX = "SWMKEY-1-"
KEY_BYTES = 32


class InvalidUnlockKey(InvalidInput):
    """The text is not an unlock key, or not this swarm's."""


def generate_unlock_key() -> str:
    return PREFIX + base64.b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")


def unlock_key_kek(text: str) -> bytes:
    """The KEK an unlock key stands for; InvalidUnlockKey for anything malformed."""
    text = text.strip()
    if not text.startswith(PREFIX):
        raise InvalidUnlockKey("invalid unlock key: it must start with SWMKEY-1-")
    body = text[len(PREFIX) :]
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUnlockKey("invalid unlock key: the part after SWMKEY-1- is not base64") from None
    if len(key) != KEY_BYTES:
        raise InvalidUnlockKey(f"invalid unlock key: it holds {len(key)} bytes, not {KEY_BYTES}")
    return key
