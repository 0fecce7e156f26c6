"""The cluster root CA, node certificates, and the TLS contexts built from them.

Certificates follow SwarmKit's, so a Docker user reads them the same way:

- The root is a self-signed ECDSA P-256 certificate with CN "swarm-ca", valid for 20 years.
- A node certificate is ECDSA P-256 with CN = node ID, OU = role ("swarm-manager" or "swarm-worker"),
  O = cluster ID, valid for 90 days by default. Its DNS SANs are the role and the node ID (plus "swarm-ca" for
  managers), as SwarmKit issues them, so a client can require a manager by checking the server name
  "swarm-manager" during the TLS handshake.
- The CA decides the identity: a CSR contributes only its public key, never its subject.

Who a peer is comes from its certificate (`NodeIdentity`), never from what it says in a message.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hashlib
import ipaddress
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftswarm.errors import RaftswarmError

ROOT_CA_NAME = "swarm-ca"
"""CN of the root certificate, and a DNS SAN of every manager certificate (managers can issue), as in SwarmKit."""

ROOT_CA_LIFETIME = timedelta(days=20 * 365)
"""SwarmKit's RootCAExpiration: the root outlives any cluster that does not rotate it on purpose."""

DEFAULT_NODE_CERT_LIFETIME = timedelta(days=90)
"""Docker's default `--cert-expiry`; nodes renew at 50-80% of it."""

CERT_BACKDATE = timedelta(hours=1)
"""Certificates start this long before they are issued, so a node whose clock is a little behind the CA's
accepts them at once (SwarmKit's CertBackdate)."""

ID_LENGTH = 25
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


class NodeRole(enum.StrEnum):
    """The role a node certificate grants, spelled as Docker spells it in the certificate's OU."""

    MANAGER = "swarm-manager"
    WORKER = "swarm-worker"


class CertificateError(RaftswarmError):
    """A certificate, key or CSR is unusable: malformed, of the wrong kind, or missing a node's identity."""


def new_node_id() -> str:
    """A random node ID in Docker's format: 25 lowercase base-36 characters (about 129 bits)."""
    return _random_id()


def new_cluster_id() -> str:
    """A random cluster ID, the O of every certificate in the cluster; same format as node IDs."""
    return _random_id()


def _random_id() -> str:
    n = secrets.randbelow(len(_ID_ALPHABET) ** ID_LENGTH)
    digits = []
    for _ in range(ID_LENGTH):
        n, digit = divmod(n, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[digit])
    return "".join(reversed(digits))


def new_node_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key, the only kind of key raftswarm certifies."""
    return ec.generate_private_key(ec.SECP256R1())


def node_csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """The CSR a joining node sends. Its subject is empty: the CA assigns the identity."""
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())


def certificate_issuer_key_id(certificate: x509.Certificate) -> str:
    """The key identifier of the CA that signed `certificate` (hex): which root a node's certificate is from."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return ""
    return (extension.value.key_identifier or b"").hex()


def subject_key_id(certificate: x509.Certificate) -> str:
    """A CA certificate's own key identifier (hex), as its issued certificates name it."""
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        return ""


def root_digest(root: x509.Certificate) -> str:
    """SHA-256 of the root certificate's DER, in hex: what a join token pins the root CA by."""
    return hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()


def tls_info(trust_root: x509.Certificate, issuer: x509.Certificate) -> dict[str, str]:
    """Docker's TLSInfo: the root CA a node trusts (PEM), and the subject and public key of the CA that issues
    (or issued) its certificate, each as base64 of its DER -- SwarmKit's RawSubject and RawSubjectPublicKeyInfo.
    The docker CLI tells a node's TLS status by comparing the node's TLSInfo with the swarm's."""
    public_key = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "TrustRoot": cert_to_pem(trust_root).decode("ascii"),
        "CertIssuerSubject": base64.b64encode(issuer.subject.public_bytes()).decode("ascii"),
        "CertIssuerPublicKey": base64.b64encode(public_key).decode("ascii"),
    }


# -- identity ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Who a certificate says its holder is."""

    node_id: str
    role: NodeRole
    cluster_id: str

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> NodeIdentity:
        """Read CN/OU/O; each must be present exactly once and the OU must be a known role."""
        node_id = _single_attribute(cert, NameOID.COMMON_NAME, "CN (node ID)")
        role = _single_attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU (role)")
        cluster_id = _single_attribute(cert, NameOID.ORGANIZATION_NAME, "O (cluster ID)")
        try:
            node_role = NodeRole(role)
        except ValueError:
            known = " or ".join(repr(r.value) for r in NodeRole)
            raise CertificateError(f"certificate of node {node_id!r} has role {role!r}, not {known}") from None
        return cls(node_id, node_role, cluster_id)


def _single_attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str) or not values[0].value:
        found = "none" if not values else f"{len(values)} values" if len(values) > 1 else "an empty value"
        raise CertificateError(
            f"certificate {cert.subject.rfc4514_string()!r} is not a raftswarm node certificate: "
            f"it needs exactly one {what} in its subject, found {found}"
        )
    return values[0].value


# -- certificates and keys ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCertificate:
    """A node's certificate, its private key, and the certificates that chain it to a root its peers trust
    (during a root rotation: the new root cross-signed by the old one)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if self.certificate.public_key() != self.key.public_key():
            raise CertificateError("the private key does not belong to the certificate")

    @property
    def identity(self) -> NodeIdentity:
        return NodeIdentity.from_certificate(self.certificate)

    def cert_pem(self) -> bytes:
        """The certificate followed by its chain, as a TLS peer is sent them."""
        return b"".join(cert_to_pem(c) for c in (self.certificate, *self.chain))

    def key_pem(self) -> bytes:
        return key_to_pem(self.key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> NodeCertificate:
        return cls.with_key(cert_pem, key_from_pem(key_pem))

    @classmethod
    def with_key(cls, cert_pem: bytes, key: ec.EllipticCurvePrivateKey) -> NodeCertificate:
        """From PEM holding the certificate and then its chain."""
        try:
            certificates = x509.load_pem_x509_certificates(cert_pem)
        except ValueError as exc:
            raise CertificateError(f"not a PEM certificate chain: {exc}") from None
        return cls(certificates[0], key, tuple(certificates[1:]))


@dataclass(frozen=True, slots=True)
class RootCA:
    """The cluster's root certificate with its signing key; issues node certificates."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def __post_init__(self) -> None:
        if self.certificate.public_key() != self.key.public_key():
            raise CertificateError("the private key does not belong to the root certificate")

    @classmethod
    def create(cls, *, lifetime: timedelta = ROOT_CA_LIFETIME, now: datetime | None = None) -> RootCA:
        """A new self-signed root CA with CN "swarm-ca"."""
        key = new_node_key()
        now = now or datetime.now(UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CA_NAME)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CERT_BACKDATE)
            .not_valid_after(now + lifetime)
            # No path length limit: root rotation later cross-signs the new root as an intermediate.
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @property
    def digest(self) -> str:
        return root_digest(self.certificate)

    def issue(
        self,
        node_id: str,
        role: NodeRole,
        cluster_id: str,
        *,
        lifetime: timedelta = DEFAULT_NODE_CERT_LIFETIME,
        ips: Iterable[str] = (),
        dns_names: Iterable[str] = (),
        now: datetime | None = None,
    ) -> NodeCertificate:
        """A certificate for `node_id` with a fresh key (a node bootstrapping itself, e.g. `swarm init`)."""
        key = new_node_key()
        certificate = self._sign(key.public_key(), node_id, role, cluster_id, lifetime, ips, dns_names, now)
        return NodeCertificate(certificate, key)

    def sign_csr(
        self,
        csr: x509.CertificateSigningRequest,
        node_id: str,
        role: NodeRole,
        cluster_id: str,
        *,
        lifetime: timedelta = DEFAULT_NODE_CERT_LIFETIME,
        ips: Iterable[str] = (),
        dns_names: Iterable[str] = (),
        now: datetime | None = None,
    ) -> x509.Certificate:
        """A certificate for the key in `csr`; the identity is the CA's to decide, the CSR's subject is ignored."""
        if not csr.is_signature_valid:
            raise CertificateError("the certificate signing request's signature does not verify")
        return self._sign(csr.public_key(), node_id, role, cluster_id, lifetime, ips, dns_names, now)

    def _sign(
        self,
        public_key: CertificatePublicKeyTypes,
        node_id: str,
        role: NodeRole,
        cluster_id: str,
        lifetime: timedelta,
        ips: Iterable[str],
        dns_names: Iterable[str],
        now: datetime | None,
    ) -> x509.Certificate:
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
            raise CertificateError("node keys must be ECDSA P-256")
        if not node_id or not cluster_id:
            raise CertificateError("a node certificate needs a node ID and a cluster ID")
        if lifetime <= timedelta(0):
            raise CertificateError(f"certificate lifetime must be positive, got {lifetime}")
        role = NodeRole(role)
        now = now or datetime.now(UTC)
        # A certificate cannot be trusted past its issuer's expiry, so do not claim it.
        not_after = min(now + lifetime, self.certificate.not_valid_after_utc)
        names = [role.value, node_id] + ([ROOT_CA_NAME] if role is NodeRole.MANAGER else []) + list(dns_names)
        try:
            addresses = [ipaddress.ip_address(ip) for ip in ips]
        except ValueError as exc:
            raise CertificateError(f"invalid IP address for a certificate: {exc}") from None
        sans = [x509.DNSName(n) for n in dict.fromkeys(names)] + [x509.IPAddress(a) for a in dict.fromkeys(addresses)]
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
            ]
        )
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CERT_BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def cert_pem(self) -> bytes:
        return cert_to_pem(self.certificate)

    def key_pem(self) -> bytes:
        return key_to_pem(self.key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> RootCA:
        return cls(cert_from_pem(cert_pem), key_from_pem(key_pem))


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


# -- PEM ---------------------------------------------------------------------------------------------------


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_from_pem(data: bytes) -> x509.Certificate:
    """The first certificate in `data`."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8; whoever writes it to disk wraps it first (see DESIGN: no secret in plaintext)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_from_pem(data: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateError("node keys must be ECDSA P-256")
    return key


# -- TLS ---------------------------------------------------------------------------------------------------


def server_ssl_context(root: x509.Certificate | list[x509.Certificate], node: NodeCertificate) -> ssl.SSLContext:
    """TLS 1.3 server side: presents `node`'s certificate and requires a client certificate chained to `root`.

    The caller still decides what the client's identity may do (`NodeIdentity` of the peer certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.num_tickets = 0  # connections are long-lived and never resumed; skip the session tickets
    _configure_mutual_tls(context, root, node)
    return context


def client_ssl_context(root: x509.Certificate | list[x509.Certificate], node: NodeCertificate) -> ssl.SSLContext:
    """TLS 1.3 client side: presents `node`'s certificate and trusts only servers chained to `root`.

    Hostname checking stays on: connect with `server_hostname=NodeRole.MANAGER` (as SwarmKit does) and
    the handshake itself refuses a server that does not hold a manager certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _configure_mutual_tls(context, root, node)
    return context


def _configure_mutual_tls(
    context: ssl.SSLContext, root: x509.Certificate | list[x509.Certificate], node: NodeCertificate
) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    trust_roots(context, root if isinstance(root, list) else [root])
    _load_node_certificate(context, node)


def trust_roots(context: ssl.SSLContext, roots: list[x509.Certificate]) -> None:
    """Trust these roots too (a live context learns the new root of a rotation this way)."""
    for root in roots:
        context.load_verify_locations(cadata=cert_to_pem(root).decode("ascii"))


def reload_node_certificate(context: ssl.SSLContext, node: NodeCertificate) -> None:
    """Put a renewed certificate into a live context: connections made from now on present it."""
    _load_node_certificate(context, node)


def _load_node_certificate(context: ssl.SSLContext, node: NodeCertificate) -> None:
    """Hand the certificate and key to OpenSSL, which in Python's ssl module only reads them from a path.

    The key is PEM-encrypted under a one-time random password that lives only in this frame, and the file
    is an anonymous in-memory file (memfd) opened through /proc and closed as soon as OpenSSL has read it:
    the key never reaches a filesystem. Where memfd is unavailable, the file is created 0600 in a fresh
    0700 directory and deleted at once, and still holds the key only in encrypted form.
    """
    password = secrets.token_bytes(32)
    encrypted_key = node.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with _private_file(node.cert_pem() + encrypted_key) as path:
        context.load_cert_chain(path, password=password)


@contextlib.contextmanager
def _private_file(content: bytes) -> Iterator[str]:
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("raftswarm-node-certificate", os.MFD_CLOEXEC)
        try:
            _write_all(fd, content)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="raftswarm-tls-") as directory:
        path = os.path.join(directory, "node.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, content)
        finally:
            os.close(fd)
        try:
            yield path
        finally:
            os.unlink(path)


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]
