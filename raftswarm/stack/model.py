"""A compose file after checking: what `load_stack` returns and `stack_specs` converts. Keys keep their compose
names (not yet scoped by the stack namespace); durations are in nanoseconds, sizes in bytes.

A value a file does not give is None (or empty), so that merging several files (`merge`) can tell "not given"
from "given as false, 0 or empty" and let a later file override only what it gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_NETWORK = "default"
"""The network a service joins when it names none; the stack creates it as ``<ns>_default``."""

VOLUME, BIND, TMPFS = "volume", "bind", "tmpfs"
"""The mount types a stack's services can have (docker's npipe, cluster and image ones are refused)."""


@dataclass(frozen=True)
class SecretReference:
    source: str
    target: str
    uid: str
    gid: str
    mode: int


@dataclass(frozen=True)
class ConfigReference:
    source: str
    target: str  # as written; a relative target is under "/" in the container
    uid: str
    gid: str
    mode: int


@dataclass(frozen=True)
class ServiceMount:
    """One entry of a service's `volumes:` (short or long syntax) or `tmpfs:`: a Mount of its ContainerSpec."""

    type: str  # VOLUME, BIND or TMPFS
    target: str
    source: str = ""  # a key of the top-level volumes ("" for an anonymous volume), or a bind's absolute host path
    read_only: bool = False
    consistency: str | None = None
    propagation: str | None = None  # a bind's
    create_host_path: bool | None = None  # a bind's (compose-spec's; docker/cli's format has no such key)
    nocopy: bool | None = None  # a volume's
    tmpfs_size: int | None = None
    tmpfs_mode: int | None = None
    tmpfs_flags: tuple[str, ...] = ()  # "exec" or "noexec"


@dataclass(frozen=True)
class ServiceConfig:
    """One service after checking and normalising; durations are in nanoseconds, sizes in bytes. Lists and maps
    are empty and other values None where the file does not give them."""

    name: str
    image: str | None = None  # required, but only once every file is merged: an override file may leave it out
    entrypoint: list[str] | None = None
    command: list[str] | None = None
    environment: dict[str, str | None] = field(default_factory=dict)  # env_file entries, then environment:
    working_dir: str | None = None
    user: str | None = None
    hostname: str | None = None
    init: bool | None = None
    read_only: bool | None = None
    tty: bool | None = None
    stdin_open: bool | None = None
    labels: dict[str, str] = field(default_factory=dict)  # the container's
    secrets: list[SecretReference] = field(default_factory=list)
    configs: list[ConfigReference] = field(default_factory=list)
    stop_grace_period: int | None = None
    stop_signal: str | None = None
    networks: dict[str, list[str] | None] = field(default_factory=dict)  # network key -> extra aliases, if given
    ports: list[dict[str, Any]] = field(default_factory=list)  # PortConfig bodies
    volumes: list[ServiceMount] = field(default_factory=list)
    tmpfs: list[ServiceMount] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)  # as written; the effective lists are the converter's
    cap_drop: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (soft, hard)
    extra_hosts: list[str] = field(default_factory=list)  # "IP HOST", Docker's Hosts form
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_opt: list[str] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)
    healthcheck: dict[str, Any] | None = None  # compose keys: test (a Docker Test list), durations, retries, disable
    logging: dict[str, Any] | None = None  # {"driver": str | None, "options": {...}}
    isolation: str | None = None
    oom_score_adj: int | None = None
    restart: str | None = None  # docker's legacy restart policy ("on-failure:3"), used without deploy.restart_policy
    deploy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkConfig:
    name: str | None = None  # an explicit `name:`, not scoped by the namespace
    external: bool = False
    driver: str | None = None
    driver_opts: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    ipam_driver: str | None = None
    subnets: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VolumeConfig:
    """A top-level `volumes:` entry: created by the node that first runs a task mounting it, with these options."""

    name: str | None = None  # an explicit `name:` (or an external volume's), not scoped by the namespace
    external: bool = False
    driver: str | None = None
    driver_opts: dict[str, str] | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretConfig:
    name: str | None = None
    external: bool = False
    file: Path | None = None  # absolute: resolved against the compose file's directory
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigObjConfig:
    """A top-level `configs:` entry (docker/cli's ConfigObjConfig)."""

    name: str | None = None
    external: bool = False
    file: Path | None = None  # absolute: resolved against the compose file's directory
    labels: dict[str, str] = field(default_factory=dict)
    template_driver: str | None = None


@dataclass(frozen=True)
class StackConfig:
    """Checked compose files, merged: what `stack_specs` converts."""

    path: Path  # the first compose file (Path("-") for stdin)
    services: dict[str, ServiceConfig]
    networks: dict[str, NetworkConfig]
    secrets: dict[str, SecretConfig]
    warnings: list[str]
    configs: dict[str, ConfigObjConfig] = field(default_factory=dict)
    volumes: dict[str, VolumeConfig] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # every compose file, as messages name them

    @property
    def origin(self) -> str:
        """The compose file(s), as an error message names them."""
        return ", ".join(self.files) if self.files else str(self.path)
