import sys
from pathlib import Path

# Test helper modules (raft_inprocess, raft_harness, raft_mutants) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))

from raft_inprocess import cluster  # noqa: E402,F401  (the in-process Raft cluster fixture, for every test file)
