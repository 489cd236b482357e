"""Draw the import graph of thinktune and thinktune_operator/thinktune_sandbox and check the layering rules.

    python tools/dev/import_graph.py [--dot docs/import-graph.dot] [--svg docs/import-graph.svg]

Rules checked (exit 1 when one is broken; tests/unit/test_import_graph.py runs it):
- no import cycle between thinktune modules (module-level and function-level imports both count);
- the operator runtime (thinktune_operator) imports only thinktune.spec and thinktune.contract from the trainer
  package.
The graph is drawn per module, clustered by package; `dot` (Debian's graphviz) renders the SVG when present.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "thinktune": ROOT / "trainer" / "thinktune",
    "thinktune_operator": ROOT / "operator" / "thinktune_operator",
    "thinktune_sandbox": ROOT / "operator" / "thinktune_sandbox",
}
OPERATOR_MAY_IMPORT = {"thinktune.spec", "thinktune.contract"}


def module_name(pkg: str, root: Path, path: Path) -> str:
    parts = [pkg, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    out = {}
    for pkg, root in SOURCES.items():
        for path in sorted(root.rglob("*.py")):
            out[module_name(pkg, root, path)] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (annotations only: no import happens at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if (
                isinstance(child, ast.If)
                and getattr(child.test, "id", getattr(child.test, "attr", "")) == "TYPE_CHECKING"
            ):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports (anywhere in the file), resolved to the longest known module name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layering_violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in sorted(g.items()):
        if not m.startswith("thinktune_operator"):
            continue
        for d in sorted(deps):
            if d.startswith("thinktune.") or d == "thinktune":
                if d not in OPERATOR_MAY_IMPORT:
                    bad.append(
                        f"{m} imports {d} (the operator may import only {sorted(OPERATOR_MAY_IMPORT)})"
                    )
    return bad


def by_package(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between sub-packages (thinktune.data, thinktune.train, ...; top-level modules stay as they are)."""

    def pkg(m: str) -> str:
        parts = m.split(".")
        if parts[0] != "thinktune":
            return parts[0]
        return (
            ".".join(parts[:2]) if len(parts) > 2 or SOURCES["thinktune"].joinpath(parts[-1]).is_dir() else m
        )

    out: dict[str, set[str]] = {}
    for m, deps in g.items():
        out.setdefault(pkg(m), set()).update(pkg(d) for d in deps if pkg(d) != pkg(m))
    return out


def to_dot(g: dict[str, set[str]]) -> str:
    lines = ["digraph imports {", "  rankdir=LR; node [shape=box, fontsize=10]; edge [color=gray40];"]
    groups: dict[str, list[str]] = {}
    for m in g:
        parts = m.split(".")
        groups.setdefault(".".join(parts[:2]) if len(parts) > 2 else parts[0], []).append(m)
    for i, (grp, ms) in enumerate(sorted(groups.items())):
        lines.append(f'  subgraph cluster_{i} {{ label="{grp}"; style=rounded;')
        lines += [f'    "{m}";' for m in sorted(ms)]
        lines.append("  }")
    for m, deps in sorted(g.items()):
        lines += [f'  "{m}" -> "{d}";' for d in sorted(deps)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dot", type=Path)
    ap.add_argument("--svg", type=Path, help="the package-level picture (graphviz `dot`)")
    a = ap.parse_args(argv)
    g = graph()
    if a.dot:
        a.dot.parent.mkdir(parents=True, exist_ok=True)
        a.dot.write_text(to_dot(g))
    if a.svg and shutil.which("dot"):
        a.svg.parent.mkdir(parents=True, exist_ok=True)
        fmt = a.svg.suffix.lstrip(".") or "svg"
        subprocess.run(
            ["dot", f"-T{fmt}", "-o", str(a.svg)], input=to_dot(by_package(g)), text=True, check=True
        )
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(g)] + layering_violations(g)
    for p in problems:
        print(p)
    edges = sum(len(v) for v in g.values())
    print(f"{len(g)} modules, {edges} imports, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
