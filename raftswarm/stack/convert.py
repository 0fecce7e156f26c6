"""A `StackConfig` -> the Docker API bodies that deploy it as a stack, after docker/cli `cli/compose/convert`.

Every name is scoped under the stack namespace (``<ns>_web``) unless the file gives it with `name:` or it is
external, and everything the stack creates carries the namespace label, which is how `raftswarm stack ls`,
`services`, `ps` and `rm` find it again. The bodies are NetworkCreate bodies, SecretSpecs and ConfigSpecs (the
data read from `file:`) and ServiceSpecs; secret and config references carry only SecretName and ConfigName, the
deployer looks up the IDs.

Fields the compose file leaves unset are left out of the specs, so the swarm's defaults apply, except the
ones Docker always sends: the namespace label, UpdateConfig.Parallelism (1) and EndpointSpec.Mode (vip).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ComposeError
from ..objects.defaults import UPDATE_DEFAULTS
from ..objects.networks import DEFAULT_DRIVER
from .model import DEFAULT_NETWORK, NetworkConfig, ServiceConfig, StackConfig

NAMESPACE_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"


@dataclass(frozen=True)
class StackSpecs:
    """Docker API bodies for a stack, keyed by their full (namespaced) names; services by compose name."""

    networks: dict[str, dict[str, Any]]
    external_networks: list[str]
    secrets: dict[str, dict[str, Any]]
    external_secrets: list[str]
    services: dict[str, dict[str, Any]]
    warnings: list[str]
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    external_configs: list[str] = field(default_factory=list)


def stack_specs(config: StackConfig, namespace: str) -> StackSpecs:
    """The API bodies that deploy `config` as the stack `namespace`. Reads `file:` secrets and configs; raises
    `ComposeError`."""
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", namespace):
        raise ComposeError(f"invalid stack name {namespace!r}: use letters, digits, '_', '.' and '-'")

    def scoped(name: str) -> str:
        return f"{namespace}_{name}"

    def stack_labels(labels: Mapping[str, str]) -> dict[str, str]:
        return {**labels, NAMESPACE_LABEL: namespace}

    def network_name(key: str) -> str:
        network = config.networks.get(key, NetworkConfig())
        return network.name or (key if network.external else scoped(key))

    def secret_name(key: str) -> str:
        secret = config.secrets[key]
        return secret.name or (key if secret.external else scoped(key))

    def config_name(key: str) -> str:
        definition = config.configs[key]
        return definition.name or (key if definition.external else scoped(key))

    used_networks = {key for service in config.services.values() for key in (service.networks or [DEFAULT_NETWORK])}
    networks: dict[str, dict[str, Any]] = {}
    external_networks: list[str] = []
    for key in sorted(used_networks):
        network = config.networks.get(key, NetworkConfig())
        if network.external:
            external_networks.append(network_name(key))
            continue
        body: dict[str, Any] = {
            "Name": network_name(key),
            "Driver": network.driver or DEFAULT_DRIVER,
            "Attachable": network.attachable,
            "Labels": stack_labels(network.labels),
        }
        if network.internal:
            body["Internal"] = True
        if network.driver_opts:
            body["Options"] = dict(network.driver_opts)
        if network.ipam_driver or network.subnets:
            ipam: dict[str, Any] = {"Config": [{"Subnet": subnet} for subnet in network.subnets]}
            if network.ipam_driver:
                ipam["Driver"] = network.ipam_driver
            body["IPAM"] = ipam
        networks[body["Name"]] = body

    secrets: dict[str, dict[str, Any]] = {}
    external_secrets: list[str] = []
    for key, secret in sorted(config.secrets.items()):
        if secret.external:
            external_secrets.append(secret_name(key))
            continue
        assert secret.file is not None
        try:
            data = secret.file.read_bytes()
        except (OSError, ValueError) as exc:
            problem = getattr(exc, "strerror", None) or str(exc)
            raise ComposeError(f"{config.path}: secrets.{key}.file: cannot read {secret.file}: {problem}") from None
        secrets[secret_name(key)] = {
            "Name": secret_name(key),
            "Labels": stack_labels(secret.labels),
            "Data": base64.b64encode(data).decode("ascii"),
        }

    configs: dict[str, dict[str, Any]] = {}
    external_configs: list[str] = []
    for key, definition in sorted(config.configs.items()):
        if definition.external:
            external_configs.append(config_name(key))
            continue
        assert definition.file is not None
        try:
            data = definition.file.read_bytes()
        except (OSError, ValueError) as exc:
            problem = getattr(exc, "strerror", None) or str(exc)
            raise ComposeError(f"{config.path}: configs.{key}.file: cannot read {definition.file}: {problem}") from None
        body = {
            "Name": config_name(key),
            "Labels": stack_labels(definition.labels),
            "Data": base64.b64encode(data).decode("ascii"),
        }
        if definition.template_driver:
            body["Templating"] = {"Name": definition.template_driver}
        configs[config_name(key)] = body

    services = {
        name: _service_spec(service, scoped(name), network_name, secret_name, config_name, stack_labels)
        for name, service in config.services.items()
    }
    return StackSpecs(
        networks=networks,
        external_networks=external_networks,
        secrets=secrets,
        external_secrets=external_secrets,
        services=services,
        warnings=list(config.warnings),
        configs=configs,
        external_configs=external_configs,
    )


def _service_spec(
    service: ServiceConfig,
    name: str,
    network_name: Callable[[str], str],
    secret_name: Callable[[str], str],
    config_name: Callable[[str], str],
    stack_labels: Callable[[Mapping[str, str]], dict[str, str]],
) -> dict[str, Any]:
    deploy = service.deploy
    container: dict[str, Any] = {"Image": service.image, "Labels": stack_labels(service.labels)}
    optional = {
        "Command": service.entrypoint,
        "Args": service.command,
        "Hostname": service.hostname,
        "Init": service.init,
        "Dir": service.working_dir,
        "User": service.user,
        "StopGracePeriod": service.stop_grace_period,
    }
    container.update({key: value for key, value in optional.items() if value is not None})
    if service.environment:
        container["Env"] = sorted(
            key if value is None else f"{key}={value}" for key, value in service.environment.items()
        )
    if service.secrets:
        references = [
            {
                "File": {"Name": reference.target, "UID": reference.uid, "GID": reference.gid, "Mode": reference.mode},
                "SecretName": secret_name(reference.source),
            }
            for reference in service.secrets
        ]
        # Sorted, so redeploying an unchanged file does not restart the service (docker/cli does the same).
        container["Secrets"] = sorted(references, key=lambda reference: reference["SecretName"])
    if service.configs:
        config_references = [
            {
                "File": {"Name": reference.target, "UID": reference.uid, "GID": reference.gid, "Mode": reference.mode},
                "ConfigName": config_name(reference.source),
            }
            for reference in service.configs
        ]
        container["Configs"] = sorted(config_references, key=lambda reference: reference["ConfigName"])

    task: dict[str, Any] = {"ContainerSpec": container}
    if "resources" in deploy:
        task["Resources"] = {
            api_key: _renamed(amounts, {"cpus": "NanoCPUs", "memory": "MemoryBytes"})
            for compose_key, api_key in (("limits", "Limits"), ("reservations", "Reservations"))
            if (amounts := deploy["resources"].get(compose_key)) is not None
        }
    if "restart_policy" in deploy:
        task["RestartPolicy"] = _renamed(
            deploy["restart_policy"],
            {"condition": "Condition", "delay": "Delay", "max_attempts": "MaxAttempts", "window": "Window"},
        )
    if "placement" in deploy:
        placement = deploy["placement"]
        task["Placement"] = {}
        if "constraints" in placement:
            task["Placement"]["Constraints"] = placement["constraints"]
        if "preferences" in placement:
            task["Placement"]["Preferences"] = [
                {"Spread": {"SpreadDescriptor": descriptor}} for descriptor in placement["preferences"]
            ]
        if "max_replicas_per_node" in placement:
            task["Placement"]["MaxReplicas"] = placement["max_replicas_per_node"]
    attachments = [
        # Every stack network is user-defined, so the service name is always an alias (docker/cli).
        {"Target": network_name(key), "Aliases": [*aliases, service.name]}
        for key, aliases in (service.networks or {DEFAULT_NETWORK: []}).items()
    ]
    task["Networks"] = sorted(attachments, key=lambda attachment: attachment["Target"])

    spec: dict[str, Any] = {
        "Name": name,
        "Labels": {**stack_labels(deploy.get("labels", {})), IMAGE_LABEL: service.image},
        "TaskTemplate": task,
    }
    if deploy.get("mode") == "global":
        spec["Mode"] = {"Global": {}}
    else:
        spec["Mode"] = {"Replicated": {"Replicas": deploy["replicas"]} if "replicas" in deploy else {}}
    for compose_key, api_key in (("update_config", "UpdateConfig"), ("rollback_config", "RollbackConfig")):
        if compose_key in deploy:
            spec[api_key] = {"Parallelism": UPDATE_DEFAULTS["Parallelism"]} | _renamed(
                deploy[compose_key],
                {
                    "parallelism": "Parallelism",
                    "delay": "Delay",
                    "failure_action": "FailureAction",
                    "monitor": "Monitor",
                    "max_failure_ratio": "MaxFailureRatio",
                    "order": "Order",
                },
            )
    endpoint: dict[str, Any] = {"Mode": deploy.get("endpoint_mode", "vip")}
    if service.ports:
        endpoint["Ports"] = sorted(
            service.ports,
            key=lambda port: (port.get("PublishedPort", 0), port["TargetPort"], port["Protocol"], port["PublishMode"]),
        )
    spec["EndpointSpec"] = endpoint
    return spec


def _renamed(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {names[key]: value for key, value in values.items()}
