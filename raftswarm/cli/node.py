"""`raftswarm node ...`: ls, inspect, promote, demote, update, rm, ps.

A NODE argument may be a full node ID, a unique ID prefix, a node name or hostname, or `self` (the node the
CLI is connected to); the CLI resolves it against `GET /nodes` and then calls the node's endpoints by full ID.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import click

from ..api.client import ApiClient, ApiError
from . import output
from .daemon import daemon_command, daemon_message
from .errors import CommandError
from .options import parse_filters, parse_labels

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
TASK_COLUMNS = list(TASK_HEADERS)

# docker/cli's task formatter cuts errors to this many columns unless --no-trunc.
TASK_ERROR_LENGTH = 30

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # sorts tasks without a creation time last


class _NodeGroup(click.Group):
    """Accepts docker's aliases: `node list` for `node ls`, `node remove` for `node rm`."""

    ALIASES: ClassVar[dict[str, str]] = {"list": "ls", "remove": "rm"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.ALIASES.get(cmd_name, cmd_name))


@click.group(cls=_NodeGroup)
def node() -> None:
    """Manage swarm nodes."""


# -- resolving NODE arguments ----------------------------------------------------------------------------


class NodeResolver:
    """Turns NODE arguments into node IDs with one `GET /nodes` (and `GET /info` for `self`), matching in
    swarmkit's order: exact ID, then name or hostname, then unique ID prefix."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self._nodes: list[dict[str, Any]] | None = None

    async def nodes(self) -> list[dict[str, Any]]:
        if self._nodes is None:
            self._nodes = await self.api.node_list()
        return self._nodes

    async def resolve(self, ref: str) -> str:
        if ref == "self":
            node_id = ((await self.api.info()).get("Swarm") or {}).get("NodeID", "")
            if not node_id:
                await self.nodes()  # the node's own error ("not a swarm manager") says more than ours
                raise CommandError("node ID not found in /info")
            return node_id
        nodes = await self.nodes()
        if any(n["ID"] == ref for n in nodes):
            return ref
        named = [n for n in nodes if ref in (_spec(n).get("Name"), _description(n).get("Hostname"))]
        candidates = named or [n for n in nodes if n["ID"].startswith(ref)]
        if len(candidates) == 1:
            return candidates[0]["ID"]
        if candidates:
            raise CommandError(f"Error: node {ref} is ambiguous ({len(candidates)} matches found)")
        raise CommandError(f"Error: No such node: {ref}")


def _spec(n: dict[str, Any]) -> dict[str, Any]:
    return n.get("Spec") or {}


def _description(n: dict[str, Any]) -> dict[str, Any]:
    return n.get("Description") or {}


def _status(n: dict[str, Any]) -> dict[str, Any]:
    return n.get("Status") or {}


# -- ls -------------------------------------------------------------------------------------------------


def node_record(n: dict[str, Any], swarm_info: dict[str, Any]) -> dict[str, Any]:
    """The fields docker's node formatter offers (`--format`), computed the same way."""
    manager = n.get("ManagerStatus")
    manager_status = ""
    if manager:
        manager_status = "Leader" if manager.get("Leader") else output.pretty(manager.get("Reachability", ""))
    return {
        "ID": n["ID"],
        "Self": n["ID"] == swarm_info.get("NodeID"),
        "Hostname": _description(n).get("Hostname", ""),
        "Status": output.pretty(_status(n).get("State", "")),
        "Availability": output.pretty(_spec(n).get("Availability", "")),
        "ManagerStatus": manager_status,
        "EngineVersion": (_description(n).get("Engine") or {}).get("EngineVersion", ""),
        "TLSStatus": _tls_status(n, swarm_info),
    }


def _tls_status(n: dict[str, Any], swarm_info: dict[str, Any]) -> str:
    cluster_tls = (swarm_info.get("Cluster") or {}).get("TLSInfo") or {}
    node_tls = _description(n).get("TLSInfo") or {}
    if not any(cluster_tls.values()) or not any(node_tls.values()):
        return "Unknown"
    return "Ready" if cluster_tls == node_tls else "Needs Rotation"


@node.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs")
@click.option("--format", "format_spec", help="Format output: table (default), json, or a {{.Field}} template")
@click.option(
    "-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided (name=value)"
)
@daemon_command
async def list_nodes(api: ApiClient, quiet: bool, format_spec: str | None, filters: tuple[str, ...]) -> None:
    """List nodes in the swarm."""
    fmt = output.ListFormat(format_spec, quiet)
    nodes = await api.node_list(parse_filters(filters))
    swarm_info: dict[str, Any] = {}
    if nodes and not quiet:
        swarm_info = (await api.info()).get("Swarm") or {}
    nodes.sort(key=lambda n: output.natural_key(_description(n).get("Hostname", "")))
    records = [node_record(n, swarm_info) for n in nodes]
    if not fmt.uses_default_table:
        fmt.print(records, NODE_HEADERS)
        return
    output.print_table(
        ["ID ", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"],
        [
            [
                f"{r['ID']} {'*' if r['Self'] else ' '}",
                r["Hostname"],
                r["Status"],
                r["Availability"],
                r["ManagerStatus"],
                r["EngineVersion"],
            ]
            for r in records
        ],
    )


# -- inspect --------------------------------------------------------------------------------------------


@node.command()
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format")
@click.argument("refs", nargs=-1, required=True, metavar="self|NODE [NODE...]")
@daemon_command
async def inspect(api: ApiClient, pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more nodes."""
    resolver = NodeResolver(api)
    if pretty:
        for ref in refs:
            click.echo(pretty_node(await api.node_inspect(await resolver.resolve(ref))))
        return
    found, errors = [], []
    for ref in refs:
        try:
            found.append(await api.node_inspect(await resolver.resolve(ref)))
        except CommandError as exc:
            errors.append(str(exc))
        except ApiError as exc:
            errors.append(daemon_message(exc))
    click.echo(json.dumps(found, indent=4))
    if errors:
        raise CommandError("\n".join(errors))


def pretty_node(n: dict[str, Any]) -> str:
    """docker's nodeInspectPrettyTemplate, tabs included."""
    spec, description, status = _spec(n), _description(n), _status(n)
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
        spec = copy.deepcopy(current.get("Spec") or {})
        spec["Labels"] = spec.get("Labels") or {}
        try:
            change(current, spec)
        except NoChange:
            continue
        await api.node_update(current["ID"], current["Version"]["Index"], spec)
        success(ref)


def _set_role(role: str, already: str) -> SpecChange:
    def change(current: dict[str, Any], spec: dict[str, Any]) -> None:
        if spec.get("Role") == role:
            click.echo(already.format(current["ID"]))
            raise NoChange
        spec["Role"] = role

    return change


@node.command()
@click.argument("refs", nargs=-1, required=True, metavar="NODE [NODE...]")
@daemon_command
async def promote(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Promote one or more nodes to manager in the swarm."""
    await update_nodes(
        api,
        refs,
        _set_role("manager", "Node {} is already a manager."),
        lambda ref: click.echo(f"Node {ref} promoted to a manager in the swarm."),
    )


@node.command()
@click.argument("refs", nargs=-1, required=True, metavar="NODE [NODE...]")
@daemon_command
async def demote(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Demote one or more nodes from manager in the swarm."""
    await update_nodes(
        api,
        refs,
        _set_role("worker", "Node {} is already a worker."),
        lambda ref: click.echo(f"Manager {ref} demoted in the swarm."),
    )


@node.command()
@click.option("--availability", type=click.Choice(["active", "pause", "drain"]), help="Availability of the node")
@click.option("--role", type=click.Choice(["worker", "manager"]), help="Role of the node")
@click.option("--label-add", multiple=True, help='Add or update a node label ("key=value")')
@click.option("--label-rm", multiple=True, help="Remove a node label if exists")
@click.argument("ref", metavar="NODE")
@daemon_command
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
@daemon_command
async def remove(api: ApiClient, force: bool, refs: tuple[str, ...]) -> None:
    """Remove one or more nodes from the swarm."""
    resolver = NodeResolver(api)
    errors = []
    for ref in refs:
        try:
            await api.node_remove(await resolver.resolve(ref), force=force)
        except CommandError as exc:
            errors.append(str(exc))
            continue
        except ApiError as exc:
            errors.append(daemon_message(exc))
            continue
        click.echo(ref)
    if errors:
        raise CommandError("\n".join(errors))


# -- ps -------------------------------------------------------------------------------------------------


def task_list_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """docker's options of `node ps` and `service ps`: --filter, --format, --no-resolve, --no-trunc, --quiet."""
    for option in reversed(
        (
            click.option(
                "-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided (name=value)"
            ),
            click.option("--format", "format_spec", help="Format output: table (default), json, or a {{.Field}} template"),
            click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names"),
            click.option("--no-trunc", is_flag=True, help="Do not truncate output"),
            click.option("-q", "--quiet", is_flag=True, help="Only display task IDs"),
        )
    ):
        command = option(command)
    return command


@node.command()
@task_list_options
@click.argument("refs", nargs=-1, metavar="[NODE...]")
@daemon_command
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
    fmt = output.ListFormat(format_spec, quiet)
    user_filters = parse_filters(filters)
    resolver = NodeResolver(api)
    tasks: list[dict[str, Any]] = []
    errors: list[str] = []
    for ref in refs or ("self",):
        try:
            node_id = await resolver.resolve(ref)
        except CommandError as exc:
            errors.append(str(exc))
            continue
        except ApiError as exc:
            errors.append(daemon_message(exc))
            continue
        try:
            tasks += await api.task_list({**user_filters, "node": [node_id]})
        except ApiError as exc:
            if exc.status != 404:
                errors.append(daemon_message(exc))
                continue
            if fmt.uses_default_table:
                output.print_table(list(TASK_HEADERS.values()), [])
            raise CommandError(
                f"Error: the node does not serve the tasks API yet (GET /tasks answered 404: {exc}), "
                "so `raftswarm node ps` cannot list tasks"
            ) from exc
    if not errors or tasks:
        await print_tasks(api, resolver, tasks, fmt, resolve=not no_resolve, truncate=not no_trunc)
    if errors:
        raise CommandError("\n".join(errors))


async def print_tasks(
    api: ApiClient, resolver: NodeResolver, tasks: list[dict[str, Any]], fmt: output.ListFormat, *, resolve: bool, truncate: bool
) -> None:
    """A task list as `node ps`, `service ps` and `stack ps` print it: docker's table, or `--format`/`-q`."""
    records = await task_records(api, resolver, tasks, resolve=resolve, truncate=truncate, indent=fmt.is_table)
    if fmt.uses_default_table:
        output.print_table(list(TASK_HEADERS.values()), [[r[c] for c in TASK_COLUMNS] for r in records])
    else:
        fmt.print(records, TASK_HEADERS)


async def task_records(
    api: ApiClient, resolver: NodeResolver, tasks: list[dict[str, Any]], resolve: bool, truncate: bool, indent: bool
) -> list[dict[str, Any]]:
    """docker's task.Print: names `<service>.<slot>` (or `.<node ID>` for global services), sorted by name with
    the newest first, earlier tasks of a slot indented with ` \\_ `."""
    service_names = await _service_names(api, tasks) if resolve else {}
    node_names = {}
    if resolve:
        for n in await resolver.nodes():
            node_names[n["ID"]] = _spec(n).get("Name") or _description(n).get("Hostname") or n["ID"]
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
    status = task.get("Status") or {}
    image = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Image", "")
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
            names[service_id] = ((await api.service_inspect(service_id)).get("Spec") or {}).get("Name") or service_id
        except ApiError:
            names[service_id] = service_id
    return names
