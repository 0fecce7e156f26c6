"""The commands that change services: create, update, scale, rollback, rm.

A command that changes a service reads it, changes a copy of its spec, and writes the whole spec back at the
version it read, so a concurrent change makes the write fail ("update out of sequence") rather than be lost.
create, update, scale and rollback then wait, unless --detach, until the service converges (`progress`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import click
from click.core import ParameterSource

from ...api.client import ApiClient, ApiError
from ...objects.jobs import REPLICATED_JOB
from ..connection import api_command, failure_message, remove_each
from ..errors import CommandError
from ..options import check_env, check_labels
from ..shapes import container_spec, spec_of, task_template
from .containerflags import container_create_options, container_options, container_update_options, read_env_file
from .containerspec import create_container_fields, update_container_fields
from .flags import (
    CONFIG,
    NETWORK,
    PLACEMENT_PREF,
    PORT,
    SECRET,
    Flags,
    detach_option,
    quiet_progress_option,
    service_options,
)
from .goflags import COMMAND, PflagCommand
from .image import pin_image, registry_auth
from .progress import wait_for_service
from .spec import apply_update, build_spec, set_omitempty

# -- create ---------------------------------------------------------------------------------------------


@click.command(cls=PflagCommand, context_settings={"allow_interspersed_args": False})
@click.option(
    "--mode",
    default="replicated",
    metavar="string",
    help='Service mode ("replicated", "global", "replicated-job", "global-job")  [default: "replicated"]',
)
@click.option("--name", metavar="string", help="Service name")
@service_options(create=True)
@container_options
@container_create_options
@click.option("-l", "--label", multiple=True, callback=check_labels, metavar="list", help="Service labels")
@click.option("--container-label", multiple=True, callback=check_labels, metavar="list", help="Container labels")
@click.option("-e", "--env", multiple=True, callback=check_env, metavar="list", help="Set environment variables")
@click.option("--constraint", multiple=True, metavar="list", help="Placement constraints")
@click.option("--placement-pref", multiple=True, type=PLACEMENT_PREF, metavar="pref", help="Add a placement preference")
@click.option("--network", multiple=True, type=NETWORK, metavar="network", help="Network attachments")
@click.option("--secret", multiple=True, type=SECRET, metavar="secret", help="Specify secrets to expose to the service")
@click.option(
    "--config", multiple=True, type=CONFIG, metavar="config", help="Specify configurations to expose to the service"
)
@click.option("-p", "--publish", multiple=True, type=PORT, metavar="port", help="Publish a port as a node port")
@click.argument("image")
@click.argument("command", nargs=-1, metavar="[COMMAND] [ARG...]")
@api_command
async def create(api: ApiClient, image: str, command: tuple[str, ...], **options: Any) -> None:
    """Create a new service."""
    # docker's makeEnv: the files' variables first, so that --env overrides them
    options["env"] = (*(v for path in options["env_file"] for v in read_env_file(path)), *options["env"])
    flags = Flags(options)
    spec = build_spec(image, command, flags)
    create_container_fields(spec, flags)
    if flags["secret"]:
        spec["TaskTemplate"]["ContainerSpec"]["Secrets"] = await resolve_secrets(api, flags["secret"])
    if flags["config"]:
        spec["TaskTemplate"]["ContainerSpec"]["Configs"] = await resolve_configs(api, flags["config"])
    await resolve_credential_spec_config(api, spec["TaskTemplate"]["ContainerSpec"])
    warning = None if flags["no_resolve_image"] else await pin_image(api, spec["TaskTemplate"]["ContainerSpec"])
    auth = registry_auth(image) if flags["with_registry_auth"] else None
    response = await api.service_create(spec, registry_auth=auth)
    _warn({"Warnings": [warning]} if warning else None)
    _warn(response)
    click.echo(response["ID"])
    if not flags["detach"]:
        await wait_for_service(api, response["ID"], flags["quiet"])


def _warn(response: dict[str, Any] | None) -> None:
    for warning in (response or {}).get("Warnings") or []:
        click.echo(warning, err=True)


# -- update ---------------------------------------------------------------------------------------------


@click.command(cls=PflagCommand)
@click.option("--image", metavar="string", help="Service image tag")
@click.option("--args", type=COMMAND, metavar="command", help="Service command args")
@click.option("--rollback", is_flag=True, help="Rollback to previous specification")
@click.option("--force", is_flag=True, help="Force update even if no changes require it")
@service_options(create=False)
@container_options
@container_update_options
@click.option(
    "--env-add", multiple=True, callback=check_env, metavar="list", help="Add or update an environment variable"
)
@click.option("--env-rm", multiple=True, metavar="list", help="Remove an environment variable")
@click.option("--label-add", multiple=True, callback=check_labels, metavar="list", help="Add or update a service label")
@click.option("--label-rm", multiple=True, metavar="list", help="Remove a label by its key")
@click.option(
    "--container-label-add",
    multiple=True,
    callback=check_labels,
    metavar="list",
    help="Add or update a container label",
)
@click.option("--container-label-rm", multiple=True, metavar="list", help="Remove a container label by its key")
@click.option("--constraint-add", multiple=True, metavar="list", help="Add or update a placement constraint")
@click.option("--constraint-rm", multiple=True, metavar="list", help="Remove a constraint")
@click.option(
    "--placement-pref-add", multiple=True, type=PLACEMENT_PREF, metavar="pref", help="Add a placement preference"
)
@click.option(
    "--placement-pref-rm", multiple=True, type=PLACEMENT_PREF, metavar="pref", help="Remove a placement preference"
)
@click.option("--secret-add", multiple=True, type=SECRET, metavar="secret", help="Add or update a secret on a service")
@click.option("--secret-rm", multiple=True, metavar="list", help="Remove a secret")
@click.option(
    "--config-add", multiple=True, type=CONFIG, metavar="config", help="Add or update a config file on a service"
)
@click.option("--config-rm", multiple=True, metavar="list", help="Remove a configuration file")
@click.option("--publish-add", multiple=True, type=PORT, metavar="port", help="Add or update a published port")
@click.option(
    "--publish-rm", multiple=True, type=PORT, metavar="port", help="Remove a published port by its target port"
)
@click.option("--network-add", multiple=True, type=NETWORK, metavar="network", help="Add a network")
@click.option("--network-rm", multiple=True, metavar="list", help="Remove a network")
@click.argument("ref", metavar="SERVICE")
@api_command
async def update(api: ApiClient, ref: str, **options: Any) -> None:
    """Update a service."""
    flags = Flags(options)
    if flags["rollback"]:
        given = click.get_current_context().get_parameter_source
        others = [
            name
            for name in options
            if name not in ("rollback", "detach", "quiet", "ref") and given(name) == ParameterSource.COMMANDLINE
        ]
        if others:
            raise CommandError("other flags may not be combined with --rollback")
    current = await api.service_inspect(ref)
    spec = copy.deepcopy(spec_of(current))
    warning = None
    if not flags["rollback"]:
        apply_update(spec, flags)
        update_container_fields(spec, flags)
        container = spec["TaskTemplate"]["ContainerSpec"]
        if flags.given("image") and not flags["no_resolve_image"]:
            warning = await pin_image(api, container)
        if flags.given("secret_add", "secret_rm"):
            secrets = await updated_secrets(
                api, container.get("Secrets") or [], flags["secret_rm"], flags["secret_add"]
            )
            set_omitempty(container, "Secrets", secrets)
        if flags.given("config_add", "config_rm"):
            configs = await updated_configs(
                api, container.get("Configs") or [], flags["config_rm"], flags["config_add"]
            )
            set_omitempty(container, "Configs", configs)
        if flags["credential_spec"]:
            await resolve_credential_spec_config(api, container)
    auth = None
    if flags["with_registry_auth"]:
        auth = registry_auth(container_spec(task_template(spec)).get("Image", ""))
    response = await api.service_update(
        current["ID"], current["Version"]["Index"], spec, rollback=flags["rollback"], registry_auth=auth
    )
    _warn({"Warnings": [warning]} if warning else None)
    _warn(response)
    click.echo(ref)
    if not flags["detach"]:
        await wait_for_service(api, ref, flags["quiet"], stale_status=current.get("UpdateStatus"))


# -- scale / rollback / rm ------------------------------------------------------------------------------


def _check_scale_args(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        name, sep, replicas = value.partition("=")
        if not sep or not name or not replicas:
            raise click.BadParameter(f"Invalid scale specifier '{value}'.", ctx, param)
    return values


@click.command()
@detach_option()
@click.argument(
    "scales", nargs=-1, required=True, metavar="SERVICE=REPLICAS [SERVICE=REPLICAS...]", callback=_check_scale_args
)
@api_command
async def scale(api: ApiClient, detach: bool, scales: tuple[str, ...]) -> None:
    """Scale one or multiple replicated services."""
    errors: list[str] = []
    scaled: list[tuple[str, dict[str, Any] | None]] = []
    for value in scales:
        ref, _, count = value.partition("=")
        if not (count.isascii() and count.isdigit()):
            errors.append(
                f'{ref}: invalid replicas value {count}: strconv.ParseUint: parsing "{count}": invalid syntax'
            )
            continue
        try:
            current = await api.service_inspect(ref)
            spec = copy.deepcopy(spec_of(current))
            mode = spec.get("Mode") or {}
            if mode.get("Replicated") is not None:
                mode["Replicated"]["Replicas"] = int(count)
            elif mode.get(REPLICATED_JOB) is not None:
                mode[REPLICATED_JOB]["TotalCompletions"] = int(count)
            else:
                raise CommandError("scale can only be used with replicated or replicated-job mode")
            _warn(await api.service_update(current["ID"], current["Version"]["Index"], spec))
        except (CommandError, ApiError) as exc:
            errors.append(f"{ref}: {failure_message(exc)}")
            continue
        click.echo(f"{ref} scaled to {int(count)}")
        scaled.append((ref, current.get("UpdateStatus")))
    if not detach:
        for ref, stale_status in scaled:
            try:
                await wait_for_service(api, ref, quiet=False, stale_status=stale_status)
            except (CommandError, ApiError) as exc:
                errors.append(f"{ref}: {failure_message(exc)}")
    if errors:
        raise CommandError("\n".join(errors))


@click.command()
@detach_option()
@quiet_progress_option()
@click.argument("ref", metavar="SERVICE")
@api_command
async def rollback(api: ApiClient, detach: bool, quiet: bool, ref: str) -> None:
    """Revert changes to a service's configuration."""
    current = await api.service_inspect(ref)
    response = await api.service_update(
        current["ID"], current["Version"]["Index"], spec_of(current), rollback=True
    )
    _warn(response)
    click.echo(ref)
    if not detach:
        await wait_for_service(api, ref, quiet, stale_status=current.get("UpdateStatus"))


@click.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="SERVICE [SERVICE...]")
@api_command
async def remove(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Remove one or more services."""
    await remove_each(refs, api.service_remove)


# -- secrets ----------------------------------------------------------------------------------------------


async def resolve_secrets(api: ApiClient, references: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """docker's ParseSecrets: give each reference the ID of the secret it names, found with one
    `GET /secrets?filters={"name": [...]}`."""
    by_target: dict[str, dict[str, Any]] = {}
    for reference in references:
        target = reference["File"]["Name"]
        if target in by_target:
            raise CommandError(f"duplicate secret target for {reference['SecretName']} not allowed")
        by_target[target] = copy.deepcopy(reference)
    if not by_target:
        return []
    names = list(dict.fromkeys(r["SecretName"] for r in by_target.values()))
    found = {s["Spec"]["Name"]: s["ID"] for s in await api.secret_list({"name": names})}
    for reference in by_target.values():
        if reference["SecretName"] not in found:
            raise CommandError(f"secret not found: {reference['SecretName']}")
        reference["SecretID"] = found[reference["SecretName"]]
    return list(by_target.values())


async def updated_secrets(
    api: ApiClient, current: Sequence[dict[str, Any]], remove: Sequence[str], add: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """docker's getUpdatedSecrets: --secret-rm by secret name, then --secret-add resolved like create's."""
    kept = [s for s in current if s.get("SecretName") not in set(remove)]
    return kept + await resolve_secrets(api, add) if add else kept


# -- configs ----------------------------------------------------------------------------------------------


async def resolve_configs(api: ApiClient, references: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """docker's ParseConfigs: give each reference the ID of the config it names, found with one
    `GET /configs?filters={"name": [...]}`."""
    by_target: dict[str, dict[str, Any]] = {}
    for reference in references:
        target = reference["File"]["Name"]
        if target in by_target:
            raise CommandError(f"duplicate config target for {reference['ConfigName']} not allowed")
        by_target[target] = copy.deepcopy(reference)
    if not by_target:
        return []
    names = list(dict.fromkeys(r["ConfigName"] for r in by_target.values()))
    found = {c["Spec"]["Name"]: c["ID"] for c in await api.config_list({"name": names})}
    for reference in by_target.values():
        if reference["ConfigName"] not in found:
            raise CommandError(f"config not found: {reference['ConfigName']}")
        reference["ConfigID"] = found[reference["ConfigName"]]
    return list(by_target.values())


async def updated_configs(
    api: ApiClient, current: Sequence[dict[str, Any]], remove: Sequence[str], add: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """docker's getUpdatedConfigs: --config-rm by config name, then --config-add resolved like create's."""
    kept = [c for c in current if c.get("ConfigName") not in set(remove)]
    return kept + await resolve_configs(api, add) if add else kept


# -- credential specs -------------------------------------------------------------------------------------


async def resolve_credential_spec_config(api: ApiClient, container: dict[str, Any]) -> None:
    """docker's setConfigs for a `--credential-spec config://NAME`: the config goes to the service as a Runtime
    reference, and the credential spec names it by ID (found with `GET /configs?filters={"name": [NAME]}`)."""
    credential_spec = (container.get("Privileges") or {}).get("CredentialSpec") or {}
    name = credential_spec.get("Config")
    if not name:
        return
    found = {c["Spec"]["Name"]: c["ID"] for c in await api.config_list({"name": [name]})}
    if name not in found:
        raise CommandError(f"config not found: {name}")
    references = [
        r for r in container.get("Configs") or [] if not (r.get("Runtime") is not None and r.get("ConfigName") == name)
    ]
    container["Configs"] = [*references, {"Runtime": {}, "ConfigID": found[name], "ConfigName": name}]
    credential_spec["Config"] = found[name]
