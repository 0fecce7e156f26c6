"""What `raftswarm secret` and `raftswarm config` share. Both manage a swarm object holding content that a task
gets as a file, and docker gives the two kinds the same `ls`, `inspect` and `rm`: `add_commands` makes them for a
kind described by a `FileObjectKind`. Each command module keeps what is its own: `create` (its flags, and how it
reads the content; `read_failure` gives the Go wording both readers use), the list columns only it has, and its
`inspect --pretty` layout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import click

from ..api.client import ApiClient
from . import output
from .connection import api_command, inspect_each, remove_each
from .listing import ListFormat, filter_option, format_option, quiet_option
from .options import check_labels, parse_filters
from .shapes import spec_of

Record = dict[str, Any]


@dataclass(frozen=True)
class FileObjectKind:
    """Secrets or configs, as the shared commands see them."""

    noun: str  # "secret" or "config": the help texts' word; upper-cased, the argument's metavar
    list: Callable[[ApiClient, dict[str, list[str]]], Awaitable[list[Record]]]
    inspect: Callable[[ApiClient, str], Awaitable[Record]]
    remove: Callable[[ApiClient, str], Awaitable[None]]
    pretty: Callable[[Record], str]  # `inspect --pretty`'s text for one object
    own_headers: dict[str, str] = field(default_factory=dict)  # the kind's own list fields, shown after NAME
    own_fields: Callable[[Record], dict[str, str]] = lambda obj: {}  # those fields' values for one object


def label_option(noun: str) -> Callable[[Any], Any]:
    """`create`'s `-l/--label key=value`, repeatable."""
    return click.option(
        "-l", "--label", multiple=True, callback=check_labels, metavar="list", help=f"{noun.capitalize()} labels"
    )


def read_failure(source: str, exc: OSError) -> str:
    """Go's words for content `create` could not read: `open NAME: no such file or directory`,
    `read NAME: is a directory`."""
    operation = "read" if isinstance(exc, IsADirectoryError) else "open"
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"{operation} {source}: {reason[:1].lower()}{reason[1:]}"


def label_lines(spec: Record) -> list[str]:
    """The `Labels:` block of docker's `inspect --pretty` templates: a line ` - key=value` a label (` - key` when
    the value is empty), nothing for an object without labels."""
    if not spec.get("Labels"):
        return []
    return ["Labels:"] + [f" - {k}" + (f"={v}" if v else "") for k, v in sorted(spec["Labels"].items())]


def add_commands(group: click.Group, kind: FileObjectKind) -> None:
    """Give `group` docker's `ls`, `inspect` and `rm` for objects of `kind`."""
    metavar = f"{kind.noun.upper()} [{kind.noun.upper()}...]"
    headers = {"ID": "ID", "Name": "NAME", **kind.own_headers, "CreatedAt": "CREATED", "UpdatedAt": "UPDATED"}
    columns = list(headers)  # a template may show the labels too, the default table does not
    headers["Labels"] = "LABELS"

    def record(obj: Record, now: float) -> Record:
        """The fields docker's formatter offers (`--format`)."""
        spec = spec_of(obj)
        return {
            "ID": obj["ID"],
            "Name": spec.get("Name", ""),
            **kind.own_fields(obj),
            "CreatedAt": _ago(obj.get("CreatedAt"), now),
            "UpdatedAt": _ago(obj.get("UpdatedAt"), now),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted((spec.get("Labels") or {}).items())),
        }

    @group.command("ls", help=f"List {kind.noun}s.")
    @filter_option()
    @format_option()
    @quiet_option()
    @api_command
    async def list_objects(api: ApiClient, filters: tuple[str, ...], format_spec: str | None, quiet: bool) -> None:
        fmt = ListFormat(format_spec, quiet)
        found = await kind.list(api, parse_filters(filters))
        found.sort(key=lambda obj: output.natural_key(spec_of(obj).get("Name", "")))
        now = time.time()
        fmt.print([record(obj, now) for obj in found], headers, columns)

    @group.command("inspect", help=f"Display detailed information on one or more {kind.noun}s.")
    @click.option("--pretty", is_flag=True, help="Print the information in a human friendly format")
    @click.argument("refs", nargs=-1, required=True, metavar=metavar)
    @api_command
    async def inspect(api: ApiClient, pretty: bool, refs: tuple[str, ...]) -> None:
        if pretty:
            for ref in refs:
                click.echo(kind.pretty(await kind.inspect(api, ref)))
            return
        await inspect_each(refs, lambda ref: kind.inspect(api, ref))

    @group.command("rm", help=f"Remove one or more {kind.noun}s.")
    @click.argument("refs", nargs=-1, required=True, metavar=metavar)
    @api_command
    async def remove(api: ApiClient, refs: tuple[str, ...]) -> None:
        await remove_each(refs, lambda ref: kind.remove(api, ref))


def _ago(stamp: str | None, now: float) -> str:
    when = output.parse_timestamp(stamp)
    return f"{output.human_duration(now - when.timestamp())} ago" if when else ""
