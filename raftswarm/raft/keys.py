"""The data encryption keys (DEKs) of a node's Raft storage, which are only ever written wrapped by a KEK.

A `Keyring` holds the current DEK, which encrypts everything written from now on, and the retired DEKs that
older WAL segments and snapshots still need; storage drops a retired DEK once no file refers to it. Nothing is
encrypted under a DEK directly: every file has a random salt in its header and its records are encrypted under
HKDF(DEK, salt), so the random-nonce budget of AES-GCM (2^32 messages per key) applies per file, not per DEK.

On disk (`<raft-dir>/keys`) the keyring is one sealed blob, sans I/O here (storage writes it atomically):

    magic (8) | CRC-32 of the rest (4) | nonce (12) | AES-256-GCM(KEK, msgpack keyring, AD=KEYS_AD)

The CRC tells a damaged file (StorageCorrupted) from a wrong KEK (WrongKey): both would fail the GCM tag.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from raftswarm.errors import StorageCorrupted, WrongKey

KEY_SIZE = 32
"""AES-256 for the KEK, every DEK and every per-file key."""

NONCE_SIZE = 12
"""GCM's native 96-bit nonce; other sizes are hashed into one and buy nothing."""

KEYS_MAGIC = b"RSKEYS\x00\x01"
KEYS_AD = b"raftswarm/raft: data encryption keys, wrapped by the key encryption key, v1"
_KEYS_HEADER = struct.Struct(">8sI")


def check_kek(kek: bytes) -> None:
    if not isinstance(kek, bytes | bytearray) or len(kek) != KEY_SIZE:
        raise ValueError(f"a key-encryption key must be {KEY_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class Keyring:
    current: int
    """The ID of the DEK that new WAL segments and snapshots are written under."""
    keys: Mapping[int, bytes]
    """Every DEK some file may still be encrypted under, by ID (IDs only grow)."""

    @classmethod
    def generate(cls) -> Keyring:
        return cls(1, {1: AESGCM.generate_key(bit_length=KEY_SIZE * 8)})

    def rotated(self) -> Keyring:
        """A keyring with a fresh current DEK; the old one is retired but kept for the files that use it."""
        new_id = max(self.keys) + 1
        return Keyring(new_id, {**self.keys, new_id: AESGCM.generate_key(bit_length=KEY_SIZE * 8)})

    def retaining(self, used: Iterable[int]) -> Keyring:
        """This keyring without the retired DEKs that no file in `used` refers to."""
        keep = set(used) | {self.current}
        return Keyring(self.current, {key_id: key for key_id, key in self.keys.items() if key_id in keep})

    def file_cipher(self, key_id: int, salt: bytes, purpose: bytes) -> AESGCM | None:
        """The cipher for one file (WAL segment or snapshot), or None if this keyring lacks its DEK."""
        dek = self.keys.get(key_id)
        if dek is None:
            return None
        hkdf = HKDF(algorithm=SHA256(), length=KEY_SIZE, salt=salt, info=purpose + key_id.to_bytes(8, "big"))
        return AESGCM(hkdf.derive(dek))

    def wrap(self, kek: bytes) -> bytes:
        check_kek(kek)
        plaintext = msgpack.packb({"current": self.current, "keys": dict(self.keys)})
        nonce = os.urandom(NONCE_SIZE)
        sealed = nonce + AESGCM(kek).encrypt(nonce, plaintext, KEYS_AD)
        return _KEYS_HEADER.pack(KEYS_MAGIC, zlib.crc32(sealed)) + sealed

    @classmethod
    def unwrap(cls, blob: bytes, kek: bytes, source: str) -> Keyring:
        """The keyring sealed in `blob` (read from `source`, named in errors)."""
        check_kek(kek)
        if len(blob) < _KEYS_HEADER.size + NONCE_SIZE + 16:
            raise StorageCorrupted(f"{source}: the key file is truncated ({len(blob)} bytes)")
        magic, crc = _KEYS_HEADER.unpack_from(blob)
        sealed = blob[_KEYS_HEADER.size :]
        if magic != KEYS_MAGIC:
            raise StorageCorrupted(f"{source}: not a raftswarm Raft key file (bad magic at byte offset 0)")
        if zlib.crc32(sealed) != crc:
            raise StorageCorrupted(f"{source}: the key file is damaged (checksum mismatch)")
        try:
            plaintext = AESGCM(kek).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], KEYS_AD)
        except InvalidTag:
            raise WrongKey(
                f"{source}: this key-encryption key does not unlock the Raft data keys; "
                "if the swarm is autolocked, unlock it with the current unlock key (`raftswarm swarm unlock`)"
            ) from None
        try:
            fields = msgpack.unpackb(plaintext, strict_map_key=False)
            keyring = cls(int(fields["current"]), {int(k): bytes(v) for k, v in fields["keys"].items()})
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise StorageCorrupted(f"{source}: the key file decrypts but cannot be decoded ({exc})") from None
        if keyring.current not in keyring.keys or any(len(k) != KEY_SIZE for k in keyring.keys.values()):
            raise StorageCorrupted(f"{source}: the key file lacks its current data key")
        return keyring
