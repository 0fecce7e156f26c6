"""Which node the CLI talks to.

The first of these that is set wins:

1. `-H/--host unix://PATH`
2. `RAFTSWARM_HOST`
3. `DOCKER_HOST`, only when it is a `unix://` URL (a `tcp://` one points at something else; it is ignored)
4. the current cluster that `raftswarm cluster up` records: the file `current-host` in
   `$XDG_CONFIG_HOME/raftswarm/` (default `~/.config/raftswarm/`), holding one `unix://` URL
5. the node daemon's default socket: `/run/raftswarm/raftswarm.sock` as root, else `~/.local/run/raftswarm.sock`

This mirrors docker's order (flag, environment, current context, default). A bare absolute path is accepted
wherever a URL is, for convenience.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import CommandError

UNIX_SCHEME = "unix://"


@dataclass(frozen=True)
class DaemonAddress:
    """Where the node's API socket is, and which setting said so (shown when the value is invalid)."""

    socket_path: str
    source: str

    @property
    def url(self) -> str:
        return UNIX_SCHEME + self.socket_path


def default_socket_path() -> str:
    """The default of `raftswarm-node --socket` (kept equal to it: the CLI does not import the daemon)."""
    return "/run/raftswarm/raftswarm.sock" if os.geteuid() == 0 else str(Path.home() / ".local/run/raftswarm.sock")


def current_host_file(environ: Mapping[str, str] = os.environ) -> Path:
    """The file `cluster up` writes the current cluster's URL to."""
    config_home = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "raftswarm" / "current-host"


def parse_host(value: str, source: str) -> DaemonAddress:
    """`unix:///path` (or `/path`) -> the socket path; anything else is refused with what to do instead."""
    value = value.strip()
    if value.startswith(UNIX_SCHEME):
        path = value[len(UNIX_SCHEME) :]
    elif value.startswith("/"):
        path = value
    else:
        raise CommandError(
            f"invalid daemon address {value!r} from {source}: raftswarm talks to a node over its unix socket; "
            "use unix:///path/to/raftswarm.sock"
        )
    if not path:
        return DaemonAddress(default_socket_path(), source)
    return DaemonAddress(path, source)


def resolve_host(flag: str | None, environ: Mapping[str, str] = os.environ) -> DaemonAddress:
    """Apply the precedence above."""
    if flag:
        return parse_host(flag, "-H/--host")
    if environ.get("RAFTSWARM_HOST"):
        return parse_host(environ["RAFTSWARM_HOST"], "RAFTSWARM_HOST")
    if environ.get("DOCKER_HOST", "").startswith(UNIX_SCHEME):
        return parse_host(environ["DOCKER_HOST"], "DOCKER_HOST")
    recorded = current_host_file(environ)
    try:
        content = recorded.read_text().strip()
    except FileNotFoundError:
        content = ""
    except OSError as exc:
        raise CommandError(f"cannot read the current cluster from {recorded}: {exc.strerror}") from exc
    if content:
        return parse_host(content, str(recorded))
    return DaemonAddress(default_socket_path(), "the default socket")
