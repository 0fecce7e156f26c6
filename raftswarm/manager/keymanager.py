"""The key manager: keeps this manager's Raft key-encryption key (KEK) in line with the swarm's autolock.

Without autolock the KEK is a random key kept in the node's certificates directory. With autolock it is
the swarm's unlock key, which lives only in the replicated cluster object (inside the encrypted log) and in
memory: when autolock is turned on or the key rotated, every manager re-wraps its data key under the new
KEK and forgets the one on disk; when it is turned off, a fresh random KEK goes back to disk. A manager
restarted while autolocked therefore cannot read its own log until `swarm unlock` gives it the key.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from ..ca.unlockkey import KEY_BYTES, unlock_key_kek
from ..raft.driver import RaftDriver
from ..store import ReplicatedStore
from .controlapi import CLUSTER, CLUSTER_KEY

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5


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
            await asyncio.sleep(CHECK_INTERVAL)

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
