"""`stack deploy -c base.yml -c override.yml`: files merged as docker/cli's loader merges them (cli/compose/loader/
merge.go) -- services key by key with the later file winning, maps merged, lists with an identity merged by it,
other lists appended to -- and `-c -` read from stdin. The CLI's side is in test_compose_deploy."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from raftswarm.stack import STDIN, ComposeError, load_stack, stack_specs

NS = "com.docker.stack.namespace"
SECOND = 1_000_000_000

BASE = """
version: "3.8"
services:
  web:
    image: nginx:1.26
    command: [nginx, -g, daemon off;]
    environment: {MODE: dev, KEEP: base}
    labels: {tier: web}
    cap_add: [NET_ADMIN]
    extra_hosts: ["db.local:10.0.0.5"]
    ports: ["8080:80", "9000"]
    volumes: ["data:/data", "./static:/static:ro"]
    secrets: [token]
    networks: {front: {aliases: [www]}, back: }
    ulimits: {nofile: 1024, nproc: 100}
    healthcheck: {test: "curl -f localhost", interval: 30s, retries: 3}
    logging: {driver: json-file, options: {max-size: 10m}}
    stop_grace_period: 10s
    read_only: true
    deploy:
      replicas: 2
      labels: {team: a}
      placement: {constraints: [node.role == worker]}
      resources: {limits: {cpus: "0.5", memory: 128M}}
      update_config: {parallelism: 1, delay: 5s}
  worker:
    image: busybox
networks: {front: {}, back: {}}
volumes: {data: {}}
secrets:
  token: {file: ./token.txt}
"""

OVERRIDE = """
services:
  web:
    image: nginx:1.27
    environment: {MODE: prod, EXTRA: "1"}
    labels: {release: stable}
    cap_add: [SYS_TIME]
    extra_hosts: ["cache.local:10.0.0.6"]
    ports: ["8080:8000", "9000/udp"]
    volumes: ["archive:/data"]
    secrets: [{source: token, target: api-token}]
    networks: {front: }
    ulimits: {nofile: {soft: 2048, hard: 4096}}
    healthcheck: {interval: 10s}
    logging: {options: {max-file: "3"}}
    read_only: false
    deploy:
      replicas: 5
      labels: {env: prod}
      placement: {constraints: [node.labels.zone == a]}
      resources: {limits: {memory: 256M}}
      update_config: {order: start-first}
  cron:
    image: busybox
    command: [sleep, "1000"]
volumes: {archive: {labels: {backup: "yes"}}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_services_are_merged_key_by_key_the_later_file_winning(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("t0k3n")
    config = load_stack([write(tmp_path, "base.yml", BASE), write(tmp_path, "prod.yml", OVERRIDE)], {})
    specs = stack_specs(config, "shop")

    assert sorted(specs.services) == ["cron", "web", "worker"]
    web = specs.services["web"]
    container = web["TaskTemplate"]["ContainerSpec"]
    assert container == {
        "Image": "nginx:1.27",
        "Args": ["nginx", "-g", "daemon off;"],  # kept: the override gives none
        "Env": ["EXTRA=1", "KEEP=base", "MODE=prod"],  # maps merged per key
        "Labels": {"tier": "web", "release": "stable", NS: "shop"},
        "CapabilityAdd": ["CAP_NET_ADMIN", "CAP_SYS_TIME"],  # plain lists appended to
        "Hosts": ["10.0.0.5 db.local", "10.0.0.6 cache.local"],
        "Mounts": [
            # by target: the override's volume replaces the base's at /data
            {"Type": "volume", "Source": "shop_archive", "Target": "/data", "VolumeOptions": {"Labels": {"backup": "yes", NS: "shop"}}},
            {"Type": "bind", "Source": str(tmp_path / "static"), "Target": "/static", "ReadOnly": True},
        ],
        # by source: the override's reference replaces the base's
        "Secrets": [{"File": {"Name": "api-token", "UID": "0", "GID": "0", "Mode": 0o444}, "SecretName": "shop_token"}],
        "Ulimits": [{"Name": "nofile", "Soft": 2048, "Hard": 4096}, {"Name": "nproc", "Soft": 100, "Hard": 100}],
        "Healthcheck": {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 10 * SECOND, "Retries": 3},
        "StopGracePeriod": 10 * SECOND,
        # read_only: false wins (docker/cli's merge cannot tell false from unset, and would keep true)
    }
    assert web["TaskTemplate"]["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "3"}}
    assert web["TaskTemplate"]["Networks"] == [  # merged by name; front's aliases kept: the override gives none
        {"Target": "shop_back", "Aliases": ["web"]},
        {"Target": "shop_front", "Aliases": ["www", "web"]},
    ]
    assert web["TaskTemplate"]["Placement"] == {"Constraints": ["node.role == worker", "node.labels.zone == a"]}
    assert web["TaskTemplate"]["Resources"] == {"Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 256 << 20}}
    assert web["Mode"] == {"Replicated": {"Replicas": 5}}
    assert web["Labels"] == {"team": "a", "env": "prod", NS: "shop", "com.docker.stack.image": "nginx:1.27"}
    assert web["UpdateConfig"] == {"Parallelism": 1, "Delay": 5 * SECOND, "Order": "start-first"}
    assert web["EndpointSpec"]["Ports"] == [
        # by published port: 8080 now goes to 8000; 9000/tcp and 9000/udp (not published) are two ports
        {"Protocol": "tcp", "TargetPort": 9000, "PublishMode": "ingress"},
        {"Protocol": "udp", "TargetPort": 9000, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 8000, "PublishedPort": 8080, "PublishMode": "ingress"},
    ]
    assert specs.services["cron"]["TaskTemplate"]["ContainerSpec"]["Args"] == ["sleep", "1000"]
    assert specs.services["worker"]["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox"


def test_a_logging_driver_change_replaces_the_options(tmp_path: Path) -> None:
    base = write(tmp_path, "a.yml", "services: {web: {image: x, logging: {driver: json-file, options: {max-size: 1m}}}}")
    other = write(tmp_path, "b.yml", "services: {web: {logging: {driver: syslog, options: {tag: web}}}}")
    specs = stack_specs(load_stack([base, other], {}), "app")
    assert specs.services["web"]["TaskTemplate"]["LogDriver"] == {"Name": "syslog", "Options": {"tag": "web"}}


def test_top_level_definitions_of_a_later_file_replace_an_earlier_ones(tmp_path: Path) -> None:
    base = write(tmp_path, "a.yml", "services: {web: {image: x, networks: [n]}}\nnetworks: {n: {labels: {a: '1'}, attachable: true}}")
    other = write(tmp_path, "b.yml", "networks: {n: {labels: {b: '2'}}}")
    specs = stack_specs(load_stack([base, other], {}), "app")
    assert specs.networks["app_n"] == {"Name": "app_n", "Driver": "overlay", "Attachable": False, "Labels": {"b": "2", NS: "app"}}


def test_a_service_may_name_what_another_file_defines_and_leave_its_image_to_it(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("s")
    base = write(tmp_path, "a.yml", "services: {web: {image: x}}\nsecrets: {s: {file: s.txt}}\nvolumes: {v: {}}")
    other = write(tmp_path, "b.yml", "services: {web: {secrets: [s], volumes: ['v:/v']}}")
    container = stack_specs(load_stack([base, other], {}), "app").services["web"]["TaskTemplate"]["ContainerSpec"]
    assert [secret["SecretName"] for secret in container["Secrets"]] == ["app_s"]
    assert container["Mounts"][0]["Source"] == "app_v"


def test_relative_paths_of_every_file_are_resolved_against_the_first_files_directory(tmp_path: Path) -> None:
    # docker/cli's ConfigDetails.WorkingDir: the directory of the first -c file
    (tmp_path / "overrides").mkdir()
    (tmp_path / "app.env").write_text("FROM=first-files-dir\n")
    base = write(tmp_path, "a.yml", "services: {web: {image: x}}")
    other = write(tmp_path / "overrides", "b.yml", "services: {web: {env_file: app.env, volumes: ['./logs:/logs']}}")
    container = stack_specs(load_stack([base, other], {}), "app").services["web"]["TaskTemplate"]["ContainerSpec"]
    assert container["Env"] == ["FROM=first-files-dir"]
    assert container["Mounts"][0]["Source"] == str(tmp_path / "logs")


@pytest.mark.parametrize(
    ("first", "second", "words"),
    [
        # only the merged files show it: the problem names them both
        ("services: {web: {image: x}}", "services: {web: {deploy: {mode: global}}}\nx-: 1", None),
        ("services: {web: {image: x, deploy: {replicas: 2}}}", "services: {web: {deploy: {mode: global}}}", "{a}, {b}: services.web.deploy.replicas: replicas can only"),
        ("services: {web: {command: [x]}}", "services: {web: {user: root}}", "{a}, {b}: services.web.image: is required"),
        ("services: {web: {image: x, healthcheck: {test: 'true'}}}", "services: {web: {healthcheck: {disable: true}}}", "{a}, {b}: services.web.healthcheck: test and disable"),
        # one file's own problem names that file
        ("services: {web: {image: x}}", "services: {web: {networks: [nope]}}", "{b}: services.web.networks.nope: undefined network"),
        ("services: {web: {image: x}}", "services: {web: {deploy: {replicas: lots}}}", "{b}: services.web.deploy.replicas: must be an integer"),
    ],
)
def test_merge_errors_name_the_files(tmp_path: Path, first: str, second: str, words: str | None) -> None:
    a, b = write(tmp_path, "a.yml", first), write(tmp_path, "b.yml", second)
    if words is None:
        load_stack([a, b], {})
        return
    with pytest.raises(ComposeError) as caught:
        load_stack([a, b], {})
    assert str(caught.value).startswith(words.format(a=a, b=b))


def test_stdin_is_read_for_dash_and_relative_paths_are_the_current_directorys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.env").write_text("A=1\n")
    config = load_stack([STDIN], {}, io.BytesIO(b"services: {web: {image: x, env_file: app.env}}\n"))
    assert config.files == ("<stdin>",)
    assert stack_specs(config, "app").services["web"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["A=1"]
    with pytest.raises(ComposeError, match=r"^<stdin>: services\.web\.deploy\.replicas: must be an integer"):
        load_stack([STDIN], {}, io.BytesIO(b"services: {web: {image: x, deploy: {replicas: x}}}"))
    with pytest.raises(ComposeError, match='stdin can be read once: give "-" as one compose file only'):
        load_stack([STDIN, STDIN], {}, io.BytesIO(b""))
