"""Tasks as OCI containers, as Docker runs them:

- `templates`: Docker's templates ({{.Service.Name}}, {{.Task.Slot}}, ...) in a task's hostname, env and mounts.
- `health`: healthchecks -- the spec's merged over the image's, probes in the container, healthy or not.
- `containers`: the driver -- bundles, crun under conmon, reattaching after an agent restart, stop, logs.
- `spec`: the OCI runtime spec Docker would give a task (process rules, confinement, mounts, limits).
- `seccomp`: Docker's default seccomp policy.
- `volumes`, `mounts`: node-local volumes (Docker's local driver) and a task's mounts as OCI mounts.
- `secrets`: a task's secrets on a tmpfs of their own, bound read-only at /run/secrets.
- `configs`: a task's configs on a tmpfs of their own, each file bound read-only at its target path.
- `files`: the generated /etc files, and reading the image's own files without leaving its root.
- `logs`: conmon's log files read back as lines.
- `ociruntime`: crun, the OCI runtime, and how it runs on a host with hybrid cgroups.
- `processes`: conmon and crun started (vfork) and awaited (pidfd) without holding the event loop.
"""
