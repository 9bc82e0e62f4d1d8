"""The paper's further experiments (SPEC section 7), each a library function, a CLI subcommand and plots.

===================== =================================================================== ===============================
name (CLI)            function                                                            what it shows
===================== =================================================================== ===============================
``checkpoints``       :func:`~layerscope.experiments.checkpoints.checkpoint_progression`   metrics per layer over training
``train-tiny``        :func:`~layerscope.experiments.train_tiny.train_tiny_progression`    trains a small GPT-NeoX, then
                                                                                          ``checkpoints`` on it (offline)
``sizes``             :func:`~layerscope.experiments.sizes.model_sizes`                    several models on depth %
``extreme-prompts``   :func:`~layerscope.experiments.extreme_prompts.extreme_prompts`      repetition, randomness, length
``compare-finetune``  :func:`~layerscope.experiments.finetune.compare_finetune`            base vs finetuned model
``sublayers``         :func:`~layerscope.experiments.sublayers.sublayers`                  after attention / MLP parts
``bimodality``        :func:`~layerscope.experiments.bimodality.bimodality`                per-prompt histograms per layer
``vision``            :func:`~layerscope.experiments.vision.vision`                        ViT metrics + linear probe
===================== =================================================================== ===============================

Every function returns an :class:`ExperimentResult` (tables, summary, PNG paths, store run ids) and,
given ``out``, writes ``<out>/results.duckdb`` and ``<out>/<experiment>_*.png``. :func:`run_cli` is
the glue of ``layerscope experiment <name> ...``: string options in, output directory out.

Each experiment is built on the skeleton of :mod:`layerscope.experiments.base` (common inputs as typed
configurations, store runs, plots), with :mod:`~layerscope.experiments.curves` and
:mod:`~layerscope.experiments.hooks` for per-layer curves and token hooks. A new experiment is a module
with its function, one :class:`Experiment` line in :data:`EXPERIMENTS`, and one line of small options in
the conformance test (``tests/test_experiments.py``), which then checks it like every other.

Modules are imported on first use, so ``import layerscope.experiments`` is cheap: the registry, the
common options and :meth:`Experiment.declared_options` (what ``layerscope experiment --help`` lists)
import neither torch nor the experiment modules.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from layerscope.errors import LayerscopeError, unknown

if TYPE_CHECKING:
    from layerscope.experiments.base import ExperimentResult

__all__ = ["COMMON_DEFAULTS", "COMMON_OPTIONS", "EXPERIMENTS", "Experiment", "ExperimentResult", "get", "names",
           "run_cli", "run_experiment"]

#: Parent of the default output directories of :func:`run_cli` (``runs/experiments/<name>``).
DEFAULT_OUT_ROOT = Path("runs") / "experiments"

#: Defaults of the options every experiment shares (:class:`~layerscope.experiments.base.CommonOptions`;
#: an experiment may declare its own defaults, see :func:`~layerscope.experiments.base.common_options`).
#: Here, not in :mod:`~layerscope.experiments.base`, so that the CLI's help lists them without torch.
COMMON_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "dataset": None, "limit": 64, "seed": 0, "max_length": 128, "batch_size": "auto", "out": None, "progress": True,
    "revision": None, "device": None, "dtype": None, "final_norm": "none",
})
#: Keyword options every experiment built on :class:`~layerscope.experiments.base.Setup` shares (the
#: CLI offers them once).
COMMON_OPTIONS = ("model", "texts", *COMMON_DEFAULTS)


def __getattr__(name: str) -> Any:
    if name == "ExperimentResult":  # the skeleton imports pandas and the model loaders: on first use
        from layerscope.experiments import base

        return base.ExperimentResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes
    ----------
    name : str
        CLI name (``extreme-prompts``).
    target : str
        ``"module:function"`` implementing it (imported on first use).
    description : str
        One line for ``--help``.
    paper : str
        Which part of the paper (SPEC section 7) it reproduces.
    """

    name: str
    target: str
    description: str
    paper: str

    @property
    def function(self) -> Callable[..., ExperimentResult]:
        """The experiment function."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    @property
    def key(self) -> str:
        """The name with underscores (``extreme_prompts``): store rows, PNG and folder names."""
        return self.name.replace("-", "_")

    def declared_options(self) -> list[str]:
        """Names of the parameters the experiment's function declares in its source, read with :mod:`ast`.

        The module is not imported (``layerscope experiment --help`` stays free of torch): the names
        are those of :meth:`options` but for the common options a ``common_options`` decorator adds
        (``**common`` and ``*args`` are left out). Falls back to :meth:`options` where the source cannot
        be read.
        """
        module, _, attribute = self.target.partition(":")
        spec = importlib.util.find_spec(module)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        if origin is None or origin.suffix != ".py" or not origin.is_file():
            return list(self.options())
        tree = ast.parse(origin.read_text(encoding="utf-8"), filename=str(origin))
        function = next((node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                         and node.name == attribute), None)
        if function is None:  # not a plain definition (assigned, re-exported): ask the function itself
            return list(self.options())
        arguments = function.args
        return [argument.arg for argument in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]

    def options(self) -> dict[str, Any]:
        """Keyword options of the function and their defaults (``inspect.Parameter.empty`` if required)."""
        parameters = inspect.signature(self.function).parameters
        return {name: parameter.default for name, parameter in parameters.items()
                if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)}


EXPERIMENTS: dict[str, Experiment] = {
    experiment.name: experiment
    for experiment in (
        Experiment("checkpoints", "layerscope.experiments.checkpoints:checkpoint_progression",
                   "one model at several training checkpoints: metrics per layer per checkpoint, valley depth",
                   "7.2 training progression"),
        Experiment("train-tiny", "layerscope.experiments.train_tiny:train_tiny_progression",
                   "train a small GPT-NeoX on bundled text for a few CPU minutes, then the checkpoint progression",
                   "7.2 training progression (offline)"),
        Experiment("sizes", "layerscope.experiments.sizes:model_sizes",
                   "several models (e.g. one family at several sizes): metrics per layer on depth %",
                   "7.3 model size"),
        Experiment("extreme-prompts", "layerscope.experiments.extreme_prompts:extreme_prompts",
                   "prompt entropy per layer under token repetition / randomness (p = 0 .. 1) and against length",
                   "7.4 extreme prompts"),
        Experiment("compare-finetune", "layerscope.experiments.finetune:compare_finetune",
                   "base vs finetuned model: prompt entropy per layer and prefix entropy per token position",
                   "7.5 chain-of-thought finetuning"),
        Experiment("sublayers", "layerscope.experiments.sublayers:sublayers",
                   "entropy and effective rank after attention, post-attention residual, MLP and block output",
                   "7.6 sub-layers"),
        Experiment("bimodality", "layerscope.experiments.bimodality:bimodality",
                   "per-prompt entropy histograms per layer and Sarle's bimodality coefficient",
                   "7.7 bimodality"),
        Experiment("vision", "layerscope.experiments.vision:vision",
                   "a vision transformer on labelled images: metrics per layer (crops as views) and a linear probe",
                   "7.8 vision"),
    )
}


def names() -> list[str]:
    """CLI names of the registered experiments."""
    return list(EXPERIMENTS)


def get(name: str) -> Experiment:
    """The experiment called ``name`` (``-`` and ``_`` are interchangeable); unknown names suggest the nearest."""
    key = str(name).strip().lower().replace("_", "-")
    if key in EXPERIMENTS:
        return EXPERIMENTS[key]
    raise unknown("experiment", str(name), EXPERIMENTS)


def _check_options(experiment: Experiment, options: dict[str, Any]) -> None:
    accepted = experiment.options()
    takes_any = any(parameter.kind == parameter.VAR_KEYWORD
                    for parameter in inspect.signature(experiment.function).parameters.values())
    if takes_any:  # train-tiny forwards the rest to train_tiny
        from layerscope.experiments.train_tiny import train_tiny

        accepted = {**accepted, **{key: value for key, value in inspect.signature(train_tiny).parameters.items()
                                   if key != "out"}}
    extra = sorted(set(options) - set(accepted))
    if extra:
        raise LayerscopeError(
            f"experiment '{experiment.name}' has no option(s) {', '.join(extra)}; options: {', '.join(sorted(accepted))}"
        )
    missing = [key for key, default in experiment.options().items()
               if default is inspect.Parameter.empty and key not in options]
    if missing:
        raise LayerscopeError(f"experiment '{experiment.name}' needs {', '.join('--' + m.replace('_', '-') for m in missing)}")


def run_experiment(name: str, **options: Any) -> ExperimentResult:
    """Run a registered experiment with keyword options (None values keep the function's defaults).

    Parameters
    ----------
    name : str
        See :func:`names`.
    **options
        Keyword options of the experiment's function; unknown ones raise a one-line error.

    Returns
    -------
    ExperimentResult
    """
    experiment = get(name)
    chosen = {key: value for key, value in options.items() if value is not None}
    _check_options(experiment, chosen)
    return experiment.function(**chosen)


def run_cli(name: str, **options: Any) -> Path:
    """Glue for ``layerscope experiment <name> ...``: run, write a summary, return the output directory.

    Options whose value is None are left at the function's defaults, so the CLI can pass every
    option it declares. Lists may be comma-separated strings (``revisions="step1,step512"``,
    ``probabilities="0,0.5,1"``). Without ``out`` the results go to ``runs/experiments/<name>``.
    Besides ``results.duckdb`` and the PNG files, ``<out>/<name>_summary.json`` holds the key
    numbers (what the CLI prints).

    Returns
    -------
    pathlib.Path
        The output directory.
    """
    from layerscope.store import atomic_write_json

    experiment = get(name)
    chosen = {key: value for key, value in options.items() if value is not None}
    chosen.setdefault("out", DEFAULT_OUT_ROOT / experiment.key)
    result = run_experiment(experiment.name, **chosen)
    out = Path(result.out if result.out is not None else chosen["out"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{experiment.key}_summary.json", {
        "experiment": experiment.name, "options": {key: str(value) for key, value in chosen.items()},
        "summary": result.summary, "plots": [str(path) for path in result.plots], "run_ids": result.run_ids,
        "tables": {table: list(frame.columns) for table, frame in result.tables.items()},
    })
    return out
