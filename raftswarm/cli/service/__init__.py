"""`raftswarm service ...`: create, ls, ps, logs, inspect, update, scale, rollback, rm.

A SERVICE argument goes to the node as given (ID, unique ID prefix or name) and the node resolves it, as
dockerd does. The rooms of this package:

    flags           the flags of `create` and `update`, parsed as docker's opts package parses them
    containerflags  the flags of ContainerSpec fields and job modes (mounts, ulimits, DNS, healthcheck, ...)
    goflags         flag values as Go's pflag and strconv read them (`--tty=false`, `0x10`, shell words)
    spec            the ServiceSpec those flags make (docker's ToService and updateService), without I/O
    containerspec   the ContainerSpec fields of the containerflags, created and updated as docker does
    image           the image a service runs: pinned to its registry digest; registry credentials
    changes         create, update, scale, rollback, rm: read, change a copy of the spec, write it back
    progress        waiting for a changed service to converge (a job to complete), with docker's progress lines
    listing         ls and ps
    logs            logs
    inspect         inspect, as JSON or --pretty
"""

from __future__ import annotations

import click

from ..group import DockerGroup
from . import changes, inspect, listing, logs


@click.group(cls=DockerGroup)
def service() -> None:
    """Manage Swarm services."""


service.add_command(changes.create)
service.add_command(listing.list_services)
service.add_command(listing.ps)
service.add_command(logs.logs)
service.add_command(inspect.inspect)
service.add_command(changes.update)
service.add_command(changes.scale)
service.add_command(changes.rollback)
service.add_command(changes.remove)
