"""`service inspect`: a service as JSON, or with --pretty as docker's serviceInspectPrettyTemplate shows it."""

from __future__ import annotations

import time
from typing import Any

import click

from ...api.client import ApiClient, ApiError
from .. import output
from ..connection import api_command, inspect_each
from ..errors import CommandError
from ..shapes import container_spec, endpoint_ports, spec_of, task_template


async def _inspect(api: ApiClient, ref: str) -> dict[str, Any]:
    try:
        return await api.service_inspect(ref)
    except ApiError as exc:
        if exc.status == 404:
            raise CommandError(f"Error: no such service: {ref}") from None
        raise


@click.command()
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format")
@click.argument("refs", nargs=-1, required=True, metavar="SERVICE [SERVICE...]")
@api_command
async def inspect(api: ApiClient, pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more services."""
    if pretty:
        for ref in refs:
            click.echo(pretty_service(await _inspect(api, ref), time.time()))
        return
    await inspect_each(refs, lambda ref: _inspect(api, ref))


def pretty_service(s: dict[str, Any], now: float) -> str:
    """docker's serviceInspectPrettyTemplate, tabs and trailing spaces included; `now` dates UpdateStatus."""
    spec = spec_of(s)
    template = task_template(spec)
    container = container_spec(template)
    mode = spec.get("Mode") or {}
    lines = ["", f"ID:\t\t{s['ID']}", f"Name:\t\t{spec.get('Name', '')}"]
    if spec.get("Labels"):
        lines.append("Labels:")
        lines += [f" {k}" + (f"={v}" if v else "") for k, v in sorted(spec["Labels"].items())]
    if mode.get("Global") is not None:
        lines.append("Service Mode:\tGlobal")
    elif mode.get("Replicated") is not None:
        lines.append("Service Mode:\tReplicated")
        if mode["Replicated"].get("Replicas") is not None:
            lines.append(f" Replicas:\t{mode['Replicated']['Replicas']}")
    else:
        lines.append("Service Mode:")
    lines += _pretty_update_status(s.get("UpdateStatus") or {}, now)
    placement = template.get("Placement") or {}
    lines.append("Placement:")
    if placement.get("Constraints"):
        lines.append(f" Constraints:\t[{' '.join(placement['Constraints'])}]")
    preferences = [
        f"spread={p['Spread']['SpreadDescriptor']}" for p in placement.get("Preferences") or [] if p.get("Spread")
    ]
    if preferences:
        lines.append(f" Preferences:   [{' '.join(preferences)}]")
    if placement.get("MaxReplicas"):
        lines.append(f" Max Replicas Per Node:   {placement['MaxReplicas']}")
    lines += _pretty_update_config("UpdateConfig", "Update order:      ", spec.get("UpdateConfig"))
    lines += _pretty_update_config("RollbackConfig", "Rollback order:    ", spec.get("RollbackConfig"))
    lines += ["ContainerSpec:", f" Image:\t\t{container.get('Image', '')}"]
    if container.get("Args"):
        lines.append(" Args:\t\t" + "".join(f"{arg} " for arg in container["Args"]))
    if container.get("Env"):
        lines.append(" Env:\t\t" + "".join(f"{env} " for env in container["Env"]))
    if container.get("Dir"):
        lines.append(f" Dir:\t\t{container['Dir']}")
    if container.get("Init") is not None:
        lines.append(f" Init:\t\t{'true' if container['Init'] else 'false'}")
    if container.get("User"):
        lines.append(f" User: {container['User']}")
    lines += _pretty_container_fields(container)
    if container.get("Configs"):
        lines.append("Configs:")
        for config in container["Configs"]:
            lines += [
                f" Target:\t{(config.get('File') or {}).get('Name', '')}",
                f"  Source:\t{config.get('ConfigName', '')}",
            ]
    if container.get("Secrets"):
        lines.append("Secrets:")
        for secret in container["Secrets"]:
            lines += [
                f" Target:\t{(secret.get('File') or {}).get('Name', '')}",
                f"  Source:\t{secret.get('SecretName', '')}",
            ]
    lines += _pretty_log_driver(template.get("LogDriver"))
    lines += _pretty_resources(template.get("Resources"))
    if template.get("Networks"):
        lines.append("Networks:" + "".join(f" {n.get('Target', '')}" for n in template["Networks"]) + " ")
    lines.append(f"Endpoint Mode:\t{(spec.get('EndpointSpec') or {}).get('Mode', '')}")
    ports = endpoint_ports(s)
    if ports:
        lines.append("Ports:")
        for port in ports:
            lines += [
                f" PublishedPort = {port.get('PublishedPort', 0)}",
                f"  Protocol = {port.get('Protocol', '')}",
                f"  TargetPort = {port.get('TargetPort', 0)}",
                f"  PublishMode = {port.get('PublishMode', '')}",
            ]
        lines[-1] += " "
    lines += _pretty_healthcheck(container.get("Healthcheck"))
    return "\n".join(lines) + "\n"


def _pretty_container_fields(container: dict[str, Any]) -> list[str]:
    """Capabilities, sysctls, ulimits and mounts, as the template has them (maps sorted by key, as Go's
    templates range over them)."""
    lines = []
    added, dropped = container.get("CapabilityAdd") or [], container.get("CapabilityDrop") or []
    if added or dropped:
        lines.append("Capabilities:")
        lines += [f" Add: {', '.join(added)}"] if added else []
        lines += [f" Drop: {', '.join(dropped)}"] if dropped else []
    if container.get("Sysctls"):
        lines.append("SysCtls:")
        lines += [f" {k}" + (f": {v}" if v else "") for k, v in sorted(container["Sysctls"].items())]
    ulimits = {u.get("Name", ""): f"{u.get('Soft', 0)}:{u.get('Hard', 0)}" for u in container.get("Ulimits") or []}
    if ulimits:
        lines.append("Ulimits:")
        lines += [f" {name}: {limits}" for name, limits in sorted(ulimits.items())]
    if container.get("Mounts"):
        lines.append("Mounts:")
        for mount in container["Mounts"]:
            lines += [
                f" Target:\t{mount.get('Target', '')}",
                f"  Source:\t{mount.get('Source', '')}",
                f"  ReadOnly:\t{'true' if mount.get('ReadOnly') else 'false'}",
                f"  Type:\t\t{mount.get('Type', '')}",
            ]
    return lines


def _pretty_log_driver(driver: dict[str, Any] | None) -> list[str]:
    if driver is None:
        return []
    lines = ["Log Driver:"]
    if driver.get("Name"):
        lines.append(f" Name:\t\t{driver['Name']}")
    if driver.get("Options"):
        lines.append(" LogOpts:")
        lines += [f"  {k}" + (f":       {v}" if v else "") for k, v in sorted(driver["Options"].items())]
    return [*lines, ""]  # the template ends this part with an empty line


def _pretty_healthcheck(healthcheck: dict[str, Any] | None) -> list[str]:
    if healthcheck is None:
        return []
    lines = [
        " Healthcheck:",
        f"  Interval = {output.go_duration(healthcheck.get('Interval') or 0)}",
        f"  Retries = {healthcheck.get('Retries') or 0}",
        f"  StartPeriod =\t{output.go_duration(healthcheck.get('StartPeriod') or 0)}",
        f"  Timeout =\t{output.go_duration(healthcheck.get('Timeout') or 0)}",
    ]
    if healthcheck.get("Test"):
        lines += ["  Tests:", *(f"\t Test = {test}" for test in healthcheck["Test"])]
        lines[-1] += " "
    return lines


def _pretty_update_status(status: dict[str, Any], now: float) -> list[str]:
    if not status.get("State"):
        return []
    lines = ["UpdateStatus:", f" State:\t\t{status['State']}"]
    for key, label, shown in (
        ("StartedAt", " Started:\t", True),
        ("CompletedAt", " Completed:\t", status["State"] == "completed"),
    ):
        stamp = output.parse_timestamp(status.get(key))
        if stamp is not None and shown:
            lines.append(f"{label}{output.human_duration(now - stamp.timestamp())} ago")
    lines.append(f" Message:\t{status.get('Message', '')}")
    return lines


def _pretty_update_config(title: str, order_label: str, config: dict[str, Any] | None) -> list[str]:
    if config is None:
        return []
    lines = [f"{title}:", f" Parallelism:\t{config.get('Parallelism', 0)}"]
    if (config.get("Delay") or 0) > 0:
        lines.append(f" Delay:\t\t{output.go_duration(config['Delay'])}")
    lines.append(f" On failure:\t{config.get('FailureAction', '')}")
    if (config.get("Monitor") or 0) > 0:
        lines.append(f" Monitoring Period: {output.go_duration(config['Monitor'])}")
    lines.append(f" Max failure ratio: {output.go_float(config.get('MaxFailureRatio') or 0)}")
    lines.append(f" {order_label}{config.get('Order', '')}")
    return lines


def _pretty_resources(resources: dict[str, Any] | None) -> list[str]:
    if resources is None:
        return []
    lines = ["Resources:"]
    for title, amounts in (("Reservations", resources.get("Reservations")), ("Limits", resources.get("Limits"))):
        amounts = amounts or {}
        cpus, memory = amounts.get("NanoCPUs") or 0, amounts.get("MemoryBytes") or 0
        if cpus <= 0 and memory <= 0 and (title == "Reservations" or (amounts.get("Pids") or 0) <= 0):
            continue
        lines.append(f" {title}:")
        if cpus > 0:
            lines.append(f"  CPU:\t\t{output.go_float(cpus / 1e9)}")
        if memory:
            lines.append(f"  Memory:\t{output.bytes_size(memory)}")
    pids = (resources.get("Limits") or {}).get("Pids") or 0
    if pids > 0:
        lines.append(f"  PIDs:\t\t{pids}")
    return lines
