"""What a node keeps in its `--state-dir`, and where (names follow Docker's /var/lib/docker/swarm).

    state.json                          node ID, cluster ID, role, addresses (no keys, no secrets)
    certificates/swarm-root-ca.crt      the cluster root CA certificate
    certificates/swarm-node.crt|.key    this node's certificate and private key
    certificates/raft.kek               the key-encryption key of the Raft log, when the swarm is not autolocked
    raft/                               the encrypted Raft WAL and snapshots (managers only)
    worker/containers/                  this node's task containers (`runtime.containers`): bundles, logs, exit
                                        codes, crun's state; secrets only on tmpfs mounts, never on disk
    images/                             the node's image store (`images.store`): kept when the node leaves
                                        its swarm, as dockerd keeps its images
    volumes/                            the node's local volumes (`runtime.volumes`): kept when it leaves, too
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography import x509

from ..ca.certificates import CertificateError, NodeCertificate, cert_to_pem
from ..errors import RaftswarmError
from ..raft.storage import try_lock_directory


_PAIR_READS = 5
"""Reads of the node's key and certificate until they match (a renewal is replacing them meanwhile)."""


class StateDirError(RaftswarmError):
    """The state directory is missing something the node needs, or holds something it cannot read."""


@dataclass
class NodeState:
    node_id: str
    cluster_id: str
    role: str  # "manager" | "worker"
    listen_addr: str  # host:port for 2377
    advertise_addr: str
    join_peers: dict[str, str] = field(default_factory=dict)
    """Raft ID (hex) -> "host:port" of the managers when this one joined: whom to answer before its log says."""


def write_private(path: Path, content: bytes) -> None:
    """Write a file readable only by its owner, atomically (temp file, fsync, rename, fsync directory)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.certificates = self.root / "certificates"
        self.root_ca_cert = self.certificates / "swarm-root-ca.crt"
        self.node_cert = self.certificates / "swarm-node.crt"
        self.node_key = self.certificates / "swarm-node.key"
        self.kek = self.certificates / "raft.kek"
        self.raft = self.root / "raft"
        self.worker_containers = self.root / "worker" / "containers"
        self.node_state = self.root / "state.json"
        self.images = self.root / "images"
        self.volumes = self.root / "volumes"

    def lock(self) -> int:
        """Take the directory for this process (an flock held until the returned descriptor is closed), or
        raise StateDirError if another raftswarm-node holds it: one node per state directory."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = try_lock_directory(self.root)
        if fd is None:
            raise StateDirError(
                f"{self.root} is in use by another raftswarm-node; stop that one first, or give this one a "
                f"--state-dir (and --socket) of its own"
            )
        return fd

    def remove_swarm_state(self) -> None:
        """Forget the swarm (`swarm leave`): everything here except the image store."""
        for path in (self.certificates, self.raft, self.root / "worker"):
            shutil.rmtree(path, ignore_errors=True)
        self.node_state.unlink(missing_ok=True)

    def has_swarm(self) -> bool:
        return self.node_state.exists()

    def load_node_state(self) -> NodeState:
        try:
            return NodeState(**json.loads(self.node_state.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise StateDirError(f"cannot read {self.node_state}: {exc}") from None

    def save_node_state(self, state: NodeState) -> None:
        write_private(self.node_state, json.dumps(asdict(state), indent=2).encode())

    def save_certificates(self, trust: list[x509.Certificate], node: NodeCertificate) -> None:
        write_private(self.root_ca_cert, b"".join(cert_to_pem(root) for root in trust))
        write_private(self.node_key, node.key_pem())
        write_private(self.node_cert, node.cert_pem())

    def load_certificates(self) -> tuple[x509.Certificate, NodeCertificate]:
        """The current root (the first one trusted) and this node's certificate. A renewal replaces the key
        and the certificate one file after the other: a pair read in between does not match, and is read
        again."""
        for attempt in range(_PAIR_READS):
            try:
                root = x509.load_pem_x509_certificates(self.root_ca_cert.read_bytes())[0]
                node = NodeCertificate.from_pem(self.node_cert.read_bytes(), self.node_key.read_bytes())
            except OSError as exc:
                raise StateDirError(f"cannot read the node's certificates in {self.certificates}: {exc}") from None
            except CertificateError:
                if attempt == _PAIR_READS - 1:
                    raise
                time.sleep(0.01)
                continue
            return root, node
        raise AssertionError("unreachable")

    def load_trust(self) -> list[x509.Certificate]:
        """Every root CA this node trusts (two during a root rotation)."""
        try:
            return x509.load_pem_x509_certificates(self.root_ca_cert.read_bytes())
        except OSError as exc:
            raise StateDirError(f"cannot read {self.root_ca_cert}: {exc}") from None

    def save_kek(self, kek: bytes) -> None:
        write_private(self.kek, kek)

    def remove_kek(self) -> None:
        self.kek.unlink(missing_ok=True)

    def load_kek(self) -> bytes | None:
        """The KEK, or None when the swarm is autolocked (the KEK then comes from the unlock key)."""
        try:
            return self.kek.read_bytes()
        except FileNotFoundError:
            return None
