"""`raftswarm secret ...`: create, ls, inspect, rm.

A SECRET argument goes to the node as given (ID, unique ID prefix or name). The node never answers with a
secret's data, so neither `inspect` nor `ls` can show it.
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

SECRET_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "CreatedAt": "CREATED",
    "UpdatedAt": "UPDATED",
    "Labels": "LABELS",
}
SECRET_COLUMNS = ["ID", "Name", "Driver", "CreatedAt", "UpdatedAt"]


@click.group(cls=DockerGroup)
def secret() -> None:
    """Manage Swarm secrets."""


def read_secret_data(source: str) -> bytes:
    """The secret's content: a file, or standard input for `-` (docker's readSecretData)."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as file:
            return file.read()
    except OSError as exc:
        # Go's wording: `open NAME: no such file or directory`, `read NAME: is a directory`.
        operation = "read" if isinstance(exc, IsADirectoryError) else "open"
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CommandError(
            f'Error reading content from "{source}": {operation} {source}: {reason[:1].lower()}{reason[1:]}'
        ) from None


@secret.command()
@click.option("-l", "--label", multiple=True, callback=check_labels, metavar="list", help="Secret labels")
@click.argument("name", metavar="SECRET")
@click.argument("source", required=False, metavar="[file|-]")
@api_command
async def create(api: ApiClient, label: tuple[str, ...], name: str, source: str | None) -> None:
    """Create a secret from a file or STDIN as content."""
    spec: dict[str, Any] = {"Name": name, "Labels": parse_labels(label)}
    if source is not None:
        spec["Data"] = base64.b64encode(read_secret_data(source)).decode("ascii")
    response = await api.secret_create(spec)
    click.echo(response["ID"])


def secret_record(s: dict[str, Any], now: float) -> dict[str, Any]:
    """The fields docker's secret formatter offers (`--format`)."""
    spec = spec_of(s)
    return {
        "ID": s["ID"],
        "Name": spec.get("Name", ""),
        "Driver": (spec.get("Driver") or {}).get("Name", ""),
        "CreatedAt": _ago(s.get("CreatedAt"), now),
        "UpdatedAt": _ago(s.get("UpdatedAt"), now),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted((spec.get("Labels") or {}).items())),
    }


def _ago(stamp: str | None, now: float) -> str:
    when = output.parse_timestamp(stamp)
    return f"{output.human_duration(now - when.timestamp())} ago" if when else ""


@secret.command("ls")
@filter_option()
@format_option()
@quiet_option()
@api_command
async def list_secrets(api: ApiClient, filters: tuple[str, ...], format_spec: str | None, quiet: bool) -> None:
    """List secrets."""
    fmt = ListFormat(format_spec, quiet)
    secrets = await api.secret_list(parse_filters(filters))
    secrets.sort(key=lambda s: output.natural_key(spec_of(s).get("Name", "")))
    now = time.time()
    fmt.print([secret_record(s, now) for s in secrets], SECRET_HEADERS, SECRET_COLUMNS)


@secret.command()
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format")
@click.argument("refs", nargs=-1, required=True, metavar="SECRET [SECRET...]")
@api_command
async def inspect(api: ApiClient, pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more secrets."""
    if pretty:
        for ref in refs:
            click.echo(pretty_secret(await api.secret_inspect(ref)))
        return
    await inspect_each(refs, api.secret_inspect)


def pretty_secret(s: dict[str, Any]) -> str:
    """docker's secretInspectPrettyTemplate."""
    spec = spec_of(s)
    lines = [f"ID:              {s['ID']}", f"Name:              {spec.get('Name', '')}"]
    if spec.get("Labels"):
        lines.append("Labels:")
        lines += [f" - {k}" + (f"={v}" if v else "") for k, v in sorted(spec["Labels"].items())]
    lines += [
        f"Driver:            {(spec.get('Driver') or {}).get('Name', '')}",
        f"Created at:        {output.pretty(output.go_time(s.get('CreatedAt')))}",
        f"Updated at:        {output.pretty(output.go_time(s.get('UpdatedAt')))}",
    ]
    return "\n".join(lines)


@secret.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="SECRET [SECRET...]")
@api_command
async def remove(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Remove one or more secrets."""
    await remove_each(refs, api.secret_remove)
