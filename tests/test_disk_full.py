"""A full disk loses nothing (issue 21 point 5).

Each kind of output is written with the disk 'full' (the lowest Python-level write, ``open(...).write``,
raising ``OSError(ENOSPC)`` once a budget of bytes is spent; libraries that write from C are routed
through it) and must fail with the one line of :class:`~layerscope.errors.DiskFullError`, naming the
path and what it needed, leaving no complete-looking file and keeping what was there before; a run
stopped so resumes once space is freed. Where root may mount a tmpfs (CI runs as root), the same is
checked end to end on a real 1 MB file system: DuckDB, and the CLI's exit status and line.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import layerscope as ls
from layerscope.errors import EXIT_DISK_FULL, DiskFullError, LayerscopeError, disk_full, format_bytes
from layerscope.models.tiny import tiny_model

TAIL = ": free some space and rerun; finished work is kept"
TEXTS = [f"Text number {i} says something about layer {i % 7} and its {'long ' * (i % 5)}representation."
         for i in range(40)]


def line(path, needs=None) -> str:
    return f"no space left on device writing {path}" + (f" (needs {format_bytes(needs)})" if needs else "") + TAIL


class _FullFile:
    """A file whose writes fail with ENOSPC once the disk's free bytes are spent (nothing of the
    failing write lands). No ``fileno``: writers that would bypass ``write`` (PIL) use it instead."""

    def __init__(self, handle, disk: dict) -> None:
        self._handle, self._disk = handle, disk

    def write(self, data):
        size = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        if size > self._disk["free"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk["free"] -= size
        return self._handle.write(data)

    def fileno(self):
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(pattern, free=0, after=0)``: files opened for writing whose path matches ``pattern``,
    from the ``after+1``-th on, share ``free`` bytes of space. Parquet and safetensors files are written
    through Python file objects so that the same budget applies to them."""
    real_open = builtins.open

    def arm(pattern: str, free: int = 0, after: int = 0) -> dict:
        disk = {"free": free, "opened": 0}

        def fake_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and mode[:1] in "wxa" and re.search(pattern, os.fspath(file)):
                disk["opened"] += 1
                if disk["opened"] > after:
                    return _FullFile(handle, disk)
            return handle

        monkeypatch.setattr(builtins, "open", fake_open)
        return disk

    import pyarrow.parquet as pq
    import safetensors.torch
    import transformers.modeling_utils

    write_table = pq.write_table

    def parquet_through_python(table, where, **kwargs):
        if isinstance(where, (str, os.PathLike)):
            with builtins.open(where, "wb") as handle:
                return write_table(table, handle, **kwargs)
        return write_table(table, where, **kwargs)

    def safetensors_through_python(tensors, filename, metadata=None):
        data = safetensors.torch.save(tensors, metadata=metadata)
        with builtins.open(filename, "wb") as handle:
            handle.write(data)

    monkeypatch.setattr(pq, "write_table", parquet_through_python)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", safetensors_through_python)
    return arm


def no_temporaries(folder) -> bool:
    return not [path for path in folder.rglob("*") if ".tmp" in path.name or path.name.startswith(".layerscope")]


# --------------------------------------------------------------------------- recognising it


@pytest.mark.parametrize(("error", "expected"), [
    (OSError(errno.ENOSPC, "No space left on device", "runs/x/pooled.npy"), line("runs/x/pooled.npy", 21_504_000)),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded writing out.npy (needs 21.5 MB)" + TAIL),
    # numpy's np.save (ndarray.tofile) when fallocate or fwrite comes up short: no errno, its own words
    (OSError("Not enough free space to write 21504000 bytes after offset 128"), line("out.npy", 21_504_000)),
    (OSError("5376000 requested and 262112 written"), line("out.npy", 21_504_000)),
    # pyarrow's OSError carries errno 28 and the OS's words
    (OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device"),
     line("out.npy", 21_504_000)),
])
def test_a_full_disk_is_recognised_whoever_raises_it(error, expected):
    found = disk_full(error, error.filename or "out.npy", 21_504_000)
    assert str(found) == expected
    assert isinstance(found, LayerscopeError) and isinstance(found, OSError)
    assert found.errno == (error.errno or errno.ENOSPC)


def test_duckdb_and_wrapped_errors_name_their_file():
    import duckdb

    inner = duckdb.IOException('IO Error: Could not write file "/data/r/results.duckdb": No space left on device')
    try:
        try:
            raise inner
        except duckdb.Error as error:
            raise LayerscopeError("cannot store prompt_values: IO Error ...") from error
    except LayerscopeError as wrapped:
        assert str(disk_full(wrapped)) == line("/data/r/results.duckdb")
    assert disk_full(OSError(errno.EACCES, "Permission denied", "x")) is None
    assert disk_full(ValueError("no space left in the tuple")) is None


# --------------------------------------------------------------------------- each kind of output


def test_npy_text_and_json_outputs(full_disk, tmp_path):
    from layerscope.atomic import atomic_save_npy, atomic_write_json, atomic_write_text

    array = np.arange(5000, dtype=np.float32)
    atomic_save_npy(tmp_path / "embeddings.npy", np.zeros(3))  # an earlier run's output
    atomic_write_text(tmp_path / "report.html", "<p>earlier</p>")
    full_disk(r"\.tmp\.(npy|html|json)$", free=4096)
    with pytest.raises(DiskFullError) as caught:
        atomic_save_npy(tmp_path / "embeddings.npy", array)
    assert str(caught.value) == line(tmp_path / "embeddings.npy", array.nbytes + 128)
    np.testing.assert_array_equal(np.load(tmp_path / "embeddings.npy"), np.zeros(3))  # the earlier one, whole
    page = "<p>" + "layer " * 2000 + "</p>"
    with pytest.raises(DiskFullError, match=re.escape(line(tmp_path / "report.html", len(page)))):
        atomic_write_text(tmp_path / "report.html", page)
    assert (tmp_path / "report.html").read_text() == "<p>earlier</p>"
    with pytest.raises(DiskFullError, match="writing .*record.json"):
        atomic_write_json(tmp_path / "record.json", {"values": list(range(3000))})
    assert not (tmp_path / "record.json").exists()
    assert no_temporaries(tmp_path)


def test_png_plot(full_disk, tmp_path):
    from layerscope.report.plots.style import new_figure, save_figure

    figure = new_figure(4, 3)
    figure.add_subplot().plot(np.arange(10) ** 2)
    save_figure(figure, tmp_path / "curves.png")
    before = (tmp_path / "curves.png").read_bytes()
    full_disk(r"\.tmp\.png$", free=1000)
    with pytest.raises(DiskFullError) as caught:
        save_figure(figure, tmp_path / "curves.png")
    assert str(caught.value) == line(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes() == before
    assert no_temporaries(tmp_path)


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_embed_output(full_disk, tmp_path, suffix):
    from layerscope.data import Rows
    from layerscope.export.embed import embed_layer

    model = tiny_model("llama", num_layers=2)
    rows = Rows(TEXTS, list(range(len(TEXTS))), "test")
    cache = str(tmp_path / "cache")
    full_disk(rf"\.tmp\{suffix}$", free=2000)
    with pytest.raises(DiskFullError) as caught:
        embed_layer(model, rows, 2, tmp_path / f"out{suffix}", cache_dir=cache, chunk_size=16, progress=False)
    assert str(caught.value) == line(tmp_path / f"out{suffix}", len(TEXTS) * model.hidden_size * 4)
    assert not (tmp_path / f"out{suffix}").exists() and no_temporaries(tmp_path)


def test_exported_model_folder(full_disk, tmp_path):
    from layerscope.export import export_layer

    model = tiny_model("llama", num_layers=3)
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file\n")
    export_layer(model, 1, out, max_length=32)  # an earlier, complete export
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    full_disk(r"model\.safetensors$", free=10_000)
    with pytest.raises(DiskFullError) as caught:
        export_layer(model, 2, out, max_length=32)
    kept = sum(p.numel() * p.element_size() for name, p in model.model.named_parameters()
               if not name.startswith("layers.2."))  # embeddings, blocks 1-2, final norm
    assert str(caught.value) == line(out, kept)
    # the earlier export is there, whole, beside the user's file; nothing of the failed one
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    assert no_temporaries(out)


# --------------------------------------------------------------------------- the cache, and resuming


def _counting(monkeypatch) -> list[int]:
    from layerscope.extract import engine

    encoded = [0]
    original = engine._BatchRunner.__call__

    def counting(self, input_ids, mask):
        encoded[0] += input_ids.shape[0]
        return original(self, input_ids, mask)

    monkeypatch.setattr(engine._BatchRunner, "__call__", counting)
    return encoded


def test_the_cache_cannot_be_allocated(monkeypatch, tmp_path):
    model = tiny_model("llama", num_layers=3)
    real = os.posix_fallocate

    def no_room(descriptor, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(DiskFullError) as caught:
        ls.extract(model, TEXTS, cache_dir=str(tmp_path / "cache"), progress=False)
    (folder,) = [path for path in (tmp_path / "cache").iterdir() if path.is_dir()]
    needs = 128 + 4 * (model.num_layers + 1) * len(TEXTS) * model.hidden_size  # .npy header + float32 rows
    assert str(caught.value) == line(folder / "pooled.npy", needs)
    assert not list(folder.iterdir())  # no partial file with holes left behind
    monkeypatch.setattr(os, "posix_fallocate", real)
    again = ls.extract(model, TEXTS, cache_dir=str(tmp_path / "cache"), progress=False)
    clean = ls.extract(model, TEXTS, progress=False)
    np.testing.assert_array_equal(np.asarray(again.pooled), np.asarray(clean.pooled))  # same batches, same process


def test_a_run_stopped_by_a_full_disk_resumes_once_space_is_freed(full_disk, monkeypatch, tmp_path):
    from layerscope.extract import engine

    model = tiny_model("llama", num_layers=3)
    clean = np.array(ls.extract(model, TEXTS, batch_size=4, progress=False).pooled)
    monkeypatch.setattr(engine, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every batch
    encoded = _counting(monkeypatch)
    full_disk(r"\.done\..*\.tmp\.npy$", after=3)  # the 4th checkpoint finds the disk full
    cache = tmp_path / "cache"
    with pytest.raises(DiskFullError) as caught:
        ls.extract(model, TEXTS, batch_size=4, cache_dir=str(cache), progress=False)
    (folder,) = [path for path in cache.iterdir() if path.is_dir()]
    assert str(caught.value) == line(folder / "done.npy", len(TEXTS) + 128)
    assert not (folder / "pooled.npy").exists()  # nothing complete-looking
    monkeypatch.setattr(builtins, "open", io.open)  # space freed
    encoded[0] = 0
    resumed = ls.extract(model, TEXTS, batch_size=4, cache_dir=str(cache), progress=False)
    assert encoded[0] == len(TEXTS) - 3 * 4  # the 3 checkpointed batches were kept
    # resumed rows are batched with other texts (other padded lengths, other matmul shapes): float32
    # forward passes of a 3-block model agree to ~1e-6 relative; 1e-5 leaves room, a wrong row is O(1)
    np.testing.assert_allclose(np.asarray(resumed.pooled), clean, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- the CLI's line and status


CLI = """
    import builtins, errno, os, re, sys
    real_open, pattern = builtins.open, sys.argv[1]
    class Full:
        def __init__(self, handle): self.handle = handle
        def write(self, data): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        def __getattr__(self, name): return getattr(self.handle, name)
        def __enter__(self): return self
        def __exit__(self, *exc): self.handle.close()
    def fake_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if re.search(pattern, str(file)) and mode[:1] == "w":
            return Full(handle)
        return handle
    builtins.open = fake_open
    from layerscope.cli import main
    sys.argv = ["layerscope", *sys.argv[2:]]
    main()
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    model = tiny_model("llama", num_layers=3)
    model.model.save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))
    return folder


def extract_args(model_dir, texts, out, cache) -> list[str]:
    return ["extract", "--model", str(model_dir), "--dataset", str(texts), "--out", str(out), "--cache-dir", str(cache),
            "--device", "cpu", "--batch-size", "8"]


def error_lines(stderr: str) -> list[str]:
    return [text for text in stderr.splitlines() if text.startswith("error:")]


def test_the_cli_says_one_line_and_exits_74(model_dir, tmp_path):
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    args = extract_args(model_dir, tmp_path / "texts.txt", tmp_path / "out", tmp_path / "cache")
    full = subprocess.run([sys.executable, "-c", textwrap.dedent(CLI), r"embeddings\..*\.tmp\.npy$", *args],
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == EXIT_DISK_FULL == 74
    needs = 128 + 4 * (3 + 1) * len(TEXTS) * tiny_model("llama", num_layers=3).hidden_size  # header + float32 rows
    assert error_lines(full.stderr) == ["error: " + line(tmp_path / "out" / "embeddings.npy", needs)]
    assert "Traceback" not in full.stderr
    assert not (tmp_path / "out" / "embeddings.npy").exists() and no_temporaries(tmp_path / "out")


# --------------------------------------------------------------------------- a real full file system


@contextlib.contextmanager
def small_tmpfs(folder, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` (skipped where mounting is not permitted), unmounted after."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root); the patched-writer tests cover the rest")
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount command here")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): a container without CAP_SYS_ADMIN")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=60)


def grow(folder, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True, timeout=30)


def test_duckdb_on_a_full_disk_rolls_back_and_stays_usable(tmp_path):
    from layerscope.store import ResultsStore

    small = pd.DataFrame({"layer": [0, 1], "metric": ["m", "m"], "value": [1.0, 2.0]})
    n = 50_000
    big = pd.DataFrame({"layer": np.arange(n) % 30, "prompt_index": np.arange(n), "value": np.arange(n) / n,
                        "metric": [f"metric {i % 500}" for i in range(n)]})
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        with ResultsStore(disk) as store:
            first = store.write_run({"run": 1}, metrics=small)
            with pytest.raises(DiskFullError) as caught:
                store.write_run({"run": 2}, metrics=small, prompt_values=big)
            assert str(caught.value) == line(disk / "results.duckdb")
            # rolled back: the database holds the first run, whole, and takes new writes
            assert store.connection.execute("SELECT run_id, status FROM runs").fetchall() == [(first, "finished")]
            assert store.connection.execute("SELECT count(*) FROM prompt_values").fetchall() == [(0,)]
            third = store.write_run({"run": 3}, metrics=small)
        grow(disk, "64m")
        with ResultsStore(disk) as store:
            second = store.write_run({"run": 2}, metrics=small, prompt_values=big)
            runs = dict(store.connection.execute("SELECT run_id, status FROM runs").fetchall())
            assert runs == {first: "finished", second: "finished", third: "finished"}
            assert store.connection.execute("SELECT count(*) FROM prompt_values").fetchall() == [(n,)]


def test_the_cli_on_a_full_tmpfs_then_resumed(model_dir, tmp_path):
    texts = [f"{text} ({i})" for i in range(25) for text in TEXTS]  # 1,000 texts
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    cache = tmp_path / "cache"  # on the real disk: the pass is kept while the output cannot be written
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        args = extract_args(model_dir, tmp_path / "texts.txt", disk / "out", cache)
        full = subprocess.run([sys.executable, "-m", "layerscope.cli", *args], capture_output=True, text=True,
                              timeout=300)
        assert full.returncode == 74, full.stderr
        # the .npy header + (layers, texts, hidden) float32: 512 kB, twice the disk
        needs = 128 + 4 * (3 + 1) * len(texts) * tiny_model("llama", num_layers=3).hidden_size
        assert error_lines(full.stderr) == ["error: " + line(disk / "out" / "embeddings.npy", needs)]
        assert "Traceback" not in full.stderr
        assert not (disk / "out" / "embeddings.npy").exists() and no_temporaries(disk)
        grow(disk, "64m")
        again = subprocess.run([sys.executable, "-m", "layerscope.cli", *args], capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 0, again.stderr
        assert "read from cache" in again.stdout  # the pass of the failed run was kept
        (pooled,) = cache.glob("*/pooled.npy")
        # exact: both are the cache entry read back
        np.testing.assert_array_equal(np.load(disk / "out" / "embeddings.npy"), np.load(pooled))
