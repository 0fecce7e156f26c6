"""`service logs`: the log lines of a service's (or one task's) tasks, each prefixed as docker prefixes it with
`<service>.<slot>.<task>@<node>`."""

from __future__ import annotations

import time
from urllib.parse import unquote_plus

import click

from ...api.client import ApiClient, ApiError
from ...api.stdcopy import StreamFormatError
from .. import output
from ..connection import api_command
from ..errors import CommandError
from ..options import docker_timestamp
from ..shapes import node_name, replicated_mode

# The details the node attaches to every line (`details=1`), which docker's CLI always asks for and turns into
# the line's `<service>.<slot>.<task>@<node>` context.
NODE_ID_DETAIL = "com.docker.swarm.node.id"
SERVICE_ID_DETAIL = "com.docker.swarm.service.id"
TASK_ID_DETAIL = "com.docker.swarm.task.id"


def parse_log_details(text: str) -> dict[str, str]:
    """docker's logs.ParseLogDetails: `key=value,key=value`, each key and value URL-query-escaped."""
    if not text:
        raise CommandError("log details cannot be empty")
    details = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if not sep:
            raise CommandError("invalid details format")
        details[unquote_plus(key)] = unquote_plus(value)
    return details


def _go_map(details: dict[str, str]) -> str:
    return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(details.items())) + "]"


class LogLineFormatter:
    """docker's taskFormatter and logWriter: a frame from the node (`[time ]details line`) becomes
    `[time ]<service>.<slot>.<task id>@<node>    | [details ]line`. Names are looked up once each (nodes with
    one `GET /nodes`), and the slot of each task with `GET /tasks/{id}`; `padding` is the width of the
    widest slot number, so the `|` of single- and double-digit slots line up."""

    def __init__(
        self,
        api: ApiClient,
        *,
        padding: int,
        timestamps: bool,
        details: bool,
        resolve: bool,
        truncate: bool,
        task_ids: bool,
    ) -> None:
        self.api = api
        self.padding = padding
        self.timestamps = timestamps
        self.details = details
        self.resolve = resolve
        self.truncate = truncate
        self.task_ids = task_ids
        self._contexts: dict[tuple[str, str, str], str] = {}
        self._node_names: dict[str, str] | None = None
        self._service_names: dict[str, str] = {}

    async def format(self, frame: bytes) -> bytes:
        parts = frame.split(b" ", 2 if self.timestamps else 1)
        if len(parts) != (3 if self.timestamps else 2):
            raise CommandError(f"invalid context in log message: {frame.decode(errors='replace')}")
        details = parse_log_details(parts[-2].decode(errors="replace"))
        context = []
        for key, what in ((NODE_ID_DETAIL, "node id"), (SERVICE_ID_DETAIL, "service id"), (TASK_ID_DETAIL, "task id")):
            if key not in details:
                raise CommandError(f"missing {what} in details: {_go_map(details)}")
            context.append(details.pop(key))
        line = parts[0] + b" " if self.timestamps else b""
        line += (await self._context(*context)).encode() + b"    | "
        if self.details:
            line += ",".join(sorted(f"{k}={v}" for k, v in details.items())).encode() + b" "
        return line + parts[-1]

    async def _context(self, node_id: str, service_id: str, task_id: str) -> str:
        key = (node_id, service_id, task_id)
        if key not in self._contexts:
            task = await self.api.task_inspect(task_id)
            slot = task.get("Slot") or 0
            name = f"{await self._service_name(service_id)}.{slot}"
            if self.task_ids:
                name += "." + (task["ID"][: output.SHORT_ID_LENGTH] if self.truncate else task["ID"])
            padding = " " * max(self.padding - len(str(slot)), 0)
            self._contexts[key] = f"{name}@{await self._node_name(node_id)}{padding}"
        return self._contexts[key]

    async def _node_name(self, node_id: str) -> str:
        if not self.resolve:
            return node_id
        if self._node_names is None:
            try:
                nodes = await self.api.node_list()
            except ApiError:
                nodes = []  # docker's idresolver shows the ID of a node it cannot look up
            self._node_names = {n["ID"]: node_name(n) for n in nodes}
        return self._node_names.get(node_id, node_id)

    async def _service_name(self, service_id: str) -> str:
        if not self.resolve:
            return service_id
        if service_id not in self._service_names:
            try:
                self._service_names[service_id] = (await self.api.service_inspect(service_id))["Spec"]["Name"]
            except ApiError:
                self._service_names[service_id] = service_id
        return self._service_names[service_id]


@click.command()
@click.option("--details", is_flag=True, help="Show extra details provided to logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output")
@click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names in output")
@click.option("--no-task-ids", is_flag=True, help="Do not include task IDs in output")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output")
@click.option("--raw", is_flag=True, help="Do not neatly format logs")
@click.option(
    "--since",
    default="",
    metavar="string",
    help='Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)',
)
@click.option("-n", "--tail", default="all", metavar="string", help="Number of lines to show from the end of the logs")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@click.argument("ref", metavar="SERVICE|TASK")
@api_command
async def logs(
    api: ApiClient,
    details: bool,
    follow: bool,
    no_resolve: bool,
    no_task_ids: bool,
    no_trunc: bool,
    raw: bool,
    since: str,
    tail: str,
    timestamps: bool,
    ref: str,
) -> None:
    """Fetch the logs of a service or task."""
    try:
        since_value = docker_timestamp(since, time.time()) if since else ""
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    # As docker: details are always asked for unless --raw, since they name each line's task and node.
    options = {
        "follow": follow,
        "tail": tail,
        "since": since_value,
        "timestamps": timestamps,
        "details": details or not raw,
    }
    try:
        target = await api.service_inspect(ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
        try:
            task = await api.task_inspect(ref)
        except ApiError as task_exc:
            if task_exc.status == 404:
                raise CommandError(f"no such task or service: {ref}") from None
            raise
        frames = api.task_logs(ref, **options)
        padding = len(str(task.get("Slot") or 0))
    else:
        frames = api.service_logs(ref, **options)
        replicas = (replicated_mode(target["Spec"]) or {}).get("Replicas")
        padding = len(str(replicas)) if replicas is not None else 1
    formatter = LogLineFormatter(
        api,
        padding=padding,
        timestamps=timestamps,
        details=details,
        resolve=not no_resolve,
        truncate=not no_trunc,
        task_ids=not no_task_ids,
    )
    try:
        async for stream, frame in frames:
            if stream == "system":
                raise CommandError(f"error from daemon in stream: {frame.decode(errors='replace').rstrip()}")
            click.echo(frame if raw else await formatter.format(frame), nl=False, err=stream == "stderr")
    except StreamFormatError as exc:
        raise CommandError(f"error reading the log stream: {exc}") from None
