"""Interrupted passes resume, concurrent writers are safe, and a layer subset stops the pass early
(issue 15 points 4 and 5; issue 12's embedding of one layer)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import layerscope as ls
from layerscope.models.tiny import tiny_model

TEXTS = [f"Text number {i} says something about layer {i % 7} and its {'long ' * (i % 5)}representation."
         for i in range(40)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    model = tiny_model("llama", num_layers=3)
    model.model.save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))
    (folder / "texts.json").write_text(json.dumps(TEXTS))
    return folder


def run(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


# Measures all metrics of TEXTS with a cache; with a stop count, it sends itself a signal after that
# many forward passes (SIGINT: Ctrl-C; SIGKILL: no clean-up at all) and counts the texts it encoded.
MEASURE = """
    import json, os, signal, sys
    import numpy as np
    import layerscope as ls
    from layerscope.config import ExtractConfig, ViewConfig
    from layerscope.extract import engine
    folder, cache, out, stop, how = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    texts = json.loads(open(os.path.join(folder, "texts.json")).read())
    model = ls.load_model(folder, device="cpu")
    calls, encoded = [0], [0]
    original = engine._BatchRunner.__call__
    def counting(self, input_ids, mask):
        calls[0] += 1
        if stop and calls[0] > stop:
            os.kill(os.getpid(), getattr(signal, how))
        encoded[0] += input_ids.shape[0]
        return original(self, input_ids, mask)
    engine._BatchRunner.__call__ = counting
    measured = ls.measure(model, texts, views=ViewConfig(n_views=4), extraction=ExtractConfig(batch_size=4),
                          cache_dir=cache, progress=False)
    np.save(out, measured.metrics["value"].to_numpy())
    print(encoded[0])
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_an_interrupted_measurement_resumes_and_is_bit_identical(model_dir, tmp_path, signal_name):
    env = {"LAYERSCOPE_CHECKPOINT_SECONDS": "0"}  # checkpoint after every batch, so SIGKILL leaves one
    whole = run(MEASURE, str(model_dir), str(tmp_path / "cache-a"), str(tmp_path / "whole.npy"), "0", "-", env=env)
    assert whole.returncode == 0, whole.stderr
    killed = run(MEASURE, str(model_dir), str(tmp_path / "cache-b"), str(tmp_path / "x.npy"), "5", signal_name, env=env)
    assert killed.returncode != 0 and not (tmp_path / "x.npy").exists()
    resumed = run(MEASURE, str(model_dir), str(tmp_path / "cache-b"), str(tmp_path / "resumed.npy"), "0", "-", env=env)
    assert resumed.returncode == 0, resumed.stderr
    # the resumed run encoded only what the killed one had not: 5 batches of 4 texts were kept
    assert int(resumed.stdout.split()[-1]) == int(whole.stdout.split()[-1]) - 5 * 4
    # exact: the resumed run encodes the texts left in the same length-sorted batches as the whole run, on
    # this machine with the same threads, and reads the finished ones back: identical by construction
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), np.load(tmp_path / "whole.npy"))
    # and once complete, the token metrics come with the embeddings: no forward pass at all
    again = run(MEASURE, str(model_dir), str(tmp_path / "cache-b"), str(tmp_path / "again.npy"), "0", "-", env=env)
    assert again.returncode == 0 and int(again.stdout.split()[-1]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), np.load(tmp_path / "whole.npy"))  # read back: exact


EXTRACT = """
    import json, os, sys, time
    import numpy as np
    import layerscope as ls
    from layerscope.extract import engine
    folder, cache, out, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    texts = json.loads(open(os.path.join(folder, "texts.json")).read())
    model = ls.load_model(folder, device="cpu")
    original = engine._BatchRunner.__call__
    def slow(self, input_ids, mask):
        time.sleep(0.05)  # both processes are surely inside the pass at the same time
        return original(self, input_ids, mask)
    engine._BatchRunner.__call__ = slow
    time.sleep(max(0.0, start - time.time()))
    result = ls.extract(model, texts, batch_size=2, cache_dir=cache, progress=False)
    np.save(out, np.asarray(result.pooled))
    print(result.from_cache)
"""


def test_two_writers_of_one_cache_entry_are_safe(model_dir, tmp_path):
    import os
    import time

    start = str(time.time() + 8)  # both start their pass at this moment, after loading
    processes = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(EXTRACT), str(model_dir), str(tmp_path / "cache"),
                                   str(tmp_path / f"out{i}.npy"), start], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**os.environ})
                 for i in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err for _, err in outputs]
    # one encoded the texts, the other waited for the entry and read it
    assert sorted(out.split()[-1] for out, _ in outputs) == ["False", "True"]
    assert any("another process is writing the cache entry" in err for _, err in outputs)
    np.testing.assert_array_equal(np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy"))  # one read back: exact


def test_a_layer_subset_stops_the_pass_and_is_cached_alone(tmp_path):
    model = tiny_model("llama", num_layers=4)
    ran = []
    handles = [block.register_forward_hook(lambda module, args, out, i=i: ran.append(i))
               for i, block in enumerate(model.blocks)]
    try:
        subset = ls.extract(model, TEXTS[:6], layers=[1, 2], cache_dir=str(tmp_path), progress=False)
        assert max(ran) == 1  # blocks 3 and 4 never ran (block index 1 = layer 2)
        ran.clear()
        again = ls.extract(model, TEXTS[:6], layers=[1, 2], cache_dir=str(tmp_path), progress=False)
        assert again.from_cache and not ran
    finally:
        for handle in handles:
            handle.remove()
    full = ls.extract(model, TEXTS[:6], progress=False)
    # exact: the same batches through the same blocks, each layer pooled on its own (a pass stopped early
    # changes nothing before it); then the cache read back
    np.testing.assert_array_equal(subset.pooled, full.pooled[[1, 2]])
    np.testing.assert_array_equal(again.pooled, subset.pooled)
    assert subset.layers == [1, 2]
    # a complete entry of every layer serves any subset
    ls.extract(model, TEXTS[6:12], cache_dir=str(tmp_path), progress=False)
    part = ls.extract(model, TEXTS[6:12], layers=[3], cache_dir=str(tmp_path), progress=False)
    assert part.from_cache and part.layers == [3]


def test_token_hook_state_round_trips(tiny_llama):
    from layerscope.metrics import TokenMetrics, get

    def hook() -> TokenMetrics:
        return TokenMetrics([get("prompt_entropy").make_accumulator(len(TEXTS)),
                             get("curvature").make_accumulator(len(TEXTS))])

    first = hook()
    ls.extract(tiny_llama, TEXTS, token_hook=first, progress=False)
    positions = np.arange(len(TEXTS))
    second = hook()
    second.load_state(first.state(positions), positions)
    for name, values in first.compute().items():
        for label, per_prompt in values.per_prompt.items():
            np.testing.assert_array_equal(second.compute()[name].per_prompt[label], per_prompt)  # a copy: exact
    assert first.key() == hook().key()
    other = TokenMetrics([get("prompt_entropy").make_accumulator(len(TEXTS), alpha=2.0)])
    assert other.key() != TokenMetrics([get("prompt_entropy").make_accumulator(len(TEXTS))]).key()
