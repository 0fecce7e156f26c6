"""`raftswarm swarm ...`: init, join, leave, join-token, unlock, unlock-key, update, ca.

Each command makes the calls `docker swarm ...` makes, in the same order, and prints the same text with
`raftswarm` in place of `docker`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import sys
from typing import Any

import click

from ..api.client import ApiClient
from ..objects.defaults import DEFAULT_TASK_HISTORY_LIMIT
from .connection import api_command
from .errors import CommandError
from .options import DEFAULT_LISTEN_ADDR, GO_DURATION, NodeAddr
from .shapes import description_of, swarm_info

# How often `swarm ca --rotate` looks at the swarm while waiting for a root rotation (docker: 200 ms).
ROTATION_POLL_INTERVAL = 0.2

AVAILABILITIES = ["active", "pause", "drain"]


@click.group()
def swarm() -> None:
    """Manage the swarm."""


# -- options shared by `init` and `update` (docker's addSwarmFlags); None means "not given" -------------


def _swarm_spec_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--task-history-limit",
                type=int,
                help=f"Task history retention limit  [default: {DEFAULT_TASK_HISTORY_LIMIT}]",
            ),
            click.option(
                "--dispatcher-heartbeat",
                type=GO_DURATION,
                help="Dispatcher heartbeat period (ns|us|ms|s|m|h)  [default: 5s]",
            ),
            click.option(
                "--cert-expiry",
                type=GO_DURATION,
                help="Validity period for node certificates (ns|us|ms|s|m|h)  [default: 2160h0m0s]",
            ),
            click.option(
                "--max-snapshots", type=click.IntRange(min=0), help="Number of additional Raft snapshots to retain"
            ),
            click.option(
                "--snapshot-interval",
                type=click.IntRange(min=0),
                help="Number of log entries between Raft snapshots  [default: 10000]",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _autolock_option(help_text: str) -> Any:
    """--autolock, alone (true) or with a value (--autolock=false); None when not given."""
    return click.option(
        "--autolock",
        type=click.BOOL,
        is_flag=False,
        flag_value=True,
        default=None,
        metavar="[true|false]",
        help=help_text,
    )


# -- options shared by `init` and `join` ----------------------------------------------------------------

_advertise_addr_option = click.option(
    "--advertise-addr", default="", help='Advertised address (format: "<ip|interface>[:port]")'
)
_listen_addr_option = click.option(
    "--listen-addr",
    type=NodeAddr(),
    default=DEFAULT_LISTEN_ADDR,
    show_default=True,
    help='Listen address (format: "<ip|interface>[:port]")',
)
_availability_option = click.option(
    "--availability",
    type=click.Choice(AVAILABILITIES, case_sensitive=False),
    help="Availability of the node  [default: active]",
)


def merge_swarm_spec(spec: dict[str, Any], options: dict[str, Any]) -> None:
    """Write the swarm options that were given into a Swarm Spec (docker's mergeSwarmSpec)."""
    if options.get("task_history_limit") is not None:
        spec.setdefault("Orchestration", {})["TaskHistoryRetentionLimit"] = options["task_history_limit"]
    if options.get("dispatcher_heartbeat") is not None:
        spec.setdefault("Dispatcher", {})["HeartbeatPeriod"] = options["dispatcher_heartbeat"]
    if options.get("max_snapshots") is not None:
        spec.setdefault("Raft", {})["KeepOldSnapshots"] = options["max_snapshots"]
    if options.get("snapshot_interval") is not None:
        spec.setdefault("Raft", {})["SnapshotInterval"] = options["snapshot_interval"]
    if options.get("autolock") is not None:
        spec.setdefault("EncryptionConfig", {})["AutoLockManagers"] = options["autolock"]
    if options.get("cert_expiry") is not None:
        spec.setdefault("CAConfig", {})["NodeCertExpiry"] = options["cert_expiry"]


def print_unlock_command(unlock_key: str) -> None:
    if unlock_key:
        click.echo(
            "To unlock a swarm manager after it restarts, run the `raftswarm swarm unlock`\n"
            f"command and provide the following key:\n\n    {unlock_key}\n\n"
            "Remember to store this key in a password manager, since without it you\n"
            "will not be able to restart the manager."
        )


async def print_join_command(api: ApiClient, node_id: str, worker: bool, manager: bool) -> None:
    """The `raftswarm swarm join` lines, with the address of the manager this node is (docker prints
    nothing when the node is not a manager)."""
    node = await api.node_inspect(node_id)
    cluster = await api.swarm_inspect()
    manager_status = node.get("ManagerStatus")
    if not manager_status:
        return
    tokens = cluster.get("JoinTokens") or {}
    addr = manager_status.get("Addr", "")
    for role, wanted in (("worker", worker), ("manager", manager)):
        if wanted:
            click.echo(
                f"To add a {role} to this swarm, run the following command:\n\n"
                f"    raftswarm swarm join --token {tokens.get(role.capitalize(), '')} {addr}\n"
            )


# -- init / join / leave ------------------------------------------------------------------------------


@swarm.command()
@_advertise_addr_option
@_listen_addr_option
@click.option("--force-new-cluster", is_flag=True, help="Force create a new cluster from current state")
@_autolock_option("Enable manager autolocking (requiring an unlock key to start a stopped manager)")
@_availability_option
@_swarm_spec_options
@api_command
async def init(
    api: ApiClient,
    advertise_addr: str,
    listen_addr: str,
    force_new_cluster: bool,
    autolock: bool | None,
    availability: str | None,
    **spec_options: Any,
) -> None:
    """Initialize a swarm."""
    spec: dict[str, Any] = {}
    merge_swarm_spec(spec, {"autolock": autolock, **spec_options})
    request: dict[str, Any] = {
        "ListenAddr": listen_addr,
        "AdvertiseAddr": advertise_addr,
        "ForceNewCluster": force_new_cluster,
        "Spec": spec,
        "AutoLockManagers": bool(autolock),
    }
    if availability:
        request["Availability"] = availability.lower()
    node_id = await api.swarm_init(request)
    click.echo(f"Swarm initialized: current node ({node_id}) is now a manager.\n")
    await print_join_command(api, node_id, worker=True, manager=False)
    click.echo("To add a manager to this swarm, run 'raftswarm swarm join-token manager' and follow the instructions.")
    if autolock:
        print_unlock_command(await api.swarm_unlock_key())


@swarm.command(short_help="Join a swarm as a node and/or manager.")
@click.option("--token", required=True, help="Token for entry into the swarm")
@_advertise_addr_option
@_listen_addr_option
@_availability_option
@click.argument("remote", metavar="HOST:PORT")
@api_command
async def join(
    api: ApiClient, token: str, advertise_addr: str, listen_addr: str, availability: str | None, remote: str
) -> None:
    """Join a swarm as a node and/or manager, through the manager at HOST:PORT."""
    request: dict[str, Any] = {
        "ListenAddr": listen_addr,
        "AdvertiseAddr": advertise_addr,
        "RemoteAddrs": [remote],
        "JoinToken": token,
    }
    if availability:
        request["Availability"] = availability.lower()
    await api.swarm_join(request)
    info = await api.info()
    role = "manager" if swarm_info(info).get("ControlAvailable") else "worker"
    click.echo(f"This node joined a swarm as a {role}.")


@swarm.command()
@click.option("-f", "--force", is_flag=True, help="Force this node to leave the swarm, ignoring warnings")
@api_command
async def leave(api: ApiClient, force: bool) -> None:
    """Leave the swarm."""
    await api.swarm_leave(force=force)
    click.echo("Node left the swarm.")


# -- tokens and keys ------------------------------------------------------------------------------------


@swarm.command("join-token")
@click.option("--rotate", is_flag=True, help="Rotate join token")
@click.option("-q", "--quiet", is_flag=True, help="Only display token")
@click.argument("role", type=click.Choice(["worker", "manager"]))
@api_command
async def join_token(api: ApiClient, rotate: bool, quiet: bool, role: str) -> None:
    """Manage join tokens: show (or rotate) the token for ROLE (worker|manager)."""
    if rotate:
        cluster = await api.swarm_inspect()
        await api.swarm_update(
            cluster["Version"]["Index"],
            cluster["Spec"],
            rotate_worker_token=role == "worker",
            rotate_manager_token=role == "manager",
        )
        if not quiet:
            click.echo(f"Successfully rotated {role} join token.\n")
    # Read the swarm again: a rotation changed the token.
    cluster = await api.swarm_inspect()
    if quiet:
        click.echo((cluster.get("JoinTokens") or {}).get(role.capitalize(), ""))
        return
    node_id = swarm_info(await api.info()).get("NodeID")
    if not node_id:
        raise CommandError("node ID not found in /info")
    await print_join_command(api, node_id, worker=role == "worker", manager=role == "manager")


@swarm.command()
@api_command
async def unlock(api: ApiClient) -> None:
    """Unlock swarm: give a restarted autolocked manager its unlock key (read from stdin, or prompted for)."""
    state = swarm_info(await api.info()).get("LocalNodeState", "")
    if state == "inactive":
        raise CommandError("Error: This node is not part of a swarm")
    if state != "locked":
        raise CommandError("Error: swarm is not locked")
    await api.swarm_unlock(read_unlock_key())


def read_unlock_key() -> str:
    stdin = sys.stdin  # CliRunner swaps sys.stdin, so tests feed it like a pipe
    if stdin.isatty():
        return click.prompt("Enter unlock key", hide_input=True, prompt_suffix=": ", default="", show_default=False)
    return stdin.readline().strip()


@swarm.command("unlock-key")
@click.option("--rotate", is_flag=True, help="Rotate unlock key")
@click.option("-q", "--quiet", is_flag=True, help="Only display token")
@api_command
async def unlock_key(api: ApiClient, rotate: bool, quiet: bool) -> None:
    """Manage the unlock key."""
    if rotate:
        cluster = await api.swarm_inspect()
        if not (cluster["Spec"].get("EncryptionConfig") or {}).get("AutoLockManagers"):
            raise CommandError("cannot rotate because autolock is not turned on")
        await api.swarm_update(cluster["Version"]["Index"], cluster["Spec"], rotate_manager_unlock_key=True)
        if not quiet:
            click.echo("Successfully rotated manager unlock key.")
    key = await api.swarm_unlock_key()
    if not key:
        raise CommandError("no unlock key is set")
    if quiet:
        click.echo(key)
    else:
        print_unlock_command(key)


# -- update / ca ----------------------------------------------------------------------------------------


@swarm.command()
@_autolock_option("Change manager autolocking setting (true|false)")
@_swarm_spec_options
@api_command
async def update(api: ApiClient, autolock: bool | None, **spec_options: Any) -> None:
    """Update the swarm."""
    options = {"autolock": autolock, **spec_options}
    if all(value is None for value in options.values()):
        ctx = click.get_current_context()
        click.echo(ctx.get_help())
        return
    cluster = await api.swarm_inspect()
    spec = copy.deepcopy(cluster["Spec"])
    was_locked = bool((spec.get("EncryptionConfig") or {}).get("AutoLockManagers"))
    merge_swarm_spec(spec, options)
    await api.swarm_update(cluster["Version"]["Index"], spec)
    click.echo("Swarm updated.")
    if autolock and not was_locked:
        print_unlock_command(await api.swarm_unlock_key())


@swarm.command()
@click.option("--rotate", is_flag=True, help="Rotate the swarm CA - new root certificate and key are generated")
@click.option("--cert-expiry", type=GO_DURATION, help="Validity period for node certificates (ns|us|ms|s|m|h)")
@click.option(
    "-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for the root rotation to converge"
)
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output")
@api_command
async def ca(api: ApiClient, rotate: bool, cert_expiry: int | None, detach: bool, quiet: bool) -> None:
    """Display and rotate the root CA."""
    cluster = await api.swarm_inspect()
    if not rotate:
        if cert_expiry is not None:
            raise CommandError("`--cert-expiry` flag requires the `--rotate` flag to update the CA")
        print_trust_root(cluster)
        return
    spec = copy.deepcopy(cluster["Spec"])
    ca_config = spec.setdefault("CAConfig", {})
    if cert_expiry is not None:
        ca_config["NodeCertExpiry"] = cert_expiry
    ca_config["ForceRotate"] = int(ca_config.get("ForceRotate") or 0) + 1
    await api.swarm_update(cluster["Version"]["Index"], spec)
    if detach:
        return
    await wait_for_root_rotation(api, quiet)
    print_trust_root(await api.swarm_inspect())


def print_trust_root(cluster: dict[str, Any]) -> None:
    trust_root = (cluster.get("TLSInfo") or {}).get("TrustRoot", "")
    if not trust_root:
        raise CommandError("No CA information available")
    click.echo(trust_root.strip())


async def wait_for_root_rotation(api: ApiClient, quiet: bool) -> None:
    """Wait until the rotation is over and every node has a certificate from, and trusts, the new root.

    Progress goes to stdout as it changes (docker draws bars; these lines also read well in a log). A node
    that does not report TLSInfo at all is not waited for: only the swarm's RootRotationInProgress is."""
    shown = None
    try:
        while True:
            cluster = await api.swarm_inspect()
            nodes = await api.node_list()
            desired = cluster.get("TLSInfo") or {}
            reporting = [n for n in nodes if any((description_of(n).get("TLSInfo") or {}).values())]
            certs = sum(1 for n in reporting if _issuer(n["Description"]["TLSInfo"]) == _issuer(desired))
            roots = sum(
                1 for n in reporting if n["Description"]["TLSInfo"].get("TrustRoot") == desired.get("TrustRoot")
            )
            in_progress = bool(cluster.get("RootRotationInProgress"))
            if in_progress or certs < len(reporting):
                roots = 0  # docker shows no root as rotated until every certificate is
            progress = (hashlib.sha256(desired.get("TrustRoot", "").encode()).hexdigest(), certs, roots, len(reporting))
            if not quiet and progress != shown:
                digest, certs, roots, total = progress
                click.echo(f"desired root digest: sha256:{digest}")
                click.echo(f"  rotated TLS certificates: {certs}/{total} nodes")
                click.echo(f"  rotated CA certificates:  {roots}/{total} nodes")
                shown = progress
            if not in_progress and certs == roots == len(reporting):
                return
            await asyncio.sleep(ROTATION_POLL_INTERVAL)
    except asyncio.CancelledError:
        click.echo("Operation continuing in background.", err=True)
        click.echo("Use `raftswarm swarm ca` to check progress.", err=True)
        raise


def _issuer(tls_info: dict[str, Any]) -> tuple[str, str]:
    return tls_info.get("CertIssuerSubject", ""), tls_info.get("CertIssuerPublicKey", "")
