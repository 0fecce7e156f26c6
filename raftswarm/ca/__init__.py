"""The cluster's certificate authority.

- `certificates`: the root CA, node certificates (CN = node ID, OU = role, O = cluster ID), the identity a
  peer's certificate proves (`NodeIdentity`), and the mutual-TLS 1.3 contexts every connection on 2377 uses.
"""

from .certificates import (
    CertificateError,
    NodeCertificate,
    NodeIdentity,
    NodeRole,
    RootCA,
    client_ssl_context,
    new_cluster_id,
    new_node_id,
    root_digest,
    server_ssl_context,
)

__all__ = [
    "CertificateError",
    "NodeCertificate",
    "NodeIdentity",
    "NodeRole",
    "RootCA",
    "client_ssl_context",
    "new_cluster_id",
    "new_node_id",
    "root_digest",
    "server_ssl_context",
]
