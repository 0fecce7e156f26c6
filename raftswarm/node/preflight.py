"""What a node checks at start for the roles it may take, and says about what it cannot do.

A node starts with a feature off rather than refusing to start (a manager without a data plane still runs
the control plane), but never silently: each missing piece is logged once at start, named with the Debian
package that brings it, and listed in `docker info`'s Warnings as dockerd lists its own.
"""

from __future__ import annotations

import shutil

from ..runtime.containers import INIT_BINARY
from ..runtime.containers import unavailable as containers_unavailable
from .networking import data_plane_unavailable

_REGISTRY_CLIENT = ("skopeo", "skopeo")


def warnings(advertise_ip: str | None) -> list[str]:
    """One sentence per feature this node lacks, naming what to install; empty when it has them all.
    `advertise_ip` is None for a node not in a swarm yet (its data plane is judged once it has an address)."""
    found = []
    cannot_run = containers_unavailable()
    if cannot_run:
        found.append(f"tasks cannot run on this node and are rejected: {cannot_run}")
    elif not _exists(INIT_BINARY):
        found.append(f"services created with --init cannot run here: {INIT_BINARY} is missing: install the Debian package tini")
    if shutil.which(_REGISTRY_CLIENT[0]) is None:
        found.append(
            f"images cannot be pulled or pushed: `{_REGISTRY_CLIENT[0]}` is not installed: install the Debian package "
            f"{_REGISTRY_CLIENT[1]} (./setup does)"
        )
    if advertise_ip is not None:
        no_data_plane = data_plane_unavailable(advertise_ip)
        if no_data_plane:
            found.append(f"no overlay networks, service discovery or routing mesh on this node: {no_data_plane}")
    return found


def _exists(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False
