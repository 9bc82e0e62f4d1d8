"""The command line: start-up cost, one-line errors, transformers' load bars."""

from __future__ import annotations

import subprocess
import sys

import pytest

import layerscope as ls
from cli_helpers import cli_many
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


#: What no help text may import: each takes from a tenth of a second (ray) to seconds (torch, mteb).
HEAVY = ("torch", "transformers", "mteb", "ray", "sentence_transformers")


def test_help_of_every_command_imports_no_heavy_module():
    """``layerscope --help`` and ``layerscope COMMAND --help`` for every command and subcommand, through the
    real entry point: each exits 0 and none of them imports torch, transformers, MTEB, Ray or
    sentence-transformers (the commands import the library where they run)."""
    script = (
        "import sys\nfrom layerscope.cli import app, main\n"
        "groups = [(group.name, group.typer_instance) for group in app.registered_groups]\n"
        "every = [[]] + [[command.name] for command in app.registered_commands] + [[name] for name, _ in groups]"
        " + [[name, command.name] for name, sub in groups for command in sub.registered_commands]\n"
        "for words in every:\n"
        "    sys.argv = ['layerscope', *words, '--help']\n"
        "    try:\n        main()\n    except SystemExit as exit:\n        assert exit.code in (0, None), (words, exit)\n"
        "    print('help:', ' '.join(words), flush=True)\n"
        f"print('imported:', sorted(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    helped = [line.removeprefix("help: ") for line in lines if line.startswith("help:")]
    assert {"", "extract", "evaluate", "analyze", "select", "experiment", "sweep", "data", "data fetch"} <= set(helped)
    assert len(helped) == 18  # the top level, 15 commands, the data group and its fetch
    assert lines[-1] == "imported: []"


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


def test_bad_task_files_are_one_line_with_status_2(tmp_path):
    """Issue 12 point 2 through the real entry point: each bad file, exit 2 and one line naming it and the fix."""
    import pandas as pd

    files = {
        "missing.csv": pd.DataFrame({"text": ["a", "b"], "labels": ["x", "y"]}),
        "oneclass.csv": pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": "spam"}),
        "small.csv": pd.DataFrame({"text": [f"t{i}" for i in range(25)], "label": ["a"] * 20 + ["b"] * 5}),
        "blank.csv": pd.DataFrame({"text": ["", " "], "label": ["a", "b"]}),
        "scores.tsv": pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": ["1", "high"]}),
    }
    for name, frame in files.items():
        frame.to_csv(tmp_path / name, sep="\t" if name.endswith(".tsv") else ",", index=False)
    (tmp_path / "binary.parquet").write_bytes(bytes(range(256)))
    (tmp_path / "binary.csv").write_bytes(b"text,label\n\x00\x01\x02")
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": \n', encoding="utf-8")
    expected = {
        "missing.csv": "no label column 'label' for classification; columns found: text, labels (nearest: 'labels'); "
                       "name it with --label-column",
        "oneclass.csv": "the label column 'label' holds one class only ('spam')",
        "small.csv": "class 'b' has 5 rows; MTEB's classification protocol draws 8 per class to train on",
        "blank.csv": "no rows left after removing 2 rows with an empty text of 2",
        "scores.tsv": "score column 'score' is not numeric (row 2: 'high')",
        "binary.parquet": "as parquet: ",
        "binary.csv": "it looks binary (a NUL byte at byte 11)",
        "broken.jsonl": "line 2 is not JSON",
    }
    # the model is never loaded: a bad file fails first (the model name does not even exist)
    commands = [["evaluate", "--model", "not-a-model", "--tasks", str(tmp_path / name)] for name in expected]
    commands.append(["analyze", "--model", "not-a-model", "--tasks", f"offline,{tmp_path / 'small.csv'}",
                     "--out", str(tmp_path / "out")])
    results = cli_many(*commands)
    for (code, lines), name in zip(results, [*expected, "small.csv"], strict=True):
        assert code == 2, (name, lines)
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path / name) in lines[0], (name, lines)
        assert expected[name] in lines[0], (name, lines)


def test_evaluate_command_scores_a_task_file(tmp_path):
    """``layerscope evaluate --tasks FILE`` end to end on a tiny model saved to a folder."""
    import json

    import pandas as pd

    model = tiny_model("llama", num_layers=2)
    model.model.save_pretrained(str(tmp_path / "model"))
    model.tokenizer.save_pretrained(str(tmp_path / "model"))
    words = {"animal": ["cat", "dog", "owl", "cow", "fox", "bee"], "vehicle": ["car", "bus", "van", "cab", "jet", "tram"]}
    rows = [{"body": f"The {word} number {i}.", "topic": label} for label, nouns in words.items()
            for i in range(3) for word in nouns]
    pd.DataFrame(rows).to_csv(tmp_path / "tickets.csv", index=False)
    result = _cli("evaluate", "--model", str(tmp_path / "model"), "--device", "cpu", "--tasks", str(tmp_path / "tickets.csv"),
                  "--text-column", "body", "--label-column", "topic", "--clustering", "--no-cache", "--eval-workers", "1",
                  "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert set(scores["task"]) == {"tickets", "tickets-clustering"} and set(scores["layer"]) == {0, 1, 2}
    assert scores["main_score"].between(0, 1).all()
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["seed"] is None and record["task_seeds"] == {"tickets": 42, "tickets-clustering": 42}
