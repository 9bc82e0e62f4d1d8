"""Typed, validated, printable configurations: what is chosen about a run, declared once.

Each configuration is a frozen dataclass (scikit-learn style: every option a field with a default,
stored unchanged), validated once when it is made, with the one-line errors users see elsewhere.
``to_dict()`` gives plain JSON-ready values and ``from_dict()`` reads them back (unknown keys are an
error that names the nearest known one), so the results store records a run's configuration
verbatim and the report reads it back without guessing. Each field's metadata carries the words a
user sees (its label in reports, its help text and flag on the command line), so the CLI's shared
options are declared here and nowhere else.

- :class:`ModelConfig`: which model and how it is loaded.
- :class:`TextConfig`: a text source (bundled corpus, file, hub dataset) and how much of it.
- :class:`ExtractConfig`: how hidden states become pooled embeddings.
- :class:`ViewConfig`: augmented views for the invariance metrics.
- :class:`MetricsConfig`: the label-free metrics of one text source (``compute_metrics``, sweeps).
- :class:`AnalysisConfig`: the main job (``analyze``): metrics, task scores and the layer choice.
- :class:`TaskFileConfig`: how labelled task files become MTEB tasks (columns, split, clustering).
- :class:`IntervalConfig`: bootstrap intervals on per-layer task scores (``analyze --bootstrap``).
- :class:`SelectConfig`: the layer choice of ``select`` (intervals, choice from K labels per class).

Importing this module is cheap (no torch, no transformers): the CLI builds its options from it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from layerscope.errors import LayerscopeError, suggest

__all__ = [
    "AUTO",
    "CONFIG_KINDS",
    "DEFAULT_LIDAR_TEXTS",
    "DEFAULT_N_VIEWS",
    "DEFAULT_VIEW_MAX_LENGTH",
    "DEFAULT_VIEW_TEXTS",
    "DTYPES",
    "FALLBACK_SPEC",
    "FINAL_NORMS",
    "POOLINGS",
    "RECIPE_RECORD_FILE",
    "RECIPE_SEPARATOR",
    "RECORD_FILE",
    "AnalysisConfig",
    "Config",
    "ExtractConfig",
    "IntervalConfig",
    "MetricsConfig",
    "ModelConfig",
    "SelectBy",
    "SelectConfig",
    "TaskFileConfig",
    "TextConfig",
    "ViewConfig",
    "config_from_dict",
    "held_out_record",
    "option",
    "parse_cap",
    "parse_select_by",
    "recipe_record",
]

POOLINGS = ("mean", "last", "first")
FINAL_NORMS = ("none", "all")
DTYPES = ("float32", "bfloat16", "float16")
CACHE_DTYPES = ("float32", "float16")
DEFAULT_MAX_LENGTH = 512

C = TypeVar("C", bound="Config")


def option(default: Any, help: str, *, label: str | None = None, flag: str | None = None,
           short: str | None = None, cli: bool = True, factory: Any = None) -> Any:
    """A configuration field with the words users see.

    Parameters
    ----------
    default : Any
        The default value (immutable).
    help : str
        One line for ``--help``.
    label : str, optional
        How reports name the field (default: none, the field is not listed there).
    flag : str, optional
        The long CLI flag (default ``--`` + the field name with dashes).
    short : str, optional
        A short CLI flag, e.g. ``-m``.
    cli : bool, default True
        Whether the CLI offers the field as an option.
    factory : callable, optional
        Builds the default instead (for mutable defaults).
    """
    metadata = {"help": help, "label": label, "flag": flag, "short": short, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _one_of(value: Any, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise LayerscopeError(f"unknown {what} '{value}'{suggest(str(value), choices)}; use one of {', '.join(choices)}")


def _positive(value: Any, what: str, *, minimum: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LayerscopeError(f"{what} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Config:
    """Base of the configurations: validation hook, dict round trip, report rows."""

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a one-line :class:`~layerscope.errors.LayerscopeError` for a bad value."""

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready values (nested configurations as dicts, tuples as lists)."""
        out: dict[str, Any] = {"kind": self.kind} if self.kind else {}
        for item in dataclasses.fields(self):
            out[item.name] = _plain(getattr(self, item.name))
        return out

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """The configuration ``to_dict`` described; unknown keys raise a one-line error."""
        if not isinstance(data, Mapping):
            raise LayerscopeError(f"a {cls.__name__} must be given as a mapping, got {type(data).__name__}")
        names = {item.name for item in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key != "kind"}
        for key in values:
            if key not in names:
                raise LayerscopeError(f"unknown {cls.__name__} option '{key}'{suggest(key, names)}; "
                                      f"options: {', '.join(sorted(names))}")
        hints = typing.get_type_hints(cls)
        for key, value in list(values.items()):
            nested = _config_type(hints[key])
            if nested is not None and isinstance(value, Mapping):
                values[key] = nested.from_dict(value)
            elif isinstance(value, list):
                values[key] = tuple(value)
        return cls(**values)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> list[tuple[str, str]]:
        """(label, value) rows of the labelled fields, nested configurations included, for reports."""
        rows: list[tuple[str, str]] = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Config):
                rows += value.describe()
            elif item.metadata.get("label") and value not in (None, "", (), {}):
                rows.append((item.metadata["label"], _text(value)))
        return rows


def _config_type(annotation: Any) -> type[Config] | None:
    """The Config class in an annotation such as ``TextConfig | None``."""
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, Config):
            return candidate
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


def _text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ", ".join(str(item) for item in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {_text(item)}" for key, item in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of nested option mappings (frozen configs must not change under a user)."""
    return MappingProxyType({str(key): MappingProxyType(dict(item)) if isinstance(item, Mapping) else item
                             for key, item in (value or {}).items()})


#: Label-free transforms of pooled embeddings (see :mod:`layerscope.extract.conditioning`).
CONDITIONS = ("none", "standardize", "whiten", "remove-top")


def parse_condition(spec: str) -> tuple[str, int | None]:
    """``"whiten:128"`` -> ``("whiten", 128)``; ``"standardize"`` -> ``("standardize", None)``."""
    name, _, count = str(spec).strip().partition(":")
    _one_of(name, CONDITIONS, "conditioning")
    if not count:
        return name, None
    if name in ("none", "standardize") or not count.isdigit() or int(count) < 1:
        raise LayerscopeError(f"bad conditioning '{spec}': use none, standardize, whiten[:rank] or remove-top[:k] "
                              "with a positive integer")
    return name, int(count)


# ------------------------------------------------------------------------------------------ --select-by

#: ``--select-by`` value of the default rule (the one in :data:`RECORD_FILE`).
AUTO = "auto"
#: The held-out protocol's choice of the default rule, beside :mod:`layerscope.analysis.choice`
#: (written by ``benchmarks/bench_selection.py --write-record``).
RECORD_FILE = "label_free_record.json"
#: The recipe protocol's choice of the recipe set ``--recipes auto`` stands for, beside
#: :mod:`layerscope.analysis.recipe_runs` (written by ``benchmarks/bench_recipes.py --write-record``).
RECIPE_RECORD_FILE = "recipe_record.json"
#: Used when no record has been written (a fresh checkout before the benchmark ran).
FALLBACK_SPEC = "dime"

_WINDOW = re.compile(r"^(?P<body>[^@]+)@(?P<lo>[0-9.]+%?)-(?P<hi>[0-9.]+%?)$")
#: ``--select-by`` prefixes of the valley rules.
VALLEY_KINDS = ("valley", "recovery")


def _package_record(name: str, benchmark: str) -> dict[str, Any] | None:
    """A JSON record shipped beside :mod:`layerscope.analysis` (None when it has not been written)."""
    try:  # read as a file of the package: importing layerscope.analysis here would point up the layers
        text = (resources.files("layerscope") / "analysis" / name).read_text("utf-8")
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise LayerscopeError(f"{name} is not valid JSON ({error}): rerun benchmarks/{benchmark} "
                              "with --write-record") from None


@functools.cache
def held_out_record() -> dict[str, Any] | None:
    """The default rule and how it did on models it was not chosen on (None before the benchmark ran)."""
    return _package_record(RECORD_FILE, "bench_selection.py")


@functools.cache
def recipe_record() -> dict[str, Any] | None:
    """The recipe set the held-out recipe protocol chose, and how it did against the raw last layer on models
    it was not chosen on (None before ``benchmarks/bench_recipes.py --write-record`` ran); ``--recipes auto``
    reads it (:func:`layerscope.analysis.recipe_runs.auto_recipe_set`)."""
    return _package_record(RECIPE_RECORD_FILE, "bench_recipes.py")


def _depth_fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise LayerscopeError(f"'{text}' is not a depth (a fraction like 0.75, or 75%)") from None
    if not 0.0 <= value <= 1.0:
        raise LayerscopeError(f"depth {text} is not between 0 and 1 (0% and 100%)")
    return value


def _registered_metric(token: str) -> tuple[str, str | None]:
    """``"max:lidar"`` -> ``("lidar", "max")``; the metric must be registered."""
    from layerscope.metrics.registry import get

    direction, _, name = token.rpartition(":")
    if direction not in ("", "min", "max"):
        raise LayerscopeError(f"'{token}': a direction is min: or max:")
    return get(name).name, direction or None


def _higher_is_better(metric: str) -> bool:
    from layerscope.metrics.registry import get

    return get(metric).higher_is_better


@dataclass(frozen=True)
class SelectBy:
    """A ``--select-by`` text, read: which rule family, with which parameters.

    The grammar lives here, with the option it reads, so that configurations check it without
    importing the rules (:mod:`layerscope.analysis.choice` turns a ``SelectBy`` into a rule of
    :mod:`layerscope.analysis.rules`, and a rule back into its text).

    Attributes
    ----------
    kind : str
        ``last``, ``depth``, ``metric``, ``window``, ``rank``, ``valley`` or ``recovery``.
    metrics : tuple of str
        Registered metric names (one, or several for ``rank``).
    directions : tuple
        Per metric: ``"min"``, ``"max"`` or None (the registry's direction).
    lo, hi : float
        Depth window of ``window`` and ``rank``.
    fraction : float
        Depth of ``depth``; share of the way from the valley of ``valley`` and ``recovery``.
    """

    kind: str
    metrics: tuple[str, ...] = ()
    directions: tuple[str | None, ...] = ()
    lo: float = 0.0
    hi: float = 1.0
    fraction: float = 0.0

    def metrics_used(self) -> tuple[str, ...]:
        """Metrics the rule reads."""
        return self.metrics

    def text(self) -> str:
        """The canonical ``--select-by`` text (directions and windows written only where not the default)."""

        def token(metric: str, direction: str | None) -> str:
            default = "max" if _higher_is_better(metric) else "min"
            return metric if direction is None or direction == default else f"{direction}:{metric}"

        window = "" if (self.lo, self.hi) == (0.0, 1.0) else f"@{self.lo:g}-{self.hi:g}"
        if self.kind == "last":
            return "last"
        if self.kind == "depth":
            return f"depth:{self.fraction:g}"
        if self.kind in VALLEY_KINDS:
            return f"{self.kind}:{self.metrics[0]}:{self.fraction:g}"
        tokens = "+".join(token(m, d) for m, d in zip(self.metrics, self.directions, strict=True))
        return f"rank:{tokens}{window}" if self.kind == "rank" else f"{tokens}{window}"


def parse_select_by(spec: str) -> SelectBy:
    """Read a ``--select-by`` text (``auto`` is the recorded default rule; see :mod:`layerscope.analysis.choice`).

    Raises
    ------
    LayerscopeError
        One line naming what is wrong (unknown metric with the nearest name, bad depth...).
    """
    text = str(spec).strip()
    if text == AUTO:
        record = held_out_record()
        return parse_select_by(record["rule"] if record else FALLBACK_SPEC)
    if text == "last":
        return SelectBy("last")
    if text.startswith("depth:"):
        return SelectBy("depth", fraction=_depth_fraction(text.partition(":")[2]))
    kind, _, rest = text.partition(":")
    if kind in VALLEY_KINDS:
        metric, _, fraction = rest.rpartition(":")
        if not metric or not fraction:
            raise LayerscopeError(f"'{text}': {kind}: needs a metric and a fraction, e.g. {kind}:dime:0.5")
        return SelectBy(kind, (_registered_metric(metric)[0],), (None,), fraction=_depth_fraction(fraction))
    window = _WINDOW.match(text)
    body = window["body"] if window else text
    lo, hi = (_depth_fraction(window["lo"]), _depth_fraction(window["hi"])) if window else (0.0, 1.0)
    if body.startswith("rank:"):
        parsed = [_registered_metric(token) for token in body.partition(":")[2].split("+") if token]
        if not parsed:
            raise LayerscopeError(f"'{text}': rank: needs metrics joined by +, e.g. rank:infonce+lidar")
    else:
        parsed = [_registered_metric(body)]
    if lo > hi:  # the rules' own check, made here too: configurations are checked without them
        raise LayerscopeError(f"depth window must satisfy 0 <= lo <= hi <= 1, got [{lo}, {hi}]")
    kind = "rank" if body.startswith("rank:") else "window" if window else "metric"
    return SelectBy(kind, tuple(m for m, _ in parsed), tuple(d for _, d in parsed), lo, hi)


# ------------------------------------------------------------------------------------------ pieces


@dataclass(frozen=True)
class ModelConfig(Config):
    """Which model, and how it is loaded (:func:`layerscope.load_model`)."""

    model: str = option("smollm2-135m", "Bundled alias, HF hub id, local folder or .gguf file.",
                        label="Model", short="-m")
    revision: str | None = option(None, "Hub revision (e.g. Pythia's step64000).", label="Revision")
    device: str = option("auto", "auto | cpu | cuda | cuda:1 ... | map (device_map='auto': a big model over "
                         "all GPUs and the CPU)", label="Device")
    dtype: str | None = option(None, "float32 | bfloat16 | float16 (default: fp32 on CPU, bf16 on GPU)",
                               label="Dtype")
    trust_remote_code: bool = option(False, "Allow model code from the hub (off by default).")

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise LayerscopeError("no model given: use a bundled alias (layerscope models), a hub id or a path")
        if self.dtype is not None:
            _one_of(self.dtype, DTYPES, "dtype")
        device = str(self.device)
        if device not in ("auto", "cpu", "map", "mps") and not device.startswith("cuda"):
            raise LayerscopeError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or map")

    def load(self, final_norm: str = "none") -> Any:
        """The model, loaded (a :class:`~layerscope.models.LoadedModel`)."""
        from layerscope.models import load_model

        return load_model(self.model, revision=self.revision, dtype=self.dtype, device=self.device,
                          final_norm=final_norm, trust_remote_code=self.trust_remote_code)


@dataclass(frozen=True)
class TextConfig(Config):
    """A text source and how much of it (:func:`layerscope.load_texts`)."""

    dataset: str = option("rotten-tomatoes", "Bundled corpus, file (.txt/.jsonl/.csv/.parquet) or HF dataset.",
                          label="Text source", short="-d")
    column: str | None = option(None, "Text column of table files and HF datasets.", label="Text column")
    limit: int | None = option(None, "Use a seeded random subset of this many texts.", label="Text limit")
    seed: int = option(0, "Seed of subsets, views and evaluations.", label="Seed")
    id_column: str | None = option(None, "Column of a table file whose values identify its rows in outputs "
                                   "(default: the row's position in the file, from 0).", label="Id column")

    def validate(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise LayerscopeError("no text source given: a bundled corpus (layerscope datasets), a file or a hub dataset")
        _positive(self.limit, "limit", allow_none=True)

    def load(self) -> list[str]:
        """The texts."""
        return self.rows().texts

    def rows(self) -> Any:
        """The texts with the id of each one's row in the source (:class:`layerscope.data.Rows`)."""
        from layerscope.data import load_rows

        return load_rows(self.dataset, limit=self.limit, seed=self.seed, column=self.column, id_column=self.id_column)


@dataclass(frozen=True)
class ExtractConfig(Config):
    """How hidden states become pooled embeddings (:func:`layerscope.extract`)."""

    pooling: str = option("mean", "mean | last | first", label="Pooling")
    final_norm: str = option("none", "none (raw residual stream) | all (final norm on every layer)",
                             label="Final norm")
    max_length: int | None = option(None, "Truncate texts to this many tokens (default: the model's own maximum "
                                    "where it configures one, else 512).", label="Max length (tokens)")
    batch_size: int | str = option("auto", "Texts per batch, or auto.", label="Batch size")
    cache_dtype: str = option("float32", "Storage precision of cached embeddings: float32 | float16.",
                              label="Cache dtype")
    outlier_tokens: float | None = option(None, "Leave out of pooling and token metrics, at each layer, tokens whose "
                                          "norm exceeds this many times their prompt's median (attention sinks), "
                                          "e.g. 10.", label="Outlier tokens dropped above (x median norm)")
    condition: str = option("none", "Label-free transform of the pooled embeddings, fitted on the run's texts: "
                            "none | standardize | whiten[:rank] | remove-top[:k] (all-but-the-top).",
                            label="Conditioning")
    normalize: bool | None = option(None, "L2-normalize every layer's embeddings, last (--normalize), or none "
                                    "(--no-normalize); default: the last layer as the model ships it, normalized "
                                    "where its sentence-transformers pipeline ends in Normalize.",
                                    label="L2-normalized", flag="--normalize/--no-normalize")

    def validate(self) -> None:
        _one_of(self.pooling, POOLINGS, "pooling")
        _one_of(self.final_norm, FINAL_NORMS, "final norm")
        _positive(self.max_length, "max_length", allow_none=True)
        if self.batch_size != "auto":
            _positive(self.batch_size, "batch_size (or 'auto')")
        _one_of(self.cache_dtype, CACHE_DTYPES, "cache dtype")
        if self.outlier_tokens is not None:
            try:
                factor = float(self.outlier_tokens)
            except (TypeError, ValueError):
                factor = float("nan")
            if not factor > 1:
                raise LayerscopeError(f"outlier_tokens must be a factor > 1 of the median token norm, got "
                                      f"{self.outlier_tokens!r}")
            object.__setattr__(self, "outlier_tokens", factor)
        parse_condition(self.condition)  # one-line error for a bad spec
        if self.normalize == "auto":  # as a configuration file may spell the default
            object.__setattr__(self, "normalize", None)
        if self.normalize not in (None, True, False):
            raise LayerscopeError(f"normalize must be true, false or auto, got {self.normalize!r}")

    def normalized_layers(self, model: Any) -> tuple[int, ...]:
        """Canonical layers L2-normalized *before* any conditioning: the last layer where ``normalize`` is
        auto and the model ships normalized (:attr:`~layerscope.models.LoadedModel.ships_normalized`);
        ``normalize=True`` instead normalizes every layer *after* the conditioning."""
        if self.normalize is None and getattr(model, "ships_normalized", False):
            return (int(model.num_layers),)
        return ()

    def extract_options(self) -> dict[str, Any]:
        """Keyword options of :func:`layerscope.extract` (final_norm belongs to the loaded model; the
        conditioning is fitted on the embeddings afterwards)."""
        return {"pooling": self.pooling, "max_length": self.max_length, "batch_size": self.batch_size,
                "cache_dtype": self.cache_dtype, "outlier_tokens": self.outlier_tokens}


#: The views budget of every command (``benchmarks/bench_views.py`` measured it; docs "Views budget"):
#: over the whole run, LiDAR on ``DEFAULT_LIDAR_TEXTS`` texts x ``DEFAULT_N_VIEWS`` views, InfoNCE and
#: DiME on ``DEFAULT_VIEW_TEXTS`` texts x 2 views (the LiDAR texts among them, their first 2 views
#: shared), every view cut at ``DEFAULT_VIEW_MAX_LENGTH`` tokens (the study's cut).
DEFAULT_N_VIEWS = 16
DEFAULT_LIDAR_TEXTS = 128
DEFAULT_VIEW_TEXTS = 512
DEFAULT_VIEW_MAX_LENGTH = 128
#: The word that lifts a cap: every text of the set gets views (the paper's setting).
ALL_TEXTS_WORD = "all"


def parse_cap(value: Any, what: str, minimum: int = 2) -> int | None:
    """A cap (texts given views, tokens of a view): an integer >= ``minimum``, or None / ``"all"`` (no cap).

    The command line hands it over as text (``"128"``, ``"all"``); None is the canonical "all".
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == ALL_TEXTS_WORD):
        return None
    number = int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(number, bool) or not isinstance(number, int) or number < minimum:
        raise LayerscopeError(f"{what} must be an integer >= {minimum} or '{ALL_TEXTS_WORD}', got {value!r}")
    return number


@dataclass(frozen=True)
class ViewConfig(Config):
    """Augmented views for the invariance metrics (InfoNCE and DiME: 2 views; LiDAR: ``n_views``).

    The views budget, for the whole run: ``view_texts`` texts get 2 views and ``lidar_texts`` of them
    get ``n_views`` (seeded subsets, whose first 2 views serve InfoNCE and DiME too); with several text
    sets (``analyze``: one per task) the budget is spread over them in proportion to their sizes, at
    least 2 texts each (:func:`layerscope.metrics.views.shares`), so it costs the same however many
    tasks a run has. Each view is cut at ``view_max_length`` tokens. None (or ``"all"``) lifts a cap:
    every text gets views, as in the paper. The defaults are the measured budget of every command
    (:data:`DEFAULT_LIDAR_TEXTS`, :data:`DEFAULT_VIEW_TEXTS`, :data:`DEFAULT_VIEW_MAX_LENGTH`).
    """

    n_views: int = option(DEFAULT_N_VIEWS, "Augmented views per text for LiDAR.", label="Views per text (LiDAR)")
    view_texts: int | str | None = option(DEFAULT_VIEW_TEXTS, "Texts of the run given 2 views (InfoNCE, DiME), "
                                          "spread over its text sets, or 'all' (the paper's setting).",
                                          label="Texts with 2 views")
    lidar_texts: int | str | None = option(DEFAULT_LIDAR_TEXTS, "Texts of the run given --n-views views (LiDAR; "
                                           "their first 2 serve InfoNCE and DiME), or 'all' (the paper's setting).",
                                           label="Texts with all views")
    view_max_length: int | str | None = option(DEFAULT_VIEW_MAX_LENGTH, "Tokens of each view (longer views are "
                                               "cut), or 'all' (the model's maximum).", label="Tokens per view")

    def validate(self) -> None:
        _positive(self.n_views, "n_views", minimum=2)
        object.__setattr__(self, "view_texts", parse_cap(self.view_texts, "view_texts"))
        object.__setattr__(self, "lidar_texts", parse_cap(self.lidar_texts, "lidar_texts"))
        object.__setattr__(self, "view_max_length", parse_cap(self.view_max_length, "view_max_length", minimum=1))

    def view_length(self, max_length: int | None) -> int | None:
        """Tokens of a view given the pass's ``max_length`` (None: the model's): the smaller cap."""
        caps = [cap for cap in (self.view_max_length, max_length) if cap is not None]
        return min(caps) if caps else None

    def describe(self) -> list[tuple[str, str]]:
        """The labelled rows, a lifted cap shown as "all" (the base leaves None out)."""
        return [(item.metadata["label"], _text(ALL_TEXTS_WORD if getattr(self, item.name) is None
                                               else getattr(self, item.name)))
                for item in dataclasses.fields(self)]

    def budget(self) -> str:
        """The budget in words, e.g. "LiDAR on 128 texts x 16 views, InfoNCE and DiME on 512 texts x 2 views"."""
        def texts(cap: int | None) -> str:
            return "all texts" if cap is None else f"{cap:,} texts"

        return (f"LiDAR on {texts(self.lidar_texts)} x {self.n_views} views, InfoNCE and DiME on "
                f"{texts(self.view_texts)} x 2 views")


def _metric_names(metrics: Any) -> tuple[str, ...]:
    """Registry names of a metric selection (validated: unknown names suggest the nearest)."""
    from layerscope.metrics.registry import resolve

    return tuple(spec.name for spec in resolve(metrics))


# ------------------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class MetricsConfig(Config):
    """The label-free metrics of every layer on one set of texts (``compute_metrics``, ``metrics`` jobs)."""

    kind: ClassVar[str] = "metrics"

    model: ModelConfig = field(default_factory=ModelConfig)
    texts: TextConfig | None = None
    extraction: ExtractConfig = field(default_factory=ExtractConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    metrics: tuple[str, ...] = option(("all",), "all, or a comma list (layerscope metrics --list).", label="Metrics")
    options: Mapping[str, Mapping[str, Any]] = option(None, "Per-metric option overrides.", label="Metric options",
                                                      cli=False, factory=dict)
    seed: int = option(0, "Seed of views and random metrics.", label="Seed")

    def validate(self) -> None:
        object.__setattr__(self, "metrics", _metric_names(self.metrics))
        object.__setattr__(self, "options", _frozen_mapping(self.options))


@dataclass(frozen=True)
class AnalysisConfig(Config):
    """The main job: every metric and every task score at every layer, and the layer choice."""

    kind: ClassVar[str] = "analysis"

    model: ModelConfig = field(default_factory=ModelConfig)
    extraction: ExtractConfig = field(default_factory=ExtractConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    tasks: tuple[str, ...] = option(("offline",), "offline (bundled suite), paper32 (needs the hub), or task "
                                    "names.", label="Tasks", short="-t")
    metrics: tuple[str, ...] = option(("all",), "all, or a comma list of metrics.", label="Metrics")
    dataset: TextConfig | None = None
    select_by: str = option("auto", "Rule that picks the layer without labels: auto (the held-out protocol's "
                            "pick; the last layer while no label-free rule beats it held out), a metric (dime, "
                            "max:lidar), depth:0.75, dime@0.5-0.9, rank:infonce+lidar, valley:dime:0.75, "
                            "recovery:dime:0.5, last.", label="Label-free choice by")
    recipes: tuple[str, ...] = option(("auto",), "Recipe sets scored beside the layers from the cached per-layer "
                                      "embeddings (no forward pass), separated by |: auto (the set the held-out "
                                      "recipe protocol chose, where it beat the last layer on models it was not "
                                      "chosen on; else none), none, or sets such as "
                                      "'classification=zmean:0.5-1;*=last+standardize'.", label="Recipes")
    seed: int = option(0, "Seed of subsets, views and evaluations.", label="Seed")
    eval_seed: int | None = option(None, "Seed of the evaluations (default: each MTEB task's own seed, 42, as a plain "
                                   "MTEB run).", label="Evaluation seed")

    def validate(self) -> None:
        metrics = _metric_names(self.metrics)
        object.__setattr__(self, "metrics", metrics)
        tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        tasks = tuple(part.strip() for item in tasks for part in str(item).split(",") if part.strip())
        if not tasks:
            raise LayerscopeError("no tasks selected; use 'offline', 'paper32' or task names")
        object.__setattr__(self, "tasks", tasks)
        rule = parse_select_by(self.select_by)  # unknown metrics suggest the nearest; "auto" is the default rule
        select_by = rule.text()
        absent = [metric for metric in rule.metrics_used() if metric not in metrics]
        if absent:
            raise LayerscopeError(f"--select-by {' and '.join(absent)} is not among the metrics computed "
                                  f"({', '.join(metrics)}): add it to --metrics")
        object.__setattr__(self, "select_by", select_by)
        object.__setattr__(self, "recipes", _recipe_texts(self.recipes))


#: Separates recipe sets in one ``--recipes`` value (the recipe grammar uses ``;``, ``,`` nowhere, ``|`` never).
RECIPE_SEPARATOR = "|"


def _recipe_texts(value: Any) -> tuple[str, ...]:
    """``--recipes`` as a tuple of recipe-set texts (``auto`` kept as the word; ``none``: no recipes).

    The grammar of a set is checked where it is read (:mod:`layerscope.analysis.recipes`, a layer above),
    before any model loads.
    """
    items = (value,) if isinstance(value, str) else tuple(value or ())
    texts = tuple(dict.fromkeys(part.strip() for item in items for part in str(item).split(RECIPE_SEPARATOR)
                                if part.strip()))
    if "none" in texts and len(texts) > 1:
        raise LayerscopeError(f"--recipes none cannot be given with other recipe sets ({' | '.join(texts)})")
    return () if texts == ("none",) else texts


#: ``kind`` -> configuration class, for :func:`config_from_dict`.
CONFIG_KINDS: dict[str, type[Config]] = {cls.kind: cls for cls in (MetricsConfig, AnalysisConfig)}


def config_from_dict(data: Mapping[str, Any]) -> Config | None:
    """The configuration a stored ``to_dict()`` describes (by its ``kind``), or None for other records.

    Runs written by experiments, or before configurations were typed, store other dicts; callers
    show those as they are.
    """
    kind = data.get("kind") if isinstance(data, Mapping) else None
    cls = CONFIG_KINDS.get(str(kind)) if kind else None
    return None if cls is None else cls.from_dict(data)


# ------------------------------------------------------------------------------------------ task files


@dataclass(frozen=True)
class TaskFileConfig(Config):
    """How labelled task files (``--tasks FILE``) become MTEB tasks: columns, split, clustering.

    The kind of task follows from the columns (see :mod:`layerscope.evaluate.task_files`); each
    ``*_column`` option names the file's column for that role where it is not the default name. The
    options apply to every task file of a run (a role a file's kind does not use is ignored).
    """

    test_fraction: float = option(0.5, "Share of each class held out for testing in task files without a split "
                                  "column (seeded stratified split).", label="Test fraction")
    split_column: str | None = option(None, "Column of task files marking each row train or test (default: a "
                                      "seeded stratified split).", label="Split column")
    split_seed: int = option(42, "Seed of the stratified split of task files.", label="Split seed")
    clustering: bool = option(False, "Also score a clustering task on the texts of text + label task files.",
                              label="Clustering task")
    text_column: str | None = option(None, "Text column of task files (default: text).", label="Text column")
    label_column: str | None = option(None, "Label column of task files (default: label).", label="Label column")
    sentence1_column: str | None = option(None, "First sentence column of pair task files (default: sentence1).",
                                          label="Sentence 1 column")
    sentence2_column: str | None = option(None, "Second sentence column of pair task files (default: sentence2).",
                                          label="Sentence 2 column")
    score_column: str | None = option(None, "Similarity score column of STS task files (default: score).",
                                      label="Score column")
    query_column: str | None = option(None, "Query column of reranking task files (default: query).",
                                      label="Query column")
    positive_column: str | None = option(None, "Relevant-text column of reranking task files (default: positive).",
                                         label="Positive column")
    negative_column: str | None = option(None, "Irrelevant-text column of reranking task files (default: negative).",
                                         label="Negative column")

    def validate(self) -> None:
        try:  # the command line hands the fraction over as text
            fraction = float(self.test_fraction)
        except (TypeError, ValueError):
            fraction = float("nan")
        if isinstance(self.test_fraction, bool) or not 0 < fraction < 1:
            raise LayerscopeError(f"test_fraction must be a number between 0 and 1, got {self.test_fraction!r}")
        object.__setattr__(self, "test_fraction", fraction)
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int):
            raise LayerscopeError(f"split_seed must be an integer, got {self.split_seed!r}")
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_column") and value is not None and (not isinstance(value, str) or not value.strip()):
                raise LayerscopeError(f"{item.name} must be a column name, got {value!r}")


# ------------------------------------------------------------------------------------------ layer choice


def _confidence(value: Any) -> float:
    try:  # the command line hands the level over as text
        level = float(value)
    except (TypeError, ValueError):
        level = float("nan")
    if isinstance(value, bool) or not 0 < level < 1:
        raise LayerscopeError(f"confidence must be a number between 0 and 1 (e.g. 0.95), got {value!r}")
    return level


@dataclass(frozen=True)
class IntervalConfig(Config):
    """Bootstrap intervals on per-layer task scores (:mod:`layerscope.evaluate.uncertainty`).

    Each task's evaluation examples are resampled ``bootstrap`` times and MTEB's evaluator scores
    every resample at every layer from the cached embeddings; 0 turns the intervals off.
    """

    bootstrap: int = option(100, "Bootstrap resamples of each task's evaluation examples, scored by MTEB's evaluator "
                            "at every layer (0: no intervals).", label="Bootstrap resamples")
    confidence: float = option(0.95, "Confidence level of the intervals.", label="Confidence level")
    resample_seed: int = option(0, "Seed of the bootstrap resamples (and of select's --labels-per-class draws).",
                                label="Resample seed")

    def validate(self) -> None:
        if self.bootstrap != 0:
            _positive(self.bootstrap, "bootstrap (resamples; 0 turns the intervals off)", minimum=2)
        object.__setattr__(self, "confidence", _confidence(self.confidence))
        if isinstance(self.resample_seed, bool) or not isinstance(self.resample_seed, int):
            raise LayerscopeError(f"resample_seed must be an integer, got {self.resample_seed!r}")


@dataclass(frozen=True)
class SelectConfig(IntervalConfig):
    """The layer choice of ``select``: intervals, and optionally a choice from K labels per class."""

    labels_per_class: int | None = option(None, "Choose the layer from K labelled examples per class of each "
                                          "classification task (cross-validated at every layer) and report how "
                                          "the choice scores on the test set, e.g. 8, 16, 32.",
                                          label="Labels per class")
    recipes: tuple[str, ...] = option(("auto",), "Recipe sets scored beside the layers (same intervals, same "
                                      "few-label choice), separated by |: auto (the set the held-out recipe "
                                      "protocol chose), none, or sets such as "
                                      "'classification=zmean:0.5-1;*=last+standardize'.", label="Recipes")

    def validate(self) -> None:
        super().validate()
        _positive(self.labels_per_class, "labels_per_class", minimum=2, allow_none=True)
        object.__setattr__(self, "recipes", _recipe_texts(self.recipes))
