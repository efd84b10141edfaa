"""The package layout rules of ``docs/architecture.md``, checked on the source with ``ast``."""

import ast
import os
from collections import defaultdict
from typing import Dict, Set

PKG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "reid_plugins"
)
CORE = (
    "checkpoint",
    "config",
    "data",
    "engine",
    "evaluation",
    "export",
    "modeling",
    "solver",
    "utils",
)


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(PKG))[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path: str) -> Set[str]:
    """Absolute names of every ``reid_plugins`` module imported by ``path`` (also inside
    functions), relative imports resolved."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    mod = _module_name(path)
    package = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
    return {n for n in out if n == "reid_plugins" or n.startswith("reid_plugins.")}


def _all_files():
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(root, f)


def test_core_packages_never_import_a_method():
    offenders = []
    for path in _all_files():
        parts = os.path.relpath(path, PKG).split(os.sep)
        if parts[0] not in CORE:
            continue
        bad = sorted(n for n in _imports(path) if n.startswith("reid_plugins.methods"))
        if bad:
            offenders.append(f"{os.path.relpath(path, PKG)}: {bad}")
    assert not offenders, "core modules importing methods:\n" + "\n".join(offenders)


def test_no_import_cycle_between_packages():
    """Package-level dependency graph (core packages, each method) is acyclic."""

    def pkg_of(name: str) -> str:
        parts = name.split(".")
        if len(parts) < 2:
            return ""
        if parts[1] == "methods":
            return ".".join(parts[1:3]) if len(parts) > 2 else "methods"
        return parts[1]

    graph: Dict[str, Set[str]] = defaultdict(set)
    for path in _all_files():
        src = pkg_of(_module_name(path))
        if not src or src == "methods":
            continue
        for name in _imports(path):
            dst = pkg_of(name)
            if dst and dst != src and dst != "methods":
                graph[src].add(dst)
    # the core packages may form no cycle among themselves, nor with a method
    state: Dict[str, int] = {}
    stack = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle between packages: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_each_method_is_one_folder():
    methods = os.path.join(PKG, "methods")
    found = sorted(
        d for d in os.listdir(methods) if os.path.isfile(os.path.join(methods, d, "__init__.py"))
    )
    assert found == ["gmn", "m3l", "oim", "tdn"]
    for name in found:
        assert os.path.isfile(os.path.join(methods, name, "model.py")), name
        # a method never imports another method
        for f in os.listdir(os.path.join(methods, name)):
            if f.endswith(".py"):
                others = {
                    n.split(".")[2]
                    for n in _imports(os.path.join(methods, name, f))
                    if n.startswith("reid_plugins.methods.") and len(n.split(".")) > 2
                }
                assert others <= {name}, (name, f, others)
