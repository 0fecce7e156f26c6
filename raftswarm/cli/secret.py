"""`raftswarm secret ...`: create, ls, inspect, rm.

A SECRET argument goes to the node as given (ID, unique ID prefix or name). The node never answers with a
secret's data, so neither `inspect` nor `ls` can show it. `ls`, `inspect` and `rm` are those of every
`fileobjects` kind.
"""

from __future__ import annotations

import base64
import sys
from typing import Any

import click

from ..api.client import ApiClient
from . import output
from .connection import api_command
from .errors import CommandError
from .fileobjects import FileObjectKind, add_commands, label_lines, label_option, read_failure
from .group import DockerGroup
from .options import parse_labels
from .shapes import spec_of


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
        raise CommandError(f'Error reading content from "{source}": {read_failure(source, exc)}') from None


@secret.command()
@label_option("secret")
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


def _driver(s: dict[str, Any]) -> str:
    return (spec_of(s).get("Driver") or {}).get("Name", "")


def pretty_secret(s: dict[str, Any]) -> str:
    """docker's secretInspectPrettyTemplate."""
    spec = spec_of(s)
    return "\n".join(
        [
            f"ID:              {s['ID']}",
            f"Name:              {spec.get('Name', '')}",
            *label_lines(spec),
            f"Driver:            {_driver(s)}",
            f"Created at:        {output.pretty(output.go_time(s.get('CreatedAt')))}",
            f"Updated at:        {output.pretty(output.go_time(s.get('UpdatedAt')))}",
        ]
    )


add_commands(
    secret,
    FileObjectKind(
        noun="secret",
        list=ApiClient.secret_list,
        inspect=ApiClient.secret_inspect,
        remove=ApiClient.secret_remove,
        pretty=pretty_secret,
        own_headers={"Driver": "DRIVER"},
        own_fields=lambda s: {"Driver": _driver(s)},
    ),
)
