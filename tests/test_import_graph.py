"""No import circle among genrec_core's modules (issue 25: "no circles, typed seams").

The graph is read from the source (``ast``), not from ``sys.modules``, so an import hidden inside
a function or under ``if TYPE_CHECKING:`` counts as much as one at the top: hiding an import is
not breaking a circle. Edges, for every ``import`` / ``from ... import`` of a genrec_core module:

- to the module imported (``from pkg import name`` is an import of ``pkg.name`` when that is a
  module, else of ``pkg``; relative imports are resolved);
- to the packages above it, whose ``__init__`` runs first, except the importer's own packages
  (they are already being imported when it runs); an explicit import of one of them counts;
- a package's ``__init__`` re-exporting from its modules is an edge from the package.

Plug-ins that registries import by a computed name (``importlib.import_module(f"...{name}")``)
are not edges: they load on demand, after the registry's module has been imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "genrec_core"

#: Edges (importer, imported) that close a circle the lead is removing: methods/base.py imports
#: the optimiser helpers of recommender/trainer.py, which names ``Method`` for its types.
#: removed when the methods seam lands


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported_names(tree: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The dotted names (modules, or packages for names they define) a module's source imports."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                anchor = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return names


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports (see the module docstring for the edges)."""
    modules = module_files(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in _imported_names(tree, module, path.name == "__init__.py", modules):
            if name != package and not name.startswith(package + "."):
                continue
            while name not in modules:  # an attribute path (import a.b.c where c is no module)
                name = name.rpartition(".")[0]
            if name != module:
                graph[module].add(name)
            parent = name.rpartition(".")[0]
            while parent:
                if parent in modules and parent != module and not module.startswith(parent + "."):
                    graph[module].add(parent)
                parent = parent.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (each a circle), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few hundred modules, recursion is fine
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
    return sorted(found)


def describe(graph: dict[str, set[str]], found: list[list[str]]) -> str:
    lines = []
    for component in found:
        lines.append(" <-> ".join(component))
        lines += [f"    {a} imports {', '.join(sorted(graph[a] & set(component)))}" for a in component]
    return "\n".join(lines)


def without(graph: dict[str, set[str]], edges: set[tuple[str, str]]) -> dict[str, set[str]]:
    return {m: {t for t in targets if (m, t) not in edges} for m, targets in graph.items()}


# --------------------------------------------------------------------------- the check itself


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_a_circle_hidden_in_a_function_or_a_type_check_is_found(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import x\n",
            "pkg/b.py": "def f():\n    from pkg import a\n",  # a <-> b, hidden in a function
            "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import D\n",
            "pkg/d.py": "import pkg.c\n",  # c <-> d, one side only for the type checker
            "pkg/e.py": "import os\nfrom pkg.sub.f import g\n",  # no circle: e -> sub.f, e -> sub
            "pkg/sub/__init__.py": "from .f import g\n",  # a re-export: sub -> sub.f
            "pkg/sub/f.py": "from pkg import e as _e\n",  # sub.f -> e -> sub -> sub.f: a circle through the package
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.e"] == {"pkg.sub.f", "pkg.sub"} and graph["pkg.sub"] == {"pkg.sub.f"}
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"], ["pkg.e", "pkg.sub", "pkg.sub.f"]]
    assert cycles(without(graph, {("pkg.b", "pkg.a"), ("pkg.d", "pkg.c"), ("pkg.sub.f", "pkg.e")})) == []


def test_the_graph_holds_genrec_cores_imports_of_every_kind():
    graph = import_graph()
    assert "genrec_core.serving.errors" in graph["genrec_core.serving"]  # a package's re-export
    assert "genrec_core.serving.http" in graph["genrec_core.serving.commands"]  # imported inside a function
    assert "genrec_core.methods.base" in graph["genrec_core.recommender.trainer"]  # under TYPE_CHECKING
    assert "genrec_core.recommender.checkpoint_format" in graph["genrec_core.recommender.trainer"]  # from pkg import module


def test_no_import_circle_among_genrec_core_modules():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import circles:\n" + describe(graph, found)


def test_serving_ranks_without_the_bundle_writer():
    """The serving API (ranking) reaches neither the bundle writer nor the HTTP layer."""
    graph = import_graph()
    seen, todo = set(), ["genrec_core.serving.api"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    assert not seen & {"genrec_core.serving.bundle", "genrec_core.serving.http", "genrec_core.serving.commands"}
