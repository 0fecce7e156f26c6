"""A compose file after checking: what `load_stack` returns and `stack_specs` converts. Keys keep their compose
names (not yet scoped by the stack namespace); durations are in nanoseconds, sizes in bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_NETWORK = "default"
"""The network a service joins when it names none; the stack creates it as ``<ns>_default``."""


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
class ServiceConfig:
    """One service after checking and normalising; durations are in nanoseconds, sizes in bytes."""

    name: str
    image: str
    entrypoint: list[str] | None = None
    command: list[str] | None = None
    environment: dict[str, str | None] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    hostname: str | None = None
    init: bool | None = None
    labels: dict[str, str] = field(default_factory=dict)
    secrets: list[SecretReference] = field(default_factory=list)
    configs: list[ConfigReference] = field(default_factory=list)
    stop_grace_period: int | None = None
    networks: dict[str, list[str]] = field(default_factory=dict)  # network key -> extra aliases
    ports: list[dict[str, Any]] = field(default_factory=list)  # PortConfig bodies
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
    """A checked compose file: what `stack_specs` converts."""

    path: Path
    services: dict[str, ServiceConfig]
    networks: dict[str, NetworkConfig]
    secrets: dict[str, SecretConfig]
    warnings: list[str]
    configs: dict[str, ConfigObjConfig] = field(default_factory=dict)
