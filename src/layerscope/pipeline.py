"""The main job, ``analyze``: which layer, and why, from one encoding of every text.

``analyze`` is a composition of named steps over one :class:`~layerscope.config.AnalysisConfig`:

1. :func:`task_texts`: the texts each task encodes (exactly what MTEB's evaluators ask for), plus an
   optional extra text source, as named sets of one list;
2. :func:`~layerscope.metrics.compute.measure`: one pass over every text (token metrics on the fly,
   pooled embeddings to the cache), the planned views once, every metric per set and on all texts;
3. :func:`~layerscope.evaluate.evaluate_layers`: MTEB's evaluators on every layer, reading that pass
   (and, with ``bootstrap``, on resamples of every task's evaluation examples: score intervals);
4. the store, through a run that is marked finished or failed;
5. :func:`~layerscope.analysis.summarize`: best layer, label-free layer, selection table,
   correlations (the same function the report uses), and the recipe sets of ``recipes`` scored from
   the same pass (:mod:`~layerscope.analysis.recipe_runs`);
6. the report.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from layerscope import __version__
from layerscope.analysis.summary import ALL_TEXTS, Summary
from layerscope.config import (
    DEFAULT_LIDAR_TEXTS,
    DEFAULT_N_VIEWS,
    DEFAULT_VIEW_MAX_LENGTH,
    DEFAULT_VIEW_TEXTS,
    AnalysisConfig,
    ExtractConfig,
    IntervalConfig,
    ModelConfig,
    TextConfig,
    ViewConfig,
)
from layerscope.errors import LayerscopeError

__all__ = ["ALL_TASKS", "AnalysisResult", "TaskTexts", "analyze", "run_analysis", "task_texts"]

#: The ``dataset`` label of metrics computed on the union of all tasks' texts.
ALL_TASKS = ALL_TEXTS


@dataclass
class AnalysisResult:
    """What ``analyze`` produced (all of it is also in ``<out>/results.duckdb``)."""

    out: Path
    run_id: str
    config: AnalysisConfig
    metrics: pd.DataFrame
    scores: pd.DataFrame
    summary: Summary
    record: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None

    @property
    def layer_table(self) -> pd.DataFrame:
        """One row per layer: metrics on all texts and the average task score (x 100)."""
        return self.summary.per_layer

    @property
    def selection(self) -> pd.DataFrame:
        """The paper's Table 2: average task score of every layer-selection rule."""
        return self.summary.selection

    @property
    def correlations(self) -> pd.DataFrame:
        """Metric-score correlations (see :func:`layerscope.analysis.correlate`)."""
        return self.summary.correlations

    @property
    def best_layer(self) -> int | None:
        """The layer with the best average task score (labels)."""
        return self.summary.best_layer

    @property
    def chosen_layer(self) -> int | None:
        """The layer chosen without labels."""
        return self.summary.chosen_layer

    @property
    def chosen_by(self) -> str:
        """The label-free rule: its metric when it is one metric's extreme, else its ``--select-by`` text."""
        return self.summary.chosen_metric or self.summary.chosen_rule or self.config.select_by


@dataclass
class TaskTexts:
    """Every text of a run as one list, and named sets of it.

    Attributes
    ----------
    texts : list of str
        Unique texts: the tasks' (in the order the evaluation encodes them), then the dataset's.
    sets : dict of str to list of int
        Each task's texts (under its name) and the dataset's (under its source name).
    task_to_dataset : dict of str to str
        Task -> the set its label-free metrics come from (its own texts).
    """

    texts: list[str]
    sets: dict[str, list[int]]
    task_to_dataset: dict[str, str]


def task_texts(tasks: Sequence[Any], seed: int | None = None, dataset: TextConfig | None = None) -> TaskTexts:
    """The texts of every task (one dry run of MTEB's evaluators each) and of an extra text source.

    ``seed`` is the evaluation's (None: each task's own, MTEB's 42): classification encodes only the
    training examples its seeded draws pick.
    """
    from layerscope.evaluate.runner import _load, collect_texts

    _load(tasks)
    per_source = {task.metadata.name: collect_texts([task], seed) for task in tasks}
    task_to_dataset = {name: name for name in per_source}
    if dataset is not None:
        per_source[dataset.dataset] = dataset.load()
    position: dict[str, int] = {}
    for source_texts in per_source.values():
        for text in source_texts:
            position.setdefault(text, len(position))
    if not position:
        raise LayerscopeError("the selected tasks and dataset provide no texts")
    sets = {name: sorted({position[text] for text in source_texts}) for name, source_texts in per_source.items()}
    return TaskTexts(list(position), sets, task_to_dataset)


def analyze(
    model: str = "smollm2-135m",
    *,
    revision: str | None = None,
    tasks: str | Iterable[Any] = "offline",
    metrics: str | Iterable[str] = "all",
    dataset: str | None = None,
    limit: int | None = None,
    column: str | None = None,
    out: str | Path = "runs/analyze",
    n_views: int = DEFAULT_N_VIEWS,
    view_texts: int | str | None = DEFAULT_VIEW_TEXTS,
    lidar_texts: int | str | None = DEFAULT_LIDAR_TEXTS,
    view_max_length: int | str | None = DEFAULT_VIEW_MAX_LENGTH,
    select_by: str = "auto",
    recipes: str | Sequence[str] = "auto",
    seed: int = 0,
    eval_seed: int | None = None,
    task_files: Any = None,
    pooling: str = "mean",
    final_norm: str = "none",
    max_length: int | None = None,
    batch_size: int | str = "auto",
    normalize: bool | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
    dtype: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
    report: bool = True,
    loaded_model: Any = None,
    eval_workers: int | str = "auto",
    bootstrap: int = 0,
    confidence: float = 0.95,
    resample_seed: int = 0,
) -> AnalysisResult:
    """Run the main analysis and write ``results.duckdb``, plots and ``report.html`` to ``out``.

    Parameters
    ----------
    model, revision, final_norm, device, dtype, trust_remote_code
        As in :func:`layerscope.load_model` (or pass ``loaded_model``).
    tasks : "offline", "paper32", task names, task files or MTEB task instances
        Downstream tasks scored at every layer (MTEB evaluators); task files (``.csv``, ``.tsv``,
        ``.jsonl``, ``.parquet``) become MTEB tasks by their columns (see
        :mod:`layerscope.evaluate.task_files`), and their texts feed the metrics too.
    metrics : "all" or names
        Label-free metrics, computed per task on that task's own texts and on all texts together.
    dataset, limit, column : str, int, str, optional
        An extra text source (bundled corpus, file, HF dataset) whose metrics are reported as well, how
        many of its texts (seeded subset) and its text column.
    n_views : int
        Views per text for LiDAR (the paper's 16); InfoNCE and DiME use 2.
    view_texts, lidar_texts, view_max_length : int, "all" or None
        The views budget of the whole run: how many texts InfoNCE and DiME see (2 views each) and how
        many LiDAR sees (``n_views`` views each, the first 2 of which also serve InfoNCE and DiME), seeded
        subsets spread over the text sets (each task's texts, the extra dataset) in proportion to their
        sizes, at least 2 each, and the tokens of each view. Views are extra forward passes, so they are
        capped by the views budget of every command (:class:`~layerscope.config.ViewConfig`'s defaults,
        measured by ``benchmarks/bench_views.py``); None or ``"all"``: every text (the paper's setting).
    select_by : str
        The rule that picks the label-free layer (see :mod:`layerscope.analysis.choice`): ``auto`` (the
        default: the rule the held-out protocol chose on the paper authors' models), a metric
        (``dime``: its registered direction; ``max:lidar``), ``depth:0.75``, ``dime@0.5-0.9``,
        ``rank:infonce+lidar``, ``last``.
    recipes : str or sequence of str
        Recipe sets scored beside the layers from the same pass (:mod:`layerscope.analysis.recipe_runs`),
        separated by ``|`` or given as a list: ``auto`` (the default: the held-out recipe protocol's set
        where it beat the last layer on models it was not chosen on, else nothing more than the last
        layer), ``none``, or sets such as ``classification=zmean:0.5-1;*=last+standardize``.
    seed : int
        Seed of text subsets and views.
    eval_seed : int, optional
        Seed of the evaluations (default: each MTEB task's own seed, 42, as a plain MTEB run).
    task_files : TaskFileConfig or mapping, optional
        How task files among ``tasks`` are read: column names, split, clustering
        (:class:`layerscope.config.TaskFileConfig`).
    pooling, max_length, batch_size, cache_dir, progress
        As in :func:`layerscope.extract`.
    normalize : bool or None
        ``None`` (auto): the last layer of a model that ships normalized (a sentence-transformers
        pipeline ending in ``Normalize``) is L2-normalized as it ships, so its score is MTEB's score of
        the model; ``False``: the raw layers; ``True``: every layer L2-normalized
        (:class:`~layerscope.config.ExtractConfig`).
    report : bool
        Write plots and ``report.html``.
    eval_workers : int or "auto"
        Processes running MTEB's evaluators over the layers (see :func:`layerscope.evaluate_layers`).
    bootstrap, confidence, resample_seed : int, float, int
        Score intervals: resamples of each task's evaluation examples scored by MTEB at every layer
        (0, the default: none; each resample costs one evaluation per layer and task), their level
        and seed (:class:`layerscope.config.IntervalConfig`). With a ``cache_dir``, each finished
        layer's scores and (layer, task) bootstrap unit is kept beside the embeddings
        (:mod:`~layerscope.evaluate.checkpoint`): a rerun after an interruption evaluates only the rest.
    """
    from layerscope.evaluate.catalog import resolve as resolve_tasks

    intervals = IntervalConfig(bootstrap, confidence, resample_seed)  # bad values fail before anything heavy
    task_list = resolve_tasks(tasks, seed=eval_seed, files=task_files)  # bad names and files fail before anything heavy
    config = AnalysisConfig(
        model=ModelConfig(model if loaded_model is None else str(loaded_model.model_id),
                          revision if loaded_model is None else loaded_model.revision, device, dtype,
                          trust_remote_code),
        extraction=ExtractConfig(pooling, final_norm if loaded_model is None else loaded_model.final_norm,
                                 max_length, batch_size, normalize=normalize),
        views=ViewConfig(n_views, view_texts, lidar_texts, view_max_length),
        tasks=tuple(task.metadata.name for task in task_list),
        metrics=metrics,
        dataset=None if dataset is None else TextConfig(dataset, column, limit, seed),
        select_by=select_by,
        recipes=recipes,
        seed=seed,
        eval_seed=eval_seed,
    )
    return run_analysis(config, out=out, tasks=task_list, loaded_model=loaded_model, cache_dir=cache_dir,
                        progress=progress, report=report, eval_workers=eval_workers, intervals=intervals)


def run_analysis(
    config: AnalysisConfig,
    *,
    out: str | Path,
    tasks: Sequence[Any] | None = None,
    loaded_model: Any = None,
    cache_dir: str | None = None,
    progress: bool = True,
    report: bool = True,
    eval_workers: int | str = "auto",
    intervals: IntervalConfig | None = None,
    notify: Any = None,
) -> AnalysisResult:
    """:func:`analyze` from a configuration (``tasks``: its task objects, if already built; ``intervals``:
    bootstrap score intervals, none by default; ``notify``: gets the lines said before the work, see
    :func:`~layerscope.metrics.compute.measure`)."""
    from layerscope.analysis.recipe_runs import resolve_recipes
    from layerscope.evaluate import evaluate_layers
    from layerscope.evaluate.catalog import resolve as resolve_tasks
    from layerscope.evaluate.offline import suite_label
    from layerscope.metrics.compute import measure
    from layerscope.store import ResultsStore

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task_list = list(tasks) if tasks is not None else resolve_tasks(list(config.tasks), seed=config.eval_seed)
    recipe_sets = resolve_recipes(config.recipes)  # a bad recipe set fails before the model loads
    bootstrap = intervals is not None and intervals.bootstrap > 0
    if bootstrap:
        from layerscope.evaluate.uncertainty import check_bootstrap_tasks

        check_bootstrap_tasks(task_list)  # an unsupported task type fails before the model loads
    model = loaded_model or config.model.load(config.extraction.final_norm)
    recipe_sets = resolve_recipes(config.recipes, kind=getattr(model, "kind", None))  # auto: for the model's kind
    step = time.perf_counter()
    texts = task_texts(task_list, config.eval_seed, config.dataset)
    timings = {"prepare_s": time.perf_counter() - step}

    with ResultsStore.in_directory(out) as store, store.run(
        config.to_dict(), model_id=str(model.model_id), revision=model.revision,
        data_source=config.dataset.dataset if config.dataset else "tasks: " + suite_label(config.tasks),
    ) as run:
        measured = measure(model, texts.texts, sets=texts.sets, union=ALL_TEXTS, metrics=config.metrics,
                           views=config.views, extraction=config.extraction, seed=config.seed,
                           cache_dir=cache_dir, progress=progress, notify=notify)
        step = time.perf_counter()
        scores = evaluate_layers(model, task_list, seed=config.eval_seed, extraction=measured.embeddings,
                                 eval_workers=eval_workers, progress=progress, cache_dir=cache_dir)
        timings["evaluate_s"] = time.perf_counter() - step
        if bootstrap:
            from layerscope.evaluate.uncertainty import bootstrap_layers

            assert intervals is not None
            step = time.perf_counter()
            scores = bootstrap_layers(scores, measured.embeddings, task_list, n_resamples=intervals.bootstrap,
                                      confidence=intervals.confidence, resample_seed=intervals.resample_seed,
                                      seed=config.eval_seed, name=f"layerscope/{model.model_id}",
                                      revision=model.revision, progress=progress, eval_workers=eval_workers,
                                      cache_dir=cache_dir)
            timings["bootstrap_s"] = time.perf_counter() - step
        recipe_scores = _score_recipes(model, config, measured.extraction, recipe_sets, task_list, eval_workers,
                                       timings)
        run.write_recipe_scores(recipe_scores)
        run.write_metrics(measured.metrics)
        run.write_scores(scores)
        run.write_prompt_values(main_prompt_values(measured.prompt_values))
        run.skipped.update(empty_texts=int(measured.extraction.record["n_skipped_empty"]),
                           nonfinite_layers=measured.extraction.record.get("nonfinite_layers", {}))
        if config.extraction.outlier_tokens is not None:
            run.skipped["outlier_tokens_by_layer"] = measured.extraction.record.get("outlier_tokens_dropped", {})

    from layerscope.analysis.summary import summarize
    from layerscope.evaluate.checkpoint import kept_counts

    summary = summarize(measured.metrics, scores, select_by=config.select_by, task_to_dataset=texts.task_to_dataset,
                        recipe_scores=recipe_scores)
    timings.update({key: measured.record[key] for key in ("extract_s", "views_s", "metrics_s")})
    record = _run_record(config, run.run_id, model, task_list, texts, measured, recipe_sets,
                         intervals if bootstrap else None)
    result = AnalysisResult(out, run.run_id, config, measured.metrics, scores, summary, record)
    if report:
        step = time.perf_counter()
        result.report = _write_report(result, measured)
        timings["report_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - started
    result.record["timings"] = {key: round(value, 2) for key, value in timings.items()}
    result.record["kept"] = kept_counts(scores)  # read back from the cache (a resumed run), not evaluated
    from layerscope.atomic import atomic_write_json

    atomic_write_json(out / "record.json", result.record)
    return result


def _score_recipes(model: Any, config: AnalysisConfig, extraction: Any, recipe_sets: Sequence[Any],
                   tasks: Sequence[Any], eval_workers: int | str, timings: dict[str, float]) -> pd.DataFrame:
    """The run's recipe sets scored from its raw per-layer embeddings (the last layer as the model ships it)."""
    from layerscope.analysis.recipe_runs import score_recipe_sets

    step = time.perf_counter()
    frame = score_recipe_sets(extraction, recipe_sets, tasks, normalized=config.extraction.normalized_layers(model),
                              seed=config.eval_seed, name=f"layerscope/{model.model_id}", eval_workers=eval_workers)
    if recipe_sets:
        timings["recipes_s"] = time.perf_counter() - step
    return frame


def _run_record(config: AnalysisConfig, run_id: str, model: Any, tasks: Sequence[Any], texts: TaskTexts,
                measured: Any, recipe_sets: Sequence[Any], intervals: IntervalConfig | None) -> dict[str, Any]:
    """What ``record.json`` says of a run: its configuration, model, suite, texts, views, recipes, extraction."""
    from layerscope.analysis.recipe_runs import recipes_record
    from layerscope.evaluate.offline import suite_record

    return {
        "layerscope": __version__, "run_id": run_id, "config": config.to_dict(), "model": model.describe(),
        "suite": suite_record(config.tasks, tasks),
        "n_texts": len(texts.texts), "n_kept": len(measured.extraction.texts),
        "n_skipped_empty": measured.extraction.record["n_skipped_empty"],
        "n_forward_texts": measured.record["n_forward_texts"],
        "views": measured.record["views"],
        "normalize": measured.record["normalize"],  # which layers were L2-normalized (the last, as shipped?)
        "recipes": recipes_record(config.recipes, recipe_sets, int(model.num_layers),
                                  config.extraction.normalized_layers(model), kind=getattr(model, "kind", None)),
        "intervals": intervals.to_dict() if intervals is not None else None,
        "extraction": {k: v for k, v in measured.extraction.record.items()
                       if isinstance(v, (int, float, str, bool, type(None)))},
    }


def main_prompt_values(prompt_values: pd.DataFrame) -> pd.DataFrame:
    """Per-prompt values in each metric's main normalization (what the store keeps, for histograms)."""
    from layerscope.metrics.registry import find

    if prompt_values.empty:
        return prompt_values.drop(columns="normalization", errors="ignore")
    main = prompt_values["metric"].map(lambda name: find(name).main if find(name) else "raw")
    return prompt_values[prompt_values["normalization"] == main].drop(columns="normalization")


def _write_report(result: AnalysisResult, measured: Any) -> Path:
    from layerscope.data import subset
    from layerscope.report import build_report, write_examples

    extraction = measured.extraction
    picks = subset(len(extraction.texts), 5, result.config.seed)
    write_examples(result.out, [extraction.texts[i] for i in picks], indices=[int(extraction.kept[i]) for i in picks])
    return build_report(result.out, run_id=result.run_id, select_by=result.config.select_by)


def analyze_many(configs: Sequence[Mapping[str, Any]]) -> list[AnalysisResult]:
    """Run several analyses in turn (keyword options of :func:`analyze` each)."""
    return [analyze(**config) for config in configs]
