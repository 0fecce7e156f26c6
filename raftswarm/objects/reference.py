"""Docker image references (`busybox`, `localhost:5000/app:1`, `gcr.io/a/b@sha256:...`), parsed exactly as
Docker's distribution/reference `ParseNormalizedNamed` does, plus Docker's default tag.

Pure: no I/O. The grammar below is distribution/reference's regexp.go transcribed (Go's RE2 and Python's `re`
agree on these patterns; `\\w` is ASCII in both with `re.ASCII`):

    reference     := name [ ":" tag ] [ "@" digest ]
    name          := [domain '/'] path-component ['/' path-component]*
    domain        := host [':' port-number]        host: DNS-ish name, IPv4, or [IPv6]
    path-component:= [a-z0-9]+ (separator [a-z0-9]+)*     separator: '.', '_', '__' or '-'+
    tag           := [\\w][\\w.-]{0,127}
    digest        := algorithm ":" hex{32,}

Normalization: the first component is a domain only if it contains "." or ":", is "localhost", or has an
uppercase letter; otherwise the domain is docker.io, and a single-component docker.io path gets "library/".
index.docker.io is docker.io. A reference without tag or digest gets the tag "latest" (what `docker pull`
and the store mean by `busybox`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import RaftswarmError

DEFAULT_DOMAIN = "docker.io"
"""Docker Hub, as normalized names spell it (its registry answers at registry-1.docker.io)."""

LEGACY_DEFAULT_DOMAIN = "index.docker.io"
"""Docker Hub's old name, normalized to `DEFAULT_DOMAIN`."""

OFFICIAL_REPO_PREFIX = "library/"
"""Docker Hub's namespace of official images: `busybox` is docker.io/library/busybox."""

DEFAULT_TAG = "latest"

NAME_TOTAL_LENGTH_MAX = 255
"""distribution/reference's RepositoryNameTotalLengthMax: the path (without domain) at most this long."""

DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
"""The digest algorithms go-digest registers in dockerd, with their hex lengths."""

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_AND_PORT = r"(?:" + _DOMAIN_NAME + "|" + _IPV6 + r")(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_PATH_COMPONENT = _ALPHANUMERIC + r"(?:" + _SEPARATOR + _ALPHANUMERIC + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_NAME = r"(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME

_REFERENCE_RE = re.compile(r"^(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?$", re.ASCII)
_ANCHORED_NAME_RE = re.compile(r"^(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")$", re.ASCII)
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_HEX_RE = re.compile(r"^[a-f0-9]+$")


class InvalidReference(RaftswarmError, ValueError):
    """A string that is not a Docker image reference; the message is Docker's ("invalid reference format")."""


@dataclass(frozen=True)
class Reference:
    """A normalized image reference: `domain`/`path`, an optional `tag` and an optional `digest`.

    `tag` is "latest" when the string had neither tag nor digest; a reference by digest alone has no tag."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository's full name: "docker.io/library/busybox"."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as Docker shows it: docker.io/ and (for one-component paths) library/ dropped."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        remainder = path.removeprefix(OFFICIAL_REPO_PREFIX)
        if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in remainder:
            return remainder
        return path

    @property
    def familiar(self) -> str:
        """What docker shows: "busybox:latest", "myorg/app:1", "localhost:5000/app@sha256:..."."""
        return self.familiar_name + self._suffix()

    def __str__(self) -> str:
        return self.name + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse(text: str) -> Reference:
    """Parse `text` as `docker pull` does (distribution/reference's ParseNormalizedNamed), adding the tag
    "latest" when there is neither tag nor digest. Raises `InvalidReference` with Docker's message."""
    if _IDENTIFIER_RE.match(text):
        raise InvalidReference(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidReference(f"invalid reference format: repository name ({remote}) must be lowercase")
    return _parse_canonical(f"{domain}/{remainder}")


def _split_docker_domain(name: str) -> tuple[str, str]:
    """distribution/reference's splitDockerDomain: (domain, rest) with Docker Hub's defaults applied."""
    maybe_domain, slash, maybe_remote = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if maybe_domain == "localhost":
        domain, remote = maybe_domain, maybe_remote
    elif maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, maybe_remote
    elif "." in maybe_domain or ":" in maybe_domain or maybe_domain.lower() != maybe_domain:
        # A "." or ":" (example.com, 127.0.0.1, host:5000, [::1]:5000) or an uppercase letter, which a
        # path may not have, make it a domain.
        domain, remote = maybe_domain, maybe_remote
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_REPO_PREFIX + remote
    return domain, remote


def _parse_canonical(text: str) -> Reference:
    """distribution/reference's Parse of an already domain-qualified string, plus the default tag."""
    if not text:
        raise InvalidReference("repository name must have at least one component")
    match = _REFERENCE_RE.match(text)
    if match is None:
        lowered = text.lower()
        if lowered != text and _REFERENCE_RE.match(lowered):
            raise InvalidReference("invalid reference format: repository name must be lowercase")
        raise InvalidReference("invalid reference format")
    name, tag, digest = match.groups()
    name_match = _ANCHORED_NAME_RE.match(name)
    assert name_match is not None  # the reference pattern's name group is this pattern
    domain, path = name_match.groups()
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest is not None:
        _check_digest(digest)
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def _check_digest(digest: str) -> None:
    """go-digest's Validate: a registered algorithm and lowercase hex of its length."""
    algorithm, _, hex_part = digest.partition(":")
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        raise InvalidReference("unsupported digest algorithm")
    if len(hex_part) != length:
        raise InvalidReference("invalid checksum digest length")
    if not _DIGEST_HEX_RE.match(hex_part):
        raise InvalidReference("invalid checksum digest format")
