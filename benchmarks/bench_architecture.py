"""Benchmark: the shape of the source tree (issue 24): import cycles, the largest files and functions,
the repeated blocks, and the import time of ``import layerscope`` and of the CLI's ``--help``.

- **Cycles**: the import graph of ``src/layerscope`` read with :mod:`ast` (``tests/import_graph.py``:
  module-level and lazy imports both count; an import of ``a.b.c`` also runs the ``__init__`` of the
  packages above it). Printed as groups of modules that import each other (strongly connected
  components), once over the import statements alone and once with the package ``__init__`` they run.
- **Sizes**: lines of each file; lines of each function's body after its docstring (blank lines and
  comments inside included), the measure of the project's 90-line limit (``tests/source_sizes.py``,
  which ``tests/test_architecture.py`` checks the limits with).
- **Repeated blocks**: the pairs of places in ``src`` that share six or more lines (the same lines, or
  the same shape with other names), as the ``duplicates`` tool counts them where it is installed
  (``duplicates --repo SRC --most 200``); elsewhere the command to run is printed.
- **Heavy imports**: which of torch, transformers, mteb, ray and sentence-transformers ``layerscope
  --help`` imports (none, since the CLI became a package that imports the library where it runs).
- **Import time**: the median over ``--runs`` fresh interpreters of the wall time of
  ``python -c "import layerscope"`` and of ``layerscope --help`` (the console script's call), and of the cumulative
  time ``python -X importtime`` reports for the ``layerscope`` and ``layerscope.cli`` modules.

Run: ``.venv/bin/python benchmarks/bench_architecture.py [--src src] [--runs 11]``. ``--src`` measures
another checkout's ``src`` folder (e.g. one exported with ``git archive``), so two trees can be
compared on the same machine in one sitting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import import_graph  # noqa: E402
import source_sizes  # noqa: E402


def cycles(src: Path) -> None:
    edges = import_graph.imports(src)
    for title, chosen in (("import statements (module-level and lazy)", [e for e in edges if not e.implicit]),
                          ("with the package __init__ each import runs", edges)):
        adjacency = import_graph.graph(chosen)
        groups = import_graph.strongly_connected(adjacency)
        print(f"cycles, {title}: {len(groups)} group(s) of modules importing each other "
              f"{[len(group) for group in groups]}")
        for group in groups:
            print("  shortest cycle of", len(group), "modules:\n    " +
                  import_graph.describe(import_graph.shortest_cycle(adjacency, group)))


def sizes(src: Path, top: int) -> None:
    files, functions = source_sizes.files_and_functions(src)
    print(f"files: {len(files)}, {sum(item.lines for item in files)} lines; over 800 lines: "
          f"{sum(item.lines > 800 for item in files)}; largest:")
    for item in files[:top]:
        print(f"  {item.lines:5d}  {item.name}")
    print(f"functions: {len(functions)}; over 90 lines of code: {sum(item.lines > 90 for item in functions)}; "
          "largest:")
    for item in functions[:top]:
        print(f"  {item.lines:5d}  {item.name}")


def duplicates(src: Path) -> None:
    command = ["duplicates", "--repo", str(src), "--most", "200", "--seconds", "120"]
    if shutil.which("duplicates") is None:
        print("repeated blocks: the duplicates tool is not installed here; where it is, run:", " ".join(command))
        return
    # it lists the files git tracks (and the untracked ones it does not ignore) below --repo
    lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
    print("repeated blocks (" + " ".join(command[:-2]) + "): " + (lines[0] if lines else "no output"))
    for line in lines[1:]:
        print("  " + line)


#: What the ``layerscope`` console script runs for ``layerscope --help``.
HELP = "import sys; sys.argv = ['layerscope', '--help']; from layerscope.cli import main; main()"


def _importtime(stderr: str, module: str) -> float:
    """Cumulative microseconds ``-X importtime`` reports for ``module``."""
    for line in stderr.splitlines():
        parts = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return float(parts[1])
    raise SystemExit(f"-X importtime reported no '{module}'")


#: The modules no ``--help`` may import.
HEAVY = ("torch", "transformers", "mteb", "ray", "sentence_transformers")


def _environment(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def heavy_imports(src: Path) -> None:
    script = (f"import sys\nsys.argv = ['layerscope', '--help']\nfrom layerscope.cli import main\n"
              f"try:\n    main()\nexcept SystemExit:\n    pass\n"
              f"print(sorted(name for name in {HEAVY!r} if name in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script], env=_environment(src), capture_output=True, text=True,
                          check=True)
    print(f"heavy modules imported by layerscope --help: {done.stderr.strip().splitlines()[-1]}")


def import_times(src: Path, runs: int) -> None:
    env = _environment(src)
    for label, args, module in (("import layerscope", ["-c", "import layerscope"], "layerscope"),
                                ("layerscope --help", ["-c", HELP], "layerscope.cli")):
        walls, cumulative = [], []
        for _ in range(runs + 1):  # the first round warms the file cache and is not counted
            started = time.perf_counter()
            subprocess.run([sys.executable, *args], env=env, capture_output=True, check=True)
            walls.append(time.perf_counter() - started)
            done = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, capture_output=True,
                                  text=True, check=True)
            cumulative.append(_importtime(done.stderr, module) / 1e3)
        print(f"{label}: wall {1e3 * statistics.median(walls[1:]):.0f} ms, -X importtime cumulative for "
              f"{module} {statistics.median(cumulative[1:]):.0f} ms (medians of {runs} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=import_graph.SRC, help="the src folder to measure")
    parser.add_argument("--runs", type=int, default=11, help="fresh interpreters per import time")
    parser.add_argument("--top", type=int, default=6, help="largest files and functions shown")
    args = parser.parse_args()
    src = args.src.resolve()
    cycles(src)
    sizes(src, args.top)
    duplicates(src)
    heavy_imports(src)
    import_times(src, args.runs)


if __name__ == "__main__":
    main()
