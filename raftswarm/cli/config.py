"""`raftswarm config ...`: create, ls, inspect, rm, as `docker config ...`.

A CONFIG argument goes to the node as given (ID, unique ID prefix or name). Unlike a secret, a config is
shown with its data: `inspect` prints it (base64 in the JSON, as text with --pretty).
"""

from __future__ import annotations

import base64
import os
import sys
import time
from typing import Any

import click

from ..api.client import ApiClient
from . import output
from .connection import api_command, inspect_each, remove_each
from .errors import CommandError
from .group import DockerGroup
from .listing import ListFormat, filter_option, format_option, quiet_option
from .options import check_labels, parse_filters, parse_labels
from .shapes import spec_of

CONFIG_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "CreatedAt": "CREATED",
    "UpdatedAt": "UPDATED",
    "Labels": "LABELS",
}
CONFIG_COLUMNS = ["ID", "Name", "CreatedAt", "UpdatedAt"]
READ_LIMIT = 2 * 1000 * 1024
"""docker's readConfigData reads at most twice SwarmKit's MaxConfigSize: enough for the node to refuse an
oversized config with its own message, without reading any file whole into memory."""


@click.group(cls=DockerGroup)
def config() -> None:
    """Manage Swarm configs."""


def read_config_data(source: str) -> bytes:
    """The config's content: a file, or standard input for `-` (docker's readConfigData, with its words)."""
    where = "STDIN" if source == "-" else source
    try:
        if source == "-":
            data = sys.stdin.buffer.read(READ_LIMIT)
        else:
            with open(source, "rb") as file:
                data = file.read(READ_LIMIT)
    except OSError as exc:
        # Go's wording: `open NAME: no such file or directory`, `read NAME: is a directory`.
        operation = "read" if isinstance(exc, IsADirectoryError) else "open"
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CommandError(
            f'Error reading content from "{source}": error reading from {where}: '
            f"{operation} {source}: {reason[:1].lower()}{reason[1:]}"
        ) from None
    if not data:
        raise CommandError(f'Error reading content from "{source}": error reading from {where}: data is empty')
    return data


@config.command()
@click.option("-l", "--label", multiple=True, callback=check_labels, metavar="list", help="Config labels")
@click.option("--template-driver", metavar="string", help="Template driver")
@click.argument("name", metavar="CONFIG")
@click.argument("source", metavar="file|-")
@api_command
async def create(api: ApiClient, label: tuple[str, ...], template_driver: str | None, name: str, source: str) -> None:
    """Create a config from a file or STDIN."""
    spec: dict[str, Any] = {
        "Name": name,
        "Labels": parse_labels(label),
        "Data": base64.b64encode(read_config_data(source)).decode("ascii"),
    }
    if template_driver:
        spec["Templating"] = {"Name": template_driver}
    response = await api.config_create(spec)
    click.echo(response["ID"])


def config_record(c: dict[str, Any], now: float) -> dict[str, Any]:
    """The fields docker's config formatter offers (`--format`)."""
    spec = spec_of(c)
    return {
        "ID": c["ID"],
        "Name": spec.get("Name", ""),
        "CreatedAt": _ago(c.get("CreatedAt"), now),
        "UpdatedAt": _ago(c.get("UpdatedAt"), now),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted((spec.get("Labels") or {}).items())),
    }


def _ago(stamp: str | None, now: float) -> str:
    when = output.parse_timestamp(stamp)
    return f"{output.human_duration(now - when.timestamp())} ago" if when else ""


@config.command("ls")
@filter_option()
@format_option()
@quiet_option()
@api_command
async def list_configs(api: ApiClient, filters: tuple[str, ...], format_spec: str | None, quiet: bool) -> None:
    """List configs."""
    fmt = ListFormat(format_spec, quiet)
    configs = await api.config_list(parse_filters(filters))
    configs.sort(key=lambda c: output.natural_key(spec_of(c).get("Name", "")))
    now = time.time()
    fmt.print([config_record(c, now) for c in configs], CONFIG_HEADERS, CONFIG_COLUMNS)


@config.command()
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format")
@click.argument("refs", nargs=-1, required=True, metavar="CONFIG [CONFIG...]")
@api_command
async def inspect(api: ApiClient, pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more configs."""
    if pretty:
        for ref in refs:
            click.echo(pretty_config(await api.config_inspect(ref)))
        return
    await inspect_each(refs, api.config_inspect)


def pretty_config(c: dict[str, Any]) -> str:
    """docker's configInspectPrettyTemplate, its data as text."""
    spec = spec_of(c)
    lines = [f"ID:\t\t\t{c['ID']}", f"Name:\t\t\t{spec.get('Name', '')}"]
    if spec.get("Labels"):
        lines.append("Labels:")
        lines += [f" - {k}" + (f"={v}" if v else "") for k, v in sorted(spec["Labels"].items())]
    lines += [
        f"Created at:            \t{output.pretty(output.go_time(c.get('CreatedAt')))}",
        f"Updated at:            \t{output.pretty(output.go_time(c.get('UpdatedAt')))}",
        "Data:",
        _text(spec.get("Data") or ""),
    ]
    return "\n".join(lines)


def _text(data: str) -> str:
    """Base64 data as the bytes it holds, shown as text (what Go's string([]byte) prints)."""
    try:
        return base64.b64decode(data).decode("utf-8", "replace")
    except ValueError:
        return data


@config.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="CONFIG [CONFIG...]")
@api_command
async def remove(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Remove one or more configs."""
    await remove_each(refs, api.config_remove)
