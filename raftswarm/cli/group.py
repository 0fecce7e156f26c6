"""The click group every `raftswarm <object>` command group is made of."""

from __future__ import annotations

from typing import ClassVar

import click


class DockerGroup(click.Group):
    """A command group that also answers to docker's aliases: `list` for `ls`, `remove` for `rm`."""

    ALIASES: ClassVar[dict[str, str]] = {"list": "ls", "remove": "rm"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.ALIASES.get(cmd_name, cmd_name))
