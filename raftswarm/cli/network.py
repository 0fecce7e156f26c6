"""`raftswarm network ...`: create, ls, inspect, rm -- swarm (overlay) networks, with docker's flags and output.

A NETWORK argument goes to the node as given (ID, unique ID prefix or name).
"""

from __future__ import annotations

from typing import Any

import click

from ..api.client import ApiClient
from . import output
from .connection import api_command, inspect_each, remove_each
from .errors import CommandError
from .group import DockerGroup
from .listing import ListFormat, filter_option, format_option, quiet_option
from .options import check_labels, parse_filters, parse_labels

NETWORK_HEADERS = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
}
NETWORK_COLUMNS = ["ID", "Name", "Driver", "Scope"]


@click.group(cls=DockerGroup)
def network() -> None:
    """Manage networks."""


def _options(values: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for value in values:
        key, _, val = value.partition("=")
        if not key:
            raise click.BadParameter(f"invalid key/value pair format in driver options: {value!r}")
        options[key] = val
    return options


@network.command()
@click.option("-d", "--driver", default="overlay", show_default=True, metavar="string", help="Driver to manage the Network")
@click.option("--subnet", multiple=True, metavar="strings", help="Subnet in CIDR format that represents a network segment")
@click.option("--gateway", multiple=True, metavar="strings", help="IPv4 Gateway for the master subnet")
@click.option("--ip-range", multiple=True, metavar="strings", help="Allocate container ip from a sub-range")
@click.option("--ipam-driver", default="default", metavar="string", help="IP Address Management Driver")
@click.option("--attachable", is_flag=True, help="Enable manual container attachment")
@click.option("--ingress", is_flag=True, help="Create swarm routing-mesh network")
@click.option("--internal", is_flag=True, help="Restrict external access to the network")
@click.option("--scope", default="", metavar="string", help="Control the network's scope")
@click.option("-o", "--opt", multiple=True, metavar="map", help="Set driver specific options")
@click.option("--label", multiple=True, callback=check_labels, metavar="list", help="Set metadata on a network")
@click.argument("name", metavar="NETWORK")
@api_command
async def create(api: ApiClient, name: str, **flags: Any) -> None:
    """Create a network."""
    if len(flags["gateway"]) > len(flags["subnet"]) or len(flags["ip_range"]) > len(flags["subnet"]):
        raise CommandError("every ip-range or gateway must have a corresponding subnet")
    configs = [
        {k: v for k, v in (("Subnet", subnet), ("Gateway", gateway), ("IPRange", ip_range)) if v}
        for subnet, gateway, ip_range in zip(
            flags["subnet"],
            flags["gateway"] + ("",) * len(flags["subnet"]),
            flags["ip_range"] + ("",) * len(flags["subnet"]),
        )
    ]
    body: dict[str, Any] = {
        "Name": name,
        "Driver": flags["driver"],
        "IPAM": {"Driver": flags["ipam_driver"], "Config": configs, "Options": {}},
        "Options": _options(flags["opt"]),
        "Attachable": flags["attachable"],
        "Ingress": flags["ingress"],
        "Internal": flags["internal"],
        "Labels": parse_labels(flags["label"]),
    }
    if flags["scope"]:
        body["Scope"] = flags["scope"]
    response = await api.network_create(body)
    click.echo(response["Id"])


def network_record(n: dict[str, Any], no_trunc: bool) -> dict[str, Any]:
    """The fields docker's network formatter offers (`--format`)."""
    return {
        "ID": n["Id"] if no_trunc else n["Id"][:12],
        "Name": n["Name"],
        "Driver": n["Driver"],
        "Scope": n["Scope"],
        "IPv6": str(bool(n.get("EnableIPv6"))).lower(),
        "Internal": str(bool(n.get("Internal"))).lower(),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted((n.get("Labels") or {}).items())),
        "CreatedAt": n.get("Created", ""),
    }


@network.command("ls")
@filter_option("Provide filter values (e.g. 'driver=overlay')")
@format_option()
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output")
@quiet_option("Only display network IDs")
@api_command
async def list_networks(api: ApiClient, filters: tuple[str, ...], format_spec: str | None, no_trunc: bool, quiet: bool) -> None:
    """List networks."""
    fmt = ListFormat(format_spec, quiet)
    networks = await api.network_list(parse_filters(filters))
    networks.sort(key=lambda n: output.natural_key(n["Name"]))
    fmt.print([network_record(n, no_trunc) for n in networks], NETWORK_HEADERS, NETWORK_COLUMNS)


@network.command()
@click.argument("refs", nargs=-1, required=True, metavar="NETWORK [NETWORK...]")
@api_command
async def inspect(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks."""
    await inspect_each(refs, api.network_inspect)


@network.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="NETWORK [NETWORK...]")
@api_command
async def remove(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Remove one or more networks."""
    await remove_each(refs, api.network_remove)
