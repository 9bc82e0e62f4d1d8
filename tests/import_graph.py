"""The import graph of ``src/layerscope``, read from the source with :mod:`ast` (nothing is imported).

Used by ``tests/test_architecture.py`` (the layer contract) and ``benchmarks/bench_architecture.py``
(the numbers of the architecture page).

What counts as an edge ``A -> B`` (A's code imports B when it runs):

- every ``import``/``from ... import`` statement naming a ``layerscope`` module, at module level or
  inside a function (a lazy import still runs, and a cycle through it still ties the two modules
  together), relative imports resolved;
- ``from P import x`` is an edge to ``P.x`` when ``P.x`` is a module, else to ``P``;
- importing ``P.Q.m`` also runs ``P/__init__.py`` and ``P/Q/__init__.py``: an edge to each package
  above the target that is not already a package above the importer (whose ``__init__`` has run);
- ``importlib.import_module("layerscope.x")`` with a literal string is an edge too;
- a package ``__init__`` that serves names lazily through a module-level ``__getattr__`` (PEP 562:
  ``layerscope``, ``layerscope.metrics``, ``layerscope.evaluate``) runs those imports when a name is
  read, not when the package is imported: they are edges of the module that imports such a name
  (``from layerscope.metrics import measure`` -> ``layerscope.metrics.compute``; every module of the
  package where ``__getattr__`` computes the module's name), not of the package.

Imports under ``if TYPE_CHECKING:`` never run: they are recorded (``Import.type_only``) and left out
of the cycle search, but the layer rule applies to them as to any other import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "layerscope"


@dataclass(frozen=True)
class Import:
    """One import of a ``layerscope`` module by another."""

    source: str  # importing module, dotted ("layerscope.config")
    target: str  # imported module, dotted
    path: str  # file of the importing module, from the repository root ("src/layerscope/config.py")
    line: int
    lazy: bool  # inside a function (runs on first call, not on import)
    type_only: bool  # under ``if TYPE_CHECKING:`` (never runs)
    implicit: bool  # a package __init__ run because a module below it was imported

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    found = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_module_call(node: ast.AST) -> ast.Call | None:
    """``importlib.import_module(...)`` (or ``import_module(...)``), else None."""
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
        return node
    return None


def _walk(node: ast.AST, function: str | None = None, type_only: bool = False):
    """Yield (statement, top-level function around it or None, type_only) for every import below node."""
    for child in ast.iter_child_nodes(node):
        inside = function
        if function is None and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inside = getattr(child, "name", "<lambda>")
        if isinstance(child, ast.Import | ast.ImportFrom) or _import_module_call(child):
            yield child, function, type_only
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for part in child.body:
                yield from _walk(ast.Module(body=[part], type_ignores=[]), inside, True)
            for part in child.orelse:
                yield from _walk(ast.Module(body=[part], type_ignores=[]), inside, type_only)
            continue
        yield from _walk(child, inside, type_only)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _bound_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level (definitions, assignments, imports; in any branch)."""
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            continue
        for child in ast.walk(node):
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                names.add(child.id)
        for block in ("body", "orelse", "finalbody", "handlers"):
            pending.extend(getattr(node, block, []) if not isinstance(node, ast.expr) else [])
    return names


@dataclass(frozen=True)
class _Facade:
    """A package whose ``__init__`` serves names lazily through a module-level ``__getattr__`` (PEP 562)."""

    bound: frozenset[str]  # names the __init__ binds itself
    targets: tuple[str, ...]  # modules its __getattr__ imports (every module of the package if not literal)


def _facades(known: dict[str, Path], trees: dict[str, ast.Module]) -> dict[str, _Facade]:
    found = {}
    for module, tree in trees.items():
        if known[module].name != "__init__.py":
            continue
        getattr_def = next((node for node in tree.body if isinstance(node, ast.FunctionDef)
                            and node.name == "__getattr__"), None)
        if getattr_def is None:
            continue
        targets: list[str] = []
        for node, _, _ in _walk(ast.Module(body=getattr_def.body, type_ignores=[])):
            targets.extend(_targets(module, True, node, known) or [""])
        if "" in targets:  # import_module(a computed name): any module of the package
            targets = [name for name in known if name.startswith(module + ".")]
        found[module] = _Facade(frozenset(_bound_names(tree)), tuple(dict.fromkeys(targets)))
    return found


def _targets(module: str, is_package: bool, node: ast.AST, known: dict[str, Path]) -> list[str]:
    """The ``layerscope`` modules an import statement names ("" for ``import_module`` of a computed name)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(module, is_package, node)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    else:
        argument = node.args[0] if node.args else None
        if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
            return [""]
        names = [argument.value]
    found = []
    for name in names:
        if not (name == PACKAGE or name.startswith(PACKAGE + ".")):
            continue
        while name not in known:  # "layerscope.x.attr" -> the module that holds attr
            name = name.rsplit(".", 1)[0]
        found.append(name)
    return found


def imports(src: Path = SRC) -> list[Import]:
    """Every edge of the graph (see the module docstring for what counts)."""
    known = modules(src)
    trees = {module: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for module, path in known.items()}
    facades = _facades(known, trees)
    edges: list[Import] = []
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        shown = str(path.relative_to(src.parent))
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        if not is_package:
            own_packages.discard(module)
        for node, function, type_only in _walk(trees[module]):
            if is_package and function == "__getattr__" and module in facades:
                continue  # a lazy re-export: counted where a module imports the name (below)
            targets = [t for t in _targets(module, is_package, node, known) if t]
            if isinstance(node, ast.ImportFrom):  # names a package serves through its __getattr__
                base = _resolve(module, is_package, node)
                facade = facades.get(base)
                if facade and any(alias.name not in facade.bound and f"{base}.{alias.name}" not in known
                                  for alias in node.names):
                    targets += facade.targets
            reached: dict[str, bool] = {}  # module -> only as a package above a target (implicit)
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name not in own_packages and name != module:
                        reached[name] = reached.get(name, True) and i < len(parts)
            edges += [Import(module, name, shown, node.lineno, function is not None, type_only, implicit)
                      for name, implicit in reached.items()]
    return edges


def graph(edges: list[Import], *, runtime_only: bool = True) -> dict[str, dict[str, Import]]:
    """Adjacency: source -> target -> the first import that makes the edge."""
    adjacency: dict[str, dict[str, Import]] = {}
    for edge in edges:
        if runtime_only and edge.type_only:
            continue
        adjacency.setdefault(edge.source, {}).setdefault(edge.target, edge)
    return adjacency


def strongly_connected(adjacency: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The groups of modules that reach each other (Tarjan's algorithm), each group of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    nodes = sorted(set(adjacency) | {t for targets in adjacency.values() for t in targets})

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(adjacency.get(node, {})):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in nodes:
        if node not in index:
            visit(node)
    return sorted(groups)


def shortest_cycle(adjacency: dict[str, dict[str, Import]], group: list[str]) -> list[Import]:
    """One shortest cycle inside a strongly connected group, as the imports that make it."""
    members = set(group)
    best: list[Import] | None = None
    for start in group:
        # breadth-first search from start back to start, inside the group
        parents: dict[str, Import] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            following = []
            for node in frontier:
                for target, edge in sorted(adjacency.get(node, {}).items()):
                    if target not in members:
                        continue
                    if target == start:
                        found = edge
                        break
                    if target not in parents:
                        parents[target] = edge
                        following.append(target)
                if found:
                    break
            frontier = following
        if found is None:
            continue
        path = [found]
        while path[-1].source != start:
            path.append(parents[path[-1].source])
        path.reverse()
        if best is None or len(path) < len(best):
            best = path
    assert best is not None
    return best


def describe(cycle: list[Import]) -> str:
    """``a -> b (file:line) -> ...`` for a failure message or a report."""
    steps = [cycle[0].source]
    for edge in cycle:
        how = "lazy, " if edge.lazy else ""
        how += "package __init__ run by " if edge.implicit else ""
        steps.append(f"{edge.target}  [{how}{edge.where}]")
    return "\n    -> ".join(steps)
