"""Stacks: the compose files that `raftswarm stack deploy -c FILE [-c FILE...] NAME` turns into networks, secrets,
configs and services, as `docker stack deploy` does it. Pure apart from reading the compose files and the files
they name (env files, secret and config files). Two steps, after docker/cli's `cli/compose/loader` and
`cli/compose/convert`:

    config = load_stack([base, prod], os.environ)   # parse, interpolate, check, merge: a StackConfig
    specs = stack_specs(config, "shop")              # the Docker API bodies, named shop_web, shop_default, ...

- `load`: reading compose files (stdin for "-"): YAML, `${VAR}` interpolation, and the entry point `load_stack`.
- `sections`: a file's top level and the networks, volumes, secrets and configs it defines, checked key by key.
- `service`: a service's keys, each converted, ignored with docker's warning, or refused; `check_service`.
- `mounts`: a service's `volumes:` (short and long syntax) and `tmpfs:`; `envfile`: its `env_file:` files.
- `fields`: the value readers those checks are made of (strings, integers, durations, sizes, CPUs).
- `merge`: several files' configs as one, as docker/cli's loader merges them.
- `model`: the checked config, `StackConfig`, with compose's names and values in Docker's units.
- `convert`: `stack_specs`, StackConfig -> NetworkCreate bodies, SecretSpecs, ConfigSpecs and ServiceSpecs.

Every problem is a `ComposeError` naming the file and the key path. Imports only `objects` and `errors`.
"""

from ..errors import ComposeError
from .convert import IMAGE_LABEL, NAMESPACE_LABEL, StackSpecs, stack_specs
from .load import STDIN, load_stack
from .model import StackConfig

__all__ = [
    "IMAGE_LABEL",
    "NAMESPACE_LABEL",
    "STDIN",
    "ComposeError",
    "StackConfig",
    "StackSpecs",
    "load_stack",
    "stack_specs",
]
