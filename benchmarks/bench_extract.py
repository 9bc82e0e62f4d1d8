"""Extraction overhead: ``layerscope.extract`` against a bare forward over the same batches.

On the bundled SmolLM2 with 256 bundled texts: ``extract`` pools all 31 layers and runs a token hook
that touches every layer, against ``model(**batch)`` alone on the identical batches, same thread
count, measured side by side (alternating, best of ``--repeats``). The last line is
``ratio: <extract time / bare forward time>`` (target: at most 1.10).

    python benchmarks/bench_extract.py [--texts 256] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import layerscope as ls
from layerscope.data import load_texts
from layerscope.extract.engine import TokenizedTexts, _plan_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="rotten-tomatoes")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ls.load_model(args.model)
    texts = load_texts(args.dataset, limit=args.texts, seed=0)

    # the batches extract will run: same tokenization, same length-sorted plan
    tokenized = TokenizedTexts.from_texts(model, texts, 512)
    batches = [tokenized.batch(torch.from_numpy(rows)) for rows in
               _plan_batches(tokenized.lengths, np.arange(len(texts)), "auto", model)]
    touched = []

    def hook(states, lengths):  # touches every layer of every prompt, like prompt-entropy would
        touched.append(float(states.sum(dim=(1, 2, 3)).sum()))

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for input_ids, mask in batches:
                model.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        return time.perf_counter() - start

    def ours() -> float:
        start = time.perf_counter()
        ls.extract(model, texts, token_hook=hook, progress=False)
        return time.perf_counter() - start

    bare(), ours()  # warm-up
    bare_times, our_times = [], []
    for _ in range(args.repeats):
        bare_times.append(bare())
        our_times.append(ours())
    tokens = int(tokenized.lengths.sum())
    print(f"model {args.model}, {len(texts)} texts from {args.dataset}, {tokens} tokens, "
          f"{len(batches)} batches, {args.threads} threads, best of {args.repeats}")
    print(f"bare forward : {min(bare_times):.3f} s  (all: {', '.join(f'{t:.2f}' for t in bare_times)})")
    print(f"extract      : {min(our_times):.3f} s  (all: {', '.join(f'{t:.2f}' for t in our_times)}; "
          "31 layers pooled + token hook on every layer)")
    print(f"ratio: {min(our_times) / min(bare_times):.3f}")


if __name__ == "__main__":
    main()
