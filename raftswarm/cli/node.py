"""`raftswarm node ...`: ls, inspect, promote, demote, update, rm, ps.

A NODE argument may be a full node ID, a unique ID prefix, a node name or hostname, or `self` (the node the
CLI is connected to); the CLI resolves it against `GET /nodes` and then calls the node's endpoints by full ID.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..api.client import ApiClient, ApiError
from . import output
from .connection import api_command, failure_message, inspect_each, remove_each
from .errors import CommandError
from .group import DockerGroup
from .listing import ListFormat, filter_option, format_option, quiet_option
from .nodelookup import NodeResolver
from .options import parse_filters, parse_labels
from .shapes import description_of, spec_of, status_of, swarm_info
from .tasks import TASK_HEADERS, print_tasks, task_list_options

NODE_HEADERS = {
    "ID": "ID",
    "Self": "",
    "Hostname": "HOSTNAME",
    "Status": "STATUS",
    "Availability": "AVAILABILITY",
    "ManagerStatus": "MANAGER STATUS",
    "EngineVersion": "ENGINE VERSION",
    "TLSStatus": "TLS STATUS",
}
# docker's default node table, `{{.ID}} {{if .Self}}*{{else}} {{end}}\t{{.Hostname}}\t...`: after its ID, a `*`
# marks the node the CLI talks to, and the ID column's header is "ID " (the template's space, then the empty
# header of the `if`).
NODE_TABLE_HEADERS = {**NODE_HEADERS, "ID": "ID "}
NODE_TABLE_COLUMNS = ["ID", "Hostname", "Status", "Availability", "ManagerStatus", "EngineVersion"]


@click.group(cls=DockerGroup)
def node() -> None:
    """Manage swarm nodes."""


# -- ls -------------------------------------------------------------------------------------------------


def node_record(n: dict[str, Any], swarm: dict[str, Any]) -> dict[str, Any]:
    """The fields docker's node formatter offers (`--format`), computed the same way."""
    manager = n.get("ManagerStatus")
    manager_status = ""
    if manager:
        manager_status = "Leader" if manager.get("Leader") else output.pretty(manager.get("Reachability", ""))
    return {
        "ID": n["ID"],
        "Self": n["ID"] == swarm.get("NodeID"),
        "Hostname": description_of(n).get("Hostname", ""),
        "Status": output.pretty(status_of(n).get("State", "")),
        "Availability": output.pretty(spec_of(n).get("Availability", "")),
        "ManagerStatus": manager_status,
        "EngineVersion": (description_of(n).get("Engine") or {}).get("EngineVersion", ""),
        "TLSStatus": _tls_status(n, swarm),
    }


def _tls_status(n: dict[str, Any], swarm: dict[str, Any]) -> str:
    cluster_tls = (swarm.get("Cluster") or {}).get("TLSInfo") or {}
    node_tls = description_of(n).get("TLSInfo") or {}
    if not any(cluster_tls.values()) or not any(node_tls.values()):
        return "Unknown"
    return "Ready" if cluster_tls == node_tls else "Needs Rotation"


@node.command("ls")
@quiet_option()
@format_option()
@filter_option()
@api_command
async def list_nodes(api: ApiClient, quiet: bool, format_spec: str | None, filters: tuple[str, ...]) -> None:
    """List nodes in the swarm."""
    fmt = ListFormat(format_spec, quiet)
    nodes = await api.node_list(parse_filters(filters))
    swarm: dict[str, Any] = {}
    if nodes and not quiet:
        swarm = swarm_info(await api.info())
    nodes.sort(key=lambda n: output.natural_key(description_of(n).get("Hostname", "")))
    records = [node_record(n, swarm) for n in nodes]
    if fmt.uses_default_table:
        marked = [{**r, "ID": f"{r['ID']} {'*' if r['Self'] else ' '}"} for r in records]
        fmt.print(marked, NODE_TABLE_HEADERS, NODE_TABLE_COLUMNS)
    else:
        fmt.print(records, NODE_HEADERS)


# -- inspect --------------------------------------------------------------------------------------------


@node.command()
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format")
@click.argument("refs", nargs=-1, required=True, metavar="self|NODE [NODE...]")
@api_command
async def inspect(api: ApiClient, pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more nodes."""
    resolver = NodeResolver(api)

    async def inspect_node(ref: str) -> dict[str, Any]:
        return await api.node_inspect(await resolver.resolve(ref))

    if pretty:
        for ref in refs:
            click.echo(pretty_node(await inspect_node(ref)))
        return
    await inspect_each(refs, inspect_node)


def pretty_node(n: dict[str, Any]) -> str:
    """docker's nodeInspectPrettyTemplate, tabs included."""
    spec, description, status = spec_of(n), description_of(n), status_of(n)
    lines = [f"ID:\t\t\t{n['ID']}"]
    if spec.get("Name"):
        lines.append(f"Name:\t\t\t{spec['Name']}")
    lines += _label_lines("Labels", spec.get("Labels"))
    lines += [
        f"Hostname:              \t{description.get('Hostname', '')}",
        f"Joined at:             \t{output.pretty(output.go_time(n.get('CreatedAt')))}",
        "Status:",
        f" State:\t\t\t{output.pretty(status.get('State'))}",
    ]
    if status.get("Message"):
        lines.append(f" Message:              \t{output.pretty(status['Message'])}")
    lines.append(f" Availability:         \t{output.pretty(spec.get('Availability'))}")
    if status.get("Addr"):
        lines.append(f" Address:\t\t{status['Addr']}")
    manager = n.get("ManagerStatus")
    if manager:
        lines += [
            "Manager Status:",
            f" Address:\t\t{manager.get('Addr', '')}",
            f" Raft Status:\t\t{output.pretty(manager.get('Reachability'))}",
            f" Leader:\t\t{'Yes' if manager.get('Leader') else 'No'}",
        ]
    platform = description.get("Platform") or {}
    resources = description.get("Resources") or {}
    memory = resources.get("MemoryBytes") or 0
    lines += [
        "Platform:",
        f" Operating System:\t{platform.get('OS', '')}",
        f" Architecture:\t\t{platform.get('Architecture', '')}",
        "Resources:",
        f" CPUs:\t\t\t{int(resources.get('NanoCPUs') or 0) // 10**9}",
        f" Memory:\t\t{output.bytes_size(memory) if memory else ''}",
    ]
    engine = description.get("Engine") or {}
    plugins: dict[str, list[str]] = {}
    for plugin in engine.get("Plugins") or []:
        plugins.setdefault(plugin.get("Type", ""), []).append(plugin.get("Name", ""))
    if plugins:
        lines.append("Plugins:")
        lines += [f" {kind}:" + (f"\t\t{', '.join(names)}" if names else "") for kind, names in sorted(plugins.items())]
    lines.append(f"Engine Version:\t\t{engine.get('EngineVersion', '')}")
    lines += _label_lines("Engine Labels", engine.get("Labels"))
    tls = description.get("TLSInfo") or {}
    if any(tls.values()):
        lines += [
            "TLS Info:",
            " TrustRoot:",
            tls.get("TrustRoot", ""),
            f" Issuer Subject:\t{tls.get('CertIssuerSubject', '')}",
            f" Issuer Public Key:\t{tls.get('CertIssuerPublicKey', '')}",
        ]
    return "\n".join(lines)


def _label_lines(title: str, labels: dict[str, str] | None) -> list[str]:
    if not labels:
        return []
    return [f"{title}:"] + [f" - {key}" + (f"={value}" if value else "") for key, value in sorted(labels.items())]


# -- promote / demote / update ---------------------------------------------------------------------------


class NoChange(Exception):
    """The node already has what was asked; docker says so and moves on to the next node."""


# change(node as read, its spec to write); may raise NoChange.
SpecChange = Callable[[dict[str, Any], dict[str, Any]], None]


async def update_nodes(api: ApiClient, refs: Sequence[str], change: SpecChange, success: Callable[[str], None]) -> None:
    """For each node: read it, apply `change` to a copy of its spec, write it back at the version read
    (so a concurrent update makes this one fail rather than be lost). Stops at the first failure, as docker."""
    resolver = NodeResolver(api)
    for ref in refs:
        current = await api.node_inspect(await resolver.resolve(ref))
        spec = copy.deepcopy(spec_of(current))
        spec["Labels"] = spec.get("Labels") or {}
        try:
            change(current, spec)
        except NoChange:
            continue
        await api.node_update(current["ID"], current["Version"]["Index"], spec)
        success(ref)


async def set_role(api: ApiClient, refs: Sequence[str], role: str, already: str, done: str) -> None:
    """`promote` and `demote`: give each node `role`, printing `done` (or `already`, for a node that has it)
    with the node's argument (or ID) in place of `{}`."""

    def change(current: dict[str, Any], spec: dict[str, Any]) -> None:
        if spec.get("Role") == role:
            click.echo(already.format(current["ID"]))
            raise NoChange
        spec["Role"] = role

    await update_nodes(api, refs, change, lambda ref: click.echo(done.format(ref)))


@node.command()
@click.argument("refs", nargs=-1, required=True, metavar="NODE [NODE...]")
@api_command
async def promote(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Promote one or more nodes to manager in the swarm."""
    await set_role(api, refs, "manager", "Node {} is already a manager.", "Node {} promoted to a manager in the swarm.")


@node.command()
@click.argument("refs", nargs=-1, required=True, metavar="NODE [NODE...]")
@api_command
async def demote(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Demote one or more nodes from manager in the swarm."""
    await set_role(api, refs, "worker", "Node {} is already a worker.", "Manager {} demoted in the swarm.")


@node.command()
@click.option("--availability", type=click.Choice(["active", "pause", "drain"]), help="Availability of the node")
@click.option("--role", type=click.Choice(["worker", "manager"]), help="Role of the node")
@click.option("--label-add", multiple=True, help='Add or update a node label ("key=value")')
@click.option("--label-rm", multiple=True, help="Remove a node label if exists")
@click.argument("ref", metavar="NODE")
@api_command
async def update(
    api: ApiClient,
    availability: str | None,
    role: str | None,
    label_add: tuple[str, ...],
    label_rm: tuple[str, ...],
    ref: str,
) -> None:
    """Update a node."""

    def change(current: dict[str, Any], spec: dict[str, Any]) -> None:
        if role:
            spec["Role"] = role
        if availability:
            spec["Availability"] = availability
        spec["Labels"].update(parse_labels(label_add))
        for key in label_rm:
            if key not in spec["Labels"]:
                raise CommandError(f"key {key} doesn't exist in node's labels")
            del spec["Labels"][key]

    await update_nodes(api, [ref], change, click.echo)


# -- rm -------------------------------------------------------------------------------------------------


@node.command("rm")
@click.option("-f", "--force", is_flag=True, help="Force remove a node from the swarm")
@click.argument("refs", nargs=-1, required=True, metavar="NODE [NODE...]")
@api_command
async def remove(api: ApiClient, force: bool, refs: tuple[str, ...]) -> None:
    """Remove one or more nodes from the swarm."""
    resolver = NodeResolver(api)

    async def remove_node(ref: str) -> None:
        await api.node_remove(await resolver.resolve(ref), force=force)

    await remove_each(refs, remove_node)


# -- ps -------------------------------------------------------------------------------------------------


@node.command()
@task_list_options
@click.argument("refs", nargs=-1, metavar="[NODE...]")
@api_command
async def ps(
    api: ApiClient,
    filters: tuple[str, ...],
    format_spec: str | None,
    no_resolve: bool,
    no_trunc: bool,
    quiet: bool,
    refs: tuple[str, ...],
) -> None:
    """List tasks running on one or more nodes, defaults to current node."""
    fmt = ListFormat(format_spec, quiet)
    user_filters = parse_filters(filters)
    resolver = NodeResolver(api)
    tasks: list[dict[str, Any]] = []
    errors: list[str] = []
    for ref in refs or ("self",):
        try:
            node_id = await resolver.resolve(ref)
        except (CommandError, ApiError) as exc:
            errors.append(failure_message(exc))
            continue
        try:
            tasks += await api.task_list({**user_filters, "node": [node_id]})
        except ApiError as exc:
            if exc.status != 404:
                errors.append(failure_message(exc))
                continue
            if fmt.uses_default_table:
                fmt.print([], TASK_HEADERS)
            raise CommandError(
                f"Error: the node does not serve the tasks API yet (GET /tasks answered 404: {exc}), "
                "so `raftswarm node ps` cannot list tasks"
            ) from exc
    if not errors or tasks:
        await print_tasks(api, resolver, tasks, fmt, resolve=not no_resolve, truncate=not no_trunc)
    if errors:
        raise CommandError("\n".join(errors))
