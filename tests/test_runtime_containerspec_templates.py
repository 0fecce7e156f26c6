"""Docker's service templates (`objects.templates`): what each field of swarmkit's template context gives,
where a ContainerSpec is expanded (Hostname, Env values, mounts), Go's printing, trim markers and string
constants, and the errors Go's text/template would give."""

import pytest

from raftswarm.objects.containerspec import InvalidContainerSpec
from raftswarm.objects.templates import (
    TemplateError,
    context_of,
    expand,
    expand_container_spec,
    expand_mount,
    expand_task,
    task_name,
)
from raftswarm.runtime.containers import local_node

NODE = {"Hostname": "worker-3", "Platform": {"Architecture": "x86_64", "OS": "linux"}}


def replicated_task(**container_spec) -> dict:
    return {
        "ID": "tsk1",
        "ServiceID": "svc1",
        "ServiceAnnotations": {"Name": "web", "Labels": {"tier": "front", "com.example.team": "blue"}},
        "Slot": 3,
        "NodeID": "node9",
        "Spec": {"ContainerSpec": {"Image": "busybox", **container_spec}},
    }


def global_task(**container_spec) -> dict:
    task = replicated_task(**container_spec)
    del task["Slot"]
    return task


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{{.Service.ID}}", "svc1"),
        ("{{.Service.Name}}", "web"),
        ("{{.Service.Labels}}", "map[com.example.team:blue tier:front]"),  # Go prints a map sorted by key
        ("{{.Service.Labels.tier}}", "front"),
        ("{{.Node.ID}}", "node9"),
        ("{{.Node.Hostname}}", "worker-3"),
        ("{{.Node.Platform.OS}}", "linux"),
        ("{{.Node.Platform.Architecture}}", "x86_64"),
        ("{{.Node.Platform}}", "{x86_64 linux}"),  # and a struct as its values in braces
        ("{{.Task.ID}}", "tsk1"),
        ("{{.Task.Name}}", "web.3.tsk1"),
        ("{{.Task.Slot}}", "3"),
        ("{{.Task}}", "{tsk1 web.3.tsk1 3}"),
        ("{{.}}",
         "{{svc1 web map[com.example.team:blue tier:front]} {node9 worker-3 {x86_64 linux}} {tsk1 web.3.tsk1 3}}"),
    ],
)
def test_each_field_of_the_context_of_a_replicated_task(template, expected):
    assert expand(template, context_of(replicated_task(), NODE)) == expected


@pytest.mark.parametrize(
    "template, expected",
    [("{{.Task.Slot}}", "node9"), ("{{.Task.Name}}", "web.node9.tsk1"), ("{{.Node.ID}}", "node9")],
)
def test_a_global_services_task_has_its_node_id_for_slot(template, expected):
    assert expand(template, context_of(global_task(), NODE)) == expected


def test_a_task_with_a_name_of_its_own_keeps_it():
    task = {**replicated_task(), "Annotations": {"Name": "custom-name"}}
    assert task_name(task) == "custom-name"
    assert expand("{{.Task.Name}}", context_of(task)) == "custom-name"


def test_without_a_node_description_node_fields_are_empty_and_labels_an_empty_map():
    task = {"ID": "t", "ServiceAnnotations": {"Name": "svc"}, "Slot": 1}
    assert expand("[{{.Node.Hostname}}|{{.Node.Platform.OS}}|{{.Node.ID}}|{{.Service.Labels}}]", context_of(task)) == (
        "[|||map[]]"
    )


def test_the_local_node_is_described_as_the_manager_records_a_joining_node():
    node = local_node()
    assert node["Hostname"] and node["Platform"]["OS"] == "linux" and node["Platform"]["Architecture"]


@pytest.mark.parametrize(
    "template, expected",
    [
        ("plain text, no action", "plain text, no action"),
        ("", ""),
        ("{{.Service.Name}}-{{.Task.Slot}}.{{.Node.Hostname}}", "web-3.worker-3"),
        ("{{ .Service.Name }}", "web"),  # spaces inside the action
        ("a {{- .Task.Slot}} b", "a3 b"),  # {{- trims the space before
        ("a {{.Task.Slot -}} b", "a 3b"),  # -}} the space after
        ("a \n\t{{- .Task.Slot -}}\n b", "a3b"),
        ("{{-.Task.Slot}}", None),  # no space after the dash: not a trim marker (and not a field)
        ('{{"{{"}}.Service.Name}}', "{{.Service.Name}}"),  # Go's way to write braces: a string constant
        ('{{"}}"}}', "}}"),
        ("{{`{{raw}}`}}", "{{raw}}"),
        ('{{"tab\\there \\"quoted\\" \\x41\\u00e9\\101"}}', 'tab\there "quoted" AéA'),
        ("before{{/* a comment, {{ and }} inside */}}after", "beforeafter"),
        ("x {{- /* trimmed comment */ -}} y", "xy"),
        ("<b>&amp;</b>", "<b>&amp;</b>"),  # text/template escapes nothing
        ("}} alone", "}} alone"),
    ],
)
def test_text_trim_markers_string_constants_and_comments_as_go_text_template(template, expected):
    context = context_of(replicated_task(), NODE)
    if expected is None:
        with pytest.raises(TemplateError):
            expand(template, context)
    else:
        assert expand(template, context) == expected


@pytest.mark.parametrize(
    "template, message",
    [
        ("{{.Service.Nme}}", r"can't evaluate field Nme of \.Service \(its fields: ID, Name, Labels\)"),
        ("{{.Nope}}", r"can't evaluate field Nope \(its fields: Service, Node, Task\)"),
        ("{{.Node.Platform.Variant}}", "can't evaluate field Variant of .Node.Platform"),
        ("{{.service.name}}", "can't evaluate field service"),  # field names are case-sensitive
        ("{{.Task.ID.Short}}", "can't evaluate field Short of .Task.ID, a string"),
        ("{{.Service.Labels.missing}}", 'map has no entry for key "missing"'),  # missingkey=error
        ("{{range .Service.Labels}}{{.}}{{end}}", r"the action \{\{range .Service.Labels\}\} is not supported"),
        ("{{if .Task.Slot}}x{{end}}", "is not supported"),
        ("{{.Service.Name | printf \"%s\"}}", "is not supported"),
        ("{{$x := 1}}", "is not supported"),
        ("{{index .Service.Labels \"tier\"}}", "is not supported"),
        ("{{Service.Name}}", "is not supported"),
        ("{{.Service..Name}}", "is not supported"),
        ("{{}}", "missing value for command"),
        ("{{ }}", "missing value for command"),
        ("{{.Service.Name", "unclosed action"),
        ("{{.Service.Name}", "unclosed action"),
        ('{{"abc}}', "unterminated quoted string"),
        ("{{/* comment }}", "unclosed comment"),
        ('{{"\\q"}}', r"invalid escape \\q"),
    ],
)
def test_a_template_go_would_refuse_is_refused_saying_why(template, message):
    with pytest.raises(TemplateError, match=message):
        expand(template, context_of(replicated_task(), NODE))


def test_a_template_error_rejects_as_an_invalid_container_spec():
    assert issubclass(TemplateError, InvalidContainerSpec)


# -- which fields of a ContainerSpec are expanded (swarmkit's ExpandContainerSpec) ----------------------


def test_hostname_env_values_and_mounts_are_expanded_and_nothing_else():
    task = replicated_task(
        Hostname="{{.Service.Name}}-{{.Task.Slot}}",
        Env=["SLOT={{.Task.Slot}}", "{{.NotExpanded}}=x", "NO_VALUE", "EMPTY=", "EQUALS=a={{.Node.ID}}"],
        Mounts=[{"Type": "volume", "Source": "data-{{.Task.Slot}}", "Target": "/data/{{.Service.Name}}",
                 "VolumeOptions": {"Labels": {"slot": "{{.Task.Slot}}"},
                                   "DriverConfig": {"Name": "local", "Options": {"o": "{{.Node.Hostname}}"}}}}],
        Args=["{{.Task.Slot}}"],
        Labels={"l": "{{.Task.Slot}}"},
        Dir="/{{.Task.Slot}}",
    )
    container = expand_container_spec(task, NODE)
    assert container["Hostname"] == "web-3"
    assert container["Env"] == ["SLOT=3", "{{.NotExpanded}}=x", "NO_VALUE", "EMPTY=", "EQUALS=a=node9"]
    (mount,) = container["Mounts"]
    assert (mount["Source"], mount["Target"]) == ("data-3", "/data/web")
    assert mount["VolumeOptions"] == {
        "Labels": {"slot": "3"}, "DriverConfig": {"Name": "local", "Options": {"o": "worker-3"}}
    }
    assert container["Args"] == ["{{.Task.Slot}}"] and container["Labels"] == {"l": "{{.Task.Slot}}"}
    assert container["Dir"] == "/{{.Task.Slot}}"
    assert task["Spec"]["ContainerSpec"]["Hostname"] == "{{.Service.Name}}-{{.Task.Slot}}"  # the task is left as it was
    assert task["Spec"]["ContainerSpec"]["Mounts"][0]["VolumeOptions"]["Labels"] == {"slot": "{{.Task.Slot}}"}


def test_expand_task_keeps_the_rest_of_the_task():
    task = replicated_task(Hostname="{{.Task.Name}}")
    task["Spec"]["Resources"] = {"Limits": {"Pids": 5}}
    expanded = expand_task(task, NODE)
    assert expanded["Spec"]["ContainerSpec"]["Hostname"] == "web.3.tsk1"
    assert expanded["Spec"]["Resources"] == {"Limits": {"Pids": 5}}
    assert {k: v for k, v in expanded.items() if k != "Spec"} == {k: v for k, v in task.items() if k != "Spec"}


def test_a_mount_source_is_expanded_for_the_mount_code():
    context = context_of(replicated_task(), NODE)
    assert expand_mount({"Type": "bind", "Source": "/srv/{{.Node.Hostname}}", "Target": "/srv"}, context) == {
        "Type": "bind", "Source": "/srv/worker-3", "Target": "/srv"
    }


@pytest.mark.parametrize(
    "container_spec, message",
    [
        ({"Hostname": "{{.Service.Nme}}"},
         'expanding the hostname "{{.Service.Nme}}" failed: .*can\'t evaluate field Nme'),
        ({"Env": ["A=ok", "B={{.Nope}}"]}, 'expanding env B "{{.Nope}}" failed'),
        ({"Mounts": [{"Source": "{{.X}}", "Target": "/t"}]}, 'expanding the mount source "{{.X}}" failed'),
        ({"Mounts": [{"Source": "s", "Target": "{{"}]}, 'expanding the mount target "{{" failed: unclosed action'),
        ({"Mounts": [{"Source": "s", "Target": "/t", "VolumeOptions": {"Labels": {"k": "{{.Y}}"}}}]},
         'expanding the volume label k "{{.Y}}" failed'),
    ],
)
def test_an_expansion_error_names_the_field_and_its_template(container_spec, message):
    with pytest.raises(TemplateError, match=message):
        expand_container_spec(replicated_task(**container_spec), NODE)
