"""The swarm's certificate authority as the managers run it: who may join and with which role, which node
certificates are still honoured, and how the root CA is replaced.

Pure logic over plain data. A `CertificateAuthority` is immutable: an operation that changes it (rotating a
join token, removing a node, rotating the root) returns a new one, and `to_state()` is the plain dict the
leader writes to the replicated store, from which every manager rebuilds the same CA (`from_state()`). The
root key lives in that state, as SwarmKit keeps it in its Raft store: the store is encrypted at rest and
only managers read it (DESIGN, security properties 2 and 4).

Root rotation (`raftswarm swarm ca --rotate`) follows SwarmKit's:

1. `begin_root_rotation()` makes a new root and has the current root cross-sign it (a CA certificate with
   the new root's subject and key, issued by the current root). From then on node certificates come from
   the new root and carry the cross-signed certificate after them, so a node that still trusts only the old
   root verifies them; `trust_bundle()` holds both roots for nodes to trust meanwhile.
2. The caller gets every node a certificate from the new root (forced renewals) and decides when that is done.
3. `finish_root_rotation()` drops the old root. The join tokens are regenerated, since they pin the root.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from raftswarm.errors import RaftswarmError

from .certificates import (
    CERT_BACKDATE,
    DEFAULT_NODE_CERT_LIFETIME,
    CertificateError,
    NodeIdentity,
    NodeRole,
    RootCA,
    cert_from_pem,
    cert_to_pem,
    new_cluster_id,
    new_node_id,
    tls_info,
)
from .tokens import JoinToken, check_join_token
from ..objects.specs import MIN_NODE_CERT_LIFETIME


RENEWAL_WINDOW = (0.5, 0.8)
"""Nodes renew at a random point in this fraction of their certificate's lifetime (SwarmKit's
CertLowerRotationRange/CertUpperRotationRange), so a cluster's nodes do not all renew at once."""


class AuthorityError(RaftswarmError):
    """The CA cannot do what was asked with the state or settings it has."""


class PeerRefused(RaftswarmError):
    """A node's certificate chains to the swarm's root but no longer entitles it to be served."""


class NodeRemoved(PeerRefused):
    """The node was removed from the swarm (`raftswarm node rm`); its certificate is refused from then on."""


class Enrollment(NamedTuple):
    """What a joining node receives."""

    node_id: str
    cert_pem: bytes
    """The node's certificate, followed during a root rotation by the cross-signed new root."""
    root_pem: bytes
    """Every root CA the node should trust (`CertificateAuthority.trust_bundle`)."""

    @property
    def identity(self) -> NodeIdentity:
        return NodeIdentity.from_certificate(cert_from_pem(self.cert_pem))


@dataclass(frozen=True, slots=True)
class RootRotation:
    """A root CA rotation in progress."""

    pending_root: RootCA
    cross_signed: x509.Certificate
    """The pending root's subject and public key, issued by the current root."""


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """The swarm's CA: root, join tokens, cluster ID, node certificate lifetime and removed nodes."""

    cluster_id: str
    root: RootCA
    worker_token: JoinToken
    manager_token: JoinToken
    node_cert_lifetime: timedelta = DEFAULT_NODE_CERT_LIFETIME
    blocked: frozenset[str] = frozenset()
    """IDs of removed nodes."""
    rotation: RootRotation | None = None

    def __post_init__(self) -> None:
        if self.node_cert_lifetime < MIN_NODE_CERT_LIFETIME:
            raise AuthorityError(
                f"node certificate lifetime must be at least {MIN_NODE_CERT_LIFETIME}, got {self.node_cert_lifetime}"
            )
        for role, token in ((NodeRole.WORKER, self.worker_token), (NodeRole.MANAGER, self.manager_token)):
            if token.root_digest != self.root.digest:
                raise AuthorityError(f"the {role.value} join token pins a root CA other than the swarm's")
        if self.rotation and self.rotation.cross_signed.public_key() != self.rotation.pending_root.key.public_key():
            raise AuthorityError("the cross-signed certificate does not carry the pending root CA's key")

    @classmethod
    def create(
        cls,
        *,
        cluster_id: str | None = None,
        node_cert_lifetime: timedelta = DEFAULT_NODE_CERT_LIFETIME,
        root: RootCA | None = None,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """The CA of a new swarm (`swarm init`): a new root (unless given), cluster ID and join tokens.

        The first manager gets its certificate like any joining manager:
        `ca.issue_for_join(ca.join_token(NodeRole.MANAGER), csr_pem)`."""
        root = root or RootCA.create(now=now)
        return cls(
            cluster_id or new_cluster_id(),
            root,
            JoinToken.generate(root.certificate),
            JoinToken.generate(root.certificate),
            node_cert_lifetime,
        )

    # -- joining and renewing ----------------------------------------------------------------------------

    def join_token(self, role: NodeRole) -> str:
        """The current token for `role`, as `raftswarm swarm join-token <role>` prints it."""
        return str(self.worker_token if NodeRole(role) is NodeRole.WORKER else self.manager_token)

    def issue_for_join(
        self, token: str, csr_pem: bytes, requested_node_id: str | None = None, *, now: datetime | None = None
    ) -> Enrollment:
        """Certify a joining node: the role comes from the token, the node ID is always new (as in Docker,
        every join is a new node), and the CSR contributes only its public key.

        `requested_node_id` is the ID a node says it had before; it is never reused, but if that node was
        removed the join is refused so its operator learns why. Raises a JoinTokenError for a bad token."""
        role = check_join_token(token, worker=self.worker_token, manager=self.manager_token)
        if requested_node_id is not None and requested_node_id in self.blocked:
            raise _removed(requested_node_id)
        # A removed node's ID is never handed out again.
        while (node_id := new_node_id()) in self.blocked:
            pass
        return Enrollment(node_id, self._sign(csr_pem, node_id, role, now), self.trust_bundle_pem())

    def renew(
        self,
        identity: NodeIdentity,
        csr_pem: bytes,
        desired_role: NodeRole | None = None,
        *,
        now: datetime | None = None,
    ) -> bytes:
        """A new certificate for a node that presented a valid one (`identity` is what that certificate
        says, as verified by the TLS handshake): same node ID, and the same role unless the swarm changed
        the node's desired role (promote/demote). A removed node is refused."""
        self.check_peer(identity)
        return self._sign(csr_pem, identity.node_id, desired_role or identity.role, now)

    def check_peer(self, identity: NodeIdentity) -> None:
        """Refuse a peer whose certificate chains to the root but is no longer honoured: a removed node, or a
        certificate for another cluster ID. Managers call this on every connection."""
        if identity.cluster_id != self.cluster_id:
            raise PeerRefused(
                f"node {identity.node_id} holds a certificate of swarm {identity.cluster_id}, not of this swarm "
                f"({self.cluster_id})"
            )
        if identity.node_id in self.blocked:
            raise _removed(identity.node_id)

    def _sign(self, csr_pem: bytes, node_id: str, role: NodeRole, now: datetime | None) -> bytes:
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CertificateError(f"not a PEM certificate signing request: {exc}") from None
        signer = self.rotation.pending_root if self.rotation else self.root
        cert = signer.sign_csr(csr, node_id, role, self.cluster_id, lifetime=self.node_cert_lifetime, now=now)
        chain = [cert, self.rotation.cross_signed] if self.rotation else [cert]
        return b"".join(cert_to_pem(c) for c in chain)

    # -- changing the CA: each returns the new CA, for the caller to write to the store ------------------------

    def rotate_join_token(self, role: NodeRole) -> CertificateAuthority:
        """A new secret for `role`'s token; the old token is refused from then on. Nodes already in the swarm
        are unaffected: they hold certificates, and tokens are only for joining."""
        token = JoinToken.generate(self.root.certificate)
        if NodeRole(role) is NodeRole.WORKER:
            return replace(self, worker_token=token)
        return replace(self, manager_token=token)

    def block(self, node_id: str) -> CertificateAuthority:
        """Remove `node_id` for good: `check_peer` and `renew` refuse its certificate from then on."""
        return replace(self, blocked=self.blocked | {node_id})

    def begin_root_rotation(
        self, new_root: RootCA | None = None, *, now: datetime | None = None
    ) -> CertificateAuthority:
        """Start replacing the root CA with `new_root` (default: a new one), cross-signed by the current root.

        During a rotation already in progress this starts over towards the newer root, as SwarmKit does;
        certificates from the abandoned root still chain to the current one through their cross-signed
        certificate."""
        new_root = new_root or RootCA.create(now=now)
        if new_root.certificate == self.root.certificate:
            raise AuthorityError("that root CA is already the swarm's root; a rotation needs a different one")
        return replace(self, rotation=RootRotation(new_root, _cross_sign(self.root, new_root.certificate)))

    def finish_root_rotation(self) -> CertificateAuthority:
        """Make the pending root the only root and regenerate both join tokens (they pin the root).

        Call it once every node holds a certificate from the new root: nodes still on the old one are
        refused afterwards."""
        if self.rotation is None:
            raise AuthorityError("no root CA rotation is in progress; start one with `raftswarm swarm ca --rotate`")
        root = self.rotation.pending_root
        return replace(
            self,
            root=root,
            rotation=None,
            worker_token=JoinToken.generate(root.certificate),
            manager_token=JoinToken.generate(root.certificate),
        )

    def trust_bundle(self) -> list[x509.Certificate]:
        """The root CAs a node trusts: the root, and during a rotation the pending root after it."""
        return [self.root.certificate] + ([self.rotation.pending_root.certificate] if self.rotation else [])

    def trust_bundle_pem(self) -> bytes:
        return b"".join(cert_to_pem(c) for c in self.trust_bundle())

    def tls_info(self) -> dict[str, str]:
        """The swarm's TLSInfo (Docker's `Swarm.TLSInfo`): the root, and the CA node certificates come from now --
        during a rotation the pending root, as SwarmKit's IssuerFromAPIRootCA has it, so a node whose TLSInfo
        names its certificate's issuer matches the swarm's once it holds one from the new root."""
        issuer = self.rotation.pending_root if self.rotation else self.root
        return tls_info(self.root.certificate, issuer.certificate)

    # -- the replicated store ------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain data (str, float, list, dict, None) for the replicated store; see `from_state`."""
        return {
            "cluster_id": self.cluster_id,
            "root": _root_state(self.root),
            "join_tokens": {"worker": str(self.worker_token), "manager": str(self.manager_token)},
            "node_cert_lifetime_seconds": self.node_cert_lifetime.total_seconds(),
            "blocked_nodes": sorted(self.blocked),
            "pending_root": _root_state(self.rotation.pending_root) if self.rotation else None,
            "cross_signed": cert_to_pem(self.rotation.cross_signed).decode("ascii") if self.rotation else None,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CertificateAuthority:
        """Rebuild a CA from `to_state()`'s output; raises AuthorityError (or CertificateError for a broken
        PEM) if the state is not one."""
        try:
            pending, cross_signed = state["pending_root"], state["cross_signed"]
            if (pending is None) != (cross_signed is None):
                raise AuthorityError("certificate authority state has only half of a root rotation")
            rotation = (
                RootRotation(_root_from_state(pending), cert_from_pem(cross_signed.encode("ascii")))
                if pending is not None
                else None
            )
            return cls(
                cluster_id=state["cluster_id"],
                root=_root_from_state(state["root"]),
                worker_token=JoinToken.parse(state["join_tokens"]["worker"]),
                manager_token=JoinToken.parse(state["join_tokens"]["manager"]),
                node_cert_lifetime=timedelta(seconds=state["node_cert_lifetime_seconds"]),
                blocked=frozenset(state["blocked_nodes"]),
                rotation=rotation,
            )
        except KeyError as exc:
            raise AuthorityError(f"certificate authority state is missing {exc.args[0]!r}") from None
        except (TypeError, AttributeError) as exc:
            raise AuthorityError(f"certificate authority state is malformed: {exc}") from None


def renewal_time(cert: x509.Certificate, rng: random.Random) -> datetime:
    """When a node should renew `cert`: a random point between 50% and 80% of its lifetime.

    The lifetime counts from when the certificate was issued, not from its backdated start: the backdate
    is slack for clock skew, and counting it would put a short-lived certificate's renewal in the past
    (a 10-minute certificate is valid for 70), so the node would renew in a loop."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if end - start > CERT_BACKDATE:
        start += CERT_BACKDATE
    return start + (end - start) * rng.uniform(*RENEWAL_WINDOW)


def _removed(node_id: str) -> NodeRemoved:
    return NodeRemoved(
        f"node {node_id} was removed from the swarm; to add this machine again, run `raftswarm swarm leave "
        "--force` on it and join with a token (it gets a new node ID)"
    )


def _cross_sign(issuer: RootCA, new_root: x509.Certificate) -> x509.Certificate:
    """`new_root` re-issued by `issuer`: same subject, key and extensions (SwarmKit's CrossSignCACertificate),
    so a chain node -> cross-signed -> `issuer` verifies wherever `issuer` is trusted."""
    try:
        is_ca = new_root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise AuthorityError("the new root certificate is not a CA certificate")
    builder = (
        x509.CertificateBuilder()
        .subject_name(new_root.subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(new_root.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(new_root.not_valid_before_utc)
        # A certificate cannot be trusted past its issuer's expiry, so do not claim it.
        .not_valid_after(min(new_root.not_valid_after_utc, issuer.certificate.not_valid_after_utc))
    )
    for extension in new_root.extensions:
        if not isinstance(extension.value, x509.AuthorityKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    authority_key = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    return builder.add_extension(authority_key, critical=False).sign(issuer.key, hashes.SHA256())


def _root_state(root: RootCA) -> dict[str, str]:
    return {"cert": root.cert_pem().decode("ascii"), "key": root.key_pem().decode("ascii")}


def _root_from_state(state: Mapping[str, str]) -> RootCA:
    return RootCA.from_pem(state["cert"].encode("ascii"), state["key"].encode("ascii"))
