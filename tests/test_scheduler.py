"""The scheduler's rules, as a user of `docker service create` would notice them. Pure: no I/O."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftswarm.manager.scheduler import Assignment, Pending, schedule
from raftswarm.objects.placement import Constraint, InvalidPlacement, parse_constraint


def make_node(
    node_id: str,
    *,
    state: str = "ready",
    availability: str = "active",
    role: str = "worker",
    hostname: str | None = None,
    os: str = "linux",
    arch: str = "x86_64",
    labels: dict[str, str] | None = None,
    engine_labels: dict[str, str] | None = None,
    cpus: int | None = None,
    memory: int | None = None,
) -> dict:
    description: dict = {"Hostname": hostname or f"host-{node_id}", "Platform": {"OS": os, "Architecture": arch}}
    if engine_labels is not None:
        description["Engine"] = {"EngineVersion": "raftswarm", "Labels": engine_labels}
    if cpus is not None or memory is not None:
        description["Resources"] = {"NanoCPUs": cpus or 0, "MemoryBytes": memory or 0}
    return {
        "ID": node_id,
        "Spec": {"Role": role, "Availability": availability, "Labels": labels or {}},
        "Description": description,
        "Status": {"State": state},
    }


def make_task(
    task_id: str,
    service: str = "web",
    *,
    slot: int = 1,
    node_id: str = "",
    constraints: list[str] | None = None,
    spread: list[str] | None = None,
    max_replicas: int = 0,
    cpus: int = 0,
    memory: int = 0,
    host_ports: list[int] | None = None,
) -> dict:
    placement: dict = {}
    if constraints:
        placement["Constraints"] = constraints
    if spread:
        placement["Preferences"] = [{"Spread": {"SpreadDescriptor": d}} for d in spread]
    if max_replicas:
        placement["MaxReplicas"] = max_replicas
    task = {
        "ID": task_id,
        "ServiceID": service,
        "Slot": slot,
        "NodeID": node_id,
        "DesiredState": "running",
        "Status": {"State": "pending" if not node_id else "running", "Message": ""},
        "Spec": {"Placement": placement, "Resources": {"Reservations": {"NanoCPUs": cpus, "MemoryBytes": memory}}},
    }
    if host_ports:
        task["HostPorts"] = [{"Protocol": "tcp", "PublishedPort": port} for port in host_ports]
    return task


def replicas(n: int, service: str = "web", **kwargs) -> list[dict]:
    return [make_task(f"{service}.{i}", service, slot=i, **kwargs) for i in range(1, n + 1)]


def placed(decisions) -> Counter:
    return Counter(d.node_id for d in decisions if isinstance(d, Assignment))


def pending(decisions) -> list[Pending]:
    return [d for d in decisions if isinstance(d, Pending)]


# --- spreading ---------------------------------------------------------------------------------------


def test_replicas_spread_evenly_over_nodes():
    nodes = [make_node(f"n{i}") for i in range(4)]
    decisions = schedule(nodes, replicas(100), [])
    assert placed(decisions) == {"n0": 25, "n1": 25, "n2": 25, "n3": 25}


def test_one_decision_per_task_in_input_order():
    tasks = replicas(5)
    decisions = schedule([make_node("n0")], tasks, [])
    assert [d.task_id for d in decisions] == [t["ID"] for t in tasks]


def test_new_replicas_go_to_nodes_with_fewest_tasks_of_the_service():
    nodes = [make_node("n0"), make_node("n1"), make_node("n2")]
    running = [make_task(f"old{i}", node_id="n0") for i in range(3)]
    decisions = schedule(nodes, replicas(6), running)
    # n0 already runs 3 of the service: levelling up the others first gives 3 / 3 / 3 overall.
    assert placed(decisions) == {"n1": 3, "n2": 3}


def test_ties_on_the_service_go_to_the_node_with_fewest_tasks_overall():
    nodes = [make_node("n0"), make_node("n1")]
    running = [make_task("other.1", "other", node_id="n0")]
    decisions = schedule(nodes, replicas(1), running)
    assert decisions == [Assignment("web.1", "n1")]


def test_same_inputs_in_any_order_give_the_same_assignments():
    nodes = [make_node(f"n{i}", labels={"zone": "ab"[i % 2]}) for i in range(7)]
    tasks = replicas(20, spread=["node.labels.zone"]) + replicas(9, "api", max_replicas=2)
    first = sorted(schedule(nodes, tasks, []), key=lambda d: d.task_id)
    shuffled_nodes, shuffled_tasks = nodes[:], tasks[:]
    random.Random(7).shuffle(shuffled_nodes)
    random.Random(8).shuffle(shuffled_tasks)
    again = sorted(schedule(shuffled_nodes, shuffled_tasks, []), key=lambda d: d.task_id)
    assert first == again
    assert first == sorted(schedule(nodes, tasks, []), key=lambda d: d.task_id)


# --- node readiness and availability -----------------------------------------------------------------


@pytest.mark.parametrize(
    "unusable",
    [
        make_node("x", availability="drain"),
        make_node("x", availability="pause"),
        make_node("x", state="down"),
        make_node("x", state="unknown"),
    ],
    ids=["drain", "pause", "down", "unknown"],
)
def test_nodes_not_ready_and_active_get_no_new_tasks(unusable):
    decisions = schedule([unusable, make_node("ok")], replicas(10), [])
    assert placed(decisions) == {"ok": 10}


def test_no_usable_node_leaves_tasks_pending_with_docker_message():
    nodes = [make_node("a", availability="drain"), make_node("b", state="down")]
    decisions = schedule(nodes, replicas(2), [])
    assert decisions == [
        Pending("web.1", "no suitable node (2 nodes not available for new tasks)"),
        Pending("web.2", "no suitable node (2 nodes not available for new tasks)"),
    ]


def test_empty_cluster_leaves_tasks_pending():
    assert schedule([], replicas(1), []) == [Pending("web.1", "no suitable node")]


# --- constraints -------------------------------------------------------------------------------------


CONSTRAINT_NODES = [
    make_node(
        "id-a", role="manager", hostname="alpha", os="linux", arch="x86_64", labels={"zone": "a"},
        engine_labels={"disk": "ssd"},
    ),
    make_node("id-b", role="worker", hostname="beta", os="windows", arch="aarch64", labels={"zone": "b"}),
]


@pytest.mark.parametrize(
    ("constraint", "only_node"),
    [
        ("node.id==id-a", "id-a"),
        ("node.id!=id-a", "id-b"),
        ("node.hostname==beta", "id-b"),
        ("node.hostname != beta", "id-a"),
        ("node.role==manager", "id-a"),
        ("node.role!=manager", "id-b"),
        ("node.platform.os==windows", "id-b"),
        ("node.platform.os!=windows", "id-a"),
        ("node.platform.arch==x86_64", "id-a"),
        ("node.platform.arch!=x86_64", "id-b"),
        ("node.labels.zone==b", "id-b"),
        ("node.labels.zone!=b", "id-a"),
        ("engine.labels.disk==ssd", "id-a"),  # the labels `raftswarm-node --label` gave the node's daemon
        ("engine.labels.disk!=ssd", "id-b"),  # a node without the engine label reads it as ""
        ("ENGINE.LABELS.disk==SSD", "id-a"),
        ("node.role==MANAGER", "id-a"),  # values compare case-insensitively, as in Docker
        ("NODE.ROLE==worker", "id-b"),  # so do the fixed keys
    ],
)
def test_constraint_selects_matching_nodes_only(constraint, only_node):
    decisions = schedule(CONSTRAINT_NODES, replicas(6, constraints=[constraint]), [])
    assert placed(decisions) == {only_node: 6}


def test_all_constraints_must_hold():
    decisions = schedule(CONSTRAINT_NODES, replicas(2, constraints=["node.role==worker", "node.labels.zone==a"]), [])
    assert pending(decisions) and not placed(decisions)


def test_label_names_are_case_sensitive_and_missing_labels_are_empty():
    nodes = [make_node("n0", labels={"Zone": "a"}), make_node("n1")]
    assert not placed(schedule(nodes, replicas(1, constraints=["node.labels.zone==a"]), []))
    # A node without the label fails == but passes !=, as in SwarmKit.
    assert placed(schedule(nodes, replicas(2, constraints=["node.labels.zone!=a"]), [])) == {"n0": 1, "n1": 1}


def test_engine_labels_and_node_labels_are_separate_sets_of_names():
    nodes = [make_node("n0", labels={"disk": "ssd"}), make_node("n1", engine_labels={"disk": "ssd", "Rack": "r1"})]
    assert placed(schedule(nodes, replicas(2, constraints=["engine.labels.disk==ssd"]), [])) == {"n1": 2}
    assert placed(schedule(nodes, replicas(2, constraints=["node.labels.disk==ssd"]), [])) == {"n0": 2}
    assert not placed(schedule(nodes, replicas(1, constraints=["engine.labels.rack==r1"]), []))  # names keep their case


def test_constraint_that_fits_nowhere_counts_each_reason_most_frequent_first():
    nodes = [
        make_node("down", state="down", labels={"zone": "a"}),
        make_node("b1", labels={"zone": "b"}),
        make_node("b2", labels={"zone": "b"}),
    ]
    decisions = schedule(nodes, replicas(1, constraints=["node.labels.zone==a"]), [])
    assert decisions == [
        Pending(
            "web.1",
            "no suitable node (scheduling constraints not satisfied on 2 nodes; 1 node not available for new tasks)",
        )
    ]


# --- resources ---------------------------------------------------------------------------------------


GIB = 1 << 30


def test_reservations_never_overcommit_a_node():
    nodes = [make_node("n0", cpus=2_000_000_000, memory=4 * GIB), make_node("n1", cpus=1_000_000_000, memory=4 * GIB)]
    decisions = schedule(nodes, replicas(5, cpus=1_000_000_000, memory=GIB), [])
    assert placed(decisions) == {"n0": 2, "n1": 1}
    assert pending(decisions) == [
        Pending("web.4", "no suitable node (insufficient resources on 2 nodes)"),
        Pending("web.5", "no suitable node (insufficient resources on 2 nodes)"),
    ]


def test_running_tasks_reservations_count_against_the_node():
    nodes = [make_node("n0", memory=2 * GIB, cpus=8_000_000_000)]
    running = [make_task("db.1", "db", node_id="n0", memory=2 * GIB)]
    decisions = schedule(nodes, replicas(1, memory=GIB), running)
    assert decisions == [Pending("web.1", "no suitable node (insufficient resources on 1 node)")]


def test_node_without_reported_resources_is_unlimited():
    decisions = schedule([make_node("n0")], replicas(50, cpus=4_000_000_000, memory=64 * GIB), [])
    assert placed(decisions) == {"n0": 50}


# --- host-mode ports ---------------------------------------------------------------------------------


def test_host_port_conflict_is_avoided():
    nodes = [make_node("n0"), make_node("n1"), make_node("n2")]
    running = [make_task("other.1", "other", node_id="n0", host_ports=[8080])]
    decisions = schedule(nodes, replicas(3, host_ports=[8080]), running)
    assert placed(decisions) == {"n1": 1, "n2": 1}
    assert pending(decisions) == [Pending("web.3", "no suitable node (host-mode port already in use on 3 nodes)")]


def test_different_protocol_on_the_same_port_does_not_conflict():
    nodes = [make_node("n0")]
    running = [make_task("dns.1", "dns", node_id="n0")]
    running[0]["HostPorts"] = [{"Protocol": "udp", "PublishedPort": 53}]
    task = make_task("web.1")
    task["HostPorts"] = [{"Protocol": "tcp", "PublishedPort": 53}]
    assert schedule(nodes, [task], running) == [Assignment("web.1", "n0")]


# --- max replicas per node ---------------------------------------------------------------------------


def test_max_replicas_per_node_is_honoured():
    nodes = [make_node("n0"), make_node("n1")]
    running = [make_task("web.0", node_id="n0", max_replicas=2)]
    decisions = schedule(nodes, replicas(5, max_replicas=2), running)
    assert placed(decisions) == {"n0": 1, "n1": 2}
    assert {p.reason for p in pending(decisions)} == {"no suitable node (max replicas per node limit exceed)"}


def test_max_replicas_counts_only_the_same_service():
    nodes = [make_node("n0")]
    running = [make_task(f"other.{i}", "other", node_id="n0") for i in range(3)]
    assert placed(schedule(nodes, replicas(2, max_replicas=2), running)) == {"n0": 2}


# --- spread placement preferences --------------------------------------------------------------------


def test_spread_preference_splits_tasks_evenly_between_label_values_not_nodes():
    nodes = [make_node("a1", labels={"zone": "a"})] + [make_node(f"b{i}", labels={"zone": "b"}) for i in range(3)]
    decisions = schedule(nodes, replicas(12, spread=["node.labels.zone"]), [])
    counts = placed(decisions)
    assert counts["a1"] == 6
    assert counts == {"a1": 6, "b0": 2, "b1": 2, "b2": 2}


def test_spread_counts_tasks_already_running_in_each_zone():
    nodes = [make_node("a1", labels={"zone": "a"}), make_node("b1", labels={"zone": "b"})]
    running = [make_task(f"web.old{i}", node_id="a1") for i in range(4)]
    decisions = schedule(nodes, replicas(6, spread=["node.labels.zone"]), running)
    assert placed(decisions) == {"a1": 1, "b1": 5}


def test_nested_spread_preferences_spread_at_every_level():
    nodes = [
        make_node("a-r1-x", labels={"zone": "a", "rack": "r1"}),
        make_node("a-r1-y", labels={"zone": "a", "rack": "r1"}),
        make_node("a-r2-x", labels={"zone": "a", "rack": "r2"}),
        make_node("b-r3-x", labels={"zone": "b", "rack": "r3"}),
    ]
    decisions = schedule(nodes, replicas(8, spread=["node.labels.zone", "node.labels.rack"]), [])
    assert placed(decisions) == {"b-r3-x": 4, "a-r2-x": 2, "a-r1-x": 1, "a-r1-y": 1}


def test_full_zone_overflows_into_the_others():
    nodes = [make_node("a1", labels={"zone": "a"}, memory=GIB, cpus=10**9)] + [
        make_node(f"b{i}", labels={"zone": "b"}) for i in range(2)
    ]
    decisions = schedule(nodes, replicas(10, spread=["node.labels.zone"], memory=GIB), [])
    assert placed(decisions) == {"a1": 1, "b0": 5, "b1": 4}


def test_nodes_without_the_spread_label_form_their_own_group():
    nodes = [make_node("a1", labels={"zone": "a"}), make_node("u1"), make_node("u2")]
    decisions = schedule(nodes, replicas(4, spread=["node.labels.zone"]), [])
    assert placed(decisions) == {"a1": 2, "u1": 1, "u2": 1}


def test_unsupported_spread_descriptor_is_rejected():
    with pytest.raises(InvalidPlacement, match="node.labels"):
        schedule([make_node("n0")], replicas(1, spread=["node.hostname"]), [])


# --- preassigned tasks (global services) -------------------------------------------------------------


def test_preassigned_task_is_only_checked_against_its_node():
    nodes = [make_node("n0"), make_node("n1", availability="drain")]
    tasks = [make_task("g.n0", "g", node_id="n0"), make_task("g.n1", "g", node_id="n1")]
    assert schedule(nodes, tasks, []) == [
        Assignment("g.n0", "n0"),
        Pending("g.n1", "no suitable node (1 node not available for new tasks)"),
    ]


# --- constraint syntax -------------------------------------------------------------------------------


def test_parse_constraint_trims_spaces_and_keeps_the_label_case():
    assert parse_constraint("  node.labels.Zone != us-east-1 ") == Constraint("node.labels.Zone", "!=", "us-east-1")
    assert str(parse_constraint("node.role==manager")) == "node.role==manager"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("node.role", "expected one operator from ==, !="),
        ("node.role ~ manager", "expected one operator"),
        ("", "expected one operator"),
        ("==manager", "key '' is invalid"),
        ("no de==x", "key 'no de' is invalid"),
        ("1node==x", "key '1node' is invalid"),
        ("node.role==", "value '' is invalid"),
        ("node.role==a>b", "value 'a>b' is invalid"),
        ("node.labels.zone==a!=b", "value 'a!=b' is invalid"),
        ("node.lables.zone==a", "unsupported key 'node.lables.zone'"),
        ("engine.label.x==y", "unsupported key 'engine.label.x'"),
        ("node.labels.==y", "unsupported key 'node.labels.'"),
        ("engine.labels.==y", "unsupported key"),
    ],
)
def test_invalid_constraint_is_a_clear_error(text, complaint):
    with pytest.raises(InvalidPlacement, match="invalid constraint") as raised:
        parse_constraint(text)
    assert complaint in str(raised.value)


def test_invalid_constraint_fails_the_whole_call_before_any_decision():
    tasks = replicas(3) + replicas(1, "bad", constraints=["node.role=manager"])
    with pytest.raises(InvalidPlacement, match="node.role=manager"):
        schedule([make_node("n0")], tasks, [])


# --- properties --------------------------------------------------------------------------------------

LABEL_VALUES = ["a", "b", "c"]


@st.composite
def clusters(draw):
    node_count = draw(st.integers(0, 8))
    nodes = [
        make_node(
            f"n{i}",
            state=draw(st.sampled_from(["ready", "ready", "ready", "down"])),
            availability=draw(st.sampled_from(["active", "active", "pause", "drain"])),
            role=draw(st.sampled_from(["manager", "worker"])),
            labels={"zone": draw(st.sampled_from(LABEL_VALUES))} if draw(st.booleans()) else {},
            cpus=draw(st.sampled_from([None, 1_000_000_000, 4_000_000_000])),
            memory=draw(st.sampled_from([None, GIB, 8 * GIB])),
        )
        for i in range(node_count)
    ]
    constraint_pool = [
        "node.role==worker",
        "node.role!=worker",
        "node.labels.zone==a",
        "node.labels.zone!=b",
        "node.id!=n0",
    ]
    tasks = []
    for s in range(draw(st.integers(1, 3))):
        tasks += replicas(
            draw(st.integers(1, 12)),
            f"svc{s}",
            constraints=draw(st.lists(st.sampled_from(constraint_pool), max_size=2)),
            spread=["node.labels.zone"] if draw(st.booleans()) else None,
            max_replicas=draw(st.sampled_from([0, 0, 1, 3])),
            cpus=draw(st.sampled_from([0, 500_000_000, 1_000_000_000])),
            memory=draw(st.sampled_from([0, GIB // 2, GIB])),
            host_ports=draw(st.sampled_from([None, None, [80], [80, 443]])),
        )
    running = []
    if nodes:
        for i in range(draw(st.integers(0, 6))):
            target = draw(st.sampled_from(nodes))["ID"]
            running.append(
                make_task(
                    f"run{i}",
                    draw(st.sampled_from(["svc0", "svc1", "other"])),
                    node_id=target,
                    cpus=draw(st.sampled_from([0, 500_000_000])),
                    host_ports=draw(st.sampled_from([None, [80]])),
                )
            )
    return nodes, tasks, running


def _holds_constraint(node: dict, text: str) -> bool:
    c = parse_constraint(text)
    actual = (
        {
            "node.role": node["Spec"]["Role"],
            "node.id": node["ID"],
        }.get(c.key)
        if not c.key.startswith("node.labels.")
        else node["Spec"]["Labels"].get(c.key[12:], "")
    )
    return (actual.lower() == c.value.lower()) == (c.operator == "==")


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_every_assignment_passes_every_filter(cluster):
    nodes, tasks, running = cluster
    decisions = schedule(nodes, tasks, running)
    by_id = {n["ID"]: n for n in nodes}
    tasks_by_id = {t["ID"]: t for t in tasks}
    assert [d.task_id for d in decisions] == [t["ID"] for t in tasks]

    on_node: dict[str, list[dict]] = {n["ID"]: [] for n in nodes}
    for task in running:
        on_node[task["NodeID"]].append(task)
    for d in decisions:
        if isinstance(d, Assignment):
            task = tasks_by_id[d.task_id]
            node = by_id[d.node_id]
            assert node["Status"]["State"] == "ready" and node["Spec"]["Availability"] == "active"
            for text in task["Spec"]["Placement"].get("Constraints", []):
                assert _holds_constraint(node, text), (text, node)
            on_node[d.node_id].append(task)
        else:
            assert d.reason.startswith("no suitable node")

    for node_id, node_tasks in on_node.items():
        resources = by_id[node_id]["Description"].get("Resources")
        if resources:
            new = [t for t in node_tasks if not t["NodeID"]]
            old = [t for t in node_tasks if t["NodeID"]]
            if new:  # only placements made now must fit; the input may already overcommit
                for key in ("NanoCPUs", "MemoryBytes"):
                    used = sum(t["Spec"]["Resources"]["Reservations"][key] for t in old + new)
                    assert used <= resources[key] or all(t["Spec"]["Resources"]["Reservations"][key] == 0 for t in new)
        ports = [(p["Protocol"], p["PublishedPort"]) for t in node_tasks for p in t.get("HostPorts", [])]
        new_ports = [
            (p["Protocol"], p["PublishedPort"]) for t in node_tasks if not t["NodeID"] for p in t.get("HostPorts", [])
        ]
        for port in new_ports:
            assert ports.count(port) == 1, (node_id, port)
        per_service = Counter(t["ServiceID"] for t in node_tasks)
        for t in node_tasks:
            limit = t["Spec"]["Placement"].get("MaxReplicas", 0)
            if limit and not t["NodeID"]:
                assert per_service[t["ServiceID"]] <= limit


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 200))
def test_unconstrained_replicas_never_differ_by_more_than_one_between_nodes(node_count, task_count):
    nodes = [make_node(f"n{i:02d}") for i in range(node_count)]
    counts = placed(schedule(nodes, replicas(task_count), []))
    loads = [counts.get(n["ID"], 0) for n in nodes]
    assert max(loads) - min(loads) <= 1 and sum(loads) == task_count


# --- scale -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("services", [1, 100])
def test_ten_thousand_tasks_over_a_thousand_nodes_spread_evenly_by_zone_and_node(services):
    """At scale, in one call (how fast is for a benchmark, not a test: about 0.1 s here)."""
    nodes = [
        make_node(f"n{i:04d}", labels={"zone": "abc"[i % 3]}, cpus=64 * 10**9, memory=256 * GIB) for i in range(1000)
    ]
    tasks = []
    for s in range(services):
        tasks += replicas(
            10_000 // services,
            f"svc{s}",
            constraints=["node.role==worker"],
            spread=["node.labels.zone"],
            cpus=10**7,
            memory=1 << 20,
            max_replicas=50,
        )
    decisions = schedule(nodes, tasks, [])
    counts = placed(decisions)
    assert sum(counts.values()) == 10_000
    zone_of = {n["ID"]: n["Spec"]["Labels"]["zone"] for n in nodes}
    by_zone = Counter()
    for node_id, count in counts.items():
        by_zone[zone_of[node_id]] += count
    assert max(by_zone.values()) - min(by_zone.values()) <= services  # at most one per service per zone
    for zone in "abc":
        in_zone = [count for node_id, count in counts.items() if zone_of[node_id] == zone]
        assert max(in_zone) - min(in_zone) <= 1
