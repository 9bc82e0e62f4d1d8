"""The skeleton every further experiment shares: common inputs, store runs, plots and the result.

An experiment module keeps what is its own (its conditions, its measurement, its tables and its
plots); the steps they all take are here:

1. An experiment function declares its own options in its signature and takes the options every
   experiment shares (:class:`CommonOptions`: text source, extraction, loading, output) as
   ``**common``, through :func:`common_options`. :meth:`Setup.from_options` turns them into typed
   configurations of :mod:`layerscope.config`, validated once: a bad value (or an option the
   experiment does not have) is a one-line :class:`~layerscope.errors.LayerscopeError` before
   anything loads. The configuration (an :class:`ExperimentConfig`) is recorded with every run the
   experiment writes.
2. :meth:`Setup.load` and :meth:`Setup.load_texts` give the model(s) and the texts.
3. The experiment measures and builds its tables and summary.
4. :meth:`Setup.write` stores each run as it is ready (the store's own tables: ``experiment_values``
   rows from :func:`experiment_rows`, the ``layer_metrics`` table of
   :func:`~layerscope.metrics.compute.measure`, prompt values, task scores), one transaction each.
5. :meth:`Setup.finish` wraps the tables into an :class:`ExperimentResult` and draws the experiment's
   :class:`Plot` list into ``<out>/<experiment>_<name>.png`` (a failed plot only warns: the numbers
   are stored by then).

:func:`measure_models` is the skeleton of the experiments that compare several models (or
checkpoints) on the same texts, one model in memory at a time.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, TypedDict

import pandas as pd

from layerscope.config import DEFAULT_MAX_LENGTH, Config, ExtractConfig, ModelConfig, TextConfig, option
from layerscope.errors import LayerscopeError, unknown
from layerscope.experiments import COMMON_DEFAULTS, COMMON_OPTIONS
from layerscope.models.loading import LoadedModel

__all__ = ["COMMON_DEFAULTS", "COMMON_OPTIONS", "DEFAULT_DATASET", "DEFAULT_METRICS", "CommonOptions",
           "ExperimentConfig", "ExperimentResult", "ModelEntry", "Plot", "Setup", "StoreRun", "Texts",
           "common_options", "experiment_rows", "float_list", "int_list", "log2_ticks", "measure_models",
           "metric_names", "model_label", "progress_bar", "split_list"]

logger = logging.getLogger(__name__)

#: Bundled corpus used when an experiment is given neither texts nor a dataset: news articles, long
#: enough that prompts reach ``max_length`` (prefix sweeps need long prompts).
DEFAULT_DATASET = "bbc"

# ------------------------------------------------------------------------------------------ result


@dataclass
class ExperimentResult:
    """What an experiment returns.

    Attributes
    ----------
    experiment : str
        Registry name (``"extreme_prompts"``, ...).
    tables : dict of str to pandas.DataFrame
        Result tables; each experiment's docstring lists them.
    summary : dict
        Key numbers (JSON-serialisable), e.g. prompt entropy per condition at a few depths.
    out : pathlib.Path or None
        Output directory (``results.duckdb`` and the PNG files), None when nothing was written.
    plots : list of pathlib.Path
        PNG files written.
    run_ids : list of str
        Runs written into the store.
    config : ExperimentConfig or None
        How the numbers were made (recorded with every run).
    """

    experiment: str
    tables: dict[str, pd.DataFrame]
    summary: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None
    plots: list[Path] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    config: ExperimentConfig | None = None

    def __getitem__(self, name: str) -> pd.DataFrame:
        try:
            return self.tables[name]
        except KeyError:
            raise LayerscopeError(
                f"experiment '{self.experiment}' has no table '{name}'; tables: {', '.join(self.tables)}"
            ) from None


# ------------------------------------------------------------------------------------------ options


def split_list(value: str | Iterable[Any] | None) -> list[Any]:
    """A list from a comma-separated string (CLI) or any iterable; None gives an empty list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item).strip() if isinstance(item, str) else item for item in value]


def float_list(value: str | Iterable[float], name: str) -> list[float]:
    """Floats from a comma-separated string or an iterable (one-line error on a bad entry)."""
    try:
        return [float(item) for item in split_list(value)]
    except (TypeError, ValueError):
        raise LayerscopeError(f"{name} must be numbers separated by commas, got '{value}'") from None


def int_list(value: str | Iterable[int], name: str) -> list[int]:
    """Integers from a comma-separated string or an iterable."""
    try:
        return [int(item) for item in split_list(value)]
    except (TypeError, ValueError):
        raise LayerscopeError(f"{name} must be integers separated by commas, got '{value}'") from None


def metric_names(metrics: str | Iterable[str]) -> list[str]:
    """Registry names of a metric selection, validated before any work (unknown names suggest the nearest)."""
    from layerscope.metrics.registry import resolve

    return [spec.name for spec in resolve(metrics)]


def model_label(model: LoadedModel) -> str:
    """Short readable name of a model: its alias or the last part of its id/path, with the revision."""
    name = str(model.model_id).rstrip("/").split("/")[-1]
    # a hub revision (Pythia's step64000) tells checkpoints apart; bundled and local models need none
    return f"{name}@{model.revision}" if model.revision and model.source == "huggingface hub" else name


# ------------------------------------------------------------------------------------------ common options


class CommonOptions(TypedDict, total=False):
    """The options the experiments share, beside ``model`` and ``texts`` (their first, positional, arguments).

    An experiment function takes them as ``**common`` (see :func:`common_options`): each takes those
    it uses, with the defaults of :data:`COMMON_DEFAULTS` unless it declares its own, and its
    signature (``help``, ``inspect.signature``, :meth:`~layerscope.experiments.Experiment.options`)
    lists them with its defaults. :meth:`Setup.from_options` validates them (one-line errors). The
    CLI offers them once for every experiment (``layerscope experiment --help``).

    Attributes
    ----------
    dataset : str, optional
        Text source read when no texts are given in code: a bundled corpus, a file or a hub data set
        (default :data:`DEFAULT_DATASET`; see :class:`~layerscope.config.TextConfig`).
    limit : int or None
        A seeded random subset of this many texts of ``dataset``, or the first ``limit`` texts given
        in code; None: all of them.
    seed : int
        Seed of the subset, perturbations, views and probes.
    max_length : int
        Truncate prompts to this many tokens.
    batch_size : int or "auto"
        Prompts per forward pass.
    out : str or Path, optional
        Output directory, created: ``results.duckdb`` and the PNG files (None: nothing is written).
    progress : bool
        Progress bars.
    revision : str, optional
        Hub revision of the model.
    device, dtype : str, optional
        Where and in which precision named models load (see :class:`~layerscope.config.ModelConfig`).
    final_norm : {"none", "all"}
        Whether the model's final norm is applied to every layer (see
        :class:`~layerscope.config.ExtractConfig`).
    """

    dataset: str | None
    limit: int | None
    seed: int
    max_length: int
    batch_size: int | str
    out: str | Path | None
    progress: bool
    revision: str | None
    device: str | None
    dtype: str | None
    final_norm: str




def common_options(
    *, without: Iterable[str] = (), **defaults: Any
) -> Callable[[Callable[..., ExperimentResult]], Callable[..., ExperimentResult]]:
    """Declare that an experiment function takes the common options (:class:`CommonOptions`) as ``**common``.

    The function receives every common option it takes in ``common``, defaults filled in, and passes
    them on to :meth:`Setup.from_options`. An option that is neither its own nor a common one it
    takes is a one-line :class:`~layerscope.errors.LayerscopeError`. Its signature lists the common
    options after its own ones, with their defaults.

    Parameters
    ----------
    without : iterable of str
        Common options the experiment does not take (e.g. ``revision`` where it has revisions of its
        own).
    **defaults
        The experiment's own defaults of common options (e.g. ``limit=128``).

    Examples
    --------
    >>> @common_options(limit=128)                                                      # doctest: +SKIP
    ... def my_experiment(model, texts=None, *, bins=20, **common: Unpack[CommonOptions]) -> ExperimentResult:
    ...     setup = Setup.from_options("my_experiment", model=model, texts=texts, options={"bins": bins}, **common)
    """
    without = tuple(without)
    for name in (*without, *defaults):
        if name not in COMMON_DEFAULTS:
            raise unknown("common option", name, COMMON_DEFAULTS)
    taken = {name: defaults.get(name, default) for name, default in COMMON_DEFAULTS.items() if name not in without}
    types = {name: getattr(kind, "__forward_arg__", kind) for name, kind in CommonOptions.__annotations__.items()}

    def decorate(function: Callable[..., ExperimentResult]) -> Callable[..., ExperimentResult]:
        signature = inspect.signature(function)
        own = [parameter for parameter in signature.parameters.values() if parameter.kind != parameter.VAR_KEYWORD]
        names = {parameter.name for parameter in own}
        if names & set(taken):
            raise ValueError(f"{function.__name__}: own option(s) {sorted(names & set(taken))} are common options")
        accepted = ", ".join(sorted(names | set(taken)))

        @functools.wraps(function)
        def experiment(*args: Any, **options: Any) -> ExperimentResult:
            extra = sorted(set(options) - names - set(taken))
            if extra:
                raise LayerscopeError(f"{function.__name__} has no option(s) {', '.join(extra)}; options: {accepted}")
            return function(*args, **{**taken, **options})

        common = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=types[name])
                  for name, default in taken.items()]
        experiment.__signature__ = signature.replace(parameters=[*own, *common])  # type: ignore[attr-defined]
        experiment.common_options = MappingProxyType(taken)  # type: ignore[attr-defined]
        return experiment

    return decorate


# ------------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class ExperimentConfig(Config):
    """What defines the numbers of one experiment run, recorded verbatim (``to_dict()``) with it.

    Attributes
    ----------
    experiment : str
        Store name of the experiment (``extreme_prompts``).
    model : ModelConfig or None
        The run's model (for a model given loaded: its id and revision); None when the experiment
        loads none (``train_tiny`` makes one).
    texts : TextConfig or None
        The text (or image) source; None when the inputs were given in code (the run's data hash
        identifies them).
    extraction : ExtractConfig or None
        Pooling, final norm, truncation and batch size of the forward passes; None when there are none.
    seed : int
        Seed of subsets, perturbations, views and probes.
    options : mapping
        The experiment's own options, as JSON values.
    details : mapping
        What tells this run from the experiment's other runs (a model label, a checkpoint, a role) and
        values resolved while running (e.g. automatic prefix lengths).
    model_info : mapping
        :meth:`~layerscope.models.LoadedModel.describe` of the run's model (family, size, dtype, device).
    """

    kind: ClassVar[str] = "experiment"

    experiment: str = option("", "Store name of the experiment.", label="Experiment", cli=False)
    model: ModelConfig | None = None
    texts: TextConfig | None = None
    extraction: ExtractConfig | None = None
    seed: int = option(0, "Seed of subsets, perturbations, views and probes.", label="Seed")
    options: Mapping[str, Any] = option(None, "The experiment's own options.", label="Options", cli=False,
                                        factory=dict)
    details: Mapping[str, Any] = option(None, "What tells this run from the experiment's others.", label="Run",
                                        cli=False, factory=dict)
    model_info: Mapping[str, Any] = option(None, "Description of the run's loaded model.", cli=False, factory=dict)

    def validate(self) -> None:
        if not self.experiment:
            raise LayerscopeError("an experiment configuration needs the experiment's name")
        # frozen: a configuration must not change under the runs that recorded it
        for name in ("options", "details", "model_info"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


class Texts(NamedTuple):
    """The texts of an experiment, where they came from and their content hash (the store's ``data_hash``)."""

    texts: list[str]
    source: str
    digest: str


def texts_digest(texts: Sequence[str]) -> str:
    """Content hash of the texts (the store's ``data_hash``)."""
    from layerscope.extract.cache import texts_hash

    return texts_hash(list(texts))


@dataclass
class StoreRun:
    """One run an experiment writes into the results store, in the store's own tables.

    Attributes
    ----------
    details : mapping
        What tells this run from the experiment's other runs (recorded in its configuration).
    model : LoadedModel, optional
        The run's model: its id, revision and description are recorded.
    experiment_values, metrics, prompt_values, scores : pandas.DataFrame, optional
        Rows of the store's ``experiment_values`` (see :func:`experiment_rows`), ``layer_metrics``,
        ``prompt_values`` and ``task_scores`` tables.
    model_id, revision, data_source, data_hash : str, optional
        Override what the model and the setup's texts give.
    skipped : mapping, optional
        Skip counts (e.g. empty prompts).
    """

    details: Mapping[str, Any] = field(default_factory=dict)
    model: LoadedModel | None = None
    experiment_values: pd.DataFrame | None = None
    metrics: pd.DataFrame | None = None
    prompt_values: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None
    model_id: str | None = None
    revision: str | None = None
    data_source: str | None = None
    data_hash: str | None = None
    skipped: Mapping[str, int] | None = None


class Plot:
    """One PNG of an experiment: ``draw(*args, out=path, **kwargs)`` writes ``<out>/<experiment>[_<name>].png``.

    Parameters
    ----------
    name : str or None
        Suffix of the file name (None: ``<experiment>.png``).
    draw : callable
        Returns the path it wrote.
    *args, **kwargs
        Passed to ``draw``.
    """

    def __init__(self, name: str | None, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.name = name
        self.draw = draw
        self.args = args
        self.kwargs = kwargs

    def file(self, out: Path, experiment: str) -> Path:
        """The PNG path in ``out``."""
        return out / (f"{experiment}_{self.name}.png" if self.name else f"{experiment}.png")


def _model_name(model: Any) -> str:
    if isinstance(model, LoadedModel):
        return str(model.model_id)
    if isinstance(model, (list, tuple)):
        return ",".join(_model_name(item) for item in model)
    return str(model)


@dataclass
class Setup:
    """The common inputs of one experiment call, validated once, and the steps every experiment shares.

    Make one with :meth:`from_options`.

    Attributes
    ----------
    config : ExperimentConfig
        The experiment's configuration; each run records it with its own model and details.
    text_source : TextConfig
        The text source and limit (the limit applies to texts given in code too).
    given_texts : sequence, optional
        Texts (or images) given in code.
    out : pathlib.Path or None
        Output directory (created); None writes nothing.
    progress : bool
        Progress bars.
    run_ids : list of str
        Runs written so far.
    texts : Texts or None
        The texts, once :meth:`load_texts` has read them.
    """

    config: ExperimentConfig
    text_source: TextConfig
    given_texts: Sequence[Any] | None = None
    out: Path | None = None
    progress: bool = True
    run_ids: list[str] = field(default_factory=list)
    texts: Texts | None = None

    @classmethod
    def from_options(
        cls,
        experiment: str,
        *,
        model: Any = None,
        texts: Sequence[Any] | None = None,
        dataset: str | None = None,
        limit: int | None = None,
        seed: int = 0,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int | str = "auto",
        pooling: str = "mean",
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        final_norm: str = "none",
        out: str | Path | None = None,
        progress: bool = True,
        options: Mapping[str, Any] | None = None,
        extracts: bool = True,
    ) -> Setup:
        """Validate the common options once (one-line errors) and build the configuration.

        Parameters
        ----------
        experiment : str
            Store name of the experiment.
        model : str, LoadedModel, a sequence of them, or None
            What the experiment analyses (None: it loads no model).
        texts : sequence, optional
            Texts (or images) given in code; otherwise ``dataset`` is read (default :data:`DEFAULT_DATASET`).
        dataset, limit, seed
            The text source (see :class:`~layerscope.config.TextConfig`).
        max_length, batch_size, pooling, final_norm
            The extraction (see :class:`~layerscope.config.ExtractConfig`).
        revision, device, dtype
            How named models load (see :class:`~layerscope.config.ModelConfig`).
        out : str or Path, optional
            Output directory (created here, so an unwritable one fails before any work).
        progress : bool
            Progress bars.
        options : mapping, optional
            The experiment's own options, as JSON values (recorded).
        extracts : bool, default True
            Whether the experiment runs forward passes (False: no extraction configuration).
        """
        if isinstance(texts, str):
            raise LayerscopeError("texts must be a list of strings, not one string")
        source = TextConfig(dataset=dataset or DEFAULT_DATASET, limit=limit, seed=seed)  # validates limit too
        extraction = ExtractConfig(pooling=pooling, final_norm=final_norm, max_length=max_length,
                                   batch_size=batch_size)
        # how named models load; each run records its own model's id and revision (see record)
        model_config = None if model is None else ModelConfig(model=_model_name(model), revision=revision,
                                                              device=device or "auto", dtype=dtype)
        config = ExperimentConfig(experiment=experiment, model=model_config, texts=None if texts is not None else source,
                                  extraction=extraction if extracts else None, seed=seed, options=options or {})
        directory = None
        if out is not None:
            from layerscope.atomic import writable_directory

            directory = writable_directory(Path(out).expanduser(), "out")
        return cls(config, source, texts, directory, bool(progress))

    @property
    def experiment(self) -> str:
        """Store name of the experiment."""
        return self.config.experiment

    @property
    def extraction(self) -> ExtractConfig:
        """The extraction configuration (the default one for experiments without forward passes)."""
        return self.config.extraction or ExtractConfig()

    def load(self, model: str | LoadedModel, revision: str | None = None, final_norm: str | None = None) -> LoadedModel:
        """``model`` itself when already loaded, else loaded with the setup's device, dtype and final norm.

        Parameters
        ----------
        model : str or LoadedModel
        revision : str, optional
            Hub revision (default: the setup's).
        final_norm : str, optional
            Override the setup's final norm (the sub-layer experiment reads raw states).
        """
        if isinstance(model, LoadedModel):
            return model
        template = self.config.model or ModelConfig(model=str(model))
        chosen = template.replace(model=str(model), revision=revision or template.revision)
        return chosen.load(final_norm or self.extraction.final_norm)

    def load_texts(self) -> Texts:
        """The texts: those given in code (the first ``limit``), else a seeded subset of the text source."""
        if self.given_texts is not None:
            chosen = [str(text) for text in self.given_texts][: self.text_source.limit]
            if not chosen:
                raise LayerscopeError("no texts given: the text list is empty")
            self.texts = Texts(chosen, "texts given in code", texts_digest(chosen))
        else:
            chosen = self.text_source.load()
            self.texts = Texts(chosen, str(self.text_source.dataset), texts_digest(chosen))
        return self.texts

    def record(self, run: StoreRun) -> dict[str, Any]:
        """The configuration a run records: the setup's, with the run's model and details."""
        config = self.config.replace(details={**self.config.details, **run.details})
        loaded = run.model
        if loaded is not None:
            template = config.model or ModelConfig(model=str(loaded.model_id))
            config = config.replace(model=template.replace(model=str(loaded.model_id), revision=loaded.revision),
                                    model_info=loaded.describe())
            if config.extraction is not None:  # a model given loaded carries its own final norm
                config = config.replace(extraction=config.extraction.replace(final_norm=loaded.final_norm))
        return config.to_dict()

    def rows(self, frame: pd.DataFrame, condition: str | Sequence[str] | None, key: str | Sequence[str],
             value: str = "value", layer: str | None = "layer") -> pd.DataFrame:
        """Rows of the store's ``experiment_values`` table for this experiment (:func:`experiment_rows`)."""
        return experiment_rows(frame, self.experiment, condition, key, value, layer)

    def write(self, run: StoreRun | None = None, /, **fields: Any) -> str | None:
        """Write one run into ``<out>/results.duckdb`` in one transaction (nothing without ``out``).

        The run is ``run``, or the :class:`StoreRun` that ``fields`` make (``details``, ``model``, its
        tables...). The run id hashes the recorded configuration, so re-running the same configuration
        replaces its rows.

        Returns
        -------
        str or None
            The run id.
        """
        if run is None:
            run = StoreRun(**fields)
        elif fields:
            raise TypeError("Setup.write takes a StoreRun or its fields, not both")
        if self.out is None:
            return None
        from layerscope.store import ResultsStore

        loaded = run.model
        texts = self.texts
        with ResultsStore.in_directory(self.out) as store:
            run_id = store.write_run(
                self.record(run), metrics=run.metrics, scores=run.scores, prompt_values=run.prompt_values,
                experiment_values=run.experiment_values,
                model_id=run.model_id or (None if loaded is None else str(loaded.model_id)),
                revision=run.revision if run.revision is not None else (None if loaded is None else loaded.revision),
                data_source=run.data_source or (None if texts is None else texts.source),
                data_hash=run.data_hash or (None if texts is None else texts.digest), skipped=run.skipped)
        self.run_ids.append(run_id)
        return run_id

    def finish(self, tables: dict[str, pd.DataFrame], summary: dict[str, Any],
               plots: Callable[[ExperimentResult], Iterable[Plot]] | None = None) -> ExperimentResult:
        """The result; with an output directory, its plots drawn there (after the runs are stored).

        Parameters
        ----------
        tables : dict of str to pandas.DataFrame
        summary : dict
        plots : callable, optional
            The experiment's plots of a result (drawn only with an output directory).
        """
        result = ExperimentResult(self.experiment, tables, summary, self.out, run_ids=list(self.run_ids),
                                  config=self.config)
        if self.out is not None and plots is not None:
            for plot in plots(result):
                self._draw(result, plot)
        return result

    def _draw(self, result: ExperimentResult, plot: Plot) -> None:
        """Draw one plot; a failed plot only warns.

        A plot is a by-product: the numbers are already stored when it is drawn, so a plotting problem
        (a degenerate table, a missing font) must not lose them.
        """
        assert self.out is not None
        target = plot.file(self.out, self.experiment)
        try:
            written = plot.draw(*plot.args, out=target, **plot.kwargs)
        except (LayerscopeError, ValueError) as error:
            logger.warning("no plot %s: %s", target.name, error)
            return
        result.plots.append(Path(written))


# ------------------------------------------------------------------------------------------ store rows


def experiment_rows(
    frame: pd.DataFrame,
    experiment: str,
    condition: str | Sequence[str] | None,
    key: str | Sequence[str],
    value: str = "value",
    layer: str | None = "layer",
) -> pd.DataFrame:
    """Rows of the store's ``experiment_values`` table from a result table.

    Parameters
    ----------
    frame : pandas.DataFrame
        A result table.
    experiment : str
        Experiment name written in every row.
    condition : str or sequence of str or None
        Column(s) naming the condition; several are joined as ``"a=x, b=y"``.
    key : str or sequence of str
        Column(s) naming the value (e.g. ``metric`` and ``normalization``, joined with ``:``).
    value : str
        Column of the value.
    layer : str or None
        Column of the layer (None: rows not tied to a layer).
    """

    def joined(columns: str | Sequence[str] | None, with_names: bool) -> pd.Series:
        if columns is None:
            return pd.Series([None] * len(frame), index=frame.index, dtype=object)
        names = [columns] if isinstance(columns, str) else list(columns)
        if len(names) == 1:
            return frame[names[0]].astype(str)
        parts = [(f"{name}=" if with_names else "") + frame[name].astype(str) for name in names]
        glue = ", " if with_names else ":"
        result = parts[0]
        for part in parts[1:]:
            result = result + glue + part
        return result

    return pd.DataFrame({
        "experiment": experiment,
        "condition": joined(condition, True).to_numpy(),
        "layer": frame[layer].astype("Int64").to_numpy() if layer else pd.array([pd.NA] * len(frame), dtype="Int64"),
        "key": joined(key, False).to_numpy(),
        "value": pd.to_numeric(frame[value], errors="coerce").astype(float).to_numpy(),
    })


# ------------------------------------------------------------------------------------------ several models

#: Metrics of the checkpoint and size experiments: no augmented views needed (no nlpaug, no extra passes).
DEFAULT_METRICS = ("prompt_entropy", "dataset_entropy", "curvature", "effective_rank")


@dataclass
class ModelEntry:
    """One model of a multi-model experiment: a legend label and how to load it."""

    label: str
    model: str | LoadedModel
    revision: str | None = None


def measure_models(
    setup: Setup,
    entries: Sequence[ModelEntry],
    metrics: str | Sequence[str],
    condition: str = "model",
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Per-layer metrics of several models (or checkpoints) on the setup's texts, one model in memory at a time.

    Each model is one store run (``layer_metrics`` and ``experiment_values`` with the model's label as
    condition), written as soon as it is measured.

    Parameters
    ----------
    setup : Setup
        Its texts must be loaded (:meth:`Setup.load_texts`).
    entries : sequence of ModelEntry
    metrics : str or sequence of str
        Registered metrics (:func:`~layerscope.metrics.compute.measure`).
    condition : str
        Name of the column holding the labels (``model``, ``checkpoint``).

    Returns
    -------
    frame : pandas.DataFrame
        ``layer, depth_pct, metric, normalization, value, n_used, n_skipped`` of every model, with the
        ``condition`` column (the label) and ``order`` (position in ``entries``).
    described : list of dict
        :meth:`LoadedModel.describe` of each model, with its label.
    """
    from layerscope.metrics.compute import METRIC_COLUMNS, measure

    texts = setup.texts
    assert texts is not None, "load the texts first"
    labels = [entry.label for entry in entries]
    if len(set(labels)) != len(labels):
        raise LayerscopeError(f"{condition} labels must be distinct, got {labels}")
    frames, described = [], []
    for order, entry in enumerate(progress_bar(entries, setup.progress, setup.experiment, total=len(entries))):
        loaded = setup.load(entry.model, entry.revision)
        measured = measure(loaded, texts.texts, metrics=metrics, extraction=setup.extraction, seed=setup.config.seed,
                           progress=False)
        frame = measured.metrics[METRIC_COLUMNS].assign(**{condition: entry.label, "order": order})
        described.append({**loaded.describe(), "label": entry.label, "extract_s": measured.record.get("extract_s")})
        frames.append(frame)
        setup.write(StoreRun(
            {condition: entry.label}, loaded, revision=entry.revision or loaded.revision,
            experiment_values=setup.rows(frame, condition, ["metric", "normalization"]),
            metrics=measured.metrics.assign(dataset=texts.source)))
        del loaded  # a model loaded here is freed before the next one is loaded
    return pd.concat(frames, ignore_index=True), described


# ------------------------------------------------------------------------------------------ display


def progress_bar(iterable: Iterable[Any] | None, enabled: bool, description: str, total: int | None = None) -> Any:
    """A tqdm progress bar over ``iterable`` (None: updated by hand); disabled when ``enabled`` is False."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, disable=not enabled, desc=description, leave=False)


def log2_ticks(figure: Any, values: Sequence[float]) -> None:
    """Base-2 log x-axes with plain tick labels at ``values`` (token counts, training steps)."""
    ticks = sorted({float(value) for value in values if value > 0})
    if not ticks:
        return
    for axis in figure.axes:
        if axis.get_xscale() != "log":
            continue
        axis.set_xscale("log", base=2)
        axis.minorticks_off()
        shown = ticks if len(ticks) <= 12 else ticks[:: math.ceil(len(ticks) / 12)]
        axis.set_xticks(shown)
        axis.set_xticklabels([f"{tick:g}" for tick in shown])
