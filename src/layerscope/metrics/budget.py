"""The views budget in words and numbers, and the time a measurement will take, said before it starts.

The augmented views are the expensive part of the label-free metrics (each view is a forward pass),
so :func:`~layerscope.metrics.compute.measure` plans them before the first pass (:func:`plan_ahead`,
the same plan the pass then uses), says what they cost in one line (:func:`budget_line`) and, when the
work is long, how long it will take on this machine (:func:`estimate_work`): a short timed probe (a
few texts and a few of their views, through the same extraction) times the planned passes.

The cost model, in forward passes per text of a set: token and pooled metrics 1 (the one pass over the
texts); InfoNCE and DiME 2 more for each of the set's view texts; LiDAR ``n_views`` more for each of
its LiDAR texts, whose first 2 views also serve InfoNCE and DiME (so a LiDAR text costs ``n_views``
views, not ``n_views + 2``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from layerscope.config import ViewConfig
from layerscope.metrics.registry import MetricSpec
from layerscope.metrics.views import ViewPlan, plan_for, set_rows

__all__ = ["PROBE_FROM_PASSES", "PROBE_TEXTS", "SAY_FROM_SECONDS", "WorkEstimate", "budget_line", "estimate_work",
           "kept_inputs", "padding_scale", "plan_ahead", "plan_record", "timed_probe"]

#: Texts (and as many of their views) in the timed probe batch of :func:`estimate_work`.
PROBE_TEXTS = 32
#: Work (seconds) from which the estimate is said; shorter work just runs.
SAY_FROM_SECONDS = 60.0
#: Planned forward passes from which the probe is run (below, it would cost more than a few percent).
PROBE_FROM_PASSES = 20 * PROBE_TEXTS


def kept_inputs(inputs: Sequence[Any] | Any, *, vision: bool = False) -> np.ndarray:
    """Positions of the inputs the pass will encode: the non-empty texts (extract's rule), every image."""
    if vision:
        return np.arange(len(inputs))
    return np.array([i for i, text in enumerate(inputs) if isinstance(text, str) and text.strip()], dtype=np.int64)


def plan_ahead(
    inputs: Sequence[Any] | Any,
    sets: Mapping[str, Sequence[int]],
    specs: Sequence[MetricSpec],
    views: ViewConfig,
    seed: int,
    *,
    union: str | None = None,
    vision: bool = False,
) -> ViewPlan:
    """The view plan :func:`~layerscope.metrics.compute.measure` will make, before any forward pass.

    The pass skips empty texts (images are all kept), so each set's rows are its non-empty inputs
    numbered as the pass numbers them; sets with fewer than 2 such texts get no metrics, as there.
    """
    usable, _ = set_rows(sets, kept_inputs(inputs, vision=vision), len(inputs), warn=False)
    return plan_for(usable, [spec.n_views for spec in specs], views, seed, union=union)


def budget_line(plan: ViewPlan, specs: Sequence[MetricSpec], *, union: str | None = None,
                views: ViewConfig | None = None) -> str | None:
    """What the views of a plan are and cost, in one line (None when no metric needs views).

    E.g. "LiDAR on 128 texts x 16 views, InfoNCE and DiME on 512 texts x 2 views (spread over 22 text
    sets), views cut at 128 tokens: 2,816 extra forward passes". The counts are the texts of the run
    that get views (the budget, or fewer when the run has fewer texts).
    """
    lidar = [spec.display for spec in specs if spec.n_views > 2]
    pairs = [spec.display for spec in specs if spec.n_views == 2]
    parts = {name: part for name, part in plan.sets.items() if name != union}
    if not (lidar or pairs) or not parts:
        return None
    said = []
    if lidar:
        said.append(f"{' and '.join(lidar)} on {len(plan.lidar_rows):,} texts x {plan.n_views} views")
    if pairs:
        said.append(f"{' and '.join(pairs)} on {len(plan.lidar_rows) + len(plan.pair_only_rows):,} texts x 2 views")
    where = f" (spread over {len(parts)} text sets)" if len(parts) > 1 else ""
    cut = "" if views is None or views.view_max_length is None else f", views cut at {views.view_max_length} tokens"
    return f"{', '.join(said)}{where}{cut}: {plan.n_encoded:,} extra forward passes"


def plan_record(plan: ViewPlan, views: ViewConfig, *, union: str | None = None) -> dict[str, Any]:
    """The views a run used, for its record: the budget asked for, the texts of the run that got views
    and, per set, its share (:func:`~layerscope.metrics.views.shares`), with the passes they cost."""
    return {
        "n_views": plan.n_views, "view_texts": views.view_texts or "all", "lidar_texts": views.lidar_texts or "all",
        "view_max_length": views.view_max_length or "all",
        "run_pair_texts": len(plan.lidar_rows) + len(plan.pair_only_rows), "run_lidar_texts": len(plan.lidar_rows),
        "view_passes": plan.n_encoded,
        "sets": {name: {"texts": len(part.rows), "pair_texts": len(part.pair_rows),
                        "lidar_texts": len(part.lidar_rows)} for name, part in plan.sets.items()},
        **({"union": union} if union is not None else {}),
    }


# ------------------------------------------------------------------------------------------ time


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class WorkEstimate:
    """Forward passes planned and the seconds per pass a timed probe measured.

    Attributes
    ----------
    text_passes, view_passes : int
        Passes over the texts and over their augmented views.
    text_seconds, view_seconds : float
        Seconds per text and per view (augmentation included) in the probe.
    """

    text_passes: int
    view_passes: int
    text_seconds: float
    view_seconds: float

    @property
    def passes(self) -> int:
        """Every forward pass planned."""
        return self.text_passes + self.view_passes

    @property
    def seconds(self) -> float:
        """Estimated seconds of the forward passes."""
        return self.text_passes * self.text_seconds + self.view_passes * self.view_seconds

    def describe(self) -> str:
        """E.g. "about 12 min on this machine: 6,000 forward passes (2,000 texts + 4,000 views)"."""
        return (f"about {_duration(self.seconds)} on this machine: {self.passes:,} forward passes "
                f"({self.text_passes:,} texts + {self.view_passes:,} views)")


def timed_probe(run: Callable[[], Any], count: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per item of ``run()``, which handles ``count`` items, timed with ``clock``."""
    start = clock()
    run()
    return (clock() - start) / max(count, 1)


def padding_scale(lengths: Any, probe_rows: Sequence[int], planned_rows: Sequence[int], model: Any,
                  batch_size: int | str = "auto") -> float:
    """Padded tokens per text of the planned pass over those of the probe, batched as ``extract`` batches.

    A probe of a few texts of mixed lengths pads each batch to a long text; a pass over thousands,
    sorted by length, hardly pads at all. Scaling the probe's seconds per text by this ratio makes
    the estimate follow the work the model actually does (measured on the demo: the plain probe said
    9 min for 230 s of forward passes).
    """
    from layerscope.extract.engine import plan_batches

    lengths = torch.as_tensor(lengths, dtype=torch.long)

    def per_text(rows: Sequence[int]) -> float:
        rows = np.asarray(rows, dtype=np.int64)
        batches = plan_batches(lengths, rows, batch_size, model)  # longest first within each batch
        return sum(len(batch) * int(lengths[batch[0]]) for batch in batches) / max(len(rows), 1)

    probe = per_text(probe_rows)
    return per_text(planned_rows) / probe if probe > 0 else 1.0


def estimate_work(
    text_passes: int,
    view_passes: int,
    run_texts: Callable[[Sequence[int]], Any],
    run_views: Callable[[Sequence[int]], Any],
    n_texts: int,
    *,
    seed: int = 0,
    probe: int = PROBE_TEXTS,
    clock: Callable[[], float] = time.perf_counter,
    scale: Callable[[Sequence[int]], tuple[float, float]] | None = None,
) -> WorkEstimate:
    """Time a probe batch and scale it to the planned passes.

    Parameters
    ----------
    text_passes, view_passes : int
        Passes planned over the texts and over views.
    run_texts, run_views : callable
        ``run_texts(rows)`` passes those texts through the model as the measurement will (token metrics
        included); ``run_views(rows)`` augments those texts once each and passes the views. Each is
        first called on 2 rows, untimed (the first call of a process pays one-off set-up costs).
    n_texts : int
        Texts to draw the probe from (the rows are a seeded sample of ``range(n_texts)``).
    seed : int
        Seed of the probe's rows.
    probe : int
        Texts in the probe (fewer when there are fewer).
    clock : callable
        The clock (tests pass a fake one).
    scale : callable, optional
        ``scale(probe_rows) -> (text_scale, view_scale)``: factors turning the probe's seconds per text
        and per view into the planned pass's (:func:`padding_scale`); default none.

    Returns
    -------
    WorkEstimate
    """
    rows = np.sort(np.random.default_rng(seed).permutation(n_texts)[:probe]).tolist()
    text_seconds = view_seconds = 0.0
    if text_passes:
        run_texts(rows[:2])
        text_seconds = timed_probe(lambda: run_texts(rows), len(rows), clock)
    if view_passes:
        run_views(rows[:2])
        view_seconds = timed_probe(lambda: run_views(rows), len(rows), clock)
    if scale is not None:
        text_scale, view_scale = scale(rows)
        text_seconds, view_seconds = text_seconds * text_scale, view_seconds * view_scale
    return WorkEstimate(text_passes, view_passes, text_seconds, view_seconds)
