"""The ContainerSpec flags of `raftswarm service create/update` against a fake node: the exact ServiceSpec each
sends (docker's ToService and updateService), docker's messages for bad values, docker's update rules, and
`inspect --pretty`. (`test_cli_service_vs_docker.py` checks the same against the docker CLI itself.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fake_engine import FakeEngine, standard_swarm

from raftswarm.cli.main import main
from raftswarm.cli.service import progress
from raftswarm.cli.service.containerflags import parse_dns_search, parse_extra_host, parse_mount, parse_ulimit
from raftswarm.cli.service.goflags import parse_go_bool, parse_go_int, parse_go_uint, split_command
from raftswarm.objects.specs import service_warnings, validate_service_spec

SERVICE_ID = "kzqr6fwm5rh7fzjxvfhqxn1zv"
CONFIG_ID = "cfgq7ohwsy2kpjcbnlq1vjc0a"


@pytest.fixture
def engine(tmp_path: Path):
    with FakeEngine(tmp_path / "engine.sock") as fake:
        standard_swarm(fake)
        fake.reply("POST", "/services/create", {"ID": SERVICE_ID}, status=201)
        fake.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})
        yield fake


def run(engine: FakeEngine, *args: str) -> Result:
    return CliRunner(env={"RAFTSWARM_HOST": None, "DOCKER_HOST": None}).invoke(main, ["-H", engine.url, *args])


def created(engine: FakeEngine, *flags: str, image: str = "nginx:1.27") -> dict[str, Any]:
    result = run(engine, "service", "create", "-d", "--no-resolve-image", *flags, image)
    assert result.exit_code == 0, result.output
    (request,) = engine.calls("POST", "/services/create")
    return request.body


def container_of(body: dict[str, Any]) -> dict[str, Any]:
    return body["TaskTemplate"]["ContainerSpec"]


def web(**container: Any) -> dict[str, Any]:
    return {
        "ID": SERVICE_ID,
        "Version": {"Index": 17},
        "Spec": {
            "Name": "web",
            "Labels": {},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "nginx:1.27", **container},
                "Resources": {"Limits": {}, "Reservations": {}},
                "Placement": {},
                "ForceUpdate": 0,
            },
            "Mode": {"Replicated": {"Replicas": 2}},
            "EndpointSpec": {"Mode": "vip"},
        },
    }


def updated(engine: FakeEngine, service: dict[str, Any], *flags: str) -> dict[str, Any]:
    engine.reply("GET", "/services/web", service)
    result = run(engine, "service", "update", "-d", *flags, "web")
    assert result.exit_code == 0, result.output
    (request,) = engine.calls("POST", f"/services/{SERVICE_ID}/update")
    return request.body


# -- create ------------------------------------------------------------------------------------------------


def test_create_sends_each_container_flag_where_docker_puts_it(engine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = created(
        engine,
        "--mount", "type=bind,src=./site,dst=/usr/share/nginx/html,ro",
        "--mount", "src=cache,dst=/cache,volume-label=tier=front,volume-nocopy",
        "--mount", "type=tmpfs,dst=/tmp,tmpfs-size=64m,tmpfs-mode=1777",
        "--ulimit", "nofile=1024:4096", "--ulimit", "core=-1",
        "--health-cmd", "curl -f localhost", "--health-interval", "30s", "--health-retries", "3",
        "--cap-add", "net_admin", "--cap-drop", "ALL",
        "--dns", "8.8.8.8", "--dns-search", "example.com", "--dns-option", "ndots:2",
        "--host", "db:10.0.0.5",
        "--group", "wheel",
        "--sysctl", "net.core.somaxconn=1024",
        "--log-driver", "json-file", "--log-opt", "max-size=10m",
        "--generic-resource", "gpu=2",
        "--credential-spec", "file://spec.json",
        "--entrypoint", "/docker-entrypoint.sh -v",
        "--stop-signal", "SIGQUIT", "-t", "--read-only", "--isolation", "default", "--oom-score-adj", "-500",
    )  # fmt: skip

    assert body["TaskTemplate"] == {
        "ContainerSpec": {
            "Image": "nginx:1.27",
            "Command": ["/docker-entrypoint.sh", "-v"],
            "Groups": ["wheel"],
            "Privileges": {
                "CredentialSpec": {"Config": "", "File": "spec.json", "Registry": ""},
                "SELinuxContext": None,
                "NoNewPrivileges": False,
            },
            "StopSignal": "SIGQUIT",
            "TTY": True,
            "ReadOnly": True,
            "Mounts": [
                {"Type": "bind", "Source": str(tmp_path / "site"), "Target": "/usr/share/nginx/html", "ReadOnly": True},
                {
                    "Type": "volume",
                    "Source": "cache",
                    "Target": "/cache",
                    "VolumeOptions": {"NoCopy": True, "Labels": {"tier": "front"}, "DriverConfig": {}},
                },
                {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 64 * 2**20, "Mode": 0o1777}},
            ],
            "Healthcheck": {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 30 * 10**9, "Retries": 3},
            "Hosts": ["10.0.0.5 db"],
            "DNSConfig": {"Nameservers": ["8.8.8.8"], "Search": ["example.com"], "Options": ["ndots:2"]},
            "Isolation": "default",
            "Sysctls": {"net.core.somaxconn": "1024"},
            "CapabilityAdd": ["CAP_NET_ADMIN"],
            "CapabilityDrop": ["ALL"],
            "Ulimits": [{"Name": "core", "Hard": -1, "Soft": -1}, {"Name": "nofile", "Hard": 4096, "Soft": 1024}],
            "OomScoreAdj": -500,
        },
        "Resources": {"Limits": {}, "Reservations": {"GenericResources": [{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}}]}},
        "Placement": {},
        "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m"}},
        "ForceUpdate": 0,
    }


def test_the_spec_of_every_container_flag_passes_the_nodes_checks_and_its_warnings_name_what_it_ignores(engine):
    body = created(
        engine,
        "--mount", "type=bind,src=/srv,dst=/srv,ro", "--mount", "src=cache,dst=/cache",
        "--mount", "type=tmpfs,dst=/tmp,tmpfs-size=64m,tmpfs-mode=1777", "--ulimit", "nofile=1024:4096",
        "--health-cmd", "true", "--health-interval", "5s", "--health-start-interval", "1s",
        "--cap-add", "net_admin", "--cap-drop", "mknod", "--dns", "8.8.8.8", "--dns-search", "example.com",
        "--dns-option", "ndots:2", "--host", "db:10.0.0.5", "--group", "wheel", "--sysctl", "net.core.somaxconn=1024",
        "--log-driver", "json-file", "--log-opt", "max-size=1m", "--generic-resource", "gpu=1",
        "--credential-spec", "file://spec.json", "--entrypoint", "sh -c", "--stop-signal", "SIGINT", "-t", "--read-only",
        "--isolation", "default", "--oom-score-adj", "100", "--init", "--mode", "replicated-job", "--replicas", "2",
        "--name", "web",
    )  # fmt: skip

    validate_service_spec(body)

    assert service_warnings(body) == [
        "TaskTemplate.ContainerSpec.Privileges.CredentialSpec is ignored: credential specs are a Windows feature",
        "TaskTemplate.Resources.Reservations.GenericResources is ignored: generic resources are not scheduled",
        "TaskTemplate.LogDriver is ignored: a task's output is kept by its node (`service logs`); log drivers are not used",
    ]


def test_create_without_container_flags_sends_none_of_their_fields(engine):
    assert container_of(created(engine)) == {"Image": "nginx:1.27"}


@pytest.mark.parametrize(
    ("flags", "healthcheck"),
    [
        (["--no-healthcheck"], {"Test": ["NONE"]}),
        (["--health-timeout", "0s"], {}),  # given, so sent, though every field is zero
        (["--health-start-period", "1m", "--health-start-interval", "2s"], {"StartPeriod": 60 * 10**9, "StartInterval": 2 * 10**9}),
        (["--health-cmd", "", "--health-retries", "0"], None),  # docker counts neither as given
        (["--no-healthcheck=false"], None),
    ],
)  # fmt: skip
def test_create_healthcheck_as_docker_makes_it(engine, flags, healthcheck):
    assert container_of(created(engine, *flags)).get("Healthcheck") == healthcheck


@pytest.mark.parametrize(
    ("flags", "add", "drop"),
    [
        (["--cap-add", "net_admin", "--cap-add", "CAP_NET_ADMIN", "--cap-add", " sys_time "], ["CAP_NET_ADMIN", "CAP_SYS_TIME"], None),
        (["--cap-add", "chown", "--cap-drop", "chown", "--cap-drop", "kill"], ["CAP_CHOWN"], ["CAP_KILL"]),
        (["--cap-add", "all", "--cap-add", "chown"], ["ALL"], None),
        (["--cap-add", "RESET", "--cap-drop", "reset"], None, None),
    ],
)  # fmt: skip
def test_create_capabilities_are_normalized_and_adding_wins(engine, flags, add, drop):
    container = container_of(created(engine, *flags))
    assert (container.get("CapabilityAdd"), container.get("CapabilityDrop")) == (add, drop)


def test_create_booleans_take_go_values_and_stop_at_the_image(engine):
    body = created(engine, "-dt", "--read-only=false", "--init=false", image="nginx:1.27")
    assert container_of(body) == {"Image": "nginx:1.27", "TTY": True, "Init": False}

    engine.requests.clear()
    result = run(engine, "service", "create", "-d", "--no-resolve-image", "busybox:1.36", "app", "--tty=false", "-t")
    (request,) = engine.calls("POST", "/services/create")
    assert container_of(request.body) == {"Image": "busybox:1.36", "Args": ["app", "--tty=false", "-t"]}
    assert result.exit_code == 0


def test_create_detach_false_waits_as_docker_does(engine, monkeypatch):
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.005)
    monkeypatch.setattr(progress, "CONVERGENCE_TIMEOUT", 0.02)

    result = run(engine, "service", "create", "--detach=false", "--no-resolve-image", "nginx:1.27")

    assert engine.calls("GET", f"/services/{SERVICE_ID}")  # it waited
    assert result.exit_code == 1


def test_create_entrypoint_is_split_as_googles_shlex_splits_it(engine):
    body = created(engine, "--entrypoint", "sh -c 'echo \"$HOME\"' # the rest is a comment\nls")
    assert container_of(body)["Command"] == ["sh", "-c", 'echo "$HOME"', "ls"]


def test_create_reads_env_files_before_env_flags(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKEN", "s3cr3t")
    (tmp_path / "app.env").write_text("# settings\nMODE=prod\n  LEVEL=debug  \nTOKEN\nUNSET_VARIABLE\n")

    body = created(engine, "--env-file", str(tmp_path / "app.env"), "-e", "MODE=dev")

    assert container_of(body)["Env"] == ["LEVEL=debug  ", "TOKEN=s3cr3t", "MODE=dev"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"=value\n", "no variable name on line '=value'"),
        (b"MY VAR=1\n", "variable 'MY VAR' contains whitespaces"),
        (b"OK=1\nBAD=\xff\n", "invalid utf8 bytes at line 2: [66 65 68 61 255]"),
    ],
)
def test_create_with_an_unreadable_env_file_says_what_docker_says(engine, tmp_path, content, message):
    path = tmp_path / "bad.env"
    path.write_bytes(content)

    result = run(engine, "service", "create", "--env-file", str(path), "nginx:1.27")

    assert result.exit_code == 1
    assert result.stderr == f"invalid env file ({path}): {message}\n"
    assert engine.mutations() == []


def test_create_with_a_missing_env_file(engine, tmp_path):
    result = run(engine, "service", "create", "--env-file", str(tmp_path / "nope.env"), "nginx:1.27")

    assert result.stderr == f"open {tmp_path / 'nope.env'}: no such file or directory\n"


def test_create_credential_spec_from_a_config_references_the_config_by_id(engine):
    engine.reply("GET", "/configs", [{"ID": CONFIG_ID, "Spec": {"Name": "gmsa"}}])

    container = container_of(created(engine, "--credential-spec", "config://gmsa"))

    assert container["Privileges"]["CredentialSpec"] == {"Config": CONFIG_ID, "File": "", "Registry": ""}
    assert container["Configs"] == [{"Runtime": {}, "ConfigID": CONFIG_ID, "ConfigName": "gmsa"}]
    (lookup,) = engine.calls("GET", "/configs")
    assert lookup.filters == {"name": ["gmsa"]}


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--mount", "type=bind", "target is required"),
        ("--mount", "type=bind,dst=/x,volume-nocopy", "cannot mix 'volume-*' options with mount type 'bind'"),
        ("--mount", "dst=/x,bogus", "invalid field 'bogus' must be a key=value pair"),
        ("--mount", "type=tmpfs,dst=/x,tmpfs-mode=9", "invalid value for tmpfs-mode: 9"),
        ("--ulimit", "nofile=2:1", "ulimit soft limit must be less than or equal to hard limit: 2 > 1"),
        ("--ulimit", "nofile=unlimited", 'strconv.ParseInt: parsing "unlimited": invalid syntax'),
        ("--ulimit", "as=1", "invalid ulimit type: as"),
        ("--host", "foo", 'bad format for add-host: "foo"'),
        ("--host", "foo:bar", 'invalid IP address in add-host: "bar"'),
        ("--dns", "1.2.3", "IP address is not correctly formatted: 1.2.3"),
        ("--dns-search", "-x", "-x is not a valid domain"),
        ("--generic-resource", "gpu", "invalid generic-resource format `gpu` expected `name=value`"),
        ("--health-interval", "-1s", "duration cannot be negative"),
        ("--credential-spec", "spec.json", 'invalid credential spec: value must be prefixed with "config://"'),
        ("--oom-score-adj", "high", 'strconv.ParseInt: parsing "high": invalid syntax'),
        ("--max-concurrent", "-1", 'strconv.ParseUint: parsing "-1": invalid syntax'),
        ("--entrypoint", "'open", "EOF found when expecting closing quote"),
        ("--tty=yes", None, 'strconv.ParseBool: parsing "yes": invalid syntax'),
        ("--detach=yes", None, 'invalid argument "yes" for "--detach" flag: strconv.ParseBool: parsing "yes"'),
    ],
)
def test_create_with_a_value_docker_refuses_is_a_usage_error_with_dockers_reason(engine, flag, value, message):
    result = run(engine, "service", "create", flag, *([value] if value is not None else []), "nginx:1.27")

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert engine.requests == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--no-healthcheck", "--health-cmd", "true"], "--no-healthcheck conflicts with --health-* options"),
        (["--generic-resource", "gpu=UUID1"], "invalid generic-resource request `gpu=UUID1`, Named Generic Resources is not supported for service create or update"),
        (["--generic-resource", "gpu=-1"], "invalid generic resource specification: could not parse GenericResource: cannot ask for negative resource gpu"),
        (["--generic-resource", "gpu=1", "--generic-resource", "gpu=x"], "invalid generic resource specification: could not parse GenericResource: mixed discrete and named resources in expression 'gpu=[1 x]'"),
    ],
)  # fmt: skip
def test_create_refuses_what_docker_refuses(engine, flags, message):
    result = run(engine, "service", "create", *flags, "nginx:1.27")

    assert result.exit_code == 1
    assert result.stderr == message + "\n"
    assert engine.mutations() == []


def test_create_and_update_help_show_dockers_texts(engine):
    create_help = " ".join(run(engine, "service", "create", "--help").stdout.split())
    update_help = " ".join(run(engine, "service", "update", "--help").stdout.split())
    for text in (
        "--mount mount",
        "Attach a filesystem mount to the service",
        "--ulimit ulimit",
        "--health-start-interval duration",
        "Disable any container-specified HEALTHCHECK",
        "-t, --tty Allocate a pseudo-TTY",
        "--read-only Mount the container's root filesystem as read only",
        "Set one or more custom host-to-IP mappings (host:ip)",
        "Read in a file of environment variables",
        'Service mode ("replicated", "global", "replicated-job", "global-job")',
        "Number of job tasks to run concurrently (default equal to --replicas)",
        "Credential spec for managed service account (Windows only)",
        "Tune host's OOM preferences (-1000 to 1000)",
    ):
        assert text in create_help
    for text in (
        "--mount-add mount",
        "Remove a mount by its target path",
        'Add a custom host-to-IP mapping ("host:ip")',
        "Remove a previously added supplementary user group from the container",
        "--generic-resource-rm list",
        "--ulimit-rm list",
        "--dns-option-add list",
    ):
        assert text in update_help
    assert "--mount " not in update_help and "--mount-add" not in create_help


# -- update ----------------------------------------------------------------------------------------------------


def test_update_without_flags_sorts_mounts_and_ulimits_as_docker_does(engine):
    mounts = [{"Type": "bind", "Source": "/b", "Target": "/b"}, {"Type": "bind", "Source": "/a", "Target": "/z"}]
    ulimits = [{"Name": "nproc", "Hard": 2, "Soft": 1}, {"Name": "core", "Hard": 0, "Soft": 0}]

    container = container_of(updated(engine, web(Mounts=mounts, Ulimits=ulimits)))

    assert [m["Target"] for m in container["Mounts"]] == ["/z", "/b"]
    assert [u["Name"] for u in container["Ulimits"]] == ["core", "nproc"]


def test_update_mounts_replace_by_target_and_remove_by_target(engine):
    mounts = [{"Type": "bind", "Source": "/srv/a", "Target": "/a"}, {"Type": "volume", "Source": "v", "Target": "/v"}]

    container = container_of(
        updated(engine, web(Mounts=mounts), "--mount-add", "type=bind,src=/srv/new,dst=/a,ro", "--mount-rm", "/v")
    )

    assert container["Mounts"] == [{"Type": "bind", "Source": "/srv/new", "Target": "/a", "ReadOnly": True}]


def test_update_capabilities_undo_each_other_before_adding(engine):
    service = web(CapabilityAdd=["CAP_NET_ADMIN"], CapabilityDrop=["CAP_CHOWN"])

    container = container_of(updated(engine, service, "--cap-add", "chown", "--cap-drop", "net_admin", "--cap-drop", "kill"))

    # chown was dropped: adding it undoes the drop; net_admin was added: dropping it undoes the add
    assert "CapabilityAdd" not in container
    assert container["CapabilityDrop"] == ["CAP_KILL"]


def test_update_capabilities_reset_forgets_the_services_list(engine):
    service = web(CapabilityAdd=["CAP_NET_ADMIN", "CAP_KILL"])

    container = container_of(updated(engine, service, "--cap-add", "reset", "--cap-add", "sys_time"))

    assert container["CapabilityAdd"] == ["CAP_SYS_TIME"]


def test_update_healthcheck_changes_only_the_fields_given(engine):
    healthcheck = {"Test": ["CMD-SHELL", "true"], "Interval": 10**10, "Retries": 3}

    container = container_of(updated(engine, web(Healthcheck=healthcheck), "--health-retries", "5"))
    assert container["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 10**10, "Retries": 5}

    engine.requests.clear()
    container = container_of(updated(engine, web(Healthcheck={"Test": ["NONE"]}), "--health-interval", "5s"))
    assert container["Healthcheck"] == {"Interval": 5 * 10**9}  # NONE goes: a healthcheck is wanted again


def test_update_health_start_interval_is_applied_where_docker_ignores_it(engine):
    healthcheck = {"Test": ["CMD-SHELL", "true"]}

    container = container_of(updated(engine, web(Healthcheck=healthcheck), "--health-start-interval", "2s"))

    assert container["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "StartInterval": 2 * 10**9}


def test_update_no_healthcheck_replaces_it_and_conflicts_with_the_health_flags(engine):
    container = container_of(updated(engine, web(Healthcheck={"Test": ["CMD", "x"], "Retries": 2}), "--no-healthcheck"))
    assert container["Healthcheck"] == {"Test": ["NONE"]}

    engine.reply("GET", "/services/web", web())
    result = run(engine, "service", "update", "-d", "--no-healthcheck", "--health-retries", "1", "web")
    assert result.stderr == "--no-healthcheck conflicts with --health-* options\n"


def test_update_lists_merge_with_add_and_rm_as_docker_merges_them(engine):
    service = web(
        Groups=["wheel", "adm"],
        DNSConfig={"Nameservers": ["8.8.8.8", "1.1.1.1"], "Search": ["a.example"]},
        Hosts=["10.0.0.1 a b", "10.0.0.2 a"],
        Sysctls={"kernel.msgmax": "1", "net.core.somaxconn": "1"},
        Ulimits=[{"Name": "nofile", "Hard": 2, "Soft": 1}],
    )

    container = container_of(
        updated(
            engine, service,
            "--group-add", "staff", "--group-rm", "adm",
            "--dns-add", "9.9.9.9", "--dns-rm", "1.1.1.1", "--dns-option-add", "ndots:1",
            "--host-rm", "a:10.0.0.1", "--host-add", "c:10.0.0.3",
            "--sysctl-rm", "kernel.msgmax", "--sysctl-add", "net.core.somaxconn=4096",
            "--ulimit-rm", "nofile", "--ulimit-add", "nproc=5",
        )
    )  # fmt: skip

    assert container["Groups"] == ["staff", "wheel"]
    assert container["DNSConfig"] == {"Nameservers": ["8.8.8.8", "9.9.9.9"], "Search": ["a.example"], "Options": ["ndots:1"]}
    assert container["Hosts"] == ["10.0.0.1 b", "10.0.0.2 a", "10.0.0.3 c"]
    assert container["Sysctls"] == {"net.core.somaxconn": "4096"}
    assert container["Ulimits"] == [{"Name": "nproc", "Hard": 5, "Soft": 5}]


def test_update_host_rm_by_name_removes_it_from_every_address(engine):
    container = container_of(updated(engine, web(Hosts=["10.0.0.1 a b", "10.0.0.2 a"]), "--host-rm", "a"))
    assert container["Hosts"] == ["10.0.0.1 b"]


def test_update_booleans_turn_off_with_false_and_strings_change_only_when_given(engine):
    service = web(TTY=True, ReadOnly=True, Init=True, StopSignal="SIGTERM", Command=["old"], OomScoreAdj=5)

    container = container_of(
        updated(engine, service, "--tty=false", "--read-only=false", "--init=false", "--entrypoint", "")
    )

    assert container == {"Image": "nginx:1.27", "Init": False, "StopSignal": "SIGTERM", "OomScoreAdj": 5}


def test_update_log_options_count_only_with_a_log_driver(engine):
    driver = {"Name": "json-file", "Options": {"max-size": "1m"}}
    body = updated(engine, web(), "--log-opt", "max-file=2")
    assert "LogDriver" not in body["TaskTemplate"]

    engine.requests.clear()
    service = web()
    service["Spec"]["TaskTemplate"]["LogDriver"] = driver
    body = updated(engine, service, "--log-driver", "local", "--log-opt", "max-file=2")
    assert body["TaskTemplate"]["LogDriver"] == {"Name": "local", "Options": {"max-file": "2"}}


def test_update_generic_resources_by_kind(engine):
    service = web()
    service["Spec"]["TaskTemplate"]["Resources"]["Reservations"]["GenericResources"] = [
        {"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}}
    ]

    body = updated(engine, service, "--generic-resource-add", "gpu=2", "--generic-resource-add", "fpga=1")

    assert body["TaskTemplate"]["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}},
        {"DiscreteResourceSpec": {"Kind": "fpga", "Value": 1}},
    ]
    engine.reply("GET", "/services/web", service)
    result = run(engine, "service", "update", "-d", "--generic-resource-rm", "ssd", "web")
    assert result.stderr == "could not find generic-resource `ssd` to remove it\n"


def test_update_credential_spec_empty_removes_it(engine):
    privileges = {"CredentialSpec": {"Config": "", "File": "spec.json", "Registry": ""}, "NoNewPrivileges": False}

    container = container_of(updated(engine, web(Privileges=privileges), "--credential-spec", ""))

    assert container["Privileges"] == {"CredentialSpec": None, "NoNewPrivileges": False}


def test_update_rollback_with_a_flag_given_as_false_is_refused(engine):
    engine.reply("GET", "/services/web", web())

    result = run(engine, "service", "update", "--rollback", "--read-only=false", "web")

    assert result.stderr == "other flags may not be combined with --rollback\n"
    assert engine.mutations() == []


def test_update_duplicate_mount_targets_are_refused(engine):
    engine.reply("GET", "/services/web", web())

    result = run(engine, "service", "update", "--mount-add", "type=tmpfs,dst=/x", "--mount-add", "type=tmpfs,dst=/x", "web")

    assert result.stderr == "duplicate mount target\n"


# -- inspect --pretty ------------------------------------------------------------------------------------------


def test_inspect_pretty_shows_the_container_fields_as_dockers_template_does(engine):
    service = web(
        CapabilityAdd=["CAP_NET_ADMIN", "CAP_SYS_TIME"],
        Sysctls={"net.core.somaxconn": "1024", "kernel.shmmax": ""},
        Ulimits=[{"Name": "nofile", "Hard": 20, "Soft": 10}],
        Mounts=[{"Type": "bind", "Source": "/srv", "Target": "/data", "ReadOnly": True}],
        Healthcheck={"Test": ["CMD-SHELL", "true"], "Interval": 10**10, "Retries": 3},
    )
    service["Spec"]["TaskTemplate"]["LogDriver"] = {"Name": "json-file", "Options": {"max-size": "1m"}}
    engine.reply("GET", "/services/web", service)

    result = run(engine, "service", "inspect", "--pretty", "web")

    assert result.stdout == (
        "\n"
        f"ID:\t\t{SERVICE_ID}\n"
        "Name:\t\tweb\n"
        "Service Mode:\tReplicated\n"
        " Replicas:\t2\n"
        "Placement:\n"
        "ContainerSpec:\n"
        " Image:\t\tnginx:1.27\n"
        "Capabilities:\n"
        " Add: CAP_NET_ADMIN, CAP_SYS_TIME\n"
        "SysCtls:\n"
        " kernel.shmmax\n"
        " net.core.somaxconn: 1024\n"
        "Ulimits:\n"
        " nofile: 10:20\n"
        "Mounts:\n"
        " Target:\t/data\n"
        "  Source:\t/srv\n"
        "  ReadOnly:\ttrue\n"
        "  Type:\t\tbind\n"
        "Log Driver:\n"
        " Name:\t\tjson-file\n"
        " LogOpts:\n"
        "  max-size:       1m\n"
        "\n"
        "Resources:\n"
        "Endpoint Mode:\tvip\n"
        " Healthcheck:\n"
        "  Interval = 10s\n"
        "  Retries = 3\n"
        "  StartPeriod =\t0s\n"
        "  Timeout =\t0s\n"
        "  Tests:\n"
        "\t Test = CMD-SHELL\n"
        "\t Test = true \n"
        "\n"
    )


# -- the values, as docker's opts package and Go read them ------------------------------------------------------


def test_mount_values():
    assert parse_mount("type=bind,src=./x,dst=/x") == {"Type": "bind", "Source": os.path.abspath("x"), "Target": "/x"}
    assert parse_mount("target=/v,volume-driver=local") == {
        "Type": "volume",
        "Target": "/v",
        "VolumeOptions": {"DriverConfig": {"Name": "local"}},
    }
    assert parse_mount("TYPE=BIND,SRC=rel,DST=/x,bind-nonrecursive=true") == {
        "Type": "bind",
        "Source": "rel",  # only a source starting with "." is made absolute
        "Target": "/x",
        "BindOptions": {"NonRecursive": True},
    }


def test_ulimit_host_and_dns_values():
    assert parse_ulimit("nofile=10") == {"Name": "nofile", "Hard": 10, "Soft": 10}
    assert parse_ulimit("memlock=-1") == {"Name": "memlock", "Hard": -1, "Soft": -1}
    assert parse_ulimit("stack=8:-1") == {"Name": "stack", "Hard": -1, "Soft": 8}
    assert parse_extra_host("v6=[::1]") == "v6:::1"
    assert parse_extra_host("gw:host-gateway") == "gw:host-gateway"
    assert parse_dns_search("example.com. ") == "example.com"
    assert parse_dns_search(".") == "."


def test_go_values():
    assert [parse_go_uint(t) for t in ("010", "0x10", "0o10", "0b10", "1_000", "0")] == [8, 16, 8, 2, 1000, 0]
    assert parse_go_int("-0x10") == -16
    assert parse_go_int("-9223372036854775808") == -(2**63)
    for bad in ("1__0", "_1", "0x", "08", "18446744073709551616", ""):
        with pytest.raises(ValueError):
            parse_go_uint(bad)
    assert [parse_go_bool(t) for t in ("1", "t", "TRUE", "True", "0", "f", "FALSE", "false")] == [True] * 4 + [False] * 4
    with pytest.raises(ValueError, match="EOF found after escape character"):
        split_command("a\\")
    assert split_command("''") == [""]
    assert split_command("a#b '#c'") == ["a#b", "#c"]
