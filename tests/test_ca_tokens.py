"""Join tokens (security property 1): `SWMTKN-1-<root digest>-<secret>` in Docker's base-36 encoding; a
manager accepts only the current, unrotated token of its own swarm and says which of the two went wrong; a
joining node pins the root CA by the token's digest."""

from __future__ import annotations

import re
from unittest import mock

import pytest

from raftswarm.ca import tokens
from raftswarm.ca.certificates import NodeRole, RootCA, root_digest
from raftswarm.ca.tokens import (
    InvalidJoinToken,
    JoinToken,
    JoinTokenError,
    JoinTokenRejected,
    RootCAMismatch,
    WrongSwarm,
    check_join_token,
    fingerprint_matches,
    generate_join_token,
    root_digest_of_token,
)
from raftswarm.errors import RaftswarmError

DOCKER_TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"
"""The token in Docker's `docker swarm join` documentation."""

DIGEST = "3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl"
SECRET = "1awxwuwd3z9j1z3puu7rcgdbx"


@pytest.fixture(scope="module")
def root() -> RootCA:
    return RootCA.create()


# -- format -------------------------------------------------------------------------------------------


def test_a_generated_token_has_dockers_shape_and_pins_the_root(root):
    token = generate_join_token(root.certificate)
    assert re.fullmatch(r"SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}", token)
    digest_part = token.split("-")[2]
    assert int(digest_part, 36) == int(root_digest(root.certificate), 16)  # base 36 of the SHA-256 of the DER
    assert root_digest_of_token(token) == root_digest(root.certificate) == root.digest


def test_parse_and_print_round_trip_including_a_token_printed_by_docker(root):
    token = generate_join_token(root.certificate)
    assert str(JoinToken.parse(token)) == token
    docker = JoinToken.parse(DOCKER_TOKEN)
    assert str(docker) == DOCKER_TOKEN
    assert docker.secret == SECRET
    assert docker.root_digest == f"{int(DIGEST, 36):064x}"


def test_small_values_are_zero_padded_to_full_width():
    token = JoinToken(root_digest="0" * 63 + "1", secret="0" * 24 + "z")
    assert str(token) == "SWMTKN-1-" + "0" * 49 + "1-" + "0" * 24 + "z"
    assert JoinToken.parse(str(token)) == token


def test_every_token_has_a_new_128_bit_secret(root):
    generated = [JoinToken.generate(root.certificate) for _ in range(300)]
    assert len({t.secret for t in generated}) == 300
    assert {t.root_digest for t in generated} == {root.digest}
    assert all(int(t.secret, 36) < 2**128 for t in generated)
    # 300 draws of 128 random bits: the largest is all but certain to use more than 120 of them.
    assert max(int(t.secret, 36) for t in generated).bit_length() > 120


def test_surrounding_whitespace_from_a_paste_is_ignored():
    assert str(JoinToken.parse(f"  {DOCKER_TOKEN}\n")) == DOCKER_TOKEN


def test_the_secret_stays_out_of_repr():
    assert SECRET not in repr(JoinToken.parse(DOCKER_TOKEN))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("SWMTKN", "must look like SWMTKN-1-<root CA digest>-<secret>"),
        (f"SWMKEY-1-{DIGEST}-{SECRET}", "must look like SWMTKN-1-"),
        (f"swmtkn-1-{DIGEST}-{SECRET}", "must look like SWMTKN-1-"),
        (f"SWMTKN-2-{DIGEST}-{SECRET}-FIPS", "version '2' is not supported; raftswarm reads SWMTKN-1 tokens"),
        (f"SWMTKN-0-{DIGEST}-{SECRET}", "version '0' is not supported"),
        (f"SWMTKN-1-{DIGEST}", "it has 3 dash-separated parts, not 4"),
        (f"SWMTKN-1-{DIGEST}-{SECRET}-extra", "it has 5 dash-separated parts, not 4"),
        (f"SWMTKN-1-{DIGEST}{SECRET}", "it has 3 dash-separated parts, not 4"),
        (f"SWMTKN-1-{DIGEST[1:]}-{SECRET}", "root CA digest must be 50 characters, not 49"),
        (f"SWMTKN-1-{DIGEST}0-{SECRET}", "root CA digest must be 50 characters, not 51"),
        (f"SWMTKN-1-{DIGEST.upper()}-{SECRET}", "root CA digest may contain only digits 0-9 and letters a-z"),
        (f"SWMTKN-1-{DIGEST[:-1]}_-{SECRET}", "root CA digest may contain only"),
        (f"SWMTKN-1-{DIGEST[:-1]}\u0663-{SECRET}", "root CA digest may contain only"),  # an Arabic-Indic digit
        (f"SWMTKN-1-{'z' * 50}-{SECRET}", "larger than a SHA-256 digest can be"),
        (f"SWMTKN-1-{DIGEST}-{SECRET[1:]}", "secret must be 25 characters, not 24"),
        (f"SWMTKN-1-{DIGEST}-{SECRET}x", "secret must be 25 characters, not 26"),
        (f"SWMTKN-1-{DIGEST}-{SECRET[:-1]}!", "secret may contain only digits 0-9 and letters a-z"),
        (f"SWMTKN-1-{DIGEST}-{SECRET[:-1]} ", "secret must be 25 characters, not 24"),  # stripped, so one short
        (f"SWMTKN-1-{DIGEST}-{SECRET[:12]} {SECRET[13:]}", "secret may contain only"),
    ],
    ids=[
        "empty",
        "blank",
        "prefix-only",
        "unlock-key-prefix",
        "lowercase-prefix",
        "fips-v2",
        "version-0",
        "no-secret",
        "extra-part",
        "missing-dash",
        "digest-short",
        "digest-long",
        "digest-uppercase",
        "digest-underscore",
        "digest-non-ascii-digit",
        "digest-over-256-bits",
        "secret-short",
        "secret-long",
        "secret-punctuation",
        "secret-trailing-space",
        "secret-inner-space",
    ],
)
def test_a_malformed_token_is_refused_with_a_clear_error_that_hides_the_secret(text, message):
    with pytest.raises(InvalidJoinToken, match=re.escape(message)) as refused:
        JoinToken.parse(text)
    assert str(refused.value).startswith("invalid join token: ")
    assert SECRET[:12] not in str(refused.value)
    assert isinstance(refused.value, JoinTokenError) and isinstance(refused.value, RaftswarmError)


# -- the manager's check ------------------------------------------------------------------------------


@pytest.fixture
def current(root) -> dict[NodeRole, JoinToken]:
    return {role: JoinToken.generate(root.certificate) for role in NodeRole}


def test_each_current_token_grants_its_role(current):
    for role, token in current.items():
        assert check_join_token(str(token), worker=current[NodeRole.WORKER], manager=current[NodeRole.MANAGER]) is role
        assert check_join_token(token, worker=str(current[NodeRole.WORKER]), manager=str(current[NodeRole.MANAGER]))


def test_a_token_of_another_swarm_is_told_apart_from_a_rotated_one(root, current):
    other_swarm = generate_join_token(RootCA.create().certificate)
    with pytest.raises(WrongSwarm, match="join token is for a different swarm") as refused:
        check_join_token(other_swarm, worker=current[NodeRole.WORKER], manager=current[NodeRole.MANAGER])
    assert "swarm join-token worker" in str(refused.value)

    rotated = generate_join_token(root.certificate)  # this swarm's digest, a secret no longer current
    with pytest.raises(JoinTokenRejected) as refused:
        check_join_token(rotated, worker=current[NodeRole.WORKER], manager=current[NodeRole.MANAGER])
    assert str(refused.value).startswith(
        "join token was rotated or is invalid; ask a manager for `raftswarm swarm join-token worker`"
    )
    assert rotated.split("-")[3] not in str(refused.value)


def test_a_token_with_this_digest_but_one_wrong_character_is_refused(current):
    good = str(current[NodeRole.WORKER])
    last = good[-1]
    tampered = good[:-1] + ("0" if last != "0" else "1")
    with pytest.raises(JoinTokenRejected):
        check_join_token(tampered, worker=current[NodeRole.WORKER], manager=current[NodeRole.MANAGER])


def test_a_malformed_presented_token_is_refused_before_any_comparison(current):
    with mock.patch.object(tokens.hmac, "compare_digest") as compare, pytest.raises(InvalidJoinToken):
        check_join_token("SWMTKN-1-abc", worker=current[NodeRole.WORKER], manager=current[NodeRole.MANAGER])
    compare.assert_not_called()


def test_secrets_are_compared_in_constant_time_against_both_tokens_every_time(current):
    worker, manager = current[NodeRole.WORKER], current[NodeRole.MANAGER]
    with mock.patch.object(tokens.hmac, "compare_digest", wraps=tokens.hmac.compare_digest) as compare:
        assert check_join_token(str(worker), worker=worker, manager=manager) is NodeRole.WORKER
    # Even though the worker token matched first, the manager token was compared too, and only through
    # hmac.compare_digest: the time taken does not tell which token (or how much of one) was right.
    compared_with = {call.args[1] for call in compare.call_args_list}
    assert compared_with == {worker.secret, manager.secret}
    assert all(call.args[0] == worker.secret for call in compare.call_args_list)


# -- the joining node's pin ---------------------------------------------------------------------------


def test_the_joining_node_pins_the_root_ca_by_the_tokens_digest(root):
    token = generate_join_token(root.certificate)
    assert fingerprint_matches(token, root.certificate) is True
    assert fingerprint_matches(JoinToken.parse(token), root.certificate) is True
    impostor = RootCA.create()
    with pytest.raises(RootCAMismatch, match="does not match the join token") as refused:
        fingerprint_matches(token, impostor.certificate)
    assert "man-in-the-middle" in str(refused.value)
    assert impostor.digest in str(refused.value) and root.digest in str(refused.value)
    assert token.split("-")[3] not in str(refused.value)
    with pytest.raises(InvalidJoinToken):
        fingerprint_matches("SWMTKN-1-nope", root.certificate)
