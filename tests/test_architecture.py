"""The shape of ``src/layerscope``: imports only point down, no module imports itself back, and every
module and function fits in a head (file and function sizes, the command line as a package).

Layers, bottom to top (a module may import modules of its own layer or below, never above)::

    9  cli                      the command line (a package, one module per command family): every
                                command a call into the library; nothing imports it
    8  sweep                    many runs (Ray or local): pipelines of units
    7  report, experiments,     what users run and read: the HTML report, the paper's experiments,
       pipeline                 analyze (extract -> measure -> evaluate -> store -> summarize)
    6  analysis                 summaries, correlations, label-free selection rules and their protocol
    5  store                    the results database and run folders
    4  metrics.compute,         what runs a model: the one measurement path (metrics.compute, views,
       metrics.views,           and budget: the views budget said and timed before the work),
       metrics.budget,          downstream evaluation through MTEB, export of a layer as a model
       evaluate, export
    3  extract                  hidden states -> pooled embeddings, cached; conditioning
    2  config                   typed configurations and the grammar of their options (--select-by)
    1  models, data, augment,   model loading and adapters; texts and labelled data; augmented views;
       metrics (the math:       the metrics as pure tensor functions, their streaming accumulators and
       functional, eigen,       the registry of metric specs
       accumulators, registry)
    0  layerscope (the package's front door), errors, atomic, integrity (checked files), hub, caches (where
       each kind of cached file goes)

Why this order (adjusted from issue 24's proposal):

- ``config`` sits above models, data and the metric registry, not right above errors: it checks metric
  and ``--select-by`` names against the metric registry when a configuration is made, and
  ``ModelConfig.load`` / ``TextConfig.rows`` call the loaders; nothing in models, data, augment or the
  metric math reads a configuration. What it must not do is reach into selection (``analysis``): the
  ``--select-by`` grammar lives in config, the rules that grammar names live in analysis.
- ``metrics`` spans two layers: the math (pure tensor functions, accumulators, the registry) is used
  by the extraction itself (conditioning), while ``metrics.compute`` and ``metrics.views`` drive the
  extraction to measure a model. The package's ``__init__`` belongs to the math; ``measure`` is served
  lazily through its ``__getattr__`` (see ``tests/import_graph.py`` for how such names are counted).
- ``augment`` (text, token and image views) imports nothing of the library but errors, so it sits with
  the inputs, below the measurement that uses it.
- ``store`` sits above the computations (they never write results themselves) and below analysis,
  which reads runs back (``analysis.rules.run_models``).
- Inside ``evaluate`` the task registry sits below the modules whose tasks register themselves
  (``offline``, ``hub_tasks``, ``task_files``); ``evaluate.catalog`` above them imports them and
  resolves names. That order is not a layer of this table: the cycle check keeps it.

What counts as an import (``tests/import_graph.py``): module-level and lazy (function-level) imports
alike, relative imports, ``importlib.import_module`` of a literal name, the package ``__init__`` an
import runs, and names served by a package's lazy ``__getattr__``. Imports under ``if TYPE_CHECKING:``
obey the layer rule but never run, so they are left out of the cycle check. There are no exemptions:
:data:`EXEMPTIONS` is empty and a new entry needs its reason written beside it.

Sizes (``tests/source_sizes.py`` counts them, as ``benchmarks/bench_architecture.py`` reports them): no
file over :data:`MAX_FILE_LINES` lines but those of :data:`LONG_FILES`; no function over
:data:`MAX_FUNCTION_LINES` lines of code, counted with :mod:`ast` from the first statement after the
docstring to the function's last line (signature, decorators and docstring left out; blank and comment
lines inside the body counted); the command line a package whose modules each stay under
:data:`MAX_CLI_MODULE_LINES` lines.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import import_graph
import source_sizes
from import_graph import Import

#: Bottom to top: (layer name, the modules and packages in it). A module belongs to the most specific
#: entry naming it or a package above it; ``layerscope`` names the root package's ``__init__`` only.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("layerscope", "layerscope.errors", "layerscope.atomic", "layerscope.integrity", "layerscope.hub",
                    "layerscope.caches")),
    ("inputs and metric math", ("layerscope.models", "layerscope.data", "layerscope.augment", "layerscope.metrics")),
    ("configuration", ("layerscope.config",)),
    ("extraction", ("layerscope.extract",)),
    ("measurement, evaluation, export", ("layerscope.metrics.compute", "layerscope.metrics.views",
                                         "layerscope.metrics.budget", "layerscope.evaluate", "layerscope.export")),
    ("store", ("layerscope.store",)),
    ("analysis", ("layerscope.analysis",)),
    ("report, experiments, pipeline", ("layerscope.report", "layerscope.experiments", "layerscope.pipeline")),
    ("sweep", ("layerscope.sweep",)),
    ("cli", ("layerscope.cli",)),
)

#: (importing module, imported module) -> why the upward import is needed. Keep it empty; an entry
#: must say why moving the code down or passing it in from above does not work.
EXEMPTIONS: dict[tuple[str, str], str] = {}


#: The size limits (see the module docstring for how lines are counted).
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 90
MAX_CLI_MODULE_LINES = 400
#: Files allowed over MAX_FILE_LINES, by name, and why.
LONG_FILES: dict[str, str] = {
    "layerscope/metrics/functional.py": "the metric math as pure tensor functions, one per formula of SPEC section "
                                        "4 with its docstring; split, it would scatter the formulas the tests check "
                                        "one by one",
}


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of a dotted module name (None: no entry covers it)."""
    best: tuple[int, int] | None = None
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            covers = module == name or (name != import_graph.PACKAGE and module.startswith(name + "."))
            if covers and (best is None or len(name) > best[1]):
                best = (index, len(name))
    return None if best is None else best[0]


def _how(edge: Import) -> str:
    kinds = [kind for kind, present in (("lazy", edge.lazy), ("TYPE_CHECKING only", edge.type_only),
                                        ("its package __init__", edge.implicit)) if present]
    return f" ({', '.join(kinds)})" if kinds else ""


def upward_imports(edges: list[Import]) -> list[str]:
    """One line per import that points up the layers (not exempted), naming file:line and both layers."""
    found = []
    for edge in edges:
        source, target = layer_of(edge.source), layer_of(edge.target)
        if source is None or target is None or target <= source or (edge.source, edge.target) in EXEMPTIONS:
            continue
        found.append(f"{edge.where}: {edge.source} (layer {source}, {LAYERS[source][0]}) imports {edge.target} "
                     f"(layer {target}, {LAYERS[target][0]}){_how(edge)}")
    return sorted(set(found))


def import_cycles(edges: list[Import]) -> list[str]:
    """One paragraph per group of modules that import each other, with a shortest cycle through it."""
    adjacency = import_graph.graph(edges)
    return [f"{len(group)} modules import each other ({', '.join(group)}); a shortest cycle:\n    "
            + import_graph.describe(import_graph.shortest_cycle(adjacency, group))
            for group in import_graph.strongly_connected(adjacency)]


HOW_TO_FIX = ("An import may only point down the layers of tests/test_architecture.py (LAYERS, with the reasons "
              "in its docstring). Move what the lower module needs down to its layer, or have the higher layer "
              "pass it in or register it; lazy (function-level) imports count too.")


def test_every_module_has_a_layer_and_every_layer_entry_exists() -> None:
    modules = import_graph.modules()
    assert [module for module in modules if layer_of(module) is None] == []
    named = [name for _, names in LAYERS for name in names]
    assert [name for name in named if name not in modules] == []
    assert len(named) == len(set(named))


def test_no_import_points_up_the_layers() -> None:
    upward = upward_imports(import_graph.imports())
    assert not upward, "\n".join([f"{len(upward)} import(s) point up the layers:", *upward, HOW_TO_FIX])


def test_no_import_cycles() -> None:
    cycles = import_cycles(import_graph.imports())
    assert not cycles, "\n".join(["import cycles in src/layerscope:", *cycles,
                                  "Break each: the lower module must not import the higher one, lazily or not."])


def test_the_exemptions_are_still_needed() -> None:
    edges = {(edge.source, edge.target) for edge in import_graph.imports()}
    assert [pair for pair in EXEMPTIONS if pair not in edges] == []


def test_the_cli_is_the_top_layer() -> None:
    assert LAYERS[-1] == ("cli", ("layerscope.cli",))
    importers = sorted({edge.where for edge in import_graph.imports()
                        if layer_of(edge.target) == len(LAYERS) - 1 and layer_of(edge.source) != len(LAYERS) - 1})
    assert importers == []


def test_no_file_is_too_long() -> None:
    files, _ = source_sizes.files_and_functions()
    long = [f"{item.name}: {item.lines} lines" for item in files
            if item.lines > MAX_FILE_LINES and item.name not in LONG_FILES]
    assert not long, f"files over {MAX_FILE_LINES} lines (split them by what they do): {long}"
    assert [name for name in LONG_FILES if name not in {item.name for item in files}] == []


def test_no_function_is_too_long() -> None:
    _, functions = source_sizes.files_and_functions()
    long = [f"{item.name}: {item.lines} lines" for item in functions if item.lines > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines of code (give their steps names): {long}"


def test_the_cli_is_a_package_of_command_modules() -> None:
    package = import_graph.SRC / "layerscope" / "cli"
    assert (package / "__init__.py").is_file() and not (package.parent / "cli.py").exists()
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in package.glob("*.py")}
    assert {"__init__.py", "__main__.py", "options.py", "output.py"} <= set(sizes)
    assert len(sizes) >= 8, sorted(sizes)  # the command families have modules of their own
    assert {name: lines for name, lines in sizes.items() if lines > MAX_CLI_MODULE_LINES} == {}


# ------------------------------------------------------------------------------------------ the checker itself


def _tree(root: Path, files: dict[str, str]) -> Path:
    """A source tree under ``root/src`` from {relative path: text}; returns the src folder."""
    src = root / "src"
    for relative, text in files.items():
        path = src / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return src


def test_a_planted_upward_import_and_cycle_are_caught(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(import_graph.SRC / "layerscope", src / "layerscope")
    config = src / "layerscope" / "config.py"
    text = config.read_text(encoding="utf-8")
    config.write_text(text + "\n\ndef _planted():\n    from layerscope.analysis.choice import parse_rule\n\n"
                      "    return parse_rule\n", encoding="utf-8")
    line = len(text.splitlines()) + 4
    upward = upward_imports(import_graph.imports(src))
    assert f"src/layerscope/config.py:{line}: layerscope.config (layer 2, configuration) imports layerscope.analysis " \
           "(layer 6, analysis) (lazy, its package __init__)" in upward
    assert f"src/layerscope/config.py:{line}: layerscope.config (layer 2, configuration) imports " \
           "layerscope.analysis.choice (layer 6, analysis) (lazy)" in upward
    assert all(":" + str(line) + ":" in entry for entry in upward)  # nothing else points up
    cycles = import_cycles(import_graph.imports(src))
    assert len(cycles) == 1 and "layerscope.config" in cycles[0]
    assert f"layerscope.analysis.choice  [lazy, src/layerscope/config.py:{line}]" in cycles[0]


def test_the_graph_reads_every_kind_of_import(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "layerscope/__init__.py": "",
        "layerscope/low.py": "import layerscope.pkg.deep\n",
        "layerscope/pkg/__init__.py": (
            "from layerscope.pkg.deep import A\n\n"
            "def __getattr__(name):\n    from layerscope.pkg import high\n\n    return getattr(high, name)\n"),
        "layerscope/pkg/deep.py": "A = 1\n",
        "layerscope/pkg/high.py": (
            "from typing import TYPE_CHECKING\n\nfrom . import deep\nfrom .deep import A\n\n"
            "if TYPE_CHECKING:\n    from layerscope import top\n\n"
            "def later():\n    import importlib\n\n    return importlib.import_module('layerscope.top')\n"),
        "layerscope/top.py": "from layerscope.pkg import A, lazy_name\n",
    })
    edges = {(e.source, e.target, e.lazy, e.type_only, e.implicit, e.line) for e in import_graph.imports(src)}
    assert edges == {
        ("layerscope.low", "layerscope.pkg", False, False, True, 1),  # the package __init__ it runs
        ("layerscope.low", "layerscope.pkg.deep", False, False, False, 1),
        ("layerscope.pkg", "layerscope.pkg.deep", False, False, False, 1),  # __getattr__'s import: not here
        ("layerscope.pkg.high", "layerscope.pkg.deep", False, False, False, 3),  # relative imports resolved
        ("layerscope.pkg.high", "layerscope.pkg.deep", False, False, False, 4),
        ("layerscope.pkg.high", "layerscope.top", False, True, False, 7),  # TYPE_CHECKING
        ("layerscope.pkg.high", "layerscope.top", True, False, False, 12),  # import_module, lazy
        ("layerscope.top", "layerscope.pkg", False, False, False, 1),
        ("layerscope.top", "layerscope.pkg.high", False, False, False, 1),  # lazy_name: via __getattr__
    }
    # top -> pkg.high -> top: a cycle through a lazy import; the TYPE_CHECKING import alone would not be one
    cycles = import_cycles(import_graph.imports(src))
    assert len(cycles) == 1 and "layerscope.pkg.high, layerscope.top" in cycles[0]
    assert "[lazy, src/layerscope/pkg/high.py:12]" in cycles[0]


@pytest.mark.parametrize(("module", "layer"), [
    ("layerscope", 0), ("layerscope.errors", 0), ("layerscope.metrics", 1), ("layerscope.metrics.functional", 1),
    ("layerscope.metrics.compute", 4), ("layerscope.evaluate.registry", 4), ("layerscope.cli", 9),
    ("layerscope.unknown", None),
])
def test_layer_of_takes_the_most_specific_entry(module: str, layer: int | None) -> None:
    assert layer_of(module) == layer


def test_the_size_counts(tmp_path: Path) -> None:
    # 91 lines of code: the first statement, a comment and a blank line, 87 statements, the return; the
    # signature (two lines), the docstring (four) and the comment above the first statement do not count
    statements = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 3))
    long = ('def long(a,\n         b):\n    """Doc.\n\n    More.\n    """\n    # not counted: before the first '
            f"statement\n    first = 0\n    # counted: inside the body\n\n{statements}    return a\n")
    src = _tree(tmp_path, {
        "layerscope/__init__.py": "",
        "layerscope/big.py": long + "\n\ndef short():\n    return 1\n",
        "layerscope/tall.py": "x = 1\n" * (MAX_FILE_LINES + 1),
    })
    files, functions = source_sizes.files_and_functions(src)
    assert [(item.name, item.lines) for item in files] == [
        ("layerscope/tall.py", MAX_FILE_LINES + 1), ("layerscope/big.py", 7 + MAX_FUNCTION_LINES + 1 + 4),
        ("layerscope/__init__.py", 0)]
    assert [(item.name, item.lines) for item in functions] == [
        ("layerscope/big.py:long", MAX_FUNCTION_LINES + 1), ("layerscope/big.py:short", 1)]
