"""A node's calls to the swarm's managers on 2377 (the client side of `manager.caserver` and friends):
fetching the root CA and pinning it by the join token's digest, joining with a token, asking the leader to
add this manager to Raft, and any call made with this node's certificate.
"""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ..addresses import parse_host_port
from ..ca.certificates import NodeCertificate, NodeRole, client_ssl_context, root_digest, trust_roots
from ..ca.tokens import JoinToken, RootCAMismatch, fingerprint_matches
from ..errors import ControlError
from ..rpc.channel import RpcClient, RpcError

JOIN_TIMEOUT = 60.0
SWARM_PORT = 2377


def split_addr(addr: str) -> tuple[str, int]:
    """A manager's address; the port defaults to 2377 as in `raftswarm swarm join HOST`."""
    return parse_host_port(addr, SWARM_PORT)


async def fetch_pinned_roots(remote: tuple[str, int], token: JoinToken) -> list[x509.Certificate]:
    """Fetch the swarm's root CA without trusting anything yet, then pin it by the token's digest."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the digest in the token is what authenticates the answer
    client = await RpcClient.connect(*remote, context)
    try:
        answer = await client.call("ca.root")
    except RpcError as exc:
        raise ControlError(f"the manager at {remote[0]}:{remote[1]} did not give its root CA: {exc}") from None
    finally:
        await client.close()
    try:
        bundle = x509.load_pem_x509_certificates(bytes(answer["roots"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ControlError(f"the manager at {remote[0]}:{remote[1]} answered with no readable root CA: {exc}") from None
    return pinned_trust(token, bundle)


def pinned_trust(token: JoinToken, bundle: list[x509.Certificate]) -> list[x509.Certificate]:
    """What a joining node trusts from a bundle it fetched unauthenticated: the root whose digest is in the
    token, and any other certificate only if that root issued it (a cross-signed rotation root). Everything
    else is ignored: a man in the middle can put the real root in front of its own, and trusting the whole
    bundle would let it serve the join from its own root and receive the token."""
    if not bundle:
        raise RootCAMismatch("the remote manager sent no root CA; refusing to join")
    pinned = [cert for cert in bundle if root_digest(cert) == token.root_digest]
    if not pinned:
        fingerprint_matches(token, bundle[0])  # raises RootCAMismatch naming both digests
    root = pinned[0]
    trusted = [root]
    for cert in bundle:
        if cert is root or cert in trusted:
            continue
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        trusted.append(cert)
    return trusted


async def call_pinned(remote: tuple[str, int], trust: list[x509.Certificate], method: str, params: dict) -> dict:
    """A call from a node that has no certificate yet, to a manager whose certificate chains to `trust`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = True
    trust_roots(context, trust)
    client = await RpcClient.connect(*remote, context, server_hostname=NodeRole.MANAGER.value)
    try:
        return await client.call(method, params, timeout=JOIN_TIMEOUT)
    except RpcError as exc:
        raise ControlError(str(exc), 400 if exc.code in ("failed", "invalid") else 503) from None
    finally:
        await client.close()


async def join_raft(certificate: NodeCertificate, trust: list[x509.Certificate], managers: list[str], advertise: str) -> None:
    """Ask the leader to add this manager to the Raft membership (it follows `not_leader` answers)."""
    context = client_ssl_context(trust, certificate)
    targets = list(managers)
    deadline = asyncio.get_running_loop().time() + JOIN_TIMEOUT
    while asyncio.get_running_loop().time() < deadline:
        target = targets[0]
        try:
            client = await RpcClient.connect(*split_addr(target), context, server_hostname=NodeRole.MANAGER.value)
            try:
                await client.call("raft.join", {"addr": advertise}, timeout=JOIN_TIMEOUT)
                return
            finally:
                await client.close()
        except RpcError as exc:
            if exc.code == "not_leader" and str(exc):
                targets.insert(0, str(exc))
            else:
                targets.append(targets.pop(0))
                await asyncio.sleep(0.2)
    raise ControlError("the swarm's leader did not add this manager in time", 503)


async def call_as(certificate: NodeCertificate, trust: list[x509.Certificate], managers: list[str], method: str, params: dict) -> dict:
    """A call with this node's certificate, to the first of `managers` that can be reached."""
    context = client_ssl_context(trust, certificate)
    for target in managers:
        try:
            client = await RpcClient.connect(*split_addr(target), context, server_hostname=NodeRole.MANAGER.value)
        except RpcError:
            continue
        try:
            return await client.call(method, params, timeout=JOIN_TIMEOUT)
        finally:
            await client.close()
    raise ControlError(f"no manager answered {method}", 503)
