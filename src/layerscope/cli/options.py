"""The options the commands share, declared once: the configuration classes of :mod:`layerscope.config`
offered as command-line options (:func:`configured`), the cache options, and the small steps every
command takes before its work (an output folder checked writable, a model loaded with a status line,
the texts of a corpus).

A field's help text and flag come from its configuration class; :func:`configured` adds the fields as
options to a command and hands it the built, validated configurations.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from layerscope.cli.output import SESSION, err_console
from layerscope.config import Config, ExtractConfig, ModelConfig, TextConfig, option
from layerscope.errors import LayerscopeError

# short texts (review snippets): the default run takes a minute on a laptop CPU
DEFAULT_DATASET = "rotten-tomatoes"
#: Texts of a bundled corpus used by extract and metrics unless --limit says otherwise.
DEFAULT_CORPUS_LIMIT = 256


@dataclasses.dataclass(frozen=True)
class CacheOptions(Config):
    """Where embeddings are cached (not part of a run's configuration: it does not change a result)."""

    cache_dir: str | None = option(None, "Embedding cache folder (default: $LAYERSCOPE_CACHE or the user cache).")
    no_cache: bool = option(False, "Do not read or write the embedding cache.")

    def usable(self) -> CacheOptions:
        """These options, or no cache if the folder cannot be written: that costs speed, not the run
        (one warning line, before any work; :func:`configured` checks every command's cache so)."""
        from layerscope.atomic import writable_directory

        if self.no_cache:
            return self
        try:
            writable_directory(self.cache_dir or default_cache_dir(), "cache folder")
        except LayerscopeError as error:
            err_console.print(f"warning: {error} (running without the embedding cache)", highlight=False,
                              soft_wrap=True)
            return self.replace(no_cache=True)
        return self

    def resolve(self) -> str | None:
        """The cache folder to use, or None."""
        folder = None if self.no_cache else (self.cache_dir or default_cache_dir())
        SESSION["cache"] = folder
        return folder


def default_cache_dir() -> str:
    """The embedding cache of the CLI: ``$LAYERSCOPE_CACHE/embeddings`` or the user cache directory."""
    from layerscope.caches import cache_dir

    return str(cache_dir("embeddings"))


def _cli_type(hint: Any) -> Any:
    """The type typer parses a field as: unions and tuples come in as text (the configuration parses them)."""
    args = set(typing.get_args(hint))
    if hint in (str, int, bool, Path) or args in ({str, type(None)}, {int, type(None)}, {Path, type(None)},
                                                   {bool, type(None)}):
        return hint
    return str | None if type(None) in args else str


def _cli_value(hint: Any, value: Any) -> Any:
    """A command-line value as the field wants it (``"8"`` -> 8 for ``int | str`` fields such as batch size)."""
    if isinstance(value, str) and set(typing.get_args(hint)) >= {int, str}:
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _config_options(cls: type[Config], defaults: dict[str, Any]) -> list[inspect.Parameter]:
    """One typer option per command-line field of ``cls`` (nested configurations are other groups)."""
    hints = typing.get_type_hints(cls)
    parameters = []
    for item in dataclasses.fields(cls):
        meta = item.metadata
        if not meta or not meta.get("cli", True):
            continue
        default = defaults.get(item.name, item.default)
        if isinstance(default, tuple):
            default = ",".join(default)
        declarations = [meta.get("flag") or "--" + item.name.replace("_", "-")]
        if meta.get("short"):
            declarations.append(meta["short"])
        annotation = Annotated[_cli_type(hints[item.name]), typer.Option(*declarations, help=meta["help"])]
        parameters.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))
    return parameters


@dataclasses.dataclass(frozen=True)
class Group:
    """A configuration class offered as options, with the command's own defaults.

    ``optional``: the group is None when its first field is not given (``--dataset`` of analyze).
    """

    cls: type[Config]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    optional: bool = False


def _flag(cls: type[Config], name: str) -> str:
    """The command-line flag of a configuration field (``limit`` -> ``--limit``)."""
    item = next(item for item in dataclasses.fields(cls) if item.name == name)
    return item.metadata.get("flag") or "--" + name.replace("_", "-")


def _reject_unused(cls: type[Config], first: str, values: dict[str, Any], added: dict[str, inspect.Parameter],
                   shared: set[str]) -> None:
    """An optional group left out (no ``--dataset``) takes none of its other options: say so, not ignore them."""
    for item in dataclasses.fields(cls):
        name = item.name
        if name == first or name not in added or name in shared:
            continue
        if values[name] != added[name].default:
            raise LayerscopeError(f"{_flag(cls, name)} needs {_flag(cls, first)}: without it, {_flag(cls, name)} "
                                  "would be ignored")


def configured(**groups: type[Config] | Group) -> Callable[[Callable[..., Any]], Any]:
    """Give a command the options of configuration classes, and call it with the built configurations.

    ``groups`` maps the command's parameter names to a configuration class, or to a :class:`Group`
    where the command wants other defaults. A field shared by two groups (e.g. ``seed``) is one
    option feeding both. A group whose class has a nested configuration field of the same name as
    another group receives that group's value (``AnalysisConfig.model`` <- the ``model`` group).
    """
    specs = {name: spec if isinstance(spec, Group) else Group(spec) for name, spec in groups.items()}

    def decorate(command: Callable[..., Any]) -> Any:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name not in groups]
        added: dict[str, inspect.Parameter] = {}
        owners: dict[str, int] = {}
        for spec in specs.values():
            for parameter in _config_options(spec.cls, spec.defaults):
                added.setdefault(parameter.name, parameter)
                owners[parameter.name] = owners.get(parameter.name, 0) + 1
        shared = {name for name, count in owners.items() if count > 1}  # e.g. seed: used by another group too

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            built: dict[str, Any] = {}
            for group, spec in specs.items():
                hints = typing.get_type_hints(spec.cls)
                fields = dataclasses.fields(spec.cls)
                kwargs = {item.name: _cli_value(hints[item.name], values[item.name])
                          for item in fields if item.name in added}
                kwargs.update({item.name: built[item.name] for item in fields if item.name in built})
                missing = spec.optional and kwargs.get(fields[0].name) is None
                if missing:
                    _reject_unused(spec.cls, fields[0].name, values, added, shared)
                built[group] = None if missing else spec.cls(**kwargs)
                if isinstance(built[group], CacheOptions):
                    built[group] = built[group].usable()
                if isinstance(built[group], ModelConfig):  # a device or a path that cannot work: before the texts
                    from layerscope.models.loading import check_source

                    check_source(built[group].model, built[group].device)
            return command(**{p.name: values[p.name] for p in own}, **built)

        wrapper.__signature__ = inspect.Signature([*own, *added.values()])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {}
        return wrapper

    return decorate


@dataclasses.dataclass(frozen=True)
class ScoringOptions(Config):
    """What ``evaluate`` and ``mteb`` score and where they write the scores (command-line options only)."""

    tasks: str = option("offline", "offline | paper32 | task names | task files (.csv, .tsv, .jsonl, .parquet), "
                        "comma-separated.", short="-t")
    layers: str = option("all", "all | last | comma-separated layer indices.")
    seed: int | None = option(None, "Seed of every evaluation (default: each MTEB task's own seed, 42, as a plain "
                              "MTEB run).")
    out: Path | None = option(None, "Output folder (scores.csv, layers.csv, record.json).")
    eval_workers: str = option("auto", "Processes running the evaluators over layers, or auto (one per CPU).")

    def run_options(self, cache: CacheOptions, extraction: ExtractConfig) -> dict[str, Any]:
        """The keyword arguments of :func:`~layerscope.evaluate.evaluate_layers` and ``run_mteb`` but the tasks."""
        return {"layers": self.layers, "seed": self.seed, "cache_dir": cache.resolve(),
                "eval_workers": workers(self.eval_workers), **extraction.extract_options()}


def option_help(cls: type[Config], name: str) -> str:
    """The help text a configuration declares for one of its fields (declared once, in its class)."""
    return next(item.metadata["help"] for item in dataclasses.fields(cls) if item.name == name)


# the same options where a command takes them one by one (select, analyze)
EvalWorkersOption = Annotated[str, typer.Option("--eval-workers", help=option_help(ScoringOptions, "eval_workers"))]
LayersOption = Annotated[str, typer.Option(help=option_help(ScoringOptions, "layers"))]
EvalSeedOption = Annotated[int | None, typer.Option("--seed", help=option_help(ScoringOptions, "seed"))]


def output_folder(out: Path | None) -> Path | None:
    """``--out`` checked writable before any work (one-line error otherwise)."""
    from layerscope.atomic import writable_directory

    return None if out is None else writable_directory(out, "--out")


def load(model: ModelConfig, extraction: ExtractConfig | None = None) -> Any:
    """Load the model with a status line (errors stay one line)."""
    with err_console.status(f"loading {model.model}"):
        return model.load(extraction.final_norm if extraction else "none")


def workers(value: str) -> int | str:
    """``--eval-workers``: ``auto`` or a number of processes (checked)."""
    from layerscope.evaluate.runner import resolve_workers

    return "auto" if value == "auto" else resolve_workers(value, 1 << 30)


def corpus_rows(texts: TextConfig) -> tuple[Any, TextConfig]:
    """The texts of a source with their row ids; a bundled corpus without --limit gets the default
    subset (said so)."""
    from layerscope.data import bundled

    if texts.limit is None and texts.dataset in bundled.names():
        texts = texts.replace(limit=DEFAULT_CORPUS_LIMIT)
    rows = texts.rows()
    err_console.print(f"{len(rows.texts)} texts from {texts.dataset}"
                      + (f" (seeded subset of --limit {texts.limit})" if texts.limit else ""), highlight=False)
    return rows, texts


#: The texts of extract, metrics and embed: the text options, with the default corpus.
CORPUS = Group(TextConfig, {"dataset": DEFAULT_DATASET})
