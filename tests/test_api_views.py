"""How the API shows stored objects as Docker shapes them."""

import base64

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from raftswarm.api.swarm import node_tls_info, node_view
from raftswarm.ca.authority import CertificateAuthority
from raftswarm.ca.certificates import NodeRole
from raftswarm.manager.controlapi import ControlApi, new_cluster_object, new_node_object
from raftswarm.objects.stored import StoredObject


def manager(state: str, raft_id: int) -> StoredObject:
    data = {
        "ID": f"n{raft_id}",
        "Status": {"State": state},
        "ManagerStatus": {"Reachability": "reachable", "Addr": f"10.0.0.{raft_id}:2377", "RaftID": raft_id},
    }
    return StoredObject("nodes", f"n{raft_id}", 7, 1, data)


def test_a_manager_marked_down_is_unreachable_as_docker_shows_it_and_a_ready_one_reachable():
    down = node_view(manager("down", 2), leader_raft_id=1, tls=None)["ManagerStatus"]
    assert down == {"Leader": False, "Reachability": "unreachable", "Addr": "10.0.0.2:2377"}
    leader = node_view(manager("ready", 1), leader_raft_id=1, tls=None)["ManagerStatus"]
    assert leader == {"Leader": True, "Reachability": "reachable", "Addr": "10.0.0.1:2377"}


def swarm_of(ca: CertificateAuthority) -> dict:
    cluster = StoredObject("cluster", "cluster", 3, 1, new_cluster_object(ca, autolock=False))
    return ControlApi(store=None).swarm_view(cluster)  # a view of the given object: no store is read


def docker_tls_status(node: dict, swarm: dict) -> str:
    """The docker CLI's TLS STATUS column of `docker node ls` (cli/command/node/formatter.go)."""
    node_tls, swarm_tls = node["Description"].get("TLSInfo", {}), swarm.get("TLSInfo", {})
    if not any(node_tls.values()) or not any(swarm_tls.values()):
        return "Unknown"
    return "Ready" if node_tls == swarm_tls else "Needs Rotation"


def test_a_node_shows_only_dockers_node_fields_and_no_empty_status_message():
    stored = new_node_object("n1", NodeRole.WORKER, "10.0.0.2:2377", "w1")
    stored["Status"] = {"State": "ready", "Message": "", "Addr": "10.0.0.2"}
    stored["Attachments"] = [{"Network": {"ID": "ingress"}, "Addresses": ["10.0.0.3/24"]}]  # the allocator's
    view = node_view(StoredObject("nodes", "n1", 4, 1, stored), leader_raft_id=None, tls=None)
    assert "Attachments" not in view
    assert view["Status"] == {"State": "ready", "Addr": "10.0.0.2"}
    stored["Status"]["Message"] = "overlay: cannot reach the VXLAN port"
    said = node_view(StoredObject("nodes", "n1", 5, 1, stored), leader_raft_id=None, tls=None)
    assert said["Status"]["Message"] == "overlay: cannot reach the VXLAN port"


def test_a_node_lists_the_drivers_raftswarm_has_as_engine_plugins():
    plugins = new_node_object("n1", NodeRole.WORKER, "10.0.0.2:2377", "w1")["Description"]["Engine"]["Plugins"]
    assert plugins == [{"Type": "Network", "Name": "overlay"}, {"Type": "Volume", "Name": "local"}]


def test_the_swarm_shows_dockers_defaults_and_leaves_out_a_zero_force_rotate():
    swarm = swarm_of(CertificateAuthority.create())
    assert swarm["Spec"]["Raft"]["KeepOldSnapshots"] == 0 and swarm["Spec"]["Raft"]["LogEntriesForSlowFollowers"] == 500
    assert swarm["Spec"]["TaskDefaults"] == {}
    assert "ForceRotate" not in swarm["Spec"]["CAConfig"]
    assert (swarm["DefaultAddrPool"], swarm["SubnetSize"], swarm["DataPathPort"]) == (None, 24, 4789)


def test_a_signing_ca_key_given_in_a_spec_is_never_shown():
    ca = CertificateAuthority.create()
    data = new_cluster_object(ca, autolock=False)
    data["Spec"]["CAConfig"].update({"SigningCACert": "cert", "SigningCAKey": "secret key", "ForceRotate": 2})
    shown = ControlApi(store=None).swarm_view(StoredObject("cluster", "cluster", 3, 1, data))["Spec"]["CAConfig"]
    assert "SigningCAKey" not in shown and "SigningCACert" not in shown
    assert shown["ForceRotate"] == 2


def test_tls_info_names_the_root_and_its_subject_and_public_key_in_base64_der():
    ca = CertificateAuthority.create()
    tls = swarm_of(ca)["TLSInfo"]
    root = x509.load_pem_x509_certificate(tls["TrustRoot"].encode())
    assert root == ca.root.certificate
    assert base64.b64decode(tls["CertIssuerSubject"]) == root.subject.public_bytes()
    spki = root.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert base64.b64decode(tls["CertIssuerPublicKey"]) == spki


def node_of(swarm: dict) -> dict:
    stored = StoredObject("nodes", "n1", 2, 1, {"ID": "n1", "Description": {}, "Status": {"State": "ready"}})
    return node_view(stored, leader_raft_id=None, tls=node_tls_info(swarm))


def test_docker_node_ls_shows_nodes_ready_and_needing_rotation_until_a_root_rotation_ends():
    ca = CertificateAuthority.create()
    before = swarm_of(ca)
    assert docker_tls_status(node_of(before), before) == "Ready"
    # SwarmKit's rule: while rotating, the swarm's issuer is the new root and its TrustRoot still the old one.
    rotating = swarm_of(ca.begin_root_rotation())
    assert rotating["TLSInfo"]["TrustRoot"] == before["TLSInfo"]["TrustRoot"]
    assert rotating["TLSInfo"]["CertIssuerPublicKey"] != before["TLSInfo"]["CertIssuerPublicKey"]
    assert docker_tls_status(node_of(rotating), rotating) == "Needs Rotation"
    rotated = swarm_of(ca.begin_root_rotation().finish_root_rotation())
    assert rotated["TLSInfo"] != before["TLSInfo"]
    assert docker_tls_status(node_of(rotated), rotated) == "Ready"
