"""A service's `volumes:` and `tmpfs:` and the top-level `volumes:` -> the Mounts of its ContainerSpec, as
docker/cli converts them (cli/compose/convert/volume.go, internal/volumespec): named volumes scoped under the
stack namespace and carrying the volume's labels and driver options, binds resolved against the compose file's
directory, tmpfs mounts with their size and mode."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from raftswarm.stack import ComposeError, StackSpecs, load_stack, stack_specs

NS = "com.docker.stack.namespace"


def convert(directory: Path, service: str, volumes: str = "", environment: dict[str, str] | None = None) -> StackSpecs:
    path = directory / "stack" / "docker-compose.yml"
    path.parent.mkdir(exist_ok=True)
    body = textwrap.indent(textwrap.dedent(service).strip(), "    ")
    path.write_text(f"services:\n  web:\n    image: busybox\n{body}\n" + (f"volumes:\n{volumes}" if volumes else ""))
    return stack_specs(load_stack(path, environment or {}), "app")


def mounts_of(specs: StackSpecs) -> list[dict[str, Any]]:
    return specs.services["web"]["TaskTemplate"]["ContainerSpec"]["Mounts"]


def error_of(directory: Path, service: str, volumes: str = "") -> str:
    with pytest.raises(ComposeError) as caught:
        convert(directory, service, volumes)
    return str(caught.value)


@pytest.mark.parametrize(
    ("entry", "mount"),
    [
        # a named volume: the stack's, scoped, with its labels
        ("data:/var/lib/data", {"Type": "volume", "Source": "app_data", "Target": "/var/lib/data", "VolumeOptions": {"Labels": {NS: "app"}}}),
        (
            "data:/var/lib/data:ro,nocopy",
            {
                "Type": "volume",
                "Source": "app_data",
                "Target": "/var/lib/data",
                "ReadOnly": True,
                "VolumeOptions": {"NoCopy": True, "Labels": {NS: "app"}},
            },
        ),
        # an anonymous volume: no source, no options (docker/cli returns before adding them)
        ("/cache", {"Type": "volume", "Target": "/cache"}),
        # binds: relative to the compose file's directory, "~" from HOME, absolute as they are
        ("./conf:/etc/app:ro", {"Type": "bind", "Source": "{dir}/conf", "Target": "/etc/app", "ReadOnly": True}),
        ("../shared:/shared", {"Type": "bind", "Source": "{parent}/shared", "Target": "/shared"}),
        ("~/cache:/cache", {"Type": "bind", "Source": "/home/deployer/cache", "Target": "/cache"}),
        ("/srv/logs:/logs:rw,rshared", {"Type": "bind", "Source": "/srv/logs", "Target": "/logs", "BindOptions": {"Propagation": "rshared"}}),
        (
            {"type": "volume", "source": "data", "target": "/d", "read_only": True, "volume": {"nocopy": True}},
            {"Type": "volume", "Source": "app_data", "Target": "/d", "ReadOnly": True, "VolumeOptions": {"NoCopy": True, "Labels": {NS: "app"}}},
        ),
        ({"type": "volume", "target": "/anon"}, {"Type": "volume", "Target": "/anon"}),
        (
            {"type": "bind", "source": "./www", "target": "/www", "bind": {"propagation": "rslave", "create_host_path": True}},
            {"Type": "bind", "Source": "{dir}/www", "Target": "/www", "BindOptions": {"Propagation": "rslave", "CreateMountpoint": True}},
        ),
        (
            {"type": "tmpfs", "target": "/scratch", "tmpfs": {"size": 10485760, "mode": 0o1777}},
            {"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 10485760, "Mode": 0o1777}},
        ),
        ({"type": "tmpfs", "target": "/t", "tmpfs": {"size": "64m"}}, {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 64 << 20}}),
    ],
)
def test_service_volumes_become_mounts(tmp_path: Path, entry: str | dict[str, Any], mount: dict[str, Any]) -> None:
    directory = tmp_path / "stack"
    specs = convert(tmp_path, f"volumes: [{entry!r}]" if isinstance(entry, str) else f"volumes: [{entry}]", "  data: {}\n", {"HOME": "/home/deployer"})
    expected = {key: value.format(dir=directory, parent=tmp_path) if isinstance(value, str) else value for key, value in mount.items()}
    assert mounts_of(specs) == [expected]


def test_a_top_level_volumes_labels_and_driver_options_go_with_its_mounts(tmp_path: Path) -> None:
    specs = convert(
        tmp_path,
        "volumes: [data:/data]",
        "  data:\n    driver: local\n    driver_opts: {type: tmpfs, device: tmpfs, o: size=100m}\n    labels: [backup=daily]\n",
    )
    assert mounts_of(specs) == [
        {
            "Type": "volume",
            "Source": "app_data",
            "Target": "/data",
            "VolumeOptions": {
                "Labels": {"backup": "daily", NS: "app"},
                "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs", "device": "tmpfs", "o": "size=100m"}},
            },
        }
    ]


@pytest.mark.parametrize(
    ("definition", "source", "options"),
    [
        ("{name: shared-data}", "shared-data", {"Labels": {NS: "app"}}),  # named, not scoped, still the stack's
        ("{external: true}", "data", {}),  # existing: mounted by its name, with no options
        ("{external: true, name: legacy}", "legacy", {}),
        ("{external: {name: legacy}}", "legacy", {}),  # the deprecated form
    ],
)
def test_named_and_external_volumes_keep_their_names(tmp_path: Path, definition: str, source: str, options: dict) -> None:
    specs = convert(tmp_path, "volumes: [data:/data]", f"  data: {definition}\n")
    assert mounts_of(specs) == [{"Type": "volume", "Source": source, "Target": "/data", "VolumeOptions": options}]


def test_tmpfs_paths_become_tmpfs_mounts_after_the_volumes(tmp_path: Path) -> None:
    specs = convert(tmp_path, 'volumes: [/anon]\ntmpfs: [/run, "/cache:size=64m,mode=1777,noexec,nosuid", "/ro:ro"]')
    assert mounts_of(specs) == [
        {"Type": "volume", "Target": "/anon"},
        {"Type": "tmpfs", "Target": "/run"},
        {"Type": "tmpfs", "Target": "/cache", "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1777, "Options": [["noexec"]]}},
        {"Type": "tmpfs", "Target": "/ro", "ReadOnly": True},
    ]
    assert mounts_of(convert(tmp_path, "tmpfs: /run")) == [{"Type": "tmpfs", "Target": "/run"}]


def test_mount_consistency_is_passed_on_with_a_warning(tmp_path: Path) -> None:
    specs = convert(tmp_path, "volumes: [{type: bind, source: /srv, target: /srv, consistency: cached}]")
    assert mounts_of(specs) == [{"Type": "bind", "Source": "/srv", "Target": "/srv", "Consistency": "cached"}]
    assert specs.warnings == [
        (
            "services.web.volumes[0].consistency: ignored, as dockerd on Linux ignores it: mount consistency is a"
            " Docker Desktop setting"
        )
    ]


@pytest.mark.parametrize(
    ("service", "volumes", "words"),
    [
        ("volumes: [nope:/data]", "", "services.web.volumes[0]: undefined volume 'nope'; define it under the top-level volumes:"),
        ("volumes: ['data:relative']", "  data: {}\n", "volumes[0]: invalid mount target, must be an absolute path: relative"),
        ("volumes: ['data:/d:z']", "  data: {}\n", "volumes[0]: unknown volume option 'z' in 'data:/d:z'"),
        ("volumes: ['./x:/x:nocopy']", "", "volumes[0]: volume options are incompatible with type bind"),
        ("volumes: ['data:/d:rshared']", "  data: {}\n", "volumes[0]: bind options are incompatible with type volume"),
        ("volumes: ['a:b:c:d']", "", "volumes[0]: invalid spec: a:b:c:d: too many colons"),
        ("volumes: ['a::/d']", "", "volumes[0]: invalid spec: a::/d: empty section between colons"),
        ("volumes: ['data:/']", "  data: {}\n", "volumes[0]: invalid specification: destination can't be '/'"),
        ("volumes: [{source: data, target: /d}]", "  data: {}\n", "volumes[0].type: is required"),
        ("volumes: [{type: npipe, source: x, target: /d}]", "", "volumes[0].type: named pipes are mounts of Windows"),
        ("volumes: [{type: cluster, source: x, target: /d}]", "", "volumes[0].type: cluster (CSI) volumes are not"),
        ("volumes: [{type: image, source: x, target: /d}]", "", "volumes[0].type: a swarm service cannot mount an image"),
        ("volumes: [{type: bind, target: /d}]", "", 'volumes[0].source: invalid mount config for type "bind": field Source'),
        ("volumes: [{type: tmpfs, source: x, target: /d}]", "", "volumes[0].source: invalid tmpfs source, source must be empty"),
        ("volumes: [{type: tmpfs, target: /d, bind: {propagation: shared}}]", "", "volumes[0].bind: bind options are incompatible with type tmpfs"),
        ("volumes: [{type: volume, source: data, target: /d, volume: {subpath: a}}]", "  data: {}\n", "volume.subpath: volume subpaths are not supported"),
        ("volumes: [{type: bind, source: /s, target: /d, bind: {selinux: z}}]", "", "volumes[0].bind.selinux: unknown option"),
        ("volumes: [data:/d, /d]", "  data: {}\n", "services.web.volumes: duplicate mount point: /d"),
        ("volumes: [/d]\ntmpfs: [/d]", "", "services.web.tmpfs: duplicate mount point: /d"),
        ("tmpfs: ['/t:uid=1000']", "", "tmpfs[0]: unsupported tmpfs option 'uid=1000'"),
        ("tmpfs: ['/t:mode=rwx']", "", "tmpfs[0]: invalid tmpfs mode 'rwx': give it in octal"),
        ("volumes: [data:/d]", "  data: {driver: rexray}\n", 'volumes.data.driver: volume driver "rexray" is not available'),
        ("volumes: [data:/d]", "  data: {driver_opts: {type: nfs, o: addr=1.2.3.4, device: ':/x'}}\n", 'volumes.data.driver_opts: invalid option: type "nfs"'),
        ("volumes: [data:/d]", "  data: {external: true, labels: {a: b}}\n", 'volumes.data.labels: conflicting parameters "external" and "labels"'),
        ("volumes: [data:/d]", "  data: {name: ../etc}\n", "volumes.data.name: \"../etc\" includes invalid characters"),
        ("volumes: [data:/d]", "  data: {x-cluster-spec: {group: g}}\n", "volumes.data.x-cluster-spec: cluster (CSI) volumes"),
    ],
)
def test_bad_volumes_name_the_key_and_say_why(tmp_path: Path, service: str, volumes: str, words: str) -> None:
    message = error_of(tmp_path, service, volumes)
    assert message.startswith(str(tmp_path / "stack" / "docker-compose.yml") + ": ")
    assert words in message
