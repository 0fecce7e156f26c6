"""Docker's default seccomp policy, as the `linux.seccomp` section of an OCI runtime spec.

Docker's own profile (moby's profiles/seccomp/default.json) is an allowlist of roughly 300 syscalls, with
argument filters and per-capability exceptions, kept in step with every kernel release. This module is a
denylist instead: allow by default, and refuse with EPERM exactly the syscalls that Docker's documentation
("Seccomp security profiles for Docker", the table of significant syscalls blocked by the default profile)
lists. It blocks what a user would notice being blocked under Docker, without copying a table that rots.

Beyond the table, as Docker's profile does for a container without CAP_SYS_ADMIN: `clone` with a namespace
flag is refused (one argument filter per CLONE_NEW* flag), `clone3` answers ENOSYS (its flags are in memory,
out of seccomp's sight, and the C library falls back to `clone`), and the new mount API (fsopen, fsmount,
move_mount, ...) is refused -- without these a task could make a user namespace of its own and mount in it.

Difference from Docker to note: other syscalls that are new and absent from the table stay allowed here, and
Docker's other argument-level filters are not reproduced (`personality` is allowed whatever its argument).
"""

# The table "Significant syscalls blocked by the default profile" of Docker's seccomp documentation.
# Names a given architecture lacks (stime, vm86 on x86_64) are skipped by runc with a warning.
DOCUMENTED_BLOCKED_SYSCALLS = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "move_pages",
    "name_to_handle_at", "nfsservctl", "open_by_handle_at", "perf_event_open", "pivot_root",
    "process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl", "reboot", "request_key",
    "set_mempolicy", "setns", "settimeofday", "stime", "swapon", "swapoff", "sysfs", "_sysctl", "umount",
    "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
)

# Docker's profile answers a refused syscall with EPERM, as if the capability were missing.
EPERM = 1
ENOSYS = 38

# The new mount API: Docker's profile allows it only to a container with CAP_SYS_ADMIN, which no task has. In a
# user namespace of its own a task could otherwise mount with it, the mount(2) entry above notwithstanding.
MOUNT_API_SYSCALLS = ("fsconfig", "fsmount", "fsopen", "fspick", "mount_setattr", "move_mount", "open_tree")

# clone(2) flags that make namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET): Docker's
# profile refuses clone with any of them (the documented table's `clone` row), as `unshare` is refused above.
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

ARCHITECTURES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")


def default_profile() -> dict:
    """The OCI `linux.seccomp` object: allow everything except Docker's documented blocked syscalls."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": list(ARCHITECTURES),
        "syscalls": [
            {
                "names": [*DOCUMENTED_BLOCKED_SYSCALLS, *MOUNT_API_SYSCALLS],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
            },
            # One rule per flag: the rules of a syscall are alternatives, a rule's conditions all hold together.
            *(
                {
                    "names": ["clone"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": EPERM,
                    "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
                }
                for flag in CLONE_NAMESPACE_FLAGS
            ),
            # clone3 takes its flags in memory, where seccomp cannot look: ENOSYS, as Docker answers, makes the C
            # library fall back to clone, whose flags the rules above see.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    }
