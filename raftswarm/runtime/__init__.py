"""runtime/: tasks as OCI containers: the OCI runtime spec Docker would give a task (spec.py), Docker's default
seccomp policy (seccomp.py); the runc driver comes next."""
