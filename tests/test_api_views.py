"""How the API shows stored objects as Docker shapes them."""

from raftswarm.api.swarm import node_view
from raftswarm.objects.stored import StoredObject


def manager(state: str, raft_id: int) -> StoredObject:
    data = {
        "ID": f"n{raft_id}",
        "Status": {"State": state},
        "ManagerStatus": {"Reachability": "reachable", "Addr": f"10.0.0.{raft_id}:2377", "RaftID": raft_id},
    }
    return StoredObject("nodes", f"n{raft_id}", 7, 1, data)


def test_a_manager_marked_down_is_unreachable_as_docker_shows_it_and_a_ready_one_reachable():
    down = node_view(manager("down", 2), leader_raft_id=1)["ManagerStatus"]
    assert down == {"Leader": False, "Reachability": "unreachable", "Addr": "10.0.0.2:2377"}
    leader = node_view(manager("ready", 1), leader_raft_id=1)["ManagerStatus"]
    assert leader == {"Leader": True, "Reachability": "reachable", "Addr": "10.0.0.1:2377"}
