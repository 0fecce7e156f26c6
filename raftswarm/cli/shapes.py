"""The parts of Docker's API objects (Service, Task, Node, the answer of `GET /info`) the CLI looks into.

The node, like dockerd, may leave any part out or send it as null; each accessor reads that as empty, the way
docker's Go structs read a missing part as its zero value.
"""

from __future__ import annotations

from typing import Any


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object's Spec (a Service's ServiceSpec, a Task's TaskSpec, a Node's or Secret's spec)."""
    return obj.get("Spec") or {}


def status_of(obj: dict[str, Any]) -> dict[str, Any]:
    """A Task's or Node's observed Status."""
    return obj.get("Status") or {}


def description_of(node: dict[str, Any]) -> dict[str, Any]:
    """What a Node reports about itself: Hostname, Platform, Resources, Engine, TLSInfo."""
    return node.get("Description") or {}


def task_template(service_spec: dict[str, Any]) -> dict[str, Any]:
    """A ServiceSpec's TaskTemplate: the TaskSpec every task of the service is made from."""
    return service_spec.get("TaskTemplate") or {}


def container_spec(task_spec: dict[str, Any]) -> dict[str, Any]:
    """A TaskSpec's ContainerSpec (image, command, env, secrets)."""
    return task_spec.get("ContainerSpec") or {}


def replicated_mode(service_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The service's Mode.Replicated ({"Replicas": n}), or None when the service is not replicated."""
    return (service_spec.get("Mode") or {}).get("Replicated")


def endpoint_ports(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The ports a Service publishes, as the node allocated them (Endpoint.Ports)."""
    return (service.get("Endpoint") or {}).get("Ports") or []


def task_state(task: dict[str, Any]) -> str | None:
    """A task's observed state as the API spells it ("running"), None if it reports none."""
    return status_of(task).get("State")


def node_name(node: dict[str, Any]) -> str:
    """What docker's idresolver shows for a node: its name, else its hostname, else its ID."""
    return spec_of(node).get("Name") or description_of(node).get("Hostname") or node["ID"]


def swarm_info(info: dict[str, Any]) -> dict[str, Any]:
    """The `Swarm` part of `GET /info`: NodeID, LocalNodeState, ControlAvailable, Cluster."""
    return info.get("Swarm") or {}
