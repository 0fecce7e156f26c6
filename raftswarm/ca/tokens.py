"""Join tokens: `SWMTKN-1-<root CA digest>-<secret>`, exactly as Docker prints them.

A token does two jobs. Its digest part lets a joining node pin the root CA it fetches from a manager it has
never met (`fingerprint_matches`); its secret part is what a manager checks before it issues a certificate
(`check_join_token`), with one token per role. Both parts are base 36 and zero-padded as in SwarmKit
(ca/config.go, GenerateJoinToken): the digest is the SHA-256 of the root certificate's DER, the secret 128
random bits. A token printed by Docker therefore parses here and prints back unchanged.

Error messages never repeat a token's secret: they end up in logs.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass, field

from cryptography import x509


from .certificates import NodeRole, root_digest
from ..errors import InvalidInput

TOKEN_PREFIX = "SWMTKN"
TOKEN_VERSION = "1"

DIGEST_LENGTH = 50
"""ceil(log36(2**256)): a SHA-256 digest in base 36, zero-padded (SwarmKit's base36DigestLen)."""

SECRET_BITS = 128
"""Entropy of a token's secret (SwarmKit's generatedSecretEntropyBytes = 16)."""

SECRET_LENGTH = 25
"""ceil(log36(2**128)): the secret in base 36, zero-padded (SwarmKit's maxGeneratedSecretLength)."""

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
# Explicit ASCII ranges: int(s, 36) alone would also take upper case, "_" and non-ASCII digits.
_BASE36_TEXT = re.compile("[0-9a-z]+")
_SHAPE = f"{TOKEN_PREFIX}-{TOKEN_VERSION}-<root CA digest>-<secret>"
_ASK_A_MANAGER = (
    "ask a manager for `raftswarm swarm join-token worker` "
    "(or `raftswarm swarm join-token manager` to join as a manager)"
)


class JoinTokenError(InvalidInput):
    """A join token cannot be used: malformed, for another swarm, rotated, or not matching the root CA."""


class InvalidJoinToken(JoinTokenError):
    """The text is not a join token at all (wrong prefix, version, length or characters)."""


class WrongSwarm(JoinTokenError):
    """A well-formed token pins a root CA other than this swarm's: it belongs to another swarm, or this
    swarm's root CA was rotated after the token was copied."""


class JoinTokenRejected(JoinTokenError):
    """A token for this swarm whose secret matches neither current token: rotated, or mistyped."""


class RootCAMismatch(JoinTokenError):
    """The root CA a manager sent is not the one the join token pins: the joining node must not trust it."""


@dataclass(frozen=True, slots=True)
class JoinToken:
    """A parsed join token. `str(token)` gives Docker's text form."""

    root_digest: str
    """SHA-256 of the root CA certificate's DER, in hex (as `certificates.root_digest` gives it)."""
    secret: str = field(repr=False)
    """25 base-36 characters; kept out of `repr` so a token object in a log line does not leak it."""

    @classmethod
    def generate(cls, root_cert: x509.Certificate) -> JoinToken:
        """A new token for the swarm whose root CA is `root_cert`, with a fresh random secret."""
        return cls(root_digest(root_cert), _to_base36(secrets.randbits(SECRET_BITS), SECRET_LENGTH))

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        """Read Docker's text form; surrounding whitespace (a pasted newline) is ignored.

        Raises InvalidJoinToken saying which part is wrong."""
        parts = text.strip().split("-")
        if parts == [""]:
            raise InvalidJoinToken(f"invalid join token: it is empty; {_ASK_A_MANAGER}")
        if parts[0] != TOKEN_PREFIX or len(parts) < 2:
            raise InvalidJoinToken(f"invalid join token: it must look like {_SHAPE}")
        if parts[1] != TOKEN_VERSION:
            raise InvalidJoinToken(
                f"invalid join token: version {parts[1][:8]!r} is not supported; "
                f"raftswarm reads {TOKEN_PREFIX}-{TOKEN_VERSION} tokens"
            )
        if len(parts) != 4:
            raise InvalidJoinToken(
                f"invalid join token: it must look like {_SHAPE}, but it has {len(parts)} dash-separated parts, not 4"
            )
        digest_text, secret = parts[2], parts[3]
        _check_base36("root CA digest", digest_text, DIGEST_LENGTH)
        _check_base36("secret", secret, SECRET_LENGTH)
        digest = int(digest_text, 36)
        if digest >= 1 << 256:
            raise InvalidJoinToken("invalid join token: its root CA digest is larger than a SHA-256 digest can be")
        return cls(f"{digest:064x}", secret)

    def __str__(self) -> str:
        digest = _to_base36(int(self.root_digest, 16), DIGEST_LENGTH)
        return f"{TOKEN_PREFIX}-{TOKEN_VERSION}-{digest}-{self.secret}"


def generate_join_token(root_cert: x509.Certificate) -> str:
    """A new join token, as text, for the swarm whose root CA is `root_cert`."""
    return str(JoinToken.generate(root_cert))


def root_digest_of_token(token: str | JoinToken) -> str:
    """The root CA digest (hex SHA-256) a token pins."""
    return _as_token(token).root_digest


def check_join_token(presented: str | JoinToken, *, worker: str | JoinToken, manager: str | JoinToken) -> NodeRole:
    """The role a joining node gets for `presented`, given the swarm's current worker and manager tokens.

    The secrets are compared in constant time, and against both tokens every time, so how long the check
    takes says nothing about how much of a secret was right or which token it was close to.

    Raises InvalidJoinToken (not a token), WrongSwarm (pins another root CA) or JoinTokenRejected
    (this swarm's digest, but a rotated or wrong secret)."""
    token = _as_token(presented)
    current = {NodeRole.WORKER: _as_token(worker), NodeRole.MANAGER: _as_token(manager)}
    if all(token.root_digest != t.root_digest for t in current.values()):
        raise WrongSwarm(
            "join token is for a different swarm: the root CA it pins is not this swarm's "
            f"(or this swarm's root CA was rotated since the token was issued); {_ASK_A_MANAGER}"
        )
    matched = [
        role
        for role, t in current.items()
        # compare_digest runs first so that both comparisons always happen.
        if hmac.compare_digest(token.secret, t.secret) and token.root_digest == t.root_digest
    ]
    if not matched:
        raise JoinTokenRejected(f"join token was rotated or is invalid; {_ASK_A_MANAGER}")
    # The least privilege wins should the two tokens ever be equal.
    return matched[0]


def fingerprint_matches(token: str | JoinToken, root_cert: x509.Certificate) -> bool:
    """Pin the root CA a joining node fetched from a manager to the digest in its join token.

    Returns True when they match and raises RootCAMismatch otherwise -- never returns False, so a caller
    that forgets to look at the result still cannot trust the wrong root."""
    expected = _as_token(token).root_digest
    actual = root_digest(root_cert)
    if actual != expected:
        raise RootCAMismatch(
            f"the remote manager's root CA (sha256:{actual}) does not match the join token, which pins "
            f"sha256:{expected}: possible man-in-the-middle, or a token of another swarm; refusing to join"
        )
    return True


def _as_token(token: str | JoinToken) -> JoinToken:
    return token if isinstance(token, JoinToken) else JoinToken.parse(token)


def _check_base36(what: str, text: str, length: int) -> None:
    if len(text) != length:
        raise InvalidJoinToken(f"invalid join token: its {what} must be {length} characters, not {len(text)}")
    if not _BASE36_TEXT.fullmatch(text):
        raise InvalidJoinToken(f"invalid join token: its {what} may contain only digits 0-9 and letters a-z")


def _to_base36(n: int, width: int) -> str:
    digits = []
    while n:
        n, digit = divmod(n, len(_BASE36))
        digits.append(_BASE36[digit])
    return "".join(reversed(digits)).rjust(width, "0")
