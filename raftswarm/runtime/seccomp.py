"""Docker's default seccomp policy, as the `linux.seccomp` section of an OCI runtime spec.

Docker's own profile (moby's profiles/seccomp/default.json) is an allowlist of roughly 300 syscalls, with
argument filters and per-capability exceptions, kept in step with every kernel release. This module is a
denylist instead: allow by default, and refuse with EPERM exactly the syscalls that Docker's documentation
("Seccomp security profiles for Docker", the table of significant syscalls blocked by the default profile)
lists. It blocks what a user would notice being blocked under Docker, without copying a table that rots.

Difference from Docker to note: syscalls that are new and absent from that table stay allowed here, and
Docker's argument-level filters are not reproduced (`clone` and `personality` are allowed whatever their
flags; Docker refuses clone with namespace flags and unusual personalities).
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

ARCHITECTURES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")


def default_profile() -> dict:
    """The OCI `linux.seccomp` object: allow everything except Docker's documented blocked syscalls."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": list(ARCHITECTURES),
        "syscalls": [
            {
                "names": list(DOCUMENTED_BLOCKED_SYSCALLS),
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
            }
        ],
    }
