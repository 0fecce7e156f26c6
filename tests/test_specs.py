"""Spec validation, as a user of `docker service create` / `docker secret create` notices it: a bad spec is
refused with a message naming the field, a good one is stored exactly as sent. Pure: no I/O."""

from __future__ import annotations

import base64
import copy
import math

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftswarm.errors import ControlError
from raftswarm.objects.specs import (
    MAX_SECRET_SIZE,
    referenced_secrets,
    restart_policy,
    service_warnings,
    update_config,
    validate_init_request,
    validate_join_request,
    validate_node_spec,
    validate_secret_spec,
    validate_service_spec,
    validate_swarm_spec,
)
from raftswarm.objects.validation import InvalidSpec, without_nulls

SECOND = 1_000_000_000
MIB = 1024 * 1024
DIGEST = "sha256:" + "ab" * 32


def full_spec() -> dict:
    """A service spec using every field raftswarm checks."""
    return {
        "Name": "web_front-1",
        "Labels": {"team": "shop"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": f"registry.example.com:5000/shop/web:1.2@{DIGEST}",
                "Labels": {"tier": "front"},
                "Command": ["nginx"],
                "Args": ["-g", "daemon off;"],
                "Env": ["MODE=prod", "EMPTY=", "PASSTHROUGH"],
                "Dir": "/srv",
                "User": "www-data",
                "Hostname": "web",
                "StopGracePeriod": 10 * SECOND,
                "Mounts": [{"Type": "volume", "Source": "data", "Target": "/data"}],
                "Secrets": [
                    {
                        "SecretID": "s1",
                        "SecretName": "db_password",
                        "File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 0o444},
                    },
                    {"SecretID": "s2", "SecretName": "tls.key", "File": {"Name": "/etc/tls/key.pem"}},
                ],
            },
            "Resources": {
                "Limits": {"NanoCPUs": 2 * SECOND, "MemoryBytes": 512 * MIB, "Pids": 100},
                "Reservations": {"NanoCPUs": SECOND // 2, "MemoryBytes": 64 * MIB},
            },
            "RestartPolicy": {"Condition": "on-failure", "Delay": 2 * SECOND, "MaxAttempts": 3, "Window": 60 * SECOND},
            "Placement": {
                "Constraints": ["node.role==worker", "node.labels.zone != eu-1"],
                "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
                "MaxReplicas": 2,
            },
            "Networks": [{"Target": "backend", "Aliases": ["web", "www"]}],
            "ForceUpdate": 1,
        },
        "Mode": {"Replicated": {"Replicas": 3}},
        "UpdateConfig": {
            "Parallelism": 2,
            "Delay": SECOND,
            "FailureAction": "rollback",
            "Monitor": 10 * SECOND,
            "MaxFailureRatio": 0.25,
            "Order": "start-first",
        },
        "RollbackConfig": {
            "Parallelism": 0,
            "Delay": 0,
            "FailureAction": "continue",
            "Monitor": SECOND,
            "MaxFailureRatio": 1,
            "Order": "stop-first",
        },
        "Networks": [{"Target": "legacy"}],
        "EndpointSpec": {
            "Mode": "vip",
            "Ports": [
                {"Name": "http", "Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
                {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 8080, "PublishMode": "host"},
                {"Protocol": "sctp", "TargetPort": 9000, "PublishMode": "ingress"},
                {"TargetPort": 9001, "PublishedPort": 0, "Protocol": "tcp", "PublishMode": "ingress"},
                {"TargetPort": 9002, "PublishedPort": 0, "Protocol": "tcp", "PublishMode": "ingress"},
            ],
        },
    }


def minimal_spec() -> dict:
    return {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}}}


DELETE = object()


def changed(spec: dict, path: str, value: object) -> dict:
    """A copy of `spec` with the field at dotted `path` (list items as Ports.0) set to `value`, or removed."""
    spec = copy.deepcopy(spec)
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    key = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return spec


def refusal(spec: object) -> str:
    with pytest.raises(InvalidSpec) as info:
        validate_service_spec(spec)
    return str(info.value)


# -- accepted specs ----------------------------------------------------------------------------------------


def test_a_spec_using_every_field_is_stored_exactly_as_sent():
    spec = full_spec()
    assert validate_service_spec(spec) == full_spec()


def test_nothing_is_defaulted_and_unknown_fields_are_kept():
    spec = minimal_spec()
    spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = {"Test": ["CMD", "true"]}
    spec["TaskTemplate"]["LogDriver"] = {"Name": "json-file"}
    spec["FutureField"] = [1, {"x": 2}]
    assert validate_service_spec(spec) == spec
    assert "Mode" not in validate_service_spec(minimal_spec())


def test_null_members_count_as_absent_as_in_dockers_go_decoding():
    spec = minimal_spec()
    spec["TaskTemplate"]["ContainerSpec"]["Args"] = None  # the docker SDK sends null for unset options
    spec["FutureField"] = [1, {"x": None}]
    checked = validate_service_spec(spec)
    assert "Args" not in checked["TaskTemplate"]["ContainerSpec"] and checked["FutureField"] == [1, {}]


def test_mode_names_match_case_insensitively_as_in_dockers_go_decoding():
    spec = {**minimal_spec(), "Mode": {"replicated": {"Replicas": 2}}}  # what the docker SDK sends
    assert validate_service_spec(spec)["Mode"] == {"Replicated": {"Replicas": 2}}


def test_known_keys_in_any_case_are_stored_in_dockers_spelling_the_last_winning_as_in_go():
    spec = {
        "name": "web",
        "TASKTEMPLATE": {
            "containerspec": {"image": "nginx", "FutureField": {"logdriver": 5}},  # unknown: kept as sent
            "LogDriver": {"Name": "json-file"},
            "logDriver": {"name": "syslog"},
        },
    }
    assert validate_service_spec(spec) == {
        "Name": "web",
        "TaskTemplate": {
            "ContainerSpec": {"Image": "nginx", "FutureField": {"logdriver": 5}},
            "LogDriver": {"Name": "syslog"},
        },
    }


def test_keys_go_would_read_as_a_field_through_unicode_folding_are_checked_as_that_field():
    # Go folds the long s (U+017F) to s and the Kelvin sign (U+212A) to k: every Docker client reads this as
    # TaskTemplate.LogDriver.
    spec = {"Name": "web", "Ta\u017f\u212aTemplate": {"ContainerSpec": {"Image": "nginx"}, "LogDriver": 5}}
    assert refusal(spec).startswith("TaskTemplate.LogDriver: must be a JSON object")


def test_a_default_name_is_given_only_to_a_spec_without_one():
    assert validate_service_spec(minimal_spec(), default_name=lambda: "other")["Name"] == "web"
    nameless = {"name": "", "TaskTemplate": minimal_spec()["TaskTemplate"]}
    assert validate_service_spec(nameless, default_name=lambda: "brave_hopper")["Name"] == "brave_hopper"


def test_the_returned_spec_is_a_copy():
    spec = full_spec()
    checked = validate_service_spec(spec)
    checked["TaskTemplate"]["ContainerSpec"]["Env"].append("INJECTED=1")
    checked["Labels"]["team"] = "other"
    assert spec == full_spec()


def test_a_refused_spec_is_left_as_it_was():
    spec = changed(full_spec(), "UpdateConfig.Order", "random")
    before = copy.deepcopy(spec)
    refusal(spec)
    assert spec == before


def test_refusals_are_400_control_errors():
    with pytest.raises(ControlError) as info:
        validate_service_spec({"Name": "web"})
    assert isinstance(info.value, InvalidSpec)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("Mode", {}),  # Docker's default: one replica
        ("Mode", {"Replicated": {}}),
        ("Mode", {"Replicated": {"Replicas": 0}}),
        ("Labels", None),  # what Go clients send for "no labels"
        ("Name", "a" * 63),
        ("Name", "web__api--v2"),
        ("Name", "7"),
        ("TaskTemplate.ContainerSpec.Image", "nginx:1.27"),
        ("TaskTemplate.ContainerSpec.Image", "library/nginx:latest"),
        ("TaskTemplate.ContainerSpec.Image", "localhost:5000/team/app_x:v1.0-rc1"),
        ("TaskTemplate.ContainerSpec.Image", "MyRegistry.io/app"),  # a registry host may have capitals
        ("TaskTemplate.ContainerSpec.Image", f"nginx@{DIGEST}"),
        ("TaskTemplate.ContainerSpec.Image", "[::1]:5000/app"),
        ("TaskTemplate.ContainerSpec.Env", ["ONLY_NAME"]),
        ("TaskTemplate.ContainerSpec.Hostname", "{{.Node.Hostname}}-{{.Task.Slot}}"),  # templates that expand
        ("TaskTemplate.ContainerSpec.Secrets", []),
        # A limit of 0 is no limit, so any reservation fits.
        ("TaskTemplate.Resources", {"Limits": {"NanoCPUs": 0}, "Reservations": {"NanoCPUs": 4 * SECOND}}),
        ("TaskTemplate.Resources.Reservations.MemoryBytes", 512 * MIB),  # equal to the limit
        # Above the limit too, as Docker swarm takes it (conformance: "service create reservation over limit").
        ("TaskTemplate.Resources.Reservations.MemoryBytes", 513 * MIB),
        ("TaskTemplate.Resources.Reservations.NanoCPUs", 3 * SECOND),
        ("TaskTemplate.RestartPolicy", {}),
        ("TaskTemplate.Placement.Preferences.0.Spread.SpreadDescriptor", "NODE.LABELS.rack"),
        ("EndpointSpec", {"Mode": "dnsrr"}),
        ("EndpointSpec", {"Mode": "dnsrr", "Ports": [{"TargetPort": 80, "PublishedPort": 80, "PublishMode": "host"}]}),
        ("EndpointSpec.Ports", [{"TargetPort": 1, "PublishedPort": 65535}, {"TargetPort": 65535}]),
        ("UpdateConfig", {}),
        ("UpdateConfig.MaxFailureRatio", 0),
    ],
)
def test_docker_accepts_these_and_so_does_raftswarm(path, value):
    spec = changed(full_spec(), path, value)
    # A null member is an absent one; the enums SwarmKit always holds read as their defaults when left out.
    assert without_enum_defaults(validate_service_spec(spec)) == without_enum_defaults(without_nulls(spec))


_ENUM_DEFAULTS = {"FailureAction": "pause", "Order": "stop-first", "Condition": "any", "Mode": "vip",
                  "Protocol": "tcp", "PublishMode": "ingress"}


def without_enum_defaults(value):
    """A spec without the enum members that hold their default (as `_empty_means_default` fills them)."""
    if isinstance(value, dict):
        return {
            k: without_enum_defaults(v) for k, v in value.items() if not (k in _ENUM_DEFAULTS and v in ("", _ENUM_DEFAULTS[k]))
        }
    if isinstance(value, list):
        return [without_enum_defaults(item) for item in value]
    return value


def test_a_global_service_without_max_replicas_is_accepted():
    spec = changed(changed(full_spec(), "Mode", {"Global": {}}), "TaskTemplate.Placement.MaxReplicas", DELETE)
    assert validate_service_spec(spec) == spec
    spec = changed(spec, "TaskTemplate.Placement.MaxReplicas", 0)
    assert validate_service_spec(spec) == spec


# -- refused specs: each rule, and the field it names ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        # The name is a DNS label, as in SwarmKit.
        ("Name", DELETE, "Name", "required"),
        ("Name", "", "Name", "must be provided"),
        ("Name", 7, "Name", "must be a string"),
        ("Name", "a" * 64, "Name", "63 characters or fewer"),
        ("Name", "web.app", "Name", "DNS name component"),
        ("Name", "-web", "Name", "DNS name component"),
        ("Name", "web_", "Name", "DNS name component"),
        ("Name", "web app", "Name", "DNS name component"),
        ("Name", "web\n", "Name", "DNS name component"),
        ("Labels", {"team": 1}, "Labels.team", "must be a string"),
        ("Labels", ["team=shop"], "Labels", "must be a JSON object"),
        # The task template and its container.
        ("TaskTemplate", DELETE, "TaskTemplate", "required"),
        ("TaskTemplate", "nginx", "TaskTemplate", "must be a JSON object"),
        ("TaskTemplate.ContainerSpec", DELETE, "TaskTemplate.ContainerSpec", "required"),
        ("TaskTemplate.ContainerSpec.Image", DELETE, "TaskTemplate.ContainerSpec.Image", "required"),
        ("TaskTemplate.ContainerSpec.Image", "", "TaskTemplate.ContainerSpec.Image", "image reference must be"),
        ("TaskTemplate.ContainerSpec.Image", "NGINX", "TaskTemplate.ContainerSpec.Image", "not a valid repository"),
        ("TaskTemplate.ContainerSpec.Image", "nginx:", "TaskTemplate.ContainerSpec.Image", "not a valid repository"),
        ("TaskTemplate.ContainerSpec.Image", "ngi nx", "TaskTemplate.ContainerSpec.Image", "not a valid repository"),
        ("TaskTemplate.ContainerSpec.Image", "nginx@sha256:1", "TaskTemplate.ContainerSpec.Image", "not a valid"),
        ("TaskTemplate.ContainerSpec.Image", "ab" * 32, "TaskTemplate.ContainerSpec.Image", "64-byte hexadecimal"),
        ("TaskTemplate.ContainerSpec.Image", "a/" * 128 + "a", "TaskTemplate.ContainerSpec.Image", "not a valid"),
        ("TaskTemplate.ContainerSpec.Command", "nginx -g", "TaskTemplate.ContainerSpec.Command", "JSON array"),
        ("TaskTemplate.ContainerSpec.Args", ["-g", 1], "TaskTemplate.ContainerSpec.Args[1]", "must be a string"),
        ("TaskTemplate.ContainerSpec.Env", ["A=1", "=x"], "TaskTemplate.ContainerSpec.Env[1]", "KEY=VALUE"),
        ("TaskTemplate.ContainerSpec.Env", [{"A": "1"}], "TaskTemplate.ContainerSpec.Env[0]", "must be a string"),
        ("TaskTemplate.ContainerSpec.Dir", 1, "TaskTemplate.ContainerSpec.Dir", "must be a string"),
        ("TaskTemplate.ContainerSpec.User", 0, "TaskTemplate.ContainerSpec.User", "must be a string"),
        ("TaskTemplate.ContainerSpec.StopGracePeriod", -1, "TaskTemplate.ContainerSpec.StopGracePeriod", ">= 0"),
        ("TaskTemplate.ContainerSpec.StopGracePeriod", 1.5, "TaskTemplate.ContainerSpec.StopGracePeriod", "integer"),
        ("TaskTemplate.ContainerSpec.StopGracePeriod", "10s", "TaskTemplate.ContainerSpec.StopGracePeriod", "nanosec"),
        (
            "TaskTemplate.ContainerSpec.Mounts",
            [{"Target": "/data"}, {"Target": "/data"}],
            "TaskTemplate.ContainerSpec.Mounts[1].Target",
            "duplicate mount point: /data",
        ),
        # Secret references: SwarmKit's validateSecretRefsSpec.
        ("TaskTemplate.ContainerSpec.Secrets", {}, "TaskTemplate.ContainerSpec.Secrets", "JSON array"),
        ("TaskTemplate.ContainerSpec.Secrets.0", "s1", "TaskTemplate.ContainerSpec.Secrets[0]", "JSON object"),
        ("TaskTemplate.ContainerSpec.Secrets.1.SecretID", "", "TaskTemplate.ContainerSpec.Secrets[1].SecretID", "mal"),
        ("TaskTemplate.ContainerSpec.Secrets.0.SecretID", DELETE, "ContainerSpec.Secrets[0].SecretID", "required"),
        ("TaskTemplate.ContainerSpec.Secrets.0.SecretName", 5, "ContainerSpec.Secrets[0].SecretName", "string"),
        ("TaskTemplate.ContainerSpec.Secrets.0.File", DELETE, "ContainerSpec.Secrets[0].File", "no target provided"),
        ("TaskTemplate.ContainerSpec.Secrets.0.File.Name", "", "Secrets[0].File.Name", "invalid target file name"),
        ("TaskTemplate.ContainerSpec.Secrets.0.File.UID", 0, "Secrets[0].File.UID", "must be a string"),
        ("TaskTemplate.ContainerSpec.Secrets.0.File.GID", 0, "Secrets[0].File.GID", "must be a string"),
        ("TaskTemplate.ContainerSpec.Secrets.0.File.Mode", 0o1000, "Secrets[0].File.Mode", "from 0 to 511"),
        ("TaskTemplate.ContainerSpec.Secrets.0.File.Mode", "0444", "Secrets[0].File.Mode", "integer"),
        (
            "TaskTemplate.ContainerSpec.Secrets.1.File.Name",
            "db_password",
            "TaskTemplate.ContainerSpec.Secrets[1].File.Name",
            "secret references 'db_password' and 'tls.key' have a conflicting target: 'db_password'",
        ),
        # Resources.
        ("TaskTemplate.Resources.Limits.NanoCPUs", -1, "TaskTemplate.Resources.Limits.NanoCPUs", ">= 0"),
        ("TaskTemplate.Resources.Limits.NanoCPUs", 999_999, "Resources.Limits.NanoCPUs", "at least 0.001 CPU"),
        ("TaskTemplate.Resources.Limits.MemoryBytes", "1g", "Resources.Limits.MemoryBytes", "integer"),
        ("TaskTemplate.Resources.Limits.MemoryBytes", 4 * MIB - 1, "Resources.Limits.MemoryBytes", "at least 4MiB"),
        ("TaskTemplate.Resources.Limits.Pids", -5, "TaskTemplate.Resources.Limits.Pids", ">= 0"),
        ("TaskTemplate.Resources.Reservations.NanoCPUs", True, "Resources.Reservations.NanoCPUs", "integer"),
        ("TaskTemplate.Resources.Reservations.MemoryBytes", 1024, "Resources.Reservations.MemoryBytes", "4MiB"),
        # Templates SwarmKit expands at create for a sample task (its service has no labels there).
        ("TaskTemplate.ContainerSpec.Hostname", "{{.Nope}}", "TaskTemplate.ContainerSpec", "can't evaluate field Nope"),
        ("TaskTemplate.ContainerSpec.Env", ["A={{.Task.Nope}}"], "TaskTemplate.ContainerSpec", 'expanding env A "{{.Task.Nope}}" failed'),
        ("TaskTemplate.ContainerSpec.Hostname", "{{.Service.Labels.tier}}", "TaskTemplate.ContainerSpec", 'no entry for key "tier"'),
        # Restart policy.
        ("TaskTemplate.RestartPolicy.Condition", "always", "TaskTemplate.RestartPolicy.Condition", "none, on-failure"),
        ("TaskTemplate.RestartPolicy.Delay", -1, "TaskTemplate.RestartPolicy.Delay", "nanoseconds"),
        ("TaskTemplate.RestartPolicy.Window", -1, "TaskTemplate.RestartPolicy.Window", "nanoseconds"),
        ("TaskTemplate.RestartPolicy.MaxAttempts", -1, "TaskTemplate.RestartPolicy.MaxAttempts", ">= 0"),
        # Placement: the scheduler's own constraint and preference rules.
        ("TaskTemplate.Placement.Constraints", "node.role==worker", "Placement.Constraints", "JSON array"),
        ("TaskTemplate.Placement.Constraints.1", "node.role=manager", "Placement.Constraints[1]", "operator"),
        ("TaskTemplate.Placement.Constraints.0", "node.lables.zone==a", "Placement.Constraints[0]", "unsupported"),
        ("TaskTemplate.Placement.Constraints.0", 5, "TaskTemplate.Placement.Constraints[0]", "must be a string"),
        (
            "TaskTemplate.Placement.Preferences.0.Spread.SpreadDescriptor",
            "node.id",
            "TaskTemplate.Placement.Preferences[0].Spread.SpreadDescriptor",
            "node.labels.<name>",
        ),
        ("TaskTemplate.Placement.Preferences.0", {"Pack": {}}, "Placement.Preferences[0].Spread", "required"),
        ("TaskTemplate.Placement.Preferences.0.Spread", "zone", "Placement.Preferences[0].Spread", "JSON object"),
        ("TaskTemplate.Placement.Preferences.0.Spread.SpreadDescriptor", 1, "Spread.SpreadDescriptor", "string"),
        ("TaskTemplate.Placement.MaxReplicas", -1, "TaskTemplate.Placement.MaxReplicas", ">= 0"),
        # Networks, in the task template and at the top level (the legacy place).
        ("TaskTemplate.Networks.0.Target", "", "TaskTemplate.Networks[0].Target", "must not be empty"),
        ("TaskTemplate.Networks.0.Aliases", ["web", 1], "TaskTemplate.Networks[0].Aliases[1]", "must be a string"),
        ("TaskTemplate.Networks", {"Target": "x"}, "TaskTemplate.Networks", "JSON array"),
        ("Networks.0.Target", 5, "Networks[0].Target", "must be a string"),
        ("Networks.0", {"Aliases": []}, "Networks[0].Target", "required"),
        ("TaskTemplate.ForceUpdate", -1, "TaskTemplate.ForceUpdate", ">= 0"),
        # Mode.
        ("Mode", {"Replicated": {"Replicas": 1}, "Global": {}}, "Mode", "not both"),
        ("Mode", "replicated", "Mode", "JSON object"),
        ("Mode.Replicated.Replicas", -1, "Mode.Replicated.Replicas", "from 0 to 100000"),
        ("Mode.Replicated.Replicas", 2**63, "Mode.Replicated.Replicas", "from 0 to 100000"),
        ("Mode.Replicated.Replicas", 2.0, "Mode.Replicated.Replicas", "integer"),
        # A global service already runs one task per node.
        ("Mode", {"Global": {}}, "TaskTemplate.Placement.MaxReplicas", "only be used with replicated mode"),
        # Update and rollback configs.
        ("UpdateConfig.Parallelism", -1, "UpdateConfig.Parallelism", ">= 0"),
        ("UpdateConfig.Delay", -1, "UpdateConfig.Delay", "TaskSpec: update-delay cannot be negative"),
        ("UpdateConfig.FailureAction", "stop", "UpdateConfig.FailureAction", "pause, continue, rollback"),
        ("UpdateConfig.Monitor", -SECOND, "UpdateConfig.Monitor", "TaskSpec: update-monitor cannot be negative"),
        ("UpdateConfig.MaxFailureRatio", 1.5, "UpdateConfig.MaxFailureRatio", "cannot be less than 0 or bigger than 1"),
        ("UpdateConfig.MaxFailureRatio", -0.1, "UpdateConfig.MaxFailureRatio", "cannot be less than 0 or bigger than 1"),
        ("UpdateConfig.MaxFailureRatio", math.nan, "UpdateConfig.MaxFailureRatio", "from 0 to 1"),
        ("UpdateConfig.MaxFailureRatio", "0.5", "UpdateConfig.MaxFailureRatio", "number"),
        ("UpdateConfig.Order", "random", "UpdateConfig.Order", "stop-first, start-first"),
        ("UpdateConfig", [], "UpdateConfig", "JSON object"),
        ("RollbackConfig.FailureAction", "rollback", "RollbackConfig.FailureAction", "one of pause, continue;"),
        ("RollbackConfig.Parallelism", True, "RollbackConfig.Parallelism", "integer"),
        # Endpoint and published ports.
        ("EndpointSpec.Mode", "round-robin", "EndpointSpec.Mode", "vip, dnsrr"),
        ("EndpointSpec.Ports", {"80": 8080}, "EndpointSpec.Ports", "JSON array"),
        ("EndpointSpec.Ports.0.Name", 80, "EndpointSpec.Ports[0].Name", "must be a string"),
        ("EndpointSpec.Ports.0.Protocol", "icmp", "EndpointSpec.Ports[0].Protocol", "tcp, udp, sctp"),
        ("EndpointSpec.Ports.0.TargetPort", DELETE, "EndpointSpec.Ports[0].TargetPort", "required"),
        ("EndpointSpec.Ports.0.TargetPort", 0, "EndpointSpec.Ports[0].TargetPort", "from 1 to 65535"),
        ("EndpointSpec.Ports.0.TargetPort", 65536, "EndpointSpec.Ports[0].TargetPort", "from 1 to 65535"),
        ("EndpointSpec.Ports.0.PublishedPort", -1, "EndpointSpec.Ports[0].PublishedPort", "from 0 to 65535"),
        ("EndpointSpec.Ports.0.PublishedPort", 70000, "EndpointSpec.Ports[0].PublishedPort", "from 0 to 65535"),
        ("EndpointSpec.Ports.0.PublishMode", "bridge", "EndpointSpec.Ports[0].PublishMode", "ingress, host"),
        (
            "EndpointSpec.Ports.2",
            {"TargetPort": 81, "PublishedPort": 8080},  # tcp, like port 0
            "EndpointSpec.Ports[2].PublishedPort",
            "duplicate published ports provided: 8080/tcp",
        ),
        ("EndpointSpec.Mode", "dnsrr", "EndpointSpec.Ports[0].PublishMode", "can't be used with dnsrr mode"),
    ],
)
def test_a_violation_is_refused_naming_the_field(path, value, field, words):
    message = refusal(changed(full_spec(), path, value))
    assert message.split(":")[0].endswith(field), message
    assert words in message


def test_dnsrr_refuses_ports_left_in_the_default_ingress_mode():
    spec = changed(minimal_spec(), "EndpointSpec", {"Mode": "dnsrr", "Ports": [{"TargetPort": 80}]})
    assert refusal(spec).startswith("EndpointSpec.Ports[0].PublishMode: port published with ingress mode")


@pytest.mark.parametrize("spec", [None, [], "web", 3, True])
def test_a_spec_that_is_not_an_object_is_refused(spec):
    assert "service spec must be a JSON object" in refusal(spec)


# -- effective values --------------------------------------------------------------------------------------

DOCKER_UPDATE_DEFAULTS = {
    "Parallelism": 1,
    "Delay": 0,
    "FailureAction": "pause",
    "Monitor": 5 * SECOND,
    "MaxFailureRatio": 0.0,
    "Order": "stop-first",
}


@pytest.mark.parametrize("rollback", [False, True])
def test_update_and_rollback_default_to_docker_values(rollback):
    assert update_config(validate_service_spec(minimal_spec()), rollback=rollback) == DOCKER_UPDATE_DEFAULTS


def test_given_update_values_win_and_the_rest_are_defaulted():
    spec = changed(minimal_spec(), "UpdateConfig", {"Parallelism": 0, "Order": "start-first"})
    assert update_config(validate_service_spec(spec)) == {
        **DOCKER_UPDATE_DEFAULTS,
        "Parallelism": 0,
        "Order": "start-first",
    }
    assert update_config(spec, rollback=True) == DOCKER_UPDATE_DEFAULTS


def test_update_and_rollback_configs_are_read_separately():
    spec = validate_service_spec(full_spec())
    assert update_config(spec) == full_spec()["UpdateConfig"]
    assert update_config(spec, rollback=True) == full_spec()["RollbackConfig"]


def test_a_monitor_of_zero_means_dockers_default_of_5s():
    spec = changed(minimal_spec(), "UpdateConfig", {"Monitor": 0, "Delay": 0})
    assert update_config(validate_service_spec(spec))["Monitor"] == 5 * SECOND


def test_restart_policy_defaults_to_docker_values():
    assert restart_policy(validate_service_spec(minimal_spec())) == {
        "Condition": "any",
        "Delay": 5 * SECOND,
        "MaxAttempts": 0,
        "Window": 0,
    }


def test_given_restart_values_win_even_when_zero():
    spec = changed(minimal_spec(), "TaskTemplate.RestartPolicy", {"Condition": "on-failure", "Delay": 0})
    assert restart_policy(validate_service_spec(spec)) == {
        "Condition": "on-failure",
        "Delay": 0,
        "MaxAttempts": 0,
        "Window": 0,
    }
    assert restart_policy(validate_service_spec(full_spec())) == full_spec()["TaskTemplate"]["RestartPolicy"]


def test_referenced_secrets_in_order_without_duplicates():
    secrets = [
        {"SecretID": sid, "SecretName": f"n{index}", "File": {"Name": f"f{index}"}}
        for index, sid in enumerate(["b", "a", "b", "c", "a"])
    ]
    spec = validate_service_spec(changed(minimal_spec(), "TaskTemplate.ContainerSpec.Secrets", secrets))
    assert referenced_secrets(spec) == ["b", "a", "c"]
    assert referenced_secrets(validate_service_spec(full_spec())) == ["s1", "s2"]
    assert referenced_secrets(validate_service_spec(minimal_spec())) == []


# -- secrets -----------------------------------------------------------------------------------------------


def secret_spec(data: bytes = b"hunter2", **fields) -> dict:
    return {"Name": "db_password", "Labels": {"env": "prod"}, "Data": base64.b64encode(data).decode(), **fields}


def secret_refusal(spec: object) -> str:
    with pytest.raises(InvalidSpec) as info:
        validate_secret_spec(spec)
    return str(info.value)


def test_a_secret_is_returned_without_its_data_and_the_data_decoded():
    spec = secret_spec(b"\x00\xffpassword\n")
    checked, data = validate_secret_spec(spec)
    assert checked == {"Name": "db_password", "Labels": {"env": "prod"}}
    assert data == b"\x00\xffpassword\n"
    assert spec == secret_spec(b"\x00\xffpassword\n")  # the input keeps its Data
    checked["Labels"]["env"] = "dev"
    assert spec["Labels"] == {"env": "prod"}


@pytest.mark.parametrize("size", [1, MAX_SECRET_SIZE - 1])
def test_secret_sizes_docker_accepts(size):
    assert len(validate_secret_spec(secret_spec(b"x" * size))[1]) == size


@pytest.mark.parametrize("size", [0, MAX_SECRET_SIZE, MAX_SECRET_SIZE + 1])
def test_secret_sizes_docker_refuses(size):
    message = secret_refusal(secret_spec(b"x" * size))
    assert message.startswith("Data: secret data must be larger than 0 and less than 512000 bytes")


def test_the_secret_size_limit_is_500_kib():
    assert MAX_SECRET_SIZE == 500 * 1024


def test_base64_with_line_breaks_is_accepted_as_docker_does():
    wrapped = base64.encodebytes(b"y" * 200).decode()  # 76-character lines
    assert "\n" in wrapped
    assert validate_secret_spec({"Name": "s", "Data": wrapped})[1] == b"y" * 200


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"Name": DELETE}, "Name", "required"),
        ({"Name": ""}, "Name", "name must be provided"),
        ({"Name": "a" * 65}, "Name", "only 64 [a-zA-Z0-9-_.] characters allowed"),
        ({"Name": "-secret"}, "Name", "start and end character must be [a-zA-Z0-9]"),
        ({"Name": "secret."}, "Name", "start and end character"),
        ({"Name": "my secret"}, "Name", "only 64"),
        ({"Name": ["s"]}, "Name", "must be a string"),
        ({"Labels": {"env": 1}}, "Labels.env", "must be a string"),
        ({"Data": DELETE}, "Data", "larger than 0"),
        ({"Data": "not base64!"}, "Data", "not valid base64"),
        ({"Data": "aGk"}, "Data", "not valid base64"),  # missing padding
        ({"Data": "-_-_"}, "Data", "not valid base64"),  # the URL-safe alphabet, which Docker refuses too
        ({"Data": "aGk=é"}, "Data", "not valid base64"),
        ({"Data": [104, 105]}, "Data", "base64 string"),
        ({"Data": None}, "Data", "got 0 bytes"),  # null is no data
        ({"Driver": {"Name": "vault"}}, "Driver", "secret drivers are not supported by raftswarm"),
        ({"Templating": "golang"}, "Templating", "JSON object"),
        ({"Templating": {"Name": ""}}, "Templating.Name", "must not be empty"),
        # the nodes deliver a secret's bytes as they are: a template would reach the task unexpanded
        ({"Templating": {"Name": "golang"}}, "Templating", "expand templates in configs, not in secrets"),
    ],
)
def test_a_bad_secret_is_refused_naming_the_field(change, field, words):
    spec = secret_spec()
    for key, value in change.items():
        if value is DELETE:
            del spec[key]
        else:
            spec[key] = value
    message = secret_refusal(spec)
    assert message.split(":")[0] == field, message
    assert words in message


@pytest.mark.parametrize("name", ["s", "a" * 64, "my.secret_v-1", "0"])
def test_secret_names_docker_accepts(name):
    assert validate_secret_spec(secret_spec(Name=name))[0]["Name"] == name


# -- junk never escapes as anything but InvalidSpec --------------------------------------------------------

FIELD_NAMES = sorted(
    {
        *full_spec(),
        *full_spec()["TaskTemplate"],
        *full_spec()["TaskTemplate"]["ContainerSpec"],
        *full_spec()["TaskTemplate"]["Resources"]["Limits"],
        *full_spec()["EndpointSpec"]["Ports"][0],
        *full_spec()["UpdateConfig"],
        *full_spec()["TaskTemplate"]["RestartPolicy"],
        *full_spec()["TaskTemplate"]["Placement"],
        "Global",
        "Replicated",
        "Replicas",
        "File",
        "SecretID",
        "SecretName",
        "Spread",
        "SpreadDescriptor",
        "Target",
        "Data",
        "Driver",
        "Templating",
    }
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def paths_of(value: object, prefix: str = "") -> list[str]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, f"{prefix}.{index}")
    return found


FULL_SPEC_PATHS = paths_of(full_spec())


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_junk_specs_raise_only_invalid_spec(junk):
    for validate in (validate_service_spec, validate_secret_spec):
        try:
            validate(junk)
        except InvalidSpec:
            pass


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(FULL_SPEC_PATHS), json_values)
def test_junk_anywhere_in_a_valid_spec_is_refused_or_kept_exactly(path, junk):
    spec = changed(full_spec(), path, junk)
    try:
        checked = validate_service_spec(spec)
    except InvalidSpec as exc:
        assert str(exc).split(":")[0]  # names a field
        return
    # nulls read as absent, as Docker's Go decoding reads them; left-out enums as their defaults
    assert without_enum_defaults(checked) == without_enum_defaults(without_nulls(spec))
    update_config(checked)
    update_config(checked, rollback=True)
    restart_policy(checked)
    referenced_secrets(checked)


# -- the swarm's other bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validate", "body", "field", "words"),
    [
        (validate_node_spec, {"Role": "admin"}, "Role", "one of worker, manager"),
        (validate_node_spec, {"availability": "off"}, "Availability", "one of active, pause, drain"),
        (validate_node_spec, {"Labels": {"zone": 1}}, "Labels.zone", "must be a string"),
        (
            validate_swarm_spec,
            {"Orchestration": {"TaskHistoryRetentionLimit": -1}},
            "Orchestration.TaskHistoryRetentionLimit",
            ">= 0",
        ),
        (validate_swarm_spec, {"Raft": {"HeartbeatTick": 2**32}}, "Raft.HeartbeatTick", "from 0 to 4294967295"),
        (validate_swarm_spec, {"CAConfig": {"ForceRotate": 2**64}}, "CAConfig.ForceRotate", "integer"),
        (
            validate_swarm_spec,
            {"TaskDefaults": {"LogDriver": {"Options": {"a": 1}}}},
            "TaskDefaults.LogDriver.Options.a",
            "string",
        ),
        (
            validate_init_request,
            {"Spec": {"Dispatcher": {"HeartbeatPeriod": "5s"}}},
            "Spec.Dispatcher.HeartbeatPeriod",
            "nanoseconds",
        ),
        (validate_init_request, {"SubnetSize": 30}, "SubnetSize", "from 0 to 29"),
        (validate_join_request, {"RemoteAddrs": ["m:2377"]}, "JoinToken", "required"),
        (validate_join_request, {"JoinToken": "t", "RemoteAddrs": [None]}, "RemoteAddrs[0]", "must be a string"),
    ],
)
def test_the_swarm_bodies_are_checked_by_dockers_types_naming_the_field(validate, body, field, words):
    with pytest.raises(InvalidSpec) as caught:
        validate(body)
    assert str(caught.value).split(":")[0] == field, str(caught.value)
    assert words in str(caught.value)


def test_a_swarm_spec_keeps_dockers_fields_only_so_the_stored_one_can_be_merged_into():
    assert validate_swarm_spec({"labels": {"a": "b"}, "timeout": True, "Raft": {"Newer": 1}}) == {
        "Labels": {"a": "b"},
        "Raft": {"Newer": 1},
    }


def test_empty_strings_the_docker_cli_sends_read_as_dockers_defaults():
    # `docker stack deploy` of `update_config: {parallelism: 1, delay: 1s}` and an unset restart condition and
    # port protocol: what dockerd reads as pause, stop-first, any, vip, tcp and ingress.
    spec = validate_service_spec(
        {
            "Name": "web",
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "RestartPolicy": {"Condition": "", "MaxAttempts": 0}},
            "UpdateConfig": {"Parallelism": 1, "Delay": SECOND, "FailureAction": "", "Monitor": 0, "Order": ""},
            "RollbackConfig": {"Parallelism": 1, "FailureAction": "", "Order": ""},
            "EndpointSpec": {"Mode": "", "Ports": [{"TargetPort": 80, "Protocol": "", "PublishMode": ""}]},
        }
    )
    assert spec["UpdateConfig"] == {"Parallelism": 1, "Delay": SECOND, "FailureAction": "pause", "Monitor": 0, "Order": "stop-first"}
    assert spec["RollbackConfig"]["FailureAction"] == "pause" and spec["RollbackConfig"]["Order"] == "stop-first"
    assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "any"
    assert spec["EndpointSpec"] == {"Mode": "vip", "Ports": [{"TargetPort": 80, "Protocol": "tcp", "PublishMode": "ingress"}]}
    assert update_config(spec)["Monitor"] == 5 * SECOND  # Monitor 0 is the default too
    # Missing ones too, where the object holding them was given: SwarmKit keeps them as enums.
    spec = validate_service_spec(
        {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "RestartPolicy": {}},
         "UpdateConfig": {"Parallelism": 2}, "EndpointSpec": {"Ports": [{"TargetPort": 80}]}}
    )
    assert spec["UpdateConfig"] == {"Parallelism": 2, "FailureAction": "pause", "Order": "stop-first"}
    assert spec["TaskTemplate"]["RestartPolicy"] == {"Condition": "any"} and "RollbackConfig" not in spec
    assert spec["EndpointSpec"] == {"Mode": "vip", "Ports": [{"TargetPort": 80, "Protocol": "tcp", "PublishMode": "ingress"}]}


def test_an_unknown_choice_is_still_refused_after_empty_strings_became_defaults():
    with pytest.raises(InvalidSpec, match="UpdateConfig.Order: unrecognized update order .*: must be one of stop-first, start-first"):
        validate_service_spec(
            {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "UpdateConfig": {"Order": "sideways"}}
        )


def test_warnings_name_every_field_raftswarm_ignores_known_to_docker_or_not():
    spec = validate_service_spec(
        {
            "Name": "web",
            "TaskTemplate": {
                "ContainerSpec": {"Image": "busybox", "Labels": {"a": "b"}, "Colour": "blue"},
                "LogDriver": {"Name": "syslog"},
            },
            "Shiny": True,
        }
    )
    assert service_warnings(spec) == [
        "unknown field TaskTemplate.ContainerSpec.Colour is ignored: Docker's API has no such field",
        "unknown field Shiny is ignored: Docker's API has no such field",
        "TaskTemplate.ContainerSpec.Labels is ignored: container labels are not kept: raftswarm has no container API",
        "TaskTemplate.LogDriver is ignored: a task's output is kept by its node (`service logs`); log drivers are not used",
    ]
    assert service_warnings(validate_service_spec({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}})) == []


@pytest.mark.parametrize("isolation", ["process", "hyperv"])
def test_a_windows_isolation_is_taken_with_a_warning(isolation):
    spec = validate_service_spec(
        {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Isolation": isolation}}}
    )
    assert service_warnings(spec) == [
        (
            "TaskTemplate.ContainerSpec.Isolation is ignored: process and hyperv isolation are Windows features:"
            " tasks are isolated by Linux namespaces (default)"
        )
    ]


@pytest.mark.parametrize("isolation", ["default", ""])
def test_the_default_isolation_is_what_tasks_get_and_warns_of_nothing(isolation):
    spec = validate_service_spec(
        {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Isolation": isolation}}}
    )
    assert service_warnings(spec) == []


def test_network_attachment_driver_options_are_taken_with_a_warning_naming_each_attachment():
    networks = [
        {"Target": "front", "DriverOpts": {"com.example.mtu": "1400"}},
        {"Target": "back", "Aliases": ["db"]},
        {"Target": "admin", "DriverOpts": {}},
        {"Target": "metrics", "DriverOpts": {"com.example.vlan": "7"}},
    ]
    spec = validate_service_spec(
        {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Networks": networks}}
    )
    reason = "per-attachment driver options are not used: a task joins the network with the network's own settings"
    assert service_warnings(spec) == [
        f"TaskTemplate.Networks[0].DriverOpts is ignored: {reason}",
        f"TaskTemplate.Networks[3].DriverOpts is ignored: {reason}",
    ]


def test_an_unconfined_or_custom_seccomp_profile_is_refused():
    for mode in ("unconfined", "custom"):
        with pytest.raises(InvalidSpec, match=f"Privileges.Seccomp.Mode: {mode} is refused"):
            validate_service_spec(
                {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Privileges": {"Seccomp": {"Mode": mode}}}}}
            )


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("StopSignal", "SIGFOO", "invalid signal: SIGFOO"),
        ("CapabilityAdd", ["SYS_EVERYTHING"], 'unknown capability: "CAP_SYS_EVERYTHING"'),
        ("Sysctls", {"vm.swappiness": "10"}, 'sysctl "vm.swappiness" is not in a separate kernel namespace'),
        ("Ulimits", [{"Name": "files", "Soft": 1, "Hard": 1}], "invalid ulimit type: files"),
        ("Ulimits", [{"Name": "nofile", "Soft": 9, "Hard": 1}], "soft limit must be less than or equal to hard"),
        ("Hosts", ["db:192.0.2.10"], 'extra host "db:192.0.2.10" is not "IP_ADDRESS HOSTNAME'),
        ("DNSConfig", {"Nameservers": ["dns.example"]}, "nameserver 'dns.example' is not an IP address"),
    ],
)
def test_a_container_setting_no_container_can_have_is_refused_when_the_service_is_created(field, value, words):
    with pytest.raises(InvalidSpec, match=rf"TaskTemplate\.ContainerSpec\.{field}: .*{re.escape(words)}"):
        validate_service_spec({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", field: value}}})
