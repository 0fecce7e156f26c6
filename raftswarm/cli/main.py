"""Entry point of the `raftswarm` command."""

import click

from .. import __version__
from .cluster import cluster
from .config import config
from .image import image
from .node import node
from .network import network
from .secret import secret
from .stack import stack
from .service import service
from .swarm import swarm
from .volume import volume


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="raftswarm")
@click.option(
    "-H",
    "--host",
    "host_flag",
    metavar="unix://PATH",
    help="Node API socket to talk to. Otherwise: $RAFTSWARM_HOST, then $DOCKER_HOST if it is unix://, then the "
    "current cluster recorded by `cluster up` (~/.config/raftswarm/current-host), then the default socket "
    "(/run/raftswarm/raftswarm.sock as root, ~/.local/run/raftswarm.sock otherwise).",
)
@click.pass_context
def main(ctx: click.Context, host_flag: str | None) -> None:
    """raftswarm: a Docker-swarm-mode cluster written from scratch in Python.

    The commands talk to a node (`raftswarm-node`) over its API socket, the way the docker CLI talks to
    dockerd: `raftswarm swarm init`, `raftswarm node ls`, ...
    """
    ctx.ensure_object(dict)["host_flag"] = host_flag


@main.command()
def version() -> None:
    """Show the raftswarm version."""
    click.echo(f"raftswarm {__version__}")


main.add_command(swarm)
main.add_command(node)
main.add_command(cluster)
main.add_command(service)
main.add_command(network)
main.add_command(secret)
main.add_command(config)
main.add_command(stack)
main.add_command(image)
main.add_command(volume)
