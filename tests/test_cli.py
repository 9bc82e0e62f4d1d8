"""The command line: start-up cost, one-line errors, transformers' load bars."""

from __future__ import annotations

import subprocess
import sys

import pytest

import layerscope as ls
from layerscope.models.tiny import tiny_model


def _cli(*args: str, code: str = "") -> subprocess.CompletedProcess:
    """Run ``layerscope ARGS`` in a fresh interpreter, then ``code`` (which sees ``sys``)."""
    script = (f"import sys\nsys.argv = ['layerscope', *{list(args)!r}]\nfrom layerscope.cli import main\n"
              f"try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\nelse:\n    code = 0\n{code}\n"
              "sys.exit(code)")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_help_lists_the_commands_without_importing_transformers():
    result = _cli("--help", code="print('transformers' in sys.modules)")
    assert result.returncode == 0, result.stderr
    for command in ("extract", "metrics", "evaluate", "analyze", "experiment", "sweep", "report", "compare"):
        assert command in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "False"  # transformers is imported by the first model load


def test_user_errors_are_one_line_with_status_2(tmp_path):
    result = _cli("extract", "--model", "smollm2-135m", "--dataset", str(tmp_path / "missing.txt"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: file not found: {tmp_path / 'missing.txt'}"
    result = _cli("metrics", "--metrics", "dimee", "--dataset", "bbc", "--limit", "2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "did you mean 'dime'" in lines[0]


@pytest.mark.parametrize("show", [False, True])
def test_show_load_bars_controls_transformers_bars_at_the_next_load(tmp_path, show):
    from transformers.utils import logging as transformers_logging

    from layerscope.models.loading import show_load_bars

    model = tiny_model("llama", num_layers=1)
    model.model.save_pretrained(str(tmp_path))
    model.tokenizer.save_pretrained(str(tmp_path))
    transformers_logging.enable_progress_bar()
    try:
        show_load_bars(show)
        assert transformers_logging.is_progress_bar_enabled()  # deciding changes nothing yet
        ls.load_model(str(tmp_path), device="cpu")
        assert transformers_logging.is_progress_bar_enabled() is show
    finally:
        show_load_bars(True)
        transformers_logging.enable_progress_bar()
