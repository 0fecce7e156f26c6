"""Attacks on security property 5 (DESIGN.md) from inside a task: a root shell in a busybox container on a
MANAGER -- whose state dir holds the Raft KEK, the node's key and the swarm's certificates -- trying what an
attacker with code execution in a task would try:

- the nodes' files: every node's state dir, key, KEK, API socket, pidfile and log, and the files of the
  container runtime (bundles, conmon's pid and log files, crun's state), by absolute host path, through
  /proc/<pid>/root and /proc/<pid>/cwd of every process it sees, through every file descriptor it can
  reach, by the host paths /proc/self/mountinfo names, and with `find / -name '*.key'`-style searches;
- a working directory of /proc/self/fd/<n>, where a descriptor leaked by the runtime would be the host's
  file system (runc's CVE-2024-21626);
- another task's secret (a second service on the same node): /run/secrets, that task's secrets tmpfs by host
  path, /proc/*/root/run/secrets, /proc/*/environ and cmdline, and a search of every file it can read;
- the node's processes and namespaces: /proc, `ps`, the namespace links;
- mounting: mount(8) of tmpfs, proc, sysfs and binds, remounting /run/secrets read-write, unmounting the masks
  and /run/secrets, unshare(1) and nsenter(1), and a user namespace made with clone(2) to mount in there;
  writing its secrets, or the node's tini bound in as its init;
- its confinement: Docker's 14 default capabilities and nothing more, seccomp in filter mode, and every
  syscall Docker's documentation says the default profile blocks, made directly by a tiny static probe;
- the kernel's knobs and the host's hardware: writes to /proc/sys (core_pattern included), sysrq, /sys and
  cgroup files; reads of the masked /proc files and of the kernel's log; the host's disks, memory and ports
  through device nodes it makes.

Each attack prints `LEAK:<how>:<what>` only for what actually worked, and `CONTROL:` lines that show it ran
(it reads its own secret, finds its own files...), so a script that silently did nothing cannot pass.

And from the host: no file under the clusters directory (every node's state dir, the cluster's records and
logs) holds a secret or its base64 form, except the task's own secrets tmpfs, which is memory -- while the
task runs and after it is removed -- and no secrets tmpfs of a removed task stays mounted.

One cluster (1 manager, 1 worker, loopback addresses, `--init`) serves the module; the attacks run on the
manager, one service each, and end by themselves.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import platform
import re
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raftswarm.api.client import ApiClient
from raftswarm.node.state_dir import StateDir
from raftswarm.localcluster.swarm import EXEC_ROOTS, SwarmCluster
from raftswarm.runtime.containers import INIT_BINARY, unavailable

from test_services import create_secret, converged, eventually

_NO_CONTAINERS = unavailable()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_NO_CONTAINERS is not None, reason=f"tasks cannot run as containers here: {_NO_CONTAINERS}"),
]

ATTACK_TIMEOUT = 180.0
"""How long one attack may take from `service create` to its end (seconds, usually): generous, for a 2-core
machine shared with other clusters."""
ON_MANAGER = {"Constraints": ["node.role==manager"]}
DOCKER_DEFAULT_CAPS = 0xA80425FB
"""moby's oci.DefaultCapabilities as a capability mask: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID,
SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP."""
CAP_SYS_ADMIN = 21
EPERM = 1


# -- the probes: raw syscalls from a static x86-64 executable of a few hundred bytes -----------------------
#
# busybox makes no syscall an attacker may want with the arguments he wants (its unshare uses unshare(2), which
# the profile blocks, but nothing in it calls clone(2) with namespace flags). The probes are machine code,
# listed with their assembly, wrapped into an ELF file here and handed to the task in its environment.

PROBE_CODE = [
    # probe NR [ARG0]: syscall NR(ARG0, 0, 0, 0, 0, 0); exit status 0 if it succeeded, else its errno.
    ("48 8b 7c 24 10", "mov rdi, [rsp+16]        ; argv[1]"),
    ("e8 41 00 00 00", "call parse"),
    ("49 89 c4", "mov r12, rax             ; NR"),
    ("31 db", "xor ebx, ebx             ; ARG0 = 0"),
    ("48 83 3c 24 03", "cmp qword [rsp], 3       ; argc"),
    ("72 0d", "jb syscall"),
    ("48 8b 7c 24 18", "mov rdi, [rsp+24]        ; argv[2]"),
    ("e8 2b 00 00 00", "call parse"),
    ("48 89 c3", "mov rbx, rax             ; ARG0"),
    ("4c 89 e0", "syscall: mov rax, r12"),
    ("48 89 df", "mov rdi, rbx"),
    ("31 f6", "xor esi, esi"),
    ("31 d2", "xor edx, edx"),
    ("45 31 d2", "xor r10d, r10d"),
    ("45 31 c0", "xor r8d, r8d"),
    ("45 31 c9", "xor r9d, r9d"),
    ("0f 05", "syscall"),
    ("31 ff", "xor edi, edi"),
    ("48 85 c0", "test rax, rax"),
    ("79 05", "jns exit"),
    ("48 f7 d8", "neg rax                  ; -errno -> errno"),
    ("89 c7", "mov edi, eax"),
    ("b8 e7 00 00 00", "exit: mov eax, 231        ; exit_group"),
    ("0f 05", "syscall"),
    ("31 c0", "parse: xor eax, eax      ; decimal string at rdi -> rax"),
    ("0f b6 0f", "next: movzx ecx, byte [rdi]"),
    ("85 c9", "test ecx, ecx"),
    ("74 0f", "jz done"),
    ("83 e9 30", "sub ecx, '0'"),
    ("48 6b c0 0a", "imul rax, rax, 10"),
    ("48 01 c8", "add rax, rcx"),
    ("48 ff c7", "inc rdi"),
    ("eb ea", "jmp next"),
    ("c3", "done: ret"),
]

USERNS_MOUNT_CODE = [
    # clone(CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD); the child, root of its new user namespace, mounts a tmpfs
    # on /tmp with the new mount API (mount(2) itself is blocked): fsopen, fsconfig(CREATE), fsmount,
    # move_mount. Exit status: 10 if clone was refused; else the child's: 1 fsopen, 2 fsconfig, 3 fsmount,
    # 4 move_mount refused, 5 a tmpfs was mounted.
    ("bf 11 00 02 10", "mov edi, 0x10020011      ; CLONE_NEWUSER|CLONE_NEWNS|SIGCHLD"),
    ("31 f6", "xor esi, esi"),
    ("31 d2", "xor edx, edx"),
    ("45 31 d2", "xor r10d, r10d"),
    ("45 31 c0", "xor r8d, r8d"),
    ("b8 38 00 00 00", "mov eax, 56              ; clone"),
    ("0f 05", "syscall"),
    ("48 85 c0", "test rax, rax"),
    ("78 2d", "js refused"),
    ("74 35", "jz child"),
    ("48 83 ec 10", "sub rsp, 16"),
    ("48 c7 c7 ff ff ff ff", "mov rdi, -1"),
    ("48 89 e6", "mov rsi, rsp             ; &status"),
    ("31 d2", "xor edx, edx"),
    ("45 31 d2", "xor r10d, r10d"),
    ("b8 3d 00 00 00", "mov eax, 61              ; wait4"),
    ("0f 05", "syscall"),
    ("8b 3c 24", "mov edi, [rsp]"),
    ("c1 ef 08", "shr edi, 8"),
    ("81 e7 ff 00 00 00", "and edi, 0xff            ; the child's exit status"),
    ("e9 92 00 00 00", "jmp exit"),
    ("bf 0a 00 00 00", "refused: mov edi, 10"),
    ("e9 88 00 00 00", "jmp exit"),
    ("48 8d 3d 88 00 00 00", "child: lea rdi, [rip+fstype]"),
    ("31 f6", "xor esi, esi"),
    ("b8 ae 01 00 00", "mov eax, 430             ; fsopen"),
    ("0f 05", "syscall"),
    ("bf 01 00 00 00", "mov edi, 1"),
    ("48 85 c0", "test rax, rax"),
    ("78 6e", "js exit"),
    ("49 89 c4", "mov r12, rax"),
    ("4c 89 e7", "mov rdi, r12"),
    ("be 06 00 00 00", "mov esi, 6               ; FSCONFIG_CMD_CREATE"),
    ("31 d2", "xor edx, edx"),
    ("45 31 d2", "xor r10d, r10d"),
    ("45 31 c0", "xor r8d, r8d"),
    ("b8 af 01 00 00", "mov eax, 431             ; fsconfig"),
    ("0f 05", "syscall"),
    ("bf 02 00 00 00", "mov edi, 2"),
    ("48 85 c0", "test rax, rax"),
    ("78 4a", "js exit"),
    ("4c 89 e7", "mov rdi, r12"),
    ("31 f6", "xor esi, esi"),
    ("31 d2", "xor edx, edx"),
    ("b8 b0 01 00 00", "mov eax, 432             ; fsmount"),
    ("0f 05", "syscall"),
    ("bf 03 00 00 00", "mov edi, 3"),
    ("48 85 c0", "test rax, rax"),
    ("78 32", "js exit"),
    ("48 89 c7", "mov rdi, rax"),
    ("48 8d 35 35 00 00 00", "lea rsi, [rip+empty]"),
    ("ba 9c ff ff ff", "mov edx, -100            ; AT_FDCWD"),
    ("4c 8d 15 2a 00 00 00", "lea r10, [rip+target]"),
    ("41 b8 04 00 00 00", "mov r8d, 4               ; MOVE_MOUNT_F_EMPTY_PATH"),
    ("b8 ad 01 00 00", "mov eax, 429             ; move_mount"),
    ("0f 05", "syscall"),
    ("bf 04 00 00 00", "mov edi, 4"),
    ("48 85 c0", "test rax, rax"),
    ("78 05", "js exit"),
    ("bf 05 00 00 00", "mov edi, 5"),
    ("b8 e7 00 00 00", "exit: mov eax, 231        ; exit_group"),
    ("0f 05", "syscall"),
    ("74 6d 70 66 73 00", 'fstype: "tmpfs"'),
    ("00", 'empty: ""'),
    ("2f 74 6d 70 00", 'target: "/tmp"'),
]

USERNS_CLONE_REFUSED = 10

# x86-64 numbers of the syscalls in the table "Significant syscalls blocked by the default profile" of Docker's
# seccomp documentation (those this architecture has), with a first argument where zero would prove nothing:
# unshare(CLONE_NEWUSER) is `unshare -U`.
BLOCKED_SYSCALLS = {
    "acct": (163,), "add_key": (248,), "bpf": (321,), "clock_adjtime": (305,), "clock_settime": (227,),
    "create_module": (174,), "delete_module": (176,), "finit_module": (313,), "get_kernel_syms": (177,),
    "get_mempolicy": (239,), "init_module": (175,), "ioperm": (173,), "iopl": (172,), "kcmp": (312,),
    "kexec_file_load": (320,), "kexec_load": (246,), "keyctl": (250,), "lookup_dcookie": (212,), "mbind": (237,),
    "mount": (165,), "move_pages": (279,), "name_to_handle_at": (303,), "nfsservctl": (180,),
    "open_by_handle_at": (304,), "perf_event_open": (298,), "pivot_root": (155,), "process_vm_readv": (310,),
    "process_vm_writev": (311,), "ptrace": (101,), "query_module": (178,), "quotactl": (179,), "reboot": (169,),
    "request_key": (249,), "set_mempolicy": (238,), "setns": (308,), "settimeofday": (164,), "swapon": (167,),
    "swapoff": (168,), "sysfs": (139,), "umount2": (166,), "unshare": (272, 0x10000000), "uselib": (134,),
    "userfaultfd": (323,), "ustat": (136,),
}
CLONE_NEWUSER_SIGCHLD = (56, 0x10000000 | 17)
GETPID = 39


def static_elf(code: Iterable[tuple[str, str]]) -> bytes:
    """A minimal x86-64 Linux executable: one read-execute segment holding the ELF header, the program header
    and the machine code, entered at the code's first byte."""
    text = b"".join(bytes.fromhex(hexed) for hexed, _ in code)
    base, ehdr, phdr = 0x400000, 64, 56
    size = ehdr + phdr + len(text)
    header = struct.pack(
        "<4s5B7x2HI3QI6H", b"\x7fELF", 2, 1, 1, 0, 0,  # 64-bit, little-endian, version 1, System V
        2, 0x3E, 1, base + ehdr + phdr, ehdr, 0, 0, ehdr, phdr, 1, 0, 0, 0,  # ET_EXEC, x86-64, entry, 1 phdr
    )
    segment = struct.pack("<2I6Q", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, R+X, the whole file
    return header + segment + text


def probe_env() -> list[str]:
    return [
        f"PROBE={base64.b64encode(static_elf(PROBE_CODE)).decode()}",
        f"USERNS_MOUNT={base64.b64encode(static_elf(USERNS_MOUNT_CODE)).decode()}",
    ]


# -- what every attack script starts with -----------------------------------------------------------------

SHELL_LIB = r"""
set +e
leak() { echo "LEAK:$*"; }
# probe PATH: a LEAK line if PATH is there at all (what it is, what was read of it; no content is printed).
probe() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  if [ -d "$1" ]; then leak "listed:$1:$(ls -A "$1" 2>&1 | head -n 12 | tr '\n' ' ')"
  elif [ -S "$1" ]; then leak "socket:$1"
  elif cat "$1" >/dev/null 2>&1; then leak "read:$1:$(cat "$1" 2>/dev/null | wc -c) bytes"
  else leak "exists:$1"; fi
}
# probe_everywhere PATH: PATH itself, and through the root and cwd of every process in sight.
probe_everywhere() {
  probe "$1"
  for r in /proc/[0-9]*/root /proc/[0-9]*/cwd /proc/self/root /proc/thread-self/root; do probe "$r$1"; done
}
# try NAME COMMAND...: what COMMAND said and its status, one line.
try() {
  name=$1; shift
  out=$("$@" 2>&1); rc=$?
  echo "TRY:$name:$rc:$(echo "$out" | head -n 1 | cut -c 1-160)"
}
install_probes() {
  echo "$PROBE" | base64 -d > /tmp/probe && chmod 755 /tmp/probe
  echo "$USERNS_MOUNT" | base64 -d > /tmp/userns-mount && chmod 755 /tmp/userns-mount
}
echo "CONTROL:uid:$(id -u)"
"""


@dataclass
class Attack:
    """An attack task that ended: the task as the API shows it, and its output lines."""

    task: dict[str, Any]
    lines: list[str]

    def __str__(self) -> str:
        return f"the attack ended {self.task['Status']}; its whole output:\n" + "\n".join(self.lines)

    def tagged(self, tag: str) -> list[str]:
        """The rest of each line starting with `tag:`."""
        prefix = f"{tag}:"
        return [line[len(prefix):] for line in self.lines if line.startswith(prefix)]

    def controls(self) -> dict[str, str]:
        return dict(line.partition(":")[::2] for line in self.tagged("CONTROL"))

    def tries(self) -> dict[str, tuple[int, str]]:
        """TRY lines: name -> (exit status, first line of output)."""
        found = {}
        for rest in self.tagged("TRY"):
            name, status, said = rest.split(":", 2)
            found[name] = (int(status), said)
        return found

    def assert_nothing_leaked(self, what: str) -> None:
        leaks = self.tagged("LEAK")
        assert leaks == [], f"{what}:\n" + "\n".join(leaks) + f"\n{self}"


# -- the cluster, and a task with a secret next to the attackers -------------------------------------------


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("secctr")
    cluster = asyncio.run(
        SwarmCluster.up(
            "secctr", managers=1, workers=1, base_dir=base, network="loopback", heartbeat_period=0.5,
            samples=("busybox",), init=True,
        )
    )
    yield cluster
    cluster.down()


def api(swarm: SwarmCluster) -> ApiClient:
    return swarm.client(swarm.node("manager1"))


def task_dir(swarm: SwarmCluster, task_id: str, node: str = "manager1") -> Path:
    """The task's directory in the node's container runtime (bundle, conmon files, secrets mount point)."""
    return swarm.exec_root(swarm.node(node)) / "tasks" / task_id


def random_secret(kind: str) -> bytes:
    """A secret value no file can hold by chance: `rsw-<kind>-` and 32 random hex digits."""
    return f"rsw-{kind}-{os.urandom(16).hex()}".encode()


SECRETS_MADE: list[bytes] = []
"""Every secret value this module gave a task: the last test looks for each on the nodes' disks."""


async def secret_reference(client: ApiClient, name: str, data: bytes, file: str) -> dict[str, Any]:
    """Create the secret; its reference as /run/secrets/<file>, root's, mode 0400."""
    SECRETS_MADE.append(data)
    secret = await create_secret(client, name, data)
    return {"SecretID": secret["ID"], "SecretName": name, "File": {"Name": file, "UID": "0", "GID": "0", "Mode": 0o400}}


def sleeper(name: str, secret: dict[str, Any], **template: Any) -> dict[str, Any]:
    """A service of tasks that only sleep, holding `secret`."""
    container = {"Image": "busybox", "Args": ["sleep", "100000"], "Secrets": [secret]}
    template = {"ContainerSpec": container, **template}
    return {"Name": name, "TaskTemplate": template, "Mode": {"Replicated": {"Replicas": 1}}}


@dataclass
class Victim:
    """A task on the manager holding a secret the attackers must not reach."""

    service_id: str
    task_id: str
    secret: bytes
    file: str


@pytest.fixture(scope="module")
def victim(swarm):
    async def start() -> Victim:
        async with api(swarm) as client:
            data = random_secret("victim")
            reference = await secret_reference(client, "victim-secret", data, "victim")
            created = await client.service_create(sleeper("victim", reference, Placement=ON_MANAGER))
            (task,) = await eventually(lambda: converged(client, "victim", 1), "the victim task to run", ATTACK_TIMEOUT)
            return Victim(created["ID"], task["ID"], data, "victim")

    async def stop(found: Victim) -> None:
        async with api(swarm) as client:
            await client.service_remove(found.service_id)
            await eventually(lambda: _gone(client, found.service_id), "the victim's task to go", ATTACK_TIMEOUT)
            await client.secret_remove("victim-secret")

    found = asyncio.run(start())
    yield found
    asyncio.run(stop(found))


async def _gone(client: ApiClient, service_id: str) -> bool:
    return not [task for task in await client.task_list() if task["ServiceID"] == service_id]


async def run_task(
    swarm: SwarmCluster,
    name: str,
    script: str,
    env: list[str] | None = None,
    secrets: list[dict] | None = None,
    **container_spec: Any,
) -> Attack:
    """Run `script` (after SHELL_LIB) as root in a busybox task on the manager until it ends; then remove it."""
    container: dict[str, Any] = {
        "Image": "busybox",
        "Args": ["sh", "-c", SHELL_LIB + script + "\necho CONTROL:end:reached\n"],
        "Env": env or [],
        **container_spec,
    }
    if secrets:
        container["Secrets"] = secrets
    template = {"ContainerSpec": container, "Placement": ON_MANAGER, "RestartPolicy": {"Condition": "none"}}
    async with api(swarm) as client:
        created = await client.service_create(
            {"Name": name, "TaskTemplate": template, "Mode": {"Replicated": {"Replicas": 1}}}
        )

        async def ended() -> dict[str, Any] | None:
            for task in await client.task_list({"service": [name]}):
                if task["Status"]["State"] in ("complete", "failed", "rejected"):
                    return task
            return None

        task = await eventually(ended, f"the attack {name} to end", ATTACK_TIMEOUT)
        lines = [line.decode(errors="replace").rstrip("\n") async for _, line in client.task_logs(task["ID"])]
        await client.service_remove(name)
        await eventually(lambda: _gone(client, created["ID"]), f"the attack {name}'s task to go", ATTACK_TIMEOUT)
    manager_id = swarm.node("manager1").node_id
    assert task["NodeID"] == manager_id, f"the attack ran on {task['NodeID']}, not on the manager {manager_id}"
    return Attack(task, lines)


async def attack(
    swarm: SwarmCluster, name: str, script: str, env: list[str] | None = None, secrets: list[dict] | None = None
) -> Attack:
    """`run_task`, which must have run to its end, as root."""
    found = await run_task(swarm, name, script, env, secrets)
    assert found.task["Status"]["State"] == "complete", f"the attack did not run to its end: {found}"
    assert found.controls().get("end") == "reached", f"the attack's output is incomplete: {found}"
    assert found.controls().get("uid") == "0", f"the attack did not run as root: {found}"
    return found


# -- the host side: the paths to try, the mounts, the files that hold a secret -----------------------------------


def host_paths(swarm: SwarmCluster) -> list[str]:
    """Every path of the cluster an attacker would go for: each node's directory, state dir, certificates, key,
    KEK, Raft log, API socket, pidfile and log; its container runtime's bundles, conmon files, crun state, task
    logs and secrets mounts (of the tasks there now), wherever its execution root is; the cluster's record; and
    the node daemon's default locations."""
    paths: set[Path] = {swarm.directory, swarm.directory / "cluster.json", swarm.directory.parent}
    for node in swarm.nodes:
        state, exec_root = StateDir(node.state_dir), swarm.exec_root(node)
        paths |= {
            node.directory, node.state_dir, node.socket, node.pidfile, node.log_path, state.certificates,
            state.node_key, state.node_cert, state.root_ca_cert, state.kek, state.raft, state.node_state,
            state.images, state.worker_containers, exec_root,
        }
        for directory in (state.certificates, state.raft, state.worker_containers, exec_root):
            paths |= set(directory.rglob("*"))
        paths |= set(state.images.glob("*")) | set(state.images.glob("*/*"))
    found = sorted(str(path) for path in paths)
    found += ["/var/lib/raftswarm", "/run/raftswarm/raftswarm.sock", "/run/crun", "/usr/bin/conmon", "/usr/bin/crun"]
    assert not [path for path in found if re.search(r"\s", path)], "a path with white space: the scripts split on it"
    return found


def lines_of(name: str, values: Iterable[Any]) -> str:
    """An environment entry the scripts loop over: `name=` and the values, one a line."""
    return f"{name}=" + "\n".join(map(str, values))


@dataclass
class Mount:
    mount_point: str
    fstype: str
    options: set[str]
    """The mount's own (per mount point) options."""


def mounts() -> list[Mount]:
    """This process's mounts in mount order, from /proc/self/mountinfo (the nodes share its mount namespace)."""

    def unescape(field: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal.group(1), 8)), field)

    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        found.append(Mount(unescape(fields[4]), fields[separator + 1], set(fields[5].split(","))))
    return found


def mount_of(path: Path, table: list[Mount]) -> Mount:
    """The mount `path` is on: of those with the longest mount point containing it, the last mounted."""
    resolved = str(path.resolve())
    best = None
    for mount in table:
        point = mount.mount_point
        if resolved == point or resolved.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best.mount_point):
                best = mount
    assert best is not None, f"no mount holds {resolved}"
    return best


def secrets_mounts(clusters: Path) -> set[str]:
    """The mount points of the tmpfs mounts under the clusters directory: the tasks' secrets; not the tmpfs of
    each cluster's execution roots (`run/`), which the search for secret bytes goes through like any directory."""
    inside = f"{clusters}/"
    return {
        mount.mount_point
        for mount in mounts()
        if mount.mount_point.startswith(inside)
        and mount.fstype == "tmpfs"
        and Path(mount.mount_point).name != EXEC_ROOTS
    }


def encodings(secret: bytes) -> list[bytes]:
    """The secret, and each form base64 gives it whatever its offset in the encoded data: the encoding of each of
    the 3 alignments without the 4-character groups it shares with the bytes around it."""
    forms = [secret]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret)
        forms.append(encoded[4 if offset else 0 : -4])
    return forms


def files_holding(root: Path, secrets: Iterable[bytes]) -> dict[Path, list[bytes]]:
    """Every regular file under `root` (symlinks not followed) whose bytes contain a secret in any encoding, with
    the secrets it holds."""
    needles = {form: secret for secret in secrets for form in encodings(secret)}
    found: dict[Path, list[bytes]] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            try:
                if not stat.S_ISREG(path.lstat().st_mode):
                    continue  # sockets, fifos, symlinks
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # gone meanwhile (a task's files as it ends)
            held = sorted({secret for form, secret in needles.items() if form in data})
            if held:
                found[path] = held
    return found


# -- the node's files ---------------------------------------------------------------------------------------

FIND_NODE_FILES = r"""
  \( -name '*.key' -o -name raft.kek -o -name '*.sock' -o -name '*.pid' -o -name 'swarm-*' -o -name '*.crt' \
     -o -name state.json -o -name config.json -o -name node.log -o -name cluster.json -o -type s \) -print
"""

NODE_FILES_ATTACK = r"""
n=0
for p in $HOST_PATHS; do n=$((n+1)); probe_everywhere "$p"; done
echo "CONTROL:paths-tried:$n"
for f in /proc/[0-9]*/fd/* /proc/[0-9]*/task/[0-9]*/fd/*; do
  t=$(readlink "$f") || continue
  echo "FD:$f:$t"
  [ -d "$f" ] && echo "FD-DIR:$f:$(ls -A "$f/" 2>&1 | head -n 12 | tr '\n' ' ')"
done
# The host paths mountinfo names (bind mounts' sources, overlay layers).
for p in $(tr ' ,=:' '\n\n\n\n' < /proc/self/mountinfo | grep '^/' | sort -u); do
  [ -e "$p" ] && echo "REACHABLE:$p"
done
find / \( -path /proc -o -path /sys \) -prune -o FIND_NODE_FILES 2>/dev/null | sed 's/^/LEAK:found:/'
find /proc/[0-9]*/root/ /proc/[0-9]*/cwd/ \( -name proc -o -name sys \) -prune -o FIND_NODE_FILES 2>/dev/null \
  | sed 's/^/LEAK:found:/'
echo "CONTROL:find:$(find / -path /proc -prune -o -name busybox -print 2>/dev/null | head -n 1)"
""".replace("FIND_NODE_FILES", FIND_NODE_FILES.strip())
FD_OF_A_TASK = r"/dev/null|/dev/pts/\d+|pipe:\[\d+\]|anon_inode:\[?[a-z_]+\]?"
"""What a task's processes hold: stdin /dev/null, stdout and stderr conmon's pipes, the shell's own pipes. A
descriptor of a directory or file of the node would be the way out of the container (runc's CVE-2024-21626)."""


async def test_a_root_task_on_a_manager_finds_no_file_key_or_socket_of_any_node(swarm, victim):
    paths = host_paths(swarm)
    manager = StateDir(swarm.node("manager1").state_dir)
    assert manager.kek.is_file() and manager.node_key.is_file()  # the prize is there, on the host
    assert str(task_dir(swarm, victim.task_id) / "conmon.pid") in paths  # and a running task's files
    found = await attack(swarm, "files-attack", NODE_FILES_ATTACK, env=[lines_of("HOST_PATHS", paths)])
    found.assert_nothing_leaked("the task reached the node's files")
    controls = found.controls()
    assert controls["paths-tried"] == str(len(paths)) and controls["find"] == "/bin/busybox", str(found)
    clusters = str(swarm.directory.parent)
    reachable = [path for path in found.tagged("REACHABLE") if path.startswith(clusters)]
    assert reachable == [], f"host paths named by mountinfo are reachable: {reachable}\n{found}"
    odd = [fd for fd in found.tagged("FD") if not re.fullmatch(FD_OF_A_TASK, fd.split(":", 1)[1])]
    assert found.tagged("FD") and odd == [], f"descriptors that are not the task's own: {odd}\n{found}"
    assert found.tagged("FD-DIR") == [], f"descriptors of directories: {found}"


# -- a working directory that is a descriptor of the node (runc's CVE-2024-21626) -----------------------------

CWD_ATTACK = r"""
echo "CONTROL:cwd:$(pwd)"
up=../../../../../../../../../../../..
for p in $HOST_PATHS; do probe "$up$p"; done
echo "CWD:$(ls -A $up 2>&1 | tr '\n' ' ')"
"""
INHERITED_FDS = range(3, 10)


async def test_a_working_directory_naming_an_inherited_descriptor_reaches_nothing_of_the_node(swarm):
    """An image's WorkingDir (or a spec's Dir) of /proc/self/fd/<n>: a descriptor of the host leaked into the
    container's init would put the task's cwd in the host's file system (runc's CVE-2024-21626). The task must
    be rejected, or run and see nothing of the node from there."""
    paths = host_paths(swarm)
    for fd in INHERITED_FDS:
        env = [lines_of("HOST_PATHS", paths)]
        found = await run_task(swarm, f"cwd-attack-{fd}", CWD_ATTACK, env, Dir=f"/proc/self/fd/{fd}")
        status = found.task["Status"]
        if status["State"] == "rejected":
            assert f"/proc/self/fd/{fd}" in status.get("Err", ""), f"fd {fd}: rejected for another reason: {status}"
            continue
        assert status["State"] == "complete" and found.controls().get("end") == "reached", f"fd {fd}: {found}"
        found.assert_nothing_leaked(f"with its working directory at /proc/self/fd/{fd} the task reached")


# -- another task's secret -------------------------------------------------------------------------------

SECRETS_ATTACK = r"""
echo "CONTROL:own-secrets:$(ls -A /run/secrets | tr '\n' ' ')"
[ "$(sha256sum < /run/secrets/own | cut -d ' ' -f 1)" = "$OWN_SHA256" ] && echo "CONTROL:own-secret:read"
for p in $VICTIM_PATHS; do probe_everywhere "$p"; done
for d in /proc/[0-9]*/root/run/secrets /proc/[0-9]*/cwd/run/secrets; do
  echo "SECRETS-DIR:$d:$(ls -A "$d" 2>&1 | tr '\n' ' ')"
done
# search PATTERN LABEL: every file it can read, the environment and command line of every process it sees.
search() {
  for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
    tr '\0' '\n' < "$f" 2>/dev/null | grep -qE "$1" && echo "FOUND:$2:$f"
  done
  find / \( -path /proc -o -path /sys \) -prune -o -type f -print 2>/dev/null | while read -r f; do
    grep -qE "$1" "$f" 2>/dev/null && echo "FOUND:$2:$f"
  done
}
search "$VICTIM_PATTERN" victim
search "$OWN_PATTERN" own
"""


async def test_a_root_task_cannot_read_another_tasks_secret_by_any_path(swarm, victim):
    victim_secrets = task_dir(swarm, victim.task_id) / "secrets"
    assert (victim_secrets / victim.file).read_bytes() == victim.secret  # on the host, it is there
    own = random_secret("own")
    async with api(swarm) as client:
        reference = await secret_reference(client, "own-secret", own, "own")
    paths = [victim_secrets, victim_secrets / victim.file, victim_secrets.parent, f"/run/secrets/{victim.file}"]
    found = await attack(swarm, "secrets-attack", SECRETS_ATTACK, secrets=[reference], env=[
        lines_of("VICTIM_PATHS", paths),
        f"OWN_SHA256={hashlib.sha256(own).hexdigest()}",
        "VICTIM_PATTERN=rsw-victim-[0-9a-f]{32}",
        "OWN_PATTERN=rsw-own-[0-9a-f]{32}",
    ])
    async with api(swarm) as client:
        await client.secret_remove("own-secret")
    found.assert_nothing_leaked("the task reached the other task's secret")
    assert [where for where in found.tagged("FOUND") if where.startswith("victim:")] == [], str(found)
    for form in encodings(victim.secret):
        assert form.decode() not in "\n".join(found.lines), f"the victim's secret is in the attack's output: {found}"
    controls = found.controls()
    assert controls["own-secrets"] == "own " and controls.get("own-secret") == "read", str(found)
    assert found.tagged("FOUND") == ["own:/run/secrets/own"], f"the search does not find even its own secret: {found}"
    assert all(listed.endswith(":own ") for listed in found.tagged("SECRETS-DIR")), str(found)


# -- the node's processes ----------------------------------------------------------------------------------

PROCESSES_ATTACK = r"""
for p in /proc/[0-9]*; do echo "PROC:${p#/proc/}:$(cat "$p/comm" 2>/dev/null)"; done
ps -o pid,comm | sed 's/^/PS:/'
for ns in pid mnt net uts ipc cgroup; do echo "NS:$ns:$(readlink /proc/self/ns/$ns)"; done
for p in $HOST_PIDS; do
  kill -0 "$p" 2>/dev/null && leak "signalled host pid $p"
  probe "/proc/$p"
done
echo "CONTROL:pid1:$(cat /proc/1/comm)"
echo "CONTROL:host-pids-tried:$(echo $HOST_PIDS | wc -w)"
"""
TASK_COMMANDS = {"docker-init", "sh", "cat", "ps", "sed", "readlink", "echo", "kill", "wc", "exe"}
"""What runs in the attack's container: tini as its init, the shell, and the applets the script runs ("exe":
busybox's shell runs an applet of a pipeline by re-executing /proc/self/exe, so `sed` is named that for the
moment before it renames itself)."""
NAMESPACES = ("pid", "mnt", "net", "uts", "ipc", "cgroup")


def namespaces_of(pid: int | str) -> dict[str, str]:
    return {ns: os.readlink(f"/proc/{pid}/ns/{ns}") for ns in NAMESPACES}


async def test_a_root_task_sees_only_its_own_few_processes_in_namespaces_of_its_own(swarm, victim):
    manager = swarm.node("manager1")
    victim_pid = int((task_dir(swarm, victim.task_id) / "pid").read_text())
    conmon_pid = int((task_dir(swarm, victim.task_id) / "conmon.pid").read_text())
    host_pids = [node.pid for node in swarm.nodes if node.pid] + [victim_pid, conmon_pid, os.getpid()]
    found = await attack(swarm, "processes-attack", PROCESSES_ATTACK, env=[lines_of("HOST_PIDS", host_pids)])
    found.assert_nothing_leaked("the task reached host processes")
    processes = dict(line.split(":", 1) for line in found.tagged("PROC"))
    assert processes.get("1") == "docker-init" == found.controls()["pid1"], str(found)
    strangers = {pid: comm for pid, comm in processes.items() if comm and comm not in TASK_COMMANDS}
    assert strangers == {} and len(processes) <= 8, f"processes not of the task: {strangers}\n{found}"
    listed = [line.split() for line in found.tagged("PS")[1:]]
    assert listed and all(comm in TASK_COMMANDS for _, comm, *_ in listed), str(found)
    assert found.controls()["host-pids-tried"] == str(len(host_pids)), str(found)
    seen = dict(line.split(":", 1) for line in found.tagged("NS"))
    assert set(seen) == set(NAMESPACES), str(found)
    for other, pid in (("the host", "self"), ("the node", manager.pid), ("the victim task", victim_pid)):
        shared = sorted(ns for ns, link in namespaces_of(pid).items() if seen[ns] == link)
        assert not shared, f"the task shares its {shared} namespaces with {other}\n{found}"


# -- mounting ------------------------------------------------------------------------------------------------

MOUNT_ATTACK = r"""
mkdir -p /mnt/a
echo "CONTROL:mounts-before:$(wc -l < /proc/self/mountinfo)"
try mount-tmpfs mount -t tmpfs none /mnt/a
try mount-proc mount -t proc proc /mnt/a
try mount-sysfs mount -t sysfs sysfs /mnt/a
try mount-cgroup mount -t cgroup -o memory cgroup /mnt/a
try bind-root mount -o bind / /mnt/a
try bind-secrets mount -o bind /run/secrets /mnt/a
try remount-secrets-rw mount -o remount,rw /run/secrets
try remount-proc-sys-rw mount -o remount,rw /proc/sys
try remount-sys-rw mount -o remount,rw /sys
try umount-secrets umount /run/secrets
try umount-lazy-secrets umount -l /run/secrets
try umount-proc-keys-mask umount /proc/keys
try umount-proc-sys umount /proc/sys
try unshare-user unshare -U true
try unshare-user-root unshare -r true
try unshare-mount unshare -m true
try unshare-pid unshare -p -f true
try unshare-net unshare -n true
try nsenter-init nsenter -t 1 -m -p true
try write-secret sh -c 'echo x > /run/secrets/own'
try create-in-secrets touch /run/secrets/new
try chmod-secret chmod 666 /run/secrets/own
try write-init sh -c 'echo >> /sbin/docker-init'
try write-init-exe sh -c 'echo >> /proc/1/exe'
try control true
echo "CONTROL:mounts-after:$(wc -l < /proc/self/mountinfo)"
grep ' /mnt/a ' /proc/self/mountinfo | sed 's/^/LEAK:mounted:/'
echo "CONTROL:secrets-mount:$(grep ' /run/secrets ' /proc/self/mountinfo)"
"""
MOUNT_TRIES = {
    "mount-tmpfs", "mount-proc", "mount-sysfs", "mount-cgroup", "bind-root", "bind-secrets", "remount-secrets-rw",
    "remount-proc-sys-rw", "remount-sys-rw", "umount-secrets", "umount-lazy-secrets", "umount-proc-keys-mask",
    "umount-proc-sys", "unshare-user", "unshare-user-root", "unshare-mount", "unshare-pid", "unshare-net",
    "nsenter-init", "write-secret", "create-in-secrets", "chmod-secret", "write-init", "write-init-exe",
}


async def test_a_root_task_cannot_mount_unmount_unshare_or_write_its_secrets_or_its_init(swarm):
    """/sbin/docker-init is the node's own tini binary, bound read-only into every task that has an init."""
    tini = hashlib.sha256(Path(INIT_BINARY).read_bytes()).hexdigest()
    async with api(swarm) as client:
        reference = await secret_reference(client, "mounter-secret", random_secret("own"), "own")
    found = await attack(swarm, "mount-attack", MOUNT_ATTACK, secrets=[reference])
    async with api(swarm) as client:
        await client.secret_remove("mounter-secret")
    tries = found.tries()
    assert set(tries) == MOUNT_TRIES | {"control"} and tries["control"][0] == 0, str(found)
    worked = {name: said for name, (status, said) in tries.items() if status == 0 and name != "control"}
    assert worked == {}, f"the task could: {worked}\n{found}"
    found.assert_nothing_leaked("the task mounted")
    controls = found.controls()
    assert controls["mounts-before"] == controls["mounts-after"], str(found)
    secrets_mount = controls["secrets-mount"].split()
    assert secrets_mount and "ro" in secrets_mount[5].split(","), f"/run/secrets is not read-only: {found}"
    assert hashlib.sha256(Path(INIT_BINARY).read_bytes()).hexdigest() == tini, f"{INIT_BINARY} was changed"


USERNS_ATTACK = r"""
install_probes
/tmp/probe GETPID; echo "CONTROL:probe-getpid:$?"
/tmp/probe CLONE_NEWUSER; echo "CLONE-NEWUSER:$?"
/tmp/userns-mount; echo "USERNS-MOUNT:$?"
""".replace("GETPID", str(GETPID)).replace("CLONE_NEWUSER", " ".join(map(str, CLONE_NEWUSER_SIGCHLD)))
USERNS_MOUNT_STAGES = {
    0: "a child that died", 1: "fsopen", 2: "fsconfig", 3: "fsmount", 4: "move_mount",
    5: "MOUNTING A TMPFS on /tmp (fsopen, fsconfig, fsmount and move_mount all succeeded)",
}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the probes are x86-64 machine code")
async def test_a_root_task_cannot_make_a_user_namespace_to_mount_in(swarm):
    """Docker's profile refuses clone(2) with namespace flags to a task without CAP_SYS_ADMIN: in a user
    namespace of its own a task has every capability, and mounts with the new mount API (fsopen, fsmount,
    move_mount), which refusing mount(2) and umount2(2) does not cover."""
    found = await attack(swarm, "userns-attack", USERNS_ATTACK, env=probe_env())
    assert found.controls()["probe-getpid"] == "0", f"the probe did not run: {found}"
    clone = int(found.tagged("CLONE-NEWUSER")[0])
    mounted = int(found.tagged("USERNS-MOUNT")[0])
    assert mounted == USERNS_CLONE_REFUSED, (
        "clone(CLONE_NEWUSER|CLONE_NEWNS) was allowed, and in its own user namespace the task got as far as "
        f"{USERNS_MOUNT_STAGES.get(mounted, mounted)}\n{found}"
    )
    assert clone == EPERM, f"clone(CLONE_NEWUSER) gave {os.strerror(clone) if clone else 'success'}, not EPERM"


# -- capabilities and seccomp --------------------------------------------------------------------------------

CONFINEMENT_ATTACK = r"""
grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs|Cap(Inh|Prm|Eff|Bnd|Amb)):' /proc/self/status | tr -d '\t ' \
  | sed 's/^/STATUS:/'
install_probes
/tmp/probe GETPID; echo "CONTROL:probe-getpid:$?"
for entry in $SYSCALLS; do
  /tmp/probe $(echo "${entry#*=}" | tr ',' ' ')
  echo "SYSCALL:${entry%%=*}:$?"
done
""".replace("GETPID", str(GETPID))


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the probes are x86-64 machine code")
async def test_a_root_task_has_dockers_capabilities_only_and_seccomp_refuses_dockers_blocked_syscalls(swarm):
    syscalls = [f"{name}={','.join(map(str, args))}" for name, args in BLOCKED_SYSCALLS.items()]
    env = [*probe_env(), lines_of("SYSCALLS", syscalls)]
    found = await attack(swarm, "confinement-attack", CONFINEMENT_ATTACK, env=env)
    status = dict(line.split(":", 1) for line in found.tagged("STATUS"))
    assert status.get("Seccomp") == "2" and int(status.get("Seccomp_filters", "0")) >= 1, (
        f"the task is not under a seccomp filter: {status}\n{found}"
    )
    for field in ("CapEff", "CapPrm", "CapBnd"):
        mask = int(status[field], 16)
        assert not mask >> CAP_SYS_ADMIN & 1, f"the task holds CAP_SYS_ADMIN in {field}: {status[field]}"
        assert mask == DOCKER_DEFAULT_CAPS, f"{field} is {mask:#x}, not Docker's 14 defaults {DOCKER_DEFAULT_CAPS:#x}"
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0, status
    assert found.controls()["probe-getpid"] == "0", f"the probe did not run: {found}"
    results = {name: int(code) for name, code in (line.split(":") for line in found.tagged("SYSCALL"))}
    assert set(results) == set(BLOCKED_SYSCALLS), str(found)
    allowed = {name: os.strerror(code) if code else "succeeded" for name, code in results.items() if code != EPERM}
    assert allowed == {}, f"syscalls Docker's profile blocks were not refused with EPERM: {allowed}"


# -- the kernel's knobs, masked files, host devices ------------------------------------------------------------

KERNEL_ATTACK = r"""
# Opening for writing is the attempt; nothing is written (`: >` truncates, which these files ignore).
n=0
for f in /proc/sys/kernel/core_pattern /proc/sys/kernel/modprobe /proc/sys/kernel/hostname \
         /proc/sys/vm/drop_caches /proc/sys/net/ipv4/ip_forward /proc/sysrq-trigger /sys/kernel/uevent_helper \
         /sys/kernel/mm/transparent_hugepage/enabled /sys/power/state /sys/module/kernel/parameters/panic \
         /sys/fs/cgroup/devices/devices.allow /sys/fs/cgroup/memory/memory.limit_in_bytes \
         /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/*/notify_on_release \
         /sys/fs/cgroup/*/cgroup.procs; do
  [ -e "$f" ] || continue
  n=$((n+1))
  if (: > "$f") 2>/dev/null; then leak "opened for writing:$f"; fi
done
echo "CONTROL:knobs-tried:$n"
[ -n "$(dmesg 2>/dev/null | head -n 1)" ] && leak "read the kernel's log with dmesg"
for f in $MASKED_FILES; do
  if [ -e "$f" ]; then echo "MASKED:$f:$(cat "$f" 2>/dev/null | wc -c)"; else echo "MASKED:$f:absent"; fi
done
for d in $MASKED_DIRS; do
  [ -e "$d" ] && echo "MASKED:$d:$(ls -A "$d" 2>/dev/null | wc -l)"
done
# The host's disks, by the numbers /sys lists, and its memory, ports and kernel log.
i=0
for d in /sys/dev/block/*; do
  mm=$(cat "$d/dev" 2>/dev/null) || continue
  i=$((i+1))
  node=/tmp/block-$i
  if ! mknod "$node" b "${mm%:*}" "${mm#*:}" 2>/dev/null; then echo "DEVICE:block $mm:mknod refused"; continue; fi
  if head -c 1 "$node" >/dev/null 2>&1; then leak "read the host's block device $mm"
  elif (: > "$node") 2>/dev/null; then leak "opened the host's block device $mm for writing"
  else echo "DEVICE:block $mm:open refused"; fi
done
echo "CONTROL:block-devices:$i"
for spec in mem:1:1 kmem:1:2 port:1:4 kmsg:1:11; do
  name=${spec%%:*}; mm=${spec#*:}
  if ! mknod "/tmp/$name" c "${mm%:*}" "${mm#*:}" 2>/dev/null; then echo "DEVICE:$name:mknod refused"; continue; fi
  if head -c 1 "/tmp/$name" >/dev/null 2>&1; then leak "read /dev/$name through a node it made"
  else echo "DEVICE:$name:open refused"; fi
done
echo "CONTROL:devices:$(ls /dev | tr '\n' ' ')"
"""
MASKED_FILES = (
    "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats", "/proc/timer_stats",
)
MASKED_DIRS = ("/proc/acpi", "/proc/scsi", "/proc/asound", "/sys/firmware", "/sys/devices/virtual/powercap")
DOCKER_DEV = {
    "console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
    "tty", "urandom", "zero",
}
"""What /dev of a Docker container holds."""


async def test_a_root_task_cannot_write_kernel_or_cgroup_settings_read_masked_files_or_open_host_devices(swarm):
    found = await attack(swarm, "kernel-attack", KERNEL_ATTACK, env=[
        lines_of("MASKED_FILES", MASKED_FILES), lines_of("MASKED_DIRS", MASKED_DIRS),
    ])
    found.assert_nothing_leaked("the task reached the kernel's settings or the host's devices")
    controls = found.controls()
    assert int(controls["knobs-tried"]) >= 8, str(found)
    block_devices = os.listdir("/sys/dev/block")
    assert block_devices and controls["block-devices"] == str(len(block_devices)), str(found)
    assert all(line.endswith("refused") for line in found.tagged("DEVICE")), str(found)
    masked = dict(line.rsplit(":", 1) for line in found.tagged("MASKED"))
    assert os.path.exists("/proc/keys") and masked["/proc/keys"] == "0", f"/proc/keys is not masked: {found}"
    for path in MASKED_FILES:
        assert masked[path] == ("0" if os.path.exists(path) else "absent"), f"{path} is not masked: {found}"
    for path in MASKED_DIRS:
        if os.path.exists(path):
            assert masked.get(path) == "0", f"{path} is not masked: {found}"
    devices = set(controls["devices"].split())
    assert devices <= DOCKER_DEV, f"/dev holds more than Docker's: {sorted(devices - DOCKER_DEV)}"


# -- the secrets on the nodes' disks, and their mounts ---------------------------------------------------------


async def test_no_file_of_any_node_holds_a_secret_while_its_task_runs_nor_after_and_its_tmpfs_goes(swarm, victim):
    """Last: it looks for every secret the module gave a task, under the whole clusters directory (each node's
    state dir, log and records, the registry's storage). The secrets tmpfs of a running task is memory; any
    other place a secret's bytes or their base64 form are is a leak to disk."""
    clusters = swarm.directory.parent
    data = random_secret("holder")
    async with api(swarm) as client:
        reference = await secret_reference(client, "holder-secret", data, "held")
        created = await client.service_create({**sleeper("holder", reference), "Mode": {"Global": {}}})
        tasks = await eventually(lambda: converged(client, "holder", 2), "a holder task on each node", ATTACK_TIMEOUT)
    names = {node.node_id: node.name for node in swarm.nodes}
    held_at = {task_dir(swarm, task["ID"], names[task["NodeID"]]) / "secrets" / "held" for task in tasks}
    victim_file = task_dir(swarm, victim.task_id) / "secrets" / victim.file
    readers = held_at | {victim_file}
    assert len(SECRETS_MADE) >= 4  # the victim's, the attackers' own, the holder's

    holding = files_holding(clusters, SECRETS_MADE)
    assert holding.get(victim_file) == [victim.secret], "the search does not find even the victim's own file"
    assert {path for path, held in holding.items() if held == [data]} == held_at, holding
    table = mounts()
    for path, held in holding.items():
        mount = mount_of(path, table)
        found = f"{path} holds {[secret.decode() for secret in held]} and is on {mount}"
        assert path in readers, f"a secret is where no running task reads it: {found}"
        assert mount.fstype == "tmpfs" and mount.mount_point == str(path.parent), f"a secret on disk: {found}"
        assert {"ro", "nosuid", "nodev", "noexec"} <= mount.options, f"not ro,nosuid,nodev,noexec: {mount}"
    assert secrets_mounts(clusters) == {str(path.parent) for path in readers}

    async with api(swarm) as client:
        await client.service_remove("holder")
        await eventually(lambda: _gone(client, created["ID"]), "the holder's tasks to go", ATTACK_TIMEOUT)
        await client.secret_remove("holder-secret")

    async def unmounted() -> bool:
        return secrets_mounts(clusters) == {str(victim_file.parent)}

    async def removed() -> bool:
        # The directory goes right after the unmount, in the same release; give it that moment.
        return unmounted_now() and not [path for path in held_at if path.parent.parent.exists()]

    def unmounted_now() -> bool:
        return secrets_mounts(clusters) == {str(victim_file.parent)}

    await eventually(unmounted, "the secrets tmpfs mounts of the removed tasks to go", 30)
    await eventually(removed, "the removed tasks' directories to go", 30)
    holding = files_holding(clusters, SECRETS_MADE)
    assert holding == {victim_file: [victim.secret]}, f"secrets left on the nodes' disks: {holding}"
