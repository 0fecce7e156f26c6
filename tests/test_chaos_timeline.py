"""The chaos run timeline: a report renders to a PNG of the promised size, even an empty one, with leaders told apart."""

import struct
from pathlib import Path

from chaos.cluster.timeline import DPI, FIGSIZE, leader_colors, render

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MANAGERS = ["manager1", "manager2", "manager3"]


def leader_kill_report() -> dict:
    """A 30 s leader-kill run: manager2 leads, is killed at 4.1 s, manager1 takes over; a partition overlaps."""
    leaders = []
    for tenth in range(5, 300, 5):
        t = tenth / 10
        if t < 4.1:
            view = {m: "manager2" for m in MANAGERS}
        elif t < 6.0:
            view = {"manager1": None, "manager3": None}  # manager2 is down; the others have no leader yet
        elif t < 9.0:
            view = {"manager1": "manager1", "manager3": "manager1"}
        else:
            view = {"manager1": "manager1", "manager2": "manager1" if t > 10 else None, "manager3": "manager1"}
        leaders.append({"t": t, "view": view})
    throughput = [
        {"t": s, "ok": 5 if 4 <= s < 7 else 50, "fail": 3 if 4 <= s < 7 else 0, "info": int(s == 4)} for s in range(30)
    ]
    return {
        "scenario": "leader-kill",
        "seed": 7,
        "duration_s": 30.0,
        "nodes": [*MANAGERS, "worker1", "worker2"],
        "managers": MANAGERS,
        "faults": [
            {"name": "kill -9 leader", "targets": ["manager2"], "start": 4.1, "end": 9.0},
            {"name": "partition", "targets": ["manager3", "worker1"], "start": 7.0, "end": None},
        ],
        "leaders": leaders,
        "throughput": throughput,
        "errors": [{"t": 4.0 + i / 20, "message": "timeout"} for i in range(60)],
        "checks": {"linearizability": {"result": "linearizable"}, "acknowledged_writes": {"ok": True}},
    }


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG spec requires to come first, right after the signature."""
    _length, chunk_type, width, height = struct.unpack(">I4sII", png[8:24])
    assert chunk_type == b"IHDR"
    return width, height


def test_a_run_renders_to_a_png_of_the_figure_size(tmp_path: Path) -> None:
    path = tmp_path / "timeline.png"
    render(leader_kill_report(), path)
    png = path.read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert png_size(png) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI) == (1200, 800)


def test_a_run_with_nothing_recorded_still_renders(tmp_path: Path) -> None:
    report = {
        "scenario": "none",
        "seed": 0,
        "duration_s": 0.0,
        "nodes": [],
        "managers": [],
        "faults": [],
        "leaders": [],
        "throughput": [],
        "errors": [],
    }
    path = tmp_path / "empty.png"
    render(report, path)
    png = path.read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert png_size(png) == (1200, 800)


def test_each_reported_leader_gets_its_own_color() -> None:
    colors = leader_colors(leader_kill_report())
    assert set(colors) == {"manager1", "manager2"}
    assert colors["manager1"] != colors["manager2"]


def test_a_nodes_color_does_not_depend_on_when_it_first_led() -> None:
    """Reading two runs' timelines side by side only works if "manager2 is orange" holds in both."""
    report = leader_kill_report()
    only_manager2 = {**report, "leaders": [{"t": 0.5, "view": {"manager1": "manager2"}}]}
    assert leader_colors(only_manager2)["manager2"] == leader_colors(report)["manager2"]
