"""The allocator's decisions, as a swarm user notices them: networks get distinct subnets and VXLAN IDs,
services distinct virtual IPs and ingress ports, tasks distinct addresses; what is freed is handed out
again, and running out says so. Pure: no I/O."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftswarm.manager import allocator
from raftswarm.manager.allocator import (
    DYNAMIC_PORTS,
    AllocationError,
    PoolExhausted,
    addresses_in_use,
    allocate_endpoint,
    allocate_network,
    allocate_task_networks,
    network_in_use,
)
from raftswarm.objects.networks import VXLAN_ID_OPTION, ingress_network_spec, validate_network_spec


def add_network(networks: dict, spec: dict, **pool) -> dict:
    network = allocate_network(validate_network_spec(spec), networks, **pool)
    network["ID"] = f"net{len(networks)}-{spec['Name']}"
    networks[network["ID"]] = network
    return network


def service(sid: str, networks=(), ports=(), mode: str = "vip") -> dict:
    template = {"ContainerSpec": {"Image": "nginx"}, "Networks": [{"Target": n} for n in networks]}
    return {
        "ID": sid,
        "Spec": {"Name": f"svc-{sid}", "TaskTemplate": template, "EndpointSpec": {"Mode": mode, "Ports": list(ports)}},
    }


def add_service(networks: dict, services: dict, tasks: dict, svc: dict) -> dict:
    svc["Endpoint"] = allocate_endpoint(svc, networks, services, addresses_in_use(networks, services, tasks))
    services[svc["ID"]] = svc
    return svc


def add_task(networks: dict, services: dict, tasks: dict, tid: str, svc: dict) -> dict:
    task = {"ID": tid, "ServiceID": svc["ID"], "Spec": svc["Spec"]["TaskTemplate"], "Status": {"State": "running"}}
    book = addresses_in_use(networks, services, tasks)
    task["NetworksAttachments"] = allocate_task_networks(task, svc["Endpoint"], networks, book)
    tasks[tid] = task
    return task


def swarm() -> tuple[dict, dict, dict]:
    networks: dict = {}
    add_network(networks, ingress_network_spec())
    return networks, {}, {}


# -- networks ----------------------------------------------------------------------------------------------


def test_a_new_swarm_gets_docker_ingress_then_the_next_24s_and_vnis():
    networks, _, _ = swarm()
    ingress = next(iter(networks.values()))
    assert ingress["IPAMOptions"] == {
        "Driver": {"Name": "default"},
        "Configs": [{"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.1"}],
    }
    assert ingress["DriverState"] == {"Name": "overlay", "Options": {VXLAN_ID_OPTION: "4096"}}
    assert ingress["Spec"]["Ingress"] is True and ingress["Spec"]["Scope"] == "swarm"
    back = add_network(networks, {"Name": "back", "Labels": {"a": "b"}})
    assert back["IPAMOptions"]["Configs"] == [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]
    assert back["DriverState"]["Options"][VXLAN_ID_OPTION] == "4097"
    assert back["Spec"]["Labels"] == {"a": "b"} and back["Spec"]["DriverConfiguration"] == {"Name": "overlay"}


def test_an_automatic_subnet_skips_a_user_given_one():
    networks, _, _ = swarm()
    add_network(networks, {"Name": "given", "IPAM": {"Config": [{"Subnet": "10.0.1.0/25", "Gateway": "10.0.1.100"}]}})
    auto = add_network(networks, {"Name": "auto"})
    assert auto["IPAMOptions"]["Configs"][0]["Subnet"] == "10.0.2.0/24"
    assert networks["net1-given"]["IPAMOptions"]["Configs"][0]["Gateway"] == "10.0.1.100"


def test_an_overlapping_user_subnet_is_refused_naming_the_other_network():
    networks, _, _ = swarm()
    with pytest.raises(AllocationError) as caught:
        add_network(networks, {"Name": "clash", "IPAM": {"Config": [{"Subnet": "10.0.0.128/25"}]}})
    assert str(caught.value) == (
        "subnet 10.0.0.128/25 overlaps with network ingress (10.0.0.0/24); pick another subnet or leave Subnet"
        " out to get a free one"
    )
    assert len(networks) == 1


def test_the_subnet_pool_running_out_says_so_and_a_removed_network_frees_its_subnet():
    networks: dict = {}
    pool = {"pool": ipaddress.IPv4Network("10.9.0.0/22")}
    for name in "abcd":
        add_network(networks, {"Name": name}, **pool)
    with pytest.raises(PoolExhausted, match="could not find an available, non-overlapping /24 subnet"):
        add_network(networks, {"Name": "e"}, **pool)
    del networks["net1-b"]
    assert add_network(networks, {"Name": "e"}, **pool)["IPAMOptions"]["Configs"][0]["Subnet"] == "10.9.1.0/24"


def test_vxlan_ids_running_out_says_so(monkeypatch):
    monkeypatch.setattr(allocator, "LAST_VXLAN_ID", 4097)
    networks, _, _ = swarm()
    add_network(networks, {"Name": "a"})
    with pytest.raises(PoolExhausted, match="every VXLAN ID from 4096 to 4097 is in use"):
        add_network(networks, {"Name": "b"})


def test_a_second_ingress_network_and_a_taken_name_are_refused():
    networks, _, _ = swarm()
    with pytest.raises(AllocationError, match="ingress network .* is already present"):
        add_network(networks, {"Name": "other", "Ingress": True})
    with pytest.raises(AllocationError, match="network with name ingress already exists"):
        add_network(networks, {"Name": "ingress"})


# -- services and tasks ------------------------------------------------------------------------------------


def test_a_service_on_no_network_publishing_nothing_has_an_empty_endpoint_as_in_docker_swarm():
    """SwarmKit's allocator never takes such a service up: Docker swarm shows `"Endpoint": {"Spec": {}}` though
    its EndpointSpec says vip (conformance: `service inspect job`). On a network, or publishing, it gets one."""
    networks, services, tasks = swarm()
    back = add_network(networks, {"Name": "back"})
    assert add_service(networks, services, tasks, service("plain"))["Endpoint"] == {"Spec": {}}
    assert add_service(networks, services, tasks, service("host", ports=[{"TargetPort": 80, "PublishedPort": 81, "PublishMode": "host"}]))["Endpoint"]["Spec"]["Mode"] == "vip"
    on_back = add_service(networks, services, tasks, service("back", networks=[back["ID"]]))["Endpoint"]
    assert on_back["Spec"] == {"Mode": "vip", "Ports": []} and len(on_back["VirtualIPs"]) == 1
    # Leaving its last network frees its address and empties its endpoint.
    left = {**services["back"], "Spec": service("back")["Spec"]}
    assert allocate_endpoint(left, networks, services, addresses_in_use(networks, services, tasks)) == {"Spec": {}}


def test_a_service_gets_an_ingress_vip_first_then_one_per_network_and_a_dynamic_port():
    networks, services, tasks = swarm()
    add_network(networks, {"Name": "back"})
    svc = add_service(networks, services, tasks, service("s1", ["back"], [{"TargetPort": 80, "Name": "http"}]))
    assert svc["Endpoint"] == {
        "Spec": {"Mode": "vip", "Ports": [{"TargetPort": 80, "Name": "http"}]},
        "Ports": [
            {"Name": "http", "Protocol": "tcp", "TargetPort": 80, "PublishedPort": 30000, "PublishMode": "ingress"}
        ],
        "VirtualIPs": [
            {"NetworkID": "net0-ingress", "Addr": "10.0.0.2/24"},
            {"NetworkID": "net1-back", "Addr": "10.0.1.2/24"},
        ],
    }
    task = add_task(networks, services, tasks, "t1", svc)
    assert [(a["Network"]["ID"], a["Addresses"]) for a in task["NetworksAttachments"]] == [
        ("net0-ingress", ["10.0.0.3/24"]),
        ("net1-back", ["10.0.1.3/24"]),
    ]
    assert task["NetworksAttachments"][1]["Network"]["Spec"]["Name"] == "back"


def test_dnsrr_gets_no_virtual_ip_but_its_tasks_get_addresses():
    networks, services, tasks = swarm()
    add_network(networks, {"Name": "back"})
    svc = add_service(networks, services, tasks, service("s1", ["back"], mode="dnsrr"))
    assert "VirtualIPs" not in svc["Endpoint"]
    task = add_task(networks, services, tasks, "t1", svc)
    assert task["NetworksAttachments"][0]["Addresses"] == ["10.0.1.2/24"]


def test_a_requested_ingress_port_in_use_is_refused_naming_the_service():
    networks, services, tasks = swarm()
    add_service(networks, services, tasks, service("s1", ports=[{"TargetPort": 80, "PublishedPort": 8080}]))
    with pytest.raises(AllocationError) as caught:
        add_service(networks, services, tasks, service("s2", ports=[{"TargetPort": 81, "PublishedPort": 8080}]))
    assert str(caught.value) == "port '8080' is already in use by service 'svc-s1' (s1) as an ingress port"
    udp = add_service(
        networks, services, tasks, service("s3", ports=[{"TargetPort": 81, "PublishedPort": 8080, "Protocol": "udp"}])
    )
    assert udp["Endpoint"]["Ports"][0]["PublishedPort"] == 8080


def test_host_mode_ports_are_kept_as_given_and_only_clash_with_ingress():
    networks, services, tasks = swarm()
    host = {"TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}
    first = add_service(networks, services, tasks, service("s1", ports=[host]))
    add_service(networks, services, tasks, service("s2", ports=[dict(host)]))
    assert first["Endpoint"]["Ports"] == [{"Protocol": "tcp", **host}]
    assert "VirtualIPs" not in first["Endpoint"]  # no networks, no ingress ports
    with pytest.raises(AllocationError, match="as a host-published port"):
        add_service(networks, services, tasks, service("s3", ports=[{"TargetPort": 80, "PublishedPort": 8080}]))


def test_dynamic_ports_running_out_says_so():
    networks, services, tasks = swarm()
    hog = service("hog", ports=[{"TargetPort": 1, "PublishedPort": p} for p in DYNAMIC_PORTS])
    add_service(networks, services, tasks, hog)
    with pytest.raises(PoolExhausted, match="no dynamic tcp port left in 30000-32767"):
        add_service(networks, services, tasks, service("s2", ports=[{"TargetPort": 80}]))


def test_an_update_keeps_its_addresses_and_ports_and_releases_networks_it_left():
    networks, services, tasks = swarm()
    for name in ("a", "b", "c"):
        add_network(networks, {"Name": name})
    svc = add_service(networks, services, tasks, service("s1", ["a", "b"], [{"TargetPort": 80}]))
    add_service(networks, services, tasks, service("s0", ["a", "b", "c"], [{"TargetPort": 81}]))
    before = {vip["NetworkID"]: vip["Addr"] for vip in svc["Endpoint"]["VirtualIPs"]}
    svc["Spec"] = service("s1", ["b", "c"], [{"TargetPort": 80}, {"TargetPort": 443}])["Spec"]
    add_service(networks, services, tasks, svc)
    after = {vip["NetworkID"]: vip["Addr"] for vip in svc["Endpoint"]["VirtualIPs"]}
    assert list(after) == ["net0-ingress", "net2-b", "net3-c"]
    assert after["net0-ingress"] == before["net0-ingress"] and after["net2-b"] == before["net2-b"]
    assert [p["PublishedPort"] for p in svc["Endpoint"]["Ports"]] == [30000, 30002]
    assert "net1-a" not in after
    assert network_in_use("net1-a", services, tasks) == ["svc-s0"]


def test_the_same_published_port_twice_in_one_service_is_refused():
    networks, services, tasks = swarm()
    twice = [{"TargetPort": 80, "PublishedPort": 8080}, {"TargetPort": 81, "PublishedPort": 8080}]
    with pytest.raises(AllocationError, match="duplicate published ports provided: 8080/tcp"):
        add_service(networks, services, tasks, service("s1", ports=twice))


def test_a_service_cannot_name_the_ingress_network_or_an_unknown_one():
    networks, services, tasks = swarm()
    with pytest.raises(AllocationError, match='explicitly attached to the ingress network "ingress"'):
        add_service(networks, services, tasks, service("s1", ["ingress"]))
    with pytest.raises(AllocationError, match="network nope not found") as caught:
        add_service(networks, services, tasks, service("s1", ["nope"]))
    assert caught.value.status == 404


def test_a_full_network_says_so_and_a_removed_task_frees_its_address():
    networks, services, tasks = swarm()
    add_network(networks, {"Name": "tiny", "IPAM": {"Config": [{"Subnet": "192.168.5.0/29"}]}})
    svc = add_service(networks, services, tasks, service("s1", ["tiny"], mode="dnsrr"))
    given = [
        add_task(networks, services, tasks, f"t{i}", svc)["NetworksAttachments"][0]["Addresses"][0] for i in range(5)
    ]
    assert given == [f"192.168.5.{host}/29" for host in range(2, 7)]
    with pytest.raises(PoolExhausted, match=r"no available addresses on network tiny \(192.168.5.0/29\)"):
        add_task(networks, services, tasks, "t5", svc)
    del tasks["t2"]
    assert add_task(networks, services, tasks, "t5", svc)["NetworksAttachments"][0]["Addresses"] == ["192.168.5.4/29"]


def test_a_book_that_found_a_network_full_fails_the_next_requests_at_once(monkeypatch):
    # A reconciler pass asks once per node and per task: with a full subnet, scanning it again each time made
    # 1,000 nodes on a /24 ingress network cost the leader 4x its CPU (`bench schedule --scenario scale`).
    networks, services, tasks = swarm()
    tiny = add_network(networks, {"Name": "tiny", "IPAM": {"Config": [{"Subnet": "192.168.5.0/29"}]}})
    svc = add_service(networks, services, tasks, service("s1", ["tiny"], mode="dnsrr"))
    for i in range(5):
        add_task(networks, services, tasks, f"t{i}", svc)
    book = addresses_in_use(networks, services, tasks)
    scans = Counter()
    real = allocator._addresses
    monkeypatch.setattr(allocator, "_addresses", lambda span: scans.update([str(span)]) or real(span))
    task = {"ID": "t9", "ServiceID": "s1", "Spec": svc["Spec"]["TaskTemplate"], "Status": {"State": "pending"}}
    failures = []
    for _ in range(3):
        with pytest.raises(PoolExhausted, match="no available addresses on network tiny") as caught:
            allocate_task_networks(task, svc["Endpoint"], networks, book)
        failures.append(caught.value)
    assert scans == {"192.168.5.0/29": 1} and failures[0] is failures[1] is failures[2]
    assert tiny["ID"] in book.exhausted
    # A fresh book (the next pass, which may find an address freed) looks again.
    del tasks["t2"]
    fresh = addresses_in_use(networks, services, tasks)
    assert allocate_task_networks(task, svc["Endpoint"], networks, fresh)[0]["Addresses"] == ["192.168.5.4/29"]


def test_an_ended_tasks_address_is_reused_only_when_nothing_else_is_free():
    networks, services, tasks = swarm()
    add_network(networks, {"Name": "tiny", "IPAM": {"Config": [{"Subnet": "192.168.5.0/29"}]}})
    svc = add_service(networks, services, tasks, service("s1", ["tiny"], mode="dnsrr"))
    add_task(networks, services, tasks, "t0", svc)
    tasks["t0"]["Status"]["State"] = "failed"  # still in the task history
    fresh = [
        add_task(networks, services, tasks, f"t{i}", svc)["NetworksAttachments"][0]["Addresses"][0] for i in range(1, 5)
    ]
    assert "192.168.5.2/29" not in fresh
    last = add_task(networks, services, tasks, "t5", svc)
    assert last["NetworksAttachments"][0]["Addresses"] == ["192.168.5.2/29"]


def test_a_task_shutting_down_keeps_its_address_until_it_has_ended():
    networks, services, tasks = swarm()
    add_network(networks, {"Name": "back"})
    svc = add_service(networks, services, tasks, service("s1", ["back"], mode="dnsrr"))
    old = add_task(networks, services, tasks, "t0", svc)
    old["DesiredState"] = "shutdown"
    new = add_task(networks, services, tasks, "t1", svc)
    assert new["NetworksAttachments"][0]["Addresses"] != old["NetworksAttachments"][0]["Addresses"]
    del services["s1"]  # the service is being removed; its last task has not ended yet
    assert network_in_use("net1-back", services, tasks) == ["s1"]


def test_network_in_use_names_services_by_spec_and_nothing_once_they_are_gone():
    networks, services, tasks = swarm()
    add_network(networks, {"Name": "back"})
    add_service(networks, services, tasks, service("s2", ["net1-back"]))
    add_service(networks, services, tasks, service("s1", ["back"]))
    assert network_in_use("net1-back", services, tasks) == ["svc-s1", "svc-s2"]
    assert network_in_use("net0-ingress", services, tasks) == []
    assert network_in_use("net1-back", {}, {}) == []


# -- random histories --------------------------------------------------------------------------------------

POOL = {"pool": ipaddress.IPv4Network("10.0.0.0/21")}  # 8 subnets, so exhaustion happens in random runs
GIVEN_SUBNETS = [None, None, "10.0.2.0/24", "10.0.4.0/23", "10.0.7.128/29"]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("network"), st.sampled_from(GIVEN_SUBNETS)),
        st.tuples(st.just("rm-network"), st.integers(0, 20)),
        st.tuples(
            st.just("service"),
            st.lists(st.integers(0, 20), max_size=3),
            st.lists(st.sampled_from([0, 0, 30001, 8080]), max_size=2, unique_by=lambda p: p or object()),
            st.sampled_from(["vip", "dnsrr"]),
        ),
        st.tuples(st.just("update"), st.integers(0, 20), st.lists(st.integers(0, 20), max_size=3)),
        st.tuples(st.just("rm-service"), st.integers(0, 20)),
        st.tuples(st.just("task"), st.integers(0, 20)),
        st.tuples(st.just("end-task"), st.integers(0, 50)),
        st.tuples(st.just("reap-task"), st.integers(0, 50)),
    ),
    max_size=40,
)


def pick(view: dict, index: int):
    keys = sorted(view)
    return view[keys[index % len(keys)]] if keys else None


def check_invariants(networks: dict, services: dict, tasks: dict) -> None:
    subnets = [ipaddress.IPv4Network(n["IPAMOptions"]["Configs"][0]["Subnet"]) for n in networks.values()]
    assert all(not a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])
    vnis = Counter(n["DriverState"]["Options"][VXLAN_ID_OPTION] for n in networks.values())
    assert all(count == 1 for count in vnis.values())
    held: Counter = Counter()
    for net in networks.values():
        held[(net["ID"], net["IPAMOptions"]["Configs"][0]["Gateway"])] += 1
    for svc in services.values():
        for vip in svc["Endpoint"].get("VirtualIPs", ()):
            held[(vip["NetworkID"], vip["Addr"].split("/")[0])] += 1
    for task in tasks.values():
        if task["Status"]["State"] == "running":
            for a in task["NetworksAttachments"]:
                held[(a["Network"]["ID"], a["Addresses"][0].split("/")[0])] += 1
    assert all(count == 1 for count in held.values()), held.most_common(3)
    for network_id, addr in held:
        subnet = ipaddress.IPv4Network(networks[network_id]["IPAMOptions"]["Configs"][0]["Subnet"])
        address = ipaddress.IPv4Address(addr)
        assert address in subnet and address not in (subnet.network_address, subnet.broadcast_address)
    ports = Counter(
        (p["PublishedPort"], p["Protocol"])
        for s in services.values()
        for p in s["Endpoint"].get("Ports", ())
        if p["PublishMode"] == "ingress"
    )
    assert all(count == 1 for count in ports.values())
    assert all(p[0] in DYNAMIC_PORTS or p[0] in (8080, 30001) for p in ports)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_random_histories_never_hand_out_anything_twice_among_live_objects(ops):
    networks: dict = {}
    services: dict = {}
    tasks: dict = {}
    add_network(networks, ingress_network_spec(), **POOL)
    for counter, op in enumerate(ops):
        kind = op[0]
        user_networks = sorted(n for n in networks if not networks[n]["Spec"]["Ingress"])
        try:
            if kind == "network":
                spec = {"Name": f"n{counter}"}
                if op[1]:
                    spec["IPAM"] = {"Config": [{"Subnet": op[1]}]}
                network = allocate_network(validate_network_spec(spec), networks, **POOL)
                network["ID"] = f"id{counter}"
                networks[network["ID"]] = network
            elif kind == "rm-network" and user_networks:
                network_id = user_networks[op[1] % len(user_networks)]
                if not network_in_use(network_id, services, tasks):
                    del networks[network_id]
            elif kind == "service":
                chosen = [user_networks[i % len(user_networks)] for i in op[1]] if user_networks else []
                ports = [{"TargetPort": 80 + i, "PublishedPort": p} for i, p in enumerate(op[2])]
                mode = op[3]
                if mode == "dnsrr":
                    ports = [{**p, "PublishMode": "host"} for p in ports]
                svc = service(f"s{counter}", chosen, ports, mode)
                add_service(networks, services, tasks, svc)
            elif kind == "update" and services:
                svc = pick(services, op[1])
                chosen = [user_networks[i % len(user_networks)] for i in op[2]] if user_networks else []
                svc["Spec"]["TaskTemplate"]["Networks"] = [{"Target": n} for n in chosen]
                add_service(networks, services, tasks, svc)
            elif kind == "rm-service" and services:
                svc = pick(services, op[1])
                del services[svc["ID"]]
                for tid in [t for t, task in tasks.items() if task["ServiceID"] == svc["ID"]]:
                    del tasks[tid]
            elif kind == "task" and services:
                svc = pick(services, op[1])
                add_task(networks, services, tasks, f"t{counter}", svc)
            elif kind == "end-task" and tasks:
                pick(tasks, op[1])["Status"]["State"] = "complete"
            elif kind == "reap-task" and tasks:
                del tasks[pick(tasks, op[1])["ID"]]
        except PoolExhausted:
            pass
        except AllocationError as error:
            assert "overlaps" in str(error) or "already in use" in str(error), error
        check_invariants(networks, services, tasks)
