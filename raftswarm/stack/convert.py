"""A `StackConfig` -> the Docker API bodies that deploy it as a stack, after docker/cli `cli/compose/convert`.

Every name is scoped under the stack namespace (``<ns>_web``) unless the file gives it with `name:` or it is
external, and everything the stack creates carries the namespace label, which is how `raftswarm stack ls`,
`services`, `ps` and `rm` find it again. The bodies are NetworkCreate bodies, SecretSpecs and ConfigSpecs (the
data read from `file:`) and ServiceSpecs; secret and config references carry only SecretName and ConfigName, the
deployer looks up the IDs.

Named volumes become volume mounts of `<ns>_<key>` (or their `name:`), carrying the volume's labels (with the
namespace label) and driver options, with which the node that first runs a task mounting one creates it; an
external volume is mounted by its name, as it is. Binds and tmpfs mounts are passed on as they are.

Fields the compose file leaves unset are left out of the specs, so the swarm's defaults apply, except the
ones Docker always sends: the namespace label, UpdateConfig.Parallelism (1) and EndpointSpec.Mode (vip).

Last, each ServiceSpec is checked with the API's own rules (`objects.specs.validate_service_spec`), so that a
service the swarm would refuse is a `ComposeError` before anything of the stack is created.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ComposeError
from ..objects.defaults import UPDATE_DEFAULTS
from ..objects.networks import DEFAULT_DRIVER
from ..objects.specs import validate_service_spec
from ..objects.validation import InvalidSpec
from .model import BIND, DEFAULT_NETWORK, TMPFS, NetworkConfig, ServiceConfig, ServiceMount, StackConfig, VolumeConfig
from .service import restart_policy

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
            raise ComposeError(f"{config.origin}: secrets.{key}.file: cannot read {secret.file}: {problem}") from None
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
            raise ComposeError(
                f"{config.origin}: configs.{key}.file: cannot read {definition.file}: {problem}"
            ) from None
        body = {
            "Name": config_name(key),
            "Labels": stack_labels(definition.labels),
            "Data": base64.b64encode(data).decode("ascii"),
        }
        if definition.template_driver:
            body["Templating"] = {"Name": definition.template_driver}
        configs[config_name(key)] = body

    def volume_mount(mount: ServiceMount) -> dict[str, Any]:
        return _mount(mount, config.volumes, scoped, stack_labels)

    services = {}
    for name, service in config.services.items():
        spec = _service_spec(service, scoped(name), network_name, secret_name, config_name, stack_labels, volume_mount)
        _check_as_the_swarm_would(spec, f"{config.origin}: services.{name}")
        services[name] = spec
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


def _check_as_the_swarm_would(spec: dict[str, Any], where: str) -> None:
    """The API's checks of a ServiceSpec. Secret and config references have no IDs yet (the deployer looks them
    up by name): they are given stand-ins here, which the checks only need to be there."""
    checked = copy.deepcopy(spec)
    container = checked["TaskTemplate"]["ContainerSpec"]
    for reference in container.get("Secrets", []):
        reference["SecretID"] = reference["SecretName"]
    for reference in container.get("Configs", []):
        reference["ConfigID"] = reference["ConfigName"]
    try:
        validate_service_spec(checked)
    except InvalidSpec as exc:
        raise ComposeError(f"{where}: the swarm would refuse this service: {exc}") from None


def _mount(
    mount: ServiceMount,
    volumes: Mapping[str, VolumeConfig],
    scoped: Callable[[str], str],
    stack_labels: Callable[[Mapping[str, str]], dict[str, str]],
) -> dict[str, Any]:
    """A Mount body, as docker/cli convertVolumeToMount makes it (plus raftswarm's tmpfs mode and flags and a
    bind's create_host_path, which docker/cli's format does not have)."""
    body: dict[str, Any] = {"Type": mount.type, "Target": mount.target}
    if mount.source:
        body["Source"] = mount.source
    if mount.read_only:
        body["ReadOnly"] = True
    if mount.consistency:
        body["Consistency"] = mount.consistency
    if mount.type == BIND:
        options: dict[str, Any] = {}
        if mount.propagation:
            options["Propagation"] = mount.propagation
        if mount.create_host_path:
            options["CreateMountpoint"] = True
        if options:
            body["BindOptions"] = options
    elif mount.type == TMPFS:
        tmpfs: dict[str, Any] = {}
        if mount.tmpfs_size:
            tmpfs["SizeBytes"] = mount.tmpfs_size
        if mount.tmpfs_mode:
            tmpfs["Mode"] = mount.tmpfs_mode
        if mount.tmpfs_flags:
            tmpfs["Options"] = [[flag] for flag in mount.tmpfs_flags]
        if tmpfs:
            body["TmpfsOptions"] = tmpfs
    elif mount.source:  # a named volume; an anonymous one gets no options, as docker/cli sends it
        volume = volumes[mount.source]
        body["Source"] = volume.name or (mount.source if volume.external else scoped(mount.source))
        options = {"NoCopy": True} if mount.nocopy else {}
        if not volume.external:
            options["Labels"] = stack_labels(volume.labels)
            if volume.driver or volume.driver_opts is not None:
                driver: dict[str, Any] = {"Name": volume.driver} if volume.driver else {}
                if volume.driver_opts is not None:
                    driver["Options"] = dict(volume.driver_opts)
                options["DriverConfig"] = driver
        body["VolumeOptions"] = options
    return body


def _effective_capabilities(add: list[str], drop: list[str]) -> tuple[list[str], list[str]]:
    """docker/cli opts.EffectiveCapAddCapDrop: names upper-cased with a CAP_ prefix, "ALL" trumping the others
    in its list, a capability both added and dropped only added, each list sorted without duplicates."""

    def normalized(names: list[str]) -> set[str]:
        found = {name.strip().upper() for name in names}
        found = {name if name == "ALL" or name.startswith("CAP_") else f"CAP_{name}" for name in found}
        return {"ALL"} if "ALL" in found else found

    added, dropped = normalized(add), normalized(drop)
    return sorted(added), sorted(dropped - added)


def _healthcheck(check: Mapping[str, Any]) -> dict[str, Any]:
    """docker/cli convertHealthcheck: disable is Test ["NONE"]; otherwise what is given, in nanoseconds."""
    if check.get("disable"):
        return {"Test": ["NONE"]}
    body: dict[str, Any] = {"Test": check["test"]} if check.get("test") else {}
    for compose_key, api_key in (
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start_period", "StartPeriod"),
        ("start_interval", "StartInterval"),
        ("retries", "Retries"),
    ):
        if check.get(compose_key):
            body[api_key] = check[compose_key]
    return body


def _mode(deploy: Mapping[str, Any]) -> dict[str, Any]:
    """docker/cli convertDeployMode: a replicated job runs `replicas` tasks, that many at once."""
    mode = deploy.get("mode", "replicated")
    replicas = deploy.get("replicas")
    if mode == "global":
        return {"Global": {}}
    if mode == "global-job":
        return {"GlobalJob": {}}
    if mode == "replicated-job":
        return {
            "ReplicatedJob": {"MaxConcurrent": replicas, "TotalCompletions": replicas} if replicas is not None else {}
        }
    return {"Replicated": {"Replicas": replicas} if replicas is not None else {}}


def _service_spec(
    service: ServiceConfig,
    name: str,
    network_name: Callable[[str], str],
    secret_name: Callable[[str], str],
    config_name: Callable[[str], str],
    stack_labels: Callable[[Mapping[str, str]], dict[str, str]],
    volume_mount: Callable[[ServiceMount], dict[str, Any]],
) -> dict[str, Any]:
    deploy = service.deploy
    container: dict[str, Any] = {"Image": service.image, "Labels": stack_labels(service.labels)}
    cap_add, cap_drop = _effective_capabilities(service.cap_add, service.cap_drop)
    dns = {"Nameservers": service.dns, "Search": service.dns_search, "Options": service.dns_opt}
    optional = {
        "Command": service.entrypoint or None,
        "Args": service.command or None,
        "Hostname": service.hostname,
        "Init": service.init,
        "Dir": service.working_dir,
        "User": service.user,
        "Groups": service.group_add or None,
        "StopGracePeriod": service.stop_grace_period,
        "StopSignal": service.stop_signal,
        "TTY": service.tty or None,
        "OpenStdin": service.stdin_open or None,
        "ReadOnly": service.read_only or None,
        "Hosts": service.extra_hosts or None,
        "DNSConfig": {key: value for key, value in dns.items() if value} or None,
        "Healthcheck": _healthcheck(service.healthcheck) if service.healthcheck is not None else None,
        "Mounts": [volume_mount(mount) for mount in (*service.volumes, *service.tmpfs)] or None,
        "Isolation": service.isolation,
        "Sysctls": dict(service.sysctls) or None,
        "CapabilityAdd": cap_add or None,
        "CapabilityDrop": cap_drop or None,
        "Ulimits": [
            {"Name": limit, "Soft": soft, "Hard": hard} for limit, (soft, hard) in sorted(service.ulimits.items())
        ]
        or None,
        "OomScoreAdj": service.oom_score_adj or None,
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
            api_key: _resources(amounts)
            for compose_key, api_key in (("limits", "Limits"), ("reservations", "Reservations"))
            if (amounts := deploy["resources"].get(compose_key)) is not None
        }
    if "restart_policy" in deploy:
        task["RestartPolicy"] = _renamed(
            deploy["restart_policy"],
            {"condition": "Condition", "delay": "Delay", "max_attempts": "MaxAttempts", "window": "Window"},
        )
    elif service.restart is not None and (policy := restart_policy(service.restart)) is not None:
        # docker/cli falls back to the service's legacy `restart:` (and yet lists it as unsupported: it is not).
        task["RestartPolicy"] = policy
    if service.logging is not None:
        driver = service.logging["driver"]
        options = service.logging["options"]
        task["LogDriver"] = {**({"Name": driver} if driver else {}), **({"Options": options} if options else {})}
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
        {"Target": network_name(key), "Aliases": [*(aliases or []), service.name]}
        for key, aliases in (service.networks or {DEFAULT_NETWORK: []}).items()
    ]
    task["Networks"] = sorted(attachments, key=lambda attachment: attachment["Target"])

    spec: dict[str, Any] = {
        "Name": name,
        "Labels": {**stack_labels(deploy.get("labels", {})), IMAGE_LABEL: service.image},
        "TaskTemplate": task,
        "Mode": _mode(deploy),
    }
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


def _resources(amounts: Mapping[str, Any]) -> dict[str, Any]:
    resources = _renamed(
        {key: value for key, value in amounts.items() if key != "generic_resources"},
        {"cpus": "NanoCPUs", "memory": "MemoryBytes", "pids": "Pids"},
    )
    if amounts.get("generic_resources"):
        resources["GenericResources"] = [
            {"DiscreteResourceSpec": {"Kind": resource["kind"], "Value": resource["value"]}}
            for resource in amounts["generic_resources"]
        ]
    return resources


def _renamed(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {names[key]: value for key, value in values.items()}
