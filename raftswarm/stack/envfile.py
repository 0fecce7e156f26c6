"""A service's `env_file:` files, read as docker/cli reads them (pkg/kvfile, which `docker run --env-file` uses
too), so that a file docker deploys gives the same environment here:

- UTF-8 text; a byte-order mark at the start is dropped; each line's leading whitespace is dropped;
- empty lines and lines starting with "#" are skipped;
- `KEY=VALUE` is taken as it is: no quotes removed, no interpolation, trailing whitespace kept;
- `KEY` alone takes the deploying environment's value, and is left out when that has none;
- a key must not be empty or contain spaces or tabs.

The loader applies them before the service's `environment:`, later files winning (`sections`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .fields import fail

_BOM = "\ufeff"
_KEY_WHITESPACE = " \t"


def read_env_file(file: Path, path: str, environment: Mapping[str, str]) -> dict[str, str]:
    """The variables of `file`, in order; `path` is the key path naming it in the compose file."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(path, f"cannot read {file}: {exc.strerror or exc}")
    variables: dict[str, str] = {}
    # Split on "\n" only (as Go's bufio.Scanner does, then dropping one "\r"): a form feed or a lone "\r" is
    # part of a value there, not a line break as str.splitlines would make it.
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            fail(path, f"invalid env file ({file}): invalid utf8 bytes at line {number}")
        if number == 1:
            line = line.removeprefix(_BOM)
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not key:
            fail(path, f"invalid env file ({file}): no variable name on line '{line}'")
        if any(char in key for char in _KEY_WHITESPACE):
            fail(path, f"invalid env file ({file}): variable '{key}' contains whitespaces")
        if equals:
            variables[key] = value
        elif key in environment:
            variables[key] = environment[key]
    return variables
