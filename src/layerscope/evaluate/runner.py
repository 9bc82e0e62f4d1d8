"""Every layer through MTEB's evaluators from one encoding pass (SPEC section 5).

1. A dry run of MTEB's evaluators with a :class:`~layerscope.evaluate.encoder.TextRecorder`
   collects exactly the texts each task encodes (after MTEB's own preprocessing).
2. The unique texts are encoded once with :func:`layerscope.extract` (every layer pooled; its disk
   cache makes a rerun free).
3. For each layer, each task is reseeded exactly as a freshly created task would be and evaluated
   by ``mteb.evaluate`` on a :class:`~layerscope.evaluate.encoder.LayerView` serving that layer.

Seeds: by default each task keeps its own seed (MTEB's 42 for a task created without one), so a
layer's score equals a plain ``mteb.evaluate`` run of the same embeddings; ``seed=`` overrides it for
every task. Either way every (layer, task) starts from the same RNG state, so layers are comparable
and reruns identical.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning, UndefinedMetricWarning
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from layerscope.errors import LayerscopeError
from layerscope.evaluate.catalog import is_offline, resolve
from layerscope.evaluate.encoder import LayerView, TextRecorder
from layerscope.evaluate.hub_tasks import PAPER32
from layerscope.evaluate.intervals import scores_json
from layerscope.evaluate.seeds import own_seeds_kept, reseed, task_seed

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask
    from mteb.models.models_protocols import EncoderProtocol

    from layerscope.config import TaskFileConfig
    from layerscope.extract import Extraction
    from layerscope.models import LoadedModel

logger = logging.getLogger(__name__)

#: Columns of the frame returned by :func:`evaluate_layers`.
COLUMNS = ["layer", "depth_pct", "task", "task_type", "main_score", "scores"]

# The view answers from memory, so one batch per call keeps MTEB's dataloader overhead low.
_VIEW_ENCODE_KWARGS = {"batch_size": 4096, "show_progress_bar": False}


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load(tasks: Sequence[AbsTask]) -> None:
    from layerscope.hub import require_hub

    pending = [task for task in tasks if not task.data_loaded]
    hub_tasks = [task.metadata.name for task in pending if not is_offline(task)]
    if hub_tasks:
        require_hub("MTEB task(s) " + ", ".join(hub_tasks[:4]) + (" ..." if len(hub_tasks) > 4 else ""))
    for task in pending:
        try:
            task.load_data()
        except LayerscopeError:
            raise
        except Exception as error:  # noqa: BLE001 - datasets/hub raise many types; report one line
            raise LayerscopeError(f"cannot load the data of task {task.metadata.name}: {_one_line(error)}") from None


def _materialize_labels(task: AbsTask) -> None:
    """Hand MTEB's classification metrics the test labels as one array instead of a lazy column.

    With ``datasets`` 5, ``eval_split["label"]`` is a lazy ``Column`` that every sklearn metric
    re-reads row by row (about 90 % of a small classification task's time). Converting it once
    gives the same values, so the scores are unchanged.
    """
    from mteb.abstasks.classification import AbsTaskClassification

    if not isinstance(task, AbsTaskClassification) or getattr(task, "_layerscope_labels", False):
        return
    calculate = task._calculate_scores

    def calculate_scores(y_test: Any, y_pred: Any) -> Any:
        return calculate(np.asarray(list(y_test)), y_pred)

    task._calculate_scores = calculate_scores  # type: ignore[method-assign]
    task._layerscope_labels = True  # type: ignore[attr-defined]


def run_task(encoder: EncoderProtocol, task: AbsTask, seed: int | None = None, eval_threads: int | None = 1) -> dict[str, Any]:
    """Evaluate one task with MTEB (no results cache), reseeded first; returns MTEB's scores per split.

    ``seed`` None reseeds with the task's own seed (:func:`task_seed`). ``eval_threads`` caps BLAS/OpenMP threads during the evaluators (``None``: no cap): the per-layer
    problems are small, and on a shared machine one thread is up to ten times faster than two.

    Returns
    -------
    dict
        ``{split: [scores of each hf_subset]}`` exactly as in MTEB's ``TaskResult.scores``.
    """
    import datasets
    import mteb

    _materialize_labels(task)
    reseed(task, task_seed(task, seed))
    bars_were_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # MTEB re-formats retrieval corpora on every call
    try:
        with threadpool_limits(limits=eval_threads), warnings.catch_warnings():
            # Degenerate layers (e.g. a classifier predicting one class) make sklearn warn once per
            # experiment and layer; the scores it returns (0 for undefined precision) are MTEB's.
            warnings.filterwarnings("ignore", category=UndefinedMetricWarning)
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            result = mteb.evaluate(
                encoder,
                task,
                cache=None,
                show_progress_bar=False,
                encode_kwargs=dict(_VIEW_ENCODE_KWARGS),
                co2_tracker=False,
            )
    finally:
        if not bars_were_disabled:
            datasets.enable_progress_bars()
    if result.exceptions:
        raise LayerscopeError(f"task {task.metadata.name} failed: {_one_line(Exception(result.exceptions[0].exception))}")
    return result.task_results[0].scores


def main_score(scores: dict[str, list[dict[str, Any]]], split: str = "test") -> float:
    """The task's main score: MTEB's ``main_score`` averaged over the evaluated subsets of ``split``.

    For the paper's tasks this gives AmazonCounterfactual = mean of en and en-ext and STS17 = en-en
    (the only subsets selected, see :data:`~layerscope.evaluate.hub_tasks.PAPER32`).
    """
    if split not in scores:
        split = next(iter(scores))
    values = [float(entry["main_score"]) for entry in scores[split]]
    return float(np.mean(values)) if values else float("nan")


def collect_texts(tasks: Sequence[AbsTask], seed: int | None = None) -> list[str]:
    """Every text MTEB encodes for ``tasks`` (one dry run of the evaluators), unique, in first-seen order.

    ``seed`` must be the evaluation's (None: each task's own): classification encodes only the
    training examples its seeded draws pick.
    """
    recorder = TextRecorder(seed=0 if seed is None else seed)
    with own_seeds_kept(tasks):
        for task in tasks:
            run_task(recorder, task, seed)
    return list(recorder.texts)


def evaluate_layers(
    model: LoadedModel | str,
    tasks: str | AbsTask | Iterable[str | AbsTask] = "offline",
    layers: str | int | Sequence[int] = "all",
    pooling: str = "mean",
    seed: int | None = None,
    max_length: int | None = None,
    batch_size: int | str = "auto",
    cache_dir: str | None = None,
    progress: bool = True,
    extraction: Extraction | None = None,
    eval_workers: int | str = "auto",
    task_files: TaskFileConfig | Mapping[str, Any] | None = None,
    **extract_options: Any,
) -> pd.DataFrame:
    """Score every layer on downstream tasks with MTEB's evaluators, encoding each text once.

    Parameters
    ----------
    model : LoadedModel or str
        A loaded model, or a name for :func:`layerscope.load_model`.
    tasks : str, AbsTask or iterable
        ``"offline"`` (default: the offline suite), ``"paper32"``, task names, task files (``.csv``,
        ``.tsv``, ``.jsonl``, ``.parquet``) or MTEB task instances, in any mix (see
        :func:`layerscope.evaluate.catalog.resolve`).
    layers : "all", "last", int or list of int
        Canonical layers to score; with ``extraction``, ``"all"`` is every slice it holds.
    pooling : {"mean", "last", "first"}
        Pooling of token states (see :func:`layerscope.extract`).
    seed : int, optional
        Overrides every task's seed. Default: each task's own seed (MTEB's 42), so scores equal a
        plain ``mteb.evaluate`` run of the same embeddings. Either way the task and the global RNGs
        are reset before each (layer, task) evaluation, so layer scores are comparable and reruns
        identical.
    max_length : int
        Truncation length in tokens.
    batch_size : int or "auto"
        Extraction batch size.
    cache_dir : str, optional
        Embedding cache folder: a second call with the same texts and options reads it and does not
        run the model. Each layer's scores are kept beside it as they finish (``<cache_dir>/scores``,
        :mod:`~layerscope.evaluate.checkpoint`): a rerun after an interruption evaluates only the
        layers it had not finished (with ``extraction`` too).
    progress : bool
        Progress bars (extraction, layers).
    extraction : Extraction, optional
        Embeddings already made (e.g. by ``analyze``'s single pass, with its token hook) that hold every
        text the tasks need; the model is then not run at all.
    eval_workers : int or "auto"
        Processes that run the evaluators, one layer at a time each (``"auto"``: one per CPU, at
        most 8). Scores are identical whatever the number: every (layer, task) is reseeded.
    task_files : TaskFileConfig or mapping, optional
        How task files among ``tasks`` are read (columns, split, clustering); see
        :class:`~layerscope.config.TaskFileConfig`.
    **extract_options
        Further keyword options of :func:`layerscope.extract` (e.g. ``cache_dtype``), as
        :meth:`~layerscope.config.ExtractConfig.extract_options` gives them.

    Returns
    -------
    pandas.DataFrame
        One row per (layer, task): ``layer``, ``depth_pct``, ``task``, ``task_type``, ``main_score``
        (MTEB's main score of the test split, in [0, 1]) and ``scores`` (JSON of all MTEB scores).
        ``attrs`` holds the run record: model, extraction record, seed (None: the tasks' own) and each
        task's seed, ``from_cache``, ``layers_kept`` (layers read back from ``cache_dir`` instead of
        evaluated), text count, timings.
    """
    from layerscope.evaluate.checkpoint import checkpoint_folder
    from layerscope.evaluate.offline import suite_record
    from layerscope.extract import extract

    if isinstance(tasks, Iterable) and not isinstance(tasks, str):
        tasks = list(tasks)  # read twice: resolved here, recorded below
    task_list = resolve(tasks, seed=seed, files=task_files)  # bad names and files fail before anything heavy runs
    started = time.perf_counter()
    _load(task_list)
    loaded = time.perf_counter()
    if isinstance(model, str):
        from layerscope.models import load_model

        model = load_model(model)
    started += time.perf_counter() - loaded  # model loading is not part of the evaluation

    texts = collect_texts(task_list, seed)
    collected = time.perf_counter()
    logger.info("%d tasks need %d unique texts", len(task_list), len(texts))
    if extraction is not None:
        missing = set(texts) - set(extraction.texts)
        if missing:
            raise LayerscopeError(f"the given extraction lacks {len(missing)} of the tasks' {len(texts)} texts")
        extraction = _restricted(extraction, texts, layers, model.num_layers)
    else:
        extraction = extract(
            model,
            texts,
            pooling=pooling,
            layers=layers,
            batch_size=batch_size,
            max_length=max_length,
            cache_dir=cache_dir,
            progress=progress,
            **extract_options,
        )
    encoded = time.perf_counter()
    workers = resolve_workers(eval_workers, len(extraction.layers))
    with own_seeds_kept(task_list):
        frame, kept = _score_layers(model, extraction, task_list, seed, progress, workers,
                                    checkpoint_folder(cache_dir, "scores"))
    finished = time.perf_counter()
    frame.attrs["record"] = {
        "model": model.describe() if hasattr(model, "describe") else {"model_id": model.model_id},
        "extraction": {k: v for k, v in extraction.record.items() if _jsonable(v)},
        "tasks": [task.metadata.name for task in task_list],
        "suite": suite_record(tasks, task_list),
        "n_texts": len(texts),
        "seed": seed,
        "task_seeds": {task.metadata.name: task_seed(task, seed) for task in task_list},
        "pooling": pooling,
        "max_length": max_length,
        "from_cache": extraction.from_cache,
        "layers_kept": kept,
        "eval_workers": workers,
        "seconds": {
            "prepare": collected - started,  # task data + dry run collecting the texts
            "encode": encoded - collected,
            "evaluate": finished - encoded,
            "total": finished - started,
        },
    }
    return frame


def _restricted(extraction: Extraction, texts: Sequence[str], layers: Any, num_layers: int) -> Extraction:
    """The rows of ``texts`` and the requested layers of a larger extraction (no copy when they match)."""
    from layerscope.extract import Extraction, resolve_layers

    # "all": every slice the extraction holds (candidates beside the layers included, see evaluate.select)
    wanted = list(extraction.layers) if isinstance(layers, str) and layers == "all" else resolve_layers(layers, num_layers)
    positions = [extraction.layers.index(layer) for layer in wanted]
    if list(extraction.texts) == list(texts) and positions == list(range(len(extraction.layers))):
        return extraction
    row_of = {text: row for row, text in enumerate(extraction.texts)}
    rows = np.array([row_of[text] for text in texts])
    pooled = np.asarray(extraction.pooled)[np.ix_(positions, rows)]
    return Extraction(pooled, wanted, list(texts), extraction.kept[rows], dict(extraction.record), extraction.from_cache)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


# What forked evaluation workers inherit from the parent (set just before the pool starts).
_WORKER_STATE: dict[str, Any] = {}
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def resolve_workers(workers: int | str | None, n_layers: int) -> int:
    """Evaluation processes: ``"auto"`` = one per CPU (at most 8 and one per layer); 1 = in this process."""
    if workers in (None, "auto"):
        return max(1, min(os.cpu_count() or 1, 8, n_layers))
    try:
        count = int(workers)
    except (TypeError, ValueError):
        raise LayerscopeError(f"eval_workers must be a positive integer or 'auto', got '{workers}'") from None
    if count < 1:
        raise LayerscopeError(f"eval_workers must be a positive integer or 'auto', got '{workers}'")
    return min(count, max(1, n_layers))


def _score_layer(position: int) -> list[dict[str, Any]]:
    """Every task on one layer (in this process, or in a forked worker holding ``_WORKER_STATE``)."""
    state = _WORKER_STATE
    extraction, tasks, seed, num_layers = state["extraction"], state["tasks"], state["seed"], state["num_layers"]
    if "view" not in state:  # one encoder view per process, pointed at each layer in turn
        state["view"] = LayerView(extraction.texts, name=state["name"], revision=state["revision"])
    view = state["view"]
    layer = extraction.layers[position]
    view.set_layer(layer, extraction.pooled[position])
    rows = []
    for task in tasks:
        scores = run_task(view, task, seed)
        rows.append({"layer": layer, "depth_pct": 100.0 * layer / num_layers, "task": task.metadata.name,
                     "task_type": task.metadata.type, "main_score": main_score(scores), "scores": scores_json(scores)})
    return rows


def _worker_init() -> None:
    import signal

    import torch

    torch.set_num_threads(1)  # each worker one core (and no OpenMP pool inherited across the fork)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def fork_map(function: Callable[[_Item], _Result], items: Iterable[_Item], workers: int,
             on_done: Callable[[_Item, _Result], None] | None = None) -> dict[_Item, _Result]:
    """``function`` of every item: in turn in this process, or spread over forked worker processes.

    Workers are forked, so they share what the parent prepared (module state such as
    ``_WORKER_STATE``) copy-on-write; each uses one thread and leaves Ctrl-C to the parent, which
    drops the items not finished when anything fails (the workers are terminated, not awaited).
    Where fork is unavailable, or with one
    worker, the items run in this process.

    Parameters
    ----------
    function : callable
        Called with one item (a module-level function, so workers can run it).
    items : iterable
        Distinct hashable items.
    workers : int
        Processes (see :func:`resolve_workers`); 1 runs here.
    on_done : callable, optional
        Called with each finished item and its result, as it finishes (e.g. to keep it, and to
        update a progress bar).

    Returns
    -------
    dict
        Item -> result, in the order the items finished.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    results: dict[_Item, _Result] = {}
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)
        try:
            futures = {pool.submit(function, item): item for item in items}
            pending = set(futures)
            while pending:  # waits of 0.5 s: a Ctrl-C handled by another thread is raised here within 0.5 s
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    item = futures[future]
                    results[item] = future.result()
                    if on_done is not None:
                        on_done(item, results[item])
        except BaseException:
            _stop_now(pool)  # Ctrl-C or a failure: the items running and queued are dropped, not awaited
            raise
        pool.shutdown()
    else:
        for item in items:
            results[item] = function(item)
            if on_done is not None:
                on_done(item, results[item])
    return results


def _stop_now(pool: Any) -> None:
    """Shut a process pool down without waiting for its items: queued ones cancelled, workers terminated."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # private, there since Python 3.2
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()


def _score_layers(
    model: LoadedModel, extraction: Extraction, tasks: Sequence[AbsTask], seed: int | None, progress: bool,
    workers: int = 1, checkpoint_dir: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, int]:
    """MTEB's evaluators on every layer: in turn, or spread over forked worker processes (:func:`fork_map`).

    Every (layer, task) evaluation is reseeded, so the scores do not depend on the number of
    workers or on which worker ran a layer. The workers share the embeddings and the loaded tasks
    copy-on-write. Each finished layer is kept in ``checkpoint_dir`` (:mod:`~layerscope.evaluate.checkpoint`)
    and read back instead of evaluated again. Returns the scores and how many layers were read back.
    """
    from layerscope.evaluate.checkpoint import UnitCheckpoints, unit_digests

    positions = range(len(extraction.layers))
    name = f"layerscope/{model.model_id}"
    checkpoints = UnitCheckpoints(checkpoint_dir, "scores", {"seed": seed, "name": name, "revision": model.revision,
                                                             "num_layers": model.num_layers})
    layer_keys, task_keys = unit_digests(checkpoints, extraction, positions, tasks)
    keys = {} if None in task_keys else {
        position: checkpoints.key(layer_keys[position], extraction.layers[position], task_keys) for position in positions}
    kept = {position: json.loads(str(stored)) for position, key in keys.items()
            if (stored := checkpoints.load(key)) is not None}
    _WORKER_STATE.clear()
    _WORKER_STATE.update(extraction=extraction, tasks=tasks, seed=seed, num_layers=model.num_layers, name=name,
                         revision=model.revision)
    bar = tqdm(total=len(positions), initial=len(kept), desc="evaluating layers", unit="layer", disable=not progress)

    def done(position: int, rows: list[dict[str, Any]]) -> None:
        if position in keys:
            checkpoints.save(keys[position], np.array(json.dumps(rows)))
        bar.update(1)

    try:
        results = fork_map(_score_layer, [p for p in positions if p not in kept], workers, done)
    finally:
        bar.close()
        _WORKER_STATE.clear()
    results.update(kept)
    rows = [row for position in positions for row in results[position]]
    return pd.DataFrame(rows, columns=COLUMNS), len(kept)


def average_by_layer(frame: pd.DataFrame, tasks: Iterable[str] | None = None, scale: float = 100.0) -> pd.DataFrame:
    """Average main score over tasks for each layer.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`evaluate_layers`.
    tasks : iterable of str, optional
        Restrict to these tasks (all must be present).
    scale : float
        Multiplier (100 gives the paper's percent).

    Returns
    -------
    pandas.DataFrame
        ``layer``, ``depth_pct``, ``average``, ``n_tasks``, sorted by layer.
    """
    if tasks is not None:
        wanted = list(tasks)
        missing = sorted(set(wanted) - set(frame["task"]))
        if missing:
            raise LayerscopeError(f"missing tasks for the average: {', '.join(missing)}")
        frame = frame[frame["task"].isin(wanted)]
    grouped = frame.groupby(["layer", "depth_pct"], as_index=False).agg(
        average=("main_score", "mean"), n_tasks=("task", "nunique")
    )
    grouped["average"] *= scale
    return grouped.sort_values("layer").reset_index(drop=True)


def layer_table(frame: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Per-layer summary: average over all tasks and over the tasks of each type.

    Returns
    -------
    pandas.DataFrame
        ``layer``, ``depth_pct``, ``average``, then one column per task type (e.g.
        ``Classification``), each the mean main score x ``scale``.
    """
    table = average_by_layer(frame, scale=scale).drop(columns="n_tasks")
    by_type = frame.pivot_table(index="layer", columns="task_type", values="main_score", aggfunc="mean") * scale
    return table.merge(by_type.reset_index(), on="layer").rename_axis(columns=None)


def paper32_average(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's aggregate per layer: mean over its 32 tasks of the test main score, x 100.

    AmazonCounterfactual counts as the mean of its en and en-ext subsets and STS17 as en-en (the
    subsets :func:`run_mteb` evaluates), so each of the 32 tasks weighs the same.
    """
    return average_by_layer(frame, tasks=PAPER32, scale=100.0)


def best_and_last(frame: pd.DataFrame) -> dict[str, float]:
    """Best layer, its average score, and the last layer's average (percent) from :func:`evaluate_layers`."""
    averages = average_by_layer(frame)
    best = averages.loc[averages["average"].idxmax()]
    last = averages.iloc[-1]
    return {
        "best_layer": int(best["layer"]),
        "best_average": float(best["average"]),
        "last_layer": int(last["layer"]),
        "last_average": float(last["average"]),
    }


def save_scores(frame: pd.DataFrame, summary: pd.DataFrame, out: Path) -> dict[str, Path]:
    """Write an evaluation into ``out``: every score, the per-layer summary and the run's record.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`evaluate_layers`'s (or :func:`run_mteb`'s) frame; its ``attrs["record"]`` is the record.
    summary : pandas.DataFrame
        The per-layer table written beside it (:func:`layer_table`, perhaps with more columns).
    out : pathlib.Path
        An existing folder.

    Returns
    -------
    dict of str to pathlib.Path
        ``scores`` (``scores.csv``), ``layers`` (``layers.csv``) and ``record`` (``record.json``), each
        written atomically.
    """
    from layerscope.atomic import atomic_write_bytes, atomic_write_json

    written = {"scores": out / "scores.csv", "layers": out / "layers.csv", "record": out / "record.json"}
    atomic_write_bytes(written["scores"], frame.to_csv(index=False).encode())
    atomic_write_bytes(written["layers"], summary.to_csv(index=False).encode())
    atomic_write_json(written["record"], frame.attrs.get("record", {}))
    return written


def run_mteb(
    model: LoadedModel | str,
    tasks: str | Iterable[str | AbsTask] = "paper32",
    seed: int | None = None,
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """Score every layer on real MTEB hub tasks (default: the paper's 32), one task at a time.

    Each task's texts are encoded once for all layers; tasks are processed in turn so only one
    task's embeddings are in memory. Needs the Hugging Face hub: offline it raises a one-line
    :class:`~layerscope.errors.LayerscopeError` before loading the model. Aggregate with
    :func:`paper32_average`.

    Parameters
    ----------
    model, seed, progress
        As for :func:`evaluate_layers`.
    tasks : str or iterable
        ``"paper32"`` (default), a comma-separated string or a list of MTEB task names/instances.
    **options
        Further keyword options of :func:`evaluate_layers`, passed to it for each task: ``layers``,
        ``pooling``, ``max_length``, ``batch_size``, ``cache_dir``, ``eval_workers`` and the options
        of :func:`layerscope.extract`.

    Returns
    -------
    pandas.DataFrame
        As :func:`evaluate_layers`, all tasks concatenated.
    """
    from layerscope.hub import require_hub

    task_list = resolve(tasks, seed=seed)
    if any(not is_offline(task) for task in task_list):
        require_hub("MTEB hub tasks")
    if isinstance(model, str):
        from layerscope.models import load_model

        model = load_model(model)
    frames = []
    for task in tqdm(task_list, desc="MTEB tasks", unit="task", disable=not progress):
        frame = evaluate_layers(model, [task], seed=seed, progress=progress, **options)
        frames.append(frame)
        task.unload_data()
    result = pd.concat(frames, ignore_index=True)
    result.attrs["record"] = {"tasks": [t.metadata.name for t in task_list], "runs": [f.attrs["record"] for f in frames]}
    return result
