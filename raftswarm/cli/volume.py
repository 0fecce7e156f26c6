"""`raftswarm volume ...`: create, ls, inspect, rm, prune -- the volumes of the node the command talks to (volumes
are node-local, as in Docker), with docker's flags and output.

    raftswarm volume create [-d local] [-o type=tmpfs -o device=tmpfs -o o=size=64m] [--label k=v] [NAME]
    raftswarm volume ls [-q] [--format ...] [-f dangling=true|name=...|driver=...|label=...]
    raftswarm volume inspect [-f TEMPLATE] VOLUME...
    raftswarm volume rm [-f] VOLUME...          a volume a task uses cannot be removed
    raftswarm volume prune [-a] [-f] [--filter label=...]   anonymous volumes only, unless --all
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..api.client import ApiClient
from . import output
from .connection import api_command, inspect_each, print_json, remove_each
from .errors import CommandError
from .group import DockerGroup
from .listing import ListFormat, filter_option, format_option, quiet_option
from .options import check_labels, parse_filters, parse_labels

VOLUME_HEADERS = {
    "Name": "VOLUME NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS",
    "Links": "LINKS",
    "Size": "SIZE",
}
VOLUME_COLUMNS = ["Driver", "Name"]

PRUNE_ANONYMOUS_WARNING = (
    "WARNING! This will remove anonymous local volumes not used by at least one container.\n"
    "Are you sure you want to continue?"
)
PRUNE_ALL_WARNING = (
    "WARNING! This will remove all local volumes not used by at least one container.\n"
    "Are you sure you want to continue?"
)

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


@click.group(cls=DockerGroup)
def volume() -> None:
    """Manage volumes."""


def _filters_query(filters: dict[str, list[str]]) -> dict[str, str]:
    return {"filters": json.dumps(filters)} if filters else {}


def _driver_options(values: tuple[str, ...]) -> dict[str, str]:
    """`-o key=value` flags (docker's MapOpts: a value without "=" is a key with an empty value)."""
    options = {}
    for value in values:
        key, _, option = value.partition("=")
        options[key] = option
    return options


@volume.command()
@click.option("-d", "--driver", default="local", show_default=True, metavar="string", help="Specify volume driver name")
@click.option("--name", "name_flag", default="", hidden=True, help="Specify volume name")
@click.option("-o", "--opt", multiple=True, metavar="map", help="Set driver specific options")
@click.option("--label", multiple=True, callback=check_labels, metavar="list", help="Set metadata for a volume")
@click.argument("name", required=False, metavar="[VOLUME]")
@api_command
async def create(
    api: ApiClient, driver: str, name_flag: str, opt: tuple[str, ...], label: tuple[str, ...], name: str | None
) -> None:
    """Create a volume."""
    if name is not None and name_flag:
        raise CommandError("conflicting options: cannot specify a volume-name through both --name and as a positional arg")
    body = {"Name": name or name_flag, "Driver": driver, "DriverOpts": _driver_options(opt), "Labels": parse_labels(label)}
    created = await api.request("POST", "/volumes/create", body)
    click.echo(created["Name"])


def volume_record(v: dict[str, Any]) -> dict[str, Any]:
    """The fields docker's volume formatter offers (`--format`)."""
    return {
        "Name": v["Name"],
        "Driver": v["Driver"],
        "Scope": v.get("Scope", ""),
        "Mountpoint": v.get("Mountpoint", ""),
        "Labels": ",".join(f"{k}={value}" for k, value in sorted((v.get("Labels") or {}).items())),
        "Links": "N/A",
        "Size": "N/A",
    }


@volume.command("ls")
@filter_option('Provide filter values (e.g. "dangling=true")')
@format_option()
@quiet_option("Only display volume names")
@api_command
async def list_volumes(api: ApiClient, filters: tuple[str, ...], format_spec: str | None, quiet: bool) -> None:
    """List volumes."""
    if quiet and not format_spec:
        format_spec, quiet = "{{.Name}}", False  # docker's quiet format
    fmt = ListFormat(format_spec, quiet)
    answer = await api.request("GET", "/volumes", params=_filters_query(parse_filters(filters)))
    volumes = sorted(answer.get("Volumes") or [], key=lambda v: output.natural_key(v["Name"]))
    for warning in answer.get("Warnings") or []:
        click.echo(warning, err=True)
    fmt.print([volume_record(v) for v in volumes], VOLUME_HEADERS, VOLUME_COLUMNS)


@volume.command()
@click.option("-f", "--format", "format_spec", help="Format output using a {{.Field}} template, or json")
@click.argument("names", nargs=-1, required=True, metavar="VOLUME [VOLUME...]")
@api_command
async def inspect(api: ApiClient, format_spec: str | None, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more volumes."""

    async def inspect_volume(name: str) -> dict[str, Any]:
        return await api.request("GET", f"/volumes/{name}")

    def show(found: list[Any]) -> None:
        ListFormat(format_spec).print_formatted(found, {})

    await inspect_each(names, inspect_volume, show if format_spec else print_json)


@volume.command("rm")
@click.option("-f", "--force", is_flag=True, help="Force the removal of one or more volumes")
@click.argument("names", nargs=-1, required=True, metavar="VOLUME [VOLUME...]")
@api_command
async def remove(api: ApiClient, force: bool, names: tuple[str, ...]) -> None:
    """Remove one or more volumes. You cannot remove a volume that is in use by a container."""

    async def remove_volume(name: str) -> None:
        await api.request("DELETE", f"/volumes/{name}", params={"force": "1"} if force else None)

    await remove_each(names, remove_volume)


@volume.command()
@click.option("-a", "--all", "prune_all", is_flag=True, help="Remove all unused volumes, not just anonymous ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help='Provide filter values (e.g. "label=<label>")')
@api_command
async def prune(api: ApiClient, prune_all: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused local volumes."""
    wanted = parse_filters(filters)
    if prune_all:
        if "all" in wanted:
            raise CommandError("conflicting options: cannot specify both --all and --filter all=1")
        wanted["all"] = ["true"]
    if not force:
        click.echo(f"{PRUNE_ALL_WARNING if prune_all else PRUNE_ANONYMOUS_WARNING} [y/N] ", nl=False)
        if sys.stdin.readline().strip().lower() != "y":
            raise CommandError("volume prune has been cancelled")
    report = await api.request("POST", "/volumes/prune", params=_filters_query(wanted))
    deleted = report.get("VolumesDeleted") or []
    if deleted:
        click.echo("Deleted Volumes:\n" + "".join(f"{name}\n" for name in deleted))
    click.echo(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed', 0) if deleted else 0)}")


def human_size(size: float) -> str:
    """go-units HumanSize: decimal units with four significant digits ("1.5kB", "0B")."""
    index = 0
    while size >= 1000 and index < len(_DECIMAL_UNITS) - 1:
        size /= 1000
        index += 1
    return f"{size:.4g}{_DECIMAL_UNITS[index]}"
