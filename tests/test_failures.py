"""Every user mistake and fault of issue 15, through the real entry point (``layerscope.cli.main``) in a
subprocess: the exit status, and the one line the user reads (never a traceback)."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import cli_many
from layerscope.models.tiny import tiny_model

TEXTS = [f"Text number {i} says something about layer {i % 7} and its {'long ' * (i % 5)}representation."
         for i in range(24)]


def _script(args: list[str], code: str = "", before: str = "") -> str:
    """A Python program running ``layerscope ARGS`` through ``main()``, then ``code`` (which sees ``sys``)."""
    return (f"import sys\n{before}\nsys.argv = ['layerscope', *{list(args)!r}]\nfrom layerscope.cli import main\n"
            f"try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\nelse:\n    code = 0\n{code}\n"
            "sys.exit(code)")


def _cli(*args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``layerscope ARGS`` in a fresh interpreter (``prefix``: a command that wraps it, e.g. ``unshare``)."""
    return subprocess.run([*prefix, sys.executable, "-c", _script(list(args))], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model saved to a folder, texts, and the wrong things users give instead."""
    folder = tmp_path_factory.mktemp("failures")
    model = tiny_model("llama", num_layers=3)
    model.model.save_pretrained(str(folder / "model"))
    model.tokenizer.save_pretrained(str(folder / "model"))
    (folder / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    (folder / "a-file").write_text("not a folder\n")
    (folder / "empty-folder").mkdir()
    (folder / "notes.gguf").write_text("a text file renamed .gguf\n")
    (folder / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (folder / "binary.jsonl").write_bytes(b"\x00\x01\x02" * 50)
    (folder / "latin1.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    return folder


# ------------------------------------------------------------------------------------------ usage


def test_usage_errors_are_one_line_with_status_2():
    """Issue 15 point 1: what typer raises (its vendored click) is click's one line plus the --help hint."""
    results = cli_many(["extract", "--colum", "text"], ["extract", "--limit", "abc"], ["extract", "--limit"],
                        ["report"], ["analyze", "--max-length"], ["extrct"])
    expected = [
        ("error: No such option: --colum", "(try 'layerscope extract --help')"),
        ("error: Invalid value for '--limit': ", "(try 'layerscope extract --help')"),
        ("error: Option '--limit' requires an argument.", "(try 'layerscope extract --help')"),
        ("error: Missing argument 'directory'.", "(try 'layerscope report --help')"),
        ("error: Option '--max-length' requires an argument.", "(try 'layerscope analyze --help')"),
        ("error: No such command 'extrct'.", "(try 'layerscope --help')"),
    ]
    for (code, lines), (start, end) in zip(results, expected, strict=True):
        assert code == 2, lines
        assert len(lines) == 1 and lines[0].startswith(start) and lines[0].endswith(end), lines
    assert "did you mean" in results[0][1][0].lower() or "--column" in results[0][1][0]


def test_experiment_help_lists_every_experiments_own_options():
    """Issue 15 point 1: the bracketed option lists survive (no Rich markup eats them), with and without NAME."""
    from layerscope.experiments import EXPERIMENTS
    from layerscope.experiments.base import COMMON_OPTIONS

    for args in (["experiment", "--help"], ["experiment", "sizes", "--help"]):
        result = _cli(*args)
        assert result.returncode == 0, result.stderr
        text = " ".join(result.stdout.split())
        for experiment in EXPERIMENTS.values():
            own = ", ".join(key for key in experiment.options() if key not in COMMON_OPTIONS) or "none"
            assert f"{experiment.name}: " in text and f"[own options: {own}]" in text, (experiment.name, text)


# ------------------------------------------------------------------------------------------ environment


def test_bad_environment_and_inputs_are_one_line_before_any_work(files, tmp_path):
    """Issue 15 points 3 and 6: each fails with status 2 and its one line only (no "N texts from ..." before
    it: the texts were not read, the model not loaded)."""
    import torch

    model, texts = str(files / "model"), str(files / "texts.txt")
    run = ["extract", "--model", model, "--dataset", texts, "--no-cache", "--out", str(tmp_path / "out")]
    no_cuda = ("this torch build has no CUDA; use --device cpu" if torch.version.cuda is None else
               "torch sees no CUDA device (no GPU, or CUDA_VISIBLE_DEVICES hides it); use --device cpu")
    cases = {
        "out is a file": ([*run[:-1], str(files / "a-file")], f"--out {files / 'a-file'} is a file; give a folder"),
        "out under a file": ([*run[:-1], str(files / "a-file" / "out")],
                             f"--out {files / 'a-file' / 'out'} lies under {files / 'a-file'}, which is a file"),
        "empty folder": ([*run, "--model", str(files / "empty-folder")],
                         f"{files / 'empty-folder'} is an empty folder, not a model: give a Hugging Face model "
                         "folder, a .gguf file or a hub id"),
        "text as .gguf": ([*run, "--model", str(files / "notes.gguf")],
                          f"{files / 'notes.gguf'} is not a GGUF model: it does not start with the GGUF magic bytes"),
        "file as model": ([*run, "--model", str(files / "a-file")],
                          f"{files / 'a-file'} is a file, not a model: give a model folder (with config.json) or a "
                          ".gguf file"),
        "binary .json": ([*run, "--dataset", str(files / "binary.json")],
                         f"cannot read {files / 'binary.json'}: it looks binary (a NUL byte at byte 8), not a json "
                         "text table; save it as UTF-8 json"),
        "binary .jsonl": ([*run, "--dataset", str(files / "binary.jsonl")],
                          f"cannot read {files / 'binary.jsonl'}: it looks binary (a NUL byte at byte 0), not a jsonl "
                          "text table; save it as UTF-8 jsonl"),
        "latin-1 .jsonl": ([*run, "--dataset", str(files / "latin1.jsonl")],
                           f"cannot read {files / 'latin1.jsonl'}: not UTF-8 text (byte 13); save it as UTF-8 jsonl"),
        "max length 0": ([*run, "--max-length", "0"], "max_length must be an integer >= 1, got 0"),
        "max length negative": ([*run, "--max-length", "-3"], "max_length must be an integer >= 1, got -3"),
        "limit without dataset": (["analyze", "--model", model, "--limit", "5", "--out", str(tmp_path / "a")],
                                  "--limit needs --dataset: without it, --limit would be ignored"),
        "column without dataset": (["analyze", "--model", model, "--column", "text", "--out", str(tmp_path / "a")],
                                   "--column needs --dataset: without it, --column would be ignored"),
        "select-by not computed": (["analyze", "--model", model, "--metrics", "dime", "--select-by",
                                    "prompt_entropy", "--out", str(tmp_path / "a")],
                                   "--select-by prompt_entropy is not among the metrics computed (dime): add it to "
                                   "--metrics"),
    }
    if not torch.cuda.is_available():
        cases["cuda without CUDA"] = ([*run, "--device", "cuda"], no_cuda)
        cases["metrics, cuda:1"] = (["metrics", "--model", model, "--dataset", texts, "--device", "cuda:1"], no_cuda)
    results = cli_many(*(args for args, _ in cases.values()))
    for (code, lines), (name, (_, line)) in zip(results, cases.items(), strict=True):
        assert (code, lines) == (2, [f"error: {line}"]), name
    assert not (tmp_path / "a").exists()  # analyze failed before it made its --out


def _read_only_folder(tmp_path: Path) -> tuple[Path, tuple[str, ...], str] | None:
    """A folder this user cannot write: (folder, command prefix, errno text), or None where none can be made.

    Root writes through chmod, so root gets a read-only bind mount in a mount namespace of its own
    (``unshare``: nothing is mounted outside the command); other users get chmod 555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return folder, (), "permission denied"
    if shutil.which("unshare") is None:
        return None
    prefix = ("unshare", "--mount", "sh", "-c", f"mount --bind -o ro '{folder}' '{folder}' && exec \"$@\"", "sh")
    probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True, text=True)
    if probe.returncode == 0 or "read-only" not in probe.stderr.lower():
        return None  # no mount namespace here (a container without CAP_SYS_ADMIN)
    return folder, prefix, "read-only file system"


def test_an_out_that_cannot_be_written_is_one_line_before_any_work(files, tmp_path):
    """Issue 15 point 3: a probe file is written first, so root (which chmod does not stop) fails too."""
    made = _read_only_folder(tmp_path)
    if made is None:
        pytest.skip("neither a non-root user nor a read-only mount namespace is available")
    folder, prefix, reason = made
    out = folder / "out"
    result = _cli("extract", "--model", str(files / "model"), "--dataset", str(files / "texts.txt"), "--no-cache",
                  "--out", str(out), prefix=prefix)
    assert result.returncode == 2
    assert _one_line(result) == f"error: cannot write to --out {out}: {reason}"


@pytest.mark.skipif(not os.path.isdir("/sys") or os.access("/sys", os.W_OK) and os.geteuid() != 0,
                    reason="no read-only /sys here")
def test_an_out_in_a_system_folder_is_one_line(files):
    """The same on a file system no one may create folders in (sysfs), whatever the user."""
    out = "/sys/layerscope-test-out"
    result = _cli("metrics", "--model", str(files / "model"), "--dataset", str(files / "texts.txt"), "--out", out)
    assert result.returncode == 2
    assert _one_line(result).startswith(f"error: cannot write to --out {out}: ")
    assert not os.path.exists(out)


def test_a_cache_folder_that_cannot_be_written_warns_once_and_runs_without_it(files, tmp_path):
    """Issue 15 point 3: the cache costs speed, not the run: one warning line, then no cache at all."""
    cache = files / "a-file"  # a file where the cache folder should be: unwritable for every user
    result = _cli("extract", "--model", str(files / "model"), "--dataset", str(files / "texts.txt"),
                  "--cache-dir", str(cache), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    warning = f"warning: cache folder {cache} is a file; give a folder (running without the embedding cache)"
    lines = result.stderr.splitlines()
    assert lines[0] == warning and lines.count(warning) == 1  # said first, before the texts are read
    assert np.load(tmp_path / "out" / "embeddings.npy").shape[1] == len(TEXTS)
    assert cache.read_text() == "not a folder\n"


def test_two_analyze_runs_on_one_out_say_what_to_do(files, tmp_path):
    """Issue 15 point 5: a second writer of one results.duckdb fails at once (before the model loads),
    naming who holds it and what to do; a report of it asks to wait."""
    from layerscope.store import ResultsStore

    out = tmp_path / "run"
    with ResultsStore.in_directory(out):  # this test process is "the other layerscope process"
        results = cli_many(["analyze", "--model", str(files / "model"), "--out", str(out)], ["report", str(out)])
    holder = (f"cannot open results database {out / 'results.duckdb'}: another layerscope process "
              f"(PID {os.getpid()}) is writing it")
    assert results[0] == (2, [f"error: {holder}; wait for it to finish or use another --out"])
    assert results[1] == (2, [f"error: {holder}; wait for it to finish"])


# ------------------------------------------------------------------------------------------ interruptions


# Slows each forward pass down (so a signal lands mid-pass) and counts the texts the model encoded.
SLOW_PASSES = """
import os, signal, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as at a terminal, even if we run in the background
from layerscope.extract import engine
encoded, _original = [0], engine._BatchRunner.__call__
def _slow(self, input_ids, mask):
    time.sleep(float(os.environ["SLOW_S"]))
    encoded[0] += input_ids.shape[0]
    return _original(self, input_ids, mask)
engine._BatchRunner.__call__ = _slow
"""


@pytest.mark.parametrize(("signal_name", "status", "word"), [("SIGINT", 130, "interrupted"),
                                                             ("SIGTERM", 143, "terminated")])
def test_an_interrupted_extract_exits_with_its_status_and_a_rerun_resumes(files, tmp_path, signal_name, status,
                                                                         word):
    """Issue 15 point 2: Ctrl-C exits 130 (SIGTERM 143), never 0, with one line saying how many texts the cache
    kept; the rerun encodes only the others, and its embeddings are those of an uninterrupted run."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["extract", "--model", str(files / "model"), "--dataset", str(files / "texts.txt"), "--batch-size", "2",
            "--cache-dir", str(cache), "--out", str(out)]
    env = {**os.environ, "LAYERSCOPE_CHECKPOINT_SECONDS": "0", "SLOW_S": "0.3"}  # a checkpoint after every batch
    process = subprocess.Popen([sys.executable, "-c", _script(args, "print('encoded', encoded[0])", SLOW_PASSES)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not glob.glob(str(cache / "*" / "done.npy")):  # the first batches are checkpointed
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        time.sleep(0.4)
        process.send_signal(getattr(signal, signal_name))
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    match = re.fullmatch(rf"{word}; (\d+) texts? kept in the cache, rerun to resume", lines[-1])
    assert match, lines[-1]
    assert sum(word in line for line in lines) == 1
    kept = int(match.group(1))
    assert 0 < kept < len(TEXTS)
    assert not out.exists() or not (out / "embeddings.npy").exists()
    (done,) = glob.glob(str(cache / "*" / "done.npy"))
    assert int(np.load(done).sum()) == kept  # the line counts what the cache holds
    if signal_name != "SIGINT":
        return  # the same clean-up ran: one rerun is checked, for Ctrl-C

    rerun = subprocess.run([sys.executable, "-c", _script(args, "print('encoded', encoded[0])", SLOW_PASSES)],
                           capture_output=True, text=True, timeout=300, env={**env, "SLOW_S": "0"})
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines()[-1] == f"encoded {len(TEXTS) - kept}"  # the kept texts were not redone
    record = json.loads((out / "record.json").read_text())
    assert record["n_kept"] == len(TEXTS)

    import layerscope as ls

    whole = ls.extract(ls.load_model(str(files / "model"), device="cpu"), TEXTS, batch_size=2, progress=False)
    np.testing.assert_allclose(np.load(out / "embeddings.npy"), np.asarray(whole.pooled), rtol=1e-5, atol=1e-6)


def test_an_interrupt_with_no_cache_says_nothing_was_kept(files, tmp_path):
    """Without an embedding cache, the line does not promise a resume."""
    args = ["extract", "--model", str(files / "model"), "--dataset", str(files / "texts.txt"), "--batch-size", "2",
            "--no-cache", "--out", str(tmp_path / "out")]
    process = subprocess.Popen([sys.executable, "-c", _script(args, "", SLOW_PASSES + "\n"
                                                              "def _announce(self, *a):\n"
                                                              "    print('encoding', flush=True)\n"
                                                              "    return _slow(self, *a)\n"
                                                              "engine._BatchRunner.__call__ = _announce\n")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "SLOW_S": "0.3"})
    try:
        assert process.stdout is not None and process.stdout.readline() == "encoding\n"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1] == "interrupted; nothing was kept (no embedding cache in use), a rerun starts again"
