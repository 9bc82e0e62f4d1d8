"""A damaged cache is detected before use, reported in one line, removed and recomputed (issue 21 point 4).

Every cache is damaged the ways a disk, a crash or a user damages files: cut short, overwritten in the
middle (same size: only a checksum finds it), replaced by another entry's file, its metadata removed
or garbled, or written by an older layerscope without checksums. Each time the next run says
``cache entry <key> was damaged (<what>): recomputing`` once, and its results equal a clean run's.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import layerscope as ls
from layerscope.integrity import file_digest
from layerscope.models.tiny import tiny_model

TEXTS = [f"Text {i} is about layer {i % 5} and its {'long ' * (i % 4)}representation." for i in range(12)]
OTHER = [f"Another text, number {i}, says {'more ' * (i % 3)}about something else." for i in range(12)]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_layers=3)


def cache_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith("cache entry ")]


def overwrite_middle(path, count: int = 64) -> None:
    """Flip ``count`` bytes in the middle of ``path``: same size, other bytes."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        original = handle.read(count)
        handle.seek(size // 2)
        handle.write(bytes(255 - value for value in original))


def damage(kind: str, folder, other) -> str:
    """Damage the embedding entry ``folder`` (``other``: a complete entry of other texts, same shape);
    return what the one line must say."""
    pooled = folder / "pooled.npy"
    size = pooled.stat().st_size
    if kind == "truncated":
        pooled.write_bytes(pooled.read_bytes()[: size // 2])
        return f"pooled.npy is {size // 2:,} bytes, expected {size:,}"
    if kind == "overwritten middle":
        overwrite_middle(pooled)
        return "pooled.npy does not match its sha256"
    if kind == "another entry's pooled.npy":
        assert (other / "pooled.npy").stat().st_size == size  # only the checksum can tell them apart
        shutil.copy(other / "pooled.npy", pooled)
        return "pooled.npy does not match its sha256"
    if kind == "another entry's files":
        for name in ("pooled.npy", "record.json", "manifest.json"):
            shutil.copy(other / name, folder / name)
        return f"manifest.json belongs to another entry ({other.name})"
    if kind == "pooled.npy removed":
        pooled.unlink()
        return "pooled.npy is missing"
    if kind == "manifest removed":
        (folder / "manifest.json").unlink()
        return "manifest.json is missing"
    if kind == "record removed":
        (folder / "record.json").unlink()
        return "record.json is missing"
    if kind == "manifest garbled":
        (folder / "manifest.json").write_text('{"layerscope_manifest": 1, "files": {"pooled.npy"')
        return "manifest.json is unreadable"
    raise AssertionError(kind)


KINDS = ["truncated", "overwritten middle", "another entry's pooled.npy", "another entry's files", "pooled.npy removed",
         "manifest removed", "record removed", "manifest garbled"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_embedding_entry_is_recomputed_equal_to_a_clean_run(model, tmp_path, caplog, kind):
    cache = str(tmp_path / "cache")
    clean = ls.extract(model, TEXTS, cache_dir=cache, progress=False)
    other = ls.extract(model, OTHER, cache_dir=cache, progress=False)
    key = clean.record["cache_key"]
    expected = np.array(clean.pooled)  # (layers, n, d), a copy: the memory map is about to be damaged
    del clean
    what = damage(kind, tmp_path / "cache" / key, tmp_path / "cache" / other.record["cache_key"])
    with caplog.at_level(logging.WARNING):
        again = ls.extract(model, TEXTS, cache_dir=cache, progress=False)
    assert cache_lines(caplog) == [f"cache entry {key} was damaged ({what}): recomputing"]
    assert not again.from_cache
    # exact: recomputed by the identical computation (same texts, batches, threads, process)
    np.testing.assert_array_equal(np.asarray(again.pooled), expected)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = ls.extract(model, TEXTS, cache_dir=cache, progress=False)
    assert third.from_cache and cache_lines(caplog) == []  # the rebuilt entry passes its check
    np.testing.assert_array_equal(np.asarray(third.pooled), expected)  # a cache read back


def test_an_entry_of_an_older_layerscope_is_recomputed_and_said_so(model, tmp_path, caplog):
    cache = tmp_path / "cache"
    clean = ls.extract(model, TEXTS, cache_dir=str(cache), progress=False)
    key, expected = clean.record["cache_key"], np.array(clean.pooled)
    del clean
    # what layerscope wrote before entries carried checks: pooled.npy + record.json, nothing else
    folder = cache / key
    (folder / "manifest.json").unlink()
    record = json.loads((folder / "record.json").read_text())
    del record["cache_format"]
    (folder / "record.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        again = ls.extract(model, TEXTS, cache_dir=str(cache), progress=False)
    assert cache_lines(caplog) == [f"cache entry {key} has no checksums (written by an older layerscope): recomputing"]
    assert not again.from_cache
    np.testing.assert_array_equal(np.asarray(again.pooled), expected)  # identical computation, same process
    assert "cache_format" not in again.record  # the entry's bookkeeping stays out of the record


def test_the_check_finds_what_a_size_check_cannot(model, tmp_path):
    """The overwritten middle really changes what a memory map would have served."""
    cache = tmp_path / "cache"
    clean = ls.extract(model, TEXTS, cache_dir=str(cache), progress=False)
    expected = np.array(clean.pooled)
    pooled = cache / clean.record["cache_key"] / "pooled.npy"
    del clean
    before = file_digest(pooled)
    overwrite_middle(pooled)
    served = np.load(pooled, mmap_mode="r")
    assert served.shape == expected.shape and not np.array_equal(served, expected)
    assert file_digest(pooled) != before


def _token_hook(n: int):
    from layerscope.metrics import TokenMetrics, get

    return TokenMetrics([get("prompt_entropy").make_accumulator(n), get("curvature").make_accumulator(n)])


def _per_prompt(hook) -> dict[tuple[str, str], np.ndarray]:
    return {(name, label): np.asarray(values)
            for name, result in hook.compute().items() for label, values in result.per_prompt.items()}


@pytest.mark.parametrize("kind", ["truncated", "overwritten middle", "another entry's file"])
def test_a_damaged_token_metric_checkpoint_is_recomputed(model, tmp_path, caplog, kind):
    cache = str(tmp_path / "cache")
    first = _token_hook(len(TEXTS))
    clean = ls.extract(model, TEXTS, token_hook=first, cache_dir=cache, progress=False)
    ls.extract(model, OTHER, token_hook=_token_hook(len(OTHER)), cache_dir=cache, progress=False)
    key = clean.record["cache_key"]
    expected_pooled, expected = np.array(clean.pooled), _per_prompt(first)
    del clean
    (state,) = (tmp_path / "cache" / key).glob("tokens-*.npz")
    if kind == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
        what = rf"{state.name} is unreadable: .+"
    elif kind == "overwritten middle":
        overwrite_middle(state)
        what = rf"{state.name} (is unreadable: Bad CRC-32 .+|does not match its sha256)"  # zip's CRC or ours
    else:
        (foreign,) = [path for path in (tmp_path / "cache").glob(f"*/{state.name}") if path != state]
        shutil.copy(foreign, state)
        what = rf"{state.name} belongs to another entry \({foreign.parent.name}/tokens-.+\)"
    second = _token_hook(len(TEXTS))
    with caplog.at_level(logging.WARNING):
        again = ls.extract(model, TEXTS, token_hook=second, cache_dir=cache, progress=False)
    (line,) = cache_lines(caplog)
    assert re.fullmatch(rf"cache entry {key} was damaged \({what}\): recomputing", line), line
    assert not again.from_cache
    # exact: the hook and the embeddings recomputed by the identical computation in this process
    np.testing.assert_array_equal(np.asarray(again.pooled), expected_pooled)
    found = _per_prompt(second)
    assert found.keys() == expected.keys()
    for name, values in expected.items():
        np.testing.assert_array_equal(found[name], values, err_msg=str(name))


# --------------------------------------------------------------------------- embed's chunks


def _rows(texts):
    from layerscope.data import Rows

    return Rows(list(texts), list(range(len(texts))), "test")


def test_a_damaged_embed_chunk_is_recomputed(model, tmp_path, caplog):
    from layerscope.export.embed import embed_layer

    texts = TEXTS + OTHER  # three chunks of 8
    cache = tmp_path / "cache"
    embed_layer(model, _rows(texts), 2, tmp_path / "clean.npy", cache_dir=str(cache), chunk_size=8, progress=False)
    chunks = sorted(cache.glob("*/pooled.npy"))
    assert len(chunks) == 3  # one entry per chunk, of layer 2 only
    overwrite_middle(chunks[1])
    with caplog.at_level(logging.WARNING):
        embed_layer(model, _rows(texts), 2, tmp_path / "again.npy", cache_dir=str(cache), chunk_size=8,
                    progress=False)
    assert cache_lines(caplog) == [f"cache entry {chunks[1].parent.name} was damaged (pooled.npy does not match "
                                   "its sha256): recomputing"]
    clean, again = np.load(tmp_path / "clean.npy"), np.load(tmp_path / "again.npy")
    np.testing.assert_array_equal(again["id"], clean["id"])
    # exact: the damaged chunk was recomputed by the identical computation in this process
    np.testing.assert_array_equal(again["embedding"], clean["embedding"])


def test_the_embed_command_says_so_in_one_line(model, tmp_path):
    folder = tmp_path / "model"
    model.model.save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    command = ["embed", "--model", str(folder), "--layer", "2", "--dataset", str(tmp_path / "texts.txt"),
               "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    script = textwrap.dedent("""
        import sys
        from layerscope.cli import main
        sys.argv = ["layerscope", *sys.argv[1:]]
        main()
    """)

    def run(out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, *command, "--out", str(tmp_path / out)],
                              capture_output=True, text=True, timeout=300)

    first = run("clean.npy")
    assert first.returncode == 0, first.stderr
    (pooled,) = (tmp_path / "cache").glob("*/pooled.npy")
    pooled.write_bytes(pooled.read_bytes()[:100])
    again = run("again.npy")
    assert again.returncode == 0, again.stderr
    lines = [line for line in again.stderr.splitlines() if "cache entry" in line]
    size = pooled.stat().st_size
    assert lines == [f"WARNING layerscope.extract.cache: cache entry {pooled.parent.name} was damaged (pooled.npy is "
                     f"100 bytes, expected {size:,}): recomputing"]
    assert "Traceback" not in again.stderr
    # recomputed in another process: same batches and threads, but BLAS may take other (alignment-
    # dependent) code paths; float32 rounding of a 3-block forward pass stays far below 1e-5 relative
    np.testing.assert_allclose(np.load(tmp_path / "again.npy")["embedding"],
                               np.load(tmp_path / "clean.npy")["embedding"], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- the dequantized-GGUF model cache


@pytest.fixture
def gguf_cache(tmp_path, monkeypatch):
    """A model cache in ``tmp_path`` whose 'dequantization' returns a tiny model and counts its calls
    (the GGUF reader is transformers'; what is tested here is the cache around it)."""
    from layerscope.models import loading

    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "gguf"
    source.mkdir()
    (source / "tiny.gguf").write_bytes(b"GGUF" + bytes(60))  # only its size and mtime are read
    made = tiny_model("llama", num_layers=2, seed=3)
    calls = []

    def dequantize(folder, gguf_file, dtype):
        calls.append(gguf_file)
        return made.model, made.tokenizer

    monkeypatch.setattr(loading, "_dequantize", dequantize)

    def load():
        model, _ = loading._load_gguf_cached(source, "tiny.gguf", "gguf-tiny", torch.float32)
        return {name: tensor.clone() for name, tensor in model.state_dict().items()}

    expected = {name: tensor.clone() for name, tensor in made.model.state_dict().items()}
    return load, calls, tmp_path / "cache" / "models" / "gguf-tiny", expected


def assert_same_weights(found, expected) -> None:
    assert found.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(found[name], tensor), name  # exact: a safetensors file read back


def _other_weights(folder) -> None:
    """Put another model's weights (same architecture, so the same file size) in ``folder``."""
    other = tiny_model("llama", num_layers=2, seed=4)
    scratch = folder.parent / "scratch"
    other.model.save_pretrained(str(scratch))
    assert (scratch / "model.safetensors").stat().st_size == (folder / "model.safetensors").stat().st_size
    shutil.copy(scratch / "model.safetensors", folder / "model.safetensors")


@pytest.mark.parametrize(("kind", "what"), [
    ("truncated", r"model\.safetensors is [\d,]+ bytes, expected [\d,]+"),
    ("overwritten middle", r"model\.safetensors does not match its sha256"),
    ("another model's weights", r"model\.safetensors does not match its sha256"),
    ("manifest removed", r"layerscope-source\.json is missing"),
    ("manifest garbled", r"layerscope-source\.json is unreadable"),
])
def test_a_damaged_dequantized_model_is_rebuilt(gguf_cache, caplog, kind, what):
    load, calls, folder, expected = gguf_cache
    assert_same_weights(load(), expected)
    assert calls == ["tiny.gguf"] and (folder / "model.safetensors").is_file()
    assert_same_weights(load(), expected)
    assert len(calls) == 1  # the second load read the cache
    weights = folder / "model.safetensors"
    if kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:-1000])
    elif kind == "overwritten middle":
        overwrite_middle(weights, 256)
    elif kind == "another model's weights":
        _other_weights(folder)
    elif kind == "manifest removed":
        (folder / "layerscope-source.json").unlink()
    else:
        (folder / "layerscope-source.json").write_text("{")
    with caplog.at_level(logging.WARNING):
        assert_same_weights(load(), expected)
    (line,) = cache_lines(caplog)
    assert re.fullmatch(rf"cache entry gguf-tiny was damaged \({what}\): recomputing", line), line
    assert len(calls) == 2  # dequantized again
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert_same_weights(load(), expected)  # the rebuilt cache, read back
    assert len(calls) == 2 and cache_lines(caplog) == []


def test_a_model_cache_of_an_older_layerscope_is_rebuilt_and_said_so(gguf_cache, caplog):
    load, calls, folder, expected = gguf_cache
    load()
    manifest = json.loads((folder / "layerscope-source.json").read_text())
    (folder / "layerscope-source.json").write_text(json.dumps(manifest["source"]))  # the old marker: no checksums
    with caplog.at_level(logging.WARNING):
        assert_same_weights(load(), expected)
    assert cache_lines(caplog) == ["cache entry gguf-tiny has no checksums (written by an older layerscope): "
                                   "recomputing"]
    assert len(calls) == 2


def test_every_kind_of_cache_sits_under_one_root(monkeypatch, tmp_path) -> None:
    from layerscope.cli.options import default_cache_dir
    from layerscope.data.fetch import data_cache_dir
    from layerscope.models.bundled import model_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LAYERSCOPE_CACHE", "~/lc")  # as a shell leaves it when quoted: expanded here
    assert (model_cache_dir(), data_cache_dir(), Path(default_cache_dir())) == (
        tmp_path / "lc" / "models", tmp_path / "lc" / "data", tmp_path / "lc" / "embeddings")
    if sys.platform.startswith("linux"):  # without the variable: the platform's user cache folder
        monkeypatch.delenv("LAYERSCOPE_CACHE")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert model_cache_dir() == tmp_path / "xdg" / "layerscope" / "models"
        assert data_cache_dir().parent == model_cache_dir().parent == Path(default_cache_dir()).parent
