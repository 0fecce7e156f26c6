"""`raftswarm stack ...`: deploy, ls, services, ps, rm -- a compose file as a set of services, networks, secrets
and configs under one namespace (`raftswarm.stack` turns the file into specs), as `docker stack` does.

Everything a stack makes carries the label `com.docker.stack.namespace=<name>`; that label is how
`ls`, `services`, `ps` and `rm` find it. A redeploy creates what is new, updates the services whose spec
changed (and only those, keeping what `service update --force` did), and with `--prune` removes the stack's
services the files no longer have. Several `-c` files are merged as docker merges them; `-c -` reads stdin.
Named volumes are not created here: the node that first runs a task mounting one creates it, with the labels
and driver options its mount carries (as with docker). The node's Warnings for what a service asks and
raftswarm does not act on are printed, each once.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from ..api.client import ApiClient, ApiError
from ..errors import ComposeError, RaftswarmError
from ..objects.jobs import is_job, job_mode
from ..objects.specs import validate_service_spec
from ..objects.stored import shown_service_spec
from ..stack import NAMESPACE_LABEL, STDIN, load_stack, stack_specs
from .connection import api_command, daemon_message
from .errors import CommandError
from .group import DockerGroup
from .listing import ListFormat, filter_option, format_option, quiet_option
from .nodelookup import NodeResolver
from .options import parse_filters
from .service.image import pin_image, registry_auth
from .service.listing import list_services
from .service.progress import wait_for_service
from .shapes import container_spec, task_template
from .tasks import print_tasks, task_list_options

STACK_HEADERS = {"Name": "NAME", "Services": "SERVICES"}


@click.group(cls=DockerGroup)
def stack() -> None:
    """Manage Swarm stacks."""


async def _create_or_update(
    noun: str,
    bodies: dict[str, dict[str, Any]],
    existing: dict[str, dict[str, Any]],
    create: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    update: Callable[[str, int, dict[str, Any]], Awaitable[None]],
) -> dict[str, str]:
    """docker/cli's createSecrets and createConfigs: one the stack's file defines that exists already is updated
    with the file's spec (the node refuses changed content: only labels may change), one that does not is
    created. The IDs by name, of every existing one and those created."""
    ids = {name: found["ID"] for name, found in existing.items()}
    for name, body in bodies.items():
        found = existing.get(name)
        try:
            if found is None:
                click.echo(f"Creating {noun} {name}")
                ids[name] = (await create(body))["ID"]
            else:
                await update(found["ID"], found["Version"]["Index"], body)
        except ApiError as exc:
            raise CommandError(f"failed to {'create' if found is None else 'update'} {noun} {name}: {exc}") from None
    return ids


def _namespace_filter(name: str) -> dict[str, list[str]]:
    return {"label": [f"{NAMESPACE_LABEL}={name}"]}


@stack.command()
@click.option("-c", "--compose-file", "compose_files", multiple=True, required=True, metavar="strings", help='Path to a Compose file, or "-" to read from stdin')
@click.option("--prune", is_flag=True, help="Prune services that are no longer referenced")
@click.option("--detach/--no-detach", "-d", default=False, help="Exit immediately instead of waiting for the stack's services to converge")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output")
@click.option(
    "--resolve-image",
    type=click.Choice(["always", "changed", "never"]),
    default="always",
    show_default=True,
    help="Query the registry to resolve image digest and supported platforms",
)
@click.option("--with-registry-auth", is_flag=True, help="Send registry authentication details to Swarm agents")
@click.argument("name", metavar="STACK")
@api_command
async def deploy(
    api: ApiClient,
    compose_files: tuple[str, ...],
    prune: bool,
    detach: bool,
    quiet: bool,
    resolve_image: str,
    with_registry_auth: bool,
    name: str,
) -> None:
    """Deploy a new stack or update an existing stack."""
    # docker's flag is a string slice: `-c a.yml,b.yml` is two files, as `-c a.yml -c b.yml`.
    files = [STDIN if item == "-" else Path(item) for value in compose_files for item in value.split(",") if item]
    try:
        specs = stack_specs(load_stack(files, dict(os.environ), click.get_binary_stream("stdin")), name)
    except ComposeError as exc:
        raise CommandError(str(exc)) from None
    for warning in specs.warnings:
        click.echo(warning, err=True)

    existing_networks = {n["Name"] for n in await api.network_list()}
    for external in specs.external_networks:
        if external not in existing_networks:
            raise CommandError(f'network "{external}" is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed')
    for network_name, body in specs.networks.items():
        if network_name not in existing_networks:
            click.echo(f"Creating network {network_name}")
            await api.network_create(body)

    secrets = {s["Spec"]["Name"]: s for s in await api.secret_list()}
    for external in specs.external_secrets:
        if external not in secrets:
            raise CommandError(f"secret not found: {external}")
    secret_ids = await _create_or_update("secret", specs.secrets, secrets, api.secret_create, api.secret_update)

    configs = {c["Spec"]["Name"]: c for c in await api.config_list()}
    for external in specs.external_configs:
        if external not in configs:
            raise CommandError(f"config not found: {external}")
    config_ids = await _create_or_update("config", specs.configs, configs, api.config_create, api.config_update)

    current = {s["Spec"]["Name"]: s for s in await api.service_list(_namespace_filter(name))}
    changed: list[tuple[str, dict[str, Any] | None]] = []
    warned: set[str] = set()

    def warn(answer: dict[str, Any] | None) -> None:
        for warning in (answer or {}).get("Warnings") or []:
            if warning not in warned:
                warned.add(warning)
                click.echo(warning, err=True)

    for spec in specs.services.values():
        for reference in container_spec(spec["TaskTemplate"]).get("Secrets") or []:
            reference["SecretID"] = secret_ids[reference["SecretName"]]
        for reference in container_spec(spec["TaskTemplate"]).get("Configs") or []:
            reference["ConfigID"] = config_ids[reference["ConfigName"]]
        found = current.pop(spec["Name"], None)
        container = spec["TaskTemplate"]["ContainerSpec"]
        if resolve_image == "always" or (resolve_image == "changed" and _image_changed(found, container["Image"])):
            warning = await pin_image(api, container)
            if warning:
                click.echo(warning, err=True)
        auth = registry_auth(container["Image"]) if with_registry_auth else None
        if found is None:
            click.echo(f"Creating service {spec['Name']}")
            created = await api.service_create(spec, registry_auth=auth)
            warn(created)
            changed.append((created["ID"], None))
            continue
        # As docker's: a deploy has no --force, so the count `service update --force` raised is kept, not undone.
        if "ForceUpdate" in task_template(found["Spec"]):
            spec["TaskTemplate"]["ForceUpdate"] = task_template(found["Spec"])["ForceUpdate"]
        if _differs(found["Spec"], spec) or auth:
            click.echo(f"Updating service {spec['Name']} (id: {found['ID']})")
            warn(await api.service_update(found["ID"], found["Version"]["Index"], spec, registry_auth=auth))
            changed.append((found["ID"], found.get("UpdateStatus")))
    if prune:
        for service_name, found in sorted(current.items()):
            click.echo(f"Removing service {service_name}")
            await api.service_remove(found["ID"])
    if not detach:
        for service_id, stale_status in changed:  # as `service create/update`: docker's progress display
            await wait_for_service(api, service_id, quiet, stale_status=stale_status)


def _image_changed(found: dict[str, Any] | None, image: str) -> bool:
    """docker's `--resolve-image changed`: a new service, or an image other than the one it runs (its digest
    left aside)."""
    if found is None:
        return True
    stored = container_spec(task_template(found["Spec"])).get("Image", "")
    return stored.partition("@")[0] != image.partition("@")[0]


def _differs(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a redeploy changes the service. What the node fills in when it stores a spec is no change: the
    defaults of a given UpdateConfig, RestartPolicy or port (objects.specs), Mode's replicas and a job's counts;
    nor is what it shows for a field not given, as dockerd does (objects.stored.shown_service_spec)."""
    try:
        wanted = validate_service_spec(wanted)
    except RaftswarmError:
        return True  # the node will say what is wrong with it
    mode = wanted.get("Mode") or {}
    if is_job(wanted):
        wanted["Mode"] = job_mode(mode)
    elif "Global" not in mode:
        replicated = mode.get("Replicated") or {}
        wanted["Mode"] = {"Replicated": {**replicated, "Replicas": replicated.get("Replicas", 1)}}
    stored, wanted = shown_service_spec(stored), shown_service_spec(wanted)
    return any(stored.get(key) != value for key, value in wanted.items())


@stack.command("ls")
@format_option()
@api_command
async def list_stacks(api: ApiClient, format_spec: str | None) -> None:
    """List stacks."""
    counts: dict[str, int] = {}
    for service in await api.service_list():
        namespace = (service["Spec"].get("Labels") or {}).get(NAMESPACE_LABEL)
        if namespace:
            counts[namespace] = counts.get(namespace, 0) + 1
    records = [{"Name": n, "Services": str(c), "Orchestrator": "Swarm"} for n, c in sorted(counts.items())]
    ListFormat(format_spec).print(records, STACK_HEADERS)


@stack.command()
@filter_option("Filter output based on conditions provided")
@format_option()
@quiet_option()
@click.argument("name", metavar="STACK")
@click.pass_context
def services(ctx: click.Context, filters: tuple[str, ...], format_spec: str | None, quiet: bool, name: str) -> None:
    """List the services in the stack."""
    ctx.invoke(list_services, filters=(*filters, f"label={NAMESPACE_LABEL}={name}"), format_spec=format_spec, quiet=quiet)


@stack.command()
@task_list_options
@click.argument("name", metavar="STACK")
@api_command
async def ps(
    api: ApiClient, filters: tuple[str, ...], format_spec: str | None, no_resolve: bool, no_trunc: bool, quiet: bool, name: str
) -> None:
    """List the tasks in the stack."""
    fmt = ListFormat(format_spec, quiet)
    task_filters = {**parse_filters(filters), **_namespace_filter(name)}
    tasks = await api.task_list(task_filters)
    if not tasks:
        raise CommandError(f"nothing found in stack: {name}")
    await print_tasks(api, NodeResolver(api), tasks, fmt, resolve=not no_resolve, truncate=not (no_trunc or quiet))


@stack.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="STACK [STACK...]")
@api_command
async def remove(api: ApiClient, names: tuple[str, ...]) -> None:
    """Remove one or more stacks."""
    errors = []
    for name in names:
        found = _namespace_filter(name)
        services_ = await api.service_list(found)
        secrets = await api.secret_list(found)
        configs = await api.config_list(found)
        networks = await api.network_list(found)
        if not (services_ or secrets or configs or networks):
            click.echo(f"Nothing found in stack: {name}")
            continue
        for service in sorted(services_, key=lambda s: s["Spec"]["Name"]):
            click.echo(f"Removing service {service['Spec']['Name']}")
            await api.service_remove(service["ID"])
        for secret in sorted(secrets, key=lambda s: s["Spec"]["Name"]):
            click.echo(f"Removing secret {secret['Spec']['Name']}")
            try:
                await api.secret_remove(secret["ID"])
            except ApiError as exc:
                errors.append(daemon_message(exc))
        for config in sorted(configs, key=lambda c: c["Spec"]["Name"]):
            click.echo(f"Removing config {config['Spec']['Name']}")
            try:
                await api.config_remove(config["ID"])
            except ApiError as exc:
                errors.append(daemon_message(exc))
        for network in sorted(networks, key=lambda n: n["Name"]):
            click.echo(f"Removing network {network['Name']}")
            try:
                await api.network_remove(network["Id"])
            except ApiError as exc:
                errors.append(daemon_message(exc))
    if errors:
        raise CommandError("\n".join(errors))
