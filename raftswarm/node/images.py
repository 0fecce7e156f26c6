"""`NodeImages`: a node's images as its agent needs them while a task is PREPARING -- the image in the node's
store, pulled through the node's registry client when it is not there yet (`images.store`, `images.registry`).

As SwarmKit's container adapter: an image the node already has (by tag, or by the digest a service pins) is
used as it is; otherwise it is pulled, its progress shown in the task's status message, and an image that
cannot be had rejects the task with Docker's words (`No such image: busybox:2`), or the registry's own, so
the restart policy tries again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..agent.agent import ImageUnavailable
from ..errors import RaftswarmError
from ..images.errors import ImageNotFound
from ..objects.reference import InvalidReference
from ..images.registry import RegistryClient
from ..images.store import ImageStore

log = logging.getLogger(__name__)

_NOT_FOUND_WORDS = ("manifest unknown", "not found", "repository does not exist", "No such image")
"""What the registry client says when the image is not there (as opposed to the registry being down or
refusing us): Docker reports those as `No such image`."""

_QUIET_STATUSES = ("Downloading", "Extracting", "Waiting")
"""Per-chunk progress: a status report per chunk would be a store write per chunk."""


class NodeImages:
    """The `agent.agent.TaskImages` of a node: its image store and registry client."""

    def __init__(self, store: ImageStore, registry: RegistryClient) -> None:
        self.store = store
        self.registry = registry

    async def prepare(
        self, reference: str, progress: Callable[[str], None], auth: dict[str, str] | None = None
    ) -> None:
        try:
            await asyncio.to_thread(self.store.resolve, reference)
            return
        except ImageNotFound:
            pass
        except InvalidReference as exc:
            raise ImageUnavailable(f"invalid image reference {reference!r}: {exc}") from None

        def shown(message: dict[str, Any]) -> None:
            status = message.get("status", "")
            if status and status not in _QUIET_STATUSES:
                progress(f"{status} {message.get('id', '')}".strip())

        try:
            await self.registry.pull(reference, auth, progress=shown)
        except RaftswarmError as exc:
            text = str(exc)
            log.info("could not pull %s: %s", reference, text)
            if any(words in text for words in _NOT_FOUND_WORDS):
                raise ImageUnavailable(f"No such image: {reference}") from None
            raise ImageUnavailable(f"pulling {reference}: {text}") from None
