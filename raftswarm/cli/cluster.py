"""`raftswarm cluster ...`: up, down, ls, status, env -- a local swarm of `raftswarm-node` processes.

Unlike the other command groups this one does not talk to one node: it starts and ends node processes, so it
drives `localcluster.swarm` directly. `up` makes the new cluster the CLI's current target by writing its first
manager's socket to the current-host file (see `cli.host`); `down` removes that file when it points into the
cluster being removed.
"""

from __future__ import annotations

import asyncio
import shlex
from datetime import UTC, datetime
from pathlib import Path

import click

from ..errors import RaftswarmError
from ..localcluster.swarm import (
    DEFAULT_NAME,
    LOOPBACK,
    NETWORKS,
    REGISTRY_NAME,
    ClusterNode,
    SwarmCluster,
    default_clusters_dir,
)
from . import output
from .errors import fail
from .host import UNIX_SCHEME, current_host_file

CLUSTER_SAMPLES = ("busybox", "python")
"""Sample images `cluster up` puts in its registry: busybox for trying things, python for the README's demo."""

name_option = click.option("--name", default=DEFAULT_NAME, show_default=True, help="Name of the cluster")


@click.group()
@click.option(
    "--clusters-dir",
    envvar="RAFTSWARM_CLUSTERS_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where clusters keep their state (env RAFTSWARM_CLUSTERS_DIR)  "
    "[default: /var/lib/raftswarm/clusters as root, else ~/.local/share/raftswarm/clusters]",
)
@click.pass_context
def cluster(ctx: click.Context, clusters_dir: Path | None) -> None:
    """Run a swarm of raftswarm-node processes on this machine.

    As root each node gets a network namespace of its own on a private bridge, with its own address and the
    standard ports; otherwise each node gets its own loopback address.
    """
    ctx.ensure_object(dict)["clusters_dir"] = clusters_dir or default_clusters_dir()


def _clusters_dir() -> Path:
    return click.get_current_context().find_root().obj["clusters_dir"]


def _load(name: str) -> SwarmCluster:
    try:
        return SwarmCluster.load(name, _clusters_dir())
    except RaftswarmError as exc:
        fail(f"Error: {exc}")


def _current_host() -> str:
    try:
        return current_host_file().read_text().strip()
    except OSError:
        return ""


def _points_into(cluster: SwarmCluster, url: str) -> bool:
    return url in {UNIX_SCHEME + str(node.socket) for node in cluster.nodes}


@cluster.command(short_help="Start a cluster and make it the CLI's current target.")
@name_option
@click.option("--managers", type=click.IntRange(min=1), default=3, show_default=True, help="Number of managers")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Number of workers")
@click.option(
    "--network",
    type=click.Choice(NETWORKS),
    default="auto",
    show_default=True,
    help="netns: a network namespace per node (root); loopback: a 127.0.0.N address per node; auto: netns if possible",
)
def up(name: str, managers: int, workers: int, network: str) -> None:
    """Start a cluster: init the first manager, join the others with the swarm's tokens, wait until every node
    is Ready, and make it the current target of the raftswarm CLI."""
    try:
        made = asyncio.run(
            SwarmCluster.up(
                name, managers, workers, _clusters_dir(), network=network, registry=True, samples=CLUSTER_SAMPLES,
                docker_hub=True,
            )
        )
    except RaftswarmError as exc:
        fail(f"Error: {exc}")
    except KeyboardInterrupt:
        fail("Interrupted: everything `cluster up` had made was removed.")
    if made.note:
        click.echo(f"Note: {made.note}.")
    network_text = (
        f"network namespaces on bridge {made.bridge}, subnet {made.subnet}"
        if made.network != LOOPBACK
        else "loopback addresses"
    )
    click.echo(
        f'Cluster "{made.name}" is up: {len(made.managers)} manager(s) and {len(made.workers)} worker(s) '
        f"in {made.up_seconds:.1f}s ({network_text})."
    )
    _print_nodes(made)
    first = made.managers[0]
    host_file = current_host_file()
    host_file.parent.mkdir(parents=True, exist_ok=True)
    host_file.write_text(UNIX_SCHEME + str(first.socket) + "\n")
    click.echo(
        f"\nRegistry: {made.registry} on this machine, {REGISTRY_NAME} on every node and their Docker Hub mirror "
        f"(holding {', '.join(f'library/{name}' for name in CLUSTER_SAMPLES)})"
    )
    click.echo(f"State and logs: {made.directory}")
    click.echo(f"The raftswarm CLI now talks to {first.name} ({UNIX_SCHEME}{first.socket}): try `raftswarm node ls`.")
    click.echo(f"For docker and other clients: eval $(raftswarm cluster env --name {made.name})")


def _print_nodes(made: SwarmCluster) -> None:
    output.print_table(
        ["NODE", "ROLE", "ADDRESS", "NODE ID", "PID", "NAMESPACE"],
        [[n.name, n.role, n.addr, n.node_id, str(n.pid or ""), n.namespace or ""] for n in made.nodes],
    )


@cluster.command(short_help="Stop a cluster and remove everything it made.")
@name_option
@click.option("--keep-state", is_flag=True, help="Keep the nodes' state directories and logs")
def down(name: str, keep_state: bool) -> None:
    """End every process of a cluster and remove its namespaces, interfaces and (unless --keep-state) state."""
    found = _load(name)
    running = sum(node.running() for node in found.nodes)
    made = len(found.resources)
    was_current = _points_into(found, _current_host())
    try:
        found.down(keep_state=keep_state)
    except RaftswarmError as exc:
        fail(f"Error: {exc}")
    if was_current:
        current_host_file().unlink(missing_ok=True)
    removed = f", removed {made} namespace(s) and interface(s)" if made else ""
    kept = f"; state kept in {found.directory}" if keep_state else ""
    click.echo(f'Cluster "{name}" is down: stopped {running} node process(es){removed}{kept}.')


@cluster.command("ls", short_help="List the clusters on this machine.")
def list_clusters() -> None:
    """List the clusters on this machine (the current target of the CLI is marked with *)."""
    current = _current_host()
    rows = []
    for found in SwarmCluster.existing(_clusters_dir()):
        running = sum(node.running() for node in found.nodes)
        rows.append(
            [
                found.name + (" *" if _points_into(found, current) else ""),
                found.state,
                found.network,
                str(len(found.managers)),
                str(len(found.workers)),
                f"{running}/{len(found.nodes)}",
                _addresses(found),
                _age(found.created),
            ]
        )
    output.print_table(["NAME", "STATE", "NETWORK", "MANAGERS", "WORKERS", "RUNNING", "ADDRESSES", "CREATED"], rows)


def _addresses(found: SwarmCluster) -> str:
    if found.subnet:
        return found.subnet
    return f"{found.nodes[0].ip}-{found.nodes[-1].ip}" if found.nodes else "-"


def _age(created: str) -> str:
    try:
        then = datetime.fromisoformat(created)
    except ValueError:
        return ""
    return output.human_duration((datetime.now(UTC) - then).total_seconds()) + " ago"


@cluster.command(short_help="Show the managers' Raft state and the workers' state.")
@name_option
def status(name: str) -> None:
    """Show each manager's Raft state (role, term, commit index, lag behind the leader) and each worker's state."""
    found = _load(name)
    try:
        seen = asyncio.run(found.status())
    except RaftswarmError as exc:
        fail(f"Error: {exc}")
    leader = f"leader {seen.leader.name}" if seen.leader else "no leader"
    click.echo(f'Cluster "{found.name}" ({found.state}, {found.network}): {leader}\n')
    output.print_table(
        ["MANAGER", "ADDRESS", "PID", "RAFT", "TERM", "COMMIT", "APPLIED", "LAG", "ERROR"],
        [
            [
                _self_marked(m.node, seen.leader),
                m.node.addr,
                _pid(m.node),
                m.raft_role or "-",
                _number(m.term),
                _number(m.commit),
                _number(m.applied),
                _number(m.lag),
                m.error,
            ]
            for m in seen.managers
        ],
    )
    if seen.workers:
        click.echo()
        output.print_table(
            ["WORKER", "ADDRESS", "PID", "STATE", "AVAILABILITY", "ERROR"],
            [
                [w.node.name, w.node.addr, _pid(w.node), w.state or "-", w.availability or "-", w.error]
                for w in seen.workers
            ],
        )


def _self_marked(node: ClusterNode, leader: ClusterNode | None) -> str:
    return node.name + (" *" if leader is node else "")


def _pid(node: ClusterNode) -> str:
    return str(node.pid) if node.running() else "-"


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


@cluster.command(short_help="Print exports that point clients at a cluster.")
@name_option
def env(name: str) -> None:
    """Print shell commands that point docker and raftswarm clients at the cluster's first manager."""
    found = _load(name)
    url = shlex.quote(UNIX_SCHEME + str(found.managers[0].socket)) if found.managers else ""
    if not url:
        fail(f"Error: cluster {name!r} has no manager")
    click.echo(f"export DOCKER_HOST={url}")
    click.echo(f"export RAFTSWARM_HOST={url}")
    click.echo("# Run this command to configure your shell:")
    click.echo(f"# eval $(raftswarm cluster env --name {name})")
