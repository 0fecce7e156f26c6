"""`raftswarm config ...`: create, ls, inspect, rm, as `docker config ...`.

A CONFIG argument goes to the node as given (ID, unique ID prefix or name). Unlike a secret, a config is
shown with its data: `inspect` prints it (base64 in the JSON, as text with --pretty). `ls`, `inspect` and `rm`
are those of every `fileobjects` kind.
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
        raise CommandError(
            f'Error reading content from "{source}": error reading from {where}: {read_failure(source, exc)}'
        ) from None
    if not data:
        raise CommandError(f'Error reading content from "{source}": error reading from {where}: data is empty')
    return data


@config.command()
@label_option("config")
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


def pretty_config(c: dict[str, Any]) -> str:
    """docker's configInspectPrettyTemplate, its data as text."""
    spec = spec_of(c)
    return "\n".join(
        [
            f"ID:\t\t\t{c['ID']}",
            f"Name:\t\t\t{spec.get('Name', '')}",
            *label_lines(spec),
            f"Created at:            \t{output.pretty(output.go_time(c.get('CreatedAt')))}",
            f"Updated at:            \t{output.pretty(output.go_time(c.get('UpdatedAt')))}",
            "Data:",
            _text(spec.get("Data") or ""),
        ]
    )


def _text(data: str) -> str:
    """Base64 data as the bytes it holds, shown as text (what Go's string([]byte) prints)."""
    try:
        return base64.b64decode(data).decode("utf-8", "replace")
    except ValueError:
        return data


add_commands(
    config,
    FileObjectKind(
        noun="config",
        list=ApiClient.config_list,
        inspect=ApiClient.config_inspect,
        remove=ApiClient.config_remove,
        pretty=pretty_config,
    ),
)
