"""How well each metric's layer profile tracks downstream scores (SPEC section 6).

Two scopes are reported, as in the paper:

``per_task``
    For every task, the correlation across layers between the metric (computed on that task's
    texts when available) and the task's score; then the mean over tasks.
``average_curve``
    The correlation across layers between a metric profile and the task-averaged score curve.

Methods: distance correlation (``dcor``, in [0, 1], blind to the sign), Spearman and Kendall
(signed: a lower-is-better metric that works shows a negative value). A series that is constant or
has fewer than three layers gives NaN with a ``reason``; it is never averaged in.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from layerscope.analysis.selection import canonical_metric, metric_profiles_for_tasks
from layerscope.analysis.tables import (
    default_normalization,
    infer_last_layer,
    metric_datasets,
    metric_profile,
    require_columns,
    score_grid,
)
from layerscope.errors import LayerscopeError, unknown

__all__ = ["CORRELATION_METHODS", "correlate", "correlation", "correlation_uncertainty"]

CORRELATION_METHODS: tuple[str, ...] = ("dcor", "spearman", "kendall")
MIN_LAYERS = 3


def _distance_correlation(x: np.ndarray, y: np.ndarray) -> float:
    try:
        import dcor  # slow first import (numba compilation): only when asked for
    except ImportError as error:
        raise LayerscopeError(
            "distance correlation needs the 'dcor' package: pip install 'layerscope[analysis]'"
        ) from error
    return float(dcor.distance_correlation(x, y))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of average ranks (as ``scipy.stats.spearmanr``)."""
    from scipy.stats import rankdata

    return _pearson(rankdata(x), rankdata(y))


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (as ``scipy.stats.kendalltau``), from the pairwise sign matrices.

    O(n^2) memory in the number of layers, which stays in the hundreds at most.
    """
    sign_x = np.sign(x[:, None] - x[None, :])
    sign_y = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    sign_x, sign_y = sign_x[upper], sign_y[upper]
    return float((sign_x @ sign_y) / np.sqrt((sign_x @ sign_x) * (sign_y @ sign_y)))


_METHODS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "dcor": _distance_correlation,
    "spearman": _spearman,
    "kendall": _kendall,
}


def correlation(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, method: str = "spearman"
) -> tuple[float, str]:
    """Correlation of two equally long series, with a reason when it is undefined.

    Parameters
    ----------
    x, y : array-like of float
        Paired values (e.g. a metric and a score across layers). Pairs with a non-finite value
        are dropped.
    method : {"dcor", "spearman", "kendall"}, default "spearman"

    Returns
    -------
    value : float
        The correlation, or NaN.
    reason : str
        Empty when defined, else why not (``"fewer than 3 layers"``, ``"constant metric"``,
        ``"constant score"``).
    """
    if method not in _METHODS:
        raise unknown("correlation method", method, _METHODS)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"correlation needs two 1-d series of equal length, got {x.shape} and {y.shape}")
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < MIN_LAYERS:
        return float("nan"), f"fewer than {MIN_LAYERS} layers"
    if np.ptp(x) == 0:
        return float("nan"), "constant metric"
    if np.ptp(y) == 0:
        return float("nan"), "constant score"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = _METHODS[method](x, y)
    return (value, "") if np.isfinite(value) else (float("nan"), "undefined")


def _pair(profile: pd.Series, curve: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values of a metric profile and a score curve on their common layers (both sorted by layer)."""
    profile_layers = profile.index.to_numpy()
    curve_layers = curve.index.to_numpy()
    common = np.intersect1d(profile_layers, curve_layers, assume_unique=True)
    x = profile.to_numpy(dtype=float)[np.searchsorted(profile_layers, common)]
    y = curve.to_numpy(dtype=float)[np.searchsorted(curve_layers, common)]
    return x, y


def correlate(
    metrics_df: pd.DataFrame,
    scores_df: pd.DataFrame,
    method: str | Sequence[str] = CORRELATION_METHODS,
    *,
    metrics: Iterable[str] | None = None,
    normalization: str | None = None,
    task_to_dataset: Mapping[str, str] | None = None,
    fallback_dataset: str | None = None,
    reference_dataset: str | None = None,
    per_task: bool = False,
    coverage: str = "layers",
    last_layer: int | None = None,
) -> pd.DataFrame:
    """Correlate every metric's layer profile with task scores.

    Parameters
    ----------
    metrics_df : pandas.DataFrame
        Long per-layer metrics of one model (``layer, metric, value`` + ``normalization``,
        ``dataset``).
    scores_df : pandas.DataFrame
        Per-layer task scores of the same model (``layer, task, main_score``).
    method : str or sequence of str, default ("dcor", "spearman", "kendall")
        Correlation methods.
    metrics : iterable of str, optional
        Metrics to correlate (default: all).
    normalization : str, optional
        ``None`` (default): each metric's default normalization; ``"all"``: every normalization;
        otherwise that normalization where a metric has it (else its default).
    task_to_dataset : Mapping of str to str, optional
        Task -> metric ``dataset`` computed on its texts (default: the task name). With a single
        text source in ``metrics_df`` (or no ``dataset`` column) that profile serves every task.
    fallback_dataset : str, optional
        Text source for tasks without their own metric; by default those tasks are left out of
        the per-task mean.
    reference_dataset : str, optional
        Text source of the metric profile compared with the task-averaged curve. By default the
        single source when there is one, else the mean of the per-task profiles used above.
    per_task : bool, default False
        Also return one row per task (``scope="task"``).
    coverage : {"layers", "tasks"}, default "layers"
        How incomplete scores are made complete (see ``score_grid``).
    last_layer : int, optional
        The model's last layer (only used for the grid's bookkeeping).

    Returns
    -------
    pandas.DataFrame
        Tidy rows ``metric, normalization, method, scope, task, dataset, value, n_tasks, n_layers,
        reason``. ``scope`` is ``per_task`` (mean over tasks; ``n_tasks`` = tasks with a defined
        value), ``average_curve``, or ``task`` (with ``per_task=True``).
    """
    require_columns(metrics_df, ("layer", "metric", "value"), "metrics table")
    methods = [method] if isinstance(method, str) else list(method)
    for name in methods:
        if name not in _METHODS:
            raise unknown("correlation method", name, _METHODS)
    if last_layer is None:
        last_layer = infer_last_layer(scores_df, metrics_df)
    grid = score_grid(scores_df, coverage=coverage, last_layer=last_layer)
    curve = grid.average
    present = sorted(metrics_df["metric"].dropna().astype(str).unique())
    chosen = present if metrics is None else list(metrics)
    for metric in chosen:
        if metric not in present:
            raise unknown("metric", metric, present)

    rows: list[dict[str, object]] = []
    for metric in chosen:
        metric_rows = metrics_df[metrics_df["metric"] == metric]
        available = (
            sorted(metric_rows["normalization"].dropna().astype(str).unique())
            if "normalization" in metric_rows.columns
            else []
        )
        if normalization == "all":
            norms: list[str | None] = list(available) or [None]
        elif normalization is not None and normalization in available:
            norms = [normalization]
        else:
            norms = [default_normalization(metrics_df, metric)]
        for norm in norms:
            rows.extend(
                _correlate_one(
                    metrics_df,
                    metric,
                    norm,
                    grid.matrix,
                    curve,
                    methods,
                    task_to_dataset,
                    fallback_dataset,
                    reference_dataset,
                    per_task,
                )
            )
    frame = pd.DataFrame.from_records(
        rows,
        columns=[
            "metric",
            "normalization",
            "method",
            "scope",
            "task",
            "dataset",
            "value",
            "n_tasks",
            "n_layers",
            "reason",
        ],
    )
    frame.attrs["score_grid"] = grid.describe()
    return frame


def _correlate_one(
    metrics_df: pd.DataFrame,
    metric: str,
    norm: str | None,
    matrix: pd.DataFrame,
    curve: pd.Series,
    methods: Sequence[str],
    task_to_dataset: Mapping[str, str] | None,
    fallback_dataset: str | None,
    reference_dataset: str | None,
    per_task: bool,
) -> list[dict[str, object]]:
    """Rows of :func:`correlate` for one metric and normalization."""
    name = canonical_metric(metric)
    tasks = [str(task) for task in matrix.columns]
    profiles = metric_profiles_for_tasks(metrics_df, metric, norm, tasks, task_to_dataset, fallback_dataset)
    rows: list[dict[str, object]] = []
    base = {"metric": name, "normalization": norm}

    for method in methods:
        values: list[float] = []
        layer_counts: list[int] = []
        reasons: list[str] = []
        for task in tasks:
            profile, source = profiles[task]
            if profile is None:
                value, reason, n_layers = float("nan"), "no metric on this task's texts", 0
            else:
                x, y = _pair(profile, matrix[task])
                value, reason = correlation(x, y, method)
                n_layers = len(x)
            if per_task:
                rows.append(
                    {
                        **base,
                        "method": method,
                        "scope": "task",
                        "task": task,
                        "dataset": source,
                        "value": value,
                        "n_tasks": 1,
                        "n_layers": n_layers,
                        "reason": reason,
                    }
                )
            if np.isfinite(value):
                values.append(value)
                layer_counts.append(n_layers)
            else:
                reasons.append(reason)
        mean = float(np.mean(values)) if values else float("nan")
        reason = "" if values else (max(set(reasons), key=reasons.count) if reasons else "no tasks")
        rows.append(
            {
                **base,
                "method": method,
                "scope": "per_task",
                "task": None,
                "dataset": "per task",
                "value": mean,
                "n_tasks": len(values),
                "n_layers": int(np.median(layer_counts)) if layer_counts else 0,
                "reason": reason,
            }
        )

    reference, label = _reference_profile(metrics_df, metric, norm, profiles, reference_dataset)
    for method in methods:
        if reference is None or reference.empty:
            value, reason, n_layers = float("nan"), "no metric profile", 0
        else:
            x, y = _pair(reference, curve)
            value, reason = correlation(x, y, method)
            n_layers = len(x)
        rows.append(
            {
                **base,
                "method": method,
                "scope": "average_curve",
                "task": None,
                "dataset": label,
                "value": value,
                "n_tasks": len(tasks),
                "n_layers": n_layers,
                "reason": reason,
            }
        )
    return rows


def _reference_profile(
    metrics_df: pd.DataFrame,
    metric: str,
    norm: str | None,
    profiles: Mapping[str, tuple[pd.Series | None, str]],
    reference_dataset: str | None,
) -> tuple[pd.Series | None, str]:
    """The metric profile compared with the task-averaged score curve, and its label."""
    metric_rows = metrics_df[metrics_df["metric"] == metric]
    datasets = metric_datasets(metric_rows)
    if reference_dataset is not None:
        if reference_dataset not in datasets:
            raise unknown(f"dataset of metric '{metric}'", reference_dataset, datasets)
        return metric_profile(
            metric_rows, metric, normalization=norm, dataset=reference_dataset
        ), reference_dataset
    if len(metric_datasets(metrics_df)) <= 1:
        return metric_profile(metric_rows, metric, normalization=norm), datasets[0] if datasets else "shared"
    used = [profile for profile, _ in profiles.values() if profile is not None and not profile.empty]
    if not used:
        return None, ""
    # mean over the distinct per-task profiles, on the layers they all share
    unique = {id(profile): profile for profile in used}
    stacked = pd.concat(list(unique.values()), axis=1, join="inner")
    return stacked.mean(axis=1), f"mean of {len(unique)} task datasets"


# ---------------------------------------------------------------------------------------- uncertainty

#: Permutations per block of the vectorised null distributions (bounds memory to block x layers^2).
_PERMUTATION_BLOCK = 256


def correlation_uncertainty(
    correlations: pd.DataFrame,
    metrics_df: pd.DataFrame,
    scores_df: pd.DataFrame,
    *,
    task_to_dataset: Mapping[str, str] | None = None,
    fallback_dataset: str | None = None,
    reference_dataset: str | None = None,
    coverage: str = "layers",
    last_layer: int | None = None,
    n_permutations: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """How sure each correlation of :func:`correlate` is: permutation p-values and intervals over tasks.

    Each value is tested against shuffled layers: the metric profile's layer order is permuted
    (every permutation when there are at most ``n_permutations``, else ``n_permutations`` seeded
    draws) and the correlation recomputed. For ``per_task`` rows one permutation is shared by all
    tasks (their scores move together across layers) and the statistic is the mean over tasks; those
    rows also get a t-interval of the mean over the tasks' values. Layers are treated as exchangeable,
    which neighbouring layers are not (profiles are smooth), so the p-values are optimistic.

    Parameters
    ----------
    correlations : pandas.DataFrame
        Output of :func:`correlate` on the same tables and options.
    metrics_df, scores_df : pandas.DataFrame
        The tables it was computed from.
    task_to_dataset, fallback_dataset, reference_dataset, coverage, last_layer
        As given to :func:`correlate`.
    n_permutations : int, default 2000
        Random permutations when the layers have more orderings than this.
    confidence : float, default 0.95
        Level of the interval over tasks.
    seed : int, default 0
        Seed of the permutations.

    Returns
    -------
    pandas.DataFrame
        The ``per_task`` and ``average_curve`` rows of ``correlations`` with ``p_value`` (two-sided
        for Spearman and Kendall, one-sided for distance correlation), ``ci_low`` and ``ci_high``
        (``per_task`` rows with at least two tasks), ``n_permutations`` and ``exact`` (every
        permutation enumerated). Undefined values give NaN.
    """
    require_columns(correlations, ("metric", "normalization", "method", "scope", "value"), "correlations table")
    if last_layer is None:
        last_layer = infer_last_layer(scores_df, metrics_df)
    grid = score_grid(scores_df, coverage=coverage, last_layer=last_layer)
    tasks = [str(task) for task in grid.matrix.columns]
    rng = np.random.default_rng(seed)
    out = correlations[correlations["scope"].isin(["per_task", "average_curve"])].reset_index(drop=True)
    out = out.assign(p_value=np.nan, ci_low=np.nan, ci_high=np.nan, n_permutations=0, exact=False)
    keys = out["normalization"].astype(object).where(out["normalization"].notna(), None)
    for (metric, norm), rows in out.groupby([out["metric"], keys], dropna=False, sort=False):
        norm = None if norm is None or pd.isna(norm) else str(norm)
        profiles = metric_profiles_for_tasks(metrics_df, str(metric), norm, tasks, task_to_dataset, fallback_dataset)
        task_pairs = [_pair(profile, grid.matrix[task]) for task, (profile, _) in profiles.items()
                      if profile is not None]
        reference, _ = _reference_profile(metrics_df, str(metric), norm, profiles, reference_dataset)
        curve_pairs = [] if reference is None or reference.empty else [_pair(reference, grid.average)]
        for index, row in rows.iterrows():
            pairs = task_pairs if row["scope"] == "per_task" else curve_pairs
            facts = _permutation_test(pairs, str(row["method"]), n_permutations, rng)
            if row["scope"] == "per_task":
                facts.update(_interval_over_tasks(pairs, str(row["method"]), confidence))
            for column, value in facts.items():
                out.at[index, column] = value
    return out


def _permutations(n: int, n_permutations: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Index permutations of ``n`` layers (rows) and whether they are all of them."""
    if math.factorial(n) <= n_permutations:
        return np.array(list(itertools.permutations(range(n))), dtype=np.intp).reshape(-1, n), True
    return np.argsort(rng.random((n_permutations, n)), axis=1), False


def _double_centered(values: np.ndarray) -> np.ndarray:
    distances = np.abs(values[:, None] - values[None, :])
    return distances - distances.mean(axis=0) - distances.mean(axis=1)[:, None] + distances.mean()


def _permuted_statistics(x: np.ndarray, y: np.ndarray, method: str, permutations: np.ndarray) -> np.ndarray:
    """``method``'s value of ``x[p]`` against ``y`` for every row ``p`` of ``permutations``.

    Vectorised forms of the module's estimators (the identity permutation gives :func:`correlation`'s
    value): Spearman from permuted ranks, Kendall's tau-b and the distance correlation (V-statistic)
    from the permuted rows and columns of their pairwise matrices.
    """
    if method == "spearman":
        from scipy.stats import rankdata

        rank_x, rank_y = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
        return rank_x[permutations] @ rank_y / np.sqrt((rank_x @ rank_x) * (rank_y @ rank_y))
    if method == "kendall":
        pairwise_x, pairwise_y = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
        scale = np.sqrt((pairwise_x * pairwise_x).sum() * (pairwise_y * pairwise_y).sum())
        reduce = np.sum
    elif method == "dcor":
        pairwise_x, pairwise_y = _double_centered(x), _double_centered(y)
        scale = np.sqrt(np.mean(pairwise_x * pairwise_x) * np.mean(pairwise_y * pairwise_y))
        reduce = np.mean
    else:
        raise unknown("correlation method", method, _METHODS)
    values = np.empty(len(permutations))
    for start in range(0, len(permutations), _PERMUTATION_BLOCK):
        block = permutations[start:start + _PERMUTATION_BLOCK]
        permuted = pairwise_x[block[:, :, None], block[:, None, :]]  # (block, layers, layers)
        values[start:start + len(block)] = reduce(permuted * pairwise_y, axis=(1, 2)) / scale
    return np.sqrt(np.clip(values, 0.0, None)) if method == "dcor" else values


def _defined(pairs: Sequence[tuple[np.ndarray, np.ndarray]], method: str) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """The pairs (finite layers only) whose correlation is defined, with that value."""
    defined = []
    for x, y in pairs:
        finite = np.isfinite(x) & np.isfinite(y)
        value, _ = correlation(x[finite], y[finite], method)
        if np.isfinite(value):
            defined.append((x[finite], y[finite], value))
    return defined


def _permutation_test(pairs: Sequence[tuple[np.ndarray, np.ndarray]], method: str, n_permutations: int,
                      rng: np.random.Generator) -> dict[str, object]:
    """p-value of the mean correlation over ``pairs`` against permuted layers (one shared permutation)."""
    defined = _defined(pairs, method)
    if not defined:
        return {}
    lengths = {len(x) for x, _, _ in defined}
    if len(lengths) == 1:
        permutations, exact = _permutations(lengths.pop(), n_permutations, rng)
        draws = [permutations] * len(defined)
    else:  # tasks scored on different layers cannot share a permutation: each draws its own
        draws = [np.argsort(rng.random((n_permutations, len(x))), axis=1) for x, _, _ in defined]
        exact = False
    null = sum(_permuted_statistics(x, y, method, drawn)
               for (x, y, _), drawn in zip(defined, draws, strict=True)) / len(defined)
    observed = float(np.mean([value for _, _, value in defined]))
    tolerance = 1e-12 * max(1.0, abs(observed))
    # distance correlation is blind to the sign: only large values speak against independence
    hits = null >= observed - tolerance if method == "dcor" else np.abs(null) >= abs(observed) - tolerance
    p_value = float(hits.mean()) if exact else float((1 + hits.sum()) / (1 + len(null)))
    return {"p_value": p_value, "n_permutations": int(len(null)), "exact": bool(exact)}


def _interval_over_tasks(pairs: Sequence[tuple[np.ndarray, np.ndarray]], method: str,
                         confidence: float) -> dict[str, object]:
    """t-interval of the mean over the tasks' correlations (needs two tasks)."""
    from scipy.stats import t

    values = np.array([value for _, _, value in _defined(pairs, method)])
    if len(values) < 2:
        return {}
    half = t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    low, high = (0.0, 1.0) if method == "dcor" else (-1.0, 1.0)
    return {"ci_low": float(max(low, values.mean() - half)), "ci_high": float(min(high, values.mean() + half))}
