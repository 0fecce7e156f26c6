"""`python -m bench images`: the node image store and the cluster's registry, through the nodes' Docker API.

On a local cluster of 1 manager + 3 workers with its registry (`cluster up`'s: localhost:5000 on every node;
network namespaces as root, loopback addresses otherwise), using the sample `python` image (python3 from
Debian, about 24 MB compressed, 60 MB unpacked; `images.samples`):

- load_push: `docker load` of the image's tarball on one node, then `docker tag` + `docker push
  localhost:5000/bench/python:<n>` to the cluster registry: seconds for each, `--repeat` times (the first
  push sends the layer; later ones find it there, as a redeploy would).
- pull4: the 4 nodes pull one pushed tag at once (none has it): seconds until all 4 have it (p50 and max over
  `--repeat` fresh tags; each round first removes the image from every node so it is really pulled).
- shared_layers: 10 images sharing their base layer (the python layer plus a small layer of their own),
  loaded into one node image store: bytes of unpacked layers and blobs on disk, against 10 times one image's.

No peer runs beside it: the issue names none, and Docker needs Docker Hub for its images. Prints one JSON line
per scenario. Clusters are made in a temporary directory and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from raftswarm.api.client import ApiClient
from raftswarm.images import archive, samples
from raftswarm.images.store import ImageStore
from raftswarm.localcluster.swarm import SwarmCluster

SCENARIOS = ("load_push", "pull4", "shared_layers")
SHARED_IMAGES = 10


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    print("building the sample python image (cached after the first run)...", file=sys.stderr, flush=True)
    sample = samples.python()
    with tempfile.TemporaryDirectory(prefix="rsw-bench-images-") as workdir:
        records = asyncio.run(_run(chosen, args.repeat, sample, Path(workdir)))
    for record in records:
        print(json.dumps(record), flush=True)
    return 0


async def _run(chosen: tuple[str, ...], repeat: int, sample: samples.Sample, workdir: Path) -> list[dict[str, Any]]:
    records = []
    if "shared_layers" in chosen:
        records.append(await asyncio.to_thread(_shared_layers, sample, workdir))
    if not {"load_push", "pull4"} & set(chosen):
        return records
    cluster = await SwarmCluster.up("bimg", managers=1, workers=3, base_dir=workdir, registry=True)
    nodes = [cluster.client(node, timeout=600) for node in cluster.nodes]
    try:
        if "load_push" in chosen:
            records.append(await _load_push(nodes[0], sample, repeat))
        if "pull4" in chosen:
            records.append(await _pull4(nodes, sample, repeat))
    finally:
        for client in nodes:
            await client.close()
        cluster.down()
    for record in records:
        record["network"] = cluster.network
    return records


async def _stream(client: ApiClient, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
    messages = [message async for message in client.json_stream(method, path, **kwargs)]
    errors = [m["errorDetail"]["message"] for m in messages if "errorDetail" in m]
    if errors:
        raise SystemExit(f"{method} {path} failed: {errors[0]}")
    return messages


async def _load(client: ApiClient, tarball: Path) -> None:
    with open(tarball, "rb") as body:
        await _stream(client, "POST", "/images/load", params={"quiet": "1"}, body=body)


async def _load_push(client: ApiClient, sample: samples.Sample, repeat: int) -> dict[str, Any]:
    loads, pushes = [], []
    for round_number in range(repeat):
        started = time.monotonic()
        await _load(client, sample.tarball)
        loads.append(time.monotonic() - started)
        target = f"localhost:5000/bench/python:{round_number}"
        repo, tag = target.rsplit(":", 1)
        started = time.monotonic()
        await client.request("POST", f"/images/{sample.reference}/tag", params={"repo": repo, "tag": tag})
        await _stream(client, "POST", f"/images/{repo}/push", params={"tag": tag}, headers={"X-Registry-Auth": "e30="})
        pushes.append(time.monotonic() - started)
    return {
        "scenario": "load_push",
        "image_bytes": sample.tarball.stat().st_size,
        "load_s": [round(x, 3) for x in loads],
        "push_s": [round(x, 3) for x in pushes],
        "note": "the first push sends the layers; later pushes find them in the registry",
    }


async def _pull4(nodes: list[ApiClient], sample: samples.Sample, repeat: int) -> dict[str, Any]:
    seconds = []
    for round_number in range(repeat):
        target = f"localhost:5000/bench/pull:{round_number}"
        repo, tag = target.rsplit(":", 1)
        await _load(nodes[0], sample.tarball)
        await nodes[0].request("POST", f"/images/{sample.reference}/tag", params={"repo": repo, "tag": tag})
        await _stream(nodes[0], "POST", f"/images/{repo}/push", params={"tag": tag}, headers={"X-Registry-Auth": "e30="})
        for client in nodes:  # nobody has any image: every node pulls every layer
            for image in await client.request("GET", "/images/json"):
                await client.request("DELETE", f"/images/{image['Id']}", params={"force": "1"})
            assert await client.request("GET", "/images/json") == []
        started = time.monotonic()
        await asyncio.gather(*(_stream(c, "POST", "/images/create", params={"fromImage": repo, "tag": tag}) for c in nodes))
        seconds.append(time.monotonic() - started)
    return {
        "scenario": "pull4",
        "nodes": len(nodes),
        "image_bytes": sample.tarball.stat().st_size,
        "all_pulled_s": [round(x, 3) for x in seconds],
        "p50_s": round(statistics.median(seconds), 3),
        "max_s": round(max(seconds), 3),
    }


def _shared_layers(sample: samples.Sample, workdir: Path) -> dict[str, Any]:
    """In a store of its own (what a node's `docker load` runs), so nothing else shares its layers."""
    store = ImageStore(workdir / "shared-store")
    before = _disk_bytes(store.root)
    with open(sample.tarball, "rb") as tar:
        archive.load(store, tar)
    one_image = _disk_bytes(store.root) - before
    for number in range(SHARED_IMAGES - 1):
        tarball = _with_extra_layer(sample.tarball, workdir / f"shared-{number}.tar", number)
        with open(tarball, "rb") as tar:
            archive.load(store, tar)
    used = _disk_bytes(store.root) - before
    return {
        "scenario": "shared_layers",
        "images": SHARED_IMAGES,
        "one_image_bytes": one_image,
        "all_images_bytes": used,
        "unshared_bytes": one_image * SHARED_IMAGES,
        "ratio_to_unshared": round(used / (one_image * SHARED_IMAGES), 3),
    }


def _with_extra_layer(source: Path, out: Path, number: int) -> Path:
    """The sample's docker-archive with one more small layer (a file of its own) and its own tag."""
    with tarfile.open(source) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        files = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}
    config = json.loads(files[manifest["Config"]])
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as layer:
        data = f"image {number}\n".encode()
        info = tarfile.TarInfo(f"etc/bench-{number}")
        info.size = len(data)
        layer.addfile(info, io.BytesIO(data))
    raw = layer_tar.getvalue()
    blob = gzip.compress(raw, mtime=0)
    config["rootfs"]["diff_ids"].append(f"sha256:{hashlib.sha256(raw).hexdigest()}")
    config["history"].append({"created_by": "bench images"})
    config_bytes = json.dumps(config).encode()
    config_name = f"blobs/sha256/{hashlib.sha256(config_bytes).hexdigest()}"
    blob_name = f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}"
    files.update({config_name: config_bytes, blob_name: blob})
    new_manifest = [{"Config": config_name, "RepoTags": [f"bench/shared:{number}"], "Layers": [*manifest["Layers"], blob_name]}]
    files["manifest.json"] = json.dumps(new_manifest).encode()
    with tarfile.open(out, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out


def _disk_bytes(root: Path) -> int:
    """Bytes of the files under `root`, each inode once (hard links are not counted twice)."""
    seen, total = set(), 0
    for directory, _, names in os.walk(root):
        for name in names:
            stat = os.lstat(os.path.join(directory, name))
            if stat.st_ino not in seen:
                seen.add(stat.st_ino)
                total += stat.st_blocks * 512
    return total
