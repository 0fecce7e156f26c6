"""Entry point of the `raftswarm` command."""

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="raftswarm")
def main() -> None:
    """raftswarm: a Docker-swarm-mode cluster written from scratch in Python.

    The consensus core and its simulator are in place (`python -m chaos sim`); the node daemon, the
    swarm commands and `cluster up` arrive with the node issue.
    """


@main.command()
def version() -> None:
    """Show the raftswarm version."""
    click.echo(f"raftswarm {__version__}")
