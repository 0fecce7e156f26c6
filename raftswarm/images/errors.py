"""The image store's errors: one hierarchy under `ImageError`, re-exported by `images.store`.

They live in a module of their own because the store's parts (layer unpacking, manifests, overlay mounts)
raise them too, and those parts sit below the store in the import graph. Messages follow dockerd's words
where Docker has a message for the same situation, so a user's search finds the Docker answer.
"""

from __future__ import annotations

from ..errors import RaftswarmError


class ImageError(RaftswarmError):
    """Base of every error of the node image store."""


class ImageNotFound(ImageError):
    """No image matches a reference or ID; the message is dockerd's `No such image: busybox:latest`."""


class DigestMismatch(ImageError):
    """Content does not hash to the digest that names it (a corrupt or tampered blob or layer).

    Nothing of it is kept: the temporary copy is discarded and a corrupt stored blob is deleted, so pulling
    or loading the image again fetches it afresh."""


class ImageConflict(ImageError):
    """dockerd's 409 for `docker rmi`: the image cannot be deleted as asked (for example it has several
    tags and deleting by ID was not forced)."""


class ImageInUse(ImageConflict):
    """The image is the root filesystem of a task (mounted by `ImageStore.mount_rootfs`); no force removes
    it until the task's rootfs is released."""


class InvalidImage(ImageError):
    """An image, layout, archive or layer that is not a well-formed Linux container image, or that tries to
    write outside its layer; the message names the offending file or member."""


class RootfsUnavailable(ImageError):
    """A task's root filesystem cannot be mounted on this machine (not root, no overlayfs); the message
    says what is missing."""
