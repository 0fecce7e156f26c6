"""Network create bodies, as a user of `docker network create -d overlay` notices them: a bad one is refused
with a message naming the field (and holding dockerd's words where it has some), a good one is kept exactly
as sent, and `--opt encrypted` is refused with the reason instead of silently giving cleartext; and a stored
network as `docker network inspect` shows it. Pure: no I/O."""

from __future__ import annotations

import copy

import pytest

from raftswarm.errors import ControlError
from raftswarm.manager.networkapi import new_network
from raftswarm.objects.networks import (
    ingress_network_spec,
    network_resource,
    refuse_node_addresses,
    validate_network_spec,
)
from raftswarm.objects.validation import InvalidSpec


def full_spec() -> dict:
    return {
        "Name": "back_end-1.net",
        "Driver": "overlay",
        "Scope": "swarm",
        "Attachable": True,
        "Internal": False,
        "Labels": {"team": "shop"},
        "Options": {"com.docker.network.driver.mtu": "1400"},
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": "172.20.0.0/16", "IPRange": "172.20.5.0/24", "Gateway": "172.20.0.254"}],
        },
        "SomethingNewer": {"kept": True},
    }


def refusal(spec: object) -> str:
    with pytest.raises(InvalidSpec) as caught:
        validate_network_spec(spec)
    assert caught.value.status == 400
    return str(caught.value)


def with_config(**config: str) -> dict:
    return {"Name": "n", "IPAM": {"Config": [config]}}


def test_a_full_spec_is_kept_exactly_as_sent():
    spec = full_spec()
    checked = validate_network_spec(spec)
    assert checked == full_spec()
    assert checked is not spec


def test_the_smallest_spec_is_a_name():
    assert validate_network_spec({"Name": "backend"}) == {"Name": "backend"}


def test_the_ingress_network_docker_makes_at_init_is_valid():
    spec = ingress_network_spec()
    assert validate_network_spec(spec) == spec
    assert spec["Name"] == "ingress" and spec["Ingress"] is True and spec["Driver"] == "overlay"
    assert spec["Labels"] == {}


def test_invalid_spec_is_a_control_error_the_api_answers_400():
    with pytest.raises(ControlError):
        validate_network_spec({"Name": ""})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("backend", 'the network spec must be a JSON object, got "backend"'),
        ({}, 'Name: required; name the network, e.g. "backend"'),
        ({"Name": ""}, "Name: name must be provided"),
        ({"Name": 7}, "Name: must be a string, got 7"),
        ({"Name": "-bad"}, 'Name: invalid name "-bad": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'),
        ({"Name": "a b"}, 'Name: invalid name "a b": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'),
        ({"Name": "bridge"}, "Name: bridge is a pre-defined network and cannot be created"),
        ({"Name": "x" * 256}, "Name: must be 255 characters or fewer, got 256"),
        (
            {"Name": "n", "Driver": "bridge"},
            (
                'Driver: network driver "bridge" is not supported in swarm mode; swarm networks use the "overlay"'
                " driver (leave Driver out to get it)"
            ),
        ),
        ({"Name": "n", "Scope": "local"}, 'Scope: a network created through the swarm has scope "swarm", got "local"'),
        ({"Name": "n", "Attachable": "yes"}, 'Attachable: must be true or false, got "yes"'),
        (
            {"Name": "n", "Ingress": True, "Attachable": True},
            "Attachable: ingress network cannot be attachable; the routing mesh is for services only",
        ),
        (
            {"Name": "n", "EnableIPv6": True},
            "EnableIPv6: IPv6 overlay networks are not supported by raftswarm; leave EnableIPv6 out",
        ),
        ({"Name": "n", "Labels": {"a": 1}}, "Labels.a: must be a string, got 1"),
        ({"Name": "n", "Options": {"mtu": 1400}}, "Options.mtu: must be a string, got 1400"),
        (
            {"Name": "n", "Options": {"com.docker.network.driver.overlay.vxlanid_list": "5000"}},
            (
                "Options.com.docker.network.driver.overlay.vxlanid_list: the VXLAN ID is chosen by the swarm, so no two"
                " networks share one; leave this option out"
            ),
        ),
        (
            {"Name": "n", "IPAM": {"Driver": "infoblox"}},
            'IPAM.Driver: IPAM driver "infoblox" is not supported; raftswarm allocates addresses itself ("default")',
        ),
        (
            {"Name": "n", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}, {"Subnet": "10.2.0.0/24"}]}},
            "IPAM.Config: raftswarm gives a network one IPv4 subnet; got 2 configs",
        ),
        ({"Name": "n", "IPAM": {"Config": "10.1.0.0/24"}}, 'IPAM.Config: must be a JSON array, got "10.1.0.0/24"'),
        (
            with_config(Subnet="10.1.0.0"),
            (
                "IPAM.Config[0].Subnet: Invalid subnet 10.1.0.0 : invalid CIDR address: 10.1.0.0; give the prefix"
                " length too, e.g. 10.1.0.0/24"
            ),
        ),
        (
            with_config(Subnet="10.1.0.300/24"),
            (
                "IPAM.Config[0].Subnet: Invalid subnet 10.1.0.300/24 : invalid CIDR address: 10.1.0.300/24; expected"
                " IPv4 CIDR notation such as 10.0.9.0/24"
            ),
        ),
        (
            with_config(Subnet="10.98.0.0/33"),
            (
                "IPAM.Config[0].Subnet: Invalid subnet 10.98.0.0/33 : invalid CIDR address: 10.98.0.0/33; expected"
                " IPv4 CIDR notation such as 10.0.9.0/24"
            ),
        ),
        (
            # a netmask: Python's ipaddress reads it, Go's net.ParseCIDR (dockerd's) does not
            with_config(Subnet="10.1.0.0/255.255.255.0"),
            (
                "IPAM.Config[0].Subnet: Invalid subnet 10.1.0.0/255.255.255.0 : invalid CIDR address:"
                " 10.1.0.0/255.255.255.0; expected IPv4 CIDR notation such as 10.0.9.0/24"
            ),
        ),
        (
            with_config(Subnet="10.1.0.0/24", IPRange="10.1.0.0/x"),
            (
                "IPAM.Config[0].IPRange: ipam configuration: invalid range 10.1.0.0/x; expected IPv4 CIDR notation"
                " such as 10.0.9.0/24"
            ),
        ),
        (
            with_config(Subnet="10.1.0.5/24"),
            "IPAM.Config[0].Subnet: invalid subnet 10.1.0.5/24: it should be 10.1.0.0/24",
        ),
        (
            with_config(Subnet="fd00::/64"),
            "IPAM.Config[0].Subnet: fd00::/64 is an IPv6 subnet; raftswarm overlay networks are IPv4 only",
        ),
        (
            with_config(Subnet="10.1.0.0/30"),
            "IPAM.Config[0].Subnet: 10.1.0.0/30 is a /30; an overlay subnet must be from /8 to /29",
        ),
        (
            with_config(Subnet="8.8.8.0/24"),
            (
                "IPAM.Config[0].Subnet: 8.8.8.0/24 is not a private range; use one inside 10.0.0.0/8, 172.16.0.0/12 or"
                " 192.168.0.0/16 so the overlay never shadows real hosts"
            ),
        ),
        (
            with_config(Subnet="172.0.0.0/8"),
            (
                "IPAM.Config[0].Subnet: 172.0.0.0/8 is not a private range; use one inside 10.0.0.0/8, 172.16.0.0/12 or"
                " 192.168.0.0/16 so the overlay never shadows real hosts"
            ),
        ),
        (
            with_config(Subnet="10.1.0.0/24", Gateway="10.2.0.1"),
            "IPAM.Config[0].Gateway: gateway 10.2.0.1 is not in subnet 10.1.0.0/24",
        ),
        (
            with_config(Subnet="10.1.0.0/24", Gateway="10.1.0.255"),
            "IPAM.Config[0].Gateway: gateway 10.1.0.255 is the broadcast address of 10.1.0.0/24; pick a host address",
        ),
        (
            with_config(Subnet="10.1.0.0/24", Gateway="10.1.0.0"),
            "IPAM.Config[0].Gateway: gateway 10.1.0.0 is the network address of 10.1.0.0/24; pick a host address",
        ),
        (
            with_config(Subnet="10.1.0.0/24", Gateway="gw"),
            'IPAM.Config[0].Gateway: invalid gateway address "gw": expected e.g. 10.0.9.1',
        ),
        (
            with_config(Subnet="10.1.0.0/24", IPRange="10.1.1.0/25"),
            "IPAM.Config[0].IPRange: IP range 10.1.1.0/25 is not inside subnet 10.1.0.0/24",
        ),
        (
            with_config(Gateway="10.1.0.1"),
            "IPAM.Config[0].Gateway: Gateway needs a Subnet to belong to; give Subnet too",
        ),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(spec, message):
    assert refusal(spec) == message


@pytest.mark.parametrize("value", ["", "true", "false"])
def test_encrypted_overlay_is_refused_with_the_reason_never_downgraded_to_cleartext(value):
    # `docker network create --opt encrypted` sends the key with an empty value; any value asks for IPsec.
    message = refusal({"Name": "secure", "Options": {"encrypted": value}})
    assert message.startswith("Options.encrypted: encrypted overlay networks are not supported")
    assert "no IPsec ESP" in message
    assert "never sends the traffic of a network asked to be encrypted in cleartext" in message


@pytest.mark.parametrize("subnet", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "192.168.7.8/29"])
def test_every_private_range_is_accepted_from_8_to_29(subnet):
    spec = with_config(Subnet=subnet)
    assert validate_network_spec(spec) == spec


def test_refusing_changes_nothing_in_the_callers_spec():
    spec = {"Name": "n", "Options": {"encrypted": ""}}
    before = copy.deepcopy(spec)
    refusal(spec)
    assert spec == before


def test_keys_match_dockers_fields_in_any_case_as_go_decoding_does():
    spec = {"name": "n", "ipam": {"config": [{"subnet": "10.9.0.0/24", "GATEWAY": "10.9.0.1"}]}, "attachable": True}
    assert validate_network_spec(spec) == {
        "Name": "n",
        "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]},
        "Attachable": True,
    }


def node(hostname: str, addr: str, manager_addr: str | None = None) -> dict:
    data = {"ID": f"id-{hostname}", "Description": {"Hostname": hostname}, "Status": {"Addr": addr}}
    if manager_addr:
        data["ManagerStatus"] = {"Addr": manager_addr}
    return data


NODES = [
    node("m1", "10.211.5.2", "10.211.5.2:2377"),
    node("w1", "10.211.5.3"),
    node("v6", "fd00::3"),
    node("dns", "w2.lan"),
]


@pytest.mark.parametrize(
    ("subnet", "holder"),
    [("10.211.5.0/24", "m1 (10.211.5.2)"), ("10.211.0.0/16", "m1 (10.211.5.2)"), ("10.211.5.0/29", "m1 (10.211.5.2)")],
)
def test_a_subnet_holding_a_nodes_address_is_refused_naming_the_node(subnet, holder):
    with pytest.raises(InvalidSpec) as caught:
        refuse_node_addresses(validate_network_spec(with_config(Subnet=subnet)), NODES)
    assert str(caught.value) == (
        f"IPAM.Config[0].Subnet: {subnet} overlaps the network of node {holder}: the overlay would take over that"
        " node's own traffic; pick a subnet that holds no node's address"
    )


def test_a_manager_is_found_by_its_manager_address_too():
    manager = {"ID": "m2", "Status": {"Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "192.168.9.4:2377"}}
    with pytest.raises(InvalidSpec, match=r"node m2 \(192.168.9.4\)"):
        refuse_node_addresses(validate_network_spec(with_config(Subnet="192.168.9.0/24")), [manager])


@pytest.mark.parametrize(
    "spec", [with_config(Subnet="10.211.6.0/24"), with_config(Subnet="10.211.5.8/29"), {"Name": "auto"}]
)
def test_a_subnet_beside_the_nodes_addresses_or_none_is_accepted(spec):
    refuse_node_addresses(validate_network_spec(spec), NODES)


def test_inspect_shows_the_peers_of_a_network_and_omits_the_key_when_there_are_none_as_dockerd():
    network = new_network(validate_network_spec({"Name": "front"}), {})
    peers = [{"Name": "node-a", "IP": "10.211.5.2"}, {"Name": "node-b", "IP": "10.211.5.3"}]
    shown = network_resource(network, peers)
    assert shown["Peers"] == peers
    assert list(shown)[-1] == "Peers"  # where dockerd's NetworkResource has it, after Labels
    assert "Peers" not in network_resource(network)
    assert "Peers" not in network_resource(network, [])
