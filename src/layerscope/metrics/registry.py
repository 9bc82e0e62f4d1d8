"""The registry of representation-quality metrics: the one place that knows a metric.

A :class:`MetricSpec` holds everything the other stages need: the pure function of
:mod:`layerscope.metrics.functional` that computes it, what it reads (each prompt's token states,
pooled embeddings, two views or ``n_views`` views), the values it reports and which leads, its
names for people (plots and reports, terminal tables), the direction label-free selection follows,
its default options, and its streaming accumulator if it is a token metric. ``compute_metrics``,
``analyze``, the CLI table, the plots, the report and the selection rules all read the registry, so
a new metric is one function in ``functional.py``, one :func:`register` call here (or in user code)
and its reference test.

``higher_is_better`` is the direction used for label-free layer selection (SPEC sections 4 and 6):
the selected layer maximizes the metric when True and minimizes it when False. For prompt entropy,
dataset entropy, DiME and InfoNCE the SPEC fixes "lower is better" (select the minimum), which is the
rule of the paper's Table 2. What the paper found with it (average over 32 MTEB tasks, x 100):
Pythia-410M - best layer 52.0, last layer 45.5, min-DiME 48.5, min-InfoNCE 46.2, min-dataset-entropy
48.1, i.e. all three label-free choices beat the last layer; LLM2Vec-8B - best 66.3, last 63.9,
min-DiME 60.0, min-InfoNCE 64.3, min-dataset-entropy 50.4, i.e. only InfoNCE beat the last layer.
Ranks derived from the dataset entropy (``effective_rank``, ``entropy_rank``) follow the
dataset-entropy direction; curvature is lower-is-better (the "straightening" of Hosseini &
Fedorenko); LiDAR and RankMe keep the direction of their own papers (higher = better), the opposite
hypothesis, reported as such (on the authors' pythia-410m results the *minimum* of LiDAR selects
better layers than the maximum).

What our own runs find (``make demo``: bundled SmolLM2-135M-Instruct, offline suite of 11 tasks):
no label-free rule beats the last layer there; SmolLM2's entropy minimum (layers 12-21) is a collapse
onto one massive-activation token, and those are among its worst layers. On the task-averaged curve
the entropies correlate *positively* with the score and the invariance losses negatively, i.e.
InfoNCE and DiME point the paper's way and the entropies the other way. The directions are kept as
the paper's; ``analyze`` reports every rule beside the baselines.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import Tensor

from layerscope.errors import LayerscopeError, unknown
from layerscope.metrics import functional as F
from layerscope.metrics.accumulators import (
    CurvatureAccumulator,
    PerPromptAccumulator,
    PromptEntropyAccumulator,
)

__all__ = ["DIME_BLOCK", "INPUT_KINDS", "LIDAR_BLOCK", "MetricSpec", "available", "find", "get", "metric_label", "names", "order_metrics", "register", "resolve",
           "unregister"]

Inputs = Literal["tokens", "pooled", "pair", "views"]
#: What a metric reads, and the augmented views per prompt that needs.
INPUT_KINDS: dict[str, int] = {"tokens": 0, "pooled": 0, "pair": 2, "views": 16}
_ENTROPY_NORMALIZATIONS = ("maxEntropy", "raw", "logN", "logD", "logNlogD")


@dataclass(frozen=True)
class MetricSpec:
    """Declarative description of one metric.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"dime"``.
    function : Callable
        The :mod:`layerscope.metrics.functional` function computing it on a stack of layers, called
        as ``function(*inputs, **options)`` (``normalization="raw"`` added where it takes one). Token
        metrics return one value per prompt ``(..., prompts)``, the others one per leading index.
    inputs : {"tokens", "pooled", "pair", "views"}
        ``tokens``: each prompt's token states, inputs ``(tokens (..., prompts, tokens, d),
        lengths (prompts,))``; ``pooled``: ``(..., n, d)``; ``pair``: two views ``(view_a (..., n, d),
        view_b (..., n, d))``; ``views``: ``(views (..., n, J, d),)``.
    higher_is_better : bool
        Direction for label-free layer selection (see the module docstring).
    display : str
        Name for plots and reports ("Prompt entropy").
    short : str
        Column header of the terminal tables ("prompt H").
    description : str
        One line for tables and ``--help``.
    defaults : Mapping[str, Any]
        Default options (those of ``function``, plus ``normalizations`` for entropies).
    outputs : Mapping[str, str]
        Reported label -> attribute of the function's result ("" = the result itself).
    entropy : bool
        Whether output ``raw`` is an entropy: it is then reported in each of the ``normalizations``
        option's normalizations (``n`` = rows, or each prompt's tokens; ``d`` = features), the first
        leading.
    random : bool
        Whether the value depends on a seed (beyond the views' own seed).
    accumulator : type, optional
        Streaming twin of a token metric (default :class:`~layerscope.metrics.accumulators.PerPromptAccumulator`).
    """

    name: str
    function: Callable[..., Any]
    inputs: Inputs
    higher_is_better: bool
    display: str
    short: str
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=lambda: {"raw": ""})
    entropy: bool = False
    random: bool = False
    accumulator: type | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.inputs not in INPUT_KINDS:
            raise unknown("metric input kind", self.inputs, INPUT_KINDS)
        if self.entropy and "raw" not in self.outputs:
            raise LayerscopeError(f"metric '{self.name}': an entropy metric needs a 'raw' output")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "outputs", MappingProxyType(dict(self.outputs)))

    # -- derived facts ---------------------------------------------------------------------------

    @property
    def level(self) -> str:
        """``token`` (computed inside the extraction loop) or ``dataset`` (on pooled embeddings)."""
        return "token" if self.inputs == "tokens" else "dataset"

    @property
    def n_views(self) -> int:
        """Augmented views per prompt it needs: 0, 2 or 16 (LiDAR's ``J``, overridable per run)."""
        return INPUT_KINDS[self.inputs]

    @property
    def normalizations(self) -> tuple[str, ...]:
        """Labels of the values :meth:`compute` returns by default; the first is the main one."""
        return self._labels(self.defaults.get("normalizations", ()))

    @property
    def main(self) -> str:
        """The value selection, plots and tables use (``maxEntropy`` for entropies, else ``raw``)."""
        return self.normalizations[0]

    def _labels(self, normalizations: Iterable[str]) -> tuple[str, ...]:
        extra = tuple(label for label in self.outputs if not (self.entropy and label == "raw"))
        return (tuple(normalizations) if self.entropy else ()) + extra

    # -- computing -------------------------------------------------------------------------------

    def resolve_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults overridden by ``options``; unknown options raise a one-line error."""
        options = dict(options or {})
        extra = set(options) - set(self.defaults)
        if extra:
            raise LayerscopeError(
                f"unknown option(s) {', '.join(sorted(extra))} for metric '{self.name}'; "
                f"options: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        return {**self.defaults, **options}

    def call(self, *inputs: Tensor, **options: Any) -> dict[str, Tensor]:
        """The function's values by output label, before normalization (token metrics: per prompt).

        ``options`` are already resolved (see :meth:`resolve_options`).
        """
        arguments = {key: value for key, value in options.items() if key != "normalizations"}
        if "normalization" in _parameters(self.function):
            arguments["normalization"] = "raw"
        result = self.function(*inputs, **arguments)
        return {label: result if not attribute else getattr(result, attribute)
                for label, attribute in self.outputs.items()}

    def normalize(self, values: Mapping[str, Tensor], normalizations: Iterable[str], n: int | Tensor,
                  d: int) -> dict[str, Tensor]:
        """Reported values from :meth:`call`'s: an entropy's ``raw`` in each normalization, the rest as they are."""
        out: dict[str, Tensor] = {}
        for label in self._labels(normalizations):
            if self.entropy and (label == "raw" or label not in self.outputs):
                out[label] = F.normalize_entropy(values["raw"], label, n, d)
            else:
                out[label] = values[label]
        return out

    def compute(self, *inputs: Tensor, **options: Any) -> dict[str, Tensor]:
        """Compute the metric on a stack of layers.

        Parameters
        ----------
        *inputs : Tensor
            As described by ``inputs``.
        **options
            Override :attr:`defaults`; unknown options raise.

        Returns
        -------
        dict of str to Tensor
            One float64 tensor of shape (...,) (e.g. ``(layers,)``) per label (token metrics: means
            over the prompts they are defined for).
        """
        chosen = self.resolve_options(options)
        values = self.call(*inputs, **chosen)
        first = inputs[0]
        if self.inputs == "tokens":
            lengths = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
            n: int | Tensor = (torch.full(first.shape[-3:-2], first.shape[-2]) if lengths is None
                               else torch.as_tensor(lengths))
            normalized = self.normalize(values, chosen.get("normalizations", ()), n, first.shape[-1])
            return {label: F.summarize_prompts(value).mean for label, value in normalized.items()}
        n = first.shape[-3] if self.inputs == "views" else first.shape[-2]
        return self.normalize(values, chosen.get("normalizations", ()), int(n), int(first.shape[-1]))

    def make_accumulator(self, n_texts: int, **options: Any) -> Any:
        """The streaming accumulator of a token metric over ``n_texts`` prompts (options resolved here)."""
        if self.level != "token":
            raise LayerscopeError(f"metric '{self.name}' is not a token metric: it has no accumulator")
        chosen = self.resolve_options(options)
        if self.accumulator is not None:
            return self.accumulator(n_texts, **chosen)
        return PerPromptAccumulator(n_texts, self, chosen)


def _parameters(function: Callable[..., Any]) -> Mapping[str, Any]:
    return inspect.signature(function).parameters


#: DiME's block of texts (its size-free form, :func:`~layerscope.metrics.functional.dime`'s ``block_size``):
#: the profile at 512 texts ranks layers as on 2,048 at rho 0.98-0.99, against 0.92-0.98 for DiME on
#: all the texts at once (``benchmarks/bench_dime_size.py``); ``{"dime": {"block_size": None}}``
#: gives the whole-sample form (the authors').
DIME_BLOCK = 256
#: LiDAR's block of texts (its size-free form, the same idea): the default's 128 texts are one block, and
#: a larger sample averages blocks of 128 rather than ranking layers differently (``bench_views.py``).
LIDAR_BLOCK = 128


def _entropy_options(**extra: Any) -> dict[str, Any]:
    return {"alpha": 1.0, "normalizations": _ENTROPY_NORMALIZATIONS, "tol": F.DEFAULT_TOL, **extra}


_REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec, *, replace: bool = False) -> MetricSpec:
    """Add a metric to the registry (after the others); it then reaches every stage.

    Parameters
    ----------
    spec : MetricSpec
    replace : bool, default False
        Allow replacing a registered metric of the same name.
    """
    if spec.name in _REGISTRY and not replace:
        raise LayerscopeError(f"a metric named '{spec.name}' is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a metric from the registry (no error when absent)."""
    _REGISTRY.pop(name, None)


for _spec in (
    MetricSpec(
        "prompt_entropy", F.prompt_entropy_values, "tokens", False, "Prompt entropy", "prompt H",
        "matrix entropy of each prompt's normalized tokens, mean over prompts (compression within a prompt)",
        _entropy_options(clamp_gram=False), entropy=True, accumulator=PromptEntropyAccumulator,
    ),
    MetricSpec(
        "curvature", F.curvature_values, "tokens", False, "Curvature", "curv",
        "mean turning angle (radians) between consecutive token steps, mean over prompts",
        {"abs_cos": False}, accumulator=CurvatureAccumulator,
    ),
    MetricSpec(
        "dataset_entropy", F.dataset_entropy, "pooled", False, "Dataset entropy", "dataset H",
        "matrix entropy of the normalized pooled embeddings (diversity across prompts)",
        _entropy_options(clamp_gram=False), entropy=True,
    ),
    MetricSpec(
        "effective_rank", F.effective_rank, "pooled", False, "Effective rank", "eff rank",
        "Roy-Vetterli effective rank of the normalized pooled embeddings",
        {"normalize_rows": True, "tol": F.DEFAULT_TOL},
    ),
    MetricSpec(
        "entropy_rank", F.entropy_rank, "pooled", False, "Entropy rank exp(S\u2081)", "exp(H)",
        "exp of the Shannon dataset entropy (a soft rank, <= effective rank)",
        {"normalize_rows": True, "tol": F.DEFAULT_TOL},
    ),
    MetricSpec(
        "rankme", F.effective_rank, "pooled", True, "RankMe", "RankMe",
        "RankMe (Garrido et al.): effective rank of the raw pooled embeddings, higher = better per its paper",
        {"normalize_rows": False, "tol": F.DEFAULT_TOL},
    ),
    MetricSpec(
        "infonce", F.infonce, "pair", False, "InfoNCE", "InfoNCE",
        "InfoNCE loss between two augmented views (raw), its MI bound log N - L and 1 - L / log N",
        {"tau": 0.1, "variant": "infonce"}, outputs={"raw": "loss", "bound": "bound", "normalized": "normalized"},
    ),
    MetricSpec(
        "lidar", F.lidar, "views", True, "LiDAR", "LiDAR",
        "LiDAR: entropy of the LDA matrix over 16 views per prompt (and exp of it), higher = better per its paper; "
        f"averaged over blocks of {LIDAR_BLOCK} texts from {2 * LIDAR_BLOCK} texts on",
        _entropy_options(delta=1e-4, block_size=LIDAR_BLOCK, seed=0), outputs={"raw": "entropy", "exp": "lidar"},
        entropy=True,
    ),
    MetricSpec(
        "dime", F.dime, "pair", False, "DiME", "DiME",
        "DiME: entropy gain of unpairing two augmented views (10 seeded permutations), averaged over blocks of "
        f"{DIME_BLOCK} texts from {2 * DIME_BLOCK} texts on",
        _entropy_options(n_permutations=10, seed=0, legacy_covariance=False, block_size=DIME_BLOCK), entropy=True,
        random=True,
    ),
):
    register(_spec)
del _spec


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def names() -> list[str]:
    """Names of the registered metrics, in registry order."""
    return list(_REGISTRY)


def available() -> list[MetricSpec]:
    """Every registered metric, in registry order (token-level first)."""
    return list(_REGISTRY.values())


def get(name: str) -> MetricSpec:
    """The metric called ``name`` (case and ``-``/``_`` insensitive); unknown names suggest the nearest."""
    spec = _REGISTRY.get(_key(name))
    if spec is None:
        raise unknown("metric", name, _REGISTRY)
    return spec


def find(name: str) -> MetricSpec | None:
    """The registered metric called ``name``, or None (no error)."""
    return _REGISTRY.get(_key(name)) if isinstance(name, str) else None


def metric_label(metric: str, normalization: str | None = None) -> str:
    """How people read a metric's name: its display name, e.g. ``"DiME (maxEntropy)"`` with a normalization."""
    spec = find(metric)
    name = spec.display if spec is not None else metric.replace("_", " ").capitalize()
    return f"{name} ({normalization})" if normalization and normalization not in ("raw", "none") else name


def order_metrics(metrics: Iterable[str]) -> list[str]:
    """Metric names in registry order, unknown ones after them alphabetically."""
    rank = {name: index for index, name in enumerate(_REGISTRY)}
    return sorted(dict.fromkeys(metrics), key=lambda name: (rank.get(name, len(rank)), name))


def resolve(metrics: str | Iterable[str] = "all") -> list[MetricSpec]:
    """Turn a user's metric selection into specs.

    Parameters
    ----------
    metrics : "all", a name, a comma-separated string, or an iterable of names
        Duplicates are dropped; the order given is kept (``"all"``: registry order).

    Returns
    -------
    list of MetricSpec
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    requested = [part.strip() for item in metrics for part in str(item).split(",") if part.strip()]
    if not requested:
        raise LayerscopeError("no metric selected; available: " + ", ".join(names()))
    if any(_key(name) == "all" for name in requested):
        return available()
    out: list[MetricSpec] = []
    for name in requested:
        spec = get(name)
        if all(spec.name != chosen.name for chosen in out):
            out.append(spec)
    return out
