"""Pull and push images over the OCI distribution protocol, as dockerd does, by driving skopeo.

Why skopeo and not the protocol by hand: the distribution protocol is simple only on its happy path. Token
auth (Docker Hub's and every cloud registry's bearer realms, scopes per repository, OAuth2 identity tokens),
manifest lists and platform selection, schema1/schema2/OCI manifests and conversions, cross-repository blob
mounts, chunked uploads, redirects to blob storage and retries are what skopeo (containers/image, the library
behind podman and CRI-O) already does and keeps up with. Its OCI "shared blob directory" is the node store's
blob directory itself, so a layer the node already has is never fetched or sent twice, and every blob it
writes there is named by the digest skopeo computed while writing it.

A pull is two skopeo runs: `inspect --raw` learns the manifest (or index) exactly as the registry serves it,
whose digest is the repo digest Docker records (skopeo converts Docker manifests to OCI when it writes an OCI
layout, which changes their digest); then `copy` of that digest, so a tag moved in between cannot mix two
images, into an OCI layout whose blobs land in the shared directory. The store then verifies and records it.

dockerd's daemon options are the client's: `mirrors` (--registry-mirror: Docker Hub pulls try each in order,
then Docker Hub), `insecure` (--insecure-registry: host:port names or CIDRs reached over plain HTTP or without
TLS verification; 127.0.0.0/8 and localhost always are). `aliases` map a registry (or mirror) as users write
it to where this node reaches it: the local cluster's `localhost:5000` is at the bridge gateway inside a node's
network namespace. Images are recorded under the names as written.

Progress: skopeo reports each blob's progress ("Copying blob 5946221a1fcf done", "... skipped: already
exists") only to a terminal, so it runs on a pseudo-terminal whose lines become Docker's JSON messages.

Credentials (Docker's X-Registry-Auth) never touch a disk or an argument list: skopeo reads them as an auth
file from a memfd it inherits (`--authfile /proc/self/fd/N`), which lives in memory and is gone when both
processes close it. A bare registry bearer token (`registrytoken`) has no auth file field, so it is the one
credential passed as an argument (`--src-registry-token`); it is short-lived by design.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import pty
import re
import shutil
import struct
import tempfile
import termios
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import RaftswarmError
from .digest import of_bytes
from .errors import DigestMismatch, ImageNotFound
from . import manifest as manifests
from .manifest import DOCKER_SCHEMA1_TYPES, OCI_INDEX, OCI_MANIFEST, PLATFORM_ARCHITECTURE, PLATFORM_OS
from ..objects.reference import Reference, parse
from .store import Image, ImageStore

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
"""Receives Docker's JSON progress messages, one dict each, as `docker pull`/`docker push` stream them."""

SKOPEO_PACKAGE = "skopeo"
"""The Debian package that provides the `skopeo` command."""

DOCKER_HUB = "docker.io"

ALWAYS_INSECURE = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
"""dockerd's default --insecure-registry: loopback, where TLS would protect nothing."""

INSPECT_TIMEOUT = 120.0
"""A manifest is a few kilobytes; two minutes covers a slow token realm and registry, not a hung one."""

COPY_TIMEOUT = 3600.0
"""Layers can be gigabytes on a slow link; an hour is far beyond any working transfer of a service image."""

COPY_RETRIES = 3
"""skopeo's own retries of a failed transfer (with backoff), as dockerd retries each layer download."""

TERMINAL_ROWS = 24
TERMINAL_COLUMNS = 400
"""skopeo prints its per-blob progress only to a terminal, cut at its width: wide enough for
`Copying blob <12 hex> [<bar>] 1003.6KiB / 1003.6KiB` at any size."""

_LAYOUT_TAG = "image"
_ID_LENGTH = 12
"""Docker names a layer in progress messages by the first 12 hex digits of its digest, as skopeo does."""

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
_COPY_LINE = re.compile(r"^Copying (blob|config) ([0-9a-f]+) ?(.*)$")
_SIZES = re.compile(r"([\d.]+)\s*([KMGT]?i?B|b)\s*/\s*([\d.]+)\s*([KMGT]?i?B|b)")
_UNITS = {"b": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
# skopeo fails with a logrus line: `time=... level=fatal msg="<Go-quoted message>"`.
_FATAL = re.compile(r'level=fatal msg="((?:[^"\\]|\\.)*)"')
# The wrappers skopeo puts around the registry's own words.
_WRAPPERS = re.compile(
    r'^(?:Error parsing image name "[^"]*": |initializing source \S+: |reading manifest \S+ in \S+: '
    r"|pinging container registry \S+: )+"
)
# containers/image's words when a blob's content does not hash to its digest.
_DIGEST_MISMATCH = re.compile(r"Digest did not match, expected (sha256:[0-9a-f]{64})")


class RegistryError(RaftswarmError):
    """A pull, push or manifest lookup failed; the message is Docker's where Docker has words for it,
    otherwise the registry's own."""


@dataclass(frozen=True)
class Endpoint:
    """One registry a request can go to: where skopeo reaches it, and how."""

    host: str
    """host[:port] as this node reaches it (after aliases), or a mirror's."""
    repository: str
    tls_verify: bool
    mirror: bool = False

    def image(self, tag_or_digest: str) -> str:
        """skopeo's name of the image `tag_or_digest` (":tag" or "@sha256:...") here."""
        return f"docker://{self.host}/{self.repository}{tag_or_digest}"


class RegistryClient:
    """Pulls into and pushes from one node's `ImageStore`, with dockerd's registry options.

    Concurrent pulls of one reference (with the same credentials) share one transfer and its outcome."""

    def __init__(
        self,
        store: ImageStore,
        *,
        mirrors: Sequence[str] = (),
        insecure: Sequence[str] = (),
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.aliases = dict(aliases or {})
        self._insecure_names: set[str] = set()
        self._insecure_networks = list(ALWAYS_INSECURE)
        for entry in insecure:
            if "/" in entry:
                try:
                    self._insecure_networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise RegistryError(f"invalid insecure registry CIDR {entry!r}") from None
            else:
                self._insecure_names.add(entry)
        self._mirrors = [self._mirror(url) for url in mirrors]
        self._pulls: dict[tuple[str, str], _SharedPull] = {}

    async def pull(
        self, reference: str, auth: Mapping[str, str] | None = None, progress: Progress | None = None
    ) -> Image:
        """Pull `reference` (Docker's normalization: `busybox` is docker.io/library/busybox:latest) for this
        machine's platform into the store, recorded under the name as written (and its repo digest)."""
        ref = parse(reference)
        key = (str(ref), _fingerprint(auth))
        shared = self._pulls.get(key)
        if shared is None:
            shared = _SharedPull()
            shared.task = asyncio.create_task(self._pull(ref, auth, shared.emit))
            shared.task.add_done_callback(lambda task: self._pull_done(key, task))
            self._pulls[key] = shared
        if progress is not None:
            shared.listeners.append(progress)
        try:
            return await asyncio.shield(shared.task)
        finally:
            if progress is not None:
                shared.listeners.remove(progress)

    async def push(
        self, reference: str, auth: Mapping[str, str] | None = None, progress: Progress | None = None
    ) -> str:
        """Push the local image `reference` to its registry; returns the manifest digest the registry now has,
        which the image also gets as its repo digest."""
        ref = parse(reference)
        if ref.digest:
            raise RegistryError(f"cannot push a digest reference: {reference}")
        emit = progress or _ignore
        image = await asyncio.to_thread(self.store.resolve, str(ref))
        endpoint = self._endpoint(ref.domain, ref.path)
        tag = ref.tag or "latest"
        with self._work_dir() as work:
            layout = work / "layout"
            await asyncio.to_thread(self.store.write_oci_layout, image, layout, tag)
            manifest = self.store.blob_path(image.manifest_digest).read_bytes()
            emit({"status": f"The push refers to repository [{ref.name}]"})
            watcher = _PushProgress(emit, [layer["digest"] for layer in json.loads(manifest)["layers"]])
            digestfile = work / "digest"
            with _Credentials(auth, [endpoint.host]) as creds:
                await _skopeo(
                    [
                        "copy", "--remove-signatures", "--preserve-digests", f"--retry-times={COPY_RETRIES}",
                        "--src-shared-blob-dir", str(self.store.shared_blob_dir),
                        f"--dest-tls-verify={_bool(endpoint.tls_verify)}", *creds.args("--dest-"),
                        "--digestfile", str(digestfile),
                        f"oci:{layout}:{tag}", endpoint.image(f":{tag}"),
                    ],
                    ref, endpoint, creds.fds, COPY_TIMEOUT, on_line=watcher.line, pushing=True,
                )
            digest = digestfile.read_text().strip()
            # --preserve-digests: what the registry has is byte for byte the stored manifest.
            await asyncio.to_thread(self.store.add_from_oci_layout, layout, [f"{ref.name}@{digest}"])
        emit({"status": f"{tag}: digest: {digest} size: {len(manifest)}"})
        emit({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": len(manifest)}})
        return digest

    async def distribution(self, reference: str, auth: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Docker's `GET /distribution/{name}/json`: the registry's descriptor of `reference` (a manifest or an
        index) and the platforms it offers."""
        ref = parse(reference)
        endpoint, raw = await self._first_answer(ref, auth)
        manifest = _json(raw, ref)
        media_type = _media_type(manifest)
        digest = of_bytes(raw)
        if "manifests" in manifest:
            platforms = [_platform(m["platform"]) for m in manifest["manifests"] if m.get("platform")]
        else:
            config = await self._inspect(ref, endpoint, f"@{digest}", auth, config=True)
            platforms = [_platform(_json(config, ref))]
        return {"Descriptor": {"mediaType": media_type, "digest": digest, "size": len(raw)}, "Platforms": platforms}

    async def close(self) -> None:
        """Cancel the pulls in flight and wait for them (their skopeo processes are killed)."""
        tasks = [shared.task for shared in self._pulls.values() if shared.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pull(self, ref: Reference, auth: Mapping[str, str] | None, emit: Progress) -> Image:
        try:
            before = (await asyncio.to_thread(self.store.resolve, str(ref))).id
        except ImageNotFound:
            before = None
        emit({"status": f"Pulling from {ref.path}", "id": ref.tag or ref.digest})
        *mirrors, registry = self._endpoints(ref)
        for mirror in mirrors:
            try:
                digest, image = await self._pull_from(mirror, ref, auth, emit)
                break
            except RaftswarmError as e:
                # dockerd goes on to the next endpoint whatever went wrong with a mirror.
                log.info("pull of %s from mirror %s failed, trying the next: %s", ref, mirror.host, e)
        else:
            digest, image = await self._pull_from(registry, ref, auth, emit)
        emit({"status": f"Digest: {digest}"})
        verb = "Image is up to date for" if before == image.id else "Downloaded newer image for"
        emit({"status": f"Status: {verb} {ref.familiar}"})
        return image

    async def _pull_from(
        self, endpoint: Endpoint, ref: Reference, auth: Mapping[str, str] | None, emit: Progress
    ) -> tuple[str, Image]:
        """One attempt at `endpoint`: the manifest as it serves it, then its content; returns (the manifest's
        digest, the image as recorded)."""
        raw = await self._inspect(ref, endpoint, _tag_or_digest(ref), auth)
        digest = of_bytes(raw)
        if ref.digest and digest != ref.digest:
            raise RegistryError(f"manifest verification failed for digest {ref.digest}")
        references = [f"{ref.name}@{digest}"]
        if ref.tag and not ref.digest:
            references.insert(0, f"{ref.name}:{ref.tag}")
        manifest_raw, manifest_type = await self._platform_manifest(ref, endpoint, raw, auth)
        manifest_digest = of_bytes(manifest_raw)
        config_raw = await self._inspect(ref, endpoint, f"@{manifest_digest}", auth, config=True)
        watcher = _PullProgress(emit)
        with self._work_dir() as work, _Credentials(auth, [endpoint.host]) as creds:
            layout = work / "layout"
            await _skopeo(
                [
                    f"--override-os={PLATFORM_OS}", f"--override-arch={PLATFORM_ARCHITECTURE}",
                    "copy", "--remove-signatures", f"--retry-times={COPY_RETRIES}",
                    f"--src-tls-verify={_bool(endpoint.tls_verify)}", *creds.args("--src-"),
                    "--dest-shared-blob-dir", str(self.store.shared_blob_dir),
                    endpoint.image(f"@{manifest_digest}"), f"oci:{layout}:{_LAYOUT_TAG}",
                ],
                ref, endpoint, creds.fds, COPY_TIMEOUT, on_line=watcher.line,
            )
            await asyncio.to_thread(_point_at_registry_manifest, layout, manifest_raw, manifest_type, config_raw)
            image = await asyncio.to_thread(self.store.add_from_oci_layout, layout, references)
        watcher.extracted()
        return digest, image

    async def _platform_manifest(
        self, ref: Reference, endpoint: Endpoint, raw: bytes, auth: Mapping[str, str] | None
    ) -> tuple[bytes, str]:
        """The image manifest for linux/amd64 exactly as the registry serves it, and its media type: `raw`
        itself, or the entry of the index `raw` is."""
        document = _json(raw, ref)
        media_type = _media_type(document)
        if manifests.kind(media_type, document) != "index":
            return raw, media_type
        entry = manifests.select_platform(manifests.parse_index(document, str(ref)), str(ref))
        chosen = await self._inspect(ref, endpoint, f"@{entry.digest}", auth)
        if of_bytes(chosen) != entry.digest:
            raise RegistryError(f"manifest verification failed for digest {entry.digest}")
        return chosen, entry.media_type or _media_type(_json(chosen, ref))

    def _pull_done(self, key: tuple[str, str], task: asyncio.Task) -> None:
        del self._pulls[key]
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have been cancelled

    async def _first_answer(self, ref: Reference, auth: Mapping[str, str] | None) -> tuple[Endpoint, bytes]:
        """The raw manifest of `ref` from the first endpoint that serves it: for Docker Hub each mirror in
        turn, then Docker Hub itself."""
        *mirrors, registry = self._endpoints(ref)
        for mirror in mirrors:
            try:
                return mirror, await self._inspect(ref, mirror, _tag_or_digest(ref), auth)
            except RegistryError as e:
                log.info("%s: mirror %s failed, trying the next: %s", ref, mirror.host, e)
        return registry, await self._inspect(ref, registry, _tag_or_digest(ref), auth)

    async def _inspect(
        self,
        ref: Reference,
        endpoint: Endpoint,
        tag_or_digest: str,
        auth: Mapping[str, str] | None,
        config: bool = False,
    ) -> bytes:
        with _Credentials(auth, [endpoint.host]) as creds:
            return await _skopeo(
                [
                    "inspect", "--raw", *(["--config"] if config else []),
                    f"--tls-verify={_bool(endpoint.tls_verify)}", *creds.args("--"),
                    endpoint.image(tag_or_digest),
                ],
                ref, endpoint, creds.fds, INSPECT_TIMEOUT,
            )

    def _endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where to get `ref`, in order: for Docker Hub the mirrors first, as dockerd; last, the registry."""
        mirrors = [self._endpoint(host, ref.path, https, mirror=True) for host, https in self._mirrors]
        return (mirrors if ref.domain == DOCKER_HUB else []) + [self._endpoint(ref.domain, ref.path)]

    def _endpoint(self, name: str, repository: str, https: bool = True, mirror: bool = False) -> Endpoint:
        """The registry `name` (host[:port] as written) as this node reaches it."""
        host = self.aliases.get(name, name)
        # An alias says the two names are one registry: insecure under either name is insecure.
        insecure = self._is_insecure(name) or self._is_insecure(host)
        return Endpoint(host, repository, tls_verify=https and not insecure, mirror=mirror)

    def _mirror(self, url: str) -> tuple[str, bool]:
        """A --registry-mirror URL -> (host[:port], whether it is https)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise RegistryError(f"invalid mirror {url!r}: a mirror is http(s)://host[:port], without a path")
        return parts.netloc, parts.scheme == "https"

    def _is_insecure(self, host: str) -> bool:
        """dockerd's rule: the name as written is listed, or its address is in a listed CIDR (localhost is
        127.0.0.1; other names are not resolved)."""
        if host in self._insecure_names:
            return True
        hostname = _hostname(host)
        if hostname == "localhost":
            return True
        try:
            address = ipaddress.ip_address(hostname)
        except ValueError:
            return False
        return any(address in network for network in self._insecure_networks)

    @contextlib.contextmanager
    def _work_dir(self) -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(prefix="registry-", dir=self.store.work_dir()))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


class _SharedPull:
    """One pull in flight, and the progress listeners of everyone waiting for it."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.listeners: list[Progress] = []

    def emit(self, message: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(message)


class _Credentials:
    """skopeo options for one run's credentials, and the memfd that carries them (closed on exit)."""

    def __init__(self, auth: Mapping[str, str] | None, hosts: Iterable[str]) -> None:
        self.fds: tuple[int, ...] = ()
        self._options: list[tuple[str, str | None]] = [("no-creds", None)]
        if not auth:
            return
        if auth.get("registrytoken"):
            self._options = [("registry-token", auth["registrytoken"])]
            return
        entry: dict[str, str] = {}
        if auth.get("identitytoken"):
            # containers/image reads the user from "auth" and needs its colon; Docker's user for a token is "<token>".
            entry["auth"] = _b64(f"{auth.get('username') or '<token>'}:")
            entry["identitytoken"] = auth["identitytoken"]
        elif auth.get("username"):
            entry["auth"] = _b64(f"{auth['username']}:{auth.get('password', '')}")
        elif auth.get("auth"):
            entry["auth"] = auth["auth"]
        else:
            return
        fd = os.memfd_create("registry-auth")
        os.write(fd, json.dumps({"auths": {host: entry for host in hosts}}).encode())
        self.fds = (fd,)
        self._options = [("authfile", f"/proc/self/fd/{fd}")]

    def args(self, prefix: str) -> list[str]:
        """The options with `prefix` ("--", "--src-", "--dest-")."""
        return [f"{prefix}{name}" if value is None else f"{prefix}{name}={value}" for name, value in self._options]

    def __enter__(self) -> _Credentials:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds:
            os.close(fd)


class _PullProgress:
    """skopeo's terminal lines of a pull -> Docker's per-layer pull messages."""

    def __init__(self, emit: Progress) -> None:
        self._emit = emit
        self._states: dict[str, str] = {}

    def line(self, text: str) -> None:
        match = _COPY_LINE.match(text)
        if match is None or match.group(1) != "blob":
            return
        layer, state = match.group(2)[:_ID_LENGTH], match.group(3)
        if state.startswith("skipped"):
            self._set(layer, "Already exists")
            return
        detail = _progress_detail(state)
        if detail is None and state != "done":
            return  # skopeo's first word on every blob, before it knows whether the node has it
        if layer not in self._states:
            self._set(layer, "Pulling fs layer")
        if state == "done":
            self._set(layer, "Download complete")
        elif self._states[layer] != "Download complete":
            self._states[layer] = "Downloading"
            self._emit({"status": "Downloading", "progressDetail": detail, "id": layer})

    def extracted(self) -> None:
        """The store has the image: each downloaded layer is complete."""
        for layer, state in self._states.items():
            if state != "Already exists":
                self._emit({"status": "Pull complete", "progressDetail": {}, "id": layer})

    def _set(self, layer: str, status: str) -> None:
        if self._states.get(layer) != status:
            self._states[layer] = status
            self._emit({"status": status, "progressDetail": {}, "id": layer})


class _PushProgress:
    """skopeo's terminal lines of a push -> Docker's per-layer push messages."""

    def __init__(self, emit: Progress, layers: Sequence[str]) -> None:
        self._emit = emit
        self._states: dict[str, str] = {}
        # Docker lists the layers top first.
        for digest in reversed(layers):
            self._set(digest.removeprefix("sha256:")[:_ID_LENGTH], "Preparing")

    def line(self, text: str) -> None:
        match = _COPY_LINE.match(text)
        if match is None or match.group(1) != "blob":
            return
        layer, state = match.group(2)[:_ID_LENGTH], match.group(3)
        if state.startswith("skipped"):
            self._set(layer, "Layer already exists")
        elif state == "done":
            self._set(layer, "Pushed")
        elif (detail := _progress_detail(state)) is not None and self._states.get(layer) != "Pushed":
            self._states[layer] = "Pushing"
            self._emit({"status": "Pushing", "progressDetail": detail, "id": layer})

    def _set(self, layer: str, status: str) -> None:
        if self._states.get(layer) != status:
            self._states[layer] = status
            self._emit({"status": status, "progressDetail": {}, "id": layer})


class _Terminal:
    """A pseudo-terminal for skopeo's stdout (it reports per-blob progress only to a terminal), read on the
    event loop: its lines, without cursor movements, go to `on_line`; `ended` is done when skopeo has closed it."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._buffer = b""
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", TERMINAL_ROWS, TERMINAL_COLUMNS, 0, 0))
        os.set_blocking(self.master, False)
        self._loop = asyncio.get_running_loop()
        self.ended = self._loop.create_future()
        self._loop.add_reader(self.master, self._readable)

    def close_slave(self) -> None:
        """Once skopeo holds the terminal, only its exit may close it, so that ends the stream."""
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def close(self) -> None:
        self._loop.remove_reader(self.master)
        os.close(self.master)
        self.close_slave()

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the other side is closed
            data = b""
        if not data:
            self._loop.remove_reader(self.master)
            if not self.ended.done():
                self.ended.set_result(None)
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            text = _ANSI.sub(b"", line).decode(errors="replace").strip()
            if text:
                self._on_line(text)


async def _skopeo(
    args: list[str],
    ref: Reference,
    endpoint: Endpoint,
    pass_fds: tuple[int, ...],
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    pushing: bool = False,
) -> bytes:
    """Run skopeo; returns its stdout, or raises `RegistryError` from what it said on stderr. With `on_line`,
    its stdout is a terminal whose lines go to `on_line`. It is killed (by its PID) on timeout or cancellation."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise RegistryError(f"skopeo is not installed: install the Debian package {SKOPEO_PACKAGE} (./setup does)")
    # --insecure-policy: dockerd checks no signatures either. An empty registries.conf: where images come from
    # is this client's options (dockerd's flags), not the host's containers configuration.
    argv = [skopeo, "--insecure-policy", "--registries-conf=/dev/null", *args]
    terminal = _Terminal(on_line) if on_line is not None else None
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=terminal.slave if terminal is not None else asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=pass_fds,
            )
        finally:
            if terminal is not None:
                terminal.close_slave()
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await process.communicate()
                if terminal is not None:
                    await terminal.ended
        except TimeoutError:
            raise RegistryError(f"{ref.name}: no answer from {endpoint.host} within {timeout:.0f} s") from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        if terminal is not None:
            terminal.close()
    if process.returncode != 0:
        raise _error(stderr.decode(errors="replace"), ref, endpoint, pushing)
    return stdout or b""


def _error(stderr: str, ref: Reference, endpoint: Endpoint, pushing: bool) -> RaftswarmError:
    """skopeo's failure -> Docker's words for it where Docker has them, else the registry's own."""
    fatal = _FATAL.findall(stderr)
    if fatal:
        try:
            message = json.loads(f'"{fatal[-1]}"')
        except json.JSONDecodeError:
            message = fatal[-1]
    else:
        message = stderr.strip() or "skopeo failed without a message"
    message = _WRAPPERS.sub("", message.strip())
    if (mismatch := _DIGEST_MISMATCH.search(message)) is not None:
        return DigestMismatch(f"filesystem layer verification failed for digest {mismatch.group(1)}")
    denied = "unauthorized" in message or "denied" in message or "authentication required" in message
    unknown = "manifest unknown" in message or "name unknown" in message or "repository name not known" in message
    if pushing:
        return RegistryError(message[message.find("unauthorized") :] if "unauthorized" in message else message)
    if ref.domain == DOCKER_HUB and not endpoint.mirror and (denied or unknown):
        # Docker Hub answers "unauthorized" for a repository that does not exist, so as not to reveal private ones.
        return RegistryError(
            f"pull access denied for {ref.familiar_name}, repository does not exist or may require 'docker login': "
            "denied: requested access to the resource is denied"
        )
    if unknown:
        return RegistryError(f"manifest for {ref.familiar} not found: manifest unknown: manifest unknown")
    if "unauthorized" in message:
        return RegistryError(message[message.find("unauthorized") :])
    return RegistryError(message)


def _point_at_registry_manifest(layout: Path, manifest: bytes, media_type: str, config: bytes) -> None:
    """Make the layout skopeo wrote name the registry's own manifest and config instead of its OCI conversion
    of them. Converting a Docker manifest re-serializes the config, which changes its digest, and so the image
    ID: Docker's ID of an image is its config's digest as the registry has it. The layers are the same bytes
    either way (only their media type is renamed), and the store verifies all of it when it records the layout."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for data in (manifest, config):
        (blobs / of_bytes(data).removeprefix("sha256:")).write_bytes(data)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": of_bytes(manifest),
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": _LAYOUT_TAG},
        }],
    }
    (layout / "index.json").write_text(json.dumps(index))


def _hostname(host: str) -> str:
    """host[:port] -> host, for names, IPv4 addresses and [IPv6] addresses."""
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.partition(":")[0]


def _tag_or_digest(ref: Reference) -> str:
    return f"@{ref.digest}" if ref.digest else f":{ref.tag or 'latest'}"


def _fingerprint(auth: Mapping[str, str] | None) -> str:
    """Pulls with different credentials are not shared (one's refusal is not the other's); a digest, so the
    table of pulls in flight holds no password."""
    return hashlib.sha256(json.dumps(dict(auth or {}), sort_keys=True).encode()).hexdigest()


def _media_type(manifest: dict[str, Any]) -> str:
    """The manifest's own mediaType, else what its shape says (OCI lets it be left out)."""
    if manifest.get("mediaType"):
        return manifest["mediaType"]
    if manifest.get("schemaVersion") == 1:
        unsigned, signed = DOCKER_SCHEMA1_TYPES
        return signed if "signatures" in manifest else unsigned
    return OCI_INDEX if "manifests" in manifest else OCI_MANIFEST


def _platform(source: Mapping[str, Any]) -> dict[str, Any]:
    """Docker's Platform: architecture and os, with variant and os.version when given."""
    keys = ("architecture", "os", "os.version", "variant")
    return {key: source[key] for key in keys if source.get(key)}


def _progress_detail(state: str) -> dict[str, int] | None:
    match = _SIZES.search(state)
    if match is None:
        return None
    current = float(match.group(1)) * _UNITS[match.group(2)]
    total = float(match.group(3)) * _UNITS[match.group(4)]
    return {"current": int(current), "total": int(total)}


def _json(raw: bytes, ref: Reference) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{ref.name}: the registry answered with a manifest that is not JSON") from None
    if not isinstance(value, dict):
        raise RegistryError(f"{ref.name}: the registry answered with a manifest that is not a JSON object")
    return value


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _ignore(message: dict[str, Any]) -> None:
    """The progress receiver of a caller that wants none."""
