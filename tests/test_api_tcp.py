"""The node's API on TCP (dockerd's `-H tcp://... --tlsverify`): served only over TLS, only to clients with a
certificate from the configured CA; the docker SDK talks to it like to a TLS dockerd."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from raftswarm.node.daemon import NodeConfig, NodeDaemon


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _certificate(name: str, key, issuer_name, issuer_key, *, ca: bool = False, ip: str | None = None, client: bool = False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pki(directory: Path, prefix: str) -> dict[str, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(f"{prefix}-ca", ca_key, None, None, ca=True)
    files = {}
    for role, extra in (("server", {"ip": "127.0.0.1"}), ("client", {"client": True})):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"{prefix}-{role}", key, ca.subject, ca_key, **extra)
        files[f"{role}_cert"] = directory / f"{prefix}-{role}.pem"
        files[f"{role}_key"] = directory / f"{prefix}-{role}-key.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"].write_bytes(_key_pem(key))
    files["ca"] = directory / f"{prefix}-ca.pem"
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def node(tmp_path):
    pki = _pki(tmp_path, "good")
    port = _free_port()
    daemon = NodeDaemon(
        NodeConfig(
            state_dir=tmp_path / "state",
            socket=tmp_path / "api.sock",
            api_tcp=("127.0.0.1", port),
            api_tls=(pki["ca"], pki["server_cert"], pki["server_key"]),
        )
    )
    await daemon.start()
    yield port, pki
    await daemon.stop()


def _client_context(ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def _ping(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /v1.50/_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return tls.recv(4096)


async def test_a_client_with_a_certificate_from_the_ca_is_served(node):
    port, pki = node
    answer = await asyncio.to_thread(_ping, port, _client_context(pki["ca"], pki["client_cert"], pki["client_key"]))
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"OK")


async def test_a_client_without_a_certificate_or_from_another_ca_is_refused(node, tmp_path):
    port, pki = node
    other = _pki(tmp_path, "other")
    for cert, key in ((None, None), (other["client_cert"], other["client_key"])):
        try:
            answer = await asyncio.to_thread(_ping, port, _client_context(pki["ca"], cert, key))
        except (ssl.SSLError, ConnectionError):
            continue  # refused during the handshake
        assert answer == b""  # TLS 1.3 reports the refusal at the first read: nothing is served


async def test_the_docker_sdk_speaks_to_the_tls_api(node, monkeypatch):
    docker_sdk = pytest.importorskip("docker")
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)  # requests would verify against these instead of the given CA
    port, pki = node
    tls = docker_sdk.tls.TLSConfig(client_cert=(str(pki["client_cert"]), str(pki["client_key"])), ca_cert=str(pki["ca"]), verify=True)
    client = docker_sdk.DockerClient(base_url=f"https://127.0.0.1:{port}", tls=tls, version="1.50")
    try:
        assert (await asyncio.to_thread(client.version))["ApiVersion"] == "1.50"
    finally:
        client.close()
