"""The cluster CA: root and node certificates carry Docker's identity fields (CN = node ID, OU = role,
O = cluster ID) on ECDSA P-256 keys, and the TLS contexts built from them are mutual TLS 1.3 that trust the
cluster root alone and let a client insist on talking to a manager."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftswarm.ca.certificates import (
    CERT_BACKDATE,
    DEFAULT_NODE_CERT_LIFETIME,
    CertificateError,
    NodeCertificate,
    NodeIdentity,
    NodeRole,
    RootCA,
    client_ssl_context,
    new_cluster_id,
    new_node_id,
    new_node_key,
    node_csr,
    root_digest,
    server_ssl_context,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def root() -> RootCA:
    return RootCA.create()


def subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def sans(cert: x509.Certificate) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), ext.get_values_for_type(x509.IPAddress)


def self_signed(name: x509.Name) -> x509.Certificate:
    key = new_node_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


# -- IDs ----------------------------------------------------------------------------------------------


def test_node_and_cluster_ids_look_like_dockers():
    ids = [new_node_id() for _ in range(500)] + [new_cluster_id() for _ in range(500)]
    assert all(re.fullmatch(r"[0-9a-z]{25}", i) for i in ids)
    assert len(set(ids)) == 1000


# -- root CA ------------------------------------------------------------------------------------------


def test_root_is_a_self_signed_p256_ca_named_swarm_ca():
    root = RootCA.create(now=NOW)
    cert = root.certificate
    assert subject(cert, NameOID.COMMON_NAME) == ["swarm-ca"]
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - NOW >= timedelta(days=20 * 365)


def test_root_digest_is_the_sha256_of_the_der_and_stable(root):
    der = root.certificate.public_bytes(serialization.Encoding.DER)
    assert root_digest(root.certificate) == hashlib.sha256(der).hexdigest() == root.digest
    reloaded = RootCA.from_pem(root.cert_pem(), root.key_pem())
    assert root_digest(reloaded.certificate) == root_digest(root.certificate)
    assert root_digest(RootCA.create().certificate) != root_digest(root.certificate)


# -- node certificates --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(NodeRole))
def test_node_certificate_carries_node_id_role_and_cluster_id(root, role):
    node_id, cluster_id = new_node_id(), new_cluster_id()
    node = root.issue(node_id, role, cluster_id)
    cert = node.certificate
    assert subject(cert, NameOID.COMMON_NAME) == [node_id]
    assert subject(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == [role.value]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == [cluster_id]
    assert node.identity == NodeIdentity(node_id, role, cluster_id)
    cert.verify_directly_issued_by(root.certificate)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)


def test_node_certificate_lifetime_defaults_to_90_days_and_is_a_parameter(root):
    node = root.issue(new_node_id(), NodeRole.WORKER, new_cluster_id(), now=NOW)
    assert DEFAULT_NODE_CERT_LIFETIME == timedelta(days=90)
    assert node.certificate.not_valid_after_utc == NOW + timedelta(days=90)
    assert node.certificate.not_valid_before_utc == NOW - CERT_BACKDATE  # tolerates a CA clock a little ahead
    short = root.issue(new_node_id(), NodeRole.WORKER, new_cluster_id(), lifetime=timedelta(hours=2), now=NOW)
    assert short.certificate.not_valid_after_utc == NOW + timedelta(hours=2)
    with pytest.raises(CertificateError, match="positive"):
        root.issue(new_node_id(), NodeRole.WORKER, new_cluster_id(), lifetime=timedelta(0))


def test_node_certificate_never_outlives_its_root():
    root = RootCA.create(lifetime=timedelta(days=10), now=NOW)
    node = root.issue(new_node_id(), NodeRole.MANAGER, new_cluster_id(), now=NOW)
    assert node.certificate.not_valid_after_utc == root.certificate.not_valid_after_utc


def test_sans_name_the_role_and_node_plus_the_requested_addresses(root):
    node_id = new_node_id()
    manager = root.issue(node_id, NodeRole.MANAGER, new_cluster_id(), ips=["127.0.0.1", "::1"], dns_names=["m1.lan"])
    dns, ips = sans(manager.certificate)
    assert dns == ["swarm-manager", node_id, "swarm-ca", "m1.lan"]
    assert ips == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    worker_dns, worker_ips = sans(root.issue(node_id, NodeRole.WORKER, new_cluster_id()).certificate)
    assert worker_dns == ["swarm-worker", node_id] and worker_ips == []
    with pytest.raises(CertificateError, match="IP address"):
        root.issue(node_id, NodeRole.WORKER, new_cluster_id(), ips=["not-an-ip"])


def test_a_csr_contributes_its_key_but_the_ca_decides_the_identity(root):
    key = new_node_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "i-am-the-leader")]))
        .sign(key, hashes.SHA256())
    )
    node_id, cluster_id = new_node_id(), new_cluster_id()
    cert = root.sign_csr(csr, node_id, NodeRole.WORKER, cluster_id)
    assert cert.public_key() == key.public_key()
    assert NodeCertificate(cert, key).identity == NodeIdentity(node_id, NodeRole.WORKER, cluster_id)
    assert root.sign_csr(node_csr(key), node_id, NodeRole.WORKER, cluster_id).public_key() == key.public_key()


def test_only_p256_keys_are_certified(root):
    csr = node_csr(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(CertificateError, match="P-256"):
        root.sign_csr(csr, new_node_id(), NodeRole.WORKER, new_cluster_id())


# -- identity -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "error"),
    [
        ([(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-manager"), (NameOID.ORGANIZATION_NAME, "c")], "CN \\(node ID\\)"),
        ([(NameOID.COMMON_NAME, "n"), (NameOID.ORGANIZATION_NAME, "c")], "OU \\(role\\)"),
        ([(NameOID.COMMON_NAME, "n"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-worker")], "O \\(cluster ID\\)"),
        (
            [
                (NameOID.COMMON_NAME, "n"),
                (NameOID.COMMON_NAME, "m"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-worker"),
                (NameOID.ORGANIZATION_NAME, "c"),
            ],
            "found 2 values",
        ),
        (
            [(NameOID.COMMON_NAME, "n"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "admin"), (NameOID.ORGANIZATION_NAME, "c")],
            "role 'admin'",
        ),
    ],
    ids=["no-cn", "no-ou", "no-o", "two-cns", "unknown-role"],
)
def test_a_certificate_without_a_node_identity_is_refused_with_a_clear_error(attributes, error):
    cert = self_signed(x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes]))
    with pytest.raises(CertificateError, match=error):
        NodeIdentity.from_certificate(cert)


# -- PEM ----------------------------------------------------------------------------------------------


def test_pem_round_trips_and_refuses_mismatched_or_garbage_input(root):
    node = root.issue(new_node_id(), NodeRole.MANAGER, new_cluster_id())
    again = NodeCertificate.from_pem(node.cert_pem(), node.key_pem())
    assert again.certificate == node.certificate and again.identity == node.identity
    assert b"BEGIN PRIVATE KEY" in node.key_pem()
    other = root.issue(new_node_id(), NodeRole.MANAGER, new_cluster_id())
    with pytest.raises(CertificateError, match="does not belong"):
        NodeCertificate.from_pem(node.cert_pem(), other.key_pem())
    with pytest.raises(CertificateError, match="PEM certificate"):
        NodeCertificate.from_pem(b"garbage", node.key_pem())
    with pytest.raises(CertificateError, match="private key"):
        NodeCertificate.from_pem(node.cert_pem(), b"garbage")


# -- TLS contexts -------------------------------------------------------------------------------------


class Refused(Exception):
    def __init__(self, side: str, error: ssl.SSLError) -> None:
        super().__init__(f"{side}: {error}")
        self.side = side
        self.error = error


def handshake(client: ssl.SSLContext, server: ssl.SSLContext, server_hostname: str = "swarm-manager") -> dict:
    """Run a TLS handshake in memory; return what each side saw of the other, or raise Refused naming the
    side that refused."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", c), ("server", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    raise Refused(name, exc) from None
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # In TLS 1.3 the server judges the client's certificate after the client thinks it is done:
            # a read on the client surfaces the server's verdict.
            try:
                c.read()
            except ssl.SSLWantReadError:
                pass
            return {"version": c.version(), "client_saw": c.getpeercert(), "server_saw": s.getpeercert()}
    raise AssertionError("handshake did not finish")


def common_name(peercert: dict) -> str:
    return dict(field[0] for field in peercert["subject"])["commonName"]


def test_contexts_do_mutual_tls_13_trusting_only_the_cluster_root(root):
    cluster_id = new_cluster_id()
    server_node = root.issue(new_node_id(), NodeRole.MANAGER, cluster_id)
    client_node = root.issue(new_node_id(), NodeRole.MANAGER, cluster_id)
    server, client = (
        server_ssl_context(root.certificate, server_node),
        client_ssl_context(root.certificate, client_node),
    )
    for context in (server, client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.verify_mode == ssl.CERT_REQUIRED
    result = handshake(client, server)
    assert result["version"] == "TLSv1.3"
    assert common_name(result["client_saw"]) == server_node.identity.node_id
    assert common_name(result["server_saw"]) == client_node.identity.node_id

    foreign = RootCA.create().issue(new_node_id(), NodeRole.MANAGER, cluster_id)
    with pytest.raises(Refused, match="unable to get local issuer") as refused:
        handshake(client_ssl_context(root.certificate, foreign), server)
    assert refused.value.side == "server"
    with pytest.raises(Refused, match="unable to get local issuer") as refused:
        handshake(client, server_ssl_context(root.certificate, foreign))
    assert refused.value.side == "client"


def test_a_client_asking_for_a_manager_refuses_a_worker_server(root):
    cluster_id = new_cluster_id()
    worker = root.issue(new_node_id(), NodeRole.WORKER, cluster_id)
    manager = root.issue(new_node_id(), NodeRole.MANAGER, cluster_id)
    with pytest.raises(Refused, match="not valid for 'swarm-manager'") as refused:
        handshake(client_ssl_context(root.certificate, manager), server_ssl_context(root.certificate, worker))
    assert refused.value.side == "client"
