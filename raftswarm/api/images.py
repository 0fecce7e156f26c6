"""Docker's image endpoints, served by every node (in a swarm or not, as dockerd serves them) from its image store
(`images.store`) and registry client (`images.registry`):

    GET    /images/json                ImageSummary list; ?filters: reference, dangling, label, before, since, until
    GET    /images/{name}/json         ImageInspect
    POST   /images/load                `docker load`: the body is a docker-archive or OCI-layout tarball
    POST   /images/create              ?fromImage[&tag]: `docker pull`; ?fromSrc=-[&repo&tag&changes]: `docker import`
    POST   /images/{name}/tag          ?repo&tag -> 201
    POST   /images/{name}/push         ?tag (none: every local tag of the repository)
    DELETE /images/{name}              ?force&noprune -> [{"Untagged"}, {"Deleted"}]
    GET    /images/{name}/get          `docker save` of one image, and GET /images/get?names=... of several
    GET    /distribution/{name}/json   the registry's descriptor of a reference (`service create` pins digests by it)

Image names hold slashes and colons, so they are matched as `{name:.+}`; the fixed paths (/images/json, /load,
/create, /get) are registered first and win, as in dockerd's router.

Pull, push, load and import answer as dockerd does: a stream of JSON messages (`application/json`, one object a
line, each written as it comes). A failure before anything was written is an ordinary error response (so `docker
pull` of a missing tag gets dockerd's 404 "manifest ... not found: manifest unknown"); after that, it is a last
{"errorDetail": {"message"}, "error"} line in the 200 stream. `docker load` reports every failure that way.

Request bodies (tarballs of hundreds of megabytes) are streamed to a file in the store's scratch directory and
read from there in a thread; they are never held in memory whole, and the API's body size limit (meant for JSON)
does not apply to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import re
import shlex
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from aiohttp import web

from ..errors import RaftswarmError
from ..images import archive
from ..images.errors import DigestMismatch, ImageConflict, ImageError, ImageNotFound, InvalidImage
from ..images.manifest import PLATFORM_ARCHITECTURE, PLATFORM_OS
from ..objects.reference import InvalidReference, parse
from ..images.registry import Progress, RegistryError
from ..images.store import Image, ImageStore
from ..errors import ControlError
from .backend import Node
from .logs import _bool
from .services import _check_filters, _labels_match
from .swarm import query_filters
from ..objects.registryauth import AUTH_HEADER, decode_auth

log = logging.getLogger(__name__)

JSON_STREAM = "application/json"
"""Exactly this: docker's client treats a load answer as a message stream only then (no "; charset=...")."""

MESSAGE_END = b"\r\n"
"""dockerd's streamformatter ends every JSON message so."""

UPLOAD_CHUNK = 1 << 20
"""Body bytes gathered before each write to the upload file: one thread hop per MiB keeps the event loop free
without a hop per network read (tens of kilobytes)."""

DOWNLOAD_CHUNK = 1 << 20
"""Bytes per read of a saved tarball as it is sent."""

GRAPH_DRIVER = "overlay2"
"""What dockerd on Linux reports, and what the store does: layers as overlay lower directories."""

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Go's zero time.Time, which dockerd reports as Metadata.LastTagTime; the store keeps no tag times."""

IMAGE_FILTERS = ("before", "dangling", "label", "reference", "since", "until")
"""dockerd's acceptedImageFilterTags; any other filter is a 400."""

LEGACY_CONFIG_FIELDS: dict[str, Any] = {
    "Cmd": None, "Entrypoint": None, "Env": None, "Labels": None, "OnBuild": None, "User": "", "Volumes": None,
    "WorkingDir": "",
}
"""Image config fields API 1.50 and 1.51 always show, set or not (moby's legacyConfigFields["v1.50-v1.51"]);
this node speaks 1.50."""

IMPORT_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME", "WORKDIR")
"""The Dockerfile instructions `docker import --change` applies here: the ones that set image config fields the
store records (dockerd also takes HEALTHCHECK, ONBUILD and STOPSIGNAL)."""

_EXPOSE = re.compile(r"^(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$")

_END = object()
"""Marks the end of a progress queue."""


# -- errors --------------------------------------------------------------------------------------------------


def error_status(exc: Exception) -> int:
    """The HTTP status dockerd answers an image or registry error with."""
    if isinstance(exc, ControlError):
        return exc.status
    if isinstance(exc, ImageNotFound):
        return 404
    if isinstance(exc, ImageConflict):
        return 409
    if isinstance(exc, RegistryError):
        return _registry_status(str(exc))
    if isinstance(exc, (InvalidReference, InvalidImage, DigestMismatch, ImageError)):
        # The store raises a plain ImageError for requests it cannot do as asked (a tag with a digest, ...).
        return 400
    return 500


def _registry_status(message: str) -> int:
    # dockerd maps the registry's error codes: MANIFEST_UNKNOWN, NAME_UNKNOWN and DENIED become "not found"
    # (404), UNAUTHORIZED 401; the registry client keeps Docker's words for them, so the words tell.
    if "manifest unknown" in message or "pull access denied" in message:
        return 404
    if "unauthorized" in message or "authentication required" in message:
        return 401
    return 500


def _client_error(exc: RaftswarmError) -> ControlError:
    return exc if isinstance(exc, ControlError) else ControlError(str(exc), error_status(exc))


async def _store_call(function: Callable[..., Any], *args: Any) -> Any:
    """A store method in a thread (they do disk I/O), its image errors as the API's."""
    try:
        return await asyncio.to_thread(function, *args)
    except (ImageError, InvalidReference) as exc:
        raise _client_error(exc) from None


# -- request parameters --------------------------------------------------------------------------------------


def _auth(request: web.Request) -> dict[str, str] | None:
    return decode_auth(request.headers.get(AUTH_HEADER, ""))


def _check_platform(text: str) -> None:
    """The `platform` parameter (os[/arch[/variant]]) may only name the platform this node runs."""
    if not text:
        return
    parts = text.lower().split("/")
    if parts[0] != PLATFORM_OS or (len(parts) > 1 and parts[1] not in (PLATFORM_ARCHITECTURE, "x86_64")):
        raise ControlError(f"this node runs {PLATFORM_OS}/{PLATFORM_ARCHITECTURE} images only, not {text}", 400)


def _has_tag_or_digest(text: str) -> bool:
    return "@" in text or ":" in text.rsplit("/", 1)[-1]


def pull_reference(from_image: str, tag: str) -> str:
    """dockerd's postImagesCreate: `fromImage` (a trailing ":" ignored) with `tag`, which may be a digest."""
    name = from_image.removesuffix(":")
    if tag:
        base = parse(name).name
        return f"{base}@{tag}" if ":" in tag else f"{base}:{tag}"
    if not _has_tag_or_digest(name):
        raise ControlError(
            f"pulling every tag of {name} is not supported by this node: name a tag (docker pull {name}:TAG)", 400
        )
    return name


def repo_tag_reference(repo: str, tag: str) -> str | None:
    """dockerd's httputils.RepoTagReference: `repo` with `tag` (default: its own, else "latest"); None for no repo."""
    if not repo:
        return None
    ref = parse(repo)
    if ref.digest:
        raise ControlError("cannot import digest reference", 400)
    return f"{ref.name}:{tag or ref.tag}"


# -- docker import --change ---------------------------------------------------------------------------------


def import_changes(lines: Sequence[str]) -> dict[str, Any]:
    """The image config of `docker import --change` lines (Dockerfile instructions, as dockerd's
    BuildFromConfig applies them to an empty config): CMD and ENTRYPOINT (JSON or shell form), ENV and LABEL
    (key=value ..., or the legacy `key value`), EXPOSE, USER, VOLUME, WORKDIR. Anything else is a 400."""
    config: dict[str, Any] = {}
    for line in "\n".join(lines).splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        word, *arguments = text.split(None, 1)
        instruction, rest = word.upper(), "".join(arguments)
        if instruction not in IMPORT_INSTRUCTIONS:
            raise ControlError(
                f"{word.lower()} is not a valid change command here: import applies {', '.join(IMPORT_INSTRUCTIONS)}",
                400,
            )
        if not rest:
            raise ControlError(f"{instruction} requires at least one argument", 400)
        if instruction in ("CMD", "ENTRYPOINT"):
            config["Cmd" if instruction == "CMD" else "Entrypoint"] = _command(rest)
        elif instruction == "ENV":
            pairs = _pairs(rest, "ENV")
            kept = [entry for entry in config.get("Env", []) if entry.partition("=")[0] not in pairs]
            config["Env"] = kept + [f"{key}={value}" for key, value in pairs.items()]
        elif instruction == "LABEL":
            config["Labels"] = {**config.get("Labels", {}), **_pairs(rest, "LABEL")}
        elif instruction == "EXPOSE":
            config["ExposedPorts"] = {**config.get("ExposedPorts", {}), **{port: {} for port in _ports(rest)}}
        elif instruction == "USER":
            config["User"] = rest
        elif instruction == "VOLUME":
            config["Volumes"] = {**config.get("Volumes", {}), **{path: {} for path in _words(rest)}}
        else:
            config["WorkingDir"] = posixpath.normpath(posixpath.join(config.get("WorkingDir", "/"), rest))
    return config


def _json_list(text: str) -> list[str] | None:
    """Dockerfile's exec form: a JSON array of strings; None if `text` is not one (then it is shell form)."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(item, str) for item in value) else None


def _command(text: str) -> list[str]:
    exec_form = _json_list(text)
    return exec_form if exec_form is not None else ["/bin/sh", "-c", text]


def _words(text: str) -> list[str]:
    exec_form = _json_list(text)
    return exec_form if exec_form is not None else text.split()


def _pairs(text: str, instruction: str) -> dict[str, str]:
    first, *rest = text.split(None, 1)
    if "=" not in first:  # the legacy form: one key, and the rest of the line is its value
        return {first: "".join(rest)}
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ControlError(f"{instruction} {text}: {exc}", 400) from None
    pairs = {}
    for word in words:
        key, has_value, value = word.partition("=")
        if not has_value or not key:
            raise ControlError(f"Syntax error - can't find = in {word!r}. Must be of the form: name=value", 400)
        pairs[key] = value
    return pairs


def _ports(text: str) -> list[str]:
    ports = []
    for word in text.split():
        match = _EXPOSE.match(word.lower())
        if match is None:
            raise ControlError(f"invalid port in EXPOSE: {word!r} (expected PORT[-END][/tcp|udp|sctp])", 400)
        start, end, protocol = int(match[1]), int(match[2] or match[1]), match[3] or "tcp"
        if not 0 < start <= end <= 65535:
            raise ControlError(f"invalid port range in EXPOSE: {word!r}", 400)
        ports.extend(f"{port}/{protocol}" for port in range(start, end + 1))
    return ports


# -- shapes --------------------------------------------------------------------------------------------------


def _created(image: Image) -> datetime | None:
    match = _RFC3339.match(image.created or "")
    if match is None:
        return None
    return datetime.fromisoformat(match[1] + ("+00:00" if match[2] == "Z" else match[2]))


def _unix_seconds(image: Image) -> int:
    created = _created(image)
    return int(created.timestamp()) if created is not None else 0


def _labels(image: Image) -> dict[str, str]:
    return dict((image.config.get("config") or {}).get("Labels") or {})


def image_summary(
    image: Image, tags: Sequence[str] | None = None, digests: Sequence[str] | None = None
) -> dict[str, Any]:
    """Docker's ImageSummary (`docker images`), with the given tags and repo digests (a reference filter keeps
    only those it matched), else all of the image's."""
    return {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": list(image.repo_tags if tags is None else tags),
        "RepoDigests": list(image.repo_digests if digests is None else digests),
        "Created": _unix_seconds(image),
        "Size": image.size,
        "SharedSize": -1,
        "Labels": _labels(image),
        "Containers": -1,
    }


def image_inspect(store: ImageStore, image: Image) -> dict[str, Any]:
    """Docker's ImageInspect at API 1.50 (`docker image inspect`)."""
    config = image.config
    shown: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": list(image.repo_tags),
        "RepoDigests": list(image.repo_digests),
        "Parent": "",
        "Comment": config.get("comment", ""),
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": {**LEGACY_CONFIG_FIELDS, **(config.get("config") or {})},
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        "Size": image.size,
        "GraphDriver": {"Name": GRAPH_DRIVER, "Data": _graph_data(store, image)},
        "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]},
        "Metadata": {"LastTagTime": ZERO_TIME},
    }
    if image.created:
        shown["Created"] = image.created
    for key, field in (("variant", "Variant"), ("os.version", "OsVersion")):
        if config.get(key):
            shown[field] = config[key]
    return shown


def _graph_data(store: ImageStore, image: Image) -> dict[str, str]:
    """overlay2's Data for an image as dockerd shows it: the top layer is UpperDir, the others LowerDir (top
    first); paths are where the store unpacked them (layers/sha256/<diff_id hex>/diff)."""
    layers = store.root / "layers" / "sha256"
    dirs = [str(layers / layer.diff_id.removeprefix("sha256:") / "diff") for layer in reversed(image.layers)]
    if not dirs:
        return {}
    data = {"UpperDir": dirs[0]}
    if len(dirs) > 1:
        data["LowerDir"] = ":".join(dirs[1:])
    return data


# -- the images list's filters -------------------------------------------------------------------------------


def path_match(pattern: str, name: str) -> bool:
    """Go's path.Match, which Docker's reference filter uses: `*` and `?` do not match "/", `[...]` is a class
    (`[^...]` negated, `a-z` ranges), `\\` escapes."""
    regex, index = "", 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "[":
            index, members = _char_class(pattern, index + 1)
            regex += members
        else:
            if char == "\\" and index + 1 < len(pattern):
                index += 1
            regex += re.escape(pattern[index])
        index += 1
    return re.fullmatch(regex, name) is not None


def _char_class(pattern: str, index: int) -> tuple[int, str]:
    """The class starting at `index` (just after "["): the index of its "]" and the class as a regex."""
    negated = pattern[index : index + 1] == "^"
    index += negated
    members = ""
    while True:
        if index < len(pattern) and pattern[index] == "]" and members:
            return index, ("[^" if negated else "[") + members + "]"
        low, index = _class_char(pattern, index)
        members += re.escape(low)
        if pattern[index : index + 1] == "-":
            high, index = _class_char(pattern, index + 1)
            members += "-" + re.escape(high)


def _class_char(pattern: str, index: int) -> tuple[str, int]:
    """Go's getEsc: one (possibly escaped) character of a class, and the index after it."""
    if index < len(pattern) and pattern[index] == "\\":
        index += 1
    elif index < len(pattern) and pattern[index] in "-]":
        index = len(pattern)
    if index >= len(pattern):
        raise ControlError(f"invalid reference filter {pattern!r}: syntax error in pattern", 400)
    return pattern[index], index + 1


def _familiar_matches(patterns: list[str], familiar: str) -> bool:
    """Docker's reference.FamiliarMatch: the pattern against "name:tag" (or name@digest), then the name alone."""
    name = parse(familiar).familiar_name
    return any(path_match(pattern, familiar) or path_match(pattern, name) for pattern in patterns)


def _timestamp(value: str, now: datetime) -> datetime:
    """Docker's timetypes.GetTimestamp: unix seconds, an RFC 3339 time, or a Go duration back from now."""
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        pass
    if _DURATION.match(value):
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value))
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ControlError(
            f"invalid until filter {value!r}: use unix seconds, an RFC 3339 time or a duration", 400
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _dangling(values: list[str]) -> bool:
    wanted = {value.lower() for value in values}
    if not wanted <= {"true", "1", "false", "0"} or len(wanted & {"true", "1"}) and len(wanted & {"false", "0"}):
        raise ControlError(f"invalid filter 'dangling={values[0]}'", 400)
    return bool(wanted & {"true", "1"})


def filter_images(
    images: list[Image], filters: dict[str, list[str]], resolve: Callable[[str], Image]
) -> list[dict[str, Any]]:
    """dockerd's image list filtering; `resolve` finds the images that before= and since= name."""
    _check_filters(filters, IMAGE_FILTERS)
    now = datetime.now(UTC)
    before = [_created(resolve(value)) for value in filters.get("before", [])]
    since = [_created(resolve(value)) for value in filters.get("since", [])]
    until = [_timestamp(value, now) for value in filters.get("until", [])]
    dangling = _dangling(filters["dangling"]) if "dangling" in filters else None
    shown = []
    for image in images:
        created = _created(image)
        if "label" in filters and not _labels_match(_labels(image), filters["label"]):
            continue
        if created is not None and (
            any(limit is not None and created >= limit for limit in before)
            or any(limit is not None and created <= limit for limit in since)
            or any(created > limit for limit in until)
        ):
            continue
        tags, digests = list(image.repo_tags), list(image.repo_digests)
        if "reference" in filters:
            tags = [t for t in tags if _familiar_matches(filters["reference"], t)]
            digests = [d for d in digests if _familiar_matches(filters["reference"], d)]
            if not tags and not digests:
                continue
        if dangling is True and tags:
            continue
        if dangling is False and not (tags or digests):
            continue
        shown.append(image_summary(image, tags, digests))
    return shown


# -- streams -------------------------------------------------------------------------------------------------


class ProgressStream:
    """Docker's JSON message stream for one request. The response starts with the first message `hold` does
    not hold back, so a failure before then can still be an error status, as dockerd's (which writes nothing
    before it has something to say)."""

    def __init__(self, request: web.Request, hold: Callable[[dict[str, Any]], bool] = lambda message: False) -> None:
        self._request = request
        self._hold = hold
        self._held: list[dict[str, Any]] = []
        self._response: web.StreamResponse | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if self._response is None and self._hold(message):
            self._held.append(message)
        else:
            await self._write([message])

    async def finish(self) -> web.StreamResponse:
        """End the stream (with what was held back, if nothing else came) and return the response."""
        response = await self._write([])
        await response.write_eof()
        return response

    async def fail(self, exc: Exception, *, in_stream: bool = False) -> web.StreamResponse:
        """End with `exc`: an error response if nothing was sent yet (unless `in_stream`), else dockerd's last
        errorDetail line."""
        if isinstance(exc, RaftswarmError):
            if self._response is None and not in_stream:
                raise _client_error(exc) from exc
            message = str(exc)
        else:
            # A bug of this node, after the 200 went out: the client still gets a message, the log the traceback.
            log.error("%s %s failed", self._request.method, self._request.path, exc_info=exc)
            message = f"internal error ({type(exc).__name__}); the node logged the details"
        self._held = []
        await self._write([{"errorDetail": {"message": message}, "error": message}])
        return await self.finish()

    async def _write(self, messages: list[dict[str, Any]]) -> web.StreamResponse:
        if self._response is None:
            self._response = web.StreamResponse(headers={"Content-Type": JSON_STREAM})
            await self._response.prepare(self._request)
        messages, self._held = [*self._held, *messages], []
        if messages:
            lines = (json.dumps(message, separators=(",", ":")).encode() + MESSAGE_END for message in messages)
            await self._response.write(b"".join(lines))
        return self._response


async def relay(stream: ProgressStream, work: Callable[[Progress], Awaitable[Any]]) -> Any:
    """Run `work(progress)`, sending each message it reports to `stream` as it comes; returns its result. The
    work is cancelled if sending fails (the client went away)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def produce() -> Any:
        try:
            return await work(queue.put_nowait)
        finally:
            queue.put_nowait(_END)

    task = asyncio.create_task(produce())
    try:
        while (message := await queue.get()) is not _END:
            await stream.send(message)
        return await task
    finally:
        if not task.done():
            task.cancel()
            # Sending failed (or this handler was cancelled): that error is the one to report, not the work's.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# -- routes --------------------------------------------------------------------------------------------------


def _is_pull_opening(message: dict[str, Any]) -> bool:
    """The registry client says "Pulling from <repo>" before it has the manifest; dockerd says it after, so a
    missing manifest is an error status there. Held back until the pull shows more."""
    return str(message.get("status", "")).startswith("Pulling from ")


class ImageRoutes:
    """The image endpoints of one node daemon (`daemon.images`, `daemon.registry`)."""

    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon
        self._handlers: set[asyncio.Task[Any]] = set()

    def routes(self) -> list[web.RouteDef]:
        # Fixed paths before the {name:.+} patterns, which would match them too.
        return [
            web.get("/images/json", self.list_images),
            web.get("/images/get", self.save),
            web.post("/images/load", self.load),
            web.post("/images/create", self.create),
            web.get("/images/{name:.+}/get", self.save),
            web.get("/images/{name:.+}/json", self.inspect),
            web.post("/images/{name:.+}/tag", self.tag),
            web.post("/images/{name:.+}/push", self.push),
            web.delete("/images/{name:.+}", self.remove),
            web.get("/distribution/{name:.+}/json", self.distribution),
        ]

    async def shutdown(self, app: web.Application) -> None:
        """The server is closing: end the pulls, pushes, loads and saves in flight instead of waiting for them."""
        for task in list(self._handlers):
            task.cancel()

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            yield
        finally:
            self._handlers.discard(task)

    @property
    def _store(self) -> ImageStore:
        return self.daemon.images

    # -- queries -------------------------------------------------------------------------------------------

    async def list_images(self, request: web.Request) -> web.Response:
        filters = query_filters(request)
        images = await _store_call(self._store.images)
        shown = await _store_call(filter_images, images, filters, self._store.resolve)
        return web.json_response(shown)

    async def inspect(self, request: web.Request) -> web.Response:
        image = await _store_call(self._store.resolve, request.match_info["name"])
        return web.json_response(image_inspect(self._store, image))

    async def distribution(self, request: web.Request) -> web.Response:
        try:
            found = await self.daemon.registry.distribution(request.match_info["name"], _auth(request))
        except (RegistryError, ImageError, InvalidReference) as exc:
            raise _client_error(exc) from None
        return web.json_response(found)

    # -- changes -------------------------------------------------------------------------------------------

    async def tag(self, request: web.Request) -> web.Response:
        repo, tag = request.query.get("repo", ""), request.query.get("tag", "")
        try:
            target = repo_tag_reference(repo, tag)
        except InvalidReference as exc:
            raise ControlError(str(exc), 400) from None
        if target is None:
            raise ControlError("repository name must have at least one component: give repo=...", 400)
        if parse(target).familiar_name == "sha256":
            raise ControlError("refusing to create an ambiguous tag using digest algorithm as name", 400)
        await _store_call(self._store.tag, request.match_info["name"], target)
        return web.Response(status=201)

    async def remove(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not name.strip():
            raise ControlError("image name cannot be blank", 400)
        records = await _store_call(self._store.remove, name, _bool(request, "force"), not _bool(request, "noprune"))
        return web.json_response(records)

    async def save(self, request: web.Request) -> web.StreamResponse:
        names = [request.match_info["name"]] if "name" in request.match_info else request.query.getall("names", [])
        images: dict[str, Image] = {}
        for name in names:
            image = await _store_call(self._store.resolve, name)
            images.setdefault(image.id, image)
        with self._tracked(), self._scratch_file("save-") as tarball:
            await asyncio.to_thread(archive.save, self._store, list(images.values()), tarball)
            tarball.seek(0)
            response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
            await response.prepare(request)
            while chunk := await asyncio.to_thread(tarball.read, DOWNLOAD_CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response

    async def load(self, request: web.Request) -> web.StreamResponse:
        # ?quiet only turns off per-layer progress in dockerd; loading here reports none.
        stream = ProgressStream(request)
        with self._tracked(), self._scratch_file("load-") as tarball:
            await self._receive_body(request, tarball)
            try:
                lines = await asyncio.to_thread(archive.load, self._store, tarball)
            except Exception as exc:
                return await stream.fail(exc, in_stream=True)  # dockerd answers every load failure so
        for line in lines:
            await stream.send({"stream": line + "\n"})
        return await stream.finish()

    async def create(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        _check_platform(query.get("platform", ""))
        if query.get("fromImage"):
            return await self._pull(request)
        if "fromSrc" in query:
            return await self._import(request)
        raise ControlError("give fromImage (to pull an image) or fromSrc=- (to import a tarball)", 400)

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        try:
            reference = pull_reference(request.query["fromImage"], request.query.get("tag", ""))
        except InvalidReference as exc:
            raise ControlError(str(exc), 400) from None
        auth = _auth(request)
        stream = ProgressStream(request, hold=_is_pull_opening)
        with self._tracked():
            try:
                await relay(stream, lambda progress: self.daemon.registry.pull(reference, auth, progress))
            except Exception as exc:
                return await stream.fail(exc)
            return await stream.finish()

    async def _import(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if query["fromSrc"] != "-":
            raise ControlError("importing from a URL is not supported: send the tarball as the body (fromSrc=-)", 400)
        if query.get("message"):
            raise ControlError("import messages are not supported: imported images record 'Imported from -'", 400)
        try:
            reference = repo_tag_reference(query.get("repo", ""), query.get("tag", ""))
        except InvalidReference as exc:
            raise ControlError(str(exc), 400) from None
        changes = import_changes(query.getall("changes", []))
        stream = ProgressStream(request)
        with self._tracked(), self._scratch_file("import-") as tarball:
            await self._receive_body(request, tarball)
            try:
                image = await asyncio.to_thread(self._store.import_tarball, tarball, reference, changes)
            except Exception as exc:
                return await stream.fail(exc)
        await stream.send({"status": image.id})
        return await stream.finish()

    async def push(self, request: web.Request) -> web.StreamResponse:
        name, tag = request.match_info["name"], request.query.get("tag", "")
        try:
            ref = parse(name)
        except InvalidReference as exc:
            raise ControlError(str(exc), 400) from None
        if ref.digest:
            raise ControlError(f"cannot push a digest reference: {name}", 400)
        auth = _auth(request)
        stream = ProgressStream(request)
        with self._tracked():
            try:
                for reference in await self._push_references(name, tag, stream):
                    await relay(stream, lambda progress, r=reference: self.daemon.registry.push(r, auth, progress))
            except Exception as exc:
                return await stream.fail(exc)
            return await stream.finish()

    async def _push_references(self, name: str, tag: str, stream: ProgressStream) -> list[str]:
        """What `push` sends, as dockerd picks it: the tag asked for (the `tag` parameter, else the name's own),
        or every local tag of the repository; dockerd's words when there is none."""
        ref = parse(name)
        tags = [parse(t) for image in await _store_call(self._store.images) for t in image.repo_tags]
        local = sorted(str(t) for t in tags if t.name == ref.name)
        if not local:
            await stream.send({"status": f"The push refers to repository [{ref.name}]"})
            raise ImageNotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
        if not tag and not _has_tag_or_digest(name):
            return local
        wanted = f"{ref.name}:{tag or ref.tag}"
        if wanted not in local:
            await stream.send({"status": f"The push refers to repository [{ref.name}]"})
            raise ImageNotFound(f"tag does not exist: {parse(wanted).familiar}")
        return [wanted]

    # -- request bodies ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _scratch_file(self, prefix: str) -> Iterator[BinaryIO]:
        """A temporary file in the store's scratch directory (same filesystem, so nothing lands in /tmp's
        tmpfs), removed afterwards."""
        fd, path = tempfile.mkstemp(prefix=prefix, dir=self._store.work_dir())
        try:
            with os.fdopen(fd, "w+b") as file:
                yield file
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def _receive_body(self, request: web.Request, file: BinaryIO) -> None:
        """Stream the request body into `file` (then rewound), a MiB at a time, the writes in a thread."""
        pending = bytearray()
        async for chunk in request.content.iter_any():
            pending += chunk
            if len(pending) >= UPLOAD_CHUNK:
                await asyncio.to_thread(file.write, pending)
                pending.clear()
        await asyncio.to_thread(file.write, pending)
        await asyncio.to_thread(file.flush)
        file.seek(0)

