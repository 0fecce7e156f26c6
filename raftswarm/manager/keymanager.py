"""The key manager: keeps this manager's Raft key-encryption key (KEK) in line with the swarm's autolock.

Without autolock the KEK is a random key kept in the node's certificates directory. With autolock it is
the swarm's unlock key, which lives only in the replicated cluster object (inside the encrypted log) and in
memory: when autolock is turned on or the key rotated, every manager re-wraps its data key under the new
KEK and forgets the one on disk; when it is turned off, a fresh random KEK goes back to disk. A manager
restarted while autolocked therefore cannot read its own log until `swarm unlock` gives it the key.

It also rotates the swarm's gossip keys (SwarmKit's NetworkBootstrapKeys), on the leader: every
`GOSSIP_KEY_ROTATION` a new key joins the cluster object and the oldest beyond `GOSSIP_KEYS_KEPT` leaves.
The dispatcher hands the keys to every node with its heartbeats, newest first; nodes encrypt with the
second newest (`gossip_keyring_order`), so no node sends under a key another has not received yet, and
decrypt with any.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..ca.unlockkey import KEY_BYTES, unlock_key_kek
from ..raft.driver import RaftDriver
from ..store import Conflict, ReplicatedStore, update
from ..objects.kinds import CLUSTER, CLUSTER_KEY

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5
GOSSIP_KEY_ROTATION = 12 * 3600.0
"""SwarmKit's keymanager rotates the network bootstrap keys every 12 hours."""
GOSSIP_KEYS_KEPT = 3
"""The newest three keys are kept: the one nodes encrypt with, a newer one they are learning, an older one
late packets may still be sealed with."""
GOSSIP_SUBSYSTEM = "networking:gossip"


def rotated_gossip_keys(keys: list[dict[str, Any]], now: float, every: float = GOSSIP_KEY_ROTATION) -> list[dict[str, Any]] | None:
    """The cluster's NetworkBootstrapKeys after a rotation if one is due at `now`, else None."""
    newest = max((k for k in keys if k.get("Subsystem") == GOSSIP_SUBSYSTEM), key=lambda k: k["LamportTime"], default=None)
    if newest is not None and now - float(newest.get("CreatedAt", 0)) < every:
        return None
    fresh = {
        "Subsystem": GOSSIP_SUBSYSTEM,
        "Key": base64.b64encode(os.urandom(32)).decode(),
        "LamportTime": (newest["LamportTime"] if newest else 0) + 1,
        "CreatedAt": now,
    }
    kept = sorted([*keys, fresh], key=lambda k: k["LamportTime"], reverse=True)
    return kept[:GOSSIP_KEYS_KEPT]


def gossip_keyring_order(keys: list[bytes]) -> list[bytes]:
    """Keys as delivered (newest first) -> keyring order (the one to encrypt with first): the second newest
    when there are two or more, so a node encrypts only under a key every node has had for a rotation."""
    return [keys[1], keys[0], *keys[2:]] if len(keys) >= 2 else list(keys)


class KeyManager:
    def __init__(
        self,
        store: ReplicatedStore,
        driver: RaftDriver,
        kek: bytes,
        kek_on_disk: bool,
        save_kek: Callable[[bytes | None], None],
    ) -> None:
        """`kek` is the KEK the log is wrapped under now; `kek_on_disk` whether the node keeps it on disk.
        `save_kek(kek)` writes a KEK to the node's disk; `save_kek(None)` removes it from there."""
        self.store = store
        self.driver = driver
        self.gossip_key_rotation = GOSSIP_KEY_ROTATION
        self.kek = kek
        self.kek_on_disk = kek_on_disk
        self._save_kek = save_kek
        self._seen_version = -1

    async def run(self) -> None:
        while True:
            cluster = self.store.state.get(CLUSTER, CLUSTER_KEY)
            if cluster is not None and cluster.version != self._seen_version:
                await self.reconcile(cluster.data)
                self._seen_version = cluster.version
            if cluster is not None and self.driver.is_leader:
                await self._rotate_gossip_keys(cluster)
            await asyncio.sleep(CHECK_INTERVAL)

    async def _rotate_gossip_keys(self, cluster: Any) -> None:
        keys = rotated_gossip_keys(cluster.data.get("NetworkBootstrapKeys") or [], time.time(), self.gossip_key_rotation)
        if keys is None:
            return
        try:
            await self.store.transact([update(CLUSTER, CLUSTER_KEY, {**cluster.data, "NetworkBootstrapKeys": keys}, expect=cluster.version)])
            log.info("rotated the swarm's gossip keys (now at Lamport time %d)", keys[0]["LamportTime"])
        except Conflict:
            pass  # the cluster changed meanwhile: decided again next time

    async def reconcile(self, cluster: dict) -> None:
        autolock = cluster["Spec"].get("EncryptionConfig", {}).get("AutoLockManagers", False)
        unlock_key = cluster.get("UnlockKey")
        if autolock and unlock_key:
            wanted = unlock_key_kek(unlock_key)
            if wanted != self.kek or self.kek_on_disk:
                await self.driver.storage_call(lambda storage: storage.rewrap(wanted))
                self._save_kek(None)  # only after the log is re-wrapped: a crash in between leaves it locked, not lost
                self.kek, self.kek_on_disk = wanted, False
                log.info("autolock: the Raft log is now locked by the swarm's unlock key")
        elif not autolock and not self.kek_on_disk:
            fresh = os.urandom(KEY_BYTES)
            self._save_kek(fresh)  # before re-wrapping: a crash in between leaves it unlockable by the old key
            await self.driver.storage_call(lambda storage: storage.rewrap(fresh))
            self.kek, self.kek_on_disk = fresh, True
            log.info("autolock is off: the Raft log's key is kept on this node again")
