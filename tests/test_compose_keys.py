"""Each compose service key -> the exact ServiceSpec fields docker/cli's converter makes of it (cli/compose/convert/
service.go), or the error a key raftswarm does not honour is refused with. Every key docker/cli knows has a fate
here: converted, ignored with docker's warning, or refused -- none is dropped unsaid."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from raftswarm.stack import ComposeError, StackSpecs, load_stack, stack_specs
from raftswarm.stack.service import DEPRECATED, FORBIDDEN, IGNORED, READ_KEYS, REFUSED

NS = "com.docker.stack.namespace"
SECOND = 1_000_000_000


def convert(directory: Path, service: str, extra: str = "", environment: dict[str, str] | None = None) -> StackSpecs:
    path = directory / "docker-compose.yml"
    body = textwrap.indent(textwrap.dedent(service).strip(), "    ")
    path.write_text(f"services:\n  web:\n    image: busybox\n{body}\n{textwrap.dedent(extra)}")
    return stack_specs(load_stack(path, environment or {}), "app")


def error_of(directory: Path, service: str, extra: str = "") -> str:
    with pytest.raises(ComposeError) as caught:
        convert(directory, service, extra)
    return str(caught.value)


# -- ContainerSpec fields ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "fields"),
    [
        ("cap_add: [net_admin, SYS_TIME, net_admin]", {"CapabilityAdd": ["CAP_NET_ADMIN", "CAP_SYS_TIME"]}),
        ("cap_drop: [ALL]", {"CapabilityDrop": ["ALL"]}),
        # added wins over dropped (docker/cli EffectiveCapAddCapDrop); ALL trumps the other names in its list
        (
            "cap_add: [CHOWN]\ncap_drop: [chown, NET_RAW]",
            {"CapabilityAdd": ["CAP_CHOWN"], "CapabilityDrop": ["CAP_NET_RAW"]},
        ),
        ("cap_add: [ALL, CHOWN]", {"CapabilityAdd": ["ALL"]}),
        ("stop_signal: SIGUSR1", {"StopSignal": "SIGUSR1"}),
        ("stop_signal: '9'", {"StopSignal": "9"}),
        ("stop_grace_period: 1m30s", {"StopGracePeriod": 90 * SECOND}),
        ("sysctls: {net.core.somaxconn: 1024, kernel.shmmax: '65536'}", {"Sysctls": {"net.core.somaxconn": "1024", "kernel.shmmax": "65536"}}),
        ("sysctls: [net.ipv4.ip_forward=1, net.core.somaxconn]", {"Sysctls": {"net.ipv4.ip_forward": "1", "net.core.somaxconn": ""}}),
        (
            "ulimits: {nproc: 65535, nofile: {soft: 20000, hard: 40000}, core: -1}",
            {
                "Ulimits": [  # sorted by name, as docker/cli sends them
                    {"Name": "core", "Soft": -1, "Hard": -1},
                    {"Name": "nofile", "Soft": 20000, "Hard": 40000},
                    {"Name": "nproc", "Soft": 65535, "Hard": 65535},
                ]
            },
        ),
        (
            'extra_hosts: ["somehost:162.242.195.82", "otherhost=50.31.209.229", "v6host:::1", "br:[fe80::1]"]',
            {"Hosts": ["162.242.195.82 somehost", "50.31.209.229 otherhost", "::1 v6host", "fe80::1 br"]},
        ),
        (
            "extra_hosts: {zeta: 10.0.0.2, alpha: 10.0.0.1}",  # a mapping is sorted
            {"Hosts": ["10.0.0.1 alpha", "10.0.0.2 zeta"]},
        ),
        ("dns: 8.8.8.8", {"DNSConfig": {"Nameservers": ["8.8.8.8"]}}),
        (
            "dns: [8.8.8.8, '2001:4860:4860::8888']\ndns_search: example.com\ndns_opt: [ndots:2, timeout:1]",
            {
                "DNSConfig": {
                    "Nameservers": ["8.8.8.8", "2001:4860:4860::8888"],
                    "Search": ["example.com"],
                    "Options": ["ndots:2", "timeout:1"],
                }
            },
        ),
        ("dns_search: [a.example, b.example]", {"DNSConfig": {"Search": ["a.example", "b.example"]}}),
        ("read_only: true", {"ReadOnly": True}),
        ("read_only: false", {}),  # docker/cli's bool is omitted when false: the swarm's default
        ("tty: true", {"TTY": True}),
        ("stdin_open: true", {"OpenStdin": True}),
        ("group_add: [audio, 44]", {"Groups": ["audio", "44"]}),
        ("hostname: '{{.Service.Name}}-{{.Task.Slot}}'", {"Hostname": "{{.Service.Name}}-{{.Task.Slot}}"}),
        ("user: '1000:1000'", {"User": "1000:1000"}),
        ("working_dir: /srv/app", {"Dir": "/srv/app"}),
        ("entrypoint: /entry.sh --verbose", {"Command": ["/entry.sh", "--verbose"]}),
        ("entrypoint: [python3, -u]\ncommand: app.py", {"Command": ["python3", "-u"], "Args": ["app.py"]}),
        ("init: true", {"Init": True}),
        ("init: false", {"Init": False}),  # a pointer in docker/cli: false is sent, overriding a node's --init
        ("isolation: default", {"Isolation": "default"}),
        ("oom_score_adj: -500", {"OomScoreAdj": -500}),
        ("labels: {tier: web}", {"Labels": {"tier": "web", NS: "app"}}),
        ("labels: [tier=web, empty]", {"Labels": {"tier": "web", "empty": "", NS: "app"}}),
    ],
)
def test_service_key_becomes_container_spec_fields(tmp_path: Path, service: str, fields: dict[str, Any]) -> None:
    container = convert(tmp_path, service).services["web"]["TaskTemplate"]["ContainerSpec"]
    assert container == {"Image": "busybox", "Labels": {NS: "app"}, **fields}


def test_oom_score_adj_is_converted_without_a_warning_as_the_node_applies_it(tmp_path: Path) -> None:
    specs = convert(tmp_path, "oom_score_adj: 100")
    assert specs.services["web"]["TaskTemplate"]["ContainerSpec"]["OomScoreAdj"] == 100
    assert specs.warnings == []


# -- healthcheck ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("healthcheck", "expected"),
    [
        ("{test: 'curl -f http://localhost || exit 1'}", {"Test": ["CMD-SHELL", "curl -f http://localhost || exit 1"]}),
        ("{test: [CMD, curl, -f, http://localhost]}", {"Test": ["CMD", "curl", "-f", "http://localhost"]}),
        ("{test: [CMD-SHELL, 'exit 0']}", {"Test": ["CMD-SHELL", "exit 0"]}),
        ("{test: [NONE]}", {"Test": ["NONE"]}),
        ("{disable: true}", {"Test": ["NONE"]}),
        (
            "{test: 'true', interval: 10s, timeout: 3s, start_period: 1m, start_interval: 500ms, retries: 5}",
            {
                "Test": ["CMD-SHELL", "true"],
                "Interval": 10 * SECOND,
                "Timeout": 3 * SECOND,
                "StartPeriod": 60 * SECOND,
                "StartInterval": SECOND // 2,
                "Retries": 5,
            },
        ),
        ("{interval: 5s}", {"Interval": 5 * SECOND}),  # no test: the image's own, on a new interval
        ("{test: [], retries: 0, disable: false}", {}),  # what equals the image's own is left out, as docker does
    ],
)
def test_healthcheck(tmp_path: Path, healthcheck: str, expected: dict[str, Any]) -> None:
    container = convert(tmp_path, f"healthcheck: {healthcheck}").services["web"]["TaskTemplate"]["ContainerSpec"]
    assert container["Healthcheck"] == expected


# -- TaskTemplate fields -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "fields"),
    [
        (
            "logging: {driver: syslog, options: {syslog-address: 'tcp://192.168.0.42:123', max-file: 3}}",
            {"LogDriver": {"Name": "syslog", "Options": {"syslog-address": "tcp://192.168.0.42:123", "max-file": "3"}}},
        ),
        ("logging: {options: {max-size: 10m}}", {"LogDriver": {"Options": {"max-size": "10m"}}}),
        ("restart: always", {"RestartPolicy": {"Condition": "any"}}),
        ("restart: unless-stopped", {"RestartPolicy": {"Condition": "any"}}),
        ("restart: on-failure", {"RestartPolicy": {"Condition": "on-failure"}}),
        ("restart: on-failure:3", {"RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 3}}),
        ("restart: 'no'", {}),
        # deploy.restart_policy wins over the legacy key (docker/cli convertRestartPolicy)
        (
            "restart: always\ndeploy: {restart_policy: {condition: none}}",
            {"RestartPolicy": {"Condition": "none"}},
        ),
        (
            "deploy: {resources: {limits: {cpus: '1.5', memory: 1G, pids: 200}}}",
            {"Resources": {"Limits": {"NanoCPUs": 1_500_000_000, "MemoryBytes": 1 << 30, "Pids": 200}}},
        ),
        (
            "deploy: {resources: {reservations: {generic_resources: [{discrete_resource_spec: {kind: gpu, value: 2}}]}}}",
            {"Resources": {"Reservations": {"GenericResources": [{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}}]}}},
        ),
    ],
)
def test_service_key_becomes_task_template_fields(tmp_path: Path, service: str, fields: dict[str, Any]) -> None:
    template = convert(tmp_path, service).services["web"]["TaskTemplate"]
    assert {key: value for key, value in template.items() if key not in ("ContainerSpec", "Networks")} == fields


# -- deploy.mode, labels -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deploy", "mode"),
    [
        ("{}", {"Replicated": {}}),
        ("{replicas: 3}", {"Replicated": {"Replicas": 3}}),
        ("{mode: global}", {"Global": {}}),
        # docker/cli convertDeployMode: replicas tasks to complete, as many at once
        ("{mode: replicated-job, replicas: 5}", {"ReplicatedJob": {"MaxConcurrent": 5, "TotalCompletions": 5}}),
        ("{mode: replicated-job}", {"ReplicatedJob": {}}),
        ("{mode: global-job}", {"GlobalJob": {}}),
    ],
)
def test_deploy_mode(tmp_path: Path, deploy: str, mode: dict[str, Any]) -> None:
    assert convert(tmp_path, f"deploy: {deploy}").services["web"]["Mode"] == mode


def test_deploy_labels_are_the_services_and_labels_the_containers(tmp_path: Path) -> None:
    spec = convert(tmp_path, "labels: {where: container}\ndeploy: {labels: {where: service}}").services["web"]
    assert spec["Labels"] == {"where": "service", NS: "app", "com.docker.stack.image": "busybox"}
    assert spec["TaskTemplate"]["ContainerSpec"]["Labels"] == {"where": "container", NS: "app"}


def test_a_job_runs_without_an_update_config_and_nothing_else_changes(tmp_path: Path) -> None:
    spec = convert(tmp_path, "deploy: {mode: replicated-job, replicas: 2, rollback_config: {parallelism: 2}}")
    assert "UpdateConfig" not in spec.services["web"]
    assert spec.services["web"]["RollbackConfig"] == {"Parallelism": 2}


# -- refused keys, and errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(FORBIDDEN))
def test_dockers_forbidden_keys_are_refused_with_its_words(tmp_path: Path, key: str) -> None:
    message = error_of(tmp_path, f"{key}: x")
    assert f"services.web.{key}: unsupported option: {FORBIDDEN[key]}" in message


@pytest.mark.parametrize(
    ("service", "words"),
    [
        ("privileged: true", "privileged: unsupported option: swarm services do not run privileged; add the capabilities"),
        ("security_opt: [no-new-privileges:true]", "security_opt: unsupported option: raftswarm keeps every task under"),
        ("devices: [/dev/fuse]", "devices: unsupported option: swarm services cannot be given the node's devices"),
        ("network_mode: host", "network_mode: unsupported option: a swarm service joins the stack's networks"),
        ("pid: host", "pid: unsupported option: every swarm task has a PID namespace of its own"),
        ("ipc: host", "ipc: unsupported option: every swarm task has an IPC namespace of its own"),
        ("userns_mode: host", "userns_mode: unsupported option: swarm tasks run in their node's user namespace"),
        ("cgroup_parent: m-exec", "cgroup_parent: unsupported option: a swarm task's cgroup is placed by its node"),
        ("cgroupns_mode: host", "cgroupns_mode: unsupported option: every swarm task has a cgroup namespace"),
        ("shm_size: 1G", "shm_size: unsupported option: swarm services have no shm_size; mount a tmpfs at /dev/shm"),
        ("mac_address: 02:42:ac:11:65:43", "mac_address: unsupported option: the swarm gives each task its addresses"),
        ("domainname: example.com", "domainname: unsupported option: swarm services have no domain name option; set"),
        ("credential_spec: {file: spec.json}", "credential_spec: unsupported option: credential specs are a Windows"),
        ("isolation: hyperv", "isolation: invalid isolation 'hyperv': linux only supports 'default'"),
        ("enviroment: {A: b}", "enviroment: unknown option; did you mean environment?"),
        ("platform: linux/arm64", "platform: unknown option; it is not a key of a compose service (format 3)"),
        ("networks: {front: {ipv4_address: 10.0.0.9}}", "networks.front.ipv4_address: unsupported option: the swarm"),
        ("networks: {front: {driver_opts: {a: b}}}", "networks.front.driver_opts: unsupported option: raftswarm's"),
        ("cap_add: [NOT_A_CAP]", 'cap_add: unknown capability: "CAP_NOT_A_CAP"'),
        ("stop_signal: SIGNOPE", "stop_signal: invalid signal: SIGNOPE"),
        ("sysctls: {vm.swappiness: 10}", 'sysctls: sysctl "vm.swappiness" is not in a separate kernel namespace'),
        ("ulimits: {nofiles: 10}", "ulimits.nofiles: invalid ulimit type: nofiles"),
        ("ulimits: {nofile: {soft: 20, hard: 10}}", "ulimits.nofile: ulimit nofile: soft limit must be less than or equal"),
        ("ulimits: {nofile: {soft: 20}}", "ulimits.nofile.hard: is required"),
        ("extra_hosts: [justahost]", "extra_hosts[0]: must be \"HOST:IP\" or \"HOST=IP\", got 'justahost'"),
        ("extra_hosts: ['h:not-an-ip']", "extra_hosts[0]: extra host \"not-an-ip h\": not-an-ip is not an IP address"),
        ("dns: [dns.example]", "dns: DNS nameserver 'dns.example' is not an IP address"),
        ("healthcheck: {test: 'true', disable: true}", "healthcheck: test and disable can't be set at the same time"),
        ("healthcheck: {test: [curl, x]}", 'healthcheck.test: must start with "CMD", "CMD-SHELL" or "NONE"'),
        ("healthcheck: {interval: 10us}", "healthcheck.interval: must be 0 (the image's own) or at least 1ms"),
        ("healthcheck: {test: 'true', every: 1s}", "healthcheck.every: unknown option"),
        ("oom_score_adj: 1001", "oom_score_adj: must be from -1000 to 1000"),
        ("restart: sometimes", "restart: invalid restart policy: unknown policy 'sometimes'"),
        ("restart: on-failure:x", "restart: invalid restart policy format: maximum retry count must be an integer"),
        ("logging: {driver: syslog, format: x}", "logging.format: unknown option"),
        ("deploy: {mode: global-job, replicas: 2}", "deploy.replicas: replicas can only be used with replicated or"),
        ("deploy: {mode: replicated-job, update_config: {parallelism: 1}}", "deploy.update_config: a job runs to"),
        ("deploy: {mode: global, placement: {max_replicas_per_node: 1}}", "max_replicas_per_node: can only be used"),
        ("deploy: {resources: {limits: {memory: 1M}}}", "the swarm would refuse this service: TaskTemplate.Resources"),
    ],
)
def test_refused_keys_and_bad_values_name_the_key_and_say_why(tmp_path: Path, service: str, words: str) -> None:
    message = error_of(tmp_path, service, "networks: {front: {}}\n")
    assert message.startswith(f"{tmp_path / 'docker-compose.yml'}: services.web")
    assert words in message


def test_a_service_name_too_long_for_the_swarm_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    path = tmp_path / "stack.yml"
    path.write_text(f"services:\n  {'x' * 62}: {{image: busybox}}\n")
    with pytest.raises(ComposeError, match=r"services\.x+: the swarm would refuse this service: Name: must be 63"):
        stack_specs(load_stack(path, {}), "app")


def test_every_key_docker_cli_knows_has_one_fate() -> None:
    # docker/cli 3.13's service keys (cli/compose/schema/data/config_schema_v3.13.json)
    docker_keys = {
        "deploy", "build", "cap_add", "cap_drop", "cgroupns_mode", "cgroup_parent", "command", "configs",
        "container_name", "credential_spec", "depends_on", "devices", "dns", "dns_search", "domainname",
        "entrypoint", "env_file", "environment", "expose", "external_links", "extra_hosts", "healthcheck",
        "hostname", "image", "init", "ipc", "isolation", "labels", "links", "logging", "mac_address",
        "network_mode", "networks", "pid", "ports", "privileged", "read_only", "restart", "security_opt",
        "shm_size", "secrets", "sysctls", "stdin_open", "stop_grace_period", "stop_signal", "tmpfs", "tty",
        "ulimits", "oom_score_adj", "user", "userns_mode", "volumes", "working_dir",
    }  # fmt: skip
    fates = [READ_KEYS, set(IGNORED), set(DEPRECATED), set(REFUSED), set(FORBIDDEN)]
    for key in docker_keys | set(FORBIDDEN):
        assert sum(key in fate for fate in fates) == 1, key
    # compose-spec keys the node honours, which docker/cli's format lacks
    assert {"dns_opt", "group_add"} <= READ_KEYS


# -- the top level ------------------------------------------------------------------------------------------------


def test_a_top_level_name_is_ignored_with_a_warning(tmp_path: Path) -> None:
    specs = convert(tmp_path, "", "name: shop\n")
    assert specs.warnings == [
        "Ignoring top-level option name ('shop'): a stack is named by the NAME argument of `stack deploy`"
    ]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("service: {}\n", "service: unknown top-level option; expected one of configs, name, networks, secrets, services"),
        ("include: [other.yml]\n", "include: unknown top-level option"),
        ("secrets: {s: {driver: vault}}\n", "secrets.s.driver: unsupported option: secret drivers are not supported"),
        ("secrets: {s: {file: s.txt, template_driver: golang}}\n", "secrets.s.template_driver: unsupported option: raftswarm nodes expand templates in configs, not in secrets"),
        ("volumes: {'my data': {}}\n", "volumes.my data: invalid name 'my data'"),
    ],
)
def test_the_top_level_is_checked_as_docker_cli_checks_it(tmp_path: Path, extra: str, words: str) -> None:
    message = error_of(tmp_path, "", extra)
    assert message.startswith(f"{tmp_path / 'docker-compose.yml'}: ")
    assert words in message
