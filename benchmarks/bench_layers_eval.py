"""All-layer downstream evaluation: one encoding pass + cached layers, against the per-layer protocol.

On the bundled SmolLM2 (31 layers) and two offline tasks, ``evaluate_layers`` (texts collected by a
dry run, encoded once with every layer pooled, then MTEB's evaluators per layer on the cached
vectors) against the per-layer protocol the paper's code followed: for each layer, MTEB runs the
tasks on an encoder that encodes the texts again and returns that layer (texts repeated within a
call are encoded once, so the baseline is not inflated by MTEB's duplicates). Both sides use the
same evaluators, seeds and thread count; the scores must agree (the max difference is printed).
The last line is ``ratio: <per-layer protocol time / cached time>`` (target: at least 10).

    python benchmarks/bench_layers_eval.py [--tasks LeeDocumentSTS,RottenTomatoesPlotReranking]
                                           [--threads 1] [--layers all]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MTEB_CACHE", tempfile.mkdtemp(prefix="layerscope-bench-mteb-"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import layerscope as ls  # noqa: E402
from layerscope.evaluate import evaluate_layers, resolve  # noqa: E402
from layerscope.evaluate.encoder import DirectLayerEncoder  # noqa: E402
from layerscope.evaluate.runner import main_score, run_task  # noqa: E402
from layerscope.extract import resolve_layers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default="LeeDocumentSTS,RottenTomatoesPlotReranking")
    parser.add_argument("--layers", default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = ls.load_model(args.model)
    tasks = resolve(args.tasks, seed=args.seed)
    layers = resolve_layers(args.layers, model.num_layers)
    for task in tasks:  # data building is common to both sides: keep it out of the timings
        task.load_data()
    ls.extract(model, ["warm-up text"], progress=False)
    print(f"model {model.model_id}: {len(layers)} layers, tasks {', '.join(t.metadata.name for t in tasks)}, "
          f"torch threads {args.threads}")

    start = time.perf_counter()
    frame = evaluate_layers(model, tasks, layers=layers, seed=args.seed, cache_dir=None, progress=False)
    cached = time.perf_counter() - start
    seconds = frame.attrs["record"]["seconds"]
    print(f"cached: {cached:.1f} s for {frame.attrs['record']['n_texts']} unique texts "
          f"(prepare {seconds['prepare']:.1f} s, encode once {seconds['encode']:.1f} s, "
          f"evaluate {len(layers)} layers {seconds['evaluate']:.1f} s)")

    cached_scores = {(row.layer, row.task): row.main_score for row in frame.itertuples()}
    differences = []
    encode_seconds = []
    start = time.perf_counter()
    for layer in layers:
        layer_start = time.perf_counter()
        encoder = DirectLayerEncoder(model, layer)
        for task in tasks:
            score = main_score(run_task(encoder, task, args.seed))
            differences.append(abs(score - cached_scores[(layer, task.metadata.name)]))
        encode_seconds.append(time.perf_counter() - layer_start)
    per_layer = time.perf_counter() - start
    print(f"per-layer protocol: {per_layer:.1f} s ({per_layer / len(layers):.1f} s per layer, encoding every time)")
    # The paper truncated the model at layer l, so its pass l costs about (l + 1) / (L + 1) of a full one.
    truncated = sum(t * (layer + 1) / (model.num_layers + 1) for t, layer in zip(encode_seconds, layers, strict=True))
    print(f"per-layer protocol with a truncated model (estimate): {truncated:.1f} s, ratio {truncated / cached:.1f}")
    print(f"max |score difference| cached vs per-layer: {max(differences):.2e} over {len(differences)} scores")
    for name in dict.fromkeys(frame["task"]):
        rows = frame[frame["task"] == name]
        best = rows.loc[rows["main_score"].idxmax()]
        print(f"  {name}: best layer {int(best['layer'])} ({best['main_score']:.4f}), "
              f"last layer {rows['main_score'].iloc[-1]:.4f}")
    print(f"ratio: {per_layer / cached:.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
