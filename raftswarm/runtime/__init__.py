"""Tasks as OCI containers, as Docker runs them:

- `containers`: the driver -- bundles, runc under conmon, reattaching after an agent restart, stop, logs.
- `spec`: the OCI runtime spec Docker would give a task (process rules, confinement, mounts, limits).
- `seccomp`: Docker's default seccomp policy.
- `secrets`: a task's secrets on a tmpfs of their own, bound read-only at /run/secrets.
- `files`: the generated /etc files, and reading the image's own files without leaving its root.
- `logs`: conmon's log files read back as lines.
"""
