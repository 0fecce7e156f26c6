"""Stacks: the compose file that `raftswarm stack deploy -c FILE NAME` turns into networks, secrets and services."""

from .compose import ComposeError, StackConfig, StackSpecs, load_stack, stack_specs

__all__ = ["ComposeError", "StackConfig", "StackSpecs", "load_stack", "stack_specs"]
