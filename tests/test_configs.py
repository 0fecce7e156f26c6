"""Docker's configs, piece by piece and without a node: the ConfigSpec and config reference checks a user of
`docker config create` / `docker service create --config` notices, what the dispatcher sends each node, the files
a task's configs become (`runtime.configs`, no mounts), and compose `configs:`. Each test names the rule it guards.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from pathlib import Path
from typing import Any

import pytest
from test_compose import convert, error_of
from test_dispatcher_core import A, B, _dispatcher

from raftswarm.ca.certificates import NodeIdentity, NodeRole
from raftswarm.objects.kinds import CONFIGS, TASKS
from raftswarm.objects.specs import (
    MAX_CONFIG_SIZE,
    config_target,
    referenced_configs,
    validate_config_spec,
    validate_service_spec,
)
from raftswarm.objects.validation import InvalidSpec
from raftswarm.runtime.configs import InvalidConfigTarget, config_files
from raftswarm.objects.templates import TemplateError, context_of
from raftswarm.store import delete, put
from raftswarm.store.state import encode_transaction

# -- the ConfigSpec ---------------------------------------------------------------------------------------------


def config_spec(data: bytes = b"listen 80;\n", **fields: Any) -> dict[str, Any]:
    return {"Name": "nginx.conf", "Labels": {"env": "prod"}, "Data": base64.b64encode(data).decode(), **fields}


def refusal(spec: Any) -> str:
    with pytest.raises(InvalidSpec) as info:
        validate_config_spec(spec)
    return str(info.value)


def test_a_config_is_returned_without_its_data_and_the_data_decoded():
    spec = config_spec(b"\x00\xffbinary\n", Templating={"Name": "golang"})
    checked, data = validate_config_spec(spec)
    assert checked == {"Name": "nginx.conf", "Labels": {"env": "prod"}, "Templating": {"Name": "golang"}}
    assert data == b"\x00\xffbinary\n"
    assert spec == config_spec(b"\x00\xffbinary\n", Templating={"Name": "golang"})  # the input keeps its Data


def test_the_config_size_limit_is_swarmkits_max_config_size_1000_kib():
    assert MAX_CONFIG_SIZE == 1000 * 1024 == 1024000


@pytest.mark.parametrize("size", [1, 600 * 1024, MAX_CONFIG_SIZE - 1])
def test_config_sizes_docker_accepts_including_more_than_a_secret_may_hold(size):
    assert len(validate_config_spec(config_spec(b"x" * size))[1]) == size


@pytest.mark.parametrize("size", [0, MAX_CONFIG_SIZE, MAX_CONFIG_SIZE + 1])
def test_a_config_over_the_size_limit_or_empty_is_refused_in_swarmkits_words(size):
    message = refusal(config_spec(b"x" * size))
    assert message == (
        "Data: config data must be larger than 0 and less than 1024000 bytes (1000 KiB); "
        f"got {size} bytes"
    )


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"Name": ""}, "Name", "name must be provided"),
        ({"Name": "a" * 65}, "Name", "only 64 [a-zA-Z0-9-_.] characters allowed"),
        ({"Name": "-conf"}, "Name", "start and end character must be [a-zA-Z0-9]"),
        ({"Labels": {"env": 1}}, "Labels.env", "must be a string"),
        ({"Data": "not base64!"}, "Data", "not valid base64"),
        ({"Data": [1]}, "Data", "must be the config's bytes as a base64 string"),
        ({"Templating": "golang"}, "Templating", "JSON object"),
        ({"Templating": {}}, "Templating.Name", "required"),
        ({"Templating": {"Name": "jinja"}}, "Templating.Name", "unrecognized template type 'jinja'"),
    ],
)
def test_a_bad_config_is_refused_naming_the_field(change, field, words):
    message = refusal(config_spec(**change))
    assert message.split(":")[0] == field, message
    assert words in message


def test_a_config_spec_that_is_no_object_is_refused():
    assert refusal(["nginx.conf"]) == "the config spec must be a JSON object, got an array"


# -- config references in a service spec ------------------------------------------------------------------------


def service_with(*configs: dict[str, Any]) -> dict[str, Any]:
    return {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "nginx", "Configs": list(configs)}}}


def reference(config_id: str = "c1", name: str = "nginx.conf", target: str = "/etc/nginx/nginx.conf", **file: Any) -> dict[str, Any]:
    return {"ConfigID": config_id, "ConfigName": name, "File": {"Name": target, "UID": "0", "GID": "0", "Mode": 0o444, **file}}


def service_refusal(*configs: dict[str, Any]) -> str:
    with pytest.raises(InvalidSpec) as info:
        validate_service_spec(service_with(*configs))
    return str(info.value)


def test_config_references_with_any_target_path_are_kept_as_sent():
    spec = service_with(reference(), reference("c2", "app.conf", "app.conf", UID="1000", Mode=0o400))
    assert validate_service_spec(copy.deepcopy(spec)) == spec


@pytest.mark.parametrize(
    ("name", "target"),
    [("/etc/nginx/nginx.conf", "/etc/nginx/nginx.conf"), ("app.conf", "/app.conf"), ("conf.d/x", "/conf.d/x"), ("/a/../b", "/b")],
)
def test_a_relative_config_target_is_under_the_root_as_in_moby(name, target):
    assert config_target(name) == target


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"ConfigID": ""}, "ConfigID: malformed config reference: must not be empty"),
        ({"ConfigName": ""}, "ConfigName: malformed config reference: must not be empty"),
        ({"File": {"Name": ""}}, "File.Name: malformed file config reference, invalid target file name provided"),
        ({"File": {"Name": "/"}}, "File.Name: '/' is the container's root directory"),
        ({"File": {"Name": "/x", "Mode": 0o4755}}, "File.Mode: must be an integer from 0 to 511"),
        ({"File": {"Name": "/x", "UID": 0}}, "File.UID: must be a string"),
        ({"Runtime": {}}, "Runtime: a config with a Runtime target serves a credential spec, a Windows feature"),
    ],
)
def test_a_malformed_config_reference_is_refused_naming_the_field(bad, words):
    ref = {**reference(), **bad}
    if "Runtime" in bad:
        del ref["File"]
    assert words in service_refusal(ref)


def test_a_reference_without_a_target_is_refused_in_swarmkits_words():
    ref = reference()
    del ref["File"]
    assert "malformed config reference, no target provided" in service_refusal(ref)


def test_two_configs_at_one_target_are_refused_even_when_spelled_differently():
    message = service_refusal(reference("c1", "a", "/etc/app.conf"), reference("c2", "b", "etc//app.conf"))
    assert message.endswith("config references 'a' and 'b' have a conflicting target: 'etc//app.conf'")


def test_referenced_configs_in_order_without_duplicates():
    spec = validate_service_spec(
        service_with(reference("b", target="/1"), reference("a", target="/2"), reference("b", target="/3"))
    )
    assert referenced_configs(spec) == ["b", "a"]
    assert referenced_configs({"TaskTemplate": {"ContainerSpec": {}}}) == []


# -- what the dispatcher sends ----------------------------------------------------------------------------------


def _task(task_id: str, node_id: str, *config_ids: str, state: str = "running") -> dict[str, Any]:
    configs = [reference(config_id, f"name-{config_id}", f"/{config_id}") for config_id in config_ids]
    return {
        "ID": task_id,
        "NodeID": node_id,
        "DesiredState": "running",
        "Spec": {"ContainerSpec": {"Image": "busybox", "Configs": configs}},
        "Status": {"State": state, "Timestamp": "2026-12-07T00:00:00Z"},
    }


def _config(config_id: str, data: bytes) -> dict[str, Any]:
    return {"ID": config_id, "Spec": {"Name": f"name-{config_id}", "Labels": {}}, "_Data": data}


async def test_a_node_is_sent_exactly_the_configs_its_tasks_use_with_their_data_and_then_their_removal():
    dispatcher, driver = _dispatcher(5.0, A, B)
    store = driver.store

    def write(*operations) -> None:
        store.apply(store.state.version + 1, encode_transaction(list(operations)))

    write(
        put(CONFIGS, "c1", _config("c1", b"one")),
        put(CONFIGS, "c2", _config("c2", b"two")),
        put(CONFIGS, "c3", _config("c3", b"never sent")),
        put(TASKS, "t1", _task("t1", A, "c1", "c2")),
        put(TASKS, "t2", _task("t2", B, "c2")),
    )
    running = asyncio.create_task(dispatcher.run())
    try:
        on_a, on_b = NodeIdentity(A, NodeRole.WORKER, "cluster"), NodeIdentity(B, NodeRole.WORKER, "cluster")
        for _ in range(100):  # the dispatcher indexes the tasks once it runs
            first = await dispatcher.assignments(on_a, {"timeout": 0})
            if first["tasks"]:
                break
            await asyncio.sleep(0.01)
        assert [t["ID"] for t in first["tasks"]] == ["t1"]
        assert first["configs"] == [
            {"ID": "c1", "Spec": {"Name": "name-c1", "Labels": {}}, "Data": b"one"},
            {"ID": "c2", "Spec": {"Name": "name-c2", "Labels": {}}, "Data": b"two"},
        ]
        assert [c["ID"] for c in (await dispatcher.assignments(on_b, {"timeout": 0}))["configs"]] == ["c2"]

        write(delete(TASKS, "t1"))  # its task is gone: A is told to drop both configs, B keeps its own
        changed = await dispatcher.assignments(on_a, {"session": first["session"], "timeout": 1})
        assert changed["removed_tasks"] == ["t1"] and changed["removed_configs"] == ["c1", "c2"]
        assert changed["configs"] == []
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


# -- the files a task's configs become ----------------------------------------------------------------------------

TASK = {"ID": "t1", "ServiceID": "s1", "Slot": 3, "NodeID": "n1", "ServiceAnnotations": {"Name": "web"}}


def delivered(data: bytes, name: str = "nginx.conf", templating: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"Name": name, "Labels": {}}
    if templating:
        spec["Templating"] = {"Name": templating}
    return {"Spec": spec, "Data": data}


def files_of(*references: dict[str, Any], configs: dict[str, Any], read_only_dirs: tuple[str, ...] = ()):
    return config_files({"Configs": list(references)}, configs, context_of(TASK, {"Hostname": "node-1"}), read_only_dirs)


def test_each_config_becomes_a_file_at_its_target_with_its_owner_and_mode():
    (first, second) = files_of(
        reference("c1", target="/etc/nginx/nginx.conf", UID="101", GID="102", Mode=0o440),
        reference("c2", "app.conf", target="app.conf"),
        configs={"c1": delivered(b"listen 80;"), "c2": delivered(b"x=1", "app.conf")},
    )
    assert (first.target, first.uid, first.gid, first.mode, first.data) == ("/etc/nginx/nginx.conf", 101, 102, 0o440, b"listen 80;")
    assert (second.target, second.mode) == ("/app.conf", 0o444)  # a relative target is under /, docker's default mode


def test_a_templated_config_is_expanded_for_its_task_and_other_bytes_pass_through():
    template = b"server web-{{.Task.Slot}} on {{.Node.Hostname}} for {{.Service.Name}} \xff\n"
    (file,) = files_of(reference(), configs={"c1": delivered(template, templating="golang")})
    assert file.data == b"server web-3 on node-1 for web \xff\n"
    (plain,) = files_of(reference(), configs={"c1": delivered(b"{{.Task.Slot}}")})
    assert plain.data == b"{{.Task.Slot}}"  # not a template unless its Templating says so


def test_a_template_that_cannot_be_expanded_rejects_the_task_naming_the_config():
    with pytest.raises(TemplateError, match="failed to expand templated config nginx.conf"):
        files_of(reference(), configs={"c1": delivered(b'{{ env "HOME" }}', templating="golang")})


@pytest.mark.parametrize(
    ("references", "read_only_dirs", "words"),
    [
        ([reference("c9")], (), "config nginx.conf (c9) was not delivered to this node with the task"),
        ([reference(target="/proc/x")], (), "target /proc/x is in /proc, where no file can be added"),
        ([reference(target="/sys/kernel/x")], (), "is in /sys"),
        ([reference(target="/run/secrets/x")], ("/run/secrets",), "is in /run/secrets"),
        ([reference(target="/a"), reference(target="/a/b")], (), "config targets /a and /a/b conflict"),
        ([reference(target="/a"), reference(target="a")], (), "two configs of the task target the same file /a"),
        ([reference(UID="app")], (), "File.UID and File.GID must be numeric"),
    ],
)
def test_a_config_that_cannot_become_a_file_rejects_the_task_with_why(references, read_only_dirs, words):
    with pytest.raises(InvalidConfigTarget, match=words.replace("(", r"\(").replace(")", r"\)")):
        files_of(*references, configs={"c1": delivered(b"x")}, read_only_dirs=read_only_dirs)


def test_a_config_under_run_secrets_is_fine_when_the_task_has_no_secrets_mounted_there():
    (file,) = files_of(reference(target="/run/secrets/x"), configs={"c1": delivered(b"x")})
    assert file.target == "/run/secrets/x"


# -- compose configs: -------------------------------------------------------------------------------------------

COMPOSE = """
services:
  web:
    image: nginx
    configs:
      - site
      - source: shared
        target: /etc/nginx/conf.d/shared.conf
        uid: "101"
        gid: "101"
        mode: 0440
configs:
  site:
    file: ./site.conf
    labels: [tier=front]
    template_driver: golang
  shared:
    external: true
"""


def test_compose_configs_become_config_specs_and_references_by_name(tmp_path: Path) -> None:
    (tmp_path / "site.conf").write_bytes(b"server {{.Task.Slot}};\n")
    specs = convert(tmp_path, COMPOSE)
    assert specs.configs == {
        "app_site": {
            "Name": "app_site",
            "Labels": {"tier": "front", "com.docker.stack.namespace": "app"},
            "Data": base64.b64encode(b"server {{.Task.Slot}};\n").decode(),
            "Templating": {"Name": "golang"},
        }
    }
    assert specs.external_configs == ["shared"]
    assert specs.services["web"]["TaskTemplate"]["ContainerSpec"]["Configs"] == [  # sorted, as docker/cli sends them
        {"File": {"Name": "site", "UID": "0", "GID": "0", "Mode": 0o444}, "ConfigName": "app_site"},
        {"File": {"Name": "/etc/nginx/conf.d/shared.conf", "UID": "101", "GID": "101", "Mode": 0o440}, "ConfigName": "shared"},
    ]
    (checked, data) = validate_config_spec(specs.configs["app_site"])
    assert data == b"server {{.Task.Slot}};\n"


def test_a_named_compose_config_keeps_its_name(tmp_path: Path) -> None:
    (tmp_path / "c").write_text("x")
    specs = convert(tmp_path, "services: {web: {image: nginx, configs: [c]}}\nconfigs: {c: {file: c, name: global.conf}}")
    assert list(specs.configs) == ["global.conf"]
    assert specs.services["web"]["TaskTemplate"]["ContainerSpec"]["Configs"][0]["ConfigName"] == "global.conf"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("services: {web: {image: nginx, configs: [nope]}}", "services.web.configs[0]: undefined config 'nope'"),
        ("services: {web: {image: nginx}}\nconfigs: {c: {}}", "configs.c.file: is required"),
        ("services: {web: {image: nginx}}\nconfigs: {c: {external: true, file: x}}", "configs.c.file: cannot be set on an external config"),
        ("services: {web: {image: nginx}}\nconfigs: {c: {file: x, content: y}}", "configs.c"),
        ("services: {web: {image: nginx}}\nconfigs: {c: {file: x, template_driver: jinja}}", "configs.c.template_driver"),
        ("services: {web: {image: nginx}}\nconfigs: {c: {file: missing.conf}}", "configs.c.file: cannot read"),
        (
            "services: {web: {image: nginx, configs: [{source: c, mode: 4095}]}}\nconfigs: {c: {external: true}}",
            "services.web.configs[0].mode",
        ),
    ],
)
def test_a_bad_compose_config_names_the_file_and_key(tmp_path: Path, text: str, words: str) -> None:
    message = error_of(tmp_path, text)
    assert "docker-compose.yml" in message and words in message, message
