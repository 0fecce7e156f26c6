"""How the API shows stored services and tasks: as dockerd 20.10 writes them back from SwarmKit's protobufs
(daemon/cluster/convert/service.go, task.go), and with SwarmKit's defaults when asked (`insertDefaults`)."""

import copy

from raftswarm.api.services import service_view, task_view
from raftswarm.objects.defaults import DEFAULT_MONITOR_NS, DEFAULT_RESTART_DELAY_NS, DEFAULT_STOP_GRACE_NS
from raftswarm.objects.stored import StoredObject, without_shown_defaults

SECOND = 1_000_000_000

# What `docker stack deploy` (CLI 28) sends for a service with `restart_policy: {condition: on-failure}` and
# `update_config: {parallelism: 1, delay: 1s}`, once checked.
STACK_SPEC = {
    "Name": "cf-st_app",
    "Labels": {"com.docker.stack.namespace": "cf-st"},
    "TaskTemplate": {
        "ContainerSpec": {"Image": "busybox:latest", "Args": ["sleep", "1000"], "Init": True},
        "Resources": {},
        "RestartPolicy": {"Condition": "on-failure"},
        "Placement": {},
        "ForceUpdate": 0,
    },
    "Mode": {"Replicated": {"Replicas": 1}},
    "UpdateConfig": {"Parallelism": 1, "Delay": SECOND, "FailureAction": "pause", "MaxFailureRatio": 0, "Order": "stop-first"},
    "EndpointSpec": {"Mode": "vip"},
}


def service(spec: dict, previous: dict | None = None) -> StoredObject:
    data = {"ID": "svc1", "Spec": copy.deepcopy(spec), "Endpoint": {"Spec": {"Mode": "vip"}}}
    if previous is not None:
        data["PreviousSpec"] = copy.deepcopy(previous)
    return StoredObject("services", "svc1", 9, 1, data)


def test_every_service_view_shows_the_container_runtime_its_isolation_and_its_restart_attempts_as_dockerd_does():
    shown = service_view(service(STACK_SPEC))["Spec"]
    template = shown["TaskTemplate"]
    assert template["Runtime"] == "container"
    assert template["ContainerSpec"]["Isolation"] == "default"
    assert template["RestartPolicy"] == {"Condition": "on-failure", "MaxAttempts": 0}
    # without insertDefaults nothing else is added: `docker service update` sends back what it reads
    assert "RollbackConfig" not in shown and "StopGracePeriod" not in template["ContainerSpec"]


def test_a_given_isolation_or_restart_limit_is_shown_as_given():
    spec = copy.deepcopy(STACK_SPEC)
    spec["TaskTemplate"]["ContainerSpec"]["Isolation"] = "process"
    spec["TaskTemplate"]["RestartPolicy"]["MaxAttempts"] = 3
    template = service_view(service(spec))["Spec"]["TaskTemplate"]
    assert template["ContainerSpec"]["Isolation"] == "process"
    assert template["RestartPolicy"]["MaxAttempts"] == 3


def test_insert_defaults_fills_in_swarmkits_defaults_as_docker_service_inspect_shows_them():
    shown = service_view(service(STACK_SPEC), insert_defaults=True)["Spec"]
    container = shown["TaskTemplate"]["ContainerSpec"]
    assert container["StopGracePeriod"] == DEFAULT_STOP_GRACE_NS and container["DNSConfig"] == {}
    assert shown["TaskTemplate"]["RestartPolicy"] == {
        "Condition": "on-failure",
        "Delay": DEFAULT_RESTART_DELAY_NS,
        "MaxAttempts": 0,
    }
    assert shown["UpdateConfig"]["Monitor"] == DEFAULT_MONITOR_NS and shown["UpdateConfig"]["Delay"] == SECOND
    assert shown["RollbackConfig"] == {
        "Parallelism": 1,
        "FailureAction": "pause",
        "Monitor": DEFAULT_MONITOR_NS,
        "MaxFailureRatio": 0.0,
        "Order": "stop-first",
    }


def test_insert_defaults_gives_a_bare_spec_swarmkits_restart_policy_resources_and_placement():
    bare = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": {"Replicated": {"Replicas": 1}}}
    template = service_view(service(bare), insert_defaults=True)["Spec"]["TaskTemplate"]
    assert template["RestartPolicy"] == {"Condition": "any", "Delay": DEFAULT_RESTART_DELAY_NS, "MaxAttempts": 0}
    assert template["Resources"] == {} and template["Placement"] == {}


def test_the_previous_spec_is_shown_as_dockerd_writes_it_back_but_without_inserted_defaults():
    view = service_view(service(STACK_SPEC, previous=STACK_SPEC), insert_defaults=True)
    previous = view["PreviousSpec"]
    assert previous["TaskTemplate"]["Runtime"] == "container"
    assert previous["TaskTemplate"]["ContainerSpec"]["Isolation"] == "default"
    assert "RollbackConfig" not in previous and "RollbackConfig" in view["Spec"]


def test_the_view_leaves_the_stored_spec_as_it_was():
    stored = service(STACK_SPEC)
    service_view(stored, insert_defaults=True)
    assert stored.data["Spec"] == STACK_SPEC


def test_a_spec_read_from_the_api_and_sent_back_is_stored_as_it_was_so_its_tasks_stay_current():
    """`docker service scale` and `update` post the spec they read: what the view added must not make the
    template differ from its tasks' specs (which would restart every task)."""
    read_back = copy.deepcopy(service_view(service(STACK_SPEC))["Spec"])
    assert without_shown_defaults(read_back) == STACK_SPEC


TASK = {
    "ID": "task1",
    "ServiceID": "svc1",
    "Slot": 1,
    "NodeID": "node1",
    "Spec": copy.deepcopy(STACK_SPEC["TaskTemplate"]),
    "ServiceAnnotations": {"Name": "cf-st_app"},
    "Endpoint": {"Spec": {"Mode": "vip"}, "VirtualIPs": [{"NetworkID": "net1", "Addr": "10.0.1.2/24"}]},
    "DesiredState": "running",
    "Status": {"State": "running", "Message": "started", "ContainerStatus": {"ContainerID": "c1", "PID": 42}},
    "NetworksAttachments": [{"Network": {"ID": "net1", "Spec": {"Name": "front"}}, "Addresses": ["10.0.1.3/24"]}],
}


def test_a_task_is_shown_as_dockers_task_without_swarmkits_copies_of_its_services_endpoint_and_annotations():
    view = task_view(StoredObject("tasks", "task1", 5, 1, copy.deepcopy(TASK)), {"net1": 17})
    assert "Endpoint" not in view and "ServiceAnnotations" not in view
    assert view["Labels"] == {}
    assert view["Status"]["PortStatus"] == {}
    assert view["Status"]["ContainerStatus"] == {"ContainerID": "c1", "PID": 42, "ExitCode": 0}
    assert view["NetworksAttachments"][0]["Network"]["Version"] == {"Index": 17}
    assert view["Spec"]["ContainerSpec"]["Isolation"] == "default"
    assert "Runtime" not in view["Spec"]  # dockerd shows a Runtime on services only


def test_a_task_keeps_its_stored_copies_for_the_nodes_that_run_it():
    stored = StoredObject("tasks", "task1", 5, 1, copy.deepcopy(TASK))
    task_view(stored, {})
    assert stored.data == TASK


def test_a_task_on_a_network_removed_since_still_shows_a_network_version():
    view = task_view(StoredObject("tasks", "task1", 5, 1, copy.deepcopy(TASK)), {})
    assert view["NetworksAttachments"][0]["Network"]["Version"] == {"Index": 0}
