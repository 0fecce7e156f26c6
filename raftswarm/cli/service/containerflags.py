"""The flags of ContainerSpec fields and of job modes (`--mount`, `--ulimit`, `--dns`, `--host`, `--health-*`,
`--cap-add`, `--max-concurrent`, ...): their values parsed as docker's opts package parses them (MountOpt,
UlimitOpt, ValidateExtraHost, ValidateIPAddress, ValidateDNSSearch, ValidateSingleGenericResource,
credentialSpecOpt, ParseEnvFile), and their options on `create` and `update`. `containerspec` makes the spec
fields of them."""

from __future__ import annotations

import csv
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

import click

from ..errors import CommandError
from ..options import ParsedFlag, check_env, parse_go_duration, ram_in_bytes
from .goflags import COMMAND, GO_INT, GO_UINT, GoBoolOption, parse_go_bool, parse_go_int

# -- values -------------------------------------------------------------------------------------------------


def parse_mount(value: str) -> dict[str, Any]:
    """docker's MountOpt: `type=bind,source=/srv,target=/data,readonly` -> a Mount, as Go's JSON encoder writes
    it. The type defaults to volume; a source starting with "." is made absolute, as docker does."""
    fields = next(csv.reader([value]), [])
    if not fields:
        raise ValueError("EOF")  # what Go's csv reader says of an empty value
    mount: dict[str, Any] = {"Type": "volume"}

    def options(kind: str) -> dict[str, Any]:
        if kind == "VolumeOptions" and kind not in mount:
            mount[kind] = {"Labels": {}, "DriverConfig": {}}
        return mount.setdefault(kind, {})

    for field in fields:
        key, sep, val = field.partition("=")
        key = key.lower()
        if not sep:
            if key not in _MOUNT_SWITCHES:
                raise ValueError(f"invalid field '{field}' must be a key=value pair")
            kind, name = _MOUNT_SWITCHES[key]
            (options(kind) if kind else mount)[name] = True
        elif key == "type":
            mount["Type"] = val.lower()
        elif key in ("source", "src"):
            mount["Source"] = os.path.abspath(val) if not os.path.isabs(val) and val.startswith(".") else val
        elif key in ("target", "dst", "destination"):
            mount["Target"] = val
        elif key in ("readonly", "ro", "bind-nonrecursive", "volume-nocopy"):
            kind, name = _MOUNT_SWITCHES[key]
            (options(kind) if kind else mount)[name] = _mount_bool(key, val)
        elif key == "consistency":
            mount["Consistency"] = val.lower()
        elif key == "bind-propagation":
            options("BindOptions")["Propagation"] = val.lower()
        elif key == "bind-recursive":
            if val not in _BIND_RECURSIVE:
                raise ValueError(
                    f'invalid value for {key}: {val} (must be "enabled", "disabled", "writable", or "readonly")'
                )
            if _BIND_RECURSIVE[val]:
                options("BindOptions")[_BIND_RECURSIVE[val]] = True
        elif key == "volume-subpath":
            options("VolumeOptions")["Subpath"] = val
        elif key == "volume-label":
            _set_pair(options("VolumeOptions")["Labels"], val)
        elif key == "volume-driver":
            options("VolumeOptions")["DriverConfig"]["Name"] = val
        elif key == "volume-opt":
            _set_pair(options("VolumeOptions")["DriverConfig"].setdefault("Options", {}), val)
        elif key == "image-subpath":
            options("ImageOptions")["Subpath"] = val
        elif key == "tmpfs-size":
            try:
                options("TmpfsOptions")["SizeBytes"] = ram_in_bytes(val)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {val}") from None
        elif key == "tmpfs-mode":
            if not re.fullmatch(r"[0-7]+", val) or int(val, 8) > 0xFFFFFFFF:
                raise ValueError(f"invalid value for {key}: {val}")
            options("TmpfsOptions")["Mode"] = int(val, 8)
        else:
            raise ValueError(f"unexpected key '{key}' in '{field}'")
    _check_mount(mount)
    return _as_go_writes_mount(mount)


# A field given without "=": the part of the Mount it turns on (None: the Mount itself) and the field's name.
_MOUNT_SWITCHES = {
    "readonly": (None, "ReadOnly"),
    "ro": (None, "ReadOnly"),
    "volume-nocopy": ("VolumeOptions", "NoCopy"),
    "bind-nonrecursive": ("BindOptions", "NonRecursive"),
}
_BIND_RECURSIVE = {
    "enabled": None,
    "disabled": "NonRecursive",
    "writable": "ReadOnlyNonRecursive",
    "readonly": "ReadOnlyForceRecursive",
}
_MOUNT_OPTION_TYPES = (
    ("VolumeOptions", "volume"),
    ("ImageOptions", "image"),
    ("BindOptions", "bind"),
    ("TmpfsOptions", "tmpfs"),
)


def _mount_bool(key: str, value: str) -> bool:
    try:
        return parse_go_bool(value)
    except ValueError:
        raise ValueError(f"invalid value for {key}: {value}") from None


def _set_pair(mapping: dict[str, str], value: str) -> None:
    key, _, val = value.partition("=")
    if key:
        mapping[key] = val


def _check_mount(mount: dict[str, Any]) -> None:
    if not mount["Type"]:
        raise ValueError("type is required")
    if not mount.get("Target"):
        raise ValueError("target is required")
    for kind, mount_type in _MOUNT_OPTION_TYPES:
        if kind in mount and mount["Type"] != mount_type:
            prefix = kind.removesuffix("Options").lower()
            raise ValueError(f"cannot mix '{prefix}-*' options with mount type '{mount['Type']}'")
    bind = mount.get("BindOptions") or {}
    if bind.get("ReadOnlyNonRecursive") and not mount.get("ReadOnly"):
        raise ValueError("option 'bind-recursive=writable' requires 'readonly' to be specified in conjunction")
    if bind.get("ReadOnlyForceRecursive"):
        if not mount.get("ReadOnly"):
            raise ValueError("option 'bind-recursive=readonly' requires 'readonly' to be specified in conjunction")
        if bind.get("Propagation") != "rprivate":
            raise ValueError(
                "option 'bind-recursive=readonly' requires 'bind-propagation=rprivate' to be specified in conjunction"
            )


def _as_go_writes_mount(mount: dict[str, Any]) -> dict[str, Any]:
    """Every field of a Mount is omitempty; its option objects are pointers, sent (maybe empty) once made."""

    def without_empty(mapping: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in mapping.items() if v not in ("", 0, False, {}, None) or k == "DriverConfig"}

    written = without_empty({k: v for k, v in mount.items() if not k.endswith("Options")})
    for kind, _ in _MOUNT_OPTION_TYPES:
        if kind in mount:
            options = without_empty(mount[kind])
            if "DriverConfig" in options:
                options["DriverConfig"] = without_empty(options["DriverConfig"])
            written[kind] = options
    return written


# go-units' ulimit names (RLIMIT_AS is left out: it does not work with the way Docker starts a container).
ULIMIT_NAMES = frozenset(
    [
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ]
)


def parse_ulimit(value: str) -> dict[str, Any]:
    """go-units ParseUlimit: `nofile=1024[:4096]` -> {"Name": "nofile", "Hard": 4096, "Soft": 1024}. -1 is
    unlimited; the hard limit defaults to the soft one."""
    name, sep, limits = value.partition("=")
    if not sep:
        raise ValueError(f"invalid ulimit argument: {value}")
    if name not in ULIMIT_NAMES:
        raise ValueError(f"invalid ulimit type: {name}")
    parts = limits.split(":")
    if len(parts) > 2:
        raise ValueError(f"too many limit value arguments - {limits}, can only have up to two, `soft[:hard]`")
    hard = parse_go_int(parts[1], 10) if len(parts) == 2 else None
    soft = parse_go_int(parts[0], 10)
    hard = soft if hard is None else hard
    if hard != -1:
        if soft == -1:
            raise ValueError(
                f"ulimit soft limit must be less than or equal to hard limit: soft: -1 (unlimited), hard: {hard}"
            )
        if soft > hard:
            raise ValueError(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")
    return {"Name": name, "Hard": hard, "Soft": soft}


def parse_ip_address(value: str) -> str:
    """docker's ValidateIPAddress (`--dns`): the address in Go's canonical form."""
    address = _go_ip(value.strip())
    if address is None:
        raise ValueError(f"IP address is not correctly formatted: {value}")
    return address


def _go_ip(text: str) -> str | None:
    """Go's net.ParseIP(text).String(): None if it is not an address (Go takes no zone and no brackets)."""
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_extra_host(value: str) -> str:
    """docker's ValidateExtraHost (`--host`, `--host-add`): `host:ip` or `host=ip` -> "host:ip"; the address
    may be in brackets, or `host-gateway`."""
    host, sep, address = value.partition("=")
    if not sep:
        host, sep, address = value.partition(":")
    if not sep or not host or ":" in host:
        raise ValueError(f'bad format for add-host: "{value}"')
    if address != "host-gateway":
        if len(address) > 2 and address[0] == "[" and address[-1] == "]":
            address = address[1:-1]
        if _go_ip(address.strip()) is None:
            raise ValueError(f'invalid IP address in add-host: "{address}"')
    return f"{host}:{address}"


# docker's domainRegexp, `(:?` slips included (they allow a colon where a group starts).
_DOMAIN = re.compile(
    r"(:?(:?[a-zA-Z0-9]|(:?[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9]))(:?\.(:?[a-zA-Z0-9]|(:?[a-zA-Z0-9][a-zA-Z0-9\-]*"
    r"[a-zA-Z0-9])))*)\.?[\t\n\f\r ]*\Z"
)
# resolv.conf's limit on a domain name, as docker checks it.
MAX_DOMAIN_LENGTH = 254


def parse_dns_search(value: str) -> str:
    """docker's ValidateDNSSearch (`--dns-search`): a domain name, or "." for none."""
    domain = value.strip(" ")
    if domain == ".":
        return domain
    match = _DOMAIN.match(domain) if re.search("[a-zA-Z]", domain) else None
    if match is None or len(match.group(1)) > MAX_DOMAIN_LENGTH:
        raise ValueError(f"{domain} is not a valid domain")
    return match.group(1)


def check_generic_resource(value: str) -> str:
    """docker's ValidateSingleGenericResource (`--generic-resource`): `kind=value`."""
    if "=" not in value:
        raise ValueError(f"invalid generic-resource format `{value}` expected `name=value`")
    return value


def parse_credential_spec(value: str) -> dict[str, str]:
    """docker's credentialSpecOpt: `config://NAME`, `file://PATH` or `registry://KEY` -> a CredentialSpec;
    "" (none: `update` removes the service's) -> {}."""
    for prefix, key in (("config://", "Config"), ("file://", "File"), ("registry://", "Registry")):
        if value.startswith(prefix):
            return {"Config": "", "File": "", "Registry": "", key: value.removeprefix(prefix)}
    if value:
        raise ValueError(
            'invalid credential spec: value must be prefixed with "config://", "file://", or "registry://"'
        )
    return {}


def read_env_file(path: str) -> list[str]:
    """docker's ParseEnvFile (`--env-file`): `KEY=value` lines as they are (quotes and trailing spaces kept);
    blank lines and `#` comments skipped; a bare `KEY` takes its value from this environment, or is left
    out. Raises CommandError with Go's words."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise CommandError(f"open {path}: {reason}") from None
    variables = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise CommandError(
                f"invalid env file ({path}): invalid utf8 bytes at line {number}: [{' '.join(str(b) for b in raw)}]"
            ) from None
        line = (text.removeprefix("\ufeff") if number == 1 else text).lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not key:
            raise CommandError(f"invalid env file ({path}): no variable name on line '{line}'")
        if " " in key or "\t" in key:
            raise CommandError(f"invalid env file ({path}): variable '{key}' contains whitespaces")
        if sep:
            variables.append(line)
        elif key in os.environ:
            variables.append(f"{key}={os.environ[key]}")
    return variables


def parse_positive_duration(text: str) -> int:
    """docker's PositiveDurationOpt (`--health-*`): a Go duration, not negative; nanoseconds."""
    duration = parse_go_duration(text)
    if duration < 0:
        raise ValueError("duration cannot be negative")
    return duration


MOUNT = ParsedFlag("mount", parse_mount)
ULIMIT = ParsedFlag("ulimit", parse_ulimit)
IP_ADDRESS = ParsedFlag("list", parse_ip_address)
EXTRA_HOST = ParsedFlag("list", parse_extra_host)
DNS_SEARCH = ParsedFlag("list", parse_dns_search)
GENERIC_RESOURCE = ParsedFlag("list", check_generic_resource)
CREDENTIAL_SPEC = ParsedFlag("credential-spec", parse_credential_spec)
POSITIVE_DURATION = ParsedFlag("duration", parse_positive_duration)


# -- options --------------------------------------------------------------------------------------------------


def _list(name: str, help_text: str, **kwargs: Any) -> Any:
    return click.option(name, multiple=True, metavar=kwargs.pop("metavar", "list"), help=help_text, **kwargs)


def _health_duration(name: str, help_text: str) -> Any:
    return click.option(name, type=POSITIVE_DURATION, metavar="duration", help=help_text)


def _decorated(fn: Any, options: list[Any]) -> Any:
    for option in reversed(options):
        fn = option(fn)
    return fn


def container_options(fn: Any) -> Any:
    """The options `create` and `update` share, beyond `flags.service_options` (the rest of docker's
    addServiceFlags): entrypoint, capabilities, healthcheck, log driver, TTY, read-only root filesystem, stop
    signal, isolation, OOM score, credential spec, job concurrency."""
    return _decorated(
        fn,
        [
            click.option(
                "--credential-spec",
                type=CREDENTIAL_SPEC,
                metavar="credential-spec",
                help="Credential spec for managed service account (Windows only)",
            ),
            click.option(
                "--entrypoint", type=COMMAND, metavar="command", help="Overwrite the default ENTRYPOINT of the image"
            ),
            _list("--cap-add", "Add Linux capabilities"),
            _list("--cap-drop", "Drop Linux capabilities"),
            click.option(
                "--max-concurrent",
                type=GO_UINT,
                metavar="uint",
                help="Number of job tasks to run concurrently (default equal to --replicas)",
            ),
            click.option("--log-driver", metavar="string", help="Logging driver for service"),
            _list("--log-opt", "Logging driver options", callback=check_env),
            click.option("--health-cmd", metavar="string", help="Command to run to check health"),
            _health_duration("--health-interval", "Time between running the check (ms|s|m|h)"),
            _health_duration("--health-timeout", "Maximum time to allow one check to run (ms|s|m|h)"),
            click.option(
                "--health-retries", type=GO_INT, metavar="int", help="Consecutive failures needed to report unhealthy"
            ),
            _health_duration(
                "--health-start-period",
                "Start period for the container to initialize before counting retries towards unstable (ms|s|m|h)",
            ),
            _health_duration(
                "--health-start-interval", "Time between running the check during the start period (ms|s|m|h)"
            ),
            click.option("--no-healthcheck", cls=GoBoolOption, help="Disable any container-specified HEALTHCHECK"),
            click.option("-t", "--tty", cls=GoBoolOption, help="Allocate a pseudo-TTY"),
            click.option("--read-only", cls=GoBoolOption, help="Mount the container's root filesystem as read only"),
            click.option("--stop-signal", metavar="string", help="Signal to stop the container"),
            click.option("--isolation", metavar="string", help="Service container isolation mode"),
            click.option(
                "--oom-score-adj", type=GO_INT, metavar="int", help="Tune host's OOM preferences (-1000 to 1000) "
            ),
        ],
    )


def container_create_options(fn: Any) -> Any:
    """The options only `create` has for them: lists that `update` changes with -add/-rm pairs."""
    return _decorated(
        fn,
        [
            _list("--env-file", "Read in a file of environment variables"),
            _list("--mount", "Attach a filesystem mount to the service", type=MOUNT, metavar="mount"),
            _list("--group", "Set one or more supplementary user groups for the container"),
            _list("--dns", "Set custom DNS servers", type=IP_ADDRESS),
            _list("--dns-option", "Set DNS options"),
            _list("--dns-search", "Set custom DNS search domains", type=DNS_SEARCH),
            _list("--host", "Set one or more custom host-to-IP mappings (host:ip)", type=EXTRA_HOST),
            _list("--sysctl", "Sysctl options"),
            _list("--ulimit", "Ulimit options", type=ULIMIT, metavar="ulimit"),
            _list("--generic-resource", "User defined resources", type=GENERIC_RESOURCE),
        ],
    )


def container_update_options(fn: Any) -> Any:
    """The -add/-rm pairs of `update` for them."""
    return _decorated(
        fn,
        [
            _list("--group-add", "Add an additional supplementary user group to the container"),
            _list("--group-rm", "Remove a previously added supplementary user group from the container"),
            _list("--mount-add", "Add or update a mount on a service", type=MOUNT, metavar="mount"),
            _list("--mount-rm", "Remove a mount by its target path"),
            _list("--dns-add", "Add or update a custom DNS server", type=IP_ADDRESS),
            _list("--dns-rm", "Remove a custom DNS server"),
            _list("--dns-option-add", "Add or update a DNS option"),
            _list("--dns-option-rm", "Remove a DNS option"),
            _list("--dns-search-add", "Add or update a custom DNS search domain", type=DNS_SEARCH),
            _list("--dns-search-rm", "Remove a DNS search domain"),
            _list("--host-add", 'Add a custom host-to-IP mapping ("host:ip")', type=EXTRA_HOST),
            _list("--host-rm", 'Remove a custom host-to-IP mapping ("host:ip")'),
            _list("--sysctl-add", "Add or update a Sysctl option"),
            _list("--sysctl-rm", "Remove a Sysctl option"),
            _list("--ulimit-add", "Add or update a ulimit option", type=ULIMIT, metavar="ulimit"),
            _list("--ulimit-rm", "Remove a ulimit option"),
            _list("--generic-resource-add", "Add a Generic resource", type=GENERIC_RESOURCE),
            _list("--generic-resource-rm", "Remove a Generic resource"),
        ],
    )
