"""Imports flow one way: no cycle between edge/'s subpackages, counting every import that runs
(module level and inside functions; `if TYPE_CHECKING:` blocks do not run), and the modules at
edge/'s top (types, geometry, errors, ...) import no subpackage. The CLI sits above everything."""

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

EDGE = Path(__file__).resolve().parents[1] / "edge"
ABOVE_ALL = {"cli", "__main__"}


def _subpackage(module: str) -> str:
    """'daemon' for edge.daemon.app, '' for edge.types (a top module) or anything outside edge."""
    parts = module.split(".")
    if parts[0] != "edge" or len(parts) < 2:
        return ""
    return parts[1] if (EDGE / parts[1]).is_dir() else ""


def _runtime_imports(tree: ast.AST) -> Iterator[Tuple[str, int]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            yield from (item for child in node.orelse for item in _runtime_imports(child))
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, node.lineno
        yield from _runtime_imports(node)


def import_graph() -> Tuple[Dict[str, Set[str]], Dict[Tuple[str, str], List[str]]]:
    edges: Dict[str, Set[str]] = defaultdict(set)
    where: Dict[Tuple[str, str], List[str]] = defaultdict(list)
    for path in sorted(EDGE.rglob("*.py")):
        relative = path.relative_to(EDGE.parent).with_suffix("")
        module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        if module.split(".")[-1] in ABOVE_ALL:
            continue
        source = _subpackage(module) or module  # a top module is its own node
        for imported, line in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            target = _subpackage(imported)
            if target and target != source:
                edges[source].add(target)
                where[(source, target)].append(f"{module}:{line}")
    return edges, where


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected groups of more than one node (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_subpackages():
    edges, where = import_graph()
    found = cycles(edges)
    details = [f"{a} -> {b}: {where[(a, b)][:3]}" for group in found for a in group for b in edges[a] if b in group]
    assert not found, "\n".join(details)
    assert "perception" in edges["daemon"] and "backends" in edges["perception"]  # the graph was read


def test_top_modules_import_no_subpackage_at_run_time():
    edges, where = import_graph()
    top = {node: targets for node, targets in edges.items() if node.startswith("edge.")}
    assert not top, {node: [where[(node, t)] for t in targets] for node, targets in top.items()}
