"""Entry point of the `raftswarm-node` daemon."""

import click

from .. import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="raftswarm-node")
def main() -> None:
    """Run a raftswarm node.

    Not yet: the daemon (state dir, 2377/7946/4789 listeners, the client API socket) is built by the
    node issue. Until then this command says so and exits non-zero, rather than pretend to serve.
    """
    raise click.ClickException("the raftswarm node daemon is not built yet; see the README's status section")
