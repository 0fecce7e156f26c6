"""Task lists as `node ps`, `service ps` and `stack ps` print them (docker's task.Print), and the flags the three
share."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from ..api.client import ApiClient, ApiError
from . import output
from .listing import ListFormat, filter_option, format_option, quiet_option
from .nodelookup import NodeResolver
from .shapes import container_spec, node_name, spec_of, status_of

TASK_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "Image": "IMAGE",
    "Node": "NODE",
    "DesiredState": "DESIRED STATE",
    "CurrentState": "CURRENT STATE",
    "Error": "ERROR",
    "Ports": "PORTS",
}

# docker/cli's task formatter cuts errors to this many columns unless --no-trunc.
TASK_ERROR_LENGTH = 30

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # sorts tasks without a creation time last


def task_list_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """docker's options of `node ps` and `service ps`: --filter, --format, --no-resolve, --no-trunc, --quiet."""
    for option in reversed(
        (
            filter_option(),
            format_option(),
            click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names"),
            click.option("--no-trunc", is_flag=True, help="Do not truncate output"),
            quiet_option("Only display task IDs"),
        )
    ):
        command = option(command)
    return command


async def print_tasks(
    api: ApiClient,
    resolver: NodeResolver,
    tasks: list[dict[str, Any]],
    fmt: ListFormat,
    *,
    resolve: bool,
    truncate: bool,
) -> None:
    """A task list: docker's table, or `--format`/`-q`."""
    records = await task_records(api, resolver, tasks, resolve=resolve, truncate=truncate, indent=fmt.is_table)
    fmt.print(records, TASK_HEADERS)


async def task_records(
    api: ApiClient, resolver: NodeResolver, tasks: list[dict[str, Any]], resolve: bool, truncate: bool, indent: bool
) -> list[dict[str, Any]]:
    """docker's task.Print: names `<service>.<slot>` (or `.<node ID>` for global services), sorted by name with
    the newest first, earlier tasks of a slot indented with ` \\_ `."""
    service_names = await _service_names(api, tasks) if resolve else {}
    node_names = {n["ID"]: node_name(n) for n in await resolver.nodes()} if resolve else {}
    named = []
    for task in tasks:
        service = service_names.get(task.get("ServiceID", ""), task.get("ServiceID", ""))
        slot = task.get("Slot") or task.get("NodeID", "")
        named.append((f"{service}.{slot}", task))
    named.sort(key=lambda item: output.parse_timestamp(item[1].get("CreatedAt")) or _EPOCH, reverse=True)
    named.sort(key=lambda item: output.natural_key(item[0]))
    records, previous = [], None
    now = time.time()
    for name, task in named:
        records.append(_task_record(task, name, previous == name and indent, node_names, truncate, now))
        previous = name
    return records


def _task_record(
    task: dict[str, Any], name: str, earlier: bool, node_names: dict[str, str], truncate: bool, now: float
) -> dict[str, Any]:
    status = status_of(task)
    image = container_spec(spec_of(task)).get("Image", "")
    if truncate:
        image = image.split("@", 1)[0].removeprefix("docker.io/").removeprefix("library/")
    stamp = output.parse_timestamp(status.get("Timestamp"))
    since = output.human_duration(now - stamp.timestamp()).lower() if stamp else ""
    error = status.get("Err", "")
    if truncate:
        error = output.ellipsis(error, TASK_ERROR_LENGTH)
    ports = (status.get("PortStatus") or {}).get("Ports") or []
    node_id = task.get("NodeID", "")
    return {
        "ID": task["ID"][: output.SHORT_ID_LENGTH] if truncate else task["ID"],
        "Name": (" \\_ " if earlier else "") + name,
        "Image": image,
        "Node": node_names.get(node_id, node_id),
        "DesiredState": output.pretty(task.get("DesiredState", "")),
        "CurrentState": f"{output.pretty(status.get('State', ''))} {since} ago"
        if since
        else output.pretty(status.get("State", "")),
        "Error": f'"{error}"' if error else "",
        "Ports": ",".join(
            f"*:{p.get('PublishedPort')}->{p.get('TargetPort')}/{p.get('Protocol', 'tcp')}" for p in ports
        ),
    }


async def _service_names(api: ApiClient, tasks: list[dict[str, Any]]) -> dict[str, str]:
    """Service ID -> name; an ID the node cannot resolve stays an ID, as with docker's idresolver."""
    names = {}
    for service_id in {t.get("ServiceID", "") for t in tasks} - {""}:
        try:
            names[service_id] = spec_of(await api.service_inspect(service_id)).get("Name") or service_id
        except ApiError:
            names[service_id] = service_id
    return names
