"""The embedding API's example runs: a swarm in the caller's process, its store as a linearizable register
with compare-and-set, a watch, the HTTP client."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_embedding_example_runs_and_its_compare_and_set_and_watch_behave():
    done = subprocess.run([sys.executable, "examples/embed.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("node ") and lines[1] == "leader: True"
    assert lines[2:5] == [
        "compare-and-set at a stale version: refused",
        "x = 2",
        "watched: [('create', 1), ('update', 2)]",
    ]
    assert lines[5].startswith("nodes: [")
