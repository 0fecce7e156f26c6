"""Content digests ("sha256:<64 hex>"): validation, and hashing while data streams through.

Every name the store builds a path from (blobs/sha256/<hex>, layers/sha256/<hex>) goes through `check`
first, since digests arrive from manifests, archives and registries: "sha256:../../etc" must never become
a path. Only sha256 is accepted: it is what Docker, registries and the OCI layout use for content.
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from .errors import InvalidImage

ALGORITHM = "sha256"

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


def check(digest: object, what: str = "digest") -> str:
    """`digest` itself if it is a well-formed "sha256:<64 lowercase hex>"; `InvalidImage` naming `what`
    otherwise."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidImage(f"{what} {digest!r} is not a sha256 digest (sha256:<64 lowercase hex digits>)")
    return digest


def hex_of(digest: str) -> str:
    """The hex part of a checked digest: the file name under blobs/sha256/ and layers/sha256/."""
    return check(digest).partition(":")[2]


def of_bytes(data: bytes) -> str:
    """The digest of `data`."""
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def of_file(f: BinaryIO, chunk: int = 1024 * 1024) -> str:
    """The digest of what is left to read in the open file `f`, read `chunk` bytes at a time."""
    hasher = hashlib.sha256()
    while data := f.read(chunk):
        hasher.update(data)
    return f"{ALGORITHM}:{hasher.hexdigest()}"


class HashingReader:
    """A read-only stream that hashes (and counts) every byte read through it; `digest` is valid once the
    underlying stream is read to its end."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self, chunk: int) -> None:
        """Read (and hash) whatever is left, `chunk` bytes at a time."""
        while self.read(chunk):
            pass

    @property
    def digest(self) -> str:
        return f"{ALGORITHM}:{self._hash.hexdigest()}"
