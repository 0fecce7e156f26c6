"""The OCI runtime spec (config.json, runtime-spec 1.0.2) that Docker would give a swarm task.

Pure: it reads only the strings it is handed (the image's /etc/passwd and /etc/group included) and returns
a dict ready for `json.dump`. The rules are Docker's, each named where it is applied:

- process: swarmkit's container adapter turns ContainerSpec.Command into the container's Entrypoint and
  Args into its Cmd; dockerd then fills in from the image (daemon/commit.go `merge`) and builds the
  environment (container.CreateDaemonEnvironment); the user is resolved in the image as runc's
  libcontainer/user.GetExecUser does.
- the rest (capabilities, mounts, masked and read-only paths, device cgroup) follows moby's
  oci.DefaultLinuxSpec and the devices runc allows every container (specconv.AllowedDevices).
- the ContainerSpec's own settings, as dockerd applies a swarm task's HostConfig: CapabilityAdd/Drop (moby's
  caps.TweakCapabilities), ReadOnly, Sysctls (only those runc accepts: namespaced ones), Ulimits (go-units'
  names), Groups (runc's GetAdditionalGroups), TTY, OomScoreAdj, Privileges.NoNewPrivileges, and StopSignal
  (signal.ParseSignal), which the bundle carries as an annotation for whoever stops the task.

A setting the runtime cannot honour as given raises InvalidContainerSpec with a message for `service ps`.
"""

import posixpath

from raftswarm.errors import RaftswarmError
from raftswarm.runtime.seccomp import default_profile
from ..objects.containerspec import parse_signal, rlimits, sysctl_interface, sysctls, tweak_capabilities

OCI_VERSION = "1.0.2"

# moby oci.defaultUnixPathEnv: what a task gets when neither its image nor its spec sets PATH.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# moby oci.DefaultCapabilities. Since Docker 20.10.14 (CVE-2022-24769) they are not inheritable.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)

READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Docker's default --shm-size: 64 MiB.
DEFAULT_SHM_BYTES = 64 * 1024 * 1024

# The CFS period Docker uses to turn --cpus (NanoCPUs) into a quota: 100 ms.
CPU_PERIOD_US = 100_000


class NoCommand(RaftswarmError):
    """Neither the service nor its image says what to run."""


class UnknownUser(RaftswarmError):
    """The task's user or group is a name the image's /etc/passwd or /etc/group does not know."""


DEFAULT_STOP_SIGNAL = 15
"""SIGTERM: what Docker stops a container with when neither the service nor the image names a signal."""

MAX_ID = 2**31 - 1
"""The largest uid or gid runc accepts (libcontainer/user maxID)."""

STOP_SIGNAL_ANNOTATION = "io.raftswarm.stop.signal"
"""The bundle's annotation holding the number of the signal that stops the task: a runtime that reattaches to
the container after an agent restart stops it as the one that started it would have."""


def task_spec(
    *,
    task: dict,
    image_config: dict,
    rootfs: str,
    hostname: str,
    passwd: str | None,
    group: str | None,
    netns: str | None,
    secrets_dir: str | None,
    resolv_conf: str | None,
    hosts: str | None,
    hostname_file: str | None,
    cgroups_path: str,
    limits: dict | None = None,
    mounts: list[dict] | None = None,
) -> dict:
    """The OCI runtime spec for `task` (a swarm Task) run from an image whose config is `image_config`.

    `passwd` and `group` are the contents of the image's /etc/passwd and /etc/group (None if absent).
    `netns` is the path of a prepared network namespace (None: a new, empty one). The file arguments are
    host paths bind-mounted at /run/secrets (read-only), /etc/resolv.conf, /etc/hosts and /etc/hostname.
    `limits` is the service's Resources.Limits (MemoryBytes, NanoCPUs, Pids). `mounts` are the OCI mounts of the
    task's own mounts and volumes, in mount order (`runtime.volumes.task_mounts`). The task's ContainerSpec is
    taken as it is: expand its templates first (`objects.templates.expand_task`).
    """
    container = task.get("Spec", {}).get("ContainerSpec", {})
    uid, gid, additional_gids = resolve_user(container.get("User") or image_config.get("User") or "", passwd, group)
    for extra in additional_groups(container.get("Groups") or [], group):
        if extra not in additional_gids:
            additional_gids.append(extra)
    user = {"uid": uid, "gid": gid}
    if additional_gids:
        user["additionalGids"] = additional_gids
    capabilities = tweak_capabilities(
        DEFAULT_CAPABILITIES, container.get("CapabilityAdd") or [], container.get("CapabilityDrop") or []
    )
    readonly = bool(container.get("ReadOnly"))
    process: dict = {
        "terminal": bool(container.get("TTY")),
        "user": user,
        "args": process_args(container, image_config),
        "env": process_env(container, image_config, hostname),
        "cwd": container.get("Dir") or image_config.get("WorkingDir") or "/",
        "capabilities": {
            "bounding": capabilities,
            "effective": list(capabilities),
            "permitted": list(capabilities),
        },
        # swarmkit's container adapter passes Privileges.NoNewPrivileges on as the security option
        # "no-new-privileges", false unless the service sets it; moby's oci_linux then writes it here.
        "noNewPrivileges": bool((container.get("Privileges") or {}).get("NoNewPrivileges")),
        # moby's WithOOMScore writes HostConfig.OomScoreAdj always, 0 included: a task does not inherit the
        # adjustment of the process that starts it.
        "oomScoreAdj": int(container.get("OomScoreAdj") or 0),
    }
    if container.get("Ulimits"):
        process["rlimits"] = rlimits(container["Ulimits"])
    namespaces = _namespaces(netns)
    linux = {
        "namespaces": namespaces,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "resources": _resources(limits),
        "cgroupsPath": cgroups_path,
        "seccomp": default_profile(),
    }
    own_sysctls = {
        key: value for key, value in sysctls(container.get("Sysctls") or {}, namespaces).items()
        if sysctl_interface(key) is None  # the interfaces come later: the node sets theirs (node.networking)
    }
    if own_sysctls:
        linux["sysctl"] = own_sysctls
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": readonly},
        "hostname": hostname,
        "mounts": _with_task_mounts(
            _default_mounts(readonly), _task_mounts(secrets_dir, resolv_conf, hosts, hostname_file, readonly), mounts
        ),
        "linux": linux,
        "annotations": {STOP_SIGNAL_ANNOTATION: str(stop_signal(container, image_config))},
    }


def process_args(container: dict, image_config: dict) -> list[str]:
    """Docker's Entrypoint/Cmd rule: Command replaces the image's Entrypoint, Args its Cmd, and a replaced
    Entrypoint drops the image's Cmd too."""
    command = list(container.get("Command") or [])
    args = list(container.get("Args") or [])
    if command:
        argv = command + args
    else:
        argv = list(image_config.get("Entrypoint") or []) + (args or list(image_config.get("Cmd") or []))
    if not argv:
        raise NoCommand("no command specified")
    return argv


def process_env(container: dict, image_config: dict, hostname: str) -> list[str]:
    """The spec's Env, then the image's for names the spec does not set; over a base of PATH and HOSTNAME, and
    TERM=xterm for a task with a TTY (container.CreateDaemonEnvironment)."""
    spec_env = list(container.get("Env") or [])
    spec_names = {_env_name(entry) for entry in spec_env}
    merged = spec_env + [e for e in image_config.get("Env") or [] if _env_name(e) not in spec_names]
    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"] + (["TERM=xterm"] if container.get("TTY") else [])
    for entry in merged:
        name = _env_name(entry)
        for i, existing in enumerate(env):
            if _env_name(existing) == name:
                env[i] = entry
                break
        else:
            env.append(entry)
    return env


def _env_name(entry: str) -> str:
    return entry.partition("=")[0]


def resolve_user(spec: str, passwd: str | None, group: str | None) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids) for "user", "uid", "user:group" or "uid:gid", resolved in the image.

    As runc: a numeric uid or gid the image does not list is used as is; a name it does not list is
    refused; supplementary groups come from /etc/group only when no group is given explicitly.
    """
    user_arg, _, group_arg = spec.partition(":")
    uid, gid, matched_name = 0, 0, None
    for name, entry_uid, entry_gid in _passwd_entries(passwd):
        if (entry_uid == int(user_arg)) if user_arg.isdigit() else (name == user_arg):
            uid, gid, matched_name = entry_uid, entry_gid, name
            break
    else:
        if user_arg:
            if not user_arg.isdigit():
                raise UnknownUser(f"unable to find user {user_arg}: no matching entries in passwd file")
            uid = int(user_arg)
    supplementary: list[int] = []
    if group_arg:
        for name, entry_gid, _members in _group_entries(group):
            if name == group_arg or str(entry_gid) == group_arg:
                gid = entry_gid
                break
        else:
            if not group_arg.isdigit():
                raise UnknownUser(f"unable to find group {group_arg}: no matching entries in group file")
            gid = int(group_arg)
    elif matched_name is not None:
        supplementary = [g for _name, g, members in _group_entries(group) if matched_name in members]
    return uid, gid, supplementary


def additional_groups(names: list[str], group: str | None) -> list[int]:
    """The gids of ContainerSpec.Groups (`--group-add`), by name or gid in the image's /etc/group; a number it
    does not list is used as is, a name it does not list is refused (runc's user.GetAdditionalGroups)."""
    entries = list(_group_entries(group))
    gids: list[int] = []
    for name in names:
        for entry_name, entry_gid, _members in entries:
            if name == entry_name or name == str(entry_gid):
                gid = entry_gid
                break
        else:
            if not (name.isascii() and name.isdigit()):
                raise UnknownUser(f"unable to find group {name}: no matching entries in group file")
            gid = int(name)
            if gid > MAX_ID:
                raise UnknownUser(f"group {name} is out of range (at most {MAX_ID})")
        if gid not in gids:
            gids.append(gid)
    return gids


def stop_signal(container: dict, image_config: dict) -> int:
    """The signal that stops the task: the spec's StopSignal, else its image's, else SIGTERM (dockerd's merge of
    the image config, then container.StopSignal)."""
    named = container.get("StopSignal") or image_config.get("StopSignal")
    return parse_signal(named) if named else DEFAULT_STOP_SIGNAL


def _passwd_entries(text: str | None):
    """(name, uid, gid) of each well-formed /etc/passwd line."""
    for line in (text or "").splitlines():
        fields = line.strip().split(":")
        if len(fields) >= 4 and not fields[0].startswith("#") and fields[2].isdigit() and fields[3].isdigit():
            yield fields[0], int(fields[2]), int(fields[3])


def _group_entries(text: str | None):
    """(name, gid, members) of each well-formed /etc/group line."""
    for line in (text or "").splitlines():
        fields = line.strip().split(":")
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[2].isdigit():
            members = [m for m in (fields[3] if len(fields) > 3 else "").split(",") if m]
            yield fields[0], int(fields[2]), members


def _default_mounts(readonly_rootfs: bool = False) -> list[dict]:
    """moby's DefaultLinuxSpec mounts, with /dev/shm a private tmpfs of Docker's default size. With a read-only
    root file system they are read-only too except /proc, /dev, /dev/pts, /dev/shm and /dev/mqueue (moby's
    WithMounts)."""

    def mount(destination, type_, source, *options):
        return {"destination": destination, "type": type_, "source": source, "options": list(options)}

    mounts = [
        mount("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
        mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        mount("/dev/pts", "devpts", "devpts", "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
              "gid=5"),
        mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid", "noexec", "nodev", "relatime", "ro"),
        mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", f"size={DEFAULT_SHM_BYTES}"),
    ]
    if readonly_rootfs:
        for entry in mounts:
            if entry["destination"] not in _WRITABLE_UNDER_READONLY_ROOT and "ro" not in entry["options"]:
                entry["options"].append("ro")
    return mounts


_WRITABLE_UNDER_READONLY_ROOT = ("/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev")


def _task_mounts(secrets_dir, resolv_conf, hosts, hostname_file, readonly_rootfs: bool = False) -> list[dict]:
    """The per-task files, bind-mounted as Docker does: secrets read-only, the /etc files writable unless the
    root file system is read-only (moby's container.NetworkMounts: `writable := !ReadonlyRootfs`)."""
    mounts = []
    for source, destination, readonly in (
        (secrets_dir, "/run/secrets", True),
        (resolv_conf, "/etc/resolv.conf", readonly_rootfs),
        (hostname_file, "/etc/hostname", readonly_rootfs),
        (hosts, "/etc/hosts", readonly_rootfs),
    ):
        if source is not None:
            options = ["rbind", "rprivate"] + (["ro"] if readonly else [])
            mounts.append({"destination": destination, "type": "bind", "source": source, "options": options})
    return mounts


def _with_task_mounts(defaults: list[dict], files: list[dict], own: list[dict] | None) -> list[dict]:
    """Docker's mounts and the task's files, with the task's own mounts: a default or a file at the destination of
    one of them gives way to it, as does every default under /dev when it mounts /dev (moby's withMounts,
    TrySetNetworkMount); the files and its mounts go in together by depth, so that none hides a deeper one."""
    if not own:
        return defaults + files
    taken = {mount["destination"] for mount in own}
    kept = [
        mount for mount in defaults
        if mount["destination"] not in taken and not ("/dev" in taken and mount["destination"].startswith("/dev/"))
    ]
    ordered = sorted(own + [file for file in files if file["destination"] not in taken], key=_depth)
    return kept + ordered


def _depth(mount: dict) -> int:
    return posixpath.normpath(mount["destination"]).count("/")


def _namespaces(netns: str | None) -> list[dict]:
    network = {"type": "network", "path": netns} if netns else {"type": "network"}
    return [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}, network]


def _device_rules() -> list[dict]:
    """Deny every device, then allow what runc allows every container (specconv.AllowedDevices)."""

    def allow(type_, major, minor, access):
        return {"allow": True, "type": type_, "major": major, "minor": minor, "access": access}

    return [
        {"allow": False, "access": "rwm"},
        allow("c", None, None, "m"),  # mknod of any char device; opening it stays denied
        allow("b", None, None, "m"),  # mknod of any block device; opening it stays denied
        allow("c", 1, 3, "rwm"),  # /dev/null
        allow("c", 1, 8, "rwm"),  # /dev/random
        allow("c", 1, 7, "rwm"),  # /dev/full
        allow("c", 5, 0, "rwm"),  # /dev/tty
        allow("c", 5, 1, "rwm"),  # /dev/console
        allow("c", 1, 5, "rwm"),  # /dev/zero
        allow("c", 1, 9, "rwm"),  # /dev/urandom
        allow("c", 136, None, "rwm"),  # /dev/pts/*
        allow("c", 5, 2, "rwm"),  # /dev/ptmx
        allow("c", 10, 200, "rwm"),  # /dev/net/tun
    ]


def _resources(limits: dict | None) -> dict:
    """The device cgroup, plus the service's Resources.Limits as Docker maps them."""
    resources: dict = {"devices": _strip_none(_device_rules())}
    limits = limits or {}
    if limits.get("MemoryBytes"):
        resources["memory"] = {"limit": int(limits["MemoryBytes"])}
    if limits.get("NanoCPUs"):
        resources["cpu"] = {"quota": int(limits["NanoCPUs"]) * CPU_PERIOD_US // 1_000_000_000,
                            "period": CPU_PERIOD_US}
    if limits.get("Pids"):
        resources["pids"] = {"limit": int(limits["Pids"])}
    return resources


def _strip_none(rules: list[dict]) -> list[dict]:
    """A wildcard major or minor is an absent field in the OCI spec, not null."""
    return [{k: v for k, v in rule.items() if v is not None} for rule in rules]
