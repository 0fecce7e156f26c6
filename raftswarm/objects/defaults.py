"""Docker's defaults for what a spec leaves out, in one place (`docker service create --help`, SwarmKit's
api/defaults, `docker swarm init --help`). Everything that fills in a missing value imports it from here."""

from __future__ import annotations

from typing import Any

NANOSECONDS = 1_000_000_000

DEFAULT_RESTART_CONDITION = "any"
DEFAULT_RESTART_DELAY_NS = 5 * NANOSECONDS
RESTART_DEFAULTS: dict[str, Any] = {
    "Condition": DEFAULT_RESTART_CONDITION,
    "Delay": DEFAULT_RESTART_DELAY_NS,
    "MaxAttempts": 0,  # unlimited
    "Window": 0,
}

DEFAULT_MONITOR_NS = 5 * NANOSECONDS
UPDATE_DEFAULTS: dict[str, Any] = {
    "Parallelism": 1,
    "Delay": 0,
    "FailureAction": "pause",
    "Monitor": DEFAULT_MONITOR_NS,
    "MaxFailureRatio": 0.0,
    "Order": "stop-first",
}
"""The same for updates and rollbacks. A Monitor of 0 also means the default: Docker has no way to say
"no monitoring"."""

DEFAULT_ENDPOINT_MODE = "vip"
DEFAULT_PORT_PROTOCOL = "tcp"
DEFAULT_PUBLISH_MODE = "ingress"
DEFAULT_STOP_GRACE_NS = 10 * NANOSECONDS
"""How long a task's process has between its stop signal and SIGKILL (`docker service create --stop-grace-period`)."""
DEFAULT_SECRET_MODE = 0o444
"""A secret's or config's file mode in a task when its reference gives none."""

DEFAULT_TASK_HISTORY_LIMIT = 5
"""Tasks kept per slot (or node), the running one included (`docker swarm init --task-history-limit`)."""


def effective_update_config(given: dict[str, Any] | None) -> dict[str, Any]:
    """An UpdateConfig (or RollbackConfig) with Docker's defaults for what it leaves out. As dockerd reads the
    API: a missing or null value, an empty FailureAction or Order, and a Monitor of 0 take the default;
    Parallelism 0 (all at once) and Delay 0 keep their meaning."""
    effective = dict(UPDATE_DEFAULTS)
    for key, value in (given or {}).items():
        if value is None or (key in ("FailureAction", "Order", "Monitor") and not value):
            continue
        effective[key] = value
    return effective
