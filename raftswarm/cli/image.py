"""`raftswarm image ...`: ls, load, pull, push, tag, rm, inspect -- the node's images, with docker's flags and output.

Names are parsed as docker's client parses them (`objects.reference`, Docker's own grammar: `busybox` is
docker.io/library/busybox:latest), so the node gets the requests docker sends. Progress streams are shown the
way docker shows them when its output is not a terminal: one line per status, no progress bars; an error in
the stream ends the command with its message. The node has no credentials store, so nothing here logs in:
registries are reached without credentials.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import click

from ..api.client import ApiClient, ApiError
from ..objects.reference import InvalidReference, Reference, parse
from . import output
from .connection import api_command, daemon_message, inspect_each, print_json
from .errors import CommandError
from .group import DockerGroup
from .listing import ListFormat, filter_option, format_option, quiet_option
from .options import parse_filters

IMAGE_HEADERS = {
    "ID": "IMAGE ID",
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "Digest": "DIGEST",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Containers": "CONTAINERS",
}
IMAGE_COLUMNS = ["Repository", "Tag", "ID", "CreatedSince", "Size"]
DIGEST_COLUMNS = ["Repository", "Tag", "Digest", "ID", "CreatedSince", "Size"]

NONE = "<none>"
"""docker's placeholder for a missing repository, tag or digest."""

SIZE_PRECISION = 3
"""go-units HumanSizeWithPrecision(size, 3), what `docker images` shows: 1.98MB, 157MB."""

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


@click.group(cls=DockerGroup)
def image() -> None:
    """Manage images."""


def _reference(text: str) -> Reference:
    try:
        return parse(text)
    except InvalidReference as exc:
        raise CommandError(str(exc)) from None


def human_size(size: float) -> str:
    """go-units HumanSizeWithPrecision: decimal units, three significant digits."""
    index = 0
    while size >= 1000 and index < len(_DECIMAL_UNITS) - 1:
        size /= 1000
        index += 1
    return f"{size:.{SIZE_PRECISION}g}{_DECIMAL_UNITS[index]}"


async def show_progress(messages: AsyncIterator[dict[str, Any]], quiet: bool = False) -> None:
    """docker's jsonmessage display for output that is not a terminal: "<id>: <status>" lines and stream text,
    progress bars left out; an error message in the stream fails the command with its text."""
    async for message in messages:
        if message.get("errorDetail") or message.get("error"):
            raise CommandError((message.get("errorDetail") or {}).get("message") or message["error"])
        detail = message.get("progressDetail") or {}
        if quiet or message.get("aux") is not None or detail.get("current") or detail.get("total"):
            continue
        if "stream" in message:
            click.echo(message["stream"], nl=False)
        elif "status" in message:
            click.echo(f"{message['id']}: {message['status']}" if message.get("id") else message["status"])


# -- ls --------------------------------------------------------------------------------------------------------


def image_rows(summary: dict[str, Any], digests: bool) -> list[tuple[str, str, str]]:
    """docker's imageFormatTaggedAndDigest: (repository, tag, digest) rows of one image -- a row per tag (per
    tag and digest with `digests`), then digest-only repositories; a dangling image is one <none> row."""
    tags: dict[str, list[str]] = {}
    repo_digests: dict[str, list[str]] = {}
    for text in summary.get("RepoTags") or []:
        ref = parse(text)
        if ref.tag:
            tags.setdefault(ref.familiar_name, []).append(ref.tag)
    for text in summary.get("RepoDigests") or []:
        ref = parse(text)
        if ref.digest:
            repo_digests.setdefault(ref.familiar_name, []).append(ref.digest)
    if not tags and not repo_digests:
        return [(NONE, NONE, NONE)]
    rows = []
    for repo in sorted(tags):
        # A tagged repository's digests show on its tag rows (with --digests), never as rows of their own.
        repo_digest_list = repo_digests.pop(repo, [])
        shown = repo_digest_list if digests else []
        for tag in sorted(tags[repo]):
            rows.extend([(repo, tag, digest) for digest in shown] or [(repo, tag, NONE)])
    for repo in sorted(repo_digests):
        rows.extend([(repo, NONE, digest) for digest in repo_digests[repo]] if digests else [(repo, NONE, "")])
    return rows


def image_record(summary: dict[str, Any], row: tuple[str, str, str], no_trunc: bool, now: float) -> dict[str, Any]:
    """The fields docker's image formatter offers (`--format`)."""
    created = int(summary.get("Created") or 0)
    image_id = summary["Id"]
    return {
        "ID": image_id if no_trunc else image_id.removeprefix("sha256:")[: output.SHORT_ID_LENGTH],
        "Repository": row[0],
        "Tag": row[1],
        "Digest": row[2],
        "CreatedSince": f"{output.human_duration(now - created)} ago" if created else "N/A",
        "CreatedAt": datetime.fromtimestamp(created, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z"),
        "Size": human_size(summary.get("Size") or 0),
        "Containers": "N/A" if summary.get("Containers", -1) == -1 else str(summary["Containers"]),
    }


@image.command("ls")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all images (default hides intermediate images)")
@click.option("--digests", is_flag=True, help="Show digests")
@filter_option("Filter output based on conditions provided")
@format_option()
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@quiet_option("Only show image IDs")
@click.argument("repository", required=False, metavar="[REPOSITORY[:TAG]]")
@api_command
async def list_images(
    api: ApiClient,
    show_all: bool,
    digests: bool,
    filters: tuple[str, ...],
    format_spec: str | None,
    no_trunc: bool,
    quiet: bool,
    repository: str | None,
) -> None:
    """List images."""
    fmt = ListFormat(format_spec, quiet)
    wanted = parse_filters(filters)
    if repository:
        wanted.setdefault("reference", []).append(repository)
    params = {"filters": json.dumps(wanted)} if wanted else {}
    if show_all:
        params["all"] = "1"
    summaries = await api.request("GET", "/images/json", params=params)
    now = datetime.now(UTC).timestamp()
    records = [
        image_record(summary, row, no_trunc, now)
        for summary in summaries
        for row in image_rows(summary, digests or "{{.Digest}}" in (format_spec or ""))
    ]
    fmt.print(records, IMAGE_HEADERS, DIGEST_COLUMNS if digests else IMAGE_COLUMNS)


# -- transfers -------------------------------------------------------------------------------------------------


@image.command()
@click.option(
    "-i", "--input", "source", type=click.File("rb"), default="-", help="Read from tar archive file, instead of STDIN"
)
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output")
@api_command
async def load(api: ApiClient, source: Any, quiet: bool) -> None:
    """Load an image from a tar archive or STDIN."""
    if source is sys.stdin.buffer and sys.stdin.isatty():
        raise CommandError("requested load from stdin, but stdin is empty")
    params = {"quiet": "1" if quiet else "0"}
    await show_progress(api.json_stream("POST", "/images/load", params, source, {"Content-Type": "application/x-tar"}))


@image.command()
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@click.option("--platform", default="", metavar="string", help="Set platform if server is multi-platform capable")
@click.argument("name", metavar="NAME[:TAG|@DIGEST]")
@api_command
async def pull(api: ApiClient, quiet: bool, platform: str, name: str) -> None:
    """Download an image from a registry."""
    ref = _reference(name)
    if ref.tag == "latest" and ":" not in name.rsplit("/", 1)[-1] and not quiet:
        click.echo("Using default tag: latest")
    params = {"fromImage": ref.name, "tag": ref.digest or ref.tag or "latest"}
    if platform:
        params["platform"] = platform
    await show_progress(api.json_stream("POST", "/images/create", params), quiet)
    click.echo(str(ref))


@image.command()
@click.option("-a", "--all-tags", is_flag=True, help="Push all tags of an image to the repository")
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@click.argument("name", metavar="NAME[:TAG]")
@api_command
async def push(api: ApiClient, all_tags: bool, quiet: bool, name: str) -> None:
    """Upload an image to a registry."""
    ref = _reference(name)
    if ref.digest:
        raise CommandError("cannot push a digest reference")
    has_tag = ":" in name.rsplit("/", 1)[-1]
    if all_tags and has_tag:
        raise CommandError("tag can't be used with --all-tags/-a")
    params = {}
    if not all_tags:
        params["tag"] = ref.tag or "latest"
        if not has_tag and not quiet:
            click.echo(f"Using default tag: {params['tag']}")
    await show_progress(api.json_stream("POST", f"/images/{ref.name}/push", params), quiet)
    if quiet:
        click.echo(str(ref))


# -- local changes ---------------------------------------------------------------------------------------------


@image.command()
@click.argument("source", metavar="SOURCE_IMAGE[:TAG]")
@click.argument("target", metavar="TARGET_IMAGE[:TAG]")
@api_command
async def tag(api: ApiClient, source: str, target: str) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    ref = _reference(target)
    if ref.digest:
        raise CommandError("refusing to create a tag with a digest reference")
    await api.request("POST", f"/images/{source}/tag", params={"repo": ref.familiar_name, "tag": ref.tag or "latest"})


@image.command("rm")
@click.option("-f", "--force", is_flag=True, help="Force removal of the image")
@click.option("--no-prune", is_flag=True, help="Do not delete untagged parents")
@click.argument("names", nargs=-1, required=True, metavar="IMAGE [IMAGE...]")
@api_command
async def remove(api: ApiClient, force: bool, no_prune: bool, names: tuple[str, ...]) -> None:
    """Remove one or more images."""
    params = {"force": "1" if force else "0", "noprune": "1" if no_prune else "0"}
    errors = []
    for name in names:
        try:
            records = await api.request("DELETE", f"/images/{name}", params=params)
        except ApiError as exc:
            errors.append(daemon_message(exc))
            continue
        for record in records:
            for key in ("Untagged", "Deleted"):
                if key in record:
                    click.echo(f"{key}: {record[key]}")
    if errors:
        raise CommandError("\n".join(errors))


@image.command()
@click.option("-f", "--format", "format_spec", help="Format output using a {{.Field}} template, or json")
@click.argument("names", nargs=-1, required=True, metavar="IMAGE [IMAGE...]")
@api_command
async def inspect(api: ApiClient, format_spec: str | None, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more images."""

    async def inspect_image(name: str) -> dict[str, Any]:
        return await api.request("GET", f"/images/{name}/json")

    def show(found: list[Any]) -> None:
        ListFormat(format_spec).print_formatted(found, {})

    await inspect_each(names, inspect_image, show if format_spec else print_json)
