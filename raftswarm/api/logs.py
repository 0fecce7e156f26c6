"""Docker's `GET /services/{id}/logs` and `GET /tasks/{id}/logs`: the lines of a service's (or one task's)
tasks, collected from the nodes running them through the leader's log broker (`manager.logbroker`).

Query parameters are Docker's: `stdout`, `stderr` (at least one), `follow`, `tail` ("all" or N lines per
task), `since` (unix seconds[.nanoseconds]), `timestamps` and `details`. The answer is a multiplexed stream
(`api.stdcopy`), one frame per line, each line ending in a newline and prefixed as dockerd prefixes it:

    [<RFC 3339 time, nanoseconds>] [com.docker.swarm.node.id=..,com.docker.swarm.service.id=..,com.docker.swarm.task.id=..] <line>

Tasks not yet on a node are skipped. Without follow the stream ends once every node sent its lines; nodes that
could not (down, unreachable) are named in a final error frame ("Error grabbing logs: warning: incomplete log
stream. ..."), as dockerd writes it. A client that goes away cancels the subscription.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from aiohttp import web

from ..errors import ControlError, Unavailable
from .backend import Node
from ..objects.stored import StoredObject
from .stdcopy import MULTIPLEXED_STREAM, STREAM_IDS, SYSTEMERR, encode_frame

log = logging.getLogger(__name__)

READ_WAIT = 2.0
"""How long one read of the broker waits for lines; also how soon a client that went away is noticed while
no lines arrive."""
NODE_KEY = "com.docker.swarm.node.id"
SERVICE_KEY = "com.docker.swarm.service.id"
TASK_KEY = "com.docker.swarm.task.id"
_SINCE = re.compile(r"(-?\d+)(?:\.(\d{1,9}))?")


def _bool(request: web.Request, name: str) -> bool:
    """Docker's httputils.BoolValue: anything but "", 0, no, false and none is true."""
    return request.query.get(name, "").strip().lower() not in ("", "0", "no", "false", "none")


def parse_tail(text: str) -> int | None:
    """Lines per task: None for all."""
    if text in ("", "all"):
        return None
    try:
        tail = int(text)
    except ValueError:
        raise ControlError('tail value must be a positive integer or "all"') from None
    if tail < 0:
        raise ControlError("negative tail values not supported")
    return tail


def parse_since(text: str) -> float | None:
    """Docker's `since`: unix seconds, optionally with a fraction of up to nanoseconds."""
    if not text:
        return None
    match = _SINCE.fullmatch(text)
    if match is None:
        raise ControlError(f"could not parse since timestamp: {text!r} is not unix seconds[.nanoseconds]")
    seconds, fraction = match.groups()
    return int(seconds) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


@dataclass(frozen=True)
class LogOptions:
    stdout: bool
    stderr: bool
    follow: bool
    timestamps: bool
    details: bool
    tail: int | None
    since: float | None

    @classmethod
    def from_query(cls, request: web.Request) -> LogOptions:
        stdout, stderr = _bool(request, "stdout"), _bool(request, "stderr")
        if not (stdout or stderr):
            raise ControlError("Bad parameters: you must choose at least one stream")
        return cls(
            stdout=stdout,
            stderr=stderr,
            follow=_bool(request, "follow"),
            timestamps=_bool(request, "timestamps"),
            details=_bool(request, "details"),
            tail=parse_tail(request.query.get("tail", "")),
            since=parse_since(request.query.get("since", "")),
        )


def rfc3339_nano(when: float) -> str:
    """Go's RFC3339NanoFixed in UTC, which dockerd uses for log timestamps: always nine fraction digits."""
    seconds = math.floor(when)
    nanos = round((when - seconds) * 1e9)  # the fraction alone: `when * 1e9` would lose the low digits
    if nanos == 10**9:
        seconds, nanos = seconds + 1, 0
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def log_payload(message: dict[str, Any], service_id: str, options: LogOptions) -> bytes:
    """One broker message as dockerd writes a log line: [timestamp ][details ]line, ending in a newline."""
    line = message["line"] if message["line"].endswith(b"\n") else message["line"] + b"\n"
    prefix = ""
    if options.timestamps:
        prefix += rfc3339_nano(message["time"]) + " "
    if options.details:
        attrs = {NODE_KEY: message["node"], SERVICE_KEY: service_id, TASK_KEY: message["task"]}
        # Go's url.QueryEscape on keys and values, sorted by key (moby's stringAttrs).
        prefix += ",".join(f"{quote_plus(k, safe='')}={quote_plus(v, safe='')}" for k, v in sorted(attrs.items())) + " "
    return prefix.encode() + line


def incomplete_stream_error(errors: list[str]) -> bytes:
    """The error frame dockerd sends when some nodes' logs could not be had (SwarmKit's wording)."""
    reasons = ", ".join(errors)
    text = f"Error grabbing logs: warning: incomplete log stream. some logs could not be retrieved for the following reasons: {reasons}\n"
    return encode_frame(SYSTEMERR, text.encode())


class LogRoutes:
    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon
        self._closing = False

    async def shutdown(self, app: web.Application) -> None:
        """The server is closing: streams end after their current read instead of holding it open."""
        self._closing = True

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/services/{id}/logs", self.service_logs),
            web.get("/tasks/{id}/logs", self.task_logs),
        ]

    async def service_logs(self, request: web.Request) -> web.StreamResponse:
        options = LogOptions.from_query(request)
        api = self.daemon.services()
        service = await api.service(request.match_info["id"])
        tasks = [task for task in await api.tasks() if task.data.get("ServiceID") == service.id]
        return await self._stream(request, options, tasks)

    async def task_logs(self, request: web.Request) -> web.StreamResponse:
        options = LogOptions.from_query(request)
        api = self.daemon.services()
        return await self._stream(request, options, [await api.task(request.match_info["id"])])

    async def _stream(self, request: web.Request, options: LogOptions, tasks: list[StoredObject]) -> web.StreamResponse:
        by_node: dict[str, list[str]] = {}
        service_of: dict[str, str] = {}
        for task in tasks:
            node_id = task.data.get("NodeID")
            if node_id:
                by_node.setdefault(node_id, []).append(task.id)
                service_of[task.id] = task.data.get("ServiceID", "")
        wanted = {STREAM_IDS["stdout"]} if options.stdout else set()
        if options.stderr:
            wanted.add(STREAM_IDS["stderr"])
        broker = await self.daemon.leader_logs()
        subscription_id = None
        response = web.StreamResponse(headers={"Content-Type": MULTIPLEXED_STREAM})
        try:
            subscription_id = await broker.subscribe(by_node, options.tail, options.follow, options.since)
            await response.prepare(request)
            while True:
                answer = await broker.read(subscription_id, READ_WAIT)
                frames = [
                    encode_frame(STREAM_IDS[m["stream"]], log_payload(m, service_of.get(m["task"], ""), options))
                    for m in answer["messages"]
                    if STREAM_IDS[m["stream"]] in wanted
                ]
                if answer["done"] and answer.get("errors"):
                    frames.append(incomplete_stream_error(answer["errors"]))
                if frames:
                    await response.write(b"".join(frames))
                if answer["done"]:
                    subscription_id = None  # the broker forgot it already
                    break
                if request.transport is None or request.transport.is_closing():
                    return response  # the client went away
                if self._closing:
                    break
            await response.write_eof()
        except Unavailable as exc:
            if not response.prepared:
                raise
            # Mid-stream the status is sent already: say it in the stream, as dockerd does.
            with contextlib.suppress(ConnectionResetError):
                await response.write(encode_frame(SYSTEMERR, f"Error grabbing logs: {exc}\n".encode()))
                await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            if subscription_id is not None:
                await broker.cancel(subscription_id)
            await broker.close()
        return response
