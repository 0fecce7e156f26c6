"""Draws one chaos run's report as a PNG timeline: faults, who each manager thinks leads, client throughput.

The three panels share the time axis so a reader sees cause and effect in one column: a fault starts, the
managers lose (or disagree on) the leader, throughput dips and errors appear, then it all recovers. The
figure is built on `Figure` + `FigureCanvasAgg` rather than pyplot, so rendering touches no global backend
or figure registry and is safe inside the chaos runner's process, or a test, with no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

FIGSIZE = (12, 8)
"""Inches: wide enough for a minute-long run at one-second resolution, tall enough for three readable panels."""
DPI = 100
"""With FIGSIZE, a 1200x800 PNG: legible on a laptop screen and small enough to attach to a CI run."""
LEADER_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
"""matplotlib's tab10 without its grey, which is reserved for "no leader known"; nine covers any sane manager count."""
NO_LEADER = "#bbbbbb"
BAR_HEIGHT = 0.8
"""Of one row, leaving a gap so adjacent fault rows and manager rows read as separate."""


def leader_colors(report: dict[str, Any]) -> dict[str, str]:
    """The color of every node some manager reported as leader, keyed by node name.

    A node's color comes from its position in the report's managers (then nodes), not from the order leaders
    happened to appear, so "manager2 is orange" holds across every run of the same cluster.
    """
    seen = {leader for sample in report.get("leaders", []) for leader in sample["view"].values() if leader}
    known = list(dict.fromkeys([*report.get("managers", []), *report.get("nodes", []), *sorted(seen)]))
    return {node: LEADER_PALETTE[i % len(LEADER_PALETTE)] for i, node in enumerate(known) if node in seen}


def render(report: dict[str, Any], path: Path) -> None:
    """Write the run's timeline to `path` as a FIGSIZE-by-DPI PNG."""
    duration = max(float(report.get("duration_s") or 0.0), 1.0)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    faults_ax, leaders_ax, throughput_ax = fig.subplots(3, 1, sharex=True, height_ratios=[1, 1.2, 1.6])
    _draw_faults(faults_ax, report.get("faults", []), duration)
    _draw_leaders(leaders_ax, report, duration)
    _draw_throughput(throughput_ax, report.get("throughput", []), report.get("errors", []))
    throughput_ax.set_xlim(0, duration)
    throughput_ax.set_xlabel("seconds since the run started")
    fig.suptitle(_title(report))
    FigureCanvasAgg(fig).print_png(path)


def _title(report: dict[str, Any]) -> str:
    title = f"{report.get('scenario', '?')}  seed {report.get('seed', '?')}  {report.get('duration_s') or 0:.1f}s"
    verdicts = [f"{name}: {_verdict(check)}" for name, check in (report.get("checks") or {}).items()]
    return "  |  ".join([title, *verdicts])


def _verdict(check: dict[str, Any]) -> str:
    """A check's own word for its outcome if it has one (linearizability's), else its ok flag."""
    if "result" in check:
        return str(check["result"])
    return {True: "ok", False: "FAILED"}.get(check.get("ok"), "?")


def _draw_faults(ax: Any, faults: list[dict[str, Any]], duration: float) -> None:
    """One bar per fault, each on the first row free at its start, so overlapping faults stack instead of hiding."""
    row_ends: list[float] = []
    for fault in sorted(faults, key=lambda f: f["start"]):
        start = fault["start"]
        end = duration if fault.get("end") is None else fault["end"]
        row = next((i for i, row_end in enumerate(row_ends) if row_end <= start), len(row_ends))
        if row == len(row_ends):
            row_ends.append(end)
        else:
            row_ends[row] = end
        ax.broken_barh([(start, end - start)], (row - BAR_HEIGHT / 2, BAR_HEIGHT), color="#d62728", alpha=0.35)
        label = f"{fault['name']} {', '.join(fault.get('targets', []))}"
        ax.text(start, row, f" {label}", va="center", fontsize=8, clip_on=True)
    ax.set_ylim(len(row_ends) - 0.5 if row_ends else 0.5, -0.5)
    ax.set_yticks([])
    ax.set_ylabel("faults")
    if not faults:
        ax.text(0.5, 0.5, "no faults", transform=ax.transAxes, ha="center", va="center", color="grey")


def _draw_leaders(ax: Any, report: dict[str, Any], duration: float) -> None:
    """Per manager, what it said about the leader over each sample interval; blank where it was down.

    A sample stands until the next one; the last stands for as long as the interval before it (one second if
    it is alone), so a run whose sampling stopped early is not drawn as if the last answer held to the end.
    """
    samples = sorted(report.get("leaders", []), key=lambda s: s["t"])
    managers = report.get("managers") or sorted({m for s in samples for m in s["view"]})
    colors = leader_colors(report)
    spans: dict[tuple[int, str | None], list[tuple[float, float]]] = {}
    for i, sample in enumerate(samples):
        last_gap = sample["t"] - samples[i - 1]["t"] if i > 0 else 1.0
        end = samples[i + 1]["t"] if i + 1 < len(samples) else min(sample["t"] + last_gap, duration)
        for row, manager in enumerate(managers):
            if manager in sample["view"]:
                spans.setdefault((row, sample["view"][manager]), []).append((sample["t"], end - sample["t"]))
    for (row, leader), xranges in spans.items():
        style = {"color": colors[leader]} if leader else {"facecolor": NO_LEADER, "hatch": "//", "edgecolor": "white"}
        ax.broken_barh(xranges, (row - BAR_HEIGHT / 2, BAR_HEIGHT), linewidth=0, **style)
    ax.set_yticks(range(len(managers)), managers)
    ax.set_ylim(len(managers) - 0.5 if managers else 0.5, -0.5)
    ax.set_ylabel("leader as seen by")
    handles = [Patch(color=color, label=node) for node, color in colors.items()]
    handles.append(Patch(facecolor=NO_LEADER, hatch="//", edgecolor="white", label="no leader known"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="leader")


def _draw_throughput(ax: Any, throughput: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
    """Completed operations per one-second bucket as step lines, with every client error as a tick at the bottom."""
    buckets = sorted(throughput, key=lambda b: b["t"])
    for outcome, color in (("ok", "#2ca02c"), ("fail", "#d62728"), ("info", "#ff7f0e")):
        if buckets:
            # The closing point makes the last one-second bucket as wide as the others.
            ts = [b["t"] for b in buckets] + [buckets[-1]["t"] + 1]
            counts = [b.get(outcome, 0) for b in buckets] + [buckets[-1].get(outcome, 0)]
            ax.step(ts, counts, where="post", color=color, label=outcome)
    if errors:
        # x in seconds, y in axes fractions: the ticks hug the bottom edge whatever the throughput scale.
        ax.plot(
            [e["t"] for e in errors],
            [0.02] * len(errors),
            "|",
            color="black",
            markersize=6,
            transform=ax.get_xaxis_transform(),
            label=f"errors ({len(errors)})",
        )
    ax.set_ylim(bottom=0)
    ax.set_ylabel("operations / s")
    if buckets or errors:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
