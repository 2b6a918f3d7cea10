"""The rules the code keeps (shared/design/ARCHITECTURE.md), checked on the source itself.

- No import cycles inside `harness/`: every import counts, module-level, late (inside a
  function) and typing-only alike, since a late import is a cycle postponed.
- Nothing outside `harness/runtime/` looks into a runtime with getattr/hasattr: what the rest
  of the harness uses is declared by `harness.runtime.base.Runtime`.
- The library never prints: only programs (a module run with `python -m`) write to stdout/stderr.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "harness"


def module_name(path: Path, root: Path = HARNESS) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = HARNESS) -> dict[str, set[str]]:
    """module -> the harness modules it imports (the module itself or a name inside it)."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_the_harness() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle_and_a_late_import(tmp_path: Path) -> None:
    pkg = tmp_path / "harness"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from harness.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from harness import a\n")
    (pkg / "c.py").write_text("import harness.a\n")
    assert cycles(import_graph(pkg)) == [["harness.a", "harness.b"]]


def _calls(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names
    ]


def _library_modules() -> list[Path]:
    return [p for p in HARNESS.rglob("*.py") if p.relative_to(HARNESS).parts[0] != "runtime"]


@pytest.mark.parametrize("path", _library_modules(), ids=lambda p: str(p.relative_to(HARNESS)))
def test_nothing_outside_the_runtimes_pokes_into_a_runtime(path: Path) -> None:
    """getattr/hasattr whose object mentions a runtime: what is used must be declared instead."""
    offending = [
        ast.unparse(call)
        for call in _calls(ast.parse(path.read_text()), {"getattr", "hasattr"})
        if call.args and "runtime" in ast.unparse(call.args[0])
    ]
    assert offending == []


def _is_program(tree: ast.Module) -> bool:
    """A module run as a program: it has `if __name__ == "__main__":`."""
    return any(
        isinstance(n, ast.If) and "__name__" in ast.unparse(n.test) and "__main__" in ast.unparse(n.test)
        for n in tree.body
    )


@pytest.mark.parametrize("path", sorted(HARNESS.rglob("*.py")), ids=lambda p: str(p.relative_to(HARNESS)))
def test_the_library_never_prints(path: Path) -> None:
    tree = ast.parse(path.read_text())
    if _is_program(tree):
        return  # programs (the CLI, the canary client, the node agent, ...) talk on stdout
    assert [ast.unparse(c) for c in _calls(tree, {"print"})] == []
