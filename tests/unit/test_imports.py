"""Every module of the installed package imports alone, without side effects, and without cycles.

Each module is imported in a fresh interpreter (``python -c``) with an empty temporary
``PYTHAGORAS_HOME``: the import must succeed, start no thread, write nothing (neither the home nor
the working directory), and leave the heavy optional dependencies (Dask, pandas, numpy) unimported,
so that ``import pythagoras_p2p`` stays cheap. Modules are found on disk with
:func:`pkgutil.walk_packages`, including ``pythagoras_p2p.daemon`` and ``pythagoras_p2p.cli``
(installed from ``daemon/`` and ``cli/`` through ``package_dir``).

The import graph is built statically (``ast``, top-level imports only) and must have no cycle.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = "pythagoras_p2p"
#: Packages installed from their own folders (``package_dir``): walked separately.
SEPARATE_PACKAGES = ("pythagoras_p2p.daemon", "pythagoras_p2p.cli")
HEAVY = ("dask", "distributed", "pandas", "numpy")


def package_modules() -> dict[str, Path]:
    """Every module of the package, by name, with its source file (found on disk)."""
    modules: dict[str, Path] = {}
    for package_name in (ROOT, *SEPARATE_PACKAGES):
        package = importlib.import_module(package_name)
        modules[package_name] = Path(package.__file__)
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            spec = importlib.util.find_spec(info.name)
            assert spec is not None and spec.origin, f"{info.name} has no source file"
            modules[info.name] = Path(spec.origin)
    return modules


MODULES = package_modules()

IMPORT_ALONE = """
import importlib, json, sys, threading
importlib.import_module(sys.argv[1])
print(json.dumps({
    "threads": sorted(t.name for t in threading.enumerate()),
    "heavy": sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules),
}))
"""


def _import_alone(name: str, workdir: Path) -> list[str]:
    """The problems of importing ``name`` alone in a fresh interpreter (empty if none)."""
    workdir.mkdir()
    home = workdir / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHAGORAS_")}
    env["PYTHAGORAS_HOME"] = str(home)
    # cwd: `python -c` puts the working directory first on sys.path; the repository root would
    # let the source folder stand in for the installed package.
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALONE, name, json.dumps(HEAVY)],
                          env=env, cwd=workdir, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return [f"`import {name}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}"]
    problems = []
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["threads"] != ["MainThread"]:
        problems.append(f"`import {name}` started threads: {report['threads']}")
    if report["heavy"]:
        problems.append(f"`import {name}` imported optional heavy dependencies: {report['heavy']}")
    if home.exists() and any(home.iterdir()):
        problems.append(f"`import {name}` created files in PYTHAGORAS_HOME: "
                        f"{sorted(str(p.relative_to(home)) for p in home.rglob('*'))}")
    written = sorted(p.name for p in workdir.iterdir() if p != home)
    if written:
        problems.append(f"`import {name}` wrote into the working directory: {written}")
    return problems


def test_the_package_walk_finds_every_part_of_the_package():
    assert ROOT in MODULES
    for name in ("pythagoras_p2p.net.wire", "pythagoras_p2p.net.security",
                 "pythagoras_p2p.clouds.base", "pythagoras_p2p.daemon.node",
                 "pythagoras_p2p.daemon.handlers", "pythagoras_p2p.cli.main"):
        assert name in MODULES, f"{name} was not found walking the package"


def test_every_module_imports_alone_without_side_effects(tmp_path):
    names = sorted(MODULES)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda item: _import_alone(item[1], tmp_path / f"m{item[0]}"),
                           enumerate(names))
        problems = [problem for found in results for problem in found]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- import cycles


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], *, deferred: bool = False):
    """Import statements run when the module is imported (not under ``if TYPE_CHECKING:``), and
    with ``deferred`` also those inside functions (run when the function is called)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _imports(node.body, deferred=deferred)
            yield from _imports(node.orelse, deferred=deferred)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _imports(block, deferred=deferred)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _imports(node.body, deferred=deferred)
        elif deferred and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _imports(node.body, deferred=deferred)
        elif deferred:  # loops and other blocks inside functions
            for block in ("body", "orelse", "finalbody"):
                yield from _imports(getattr(node, block, None) or [], deferred=deferred)


def _deepest_module(name: str) -> str | None:
    """``name`` or its closest enclosing module that belongs to the package."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(*, deferred: bool = False) -> dict[str, set[str]]:
    """module → the package's modules its top-level imports import (``deferred``: any import)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path)).body, deferred=deferred):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - (node.level - 1)])
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module or ""
                # `from package import module` imports the module; `from module import name` the module.
                candidates = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES
                              else source for alias in node.names]
            for candidate in candidates:
                target = _deepest_module(candidate)
                if target is not None and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components of one node without a self-loop are left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        components.append(sorted(component))
    return sorted(components)


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
    return "{" + ", ".join(component) + "}: " + "; ".join(edges)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert strongly_connected_components(graph) == [["a", "b", "c"], ["e"]]


def test_the_import_graph_sees_relative_imports():
    graph = import_graph()
    assert "pythagoras_p2p.errors" in graph["pythagoras_p2p.net.wire"]  # from ..errors import
    assert "pythagoras_p2p.net.wire" in graph["pythagoras_p2p.net.transfer"]  # from . import wire


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    cycles = strongly_connected_components(graph)
    assert not cycles, "import cycles among the package's modules (top-level imports):\n" + "\n".join(
        _describe(c, graph) for c in cycles)


def test_the_package_has_no_import_cycles_even_through_deferred_imports():
    graph = import_graph(deferred=True)
    cycles = strongly_connected_components(graph)
    assert not cycles, "import cycles among the package's modules (any import):\n" + "\n".join(
        _describe(c, graph) for c in cycles)
