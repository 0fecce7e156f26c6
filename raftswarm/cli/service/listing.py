"""`service ls` and `service ps`: services as docker's service formatter shows them, and their tasks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import click

from ...api.client import ApiClient
from ...objects.jobs import GLOBAL_JOB, REPLICATED_JOB, is_job, job_counts
from ...objects.tasks import TaskState
from .. import output
from ..connection import api_command
from ..errors import CommandError
from ..listing import ListFormat, filter_option, format_option, quiet_option
from ..nodelookup import NodeResolver, active_node_ids
from ..options import parse_filters
from ..shapes import container_spec, endpoint_ports, replicated_mode, spec_of, task_state, task_template
from ..tasks import print_tasks, task_list_options

SERVICE_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "Mode": "MODE",
    "Replicas": "REPLICAS",
    "Image": "IMAGE",
    "Ports": "PORTS",
}


def service_record(s: dict[str, Any]) -> dict[str, Any]:
    """The fields docker's service formatter offers (`--format`), computed the same way."""
    spec = spec_of(s)
    return {
        "ID": s["ID"][: output.SHORT_ID_LENGTH],
        "Name": spec.get("Name", ""),
        "Mode": _mode_name(spec),
        "Replicas": _replicas(s),
        "Image": _list_image(container_spec(task_template(spec)).get("Image", "")),
        "Ports": published_ports(endpoint_ports(s)),
    }


_MODE_NAMES = (
    ("Global", "global"),
    ("Replicated", "replicated"),
    (REPLICATED_JOB, "replicated job"),
    (GLOBAL_JOB, "global job"),
)


def _mode_name(spec: dict[str, Any]) -> str:
    mode = spec.get("Mode") or {}
    for key, name in _MODE_NAMES:
        if mode.get(key) is not None:
            return name
    return ""


def _replicas(s: dict[str, Any]) -> str:
    """docker's serviceContext.Replicas: running/desired; for a job also its completions ("2/2 (3/10
    completed)"; a global job's total is the tasks still to complete and those completed); for a replicated
    service its limit per node."""
    status = s.get("ServiceStatus") or {}
    running, desired, completed = (status.get(k, 0) for k in ("RunningTasks", "DesiredTasks", "CompletedTasks"))
    text = f"{running}/{desired}"
    spec = spec_of(s)
    mode = _mode_name(spec)
    if mode == "replicated job":
        return f"{text} ({completed}/{job_counts(spec)[1]} completed)"
    if mode == "global job":
        return f"{text} ({completed}/{desired + completed} completed)"
    max_per_node = (task_template(spec).get("Placement") or {}).get("MaxReplicas") or 0
    if mode == "replicated" and max_per_node > 0:
        text += f" (max {max_per_node} per node)"
    return text


_TAGGED_IMAGE = re.compile(r"(?P<name>[^@]*/)?(?P<last>[^/@:]+):(?P<tag>[\w][\w.-]*)(?:@.*)?")


def _list_image(image: str) -> str:
    """What `docker service ls` shows: a tagged image without its digest, in docker's short form
    (docker.io/library/nginx:1.27@sha256:... -> nginx:1.27); an untagged one as it is."""
    match = _TAGGED_IMAGE.fullmatch(image)
    if match is None:
        return image
    name = (match["name"] or "") + match["last"]
    name = name.removeprefix("docker.io/").removeprefix("library/")
    return f"{name}:{match['tag']}"


def published_ports(ports: Sequence[dict[str, Any]]) -> str:
    """docker's serviceContext.Ports: ingress ports, consecutive ones grouped ("*:8080-8081->80-81/tcp")."""
    ranges: list[str] = []
    current: dict[str, Any] | None = None

    def shown(r: dict[str, Any]) -> str:
        published = f"{r['p0']}-{r['p1']}" if r["p1"] > r["p0"] else str(r["p0"])
        target = f"{r['t0']}-{r['t1']}" if r["t1"] > r["t0"] else str(r["t0"])
        return f"*:{published}->{target}/{r['protocol']}"

    ordered = sorted(ports, key=lambda p: (p.get("Protocol", ""), p.get("PublishedPort", 0)))
    for port in ordered:
        if port.get("PublishMode", "ingress") != "ingress":
            continue
        published, target, protocol = port.get("PublishedPort", 0), port.get("TargetPort", 0), port.get("Protocol", "")
        if current is not None and (
            protocol == current["protocol"]
            and 0 <= published - current["p1"] <= 1
            and 0 <= target - current["t1"] <= 1
            and not (current["t1"] != current["t0"] and target <= current["t1"])
        ):
            current["p1"], current["t1"] = published, target
            continue
        if current is not None and current["p0"] > 0:
            ranges.append(shown(current))
        current = {"p0": published, "p1": published, "t0": target, "t1": target, "protocol": protocol}
    if current is not None and current["p0"] > 0:
        ranges.append(shown(current))
    return ", ".join(ranges)


async def _add_service_status(api: ApiClient, services: list[dict[str, Any]]) -> None:
    """docker's AppendServiceStatus, for a node that did not send ServiceStatus: count the tasks."""
    missing = [s for s in services if s.get("ServiceStatus") is None and not is_job(spec_of(s))]
    if not missing:
        return
    status: dict[str, dict[str, int]] = {}
    for s in missing:
        replicated = replicated_mode(spec_of(s))
        desired = replicated.get("Replicas", 1) if replicated is not None else 0
        s["ServiceStatus"] = {"RunningTasks": 0, "DesiredTasks": desired}
        status[s["ID"]] = {"RunningTasks": 0, "DesiredTasks": 0}
    tasks = await api.task_list({"service": list(status)})
    if not tasks:
        return
    active = await active_node_ids(api)
    for task in tasks:
        counts = status.get(task.get("ServiceID", ""))
        if counts is None:
            continue
        if task.get("DesiredState") != TaskState.SHUTDOWN.api:
            counts["DesiredTasks"] += 1
        if task.get("NodeID") in active and task_state(task) == TaskState.RUNNING.api:
            counts["RunningTasks"] += 1
    for s in missing:
        s["ServiceStatus"] = status[s["ID"]]


@click.command("ls")
@filter_option()
@format_option()
@quiet_option()
@api_command
async def list_services(api: ApiClient, filters: tuple[str, ...], format_spec: str | None, quiet: bool) -> None:
    """List services."""
    fmt = ListFormat(format_spec, quiet)
    services = await api.service_list(parse_filters(filters), status=not quiet)
    if not quiet:
        await _add_service_status(api, services)
    services.sort(key=lambda s: output.natural_key(spec_of(s).get("Name", "")))
    fmt.print([service_record(s) for s in services], SERVICE_HEADERS)


async def _service_ids(api: ApiClient, refs: Sequence[str]) -> tuple[list[str], list[str]]:
    """docker's createFilter: each SERVICE by full ID, then name, then unique ID prefix. Returns the IDs found
    and a "no such service" line per SERVICE not found."""
    by_id = await api.service_list({"id": list(refs)})
    by_name = await api.service_list({"name": list(refs)})
    found, missing = [], []
    for ref in refs:
        exact = [s for s in by_id if s["ID"] == ref] or [s for s in by_name if spec_of(s).get("Name") == ref]
        prefixed = exact or [s for s in by_id if s["ID"].startswith(ref)]
        if len(prefixed) > 1:
            raise CommandError(f"multiple services found with provided prefix: {ref}")
        if prefixed:
            found.append(prefixed[0]["ID"])
        else:
            missing.append(f"no such service: {ref}")
    if not found:
        raise CommandError("\n".join(missing))
    return found, missing


@click.command()
@task_list_options
@click.argument("refs", nargs=-1, required=True, metavar="SERVICE [SERVICE...]")
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
    """List the tasks of one or more services."""
    fmt = ListFormat(format_spec, quiet)
    task_filters = parse_filters(filters)
    service_ids, missing = await _service_ids(api, refs)
    task_filters["service"] = task_filters.get("service", []) + service_ids
    resolver = NodeResolver(api)
    if "self" in task_filters.get("node", []):
        task_filters["node"] = [await resolver.resolve(n) if n == "self" else n for n in task_filters["node"]]
    tasks = await api.task_list(task_filters)
    await print_tasks(api, resolver, tasks, fmt, resolve=not no_resolve, truncate=not (no_trunc or quiet))
    if missing:
        raise CommandError("\n".join(missing))
