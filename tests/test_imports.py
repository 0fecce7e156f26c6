"""The house rules of DESIGN.md's layout, kept true by reading every import in `raftswarm/`.

Two rules, with no exception list:
- no import loop between modules (imports inside functions count: hiding a loop there is still a loop);
- a room (a sub-package or top-level module of `raftswarm`) imports only the rooms `MAY_IMPORT` gives it,
  so dependencies point down toward the shared vocabulary and never sideways between the halves of a node.

`python3 tests/test_imports.py` prints the loops and the wrong-way imports of the tree as it is.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "raftswarm"

_VOCABULARY = {"errors", "objects"}
_SHARED = _VOCABULARY | {"addresses", "supervision"}

MAY_IMPORT: dict[str, set[str]] = {
    # the bottom: what every layer says
    "errors": set(),
    "objects": {"errors"},
    "addresses": {"errors"},
    "supervision": {"errors"},
    "tlsaccept": {"errors", "supervision"},
    "eventloop": {"errors"},
    # consensus and the replicated state: nothing of certificates, services or networks
    "raft": {"errors", "addresses", "supervision", "tlsaccept"},
    "store": {"raft"} | _VOCABULARY,
    "ca": _VOCABULARY,
    # the node-to-manager connection both halves of a node speak
    "rpc": {"ca"} | _SHARED,
    # the networking rooms know nothing of raft, store, manager or agent
    "gossip": _SHARED,
    "dataplane": _SHARED,
    "images": _SHARED,
    "runtime": {"images"} | _SHARED,
    # the two halves of a node never import each other
    "manager": {"raft", "store", "ca", "rpc"} | _SHARED,
    "agent": {"rpc", "runtime", "images", "ca"} | _SHARED,
    "stack": _VOCABULARY,
    # the API server sees the node through api/backend.py's interface, not through manager/ or agent/; it serves
    # the node's image store and the replicated store's own operations (/raftswarm/store)
    "api": {"images", "store"} | _SHARED,
    # the daemon assembles everything below it
    "node": {"raft", "store", "ca", "rpc", "gossip", "dataplane", "images", "runtime", "manager", "agent", "api"}
    | {"tlsaccept", "eventloop"}
    | _SHARED,
    "localcluster": {"node", "api", "images", "runtime", "ca", "raft"} | _SHARED,
    "embedding": {"node", "api", "store"} | _SHARED,
    "cli": {"api", "stack", "localcluster"} | _SHARED,
}
"""For each room, the rooms it may import (besides itself)."""


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("raftswarm",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    found = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.append(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the raftswarm modules it imports anywhere in its body (a package's own parents excluded)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        graph[module]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(module, path, node, modules):
                    if target != module and not module.startswith(target + "."):
                        graph[module].add(target)
    return graph


def import_loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        loops.append(sorted(component))
    return loops


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "raftswarm"


def wrong_way_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs whose rooms MAY_IMPORT does not allow."""
    found = []
    for module, targets in sorted(graph.items()):
        room = room_of(module)
        if room == "raftswarm":
            continue  # the package's __init__ holds only the version
        for target in sorted(targets):
            other = room_of(target)
            if other != room and other != "raftswarm" and other not in MAY_IMPORT.get(room, set()):
                found.append((module, target))
    return found


def test_every_room_has_rules():
    rooms = {room_of(module) for module in import_graph()} - {"raftswarm"}
    assert rooms <= MAY_IMPORT.keys(), f"rooms with no import rules: {sorted(rooms - MAY_IMPORT.keys())}"


def test_the_room_rules_themselves_have_no_loop():
    rules = {room: set(targets) for room, targets in MAY_IMPORT.items()}
    assert import_loops(rules) == []


def test_no_import_loop_in_raftswarm():
    assert import_loops(import_graph()) == []


def test_no_wrong_way_import_in_raftswarm():
    wrong = [f"{module} imports {target}" for module, target in wrong_way_imports(import_graph())]
    assert wrong == []


def test_the_checker_sees_a_loop_hidden_inside_a_function(tmp_path):
    graph = {"raftswarm.a.x": {"raftswarm.a.y"}, "raftswarm.a.y": {"raftswarm.a.z"}, "raftswarm.a.z": {"raftswarm.a.x"}}
    assert import_loops(graph) == [["raftswarm.a.x", "raftswarm.a.y", "raftswarm.a.z"]]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from .manager import orchestrator\n")
    node = next(n for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.ImportFrom))
    modules = {"raftswarm.manager": PACKAGE, "raftswarm.manager.orchestrator": PACKAGE, "raftswarm.m": source}
    assert _imported("raftswarm.m", source, node, modules) == ["raftswarm.manager.orchestrator"]


def test_the_checker_sees_an_agent_importing_the_manager():
    graph = {"raftswarm.agent.x": {"raftswarm.manager.y"}, "raftswarm.manager.y": set()}
    assert wrong_way_imports(graph) == [("raftswarm.agent.x", "raftswarm.manager.y")]


if __name__ == "__main__":
    graph = import_graph()
    loops = import_loops(graph)
    wrong = wrong_way_imports(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports")
    print(f"{len(loops)} import loops")
    for loop in loops:
        print("  " + " <-> ".join(loop))
    print(f"{len(wrong)} wrong-way imports")
    for module, target in wrong:
        print(f"  {module} -> {target}")
    sys.exit(1 if loops or wrong else 0)
