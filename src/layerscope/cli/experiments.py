"""``layerscope experiment NAME``: one of the paper's further experiments (SPEC section 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from layerscope.cli.options import option_help, output_folder
from layerscope.cli.output import console
from layerscope.config import ExtractConfig, ModelConfig, TextConfig
from layerscope.errors import LayerscopeError

#: The first paragraph of the command's help; the list of experiments follows it when the help is shown.
HELP = "The paper's further experiments (SPEC section 7). NAME is one of:"


def experiment_help() -> str:
    """The command's help: every registered experiment with its own options, then the common options.

    Read from the registry and the experiments' sources (:meth:`~layerscope.experiments.Experiment.declared_options`),
    without importing the experiment modules or torch.
    """
    lines = [HELP]
    try:
        from layerscope.experiments import COMMON_OPTIONS, EXPERIMENTS

        for experiment in EXPERIMENTS.values():
            own = ", ".join(key for key in experiment.declared_options() if key not in COMMON_OPTIONS)
            lines.append(f"\b\n  {experiment.name}: {experiment.description} [own options: {own or 'none'}]")
        lines.append("\b\nEvery experiment also takes the common options (those it uses): "
                     + ", ".join(key for key in COMMON_OPTIONS if key not in ("texts", "progress")) + ".")
    except Exception:  # the help text must never break the CLI
        pass
    lines.append("\b\nExperiment-specific options go as --set key=value (repeatable; lists as comma strings).")
    return "\n\n".join(lines)


class ExperimentCommand(TyperCommand):
    """The ``experiment`` command, whose full help is built only when it is shown (``layerscope --help``
    lists the first sentence of :data:`HELP`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.help = experiment_help()
        super().format_help(ctx, formatter)


def experiment_command(
    name: Annotated[str, typer.Argument(help="Experiment name (see above).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help=option_help(ModelConfig, "model"))] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help=option_help(TextConfig, "dataset")
                                                + " Vision: an image source (digits, a folder, .npz).")] = None,
    limit: Annotated[int | None, typer.Option(help=option_help(TextConfig, "limit"))] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/experiments/NAME).")] = None,
    seed: Annotated[int | None, typer.Option(help=option_help(TextConfig, "seed"))] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", help=option_help(ExtractConfig, "max_length"))] = None,
    batch_size: Annotated[str | None, typer.Option("--batch-size", help=option_help(ExtractConfig, "batch_size"))] = None,
    final_norm: Annotated[str | None, typer.Option("--final-norm", help=option_help(ExtractConfig, "final_norm"))] = None,
    revision: Annotated[str | None, typer.Option(help=option_help(ModelConfig, "revision"))] = None,
    device: Annotated[str | None, typer.Option(help=option_help(ModelConfig, "device"))] = None,
    dtype: Annotated[str | None, typer.Option(help=option_help(ModelConfig, "dtype"))] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="key=value option of the experiment.")] = None,
    report: Annotated[bool, typer.Option(help="Build report.html in the output folder.")] = True,
) -> None:
    """Run one of the paper's further experiments; results go to results.duckdb, PNGs and a report."""
    from layerscope.experiments import get, run_cli

    experiment = get(name)  # unknown names fail with a suggestion before anything runs
    output_folder(out)
    options: dict[str, Any] = {"model": model, "dataset": dataset, "limit": limit, "out": out, "seed": seed,
                               "max_length": max_length, "batch_size": None if batch_size is None else
                               parse_value(batch_size), "final_norm": final_norm, "revision": revision,
                               "device": device, "dtype": dtype}
    options = {key: value for key, value in options.items() if value is not None and key in experiment.options()}
    options.update(parse_settings(settings or []))
    folder = run_cli(experiment.name, **options)
    summary_path = folder / f"{experiment.key}_summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        console.print_json(json.dumps(summary.get("summary", {}), default=str))
    if report:
        from layerscope.report import build_report

        try:
            console.print(f"report: {build_report(folder)}")
        except LayerscopeError as error:
            console.print(f"(no report: {error})")
    console.print(f"results: {folder}")


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """``--set key=value`` options: keys with dashes as underscores, values through :func:`parse_value`."""
    options: dict[str, Any] = {}
    for setting in settings:
        key, separator, value = setting.partition("=")
        if not separator or not key.strip():
            raise LayerscopeError(f"--set takes key=value, got '{setting}'")
        options[key.strip().replace("-", "_")] = parse_value(value.strip())
    return options


def parse_value(value: str) -> Any:
    """``3`` -> 3, ``0.5`` -> 0.5, ``true`` -> True, anything else stays a string (lists stay comma strings)."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
