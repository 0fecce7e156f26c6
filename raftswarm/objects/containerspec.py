"""ContainerSpec settings read the way Docker reads them: stop signals, capabilities, ulimits, sysctls, extra
hosts and DNS settings. The API checks a spec with these at the edge (objects.specs), and the runtime builds
the container from the same readings (runtime.spec, runtime.files), so the two cannot disagree."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from ..errors import RaftswarmError


class InvalidContainerSpec(RaftswarmError):
    """A ContainerSpec setting that no container can be given as it is (an unknown capability or ulimit, a
    sysctl outside the task's namespaces, a malformed stop signal, extra host or DNS setting, a template)."""


ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
"""Every capability Linux has (0 to 40, in number order): what "ALL" means in CapabilityAdd and CapabilityDrop,
and the names they accept (moby's caps.GetAllCapabilities, on a kernel that knows them all)."""


ALL = "ALL"


IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
    "kernel.shmmni", "kernel.shm_rmid_forced",
})
"""With fs.mqueue.*, the sysctls of the IPC namespace: runc's validator (libcontainer/configs/validate) allows
them to a container with its own IPC namespace, net.* to one with its own network namespace, and
kernel.domainname to one with its own UTS namespace; every other one is the host's and refused."""


ULIMITS = {
    name: f"RLIMIT_{name.upper()}"
    for name in (
        "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss", "rtprio",
        "rttime", "sigpending", "stack",
    )
}
"""Docker's ulimit names (go-units ulimitNameMapping) and the OCI rlimit each one sets."""


RLIM_INFINITY = 2**64 - 1
"""A ulimit of -1 is "unlimited" (go-units parses "unlimited" as -1; dockerd passes it on as uint64)."""


SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
    "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17, "CLD": 17,
    "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26,
    "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
    "RTMIN": 34, **{f"RTMIN+{n}": 34 + n for n in range(1, 16)},
    **{f"RTMAX-{n}": 64 - n for n in range(1, 15)}, "RTMAX": 64,
}
"""The Linux signal names Docker's signal.ParseSignal knows (moby/sys/signal SignalMap, x86-64 numbers), without
their SIG prefix."""


SIGNAL_MAX = 64


def tweak_capabilities(defaults: tuple[str, ...], add: list[str], drop: list[str]) -> list[str]:
    """moby's caps.TweakCapabilities: "ALL" in `add` gives every capability but those dropped; "ALL" in `drop`
    gives only those added; otherwise the defaults less those dropped, plus those added -- so a capability
    both added and dropped is kept, as the docker CLI also decides (CapAdd takes precedence over CapDrop)."""
    if not add and not drop:
        return list(defaults)
    add, drop = _capability_names(add), _capability_names(drop)
    if ALL in add:
        chosen = [cap for cap in ALL_CAPABILITIES if cap not in drop]
    elif ALL in drop:
        chosen = add
    else:
        chosen = [cap for cap in defaults if cap not in drop] + add
    return list(dict.fromkeys(chosen))


def _capability_names(names: list[str]) -> list[str]:
    """Upper-cased, with a CAP_ prefix, each one known (moby's caps.NormalizeLegacyCapabilities)."""
    normalized = []
    for name in names:
        name = name.upper()
        if name != ALL and not name.startswith("CAP_"):
            name = f"CAP_{name}"
        if name != ALL and name not in ALL_CAPABILITIES:
            raise InvalidContainerSpec(f'unknown capability: "{name}"')
        normalized.append(name)
    return normalized


SYSCTL_NAME = re.compile(r"[^./\s\x00]+(\.[^./\s\x00]+)+")
"""A sysctl's name: words (an interface's name among them) joined by dots, none empty, none with a slash."""


def sysctls(settings: dict, namespaces: list[dict]) -> dict[str, str]:
    """ContainerSpec.Sysctls, each one checked as runc checks it: it must belong to a namespace of the task's own
    (every one in `namespaces` is: the network namespace the agent prepares too)."""
    own = {namespace["type"] for namespace in namespaces}
    checked = {}
    for key, value in settings.items():
        if not SYSCTL_NAME.fullmatch(key):
            # Its words become a path under /proc/sys: one holding a slash, or none at all, would lead
            # out of it.
            raise InvalidContainerSpec(f'sysctl "{key}" is not a sysctl name: dot-separated words without slashes')
        if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
            needed = "ipc"
        elif key.startswith("net."):
            needed = "network"
        elif key == "kernel.domainname":
            needed = "uts"
        elif key == "kernel.hostname":
            raise InvalidContainerSpec(f'sysctl "{key}" is not allowed: set the hostname with ContainerSpec.Hostname')
        else:
            raise InvalidContainerSpec(
                f'sysctl "{key}" is not in a separate kernel namespace: a task may set only net.*, fs.mqueue.*, '
                f"kernel.domainname and {', '.join(sorted(IPC_SYSCTLS))}"
            )
        if needed not in own:
            raise InvalidContainerSpec(f'sysctl "{key}" is not allowed in the host\'s {needed} namespace')
        checked[key] = str(value)
    return checked


INTERFACE_SYSCTL_GROUPS = frozenset({("ipv4", "conf"), ("ipv6", "conf"), ("ipv4", "neigh"), ("ipv6", "neigh")})
"""net.<family>.<group>.<interface>.<setting>: the sysctls of one network interface."""

EVERY_INTERFACE = frozenset({"all", "default", "lo"})
"""What those sysctls may name besides a task's own interfaces: every namespace has these from the start."""


def sysctl_interface(key: str) -> str | None:
    """The interface a sysctl is of (`eth0` for net.ipv4.conf.eth0.rp_filter), or None for any other sysctl,
    including those of `all`, `default` and `lo`. A task's interfaces are plugged in after its namespaces are
    made: the runtime leaves these out of the container's spec and the node sets them once they are there."""
    parts = key.split(".")
    if len(parts) < 5 or parts[0] != "net" or (parts[1], parts[2]) not in INTERFACE_SYSCTL_GROUPS:
        return None
    return None if parts[3] in EVERY_INTERFACE else parts[3]


def rlimits(ulimits: list[dict]) -> list[dict]:
    """ContainerSpec.Ulimits as OCI rlimits; a later entry for the same name replaces an earlier one."""
    by_type: dict[str, dict] = {}
    for ulimit in ulimits:
        name = str(ulimit.get("Name") or "")
        if name not in ULIMITS:
            raise InvalidContainerSpec(f"invalid ulimit type: {name or '(none)'} (one of {', '.join(ULIMITS)})")
        soft, hard = (_rlimit_value(name, ulimit.get(field) or 0) for field in ("Soft", "Hard"))
        if soft > hard:
            raise InvalidContainerSpec(
                f"ulimit {name}: soft limit must be less than or equal to hard limit: "
                f"{ulimit.get('Soft')} > {ulimit.get('Hard')}"
            )
        by_type[ULIMITS[name]] = {"type": ULIMITS[name], "hard": hard, "soft": soft}
    return list(by_type.values())


def _rlimit_value(name: str, value: int) -> int:
    if value == -1:
        return RLIM_INFINITY
    if value < 0:
        raise InvalidContainerSpec(f"ulimit {name}: {value} is not a limit (-1 means unlimited)")
    return int(value)


def parse_signal(text: str) -> int:
    """A signal's number from "SIGINT", "INT", "sigint" or "2", as Docker's signal.ParseSignal reads it."""
    text = str(text).strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        if not 0 < number <= SIGNAL_MAX:
            raise InvalidContainerSpec(f"invalid signal: {text} (signals are 1 to {SIGNAL_MAX})")
        return number
    number = SIGNALS.get(text.upper().removeprefix("SIG"))
    if number is None:
        raise InvalidContainerSpec(f"invalid signal: {text} (a name such as SIGINT or INT, or a number)")
    return number


def parse_extra_hosts(entries: Iterable[str]) -> list[tuple[str, list[str]]]:
    """(address, names) of each "IP_ADDRESS HOSTNAME [ALIAS...]" entry. The docker CLI turns `--host name:ip`
    into this form; an entry in another form is refused, not silently dropped as dockerd drops it."""
    parsed = []
    for entry in entries:
        fields = str(entry).split()
        if len(fields) < 2:
            raise InvalidContainerSpec(
                f'extra host "{entry}" is not "IP_ADDRESS HOSTNAME [ALIAS...]" (`--host name:ip` is the CLI\'s form)'
            )
        address, *names = fields
        if address == "host-gateway":
            raise InvalidContainerSpec(f'extra host "{entry}": host-gateway is not supported here; give an address')
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise InvalidContainerSpec(f'extra host "{entry}": {address} is not an IP address') from None
        parsed.append((address, names))
    return parsed


def dns_settings(dns: Mapping | None) -> tuple[list[str], list[str], list[str]]:
    """DNSConfig's (nameservers, search domains, options), checked: addresses, and single words a resolv.conf
    line can hold. Raises InvalidContainerSpec (a service spec's validation can call it too)."""
    dns = dns or {}
    nameservers = []
    for server in dns.get("Nameservers") or []:
        try:
            nameservers.append(str(ipaddress.ip_address(str(server).strip())))
        except ValueError:
            raise InvalidContainerSpec(f"DNS nameserver {server!r} is not an IP address") from None
    words = {}
    for field, what in (("Search", "search domain"), ("Options", "option")):
        words[field] = [str(word) for word in dns.get(field) or []]
        for word in words[field]:
            if not word or len(word.split()) != 1 or word != word.strip():
                raise InvalidContainerSpec(f"DNS {what} {word!r} must be one word without spaces")
    return nameservers, words["Search"], words["Options"]
