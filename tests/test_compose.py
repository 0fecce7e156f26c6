"""Compose file -> swarm specs, the translation `stack deploy -c FILE NAME` performs (docker/cli compose)."""

from __future__ import annotations

import base64
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftswarm.errors import RaftswarmError
from raftswarm.objects.specs import validate_secret_spec, validate_service_spec
from raftswarm.stack import ComposeError, StackSpecs, load_stack, stack_specs

NS = "com.docker.stack.namespace"


def write(directory: Path, text: str, name: str = "docker-compose.yml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def convert(directory: Path, text: str, environment: dict[str, str] | None = None, ns: str = "app") -> StackSpecs:
    return stack_specs(load_stack(write(directory, text), environment or {}), ns)


def error_of(directory: Path, text: str, environment: dict[str, str] | None = None) -> str:
    with pytest.raises(ComposeError) as caught:
        convert(directory, text, environment)
    return str(caught.value)


FULL_EXAMPLE = """
version: "3.8"
services:
  web:
    image: nginx:${NGINX_TAG:-1.27}
    entrypoint: /docker-entrypoint.sh
    command: ["nginx", "-g", "daemon off;"]
    environment:
      MODE: production
      REPLICAS: 3
      DEBUG: false
      FROM_SHELL:
    working_dir: /srv
    user: "101:101"
    hostname: web-host
    init: true
    labels: [tier=frontend]
    stop_grace_period: 1m30s
    secrets:
      - db_password
      - source: tls_key
        target: server.key
        uid: "101"
        gid: "101"
        mode: 0400
    networks:
      front:
        aliases: [www]
      back:
    ports:
      - "8080:80"
      - target: 443
        published: 8443
        protocol: tcp
        mode: host
    deploy:
      mode: replicated
      replicas: ${WEB_REPLICAS}
      labels:
        team: edge
      endpoint_mode: vip
      resources:
        limits: {cpus: "0.5", memory: 512M}
        reservations: {cpus: "0.25", memory: 128M}
      restart_policy:
        condition: on-failure
        delay: 5s
        max_attempts: 3
        window: 2m
      placement:
        constraints: [node.role == worker]
        preferences:
          - spread: node.labels.zone
        max_replicas_per_node: 2
      update_config:
        parallelism: 2
        delay: 10s
        failure_action: rollback
        monitor: 30s
        max_failure_ratio: 0.25
        order: start-first
      rollback_config:
        failure_action: pause
    build: .
    depends_on: [db]
  db:
    image: postgres:16
    environment: [POSTGRES_DB=shop, PGDATA=/var/lib/postgresql/data]
    networks: [back]
    deploy:
      mode: global
    container_name: shop-db
networks:
  front:
    driver_opts: {encrypted: ""}
    attachable: true
    labels: [purpose=public]
    ipam:
      config:
        - subnet: 10.20.0.0/24
  back:
    internal: true
  unused: {}
secrets:
  db_password:
    file: ./secrets/db_password.txt
  tls_key:
    external: true
    name: shared_tls_key
x-common: &common {anything: goes}
"""


def test_full_example_converts_to_docker_api_specs(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db_password.txt").write_bytes(b"s3cret\n")
    specs = convert(tmp_path, FULL_EXAMPLE, {"WEB_REPLICAS": "3", "FROM_SHELL": "shell value"}, ns="shop")

    assert specs.networks == {
        "shop_back": {
            "Name": "shop_back",
            "Driver": "overlay",
            "Attachable": False,
            "Internal": True,
            "Labels": {NS: "shop"},
        },
        "shop_front": {
            "Name": "shop_front",
            "Driver": "overlay",
            "Attachable": True,
            "Options": {"encrypted": ""},
            "IPAM": {"Config": [{"Subnet": "10.20.0.0/24"}]},
            "Labels": {"purpose": "public", NS: "shop"},
        },
    }
    assert specs.external_networks == []
    assert specs.secrets == {
        "shop_db_password": {
            "Name": "shop_db_password",
            "Labels": {NS: "shop"},
            "Data": base64.b64encode(b"s3cret\n").decode(),
        }
    }
    assert specs.external_secrets == ["shared_tls_key"]
    assert specs.services["web"] == {
        "Name": "shop_web",
        "Labels": {"team": "edge", NS: "shop", "com.docker.stack.image": "nginx:1.27"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "nginx:1.27",
                "Command": ["/docker-entrypoint.sh"],
                "Args": ["nginx", "-g", "daemon off;"],
                "Env": ["DEBUG=false", "FROM_SHELL=shell value", "MODE=production", "REPLICAS=3"],
                "Dir": "/srv",
                "User": "101:101",
                "Hostname": "web-host",
                "Init": True,
                "Labels": {"tier": "frontend", NS: "shop"},
                "StopGracePeriod": 90_000_000_000,
                "Secrets": [
                    # sorted by SecretName, so a reordered file does not restart the service
                    {
                        "File": {"Name": "server.key", "UID": "101", "GID": "101", "Mode": 0o400},
                        "SecretName": "shared_tls_key",
                    },
                    {
                        "File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 0o444},
                        "SecretName": "shop_db_password",
                    },
                ],
            },
            "Resources": {
                "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 512 * 1024 * 1024},
                "Reservations": {"NanoCPUs": 250_000_000, "MemoryBytes": 128 * 1024 * 1024},
            },
            "RestartPolicy": {
                "Condition": "on-failure",
                "Delay": 5_000_000_000,
                "MaxAttempts": 3,
                "Window": 120_000_000_000,
            },
            "Placement": {
                "Constraints": ["node.role == worker"],
                "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
                "MaxReplicas": 2,
            },
            "Networks": [
                {"Target": "shop_back", "Aliases": ["web"]},
                {"Target": "shop_front", "Aliases": ["www", "web"]},
            ],
        },
        "Mode": {"Replicated": {"Replicas": 3}},
        "UpdateConfig": {
            "Parallelism": 2,
            "Delay": 10_000_000_000,
            "FailureAction": "rollback",
            "Monitor": 30_000_000_000,
            "MaxFailureRatio": 0.25,
            "Order": "start-first",
        },
        "RollbackConfig": {"Parallelism": 1, "FailureAction": "pause"},
        "EndpointSpec": {
            "Mode": "vip",
            "Ports": [
                {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
                {"Protocol": "tcp", "TargetPort": 443, "PublishedPort": 8443, "PublishMode": "host"},
            ],
        },
    }
    assert specs.services["db"] == {
        "Name": "shop_db",
        "Labels": {NS: "shop", "com.docker.stack.image": "postgres:16"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "postgres:16",
                "Labels": {NS: "shop"},
                "Env": ["PGDATA=/var/lib/postgresql/data", "POSTGRES_DB=shop"],
            },
            "Networks": [{"Target": "shop_back", "Aliases": ["db"]}],
        },
        "Mode": {"Global": {}},
        "EndpointSpec": {"Mode": "vip"},
    }
    assert specs.warnings == [
        "Ignoring unsupported options: build, depends_on",
        "Ignoring deprecated options:\n\ncontainer_name: Setting the container name is not supported.",
    ]


def test_converted_specs_pass_the_swarm_api_validation(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db_password.txt").write_bytes(b"s3cret\n")
    specs = convert(tmp_path, FULL_EXAMPLE, {"WEB_REPLICAS": "3"})
    for spec in specs.services.values():
        # The deployer fills SecretID once it has created or found each secret.
        for reference in spec["TaskTemplate"]["ContainerSpec"].get("Secrets", []):
            reference["SecretID"] = "id-of-" + reference["SecretName"]
        validate_service_spec(spec)
    for secret in specs.secrets.values():
        validate_secret_spec(secret)


# -- networks -----------------------------------------------------------------------------------------------


def test_a_service_without_networks_joins_the_stack_default_network(tmp_path: Path) -> None:
    specs = convert(tmp_path, "services: {web: {image: nginx}}", ns="blog")
    assert specs.networks == {
        "blog_default": {"Name": "blog_default", "Driver": "overlay", "Attachable": False, "Labels": {NS: "blog"}}
    }
    assert specs.services["web"]["TaskTemplate"]["Networks"] == [{"Target": "blog_default", "Aliases": ["web"]}]


def test_networks_no_service_uses_are_not_created(tmp_path: Path) -> None:
    specs = convert(tmp_path, "services: {web: {image: nginx, networks: [a]}}\nnetworks: {a: {}, b: {}}")
    assert list(specs.networks) == ["app_a"]


def test_external_networks_are_referenced_by_name_and_not_created(tmp_path: Path) -> None:
    specs = convert(
        tmp_path,
        """
        services:
          web: {image: nginx, networks: [proxy, legacy]}
        networks:
          proxy: {external: true}
          legacy: {external: {name: old_proxy}}
        """,
    )
    assert specs.networks == {}
    assert sorted(specs.external_networks) == ["old_proxy", "proxy"]
    assert specs.services["web"]["TaskTemplate"]["Networks"] == [
        {"Target": "old_proxy", "Aliases": ["web"]},
        {"Target": "proxy", "Aliases": ["web"]},
    ]


def test_a_named_network_keeps_its_name_without_the_namespace(tmp_path: Path) -> None:
    specs = convert(tmp_path, "services: {web: {image: nginx, networks: [n]}}\nnetworks: {n: {name: shared}}")
    assert list(specs.networks) == ["shared"]


# -- secrets ----------------------------------------------------------------------------------------------------


def test_file_secrets_are_read_relative_to_the_compose_file_not_the_cwd(tmp_path: Path) -> None:
    stack_dir = tmp_path / "deploy"
    stack_dir.mkdir()
    (stack_dir / "key.bin").write_bytes(b"\x00\xffbinary")
    path = write(stack_dir, "services: {web: {image: nginx, secrets: [k]}}\nsecrets: {k: {file: key.bin}}")
    specs = stack_specs(load_stack(path, {}), "app")
    assert base64.b64decode(specs.secrets["app_k"]["Data"]) == b"\x00\xffbinary"


def test_a_missing_secret_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, "services: {web: {image: nginx}}\nsecrets: {k: {file: nowhere.txt}}")
    assert "docker-compose.yml" in message and "secrets.k.file" in message and "nowhere.txt" in message


def test_external_secrets_are_referenced_by_name(tmp_path: Path) -> None:
    specs = convert(tmp_path, "services: {web: {image: nginx, secrets: [api]}}\nsecrets: {api: {external: true}}")
    assert specs.secrets == {}
    assert specs.external_secrets == ["api"]
    assert specs.services["web"]["TaskTemplate"]["ContainerSpec"]["Secrets"] == [
        {"File": {"Name": "api", "UID": "0", "GID": "0", "Mode": 0o444}, "SecretName": "api"}
    ]


# -- ports --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "expected"),
    [
        ("8080:80", [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]),
        ("53:53/udp", [{"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "ingress"}]),
        ("80", [{"Protocol": "tcp", "TargetPort": 80, "PublishMode": "ingress"}]),
        (
            "9000-9001:8000-8001",
            [
                {"Protocol": "tcp", "TargetPort": 8000, "PublishedPort": 9000, "PublishMode": "ingress"},
                {"Protocol": "tcp", "TargetPort": 8001, "PublishedPort": 9001, "PublishMode": "ingress"},
            ],
        ),
        ("127.0.0.1:8080:80", [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]),
    ],
)
def test_short_port_syntax(tmp_path: Path, short: str, expected: list[dict[str, object]]) -> None:
    specs = convert(tmp_path, f'services: {{web: {{image: nginx, ports: ["{short}"]}}}}')
    assert specs.services["web"]["EndpointSpec"]["Ports"] == expected


def test_a_host_ip_in_a_port_is_ignored_with_a_warning(tmp_path: Path) -> None:
    specs = convert(tmp_path, 'services: {web: {image: nginx, ports: ["127.0.0.1:8080:80"]}}')
    assert any("127.0.0.1" in warning and "services.web.ports[0]" in warning for warning in specs.warnings)


def test_long_port_syntax_defaults_to_tcp_through_the_ingress(tmp_path: Path) -> None:
    specs = convert(tmp_path, "services: {web: {image: nginx, ports: [{target: 80, published: '8080'}]}}")
    assert specs.services["web"]["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}
    ]


def test_dnsrr_endpoint_mode(tmp_path: Path) -> None:
    specs = convert(tmp_path, "services: {web: {image: nginx, deploy: {endpoint_mode: dnsrr}}}")
    assert specs.services["web"]["EndpointSpec"] == {"Mode": "dnsrr"}


# -- interpolation (cli/compose/template) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "environment", "expected"),
    [
        ("${TAG}", {"TAG": "1.0"}, "1.0"),
        ("$TAG", {"TAG": "1.0"}, "1.0"),
        ("${TAG}", {}, ""),
        ("${TAG:-dflt}", {}, "dflt"),
        ("${TAG:-dflt}", {"TAG": ""}, "dflt"),  # ':-' also replaces an empty value
        ("${TAG-dflt}", {"TAG": ""}, ""),  # '-' only replaces an unset one
        ("${TAG-dflt}", {}, "dflt"),
        ("${TAG:?must be set}", {"TAG": "x"}, "x"),
        ("${TAG?must be set}", {"TAG": ""}, ""),
        ("$$TAG", {"TAG": "1.0"}, "$TAG"),  # $$ is a literal $
        ("cost $$5 ${TAG}", {"TAG": "a"}, "cost $5 a"),
    ],
)
def test_interpolation(tmp_path: Path, template: str, environment: dict[str, str], expected: str) -> None:
    specs = convert(tmp_path, f"services: {{web: {{image: nginx, labels: {{v: '{template}'}}}}}}", environment)
    assert specs.services["web"]["TaskTemplate"]["ContainerSpec"]["Labels"]["v"] == expected


@pytest.mark.parametrize("template", ["${TAG:?set TAG to the image tag}", "${TAG?set TAG to the image tag}"])
def test_a_required_variable_that_is_missing_is_an_error_naming_it(tmp_path: Path, template: str) -> None:
    message = error_of(tmp_path, f"services: {{web: {{image: 'nginx:{template}'}}}}")
    assert "services.web.image" in message
    assert "TAG" in message and "set TAG to the image tag" in message


def test_colon_question_mark_refuses_an_empty_value(tmp_path: Path) -> None:
    assert "required variable TAG" in error_of(tmp_path, "services: {web: {image: 'nginx:${TAG:?}'}}", {"TAG": ""})


def test_an_invalid_interpolation_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "services: {web: {image: 'nginx:${TAG'}}")
    assert "services.web.image" in message and "invalid interpolation" in message


def test_an_interpolated_number_is_read_as_a_number(tmp_path: Path) -> None:
    specs = convert(tmp_path, "services: {web: {image: nginx, deploy: {replicas: '${N:-4}'}}}")
    assert specs.services["web"]["Mode"] == {"Replicated": {"Replicas": 4}}


# -- errors name the file and the key path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key_path", "problem"),
    [
        ("services: {web: {image: nginx, deploy: {replicas: many}}}", "services.web.deploy.replicas", "integer"),
        ("services: {web: {image: nginx, deploy: {replicas: -1}}}", "services.web.deploy.replicas", "from 0"),
        (
            "services: {web: {image: nginx, deploy: {mode: global, replicas: 2}}}",
            "services.web.deploy.replicas",
            "replicated or replicated-job mode",
        ),
        ("services: {web: {image: nginx, deploy: {mode: sometimes}}}", "services.web.deploy.mode", "one of"),
        ("services: {web: {image: nginx, deploy: {replica: 2}}}", "services.web.deploy.replica", "unknown option"),
        ("services: {web: {image: nginx, stop_grace_period: 10}}", "services.web.stop_grace_period", "string"),
        ("services: {web: {image: nginx, stop_grace_period: 10 s}}", "services.web.stop_grace_period", "duration"),
        (
            "services: {web: {image: nginx, deploy: {resources: {limits: {memory: lots}}}}}",
            "services.web.deploy.resources.limits.memory",
            "size",
        ),
        (
            "services: {web: {image: nginx, deploy: {resources: {limits: {cpus: '0.0000000001'}}}}}",
            "services.web.deploy.resources.limits.cpus",
            "too precise",
        ),
        ("services: {web: {image: nginx, ports: ['80:99999']}}", "services.web.ports[0]", "port"),
        ("services: {web: {image: nginx, ports: [{published: 80}]}}", "services.web.ports[0].target", "required"),
        (
            "services: {web: {image: nginx, ports: [{target: 80, mode: overlay}]}}",
            "services.web.ports[0].mode",
            "one of",
        ),
        ("services: {web: {image: nginx, networks: [nope]}}", "services.web.networks.nope", "undefined network"),
        ("services: {web: {image: nginx, secrets: [nope]}}", "services.web.secrets[0]", "undefined secret"),
        ("services: {web: {command: [run]}}", "services.web.image", "required"),
        ("services: {web: {image: nginx, command: 'echo \"unclosed'}}", "services.web.command", "split"),
        ("services: {web: {image: nginx, environment: 3}}", "services.web.environment", "mapping"),
        (
            "services: {web: {image: nginx, deploy: {update_config: {failure_action: explode}}}}",
            "services.web.deploy.update_config.failure_action",
            "one of",
        ),
        (
            "services: {web: {image: nginx, deploy: {rollback_config: {failure_action: rollback}}}}",
            "services.web.deploy.rollback_config.failure_action",
            "one of",
        ),
        (
            "services: {web: {image: nginx}}\nnetworks: {n: {ipam: {config: [{subnet: nope}]}}}",
            "networks.n.ipam.config[0].subnet",
            "CIDR",
        ),
        ("services: {web: {image: nginx}}\nsecrets: {s: {}}", "secrets.s.file", "required"),
        ("services: []", "services", "mapping"),
        ("version: '3'", "services", "required"),
    ],
)
def test_errors_name_the_file_and_the_key_path(tmp_path: Path, text: str, key_path: str, problem: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "docker-compose.yml") + ": ")
    assert f": {key_path}: " in message
    assert problem in message


def test_malformed_yaml_gives_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "services:\n  web:\n    image: nginx\n   bad: [\n")
    assert "docker-compose.yml" in message and "line 4" in message


def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    assert "must be a mapping" in error_of(tmp_path, "- just\n- a list\n")


def test_compose_error_is_a_raftswarm_error() -> None:
    assert issubclass(ComposeError, RaftswarmError)


# -- warnings ------------------------------------------------------------------------------------------------------


def test_options_only_docker_compose_acts_on_are_ignored_with_dockers_warnings(tmp_path: Path) -> None:
    specs = convert(
        tmp_path,
        """
        services:
          web: {image: nginx, build: ., links: [db], x-note: fine}
          db: {image: postgres, container_name: db, depends_on: [web], expose: [5432]}
        x-anchors: {}
        """,
    )
    assert specs.warnings == [
        "Ignoring unsupported options: build, depends_on, links",
        (
            "Ignoring deprecated options:\n\n"
            "container_name: Setting the container name is not supported.\n\n"
            "expose: Exposing ports is unnecessary - services on the same network can access each other's containers"
            " on any port."
        ),
    ]
    assert set(specs.services) == {"web", "db"}


# -- no input crashes the loader ------------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=20,
)
_known = st.sampled_from(
    ["image", "command", "entrypoint", "environment", "labels", "secrets", "networks", "ports", "deploy",
     "stop_grace_period", "mode", "replicas", "resources", "limits", "cpus", "memory", "placement",
     "preferences", "spread", "update_config", "restart_policy", "target", "published", "external", "file",
     "ipam", "config", "subnet", "name", "delay", "source", "uid", "mode", "aliases", "volumes", "tmpfs",
     "healthcheck", "test", "interval", "retries", "disable", "ulimits", "soft", "hard", "sysctls", "extra_hosts",
     "dns", "dns_opt", "cap_add", "cap_drop", "stop_signal", "logging", "driver", "options", "restart",
     "read_only", "tty", "group_add", "isolation", "oom_score_adj", "type", "bind", "volume", "nocopy",
     "propagation", "size", "driver_opts", "labels", "pids", "generic_resources"]
)  # fmt: skip
_compose_like = st.recursive(
    _scalars
    | st.sampled_from(
        ["nginx", "10s", "0.5", "512M", "80:80", "${X:-1}", "$$", "${", "3", "data:/data:ro", "./b:/b", "/run:size=1m",
         "SIGINT", "h:10.0.0.1", "net.core.somaxconn=1", "volume", "bind", "tmpfs", "on-failure:2", "data"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_known, inner, max_size=4),
    max_leaves=25,
)
_stacks = st.fixed_dictionaries(
    {"services": st.dictionaries(st.sampled_from(["web", "db"]), _compose_like, max_size=2)},
    optional={"networks": _compose_like, "secrets": _compose_like, "volumes": _compose_like},
)


def _load_and_convert(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "stack.yml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        try:
            stack_specs(load_stack(path, {"X": "5"}), "app")
        except ComposeError:
            pass


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_documents, _stacks))
def test_random_yaml_documents_raise_nothing_but_compose_error(document: object) -> None:
    _load_and_convert(yaml.safe_dump(document))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_nothing_but_compose_error(data: bytes) -> None:
    _load_and_convert(data)
