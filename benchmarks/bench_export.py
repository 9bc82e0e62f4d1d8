"""Encode time of an exported layer (70% depth) against the full model, same pooling, texts and threads.

``layerscope export`` keeps the embeddings and blocks 1..L; this measures what that buys. Both models
are loaded the way a user would load them (``SentenceTransformer(folder)`` for the export, and the
full model exported at its last layer for the same pipeline, so tokenization, batching and pooling
are identical), then ``encode`` runs on the same texts, alternating, best of ``--repeats``. The
ideal ratio is about L_total / L (the embeddings and the pooling cost the same in both). The last line
is ``ratio: <full time / exported time>``.

    python benchmarks/bench_export.py [--model smollm2-135m] [--depth 0.7] [--texts 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import layerscope as ls
from layerscope.data import load_texts
from layerscope.export import export_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="rotten-tomatoes")
    parser.add_argument("--depth", type=float, default=0.7, help="layer kept, as a fraction of the depth")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    model = ls.load_model(args.model, device="cpu")
    texts = load_texts(args.dataset, limit=args.texts, seed=0)
    layer = max(1, int(args.depth * model.num_layers + 0.5))
    with tempfile.TemporaryDirectory() as folder:
        part = export_layer(model, layer, Path(folder) / "part", max_length=128)
        full = export_layer(model, model.num_layers, Path(folder) / "full", max_length=128)
        encoders = {"full": SentenceTransformer(str(full.out), device="cpu"),
                    "exported": SentenceTransformer(str(part.out), device="cpu")}

        def timed(name: str) -> float:
            start = time.perf_counter()
            encoders[name].encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
            return time.perf_counter() - start

        for name in encoders:  # warm-up
            timed(name)
        times: dict[str, list[float]] = {name: [] for name in encoders}
        for _ in range(args.repeats):
            for name in encoders:
                times[name].append(timed(name))
    best = {name: min(values) for name, values in times.items()}
    print(f"model {args.model}: layer {layer} of {model.num_layers} kept ({part.parameters:,} of "
          f"{part.parameters_full:,} parameters); {len(texts)} texts from {args.dataset}, max 128 tokens, "
          f"batch {args.batch_size}, {args.threads} threads, best of {args.repeats}")
    for name, values in times.items():
        print(f"{name:9s}: {best[name]:.3f} s  (all: {', '.join(f'{value:.2f}' for value in values)})")
    print(f"ideal about {model.num_layers / layer:.2f} (L_total / L)")
    print(f"ratio: {best['full'] / best['exported']:.3f}")


if __name__ == "__main__":
    main()
