"""`raftswarm config ...` and the config flags of `raftswarm service create/update` against a fake node: each
sends the bodies docker's sends, prints what docker prints (`docker config ls/inspect --pretty`), and fails with
docker's messages."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

import pytest
from fake_engine import FakeEngine, standard_swarm
from test_cli_service import SERVICE_ID, assert_fails, run, web_service

from raftswarm.cli.service.flags import parse_config

NGINX_CONF_ID = "9c6rcy5ud5n0ekrr1lwcx6z2b"
APP_CONF_ID = "q0f8fi3ykudkpa4a5udm9cvzu"


@pytest.fixture
def engine(tmp_path):
    with FakeEngine(tmp_path / "engine.sock") as fake:
        standard_swarm(fake)
        yield fake


def config_object(name: str, config_id: str, data: bytes = b"listen 80;\n", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "ID": config_id,
        "Version": {"Index": 12},
        "CreatedAt": "2024-05-01T10:00:00.123456789Z",
        "UpdatedAt": "2024-05-01T10:05:00Z",
        "Spec": {"Name": name, "Labels": labels or {}, "Data": base64.b64encode(data).decode()},
    }


def config_ref(name: str, config_id: str, target: str | None = None, mode: int = 0o444, uid: str = "0") -> dict[str, Any]:
    return {
        "File": {"Name": target or name, "UID": uid, "GID": "0", "Mode": mode},
        "ConfigID": config_id,
        "ConfigName": name,
    }


# -- config create / ls / inspect / rm --------------------------------------------------------------------------


def test_config_create_from_a_file_sends_name_labels_template_driver_and_base64_data(engine, tmp_path):
    engine.reply("POST", "/configs/create", {"ID": NGINX_CONF_ID}, status=201)
    (tmp_path / "nginx.conf").write_bytes(b"server { listen {{.Task.Slot}}; }\n")

    result = run(
        engine, "config", "create", "-l", "env=prod", "--template-driver", "golang", "nginx.conf",
        str(tmp_path / "nginx.conf"),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{NGINX_CONF_ID}\n"
    (created,) = engine.calls("POST", "/configs/create")
    assert created.body == {
        "Name": "nginx.conf",
        "Labels": {"env": "prod"},
        "Data": base64.b64encode(b"server { listen {{.Task.Slot}}; }\n").decode(),
        "Templating": {"Name": "golang"},
    }


def test_config_create_reads_stdin_for_dash(engine):
    engine.reply("POST", "/configs/create", {"ID": APP_CONF_ID}, status=201)

    run(engine, "config", "create", "app.conf", "-", input="from a pipe")

    (created,) = engine.calls("POST", "/configs/create")
    assert base64.b64decode(created.body["Data"]) == b"from a pipe"
    assert "Templating" not in created.body


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{missing}", 'Error reading content from "{missing}": error reading from {missing}: open {missing}: no such file or directory'),
        ("{empty}", 'Error reading content from "{empty}": error reading from {empty}: data is empty'),
        ("{directory}", 'Error reading content from "{directory}": error reading from {directory}: read {directory}: is a directory'),
        ("-", 'Error reading content from "-": error reading from STDIN: data is empty'),
    ],
)
def test_config_create_with_unreadable_or_empty_content_says_so_in_dockers_words_without_a_request(engine, tmp_path, source, message):
    (tmp_path / "empty").write_bytes(b"")
    paths = {"missing": tmp_path / "missing.conf", "empty": tmp_path / "empty", "directory": tmp_path}

    result = run(engine, "config", "create", "app.conf", source.format(**paths), input="")

    assert_fails(result, message.format(**paths))
    assert engine.requests == []


def test_config_create_needs_both_arguments(engine):
    result = run(engine, "config", "create", "app.conf")

    assert result.exit_code == 2 and "Missing argument" in result.stderr
    assert engine.requests == []


def test_config_create_refused_by_the_node(engine, tmp_path):
    message = "config app.conf already exists"
    engine.fail("POST", "/configs/create", 409, message)
    (tmp_path / "app.conf").write_bytes(b"x" * 700 * 1024)

    result = run(engine, "config", "create", "app.conf", str(tmp_path / "app.conf"))

    assert_fails(result, f"Error response from daemon: {message}")
    (sent,) = engine.calls("POST", "/configs/create")
    assert len(base64.b64decode(sent.body["Data"])) == 700 * 1024  # more than a secret may hold


def test_config_ls_table_sorted_by_name_quiet_format_and_filters(engine):
    engine.reply(
        "GET",
        "/configs",
        [config_object("nginx.conf", NGINX_CONF_ID, labels={"env": "prod"}), config_object("app.conf", APP_CONF_ID)],
    )

    result = run(engine, "config", "ls", "-f", "label=env", "--filter", "name=a")

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "CREATED", "UPDATED"]
    assert re.fullmatch(rf"{APP_CONF_ID}   app\.conf     \d+ \w+ ago\s+\d+ \w+ ago", rows[0])
    assert [row.split()[:2] for row in rows] == [[APP_CONF_ID, "app.conf"], [NGINX_CONF_ID, "nginx.conf"]]
    assert engine.calls("GET", "/configs")[0].filters == {"label": ["env"], "name": ["a"]}
    assert run(engine, "config", "ls", "-q").stdout.splitlines() == [APP_CONF_ID, NGINX_CONF_ID]
    assert run(engine, "config", "list", "--format", "{{.Name}} {{.Labels}}").stdout.splitlines() == [
        "app.conf ",
        "nginx.conf env=prod",
    ]


def test_config_inspect_json_and_missing(engine):
    config = config_object("nginx.conf", NGINX_CONF_ID, labels={"env": "prod"})
    engine.reply("GET", "/configs/nginx.conf", config)
    engine.fail("GET", "/configs/nope", 404, "config nope not found")

    result = run(engine, "config", "inspect", "nginx.conf", "nope")

    assert json.loads(result.stdout) == [config]
    assert_fails(result, "Error response from daemon: config nope not found")


def test_config_inspect_pretty_shows_the_data_as_text_in_dockers_layout(engine):
    engine.reply("GET", "/configs/nginx.conf", config_object("nginx.conf", NGINX_CONF_ID, b"payload here", {"lbl1": "value1"}))

    pretty = run(engine, "config", "inspect", "--pretty", "nginx.conf")

    # docker's configInspectPrettyTemplate, tabs and all (docker/cli config-inspect-pretty.simple.golden)
    assert pretty.stdout == (
        f"ID:\t\t\t{NGINX_CONF_ID}\n"
        "Name:\t\t\tnginx.conf\n"
        "Labels:\n"
        " - lbl1=value1\n"
        "Created at:            \t2024-05-01 10:00:00.123456789 +0000 utc\n"
        "Updated at:            \t2024-05-01 10:05:00 +0000 utc\n"
        "Data:\n"
        "payload here\n"
    )


def test_config_rm_removes_each_and_reports_failures(engine):
    engine.reply("DELETE", "/configs/app.conf", status=204)
    message = "config 'nginx.conf' is in use by the following service: web"
    engine.fail("DELETE", "/configs/nginx.conf", 400, message)

    result = run(engine, "config", "rm", "nginx.conf", "app.conf")

    assert result.stdout == "app.conf\n"
    assert_fails(result, f"Error response from daemon: {message}")


# -- service create --config, service update --config-add/--config-rm ----------------------------------------


@pytest.mark.parametrize(
    ("value", "reference"),
    [
        ("app.conf", {"File": {"Name": "app.conf", "UID": "0", "GID": "0", "Mode": 0o444}, "ConfigName": "app.conf"}),
        (
            "source=app.conf,target=/etc/app/app.conf,uid=1000,gid=1001,mode=0440",
            {"File": {"Name": "/etc/app/app.conf", "UID": "1000", "GID": "1001", "Mode": 0o440}, "ConfigName": "app.conf"},
        ),
        ("src=app.conf", {"File": {"Name": "app.conf", "UID": "0", "GID": "0", "Mode": 0o444}, "ConfigName": "app.conf"}),
    ],
)
def test_config_flag_values_parse_as_dockers_config_opt(value, reference):
    assert parse_config(value) == reference


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("target=/x", "source is required"),
        ("source=a,colour=red", "invalid field in config request: colour"),
        ("source=a,mode=rw", "invalid mode specified"),
        ("source=a,junk", "invalid field 'junk' must be a key=value pair"),
    ],
)
def test_bad_config_flag_values_are_refused_with_dockers_words(value, message):
    with pytest.raises(ValueError, match=message):
        parse_config(value)


def test_create_with_configs_resolves_their_ids_by_name_and_sends_the_references(engine):
    engine.reply("GET", "/configs", [config_object("nginx.conf", NGINX_CONF_ID), config_object("app.conf", APP_CONF_ID)])
    engine.reply("POST", "/services/create", {"ID": SERVICE_ID}, status=201)

    result = run(
        engine, "service", "create", "-d", "--no-resolve-image", "--name", "web",
        "--config", "source=nginx.conf,target=/etc/nginx/nginx.conf,mode=0440", "--config", "app.conf", "nginx",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (listed,) = engine.calls("GET", "/configs")
    assert listed.filters == {"name": ["nginx.conf", "app.conf"]}  # one request for all, as docker's ParseConfigs
    (created,) = engine.calls("POST", "/services/create")
    assert created.body["TaskTemplate"]["ContainerSpec"]["Configs"] == [
        config_ref("nginx.conf", NGINX_CONF_ID, "/etc/nginx/nginx.conf", 0o440),
        config_ref("app.conf", APP_CONF_ID),
    ]


def test_create_with_a_missing_config_or_two_configs_at_one_target_says_so_and_creates_nothing(engine):
    engine.reply("GET", "/configs", [config_object("app.conf", APP_CONF_ID)])

    missing = run(engine, "service", "create", "-d", "--config", "app.conf", "--config", "source=nope", "nginx")
    assert_fails(missing, "config not found: nope")
    twice = run(engine, "service", "create", "-d", "--config", "source=a,target=/x", "--config", "source=b,target=/x", "nginx")
    assert_fails(twice, "duplicate config target for b not allowed")
    assert engine.mutations() == []


def test_update_rotates_a_config_with_config_rm_and_config_add(engine):
    service = web_service()
    service["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"] = [config_ref("app.conf", APP_CONF_ID, "/etc/app.conf")]
    engine.reply("GET", "/services/web", service)
    engine.reply("GET", "/configs", [config_object("app.conf.v2", NGINX_CONF_ID)])
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    result = run(
        engine, "service", "update", "-d", "--config-rm", "app.conf", "--config-add",
        "source=app.conf.v2,target=/etc/app.conf", "web",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", f"/services/{SERVICE_ID}/update")
    expected = copy.deepcopy(service["Spec"])
    expected["TaskTemplate"]["ContainerSpec"]["Configs"] = [config_ref("app.conf.v2", NGINX_CONF_ID, "/etc/app.conf")]
    assert update.body == expected


def test_update_removing_the_last_config_leaves_configs_out(engine):
    service = web_service()
    service["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"] = [config_ref("app.conf", APP_CONF_ID)]
    engine.reply("GET", "/services/web", service)
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    run(engine, "service", "update", "-d", "--config-rm", "app.conf", "web")

    (update,) = engine.calls("POST", f"/services/{SERVICE_ID}/update")
    assert "Configs" not in update.body["TaskTemplate"]["ContainerSpec"]
    assert engine.calls("GET", "/configs") == []  # nothing to resolve


def test_service_inspect_pretty_lists_the_configs_before_the_secrets(engine):
    service = web_service()
    service["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"] = [config_ref("app.conf", APP_CONF_ID, "/etc/app.conf")]
    engine.reply("GET", "/services/web", service)

    shown = run(engine, "service", "inspect", "--pretty", "web").stdout

    assert "Configs:\n Target:\t/etc/app.conf\n  Source:\tapp.conf\nSecrets:\n" in shown


# -- stack deploy / rm ------------------------------------------------------------------------------------------


def test_stack_deploy_creates_the_files_configs_references_the_external_one_and_stack_rm_removes_them(engine, tmp_path):
    (tmp_path / "nginx.conf").write_text("listen 80;\n")
    compose = tmp_path / "stack.yml"
    compose.write_text(
        "services:\n"
        "  web:\n"
        "    image: nginx\n"
        "    configs: [site, {source: shared, target: /etc/shared.conf, mode: 0440}]\n"
        "configs:\n"
        "  site: {file: ./nginx.conf}\n"
        "  shared: {external: true}\n"
    )
    engine.reply("GET", "/networks", [])
    engine.reply("POST", "/networks/create", {"Id": "n1", "Warning": ""}, status=201)
    engine.reply("GET", "/secrets", [])
    engine.reply("GET", "/configs", [config_object("shared", APP_CONF_ID)])
    engine.reply("POST", "/configs/create", {"ID": NGINX_CONF_ID}, status=201)
    engine.reply("GET", "/services", [])
    engine.reply("POST", "/services/create", {"ID": SERVICE_ID}, status=201)

    deployed = run(engine, "stack", "deploy", "--detach", "--resolve-image", "never", "-c", str(compose), "shop")

    assert deployed.exit_code == 0, deployed.output
    assert deployed.stdout.splitlines() == [
        "Creating network shop_default",
        "Creating config shop_site",
        "Creating service shop_web",
    ]
    (created,) = engine.calls("POST", "/configs/create")
    assert created.body == {
        "Name": "shop_site",
        "Labels": {"com.docker.stack.namespace": "shop"},
        "Data": base64.b64encode(b"listen 80;\n").decode(),
    }
    (service,) = engine.calls("POST", "/services/create")
    assert service.body["TaskTemplate"]["ContainerSpec"]["Configs"] == [  # sorted by name, as docker sends them
        config_ref("shared", APP_CONF_ID, "/etc/shared.conf", 0o440),
        config_ref("shop_site", NGINX_CONF_ID, "site"),
    ]

    engine.reply("GET", "/configs", [config_object("shop_site", NGINX_CONF_ID, labels={"com.docker.stack.namespace": "shop"})])
    engine.reply("DELETE", f"/configs/{NGINX_CONF_ID}", status=204)
    removed = run(engine, "stack", "rm", "shop")
    assert removed.exit_code == 0, removed.output
    assert "Removing config shop_site" in removed.stdout.splitlines()
    assert engine.calls("DELETE", f"/configs/{NGINX_CONF_ID}")


def test_stack_deploy_with_a_missing_external_config_says_so_and_creates_no_service(engine, tmp_path):
    compose = tmp_path / "stack.yml"
    compose.write_text("services:\n  web: {image: nginx, configs: [shared]}\nconfigs:\n  shared: {external: true}\n")
    engine.reply("GET", "/networks", [{"Name": "shop_default"}])
    engine.reply("GET", "/secrets", [])
    engine.reply("GET", "/configs", [])

    result = run(engine, "stack", "deploy", "--detach", "--resolve-image", "never", "-c", str(compose), "shop")

    assert_fails(result, "config not found: shared")
    assert engine.mutations() == []
