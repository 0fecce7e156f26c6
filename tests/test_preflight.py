"""What a node says at start and in `docker info` about what it cannot do: each missing piece named with the
Debian package that brings it, nothing when everything is there."""

from __future__ import annotations

import shutil

from raftswarm.node import preflight
from raftswarm.runtime import containers


def test_a_node_with_everything_has_no_warnings_on_a_routable_address(monkeypatch):
    monkeypatch.setattr(preflight, "containers_unavailable", lambda: None)
    monkeypatch.setattr(preflight, "data_plane_unavailable", lambda ip: None)
    monkeypatch.setattr(preflight, "_exists", lambda path: True)
    monkeypatch.setattr(preflight.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert preflight.warnings("10.0.0.5") == []


def test_each_missing_program_is_named_with_its_debian_package(monkeypatch):
    real_which = shutil.which
    missing = {"crun", "skopeo", "nft"}
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name in missing else real_which(name, *a, **k))
    found = "\n".join(preflight.warnings("10.0.0.5"))
    assert "tasks cannot run on this node" in found and "install the Debian package crun" in found
    assert "install the Debian package skopeo" in found
    assert "no overlay networks" in found and "install the Debian package nftables" in found


def test_without_tini_only_init_services_are_affected(monkeypatch):
    monkeypatch.setattr(preflight, "containers_unavailable", lambda: None)
    monkeypatch.setattr(preflight, "_exists", lambda path: path != containers.INIT_BINARY)
    found = preflight.warnings(None)
    assert any("--init" in line and "tini" in line for line in found)
    assert not any("tasks cannot run" in line for line in found)


def test_a_node_not_in_a_swarm_is_not_judged_on_its_data_plane(monkeypatch):
    monkeypatch.setattr(preflight, "data_plane_unavailable", lambda ip: "should not be asked")
    assert not any("overlay" in line for line in preflight.warnings(None))
