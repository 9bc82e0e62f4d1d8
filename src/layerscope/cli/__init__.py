"""The ``layerscope`` command line: every subcommand is a thin call into the library.

One module per command family, each command a function that parses its options, calls the library
and prints what it returns:

- :mod:`~layerscope.cli.listings`: ``models``, ``datasets``, ``tasks``, ``data fetch``;
- :mod:`~layerscope.cli.measure`: ``extract``, ``metrics``;
- :mod:`~layerscope.cli.evaluation`: ``evaluate``, ``mteb``;
- :mod:`~layerscope.cli.analyze`: ``analyze``;
- :mod:`~layerscope.cli.selection`: ``select``;
- :mod:`~layerscope.cli.export`: ``export``, ``embed``;
- :mod:`~layerscope.cli.runs`: ``report``, ``compare``;
- :mod:`~layerscope.cli.sweep`: ``sweep``;
- :mod:`~layerscope.cli.experiments`: ``experiment``.

The options shared by several commands come from the configuration classes of
:mod:`layerscope.config` (their fields' help texts and flags): :func:`~layerscope.cli.options.configured`
adds them to a command and hands it the built, validated configurations, so each option is declared
once (:mod:`~layerscope.cli.options`). What they print goes through :mod:`~layerscope.cli.output`.

Nothing here imports torch, transformers, MTEB or Ray: the commands import the library where they
run, so ``layerscope --help`` and ``layerscope COMMAND --help`` start in a fraction of a second.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import typer

from layerscope.cli.analyze import analyze_command, print_analysis
from layerscope.cli.evaluation import evaluate_command, mteb_command, print_scores
from layerscope.cli.experiments import HELP as EXPERIMENT_HELP
from layerscope.cli.experiments import ExperimentCommand, experiment_command, experiment_help, parse_value
from layerscope.cli.export import embed_command, export_command
from layerscope.cli.listings import (
    data_fetch_command,
    datasets_command,
    models_command,
    print_fetched_sources,
    tasks_command,
)
from layerscope.cli.measure import extract_command, metrics_command, print_metric_list
from layerscope.cli.options import (
    DEFAULT_CORPUS_LIMIT,
    DEFAULT_DATASET,
    CacheOptions,
    Group,
    ScoringOptions,
    configured,
    corpus_rows,
    default_cache_dir,
    load,
    output_folder,
)
from layerscope.cli.output import (
    SESSION,
    console,
    err_console,
    print_layer_table,
    print_table,
    print_text_table,
    say,
    write_json,
)
from layerscope.cli.runs import compare_command, report_command
from layerscope.cli.selection import print_choice, select_command, write_choice
from layerscope.cli.sweep import sweep_command
from layerscope.errors import LayerscopeError

__all__ = ["DEFAULT_CORPUS_LIMIT", "DEFAULT_DATASET", "CacheOptions", "Group", "ScoringOptions", "app", "configured",
           "console", "corpus_rows", "default_cache_dir", "err_console", "experiment_help", "load", "main",
           "output_folder", "parse_value", "print_analysis", "print_choice", "print_fetched_sources",
           "print_layer_table", "print_metric_list", "print_scores", "print_table", "print_text_table", "say",
           "write_choice", "write_json"]

app = typer.Typer(
    name="layerscope",
    help="Layer-by-layer analysis of the hidden representations of neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are shown as written: "[options: ...]" is text, not markup
)
data_app = typer.Typer(help="Data sets fetched from the package registries (suite v2 of the offline tasks).")

#: The commands in the order ``layerscope --help`` lists them, with what ``app.command`` takes beside the name.
COMMANDS: tuple[tuple[str, Any, dict[str, Any]], ...] = (
    ("models", models_command, {}),
    ("datasets", datasets_command, {}),
    ("tasks", tasks_command, {}),
    ("extract", extract_command, {}),
    ("metrics", metrics_command, {}),
    ("evaluate", evaluate_command, {}),
    ("mteb", mteb_command, {}),
    ("analyze", analyze_command, {}),
    ("select", select_command, {}),
    ("export", export_command, {}),
    ("embed", embed_command, {}),
    ("report", report_command, {}),
    ("compare", compare_command, {}),
    ("sweep", sweep_command, {}),
    ("experiment", experiment_command, {"cls": ExperimentCommand, "help": EXPERIMENT_HELP}),
)
for _name, _command, _settings in COMMANDS:
    app.command(_name, **_settings)(_command)
data_app.command("fetch")(data_fetch_command)
app.add_typer(data_app, name="data")


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so the same clean-up as Ctrl-C runs."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C as Python raises it, remembered: typer turns it into a bare exit status 130, and the one
    line of :func:`main` reads what the extraction engine attached to it (``layerscope_kept``)."""
    error = KeyboardInterrupt()
    SESSION["interrupt"] = error
    raise error


def _kept(error: BaseException | None) -> tuple[int, int] | None:
    """(texts kept, texts of the pass) that an interrupted extraction left in the cache, if it says."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        kept = getattr(error, "layerscope_kept", None)
        if kept is not None:
            return int(kept[0]), int(kept[1])
        error = error.__cause__ or error.__context__
    return None


def _interrupted_line(what: str, error: BaseException | None) -> str:
    """The one line of an interrupted run: what a rerun will not redo."""
    kept = _kept(error)
    if kept is not None:
        count = kept[0]
        return f"{what}; {count} text{'' if count == 1 else 's'} kept in the cache, rerun to resume"
    if SESSION["cache"] is not None:  # stopped between passes: every finished pass is in the cache
        return f"{what}; finished passes are kept in the cache, rerun to resume"
    return f"{what}; nothing was kept (no embedding cache in use), a rerun starts again"


def _command_path() -> str:
    """``layerscope COMMAND`` from the command line (for errors click raises without a context)."""
    names = {command.name or command.callback.__name__.removesuffix("_command").replace("_", "-")
             for command in app.registered_commands if command.callback is not None}
    words = [word for word in sys.argv[1:] if not word.startswith("-")]
    return "layerscope" + (f" {words[0]}" if words and words[0] in names else "")


def _usage_error(error: BaseException) -> str:
    """Click's one-line message of a usage error, with the help hint."""
    context = getattr(error, "ctx", None)
    path = context.command_path if context is not None else _command_path()
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    return " ".join(message.split()) + f" (try '{path} --help')"


def _usage_error_classes() -> tuple[type[BaseException], ...]:
    """Click's usage errors as typer raises them: its vendored copy (typer >= 0.29) or click itself (before)."""
    import contextlib
    import importlib

    classes: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            classes.append(importlib.import_module(module).ClickException)
    return tuple(classes)


def _app() -> Any:
    """The typer app, with a full disk anywhere beneath it (an OSError, numpy's short write, DuckDB's
    IOException...) turned into the one-line :class:`~layerscope.errors.DiskFullError`."""
    from layerscope.errors import disk_full

    try:
        return app(standalone_mode=False)
    except Exception as error:
        full = disk_full(error)
        if full is None or full is error:
            raise
        raise full from error


def main() -> None:
    """Entry point: user errors print one line (no traceback) and exit with status 2; a full disk (or
    quota) one line naming the path and exit status 74; Ctrl-C exits 130, SIGTERM 143, after a one-line
    note of what was kept."""
    from layerscope.errors import EXIT_DISK_FULL, DiskFullError

    logging.basicConfig(level=os.environ.get("LAYERSCOPE_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    for name in ("transformers", "huggingface_hub", "datasets", "mteb"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # transformers sets its own log level when first imported (later, lazily): tell it through its
    # environment variable, and keep its per-load "Loading weights" bars out of our progress display
    # (hub downloads keep their bars); neither imports transformers or torch here (~1 s on every command)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from layerscope.models.load_bars import show_load_bars

    show_load_bars(False)
    SESSION.update(cache=None, interrupt=None)
    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup, &)
        signal.signal(signal.SIGINT, _interrupt)
    usage_errors = _usage_error_classes()
    try:
        result = _app()
    except DiskFullError as error:  # a LayerscopeError, with a status of its own
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(EXIT_DISK_FULL)
    except LayerscopeError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort) as error:
        err_console.print(_interrupted_line("interrupted", error), highlight=False, soft_wrap=True)
        sys.exit(130)
    except Terminated as error:
        err_console.print(_interrupted_line("terminated", error), highlight=False, soft_wrap=True)
        sys.exit(143)
    except typer.Exit as error:
        sys.exit(error.exit_code)
    except usage_errors as error:
        err_console.print(f"[bold red]error:[/] {_usage_error(error)}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)
    if result == 130:  # typer turns Ctrl-C into a returned status 130
        err_console.print(_interrupted_line("interrupted", SESSION["interrupt"]), highlight=False, soft_wrap=True)
        sys.exit(130)
    if isinstance(result, int) and result:  # click returns an exit code instead of raising in places
        sys.exit(result)


if __name__ == "__main__":
    main()
