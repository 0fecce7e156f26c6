"""Sample images built from Debian packages, since Docker Hub is out of reach here: `busybox` (from
busybox-static, about 2 MB, a second to build) for tests and examples, and `python` (python3 from the Debian
archive through mmdebstrap) for the README's demo stack.

Each is written as a docker-archive tarball (what `docker save` writes and `docker load` reads) into a cache
directory, keyed by what it was built from (the busybox binary's digest; the Debian suite and packages), so a
second build is a file lookup. Layers are written deterministically (sorted members, fixed owner and times),
so the same inputs give the same image ID on every machine.

    python3 -m raftswarm.images.samples busybox [--push localhost:5000/library/busybox:latest]

`push` copies a tarball into a registry with skopeo, the same tool the node image store uses.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import RaftswarmError

BUSYBOX = Path("/bin/busybox")
"""The busybox-static package's binary (statically linked: the image needs no libc)."""

PYTHON_SUITE = "bookworm"
PYTHON_PACKAGES = ("python3-minimal", "libpython3.11-stdlib", "ca-certificates")
"""python3 with its standard library (http.server, json, ...), the interpreter's whole runtime; no pip."""

EPOCH = 1_700_000_000
"""The mtime and `created` of every sample image: fixed, so builds are reproducible."""

_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


class SampleError(RaftswarmError):
    """A sample image cannot be built or pushed; the message names what is missing."""


@dataclass(frozen=True)
class Sample:
    """A built sample: its docker-archive tarball and the reference it is tagged with inside."""

    name: str
    tarball: Path
    reference: str


def cache_dir() -> Path:
    """Where built samples are kept: $XDG_CACHE_HOME/raftswarm/images (~/.cache/raftswarm/images)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "raftswarm" / "images"


def busybox(cache: Path | None = None) -> Sample:
    """`busybox:latest` from the busybox-static package: the binary, a link per applet, /etc/passwd and group."""
    if not BUSYBOX.is_file():
        raise SampleError(f"{BUSYBOX} is missing: install the Debian package busybox-static (./setup does)")
    binary = BUSYBOX.read_bytes()
    key = hashlib.sha256(binary).hexdigest()[:16]
    tarball = (cache or cache_dir()) / f"busybox-{key}.tar"
    if not tarball.exists():
        applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True).stdout.split()
        layer = _layer(_busybox_members(binary, applets))
        _write_archive(tarball, [layer], {"Cmd": ["sh"], "Env": [_PATH]}, "busybox:latest")
    return Sample("busybox", tarball, "busybox:latest")


def python(cache: Path | None = None) -> Sample:
    """`python:3-slim` from Debian's python3 (mmdebstrap's extract variant: the packages and their
    dependencies unpacked, no package manager). Needs the Debian archive, as `apt-get` does; a minute."""
    if shutil.which("mmdebstrap") is None:
        raise SampleError("mmdebstrap is missing: install the Debian package mmdebstrap (./setup does)")
    key = hashlib.sha256(json.dumps([PYTHON_SUITE, PYTHON_PACKAGES]).encode()).hexdigest()[:16]
    tarball = (cache or cache_dir()) / f"python-{key}.tar"
    if not tarball.exists():
        with tempfile.TemporaryDirectory(prefix="raftswarm-sample-") as work:
            rootfs = Path(work) / "rootfs.tar"
            command = [
                "mmdebstrap", "--quiet", "--variant=extract", f"--include={','.join(PYTHON_PACKAGES)}",
                PYTHON_SUITE, str(rootfs),
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SampleError(f"mmdebstrap could not build the python image: {done.stderr.strip()[-2000:]}")
            layer = _layer(_rootfs_members(rootfs, extra={"etc/passwd": _PASSWD, "etc/group": _GROUP}))
        _write_archive(tarball, [layer], {"Cmd": ["python3"], "Env": [_PATH, "LANG=C.UTF-8"]}, "python:3-slim")
    return Sample("python", tarball, "python:3-slim")


SAMPLES = {"busybox": busybox, "python": python}


def push(sample: Sample, destination: str, *, tls_verify: bool = False) -> None:
    """Copy a sample's tarball to `destination` (e.g. localhost:5000/library/busybox:latest) with skopeo."""
    if shutil.which("skopeo") is None:
        raise SampleError("skopeo is missing: install the Debian package skopeo (./setup does)")
    command = [
        "skopeo", "copy", "--quiet", f"--dest-tls-verify={'true' if tls_verify else 'false'}",
        f"docker-archive:{sample.tarball}:{sample.reference}", f"docker://{destination}",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SampleError(f"could not push {sample.name} to {destination}: {done.stderr.strip()[-2000:]}")


# -- layers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    path: str
    kind: str  # "dir", "file", "symlink"
    mode: int
    data: bytes = b""
    target: str = ""


def _busybox_members(binary: bytes, applets: Iterable[str]) -> list[_Member]:
    members = [_Member(d, "dir", 0o755) for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "var", "dev", "proc", "sys", "run")]
    members += [_Member("tmp", "dir", 0o1777), _Member("bin/busybox", "file", 0o755, binary)]
    members += [_Member("etc/passwd", "file", 0o644, _PASSWD.encode()), _Member("etc/group", "file", 0o644, _GROUP.encode())]
    for applet in sorted(set(applets)):
        if applet != "bin/busybox":
            members.append(_Member(applet, "symlink", 0o777, target="/bin/busybox"))
    return members


def _rootfs_members(rootfs: Path, extra: dict[str, str]) -> Iterable[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]:
    """The members of mmdebstrap's tarball, as they are, with `extra` files replacing or adding to them."""
    with tarfile.open(rootfs) as source:
        for info in source:
            name = info.name.removeprefix("./").rstrip("/")
            if not name or name in extra:
                continue
            info.name = name
            if info.islnk():
                info.linkname = info.linkname.removeprefix("./")
            data = source.extractfile(info).read() if info.isreg() else None
            yield (info, data) if data is not None else info
    for name, text in extra.items():
        yield _tarinfo(_Member(name, "file", 0o644, text.encode())), text.encode()


def _tarinfo(member: _Member) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.path)
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = member.mode, EPOCH, 0, 0, "root", "root"
    if member.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif member.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, member.target
    else:
        info.size = len(member.data)
    return info


def _layer(members: Iterable[_Member | tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """An uncompressed layer tar, members sorted by path so the bytes depend only on the contents."""
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for member in members:
        if isinstance(member, _Member):
            entries.append((_tarinfo(member), member.data if member.kind == "file" else None))
        elif isinstance(member, tuple):
            entries.append(member)
        else:
            entries.append((member, None))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for info, data in sorted(entries, key=lambda entry: entry[0].name):
            layer.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _write_archive(tarball: Path, layers: list[bytes], config: dict, reference: str) -> None:
    """A docker-archive (`docker save`'s format): manifest.json, the image config and gzip'd layers, all
    named by digest; written to a temporary name and renamed, so the cache never holds half a tarball."""
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    blobs = [gzip.compress(layer, mtime=EPOCH) for layer in layers]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "raftswarm.images.samples"} for _ in layers],
    }
    config_bytes = json.dumps(image_config, sort_keys=True, separators=(",", ":")).encode()
    config_name = f"blobs/sha256/{hashlib.sha256(config_bytes).hexdigest()}"
    layer_names = [f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}" for blob in blobs]
    manifest = [{"Config": config_name, "RepoTags": [reference], "Layers": layer_names}]
    files = {"manifest.json": json.dumps(manifest).encode(), config_name: config_bytes, **dict(zip(layer_names, blobs, strict=True))}
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.name + ".partial")
    with tarfile.open(partial, "w") as archive:
        for name in ("blobs", "blobs/sha256"):
            archive.addfile(_tarinfo(_Member(name, "dir", 0o755)))
        for name, data in sorted(files.items()):
            archive.addfile(_tarinfo(_Member(name, "file", 0o644, data)), io.BytesIO(data))
    partial.rename(tarball)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m raftswarm.images.samples", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(SAMPLES))
    parser.add_argument("--push", metavar="REFERENCE", help="also copy it to a registry, e.g. localhost:5000/library/busybox:latest")
    args = parser.parse_args(argv)
    try:
        sample = SAMPLES[args.name]()
        if args.push:
            push(sample, args.push)
    except SampleError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(sample.tarball)


if __name__ == "__main__":
    main()
