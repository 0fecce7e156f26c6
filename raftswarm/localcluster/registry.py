"""A real registry on this machine: Debian's `docker-registry` (the CNCF distribution registry 2.8) serving one
filesystem storage directory over plain HTTP, for tests, benchmarks and `raftswarm cluster up` (where it is the
cluster's `localhost:5000` and the nodes' Docker Hub mirror).

`LocalRegistry` writes the registry's whole configuration (config.yml, and an htpasswd file when it has users)
into a run directory of its own, starts the process with its output in `registry.log` there, and counts it as
started once `GET /v2/` answers. Tests use it as an async context manager; `cluster up` starts it detached
(`spawn_detached`), and `stop_pid` ends it later from any process through the pidfile, which holds the PID with
the process's start time (as `localcluster.processes` writes them) so a recycled PID is never signalled.

Passwords are only ever written hashed (bcrypt, the one scheme distribution's htpasswd accepts).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp
import yaml

from ..errors import RaftswarmError
from .processes import NodeProcess, log_tail, spawn, stop_all

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
"""Debian's package `docker-registry`."""

DEFAULT_HOST = "127.0.0.1"
"""Loopback only: a registry without TLS must not be reachable from other machines."""

START_TIMEOUT = 10.0
"""The registry answers within a few tens of milliseconds; seconds mean it is stuck or failed."""

PORT_ATTEMPTS = 3
"""A free port picked by binding port 0 can be taken by another process before the registry binds it."""

BCRYPT_COST = 5
"""`htpasswd -B`'s default. The registry checks the password with bcrypt on every request, so each step up
doubles the time of every request; these registries serve loopback and private bridges only."""

CONFIG_FILE = "config.yml"
HTPASSWD_FILE = "htpasswd"
LOG_FILE = "registry.log"
PIDFILE = "registry.pid"

_POLL_INTERVAL = 0.05
_ADDRESS_IN_USE = "address already in use"
# The registry logs each request it answers as a logrus line of key=value fields (values with spaces or
# colons in Go quotes): msg="response completed" (or "... with error"), http.request.method=GET,
# http.request.uri="/v2/app/blobs/sha256:...", http.response.status=200.
_LOG_FIELD = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)')
_RESPONSE_MESSAGES = ('"response completed"', '"response completed with error"')


class RegistryStartError(RaftswarmError):
    """The registry could not be started or did not answer; the message ends with its log."""


class HtpasswdUnavailable(RaftswarmError):
    """Nothing on this machine makes bcrypt hashes (`htpasswd`, Python's `bcrypt`, or a libcrypt with bcrypt)."""


@dataclass(frozen=True)
class RegistryRequest:
    """One request the registry answered, from its log."""

    method: str
    path: str
    status: int


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash of `password` for an htpasswd file, made by the first of: apache2-utils' `htpasswd`
    (password on stdin, never in argv), Python's `bcrypt`, Python's `crypt` on a libcrypt that has bcrypt
    (glibc's libxcrypt does). Raises `HtpasswdUnavailable` if none is there."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd:
        command = [htpasswd, "-niB", "-C", str(BCRYPT_COST), "user"]
        result = subprocess.run(command, input=password, capture_output=True, text=True, check=True)
        return result.stdout.strip().partition(":")[2]
    try:
        import bcrypt
    except ImportError:
        pass
    else:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
    with warnings.catch_warnings():
        # Deprecated since Python 3.11 (gone in 3.13), and only the last resort here.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            crypt = None
    if crypt is not None and crypt.METHOD_BLOWFISH in crypt.methods:
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << BCRYPT_COST))
    raise HtpasswdUnavailable(
        "cannot hash registry passwords with bcrypt: install apache2-utils (htpasswd) or python3-bcrypt"
    )


def _unquote(value: str) -> str:
    """A logrus field's value: Go-quoted ones ("...") are JSON-compatible strings."""
    return json.loads(value) if value.startswith('"') else value


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalRegistry:
    """A `docker-registry` process serving `storage` (created if missing) at `host:port` (a free port if none
    is given), with basic auth for `users` ({name: password}) if given, and deletes enabled.

    `run_dir` holds its config, htpasswd, log and pidfile. Use `async with LocalRegistry(...) as registry:` or
    `await start()` / `stop()`."""

    def __init__(
        self,
        storage: Path,
        run_dir: Path,
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.storage = Path(storage)
        self.run_dir = Path(run_dir)
        self.host = host
        self.port = port
        self.users = dict(users or {})
        self.process: NodeProcess | None = None

    @property
    def address(self) -> str:
        """host:port, as a registry is written in an image reference."""
        if self.port is None:
            raise RegistryStartError("the registry has not been started")
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def pidfile(self) -> Path:
        return self.run_dir / PIDFILE

    @property
    def blob_dir(self) -> Path:
        """Where the registry keeps blob contents (`<2 hex>/<hex>/data` below it), by distribution's layout."""
        return self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"

    def blob_path(self, digest: str) -> Path:
        """The file holding the blob `sha256:<hex>` in the registry's storage."""
        hex_digest = digest.removeprefix("sha256:")
        return self.blob_dir / hex_digest[:2] / hex_digest / "data"

    def requests(self) -> list[RegistryRequest]:
        """Every request the registry has answered so far, oldest first, from its log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        requests = []
        for line in text.splitlines():
            fields = dict(_LOG_FIELD.findall(line))
            if fields.get("msg") in _RESPONSE_MESSAGES and "http.response.status" in fields:
                requests.append(
                    RegistryRequest(
                        fields["http.request.method"],
                        _unquote(fields["http.request.uri"]),
                        int(fields["http.response.status"]),
                    )
                )
        return requests

    async def start(self, detach: bool = False) -> int:
        """Start the registry and wait until `GET /v2/` answers; returns its PID. `detach` puts it in a
        session of its own (it outlives this process; end it with `stop_pid(pidfile)`)."""
        if not REGISTRY_BINARY.is_file():
            raise RegistryStartError(f"{REGISTRY_BINARY} is missing: install the Debian package docker-registry")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        htpasswd = self._write_htpasswd()
        chosen = self.port is None
        for _ in range(PORT_ATTEMPTS if chosen else 1):
            if chosen:
                self.port = _free_port(self.host)
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            config = self.run_dir / CONFIG_FILE
            config.write_text(yaml.safe_dump(self._config(htpasswd)))
            child = spawn([str(REGISTRY_BINARY), "serve", str(config)], self.log_path, detach, self.pidfile)
            self.process = NodeProcess.started(child)
            try:
                await self._wait_ready()
                return child.pid
            except RegistryStartError:
                self.stop()
                if not (chosen and _ADDRESS_IN_USE in self.log_path.read_text(errors="replace")[log_start:]):
                    raise
        raise RegistryStartError(f"no free port for the registry on {self.host}: {log_tail(self.log_path)}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; only the process this object started."""
        if self.process is not None:
            stop_all([self.process])
            if self.process.child is not None:
                self.process.child.wait()
            self.process = None
            self.pidfile.unlink(missing_ok=True)

    async def __aenter__(self) -> LocalRegistry:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)  # it waits for the process to exit

    def _write_htpasswd(self) -> Path | None:
        if not self.users:
            return None
        path = self.run_dir / HTPASSWD_FILE
        lines = "".join(f"{user}:{bcrypt_hash(password)}\n" for user, password in self.users.items())
        # Hashes only, but offline guessing needs no more: readable by the registry's user alone.
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(lines)
        return path

    def _config(self, htpasswd: Path | None) -> dict:
        config: dict = {
            "version": 0.1,
            # The access log would repeat each request; the info level already logs each as "response completed".
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            # Signs upload session state; a fixed one per start keeps the registry from warning about it.
            "http": {"addr": self.address, "secret": secrets.token_hex(16)},
        }
        if htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "raftswarm", "path": str(htpasswd)}}
        return config

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while time.monotonic() < deadline:
                if self.process is None or not self.process.running():
                    raise RegistryStartError(f"docker-registry exited: {log_tail(self.log_path)}")
                try:
                    # 200, or 401 with auth: either way the registry is serving.
                    async with session.get(f"{self.url}/v2/") as response:
                        if response.status in (200, 401):
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(_POLL_INTERVAL)
        raise RegistryStartError(f"docker-registry did not answer on {self.url}/v2/: {log_tail(self.log_path)}")


async def spawn_detached(
    storage: Path,
    run_dir: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    users: Mapping[str, str] | None = None,
) -> int:
    """Start a registry that outlives this process (for `cluster up`), wait until it answers, and return its
    PID; `run_dir/registry.pid` records it for `stop_pid`."""
    registry = LocalRegistry(storage, run_dir, host=host, port=port, users=users)
    return await registry.start(detach=True)


def stop_pid(pidfile: Path) -> bool:
    """End the registry recorded in `pidfile` (SIGTERM, then SIGKILL) and remove the pidfile. Returns False
    if it is still running even then; a pidfile whose process is gone, or whose PID now belongs to another
    process, only gets removed."""
    process = NodeProcess.from_pidfile(pidfile)
    if process is not None and stop_all([process]):
        return False
    pidfile.unlink(missing_ok=True)
    return True
