"""The certificate authority managers run (security properties 1-3): joining with a token gives a new node a
certificate whose CN/OU/O are its new ID, the token's role and the cluster ID; removed nodes are refused;
nodes renew at 50-80% of the lifetime; a root rotation keeps every node able to talk to every other, checked
with real TLS handshakes on loopback; and the whole CA survives a trip through the replicated store."""

from __future__ import annotations

import json
import random
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from raftswarm.ca.authority import (

    AuthorityError,
    CertificateAuthority,
    Enrollment,
    NodeRemoved,
    PeerRefused,
    renewal_time,
)
from raftswarm.ca.certificates import (
    DEFAULT_NODE_CERT_LIFETIME,
    CertificateError,
    NodeCertificate,
    NodeIdentity,
    NodeRole,
    RootCA,
    cert_from_pem,
    cert_to_pem,
    client_ssl_context,
    new_node_id,
    new_node_key,
    node_csr,
    server_ssl_context,
)
from raftswarm.ca.tokens import JoinTokenRejected, WrongSwarm, fingerprint_matches
from raftswarm.objects.specs import MIN_NODE_CERT_LIFETIME

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def csr_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return node_csr(key).public_bytes(serialization.Encoding.PEM)


def join(ca: CertificateAuthority, role: NodeRole, **kwargs) -> tuple[Enrollment, ec.EllipticCurvePrivateKey]:
    key = new_node_key()
    return ca.issue_for_join(ca.join_token(role), csr_pem(key), **kwargs), key


def certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def verified_chain(chain_pem: bytes, trusted: list[x509.Certificate]) -> list[x509.Certificate]:
    """Path validation of a node's certificate as presented, against `trusted` roots (cryptography's verifier,
    independent of the OpenSSL one the TLS tests below use)."""
    leaf, *intermediates = certs(chain_pem)
    return PolicyBuilder().store(Store(trusted)).build_client_verifier().verify(leaf, intermediates).chain


# -- joining ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(NodeRole))
def test_join_certifies_a_new_node_id_with_the_tokens_role_and_the_cluster_id(ca, role):
    enrollment, key = join(ca, role)
    (cert,) = certs(enrollment.cert_pem)
    assert subject(cert, NameOID.COMMON_NAME) == [enrollment.node_id]
    assert subject(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == [role.value]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == [ca.cluster_id]
    assert enrollment.identity == NodeIdentity(enrollment.node_id, role, ca.cluster_id)
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.root.certificate)
    assert certs(enrollment.root_pem) == [ca.root.certificate]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > timedelta(days=90)  # 90 days plus the backdate


def test_every_join_is_a_new_node_even_with_the_same_key_or_a_requested_id(ca):
    key = new_node_key()
    token = ca.join_token(NodeRole.WORKER)
    first = ca.issue_for_join(token, csr_pem(key))
    second = ca.issue_for_join(token, csr_pem(key), requested_node_id=first.node_id)
    assert first.node_id != second.node_id


def test_a_join_with_a_foreign_or_rotated_token_issues_nothing(ca):
    key = new_node_key()
    with pytest.raises(WrongSwarm):
        ca.issue_for_join(CertificateAuthority.create().join_token(NodeRole.MANAGER), csr_pem(key))
    rotated = ca.rotate_join_token(NodeRole.MANAGER)
    with pytest.raises(JoinTokenRejected, match="rotated or is invalid"):
        rotated.issue_for_join(ca.join_token(NodeRole.MANAGER), csr_pem(key))


def test_a_join_with_a_garbage_csr_is_refused_clearly(ca):
    with pytest.raises(CertificateError, match="not a PEM certificate signing request"):
        ca.issue_for_join(ca.join_token(NodeRole.WORKER), b"-----BEGIN CERTIFICATE REQUEST-----\nxx")


def test_rotating_a_join_token_refuses_the_old_one_and_leaves_the_rest_alone(ca):
    member, _ = join(ca, NodeRole.WORKER)
    rotated = ca.rotate_join_token(NodeRole.WORKER)
    assert rotated.join_token(NodeRole.WORKER) != ca.join_token(NodeRole.WORKER)
    assert rotated.join_token(NodeRole.MANAGER) == ca.join_token(NodeRole.MANAGER)
    with pytest.raises(JoinTokenRejected):
        rotated.issue_for_join(ca.join_token(NodeRole.WORKER), csr_pem(new_node_key()))
    assert join(rotated, NodeRole.WORKER)[0].identity.role is NodeRole.WORKER
    # A node already in the swarm holds a certificate, not a token: it is still served and still renews.
    rotated.check_peer(member.identity)
    assert cert_from_pem(rotated.renew(member.identity, csr_pem(new_node_key()))).public_key()


def test_changes_return_a_new_ca_and_leave_the_stored_snapshot_untouched(ca):
    before = ca.to_state()
    ca.rotate_join_token(NodeRole.WORKER)
    ca.block(new_node_id())
    ca.begin_root_rotation()
    assert ca.to_state() == before


# -- renewing, promoting, removing ---------------------------------------------------------------------


def test_renewal_keeps_the_node_id_and_role_and_certifies_the_new_key(ca):
    enrollment, _ = join(ca, NodeRole.MANAGER)
    new_key = new_node_key()
    cert = cert_from_pem(ca.renew(enrollment.identity, csr_pem(new_key)))
    assert NodeIdentity.from_certificate(cert) == enrollment.identity
    assert cert.public_key() == new_key.public_key()


def test_promotion_and_demotion_renew_into_the_desired_role(ca):
    worker, _ = join(ca, NodeRole.WORKER)
    promoted = NodeCertificate(
        cert_from_pem(ca.renew(worker.identity, csr_pem(key := new_node_key()), NodeRole.MANAGER)), key
    )
    assert promoted.identity == NodeIdentity(worker.node_id, NodeRole.MANAGER, ca.cluster_id)
    demoted = cert_from_pem(ca.renew(promoted.identity, csr_pem(new_node_key()), desired_role=NodeRole.WORKER))
    assert NodeIdentity.from_certificate(demoted).role is NodeRole.WORKER


def test_a_removed_node_is_refused_on_every_connection_and_cannot_renew(ca):
    removed, _ = join(ca, NodeRole.MANAGER)
    bystander, _ = join(ca, NodeRole.WORKER)
    after = ca.block(removed.node_id)
    with pytest.raises(NodeRemoved, match=f"node {removed.node_id} was removed from the swarm"):
        after.check_peer(removed.identity)
    with pytest.raises(NodeRemoved, match="was removed from the swarm"):
        after.renew(removed.identity, csr_pem(new_node_key()))
    with pytest.raises(NodeRemoved, match="was removed from the swarm"):
        after.renew(removed.identity, csr_pem(new_node_key()), desired_role=NodeRole.WORKER)
    after.check_peer(bystander.identity)
    ca.check_peer(removed.identity)  # the CA it was removed from is a different snapshot


def test_a_removed_node_rejoining_under_its_old_id_is_told_so_but_a_fresh_join_works(ca):
    removed, _ = join(ca, NodeRole.WORKER)
    after = ca.block(removed.node_id)
    with pytest.raises(NodeRemoved, match="swarm leave"):
        join(after, NodeRole.WORKER, requested_node_id=removed.node_id)
    fresh, _ = join(after, NodeRole.WORKER)  # after `swarm leave` it is simply a new node
    assert fresh.node_id != removed.node_id
    after.check_peer(fresh.identity)


def test_a_certificate_naming_another_cluster_is_refused(ca):
    stranger = NodeIdentity(new_node_id(), NodeRole.MANAGER, "someothercluster")
    with pytest.raises(PeerRefused, match="certificate of swarm someothercluster, not of this swarm"):
        ca.check_peer(stranger)
    with pytest.raises(PeerRefused):
        ca.renew(stranger, csr_pem(new_node_key()))


# -- lifetime and renewal schedule -------------------------------------------------------------------


def test_the_node_certificate_lifetime_is_90_days_by_default_and_goes_down_to_minutes():
    assert CertificateAuthority.create().node_cert_lifetime == DEFAULT_NODE_CERT_LIFETIME == timedelta(days=90)
    short = CertificateAuthority.create(node_cert_lifetime=timedelta(minutes=5), now=NOW)
    enrollment = short.issue_for_join(short.join_token(NodeRole.WORKER), csr_pem(new_node_key()), now=NOW)
    assert certs(enrollment.cert_pem)[0].not_valid_after_utc == NOW + timedelta(minutes=5)
    with pytest.raises(AuthorityError, match="lifetime must be at least"):
        CertificateAuthority.create(node_cert_lifetime=MIN_NODE_CERT_LIFETIME - timedelta(seconds=1))


@pytest.mark.parametrize("lifetime", [timedelta(days=90), timedelta(hours=1), timedelta(minutes=10)])
def test_renewal_is_scheduled_between_50_and_80_percent_of_the_lifetime(lifetime):
    ca = CertificateAuthority.create(node_cert_lifetime=lifetime, now=NOW)
    cert = certs(ca.issue_for_join(ca.join_token(NodeRole.WORKER), csr_pem(new_node_key()), now=NOW).cert_pem)[0]
    times = [renewal_time(cert, random.Random(seed)) for seed in range(500)]
    assert all(NOW + lifetime * 0.5 <= t <= NOW + lifetime * 0.8 for t in times)
    # Spread over the window, so a cluster's nodes do not renew together...
    assert min(times) < NOW + lifetime * 0.55 and max(times) > NOW + lifetime * 0.75
    # ...and replayable from the seed.
    assert renewal_time(cert, random.Random(7)) == renewal_time(cert, random.Random(7))


# -- root rotation ------------------------------------------------------------------------------------


@dataclass
class Member:
    """A node's credentials: its certificate chain as it presents it, its key, and the roots it trusts."""

    chain_pem: bytes
    key: ec.EllipticCurvePrivateKey
    trusted: list[x509.Certificate]

    @property
    def node(self) -> NodeCertificate:
        return NodeCertificate(certs(self.chain_pem)[0], self.key)


def enroll(ca: CertificateAuthority, role: NodeRole = NodeRole.MANAGER) -> Member:
    enrollment, key = join(ca, role)
    return Member(enrollment.cert_pem, key, certs(enrollment.root_pem))


def test_the_cross_signed_certificate_is_the_new_root_issued_by_the_old_one(ca):
    rotating = ca.begin_root_rotation()
    old, new, cross = ca.root.certificate, rotating.rotation.pending_root.certificate, rotating.rotation.cross_signed
    assert cross.subject == new.subject and cross.public_key() == new.public_key()
    assert cross.issuer == old.subject
    cross.verify_directly_issued_by(old)
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert rotating.trust_bundle() == [old, new]
    assert rotating.root == ca.root  # the old root stays the root until the rotation finishes


def test_during_rotation_new_certificates_come_from_the_new_root_and_chain_to_both(ca):
    rotating = ca.begin_root_rotation()
    old, new = ca.root.certificate, rotating.rotation.pending_root.certificate
    enrollment, _ = join(rotating, NodeRole.MANAGER)
    leaf, intermediate = certs(enrollment.cert_pem)
    leaf.verify_directly_issued_by(new)
    assert intermediate == rotating.rotation.cross_signed
    assert certs(enrollment.root_pem) == [old, new]
    assert verified_chain(enrollment.cert_pem, [old]) == [leaf, intermediate, old]
    assert verified_chain(enrollment.cert_pem, [new]) == [leaf, new]
    # Renewals during the rotation move a node onto the new root the same way.
    renewed = rotating.renew(enrollment.identity, csr_pem(new_node_key()))
    assert verified_chain(renewed, [old])[-1] == old


def test_a_node_joining_during_rotation_pins_the_old_root_and_verifies_its_chain_with_it(ca):
    rotating = ca.begin_root_rotation()
    token = rotating.join_token(NodeRole.WORKER)
    assert token == ca.join_token(NodeRole.WORKER)  # tokens keep pinning the old root until the rotation ends
    enrollment = rotating.issue_for_join(token, csr_pem(new_node_key()))
    pinned = certs(enrollment.root_pem)[0]
    assert fingerprint_matches(token, pinned)
    assert verified_chain(enrollment.cert_pem, [pinned])[-1] == pinned


def test_starting_over_during_a_rotation_cross_signs_the_newer_root_with_the_current_one(ca):
    first = ca.begin_root_rotation()
    member = enroll(first)
    second = first.begin_root_rotation()
    assert second.rotation.pending_root != first.rotation.pending_root
    second.rotation.cross_signed.verify_directly_issued_by(ca.root.certificate)
    assert second.trust_bundle() == [ca.root.certificate, second.rotation.pending_root.certificate]
    # The node certified by the abandoned root still chains to the current one.
    assert verified_chain(member.chain_pem, [ca.root.certificate])[-1] == ca.root.certificate


def test_finishing_a_rotation_drops_the_old_root_and_regenerates_the_join_tokens(ca):
    rotating = ca.begin_root_rotation()
    on_new_root = enroll(rotating)
    finished = rotating.finish_root_rotation()
    new = rotating.rotation.pending_root.certificate
    assert finished.root.certificate == new and finished.rotation is None
    assert finished.trust_bundle() == [new]
    for role in NodeRole:
        assert fingerprint_matches(finished.join_token(role), new)
        with pytest.raises(WrongSwarm, match="root CA was rotated"):
            finished.issue_for_join(ca.join_token(role), csr_pem(new_node_key()))
    (leaf,) = certs(enroll(finished).chain_pem)  # no cross-signed certificate any more
    leaf.verify_directly_issued_by(new)
    with pytest.raises(VerificationError):
        verified_chain(enroll(ca).chain_pem, finished.trust_bundle())
    # A node certified during the rotation keeps working with nothing more to do.
    assert verified_chain(on_new_root.chain_pem, finished.trust_bundle())[-1] == new


def test_a_rotation_needs_a_rotation_to_finish_and_a_different_root_to_begin(ca):
    with pytest.raises(AuthorityError, match="no root CA rotation is in progress"):
        ca.finish_root_rotation()
    with pytest.raises(AuthorityError, match="already the swarm's root"):
        ca.begin_root_rotation(ca.root)
    chosen = RootCA.create()
    assert ca.begin_root_rotation(chosen).rotation.pending_root == chosen  # `swarm ca --rotate --ca-cert ...`


# -- root rotation over real TLS on loopback -----------------------------------------------------------


def tls_context(member: Member, *, server_side: bool, directory: Path, with_chain: bool = True) -> ssl.SSLContext:
    """The mutual TLS 1.3 context of `certificates`, but presenting the whole chain and trusting every root in
    `member.trusted` (what the daemon needs during a rotation)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cadata=b"".join(cert_to_pem(c) for c in member.trusted).decode("ascii"))
    presented = member.chain_pem if with_chain else cert_to_pem(certs(member.chain_pem)[0])
    password = b"test-only"
    key_pem = member.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    path = directory / f"{new_node_id()}.pem"
    path.write_bytes(presented + key_pem)
    context.load_cert_chain(path, password=password)
    return context


@dataclass
class Exchange:
    """What each side of a handshake concluded: the peer's identity, or the error that ended it."""

    server: NodeIdentity | Exception
    client: NodeIdentity | Exception


def tls_exchange(server: ssl.SSLContext, client: ssl.SSLContext) -> Exchange:
    """Handshake over 127.0.0.1 between a server thread and this thread, the client asking for a manager."""
    outcome: dict[str, NodeIdentity | Exception] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with server.wrap_socket(conn, server_side=True) as tls:
                    outcome["server"] = peer_identity(tls)
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                outcome["server"] = exc

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname=NodeRole.MANAGER.value) as tls,
            ):
                # In TLS 1.3 the server judges the client's certificate after the client's handshake is done:
                # reading the server's first bytes surfaces its verdict.
                reply = tls.recv(2)
                outcome["client"] = peer_identity(tls) if reply == b"ok" else ConnectionError("server hung up")
        except (ssl.SSLError, OSError) as exc:
            outcome["client"] = exc
        finally:
            thread.join(10)
    assert not thread.is_alive()
    return Exchange(outcome["server"], outcome["client"])


def peer_identity(tls: ssl.SSLSocket) -> NodeIdentity:
    return NodeIdentity.from_certificate(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)))


@pytest.fixture
def rotation_cast(ca):
    """A node certified before the rotation (trusting only the old root, using the production contexts), and
    one certified during it."""
    old_node = enroll(ca)
    rotating = ca.begin_root_rotation()
    return ca, rotating, old_node, enroll(rotating)


def test_tls_a_node_on_the_new_root_talks_to_a_node_that_trusts_only_the_old_root(rotation_cast, tmp_path):
    ca, _, old_node, new_node = rotation_cast
    old_root = ca.root.certificate
    assert old_node.trusted == [old_root]

    # The new node serves; the old node connects with the contexts the daemon uses today.
    result = tls_exchange(
        tls_context(new_node, server_side=True, directory=tmp_path),
        client_ssl_context(old_root, old_node.node),
    )
    assert result.client == new_node.node.identity
    assert result.server == old_node.node.identity

    # The other way round.
    result = tls_exchange(
        server_ssl_context(old_root, old_node.node),
        tls_context(new_node, server_side=False, directory=tmp_path),
    )
    assert result.client == old_node.node.identity
    assert result.server == new_node.node.identity


def test_tls_without_the_cross_signed_certificate_the_old_root_node_refuses(rotation_cast, tmp_path):
    ca, _, old_node, new_node = rotation_cast
    result = tls_exchange(
        tls_context(new_node, server_side=True, directory=tmp_path, with_chain=False),
        client_ssl_context(ca.root.certificate, old_node.node),
    )
    # (OpenSSL fills in the server's chain from its own trust store, so the client sees the new root there,
    # which it does not trust.)
    assert isinstance(result.client, ssl.SSLCertVerificationError)
    assert "certificate verify failed" in str(result.client)
    assert not isinstance(result.server, NodeIdentity)


def test_tls_after_the_rotation_finishes_an_old_root_certificate_is_refused(rotation_cast, tmp_path):
    _, rotating, old_node, new_node = rotation_cast
    finished = rotating.finish_root_rotation()
    new_node.trusted = finished.trust_bundle()
    server = tls_context(new_node, server_side=True, directory=tmp_path)

    # A node still on the old root, even one that learned to trust the new root, is refused by the server.
    old_node.trusted = finished.trust_bundle()
    result = tls_exchange(server, tls_context(old_node, server_side=False, directory=tmp_path))
    assert isinstance(result.server, ssl.SSLCertVerificationError)
    assert not isinstance(result.client, NodeIdentity)

    # A node renewed after the rotation is served.
    renewed = Member(finished.renew(old_node.node.identity, csr_pem(key := new_node_key())), key, [])
    renewed.trusted = finished.trust_bundle()
    result = tls_exchange(server, tls_context(renewed, server_side=False, directory=tmp_path))
    assert result.server == old_node.node.identity
    assert result.client == new_node.node.identity


# -- the replicated store ------------------------------------------------------------------------------


def test_state_round_trips_through_plain_data_mid_rotation(ca):
    removed = new_node_id()
    original = (
        CertificateAuthority.create(node_cert_lifetime=timedelta(minutes=30))
        .rotate_join_token(NodeRole.WORKER)
        .block(removed)
        .begin_root_rotation()
    )
    state = original.to_state()
    assert json.loads(json.dumps(state)) == state  # str, float, list, dict and None only
    assert set(state) >= {"pending_root", "cross_signed"}
    rebuilt = CertificateAuthority.from_state(state)
    assert rebuilt.to_state() == state

    # The rebuilt CA is the same CA: same tokens, same removed nodes, same rotation, same signing root.
    assert rebuilt.node_cert_lifetime == timedelta(minutes=30)
    enrollment = rebuilt.issue_for_join(original.join_token(NodeRole.WORKER), csr_pem(new_node_key()))
    assert verified_chain(enrollment.cert_pem, [original.root.certificate])[-1] == original.root.certificate
    certs(enrollment.cert_pem)[0].verify_directly_issued_by(original.rotation.pending_root.certificate)
    with pytest.raises(NodeRemoved):
        rebuilt.check_peer(NodeIdentity(removed, NodeRole.WORKER, original.cluster_id))
    assert rebuilt.finish_root_rotation().root.certificate == original.rotation.pending_root.certificate


def test_a_ca_without_rotation_stores_none_for_it(ca):
    state = ca.to_state()
    assert state["pending_root"] is None and state["cross_signed"] is None
    assert CertificateAuthority.from_state(state).rotation is None


def test_broken_state_is_refused_with_a_clear_error(ca):
    state = ca.to_state()
    with pytest.raises(AuthorityError, match="missing 'join_tokens'"):
        CertificateAuthority.from_state({k: v for k, v in state.items() if k != "join_tokens"})
    with pytest.raises(AuthorityError, match="half of a root rotation"):
        CertificateAuthority.from_state({**state, "cross_signed": cert_to_pem(ca.root.certificate).decode()})
    foreign_tokens = CertificateAuthority.create().to_state()["join_tokens"]
    with pytest.raises(AuthorityError, match="join token pins a root CA other than the swarm's"):
        CertificateAuthority.from_state({**state, "join_tokens": foreign_tokens})
    with pytest.raises(AuthorityError, match="malformed"):
        CertificateAuthority.from_state({**state, "node_cert_lifetime_seconds": "90d"})
    with pytest.raises(CertificateError):
        CertificateAuthority.from_state({**state, "root": {**state["root"], "cert": "garbage"}})
