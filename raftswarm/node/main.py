"""Entry point of the `raftswarm-node` daemon."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from .. import __version__, eventloop
from ..addresses import InvalidAddress, parse_host_port
from ..errors import RaftswarmError
from ..raft.driver import DriverConfig
from .daemon import NodeConfig, NodeDaemon


def _default_state_dir() -> str:
    return "/var/lib/raftswarm" if os.geteuid() == 0 else str(Path.home() / ".local/share/raftswarm")


def _default_socket() -> str:
    return "/run/raftswarm/raftswarm.sock" if os.geteuid() == 0 else str(Path.home() / ".local/run/raftswarm.sock")


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    try:
        return parse_host_port(value, default_port)
    except InvalidAddress as exc:
        raise click.BadParameter(str(exc)) from None


def _tls_files(api_tcp: str | None, *files: str | None) -> tuple[Path, Path, Path]:
    if not api_tcp:
        return (Path(), Path(), Path())
    if not all(files):
        raise click.UsageError("--api-tcp needs --tlscacert, --tlscert and --tlskey: the API is never served on TCP without mutual TLS")
    ca, cert, key = (Path(f) for f in files if f)
    return ca, cert, key


def _dns_upstreams(values: tuple[str, ...]) -> list[tuple[str, int]] | None:
    if not values:
        return None
    if values == ("none",):
        return []
    return [_host_port(value, 53) for value in values]


_RESERVED_LABEL_NAMESPACES = ("com.docker.", "io.docker.", "org.dockerproject.")


def _engine_labels(values: tuple[str, ...]) -> dict[str, str]:
    """dockerd's --label values, checked as dockerd checks them: KEY=VALUE, not in Docker's reserved
    namespaces, and one value per key (repeating the same KEY=VALUE is fine)."""
    labels: dict[str, str] = {}
    for value in values:
        key, sep, label = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"bad attribute format: {value!r}; expected KEY=VALUE, e.g. disk=ssd", param_hint="--label"
            )
        if value.lower().startswith(_RESERVED_LABEL_NAMESPACES):
            raise click.BadParameter(
                f"label {value} is not allowed: the namespaces com.docker.*, io.docker.*, and org.dockerproject.*"
                " are reserved for internal use",
                param_hint="--label",
            )
        if labels.get(key, label) != label:
            raise click.BadParameter(f"conflict labels for {key}={label} and {key}={labels[key]}", param_hint="--label")
        labels[key] = label
    return labels


def _aliases(values: tuple[str, ...]) -> dict[str, str]:
    aliases = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise click.BadParameter(f"{value!r}: expected NAME=HOST:PORT, e.g. localhost:5000=10.211.0.1:5000")
        _host_port(target, 443)
        aliases[name] = target
    return aliases


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="raftswarm-node")
@click.option("--state-dir", default=_default_state_dir, show_default="/var/lib/raftswarm as root", help="Where the node keeps certificates and the Raft log.")
@click.option("--listen-addr", default="0.0.0.0:2377", show_default=True, help="Address for cluster management (Raft, CA, dispatcher).")
@click.option("--advertise-addr", default=None, help="Address other nodes reach this one at (HOST[:PORT]); default: the listen address.")
@click.option("--heartbeat-period", default=5.0, show_default=True, help="Seconds between a node's heartbeats to the dispatcher.")
@click.option("--exec-root", type=click.Path(file_okay=False), default=None, help="Where the node keeps its containers' execution state (bundles, crun's state), as dockerd's --exec-root; best on a tmpfs. [default: in the state directory]")
@click.option("--socket", "socket_path", default=_default_socket, show_default="/run/raftswarm/raftswarm.sock as root", help="Unix socket of the client API.")
@click.option("--force-new-cluster", is_flag=True, help="On a manager that lost quorum: become a one-manager cluster, keeping all committed state.")
@click.option("--tick-ms", default=100, show_default=True, help="Raft tick period.")
@click.option("--election-ticks", default=10, show_default=True, help="Ticks without a leader before an election.")
@click.option("--heartbeat-ticks", default=1, show_default=True, help="Ticks between leader heartbeats.")
@click.option("--snapshot-interval", default=10_000, show_default=True, help="Applied entries between Raft snapshots.")
@click.option("--api-tcp", default=None, metavar="HOST:PORT", help="Also serve the API on TCP, over TLS with client certificates (needs the three --tls* files).")
@click.option("--tlscacert", type=click.Path(exists=True, dir_okay=False), help="CA certificate API clients must present a certificate from (with --api-tcp).")
@click.option("--tlscert", type=click.Path(exists=True, dir_okay=False), help="The API's TLS certificate (with --api-tcp).")
@click.option("--tlskey", type=click.Path(exists=True, dir_okay=False), help="The API's TLS key (with --api-tcp).")
@click.option(
    "--dns-upstream",
    "dns_upstreams",
    multiple=True,
    metavar="ADDR[:PORT]",
    help="Where tasks' resolvers forward names they do not know (repeatable; `none`: nowhere). Default: the host's /etc/resolv.conf.",
)
@click.option("--registry-mirror", "registry_mirrors", multiple=True, metavar="URL", help="Preferred Docker Hub mirror (repeatable), as dockerd's.")
@click.option("--insecure-registry", "insecure_registries", multiple=True, metavar="HOST[:PORT]|CIDR", help="Registry reached over plain HTTP or without TLS verification (repeatable), as dockerd's.")
@click.option(
    "--registry-alias",
    "registry_aliases",
    multiple=True,
    metavar="NAME=HOST:PORT",
    help="Reach the registry users call NAME at HOST:PORT (repeatable): the local cluster's localhost:5000 from inside a node's namespace.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a label on this node's engine (repeatable), as dockerd's: `docker node inspect` shows it in"
    " Description.Engine.Labels and placement constraints match it as engine.labels.KEY.",
)
@click.option("--init", "init", is_flag=True, help="Run an init (tini) inside each task's container to forward signals and reap processes, unless its ContainerSpec.Init says otherwise; as dockerd's --init.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True)
def main(
    state_dir: str,
    listen_addr: str,
    advertise_addr: str | None,
    heartbeat_period: float,
    exec_root: str | None,
    socket_path: str,
    force_new_cluster: bool,
    tick_ms: int,
    election_ticks: int,
    heartbeat_ticks: int,
    snapshot_interval: int,
    api_tcp: str | None,
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
    dns_upstreams: tuple[str, ...],
    registry_mirrors: tuple[str, ...],
    insecure_registries: tuple[str, ...],
    registry_aliases: tuple[str, ...],
    labels: tuple[str, ...],
    init: bool,
    log_level: str,
) -> None:
    """Run a raftswarm node: a manager or worker of a swarm, or a standalone node awaiting `swarm init`."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = _host_port(listen_addr, 2377)
    config = NodeConfig(
        state_dir=Path(state_dir),
        socket=Path(socket_path),
        exec_root=Path(exec_root).absolute() if exec_root else None,
        listen_host=host,
        listen_port=port,
        advertise_addr=advertise_addr,
        heartbeat_period=heartbeat_period,
        force_new_cluster=force_new_cluster,
        raft={"election_ticks": election_ticks, "heartbeat_ticks": heartbeat_ticks},
        driver=DriverConfig(tick_interval=tick_ms / 1000, snapshot_interval=snapshot_interval),
        dns_upstreams=_dns_upstreams(dns_upstreams),
        api_tcp=_host_port(api_tcp, 2376) if api_tcp else None,
        api_tls=_tls_files(api_tcp, tlscacert, tlscert, tlskey),
        registry_mirrors=list(registry_mirrors),
        insecure_registries=list(insecure_registries),
        registry_aliases=_aliases(registry_aliases),
        init=init,
        labels=_engine_labels(labels),
    )
    try:
        eventloop.tune_collector()
        eventloop.run(lambda: NodeDaemon(config).run())
    except RaftswarmError as exc:
        raise click.ClickException(str(exc)) from None
