"""Registry of the representation-quality metrics: what each needs, and which way is better.

``higher_is_better`` is the direction used for label-free layer selection (SPEC sections 4 and 6):
the selected layer maximizes the metric when True and minimizes it when False. For prompt entropy,
dataset entropy, DiME and InfoNCE the SPEC fixes "lower is better" (select the minimum), which is the
rule of the paper's Table 2. What the paper found with it (average over 32 MTEB tasks, x 100):
Pythia-410M - best layer 52.0, last layer 45.5, min-DiME 48.5, min-InfoNCE 46.2, min-dataset-entropy
48.1, i.e. all three label-free choices beat the last layer; LLM2Vec-8B - best 66.3, last 63.9,
min-DiME 60.0, min-InfoNCE 64.3, min-dataset-entropy 50.4, i.e. only InfoNCE beat the last layer.
The paper also reports the mid-depth valley of prompt entropy in autoregressive models (compression
in intermediate layers) coinciding with their best layers. Ranks derived from the dataset entropy
(``effective_rank``, ``entropy_rank``) follow the dataset-entropy direction; LiDAR and RankMe keep
the direction of their own papers (higher = better representation), which is the opposite hypothesis
and is reported as such.

What our own runs find (``make demo``: bundled SmolLM2-135M-Instruct, offline suite of 11 tasks,
average x 100): best layer 29 (63.8), last layer 30 (60.7); per task, min-InfoNCE 58.9, min-curvature
54.4, min-DiME 48.3, max-LiDAR 47.3, min-dataset-entropy 45.6; the fixed 50% and 70% depths 46.6.
No label-free rule beats the last layer there: SmolLM2's entropy minimum (layers 12-21) is a
collapse onto one massive-activation token, and those are among its worst layers. On the
task-averaged curve the entropies correlate *positively* with the score (Spearman: dataset entropy
+0.48, prompt entropy +0.49) and the invariance losses negatively (InfoNCE -0.63, DiME -0.55), i.e.
InfoNCE and DiME point the paper's way and the entropies the other way. The directions are kept as
the paper's; ``analyze`` reports every rule beside the baselines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import Tensor

from layerscope.errors import LayerscopeError, unknown
from layerscope.metrics import functional as F

__all__ = ["MetricSpec", "available", "get", "names", "resolve"]

Level = Literal["token", "dataset"]


@dataclass(frozen=True)
class MetricSpec:
    """Declarative description of one metric.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"dime"``.
    level : {"token", "dataset"}
        ``token``: computed on each prompt's token matrix inside the extraction loop (inputs
        ``(tokens (..., prompts, tokens, d), lengths (prompts,))``); ``dataset``: on pooled
        embeddings (``(..., n, d)``, or views, see ``n_views``).
    n_views : {0, 2, 16}
        Augmented views per prompt it needs: 0 = the texts themselves; 2 = inputs
        ``(view_a (..., n, d), view_b (..., n, d))``; 16 = input ``views (..., n, 16, d)``.
    higher_is_better : bool
        Direction for label-free layer selection (see the module docstring).
    random : bool
        Whether the value depends on a seed (beyond the views' own seed).
    defaults : Mapping[str, Any]
        Default keyword options of :meth:`compute`.
    description : str
        One line for tables and ``--help``.
    function : Callable
        The :mod:`layerscope.metrics.functional` function implementing it.
    normalizations : tuple of str
        Labels of the values :meth:`compute` returns; the first is the one used for selection.
    """

    name: str
    level: Level
    n_views: int
    higher_is_better: bool
    random: bool
    defaults: Mapping[str, Any]
    description: str
    function: Callable[..., Any]
    normalizations: tuple[str, ...]
    table: Callable[..., dict[str, Tensor]] = field(repr=False, compare=False)

    def compute(self, *inputs: Tensor, **options: Any) -> dict[str, Tensor]:
        """Compute the metric on a stack of layers.

        Parameters
        ----------
        *inputs : Tensor
            As described by ``level`` and ``n_views``.
        **options
            Override :attr:`defaults`; unknown options raise.

        Returns
        -------
        dict of str to Tensor
            One float64 tensor of shape (...,) (e.g. ``(layers,)``) per label in ``normalizations``
            (token-level metrics: means over prompts).
        """
        extra = set(options) - set(self.defaults)
        if extra:
            raise LayerscopeError(
                f"unknown option(s) {', '.join(sorted(extra))} for metric '{self.name}'; "
                f"options: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        return self.table(*inputs, **{**self.defaults, **options})


def _entropy_table(raw: Tensor, normalizations: Iterable[str], n: int | Tensor, d: int) -> dict[str, Tensor]:
    return {name: F.normalize_entropy(raw, name, n, d) for name in normalizations}


def _prompt_entropy_table(tokens: Tensor, lengths: Tensor | None = None, **options: Any) -> dict[str, Tensor]:
    raw = F.prompt_entropy_values(
        tokens, lengths, options["alpha"], tol=options["tol"], clamp_gram=options["clamp_gram"]
    )
    n_real = torch.full(raw.shape[-1:], tokens.shape[-2]) if lengths is None else torch.as_tensor(lengths)
    return {
        name: F.summarize_prompts(F.normalize_entropy(raw, name, n_real, tokens.shape[-1])).mean
        for name in options["normalizations"]
    }


def _curvature_table(tokens: Tensor, lengths: Tensor | None = None, **options: Any) -> dict[str, Tensor]:
    return {"raw": F.curvature(tokens, lengths, abs_cos=options["abs_cos"]).mean}


def _dataset_entropy_table(pooled: Tensor, **options: Any) -> dict[str, Tensor]:
    raw = F.dataset_entropy(
        pooled, options["alpha"], "raw", tol=options["tol"], clamp_gram=options["clamp_gram"]
    )
    return _entropy_table(raw, options["normalizations"], *pooled.shape[-2:])


def _effective_rank_table(pooled: Tensor, **options: Any) -> dict[str, Tensor]:
    return {"raw": F.effective_rank(pooled, normalize_rows=options["normalize_rows"], tol=options["tol"])}


def _entropy_rank_table(pooled: Tensor, **options: Any) -> dict[str, Tensor]:
    return {"raw": F.entropy_rank(pooled, normalize_rows=options["normalize_rows"], tol=options["tol"])}


def _infonce_table(view_a: Tensor, view_b: Tensor, **options: Any) -> dict[str, Tensor]:
    result = F.infonce(view_a, view_b, options["tau"], options["variant"])
    return {"raw": result.loss, "bound": result.bound, "normalized": result.normalized}


def _lidar_table(views: Tensor, **options: Any) -> dict[str, Tensor]:
    result = F.lidar(views, options["alpha"], "raw", delta=options["delta"], tol=options["tol"])
    n, d = views.shape[-3], views.shape[-1]
    return {**_entropy_table(result.entropy, options["normalizations"], n, d), "exp": result.lidar}


def _dime_table(view_a: Tensor, view_b: Tensor, **options: Any) -> dict[str, Tensor]:
    raw = F.dime(
        view_a,
        view_b,
        options["n_permutations"],
        options["seed"],
        options["alpha"],
        "raw",
        tol=options["tol"],
        legacy_covariance=options["legacy_covariance"],
    )
    return _entropy_table(raw, options["normalizations"], *view_a.shape[-2:])


_ENTROPY_NORMALIZATIONS = ("maxEntropy", "raw", "logN", "logD", "logNlogD")


def _spec(
    name: str,
    level: Level,
    n_views: int,
    higher_is_better: bool,
    random: bool,
    defaults: dict[str, Any],
    description: str,
    function: Callable[..., Any],
    table: Callable[..., dict[str, Tensor]],
    normalizations: tuple[str, ...] = ("raw",),
) -> MetricSpec:
    if "normalizations" in defaults:
        normalizations = tuple(defaults["normalizations"])
    extras = ("exp",) if name == "lidar" else ()
    return MetricSpec(
        name, level, n_views, higher_is_better, random, MappingProxyType(defaults), description,
        function, normalizations + extras, table,
    )


_SPECS: tuple[MetricSpec, ...] = (
    _spec(
        "prompt_entropy", "token", 0, False, False,
        {"alpha": 1.0, "normalizations": _ENTROPY_NORMALIZATIONS, "tol": F.DEFAULT_TOL, "clamp_gram": False},
        "matrix entropy of each prompt's normalized tokens, mean over prompts (compression within a prompt)",
        F.prompt_entropy, _prompt_entropy_table,
    ),
    _spec(
        "curvature", "token", 0, False, False, {"abs_cos": False},
        "mean turning angle (radians) between consecutive token steps, mean over prompts",
        F.curvature, _curvature_table,
    ),
    _spec(
        "dataset_entropy", "dataset", 0, False, False,
        {"alpha": 1.0, "normalizations": _ENTROPY_NORMALIZATIONS, "tol": F.DEFAULT_TOL, "clamp_gram": False},
        "matrix entropy of the normalized pooled embeddings (diversity across prompts)",
        F.dataset_entropy, _dataset_entropy_table,
    ),
    _spec(
        "effective_rank", "dataset", 0, False, False, {"normalize_rows": True, "tol": F.DEFAULT_TOL},
        "Roy-Vetterli effective rank of the normalized pooled embeddings",
        F.effective_rank, _effective_rank_table,
    ),
    _spec(
        "entropy_rank", "dataset", 0, False, False, {"normalize_rows": True, "tol": F.DEFAULT_TOL},
        "exp of the Shannon dataset entropy (a soft rank, <= effective rank)",
        F.entropy_rank, _entropy_rank_table,
    ),
    _spec(
        "rankme", "dataset", 0, True, False, {"normalize_rows": False, "tol": F.DEFAULT_TOL},
        "RankMe (Garrido et al.): effective rank of the raw pooled embeddings, higher = better per its paper",
        F.effective_rank, _effective_rank_table,
    ),
    _spec(
        "infonce", "dataset", 2, False, False, {"tau": 0.1, "variant": "infonce"},
        "InfoNCE loss between two augmented views (raw), its MI bound log N - L and 1 - L / log N",
        F.infonce, _infonce_table, ("raw", "bound", "normalized"),
    ),
    _spec(
        "lidar", "dataset", 16, True, False,
        {"alpha": 1.0, "normalizations": _ENTROPY_NORMALIZATIONS, "delta": 1e-4, "tol": F.DEFAULT_TOL},
        "LiDAR: entropy of the LDA matrix over 16 views per prompt (and exp of it), higher = better per its paper",
        F.lidar, _lidar_table,
    ),
    _spec(
        "dime", "dataset", 2, False, True,
        {
            "n_permutations": 10, "seed": 0, "alpha": 1.0, "normalizations": _ENTROPY_NORMALIZATIONS,
            "tol": F.DEFAULT_TOL, "legacy_covariance": False,
        },
        "DiME: entropy gain of unpairing two augmented views (10 seeded permutations)",
        F.dime, _dime_table,
    ),
)
_BY_NAME = {spec.name: spec for spec in _SPECS}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def names() -> list[str]:
    """Names of the registered metrics, in registry order."""
    return [spec.name for spec in _SPECS]


def available() -> list[MetricSpec]:
    """Every registered metric, in registry order (token-level first)."""
    return list(_SPECS)


def get(name: str) -> MetricSpec:
    """The metric called ``name`` (case and ``-``/``_`` insensitive); unknown names suggest the nearest."""
    spec = _BY_NAME.get(_key(name))
    if spec is None:
        raise unknown("metric", name, _BY_NAME)
    return spec


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
        metrics = [part for part in metrics.split(",") if part.strip()]
    requested = list(metrics)
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
