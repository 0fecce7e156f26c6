"""Stacks: the compose file that `raftswarm stack deploy -c FILE NAME` turns into networks, secrets, configs
and services, as `docker stack deploy -c FILE NAME` does it. Pure apart from reading the compose file and the
secret and config files it names. Two steps, after docker/cli's `cli/compose/loader` and `cli/compose/convert`:

    config = load_stack(path, os.environ)     # parse, interpolate, check: a StackConfig
    specs = stack_specs(config, "shop")       # the Docker API bodies, named shop_web, shop_default, ...

- `load`: reading a compose file: YAML, `${VAR}` interpolation, and the entry point `load_stack`.
- `sections`: the compose file's sections (services, networks, secrets, configs, ports, deploy) checked key by key.
- `fields`: the value readers those checks are made of (strings, integers, durations, sizes, CPUs).
- `model`: the checked config, `StackConfig`, with compose's names and values in Docker's units.
- `convert`: `stack_specs`, StackConfig -> NetworkCreate bodies, SecretSpecs, ConfigSpecs and ServiceSpecs.

Every problem is a `ComposeError` naming the file and the key path. Imports only `objects` and `errors`.
"""

from ..errors import ComposeError
from .convert import IMAGE_LABEL, NAMESPACE_LABEL, StackSpecs, stack_specs
from .load import load_stack
from .model import StackConfig

__all__ = ["IMAGE_LABEL", "NAMESPACE_LABEL", "ComposeError", "StackConfig", "StackSpecs", "load_stack", "stack_specs"]
