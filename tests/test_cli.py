"""The `raftswarm` CLI against a fake node: each command makes the calls docker's makes (method, path, query,
body) and prints what docker prints; failures are one line on stderr and exit status 1."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fake_engine import (
    MANAGER2_ID,
    MANAGER_TOKEN,
    SELF_ID,
    TRUST_ROOT,
    UNLOCK_KEY,
    WORKER_ID,
    WORKER_TOKEN,
    FakeEngine,
    info,
    make_node,
    standard_swarm,
    swarm_object,
)

from raftswarm.cli.main import main

NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm '
    "and try again."
)

UNLOCK_TEXT = (
    "To unlock a swarm manager after it restarts, run the `raftswarm swarm unlock`\n"
    "command and provide the following key:\n\n"
    f"    {UNLOCK_KEY}\n\n"
    "Remember to store this key in a password manager, since without it you\n"
    "will not be able to restart the manager.\n"
)

# Settings from the environment of whoever runs the tests must not pick the daemon.
CLEAN_ENV = {"RAFTSWARM_HOST": None, "DOCKER_HOST": None}


@pytest.fixture
def engine(tmp_path: Path):
    with FakeEngine(tmp_path / "engine.sock") as fake:
        standard_swarm(fake)
        yield fake


def run(engine: FakeEngine, *args: str, input: str | None = None) -> Result:
    return CliRunner(env=CLEAN_ENV).invoke(main, ["-H", engine.url, *args], input=input)


def assert_fails(result: Result, message: str) -> None:
    """The command failed the docker way: exactly this line on stderr, exit status 1."""
    assert result.exit_code == 1, result.output
    assert result.stderr == message + "\n"


# -- swarm init / join / leave ----------------------------------------------------------------------------


def test_init_posts_an_init_request_and_prints_the_worker_join_command(engine):
    engine.reply("POST", "/swarm/init", SELF_ID)

    result = run(engine, "swarm", "init", "--advertise-addr", "10.0.0.1")

    assert result.exit_code == 0, result.output
    (init,) = engine.calls("POST", "/swarm/init")
    assert init.body == {
        "ListenAddr": "0.0.0.0:2377",
        "AdvertiseAddr": "10.0.0.1",
        "ForceNewCluster": False,
        "Spec": {},
        "AutoLockManagers": False,
    }
    assert result.stdout == (
        f"Swarm initialized: current node ({SELF_ID}) is now a manager.\n\n"
        "To add a worker to this swarm, run the following command:\n\n"
        f"    raftswarm swarm join --token {WORKER_TOKEN} 10.0.0.1:2377\n\n"
        "To add a manager to this swarm, run 'raftswarm swarm join-token manager' and follow the instructions.\n"
    )


def test_init_with_autolock_and_cert_expiry_sets_the_spec_and_prints_the_unlock_key(engine):
    engine.reply("POST", "/swarm/init", SELF_ID)

    result = run(
        engine,
        "swarm",
        "init",
        "--autolock",
        "--cert-expiry",
        "720h",
        "--listen-addr",
        "10.0.0.1",
        "--force-new-cluster",
    )

    assert result.exit_code == 0, result.output
    (init,) = engine.calls("POST", "/swarm/init")
    assert init.body["ListenAddr"] == "10.0.0.1:2377"  # docker's default port filled in
    assert init.body["AutoLockManagers"] is True
    assert init.body["ForceNewCluster"] is True
    assert init.body["Spec"] == {
        "EncryptionConfig": {"AutoLockManagers": True},
        "CAConfig": {"NodeCertExpiry": 720 * 3600 * 10**9},
    }
    assert result.stdout.endswith("follow the instructions.\n" + UNLOCK_TEXT)


def test_init_refused_by_the_node_prints_its_message_on_one_line(engine):
    message = 'This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and join another one.'
    engine.fail("POST", "/swarm/init", 503, message)

    result = run(engine, "swarm", "init")

    assert_fails(result, f"Error response from daemon: {message}")
    assert result.stdout == ""


def test_init_with_a_bad_duration_is_a_usage_error(engine):
    result = run(engine, "swarm", "init", "--cert-expiry", "90 days")

    assert result.exit_code == 2
    assert "invalid duration" in result.stderr
    assert engine.requests == []


@pytest.mark.parametrize(("control", "role"), [(False, "worker"), (True, "manager")])
def test_join_posts_the_token_and_says_which_role_the_node_got(engine, control, role):
    engine.reply("POST", "/swarm/join")
    engine.reply("GET", "/info", info(control=control))

    result = run(engine, "swarm", "join", "--token", WORKER_TOKEN, "--advertise-addr", "10.0.0.7", "10.0.0.1:2377")

    assert result.exit_code == 0, result.output
    (join,) = engine.calls("POST", "/swarm/join")
    assert join.body == {
        "ListenAddr": "0.0.0.0:2377",
        "AdvertiseAddr": "10.0.0.7",
        "RemoteAddrs": ["10.0.0.1:2377"],
        "JoinToken": WORKER_TOKEN,
    }
    assert result.stdout == f"This node joined a swarm as a {role}.\n"


def test_join_with_a_rotated_token_fails_with_the_nodes_message(engine):
    engine.fail(
        "POST", "/swarm/join", 400, "join token was rotated; ask a manager for `raftswarm swarm join-token worker`"
    )

    result = run(engine, "swarm", "join", "--token", WORKER_TOKEN, "10.0.0.1:2377")

    assert_fails(
        result,
        "Error response from daemon: join token was rotated; ask a manager for `raftswarm swarm join-token worker`",
    )


def test_join_without_a_token_is_a_usage_error(engine):
    result = run(engine, "swarm", "join", "10.0.0.1:2377")

    assert result.exit_code == 2
    assert "--token" in result.stderr
    assert engine.requests == []


@pytest.mark.parametrize(("flags", "force"), [((), "false"), (("--force",), "true")])
def test_leave_posts_force_and_confirms(engine, flags, force):
    engine.reply("POST", "/swarm/leave")

    result = run(engine, "swarm", "leave", *flags)

    assert result.exit_code == 0, result.output
    (leave,) = engine.calls("POST", "/swarm/leave")
    assert leave.query == {"force": force}
    assert result.stdout == "Node left the swarm.\n"


def test_leave_as_the_last_manager_is_refused_with_the_nodes_warning(engine):
    message = "You are attempting to leave the swarm on a node that is participating as a manager. Use `--force`."
    engine.fail("POST", "/swarm/leave", 503, message)

    assert_fails(run(engine, "swarm", "leave"), f"Error response from daemon: {message}")


# -- join-token / unlock / unlock-key -------------------------------------------------------------------------


def test_join_token_prints_the_join_command_for_the_role(engine):
    result = run(engine, "swarm", "join-token", "worker")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "To add a worker to this swarm, run the following command:\n\n"
        f"    raftswarm swarm join --token {WORKER_TOKEN} 10.0.0.1:2377\n\n"
    )
    assert engine.mutations() == []


def test_join_token_quiet_prints_only_the_token(engine):
    result = run(engine, "swarm", "join-token", "-q", "manager")

    assert result.stdout == MANAGER_TOKEN + "\n"


def test_join_token_rotate_updates_the_swarm_at_its_version_and_shows_the_new_token(engine):
    new_token = WORKER_TOKEN[:-5] + "zzzzz"
    engine.reply("GET", "/swarm", swarm_object(), swarm_object(worker_token=new_token))
    engine.reply("POST", "/swarm/update")

    result = run(engine, "swarm", "join-token", "--rotate", "worker")

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", "/swarm/update")
    assert update.query == {
        "version": "42",
        "rotateWorkerToken": "true",
        "rotateManagerToken": "false",
        "rotateManagerUnlockKey": "false",
    }
    assert update.body == swarm_object()["Spec"]
    assert result.stdout.startswith("Successfully rotated worker join token.\n\nTo add a worker")
    assert f"--token {new_token} 10.0.0.1:2377" in result.stdout


def test_join_token_for_an_unknown_role_is_a_usage_error(engine):
    result = run(engine, "swarm", "join-token", "admin")

    assert result.exit_code == 2
    assert engine.requests == []


def test_unlock_reads_the_key_from_stdin_and_posts_it(engine):
    engine.reply("GET", "/info", info(state="locked", control=False))
    engine.reply("POST", "/swarm/unlock")

    result = run(engine, "swarm", "unlock", input=UNLOCK_KEY + "\n")

    assert result.exit_code == 0, result.output
    (unlock,) = engine.calls("POST", "/swarm/unlock")
    assert unlock.body == {"UnlockKey": UNLOCK_KEY}


@pytest.mark.parametrize(
    ("state", "message"),
    [("active", "Error: swarm is not locked"), ("inactive", "Error: This node is not part of a swarm")],
)
def test_unlock_refuses_a_node_that_is_not_locked_without_asking_for_the_key(engine, state, message):
    engine.reply("GET", "/info", info(state=state))

    result = run(engine, "swarm", "unlock", input=UNLOCK_KEY + "\n")

    assert_fails(result, message)
    assert engine.mutations() == []


def test_unlock_with_a_wrong_key_prints_the_nodes_error(engine):
    engine.reply("GET", "/info", info(state="locked", control=False))
    engine.fail("POST", "/swarm/unlock", 400, "invalid key: the unlock key does not open this node's data key")

    result = run(engine, "swarm", "unlock", input="SWMKEY-1-wrong\n")

    assert_fails(result, "Error response from daemon: invalid key: the unlock key does not open this node's data key")


def test_unlock_key_prints_the_key_with_dockers_instructions(engine):
    result = run(engine, "swarm", "unlock-key")

    assert result.exit_code == 0, result.output
    assert result.stdout == UNLOCK_TEXT
    assert run(engine, "swarm", "unlock-key", "-q").stdout == UNLOCK_KEY + "\n"


def test_unlock_key_rotate_asks_the_swarm_to_rotate_it(engine):
    engine.reply("GET", "/swarm", swarm_object(autolock=True))
    engine.reply("POST", "/swarm/update")

    result = run(engine, "swarm", "unlock-key", "--rotate")

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", "/swarm/update")
    assert update.query["rotateManagerUnlockKey"] == "true"
    assert update.query["rotateWorkerToken"] == update.query["rotateManagerToken"] == "false"
    assert result.stdout == "Successfully rotated manager unlock key.\n" + UNLOCK_TEXT


def test_unlock_key_rotate_without_autolock_changes_nothing(engine):
    result = run(engine, "swarm", "unlock-key", "--rotate")

    assert_fails(result, "cannot rotate because autolock is not turned on")
    assert engine.mutations() == []


def test_unlock_key_when_none_is_set_says_so(engine):
    engine.reply("GET", "/swarm/unlockkey", {"UnlockKey": ""})

    assert_fails(run(engine, "swarm", "unlock-key"), "no unlock key is set")


# -- update / ca ------------------------------------------------------------------------------------------


def test_update_autolock_true_sends_the_whole_spec_and_prints_the_new_unlock_key(engine):
    engine.reply("POST", "/swarm/update")

    result = run(engine, "swarm", "update", "--autolock=true")

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", "/swarm/update")
    expected = swarm_object()["Spec"]
    expected["EncryptionConfig"]["AutoLockManagers"] = True
    assert update.body == expected
    assert update.query["version"] == "42"
    assert result.stdout == "Swarm updated.\n" + UNLOCK_TEXT


def test_update_autolock_false_and_cert_expiry(engine):
    engine.reply("GET", "/swarm", swarm_object(autolock=True))
    engine.reply("POST", "/swarm/update")

    result = run(engine, "swarm", "update", "--autolock=false", "--cert-expiry", "48h")

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", "/swarm/update")
    assert update.body["EncryptionConfig"] == {"AutoLockManagers": False}
    assert update.body["CAConfig"]["NodeCertExpiry"] == 48 * 3600 * 10**9
    assert result.stdout == "Swarm updated.\n"
    assert engine.calls("GET", "/swarm/unlockkey") == []


def test_update_losing_a_version_race_prints_the_conflict(engine):
    engine.fail("POST", "/swarm/update", 409, "update out of sequence")

    assert_fails(
        run(engine, "swarm", "update", "--task-history-limit", "10"),
        "Error response from daemon: update out of sequence",
    )


def test_update_without_flags_shows_help_and_changes_nothing(engine):
    result = run(engine, "swarm", "update")

    assert result.exit_code == 0
    assert "Update the swarm." in result.stdout
    assert engine.requests == []


def test_ca_prints_the_root_certificate(engine):
    result = run(engine, "swarm", "ca")

    assert result.exit_code == 0, result.output
    assert result.stdout == TRUST_ROOT.strip() + "\n"
    assert engine.mutations() == []


def test_ca_rotate_detached_bumps_force_rotate(engine):
    engine.reply("POST", "/swarm/update")

    result = run(engine, "swarm", "ca", "--rotate", "--detach")

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", "/swarm/update")
    assert update.body["CAConfig"] == {"NodeCertExpiry": 7_776_000_000_000_000, "ForceRotate": 1}
    assert result.stdout == ""


def test_ca_rotate_waits_for_the_rotation_then_prints_the_new_root(engine):
    new_root = "-----BEGIN CERTIFICATE-----\nMIIBnewroot\n-----END CERTIFICATE-----\n"
    rotated = swarm_object()
    rotated["TLSInfo"] = {**rotated["TLSInfo"], "TrustRoot": new_root}
    nodes = [make_node(SELF_ID, "node-1", "manager", 12, leader=True)]
    nodes[0]["Description"]["TLSInfo"] = rotated["TLSInfo"]
    engine.reply("GET", "/swarm", swarm_object(), swarm_object(rotating=True), rotated)
    engine.reply("GET", "/nodes", nodes)
    engine.reply("POST", "/swarm/update")

    result = run(engine, "swarm", "ca", "--rotate", "-q")

    assert result.exit_code == 0, result.output
    assert result.stdout == new_root.strip() + "\n"
    assert len(engine.calls("GET", "/swarm")) >= 3


def test_ca_cert_expiry_without_rotate_is_refused(engine):
    assert_fails(
        run(engine, "swarm", "ca", "--cert-expiry", "24h"),
        "`--cert-expiry` flag requires the `--rotate` flag to update the CA",
    )


# -- node ls ----------------------------------------------------------------------------------------------


def test_node_ls_prints_dockers_table_sorted_by_hostname_with_self_starred(engine):
    result = run(engine, "node", "ls")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION",
        f"{SELF_ID} *   node-1     Ready     Active         Leader           0.1.0",
        f"{MANAGER2_ID}     node-2     Ready     Active         Reachable        0.1.0",
        f"{WORKER_ID}     node-10    Ready     Active                          0.1.0",
    ]


def test_node_ls_quiet_prints_ids_only_without_asking_for_info(engine):
    result = run(engine, "node", "ls", "-q")

    assert result.stdout.splitlines() == [SELF_ID, MANAGER2_ID, WORKER_ID]
    assert engine.calls("GET", "/info") == []


def test_node_ls_format_json_prints_one_object_per_line(engine):
    result = run(engine, "node", "ls", "--format", "json")

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0] == {
        "Availability": "Active",
        "EngineVersion": "0.1.0",
        "Hostname": "node-1",
        "ID": SELF_ID,
        "ManagerStatus": "Leader",
        "Self": True,
        "Status": "Ready",
        "TLSStatus": "Ready",
    }
    assert [line["Hostname"] for line in lines] == ["node-1", "node-2", "node-10"]


def test_node_ls_format_template(engine):
    result = run(engine, "node", "ls", "--format", "table {{.Hostname}}\\t{{.ManagerStatus}}")

    assert result.stdout.splitlines() == [
        "HOSTNAME   MANAGER STATUS",
        "node-1     Leader",
        "node-2     Reachable",
        "node-10    ",
    ]
    plain = run(engine, "node", "ls", "--format", "{{.Hostname}}: {{.Status}}")
    assert plain.stdout.splitlines() == ["node-1: Ready", "node-2: Ready", "node-10: Ready"]


def test_node_ls_format_with_unsupported_template_actions_is_refused(engine):
    assert_fails(
        run(engine, "node", "ls", "--format", "{{if .Self}}me{{end}}"),
        "template parsing error: unsupported action {{if .Self}}: raftswarm supports {{.Field}}, {{json .}} and {{json .Field}}",
    )


def test_node_ls_filter_is_sent_as_docker_filters(engine):
    run(engine, "node", "ls", "--filter", "role=manager", "-f", "name=node-1")

    (listing,) = engine.calls("GET", "/nodes")
    assert listing.filters == {"role": ["manager"], "name": ["node-1"]}


def test_node_ls_bad_filter_is_a_usage_error(engine):
    result = run(engine, "node", "ls", "--filter", "manager")

    assert result.exit_code == 2
    assert "bad format of filter" in result.stderr
    assert engine.requests == []


def test_node_ls_on_a_worker_prints_the_nodes_one_line_error(engine):
    engine.fail("GET", "/nodes", 503, NOT_A_MANAGER)

    result = run(engine, "node", "ls")

    assert_fails(result, f"Error response from daemon: {NOT_A_MANAGER}")
    assert result.stdout == ""


# -- node inspect -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", [MANAGER2_ID, "x1cb", "node-2"])
def test_node_inspect_accepts_id_prefix_or_hostname(engine, ref):
    result = run(engine, "node", "inspect", ref)

    assert result.exit_code == 0, result.output
    assert [n["ID"] for n in json.loads(result.stdout)] == [MANAGER2_ID]
    assert engine.calls("GET", f"/nodes/{MANAGER2_ID}")
    assert result.stdout.startswith('[\n    {\n        "ID"')  # docker's 4-space indent


def test_node_inspect_self_asks_info_for_the_node_id(engine):
    result = run(engine, "node", "inspect", "self")

    assert [n["ID"] for n in json.loads(result.stdout)] == [SELF_ID]


def test_node_inspect_prints_what_it_found_then_one_line_per_missing_node(engine):
    result = run(engine, "node", "inspect", "node-1", "nosuchnode")

    assert result.exit_code == 1
    assert [n["ID"] for n in json.loads(result.stdout)] == [SELF_ID]
    assert result.stderr == "Error: No such node: nosuchnode\n"


def test_node_inspect_ambiguous_prefix_is_refused(engine):
    engine.reply("GET", "/nodes", [make_node("abc111", "a", "worker", 1), make_node("abc222", "b", "worker", 1)])

    result = run(engine, "node", "inspect", "abc")

    assert result.stderr == "Error: node abc is ambiguous (2 matches found)\n"
    assert result.stdout == "[]\n"
    assert result.exit_code == 1


def test_node_inspect_pretty(engine):
    result = run(engine, "node", "inspect", "--pretty", "node-1")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f"ID:\t\t\t{SELF_ID}",
        "Hostname:              \tnode-1",
        "Joined at:             \t2024-05-01 10:00:00.123456789 +0000 utc",
        "Status:",
    ]
    assert "Manager Status:" in lines
    assert " Leader:\t\tYes" in lines
    assert " Memory:\t\t8GiB" in lines
    assert "Engine Version:\t\t0.1.0" in lines


# -- node promote / demote / update / rm -------------------------------------------------------------------


def test_node_promote_sets_role_manager_at_the_nodes_version(engine):
    engine.reply("POST", f"/nodes/{WORKER_ID}/update")

    result = run(engine, "node", "promote", "node-10")

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", f"/nodes/{WORKER_ID}/update")
    assert update.query == {"version": "31"}
    assert update.body == {"Labels": {}, "Role": "manager", "Availability": "active"}
    assert result.stdout == "Node node-10 promoted to a manager in the swarm.\n"


def test_node_promote_of_a_manager_changes_nothing(engine):
    result = run(engine, "node", "promote", "node-2")

    assert result.exit_code == 0
    assert result.stdout == f"Node {MANAGER2_ID} is already a manager.\n"
    assert engine.mutations() == []


def test_node_demote_sets_role_worker(engine):
    engine.reply("POST", f"/nodes/{MANAGER2_ID}/update")

    result = run(engine, "node", "demote", MANAGER2_ID)

    (update,) = engine.calls("POST", f"/nodes/{MANAGER2_ID}/update")
    assert update.query == {"version": "20"}
    assert update.body["Role"] == "worker"
    assert result.stdout == f"Manager {MANAGER2_ID} demoted in the swarm.\n"


def test_node_demote_of_the_last_manager_prints_the_nodes_refusal(engine):
    message = "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm"
    engine.fail("POST", f"/nodes/{SELF_ID}/update", 400, message)

    assert_fails(run(engine, "node", "demote", "self"), f"Error response from daemon: {message}")


def test_node_update_availability_and_labels(engine):
    labelled = make_node(WORKER_ID, "node-10", "worker", 31, labels={"old": "1", "zone": "a"})
    engine.reply("GET", f"/nodes/{WORKER_ID}", labelled)
    engine.reply("POST", f"/nodes/{WORKER_ID}/update")

    result = run(
        engine,
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "zone=b",
        "--label-add",
        "ssd",
        "--label-rm",
        "old",
        "node-10",
    )

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", f"/nodes/{WORKER_ID}/update")
    assert update.body == {"Labels": {"zone": "b", "ssd": ""}, "Role": "worker", "Availability": "drain"}
    assert result.stdout == "node-10\n"


def test_node_update_removing_a_missing_label_is_refused(engine):
    assert_fails(
        run(engine, "node", "update", "--label-rm", "nope", "node-10"), "key nope doesn't exist in node's labels"
    )
    assert engine.mutations() == []


def test_node_update_with_an_unknown_availability_is_a_usage_error(engine):
    result = run(engine, "node", "update", "--availability", "sleep", "node-10")

    assert result.exit_code == 2
    assert engine.requests == []


def test_node_update_conflict_prints_one_line(engine):
    engine.fail("POST", f"/nodes/{WORKER_ID}/update", 409, "update out of sequence")

    assert_fails(
        run(engine, "node", "update", "--availability", "pause", "node-10"),
        "Error response from daemon: update out of sequence",
    )


def test_node_rm_deletes_each_node_and_reports_failures_after_the_others(engine):
    engine.reply("DELETE", f"/nodes/{WORKER_ID}")
    message = f"rpc error: code = FailedPrecondition desc = node {MANAGER2_ID} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
    engine.fail("DELETE", f"/nodes/{MANAGER2_ID}", 400, message)

    result = run(engine, "node", "rm", "--force", "node-2", "node-10")

    assert [(r.path, r.query) for r in engine.calls("DELETE")] == [
        (f"/nodes/{MANAGER2_ID}", {"force": "true"}),
        (f"/nodes/{WORKER_ID}", {"force": "true"}),
    ]
    assert result.stdout == "node-10\n"
    assert_fails(result, f"Error response from daemon: {message}")


# -- node ps ----------------------------------------------------------------------------------------------


def test_node_ps_when_the_node_has_no_tasks_api_prints_the_header_and_says_so(engine):
    result = run(engine, "node", "ps")

    assert result.stdout == "ID        NAME      IMAGE     NODE      DESIRED STATE   CURRENT STATE   ERROR     PORTS\n"
    assert_fails(
        result,
        "Error: the node does not serve the tasks API yet (GET /tasks answered 404: page not found), "
        "so `raftswarm node ps` cannot list tasks",
    )
    (tasks,) = engine.calls("GET", "/tasks")
    assert tasks.filters == {"node": [SELF_ID]}


def test_node_ps_lists_the_nodes_tasks_like_docker(engine):
    def task(task_id, slot, created, state="running", err=""):
        return {
            "ID": task_id,
            "ServiceID": "svc1",
            "NodeID": WORKER_ID,
            "Slot": slot,
            "CreatedAt": created,
            "DesiredState": "running" if state == "running" else "shutdown",
            "Spec": {"ContainerSpec": {"Image": "nginx:1.27@sha256:abcdef"}},
            "Status": {"State": state, "Timestamp": "2000-01-01T00:00:00Z", "Err": err},
        }

    engine.reply(
        "GET",
        "/tasks",
        [
            task("t2newxxxxxxxxxxxxxxxxxxxx", 1, "2024-05-01T10:02:00Z"),
            task("t3xxxxxxxxxxxxxxxxxxxxxxx", 2, "2024-05-01T10:00:00Z"),
            task(
                "t1oldxxxxxxxxxxxxxxxxxxxx",
                1,
                "2024-05-01T10:00:00Z",
                state="failed",
                err="task: non-zero exit (1): the process exited",
            ),
        ],
    )
    engine.reply("GET", "/services/svc1", {"ID": "svc1", "Spec": {"Name": "web"}})

    result = run(engine, "node", "ps", "node-10")

    assert result.exit_code == 0, result.output
    (tasks,) = engine.calls("GET", "/tasks")
    assert tasks.filters == {"node": [WORKER_ID]}
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE", "ERROR", "PORTS"]
    assert [row.split()[:4] for row in rows] == [
        ["t2newxxxxxxx", "web.1", "nginx:1.27", "node-10"],
        ["t1oldxxxxxxx", "\\_", "web.1", "nginx:1.27"],
        ["t3xxxxxxxxxx", "web.2", "nginx:1.27", "node-10"],
    ]
    assert re.search(r" Running \d+ years ago ", rows[0])
    assert '"task: non-zero exit (1): the …"' in rows[1]  # cut to 30 columns, as docker


# -- which node the CLI talks to ----------------------------------------------------------------------------


def test_unreachable_socket_prints_cannot_connect(tmp_path):
    missing = tmp_path / "missing.sock"

    result = CliRunner(env=CLEAN_ENV).invoke(main, ["-H", f"unix://{missing}", "node", "ls"])

    assert_fails(result, f"Cannot connect to the raftswarm daemon at unix://{missing}. Is the node running?")


def test_host_precedence_flag_then_env_then_docker_host_then_current_cluster(engine, tmp_path):
    elsewhere = f"unix://{tmp_path / 'elsewhere.sock'}"
    config = tmp_path / "config"
    (config / "raftswarm").mkdir(parents=True)
    (config / "raftswarm" / "current-host").write_text(engine.url + "\n")

    def ls(env, *args):
        return CliRunner(env={**CLEAN_ENV, "XDG_CONFIG_HOME": str(config), **env}).invoke(
            main, [*args, "node", "ls", "-q"]
        )

    assert ls({}).exit_code == 0  # the current cluster file
    assert ls({"DOCKER_HOST": "tcp://127.0.0.1:2375"}).exit_code == 0  # a tcp DOCKER_HOST is not ours
    assert "elsewhere.sock" in ls({"DOCKER_HOST": elsewhere}).stderr
    assert "elsewhere.sock" in ls({"RAFTSWARM_HOST": elsewhere, "DOCKER_HOST": engine.url}).stderr
    assert ls({"RAFTSWARM_HOST": engine.url, "DOCKER_HOST": elsewhere}).exit_code == 0
    assert ls({"RAFTSWARM_HOST": elsewhere}, "-H", engine.url).exit_code == 0


def test_a_tcp_host_is_refused_with_what_to_use_instead(engine):
    result = CliRunner(env=CLEAN_ENV).invoke(main, ["-H", "tcp://10.0.0.1:2375", "node", "ls"])

    assert_fails(
        result,
        "invalid daemon address 'tcp://10.0.0.1:2375' from -H/--host: raftswarm talks to a node over its unix socket; "
        "use unix:///path/to/raftswarm.sock",
    )


def test_version_still_prints_the_client_version():
    result = CliRunner().invoke(main, ["version"])

    assert result.exit_code == 0
    assert result.stdout.startswith("raftswarm ")


def test_node_list_and_remove_are_aliases_as_in_docker(engine):
    engine.reply("DELETE", f"/nodes/{WORKER_ID}")

    assert run(engine, "node", "list", "-q").stdout.splitlines() == [SELF_ID, MANAGER2_ID, WORKER_ID]
    assert run(engine, "node", "remove", "node-10").stdout == "node-10\n"


def test_an_answer_without_dockers_shape_is_one_line_not_a_traceback(engine):
    engine.reply("GET", "/swarm", ["not", "a", "swarm"])

    result = run(engine, "swarm", "join-token", "-q", "worker")

    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: unexpected answer from the node at {engine.url} (")
    assert len(result.stderr.splitlines()) == 1


# -- flag values parsed as docker parses them ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "sent"),
    [("10.0.0.1", "10.0.0.1:2377"), (":4000", "0.0.0.0:4000"), ("eth0:2400", "eth0:2400"), ("[::1]", "[::1]:2377")],
)
def test_listen_addr_gets_dockers_default_host_and_port(engine, value, sent):
    engine.reply("POST", "/swarm/join")
    engine.reply("GET", "/info", info(control=False))

    run(engine, "swarm", "join", "--token", WORKER_TOKEN, "--listen-addr", value, "10.0.0.1:2377")

    assert engine.calls("POST", "/swarm/join")[0].body["ListenAddr"] == sent


@pytest.mark.parametrize(
    ("value", "nanoseconds"), [("1h30m", 5400 * 10**9), ("500ms", 5 * 10**8), ("2160h", 2160 * 3600 * 10**9)]
)
def test_durations_are_go_durations_sent_in_nanoseconds(engine, value, nanoseconds):
    engine.reply("POST", "/swarm/update")

    run(engine, "swarm", "update", "--dispatcher-heartbeat", value)

    assert engine.calls("POST", "/swarm/update")[0].body["Dispatcher"]["HeartbeatPeriod"] == nanoseconds
