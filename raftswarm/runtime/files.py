"""The files a task's container is given, and the image files its spec is resolved against.

`read_in_rootfs` reads a file of a task's root filesystem from the host without following a symlink out of
it: an image is untrusted input, and its /etc/passwd could be a link to the node's own files. The generated
files are Docker's: /etc/hosts with the loopback names, the spec's extra hosts (ContainerSpec.Hosts) and
the task's own addresses under its hostname, /etc/hostname, and /etc/resolv.conf naming the task's resolver
(127.0.0.11) with the host's search domains and options, or the host's file (minus loopback servers) for a
task on no network -- with ContainerSpec.DNSConfig's servers, search domains and options in place of the
host's, as dockerd writes it for `--dns`, `--dns-search` and `--dns-option`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..objects.containerspec import dns_settings, parse_extra_hosts

TASK_RESOLVER = "127.0.0.11"
RESOLVER_OPTIONS = ("ndots:0",)
"""What Docker's embedded resolver adds to the options of a task on networks (libnetwork's ResolverOptions):
every name is first tried as it is, so a service name resolves at the first query."""
MAX_IMAGE_FILE = 1 << 20
"""/etc/passwd and /etc/group of an image larger than 1 MiB are not read whole: the first MiB is plenty for
any real image and bounds what a hostile one costs the node."""

_LOOPBACK_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
"""What Docker's /etc/hosts starts with (libnetwork/etchosts.defaultContent)."""


def read_in_rootfs(rootfs: Path, relative: str, limit: int = MAX_IMAGE_FILE) -> str | None:
    """The text of `relative` (e.g. "etc/passwd") inside `rootfs`, or None if it is absent, not a regular
    file, or reached through a symlink (which is not followed: it could point anywhere on the host)."""
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"not a relative path inside the root filesystem: {relative!r}")
    fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return None
                raise
            os.close(fd)
            fd = inner
        try:
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            os.close(file_fd)
            return None
        with os.fdopen(file_fd, "rb") as file:
            return file.read(limit).decode(errors="replace")
    finally:
        os.close(fd)


def hosts_file(hostname: str, addresses: Iterable[str], extra_hosts: Iterable[str] = ()) -> str:
    """Docker's /etc/hosts for a container: the loopback names, the extra hosts (swarmkit's ContainerSpec.Hosts,
    "IP_ADDRESS HOSTNAME [ALIAS...]" as in hosts(5)), then each of its addresses with its hostname -- and, for a
    hostname with a dot, its first label too (libnetwork's "fqdn short" record)."""
    extra = "".join(f"{address}\t{' '.join(names)}\n" for address, names in parse_extra_hosts(extra_hosts))
    first_label = hostname.partition(".")[0]
    names = f"{hostname} {first_label}" if first_label != hostname else hostname
    own = "".join(f"{address}\t{names}\n" for address in addresses)
    return _LOOPBACK_HOSTS + extra + own


def resolv_conf(on_networks: bool, host_file: str = "/etc/resolv.conf", dns: Mapping | None = None) -> str:
    """A task's resolv.conf. On networks: its own resolver (which forwards other names to the node's
    servers), with the host's search domains and options and then the resolver's (`RESOLVER_OPTIONS`), as
    Docker writes it for a user-defined network.
    On none: the host's file without loopback servers, which mean nothing in the task's namespace.

    `dns` is ContainerSpec.DNSConfig: its Nameservers, Search and Options each replace the host's (a Search of
    just "." means none). On networks its servers are the resolver's upstreams (`configured_nameservers`), and
    the file still names only the resolver."""
    nameservers, search, options = dns_settings(dns)
    try:
        with open(host_file) as host:
            lines = [line.strip() for line in host]
    except OSError:
        lines = []
    if not (nameservers or search or options or on_networks):
        kept = [line for line in lines if not _loopback_server(line)]
        return "".join(f"{line}\n" for line in kept)
    if on_networks:
        servers = [f"nameserver {TASK_RESOLVER}"]
    elif nameservers:
        servers = [f"nameserver {server}" for server in nameservers]
    else:
        servers = [line for line in lines if line.split()[:1] == ["nameserver"] and not _loopback_server(line)]
    if search:
        search_lines = [] if search == ["."] else [f"search {' '.join(search)}"]
    else:
        search_lines = [line for line in lines if line.split()[:1] == ["search"]]
    if on_networks:
        # libnetwork's rebuildDNS: one options line, the current options then the resolver's own (ndots:0).
        current = options or [word for line in lines if line.split()[:1] == ["options"] for word in line.split()[1:]]
        options_lines = [f"options {' '.join([*current, *RESOLVER_OPTIONS])}"]
    elif options:
        options_lines = [f"options {' '.join(options)}"]
    else:
        options_lines = [line for line in lines if line.split()[:1] == ["options"]]
    return "".join(f"{line}\n" for line in [*servers, *search_lines, *options_lines])


def configured_nameservers(container_spec: Mapping) -> list[str]:
    """The servers ContainerSpec.DNSConfig names (empty: the node's own). For a task on networks they are what
    its resolver at 127.0.0.11 forwards other names to, as Docker's embedded DNS server uses `--dns` servers."""
    return dns_settings(container_spec.get("DNSConfig"))[0]


def _loopback_server(line: str) -> bool:
    fields = line.split()
    return len(fields) >= 2 and fields[0] == "nameserver" and (fields[1].startswith("127.") or fields[1] == "::1")
