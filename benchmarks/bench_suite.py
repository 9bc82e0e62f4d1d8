"""The offline suite task by task: sizes, tokens, the last layer's score and its bootstrap interval width.

For each task of a suite (default ``offline``, suite v2): its type, the evaluation units the paired
bootstrap resamples (test examples, pairs, clustered texts or queries), its unique texts and their
tokens under the model's tokenizer (what the forward pass costs), then MTEB's main score at the
model's last layer (x 100) and the width of its 95% bootstrap interval (``--n-boot`` resamples of
the evaluation units, :mod:`layerscope.evaluate.uncertainty`): how stable each task's score is.
The last line sums texts and tokens over the suite (texts shared between tasks counted once).

    python benchmarks/bench_suite.py [--model minilm-l6] [--suite offline] [--n-boot 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MTEB_CACHE", tempfile.mkdtemp(prefix="layerscope-bench-mteb-"))

import torch  # noqa: E402

import layerscope as ls  # noqa: E402
from layerscope.evaluate import evaluate_layers, resolve  # noqa: E402
from layerscope.evaluate.runner import collect_texts  # noqa: E402
from layerscope.evaluate.uncertainty import bootstrap_layers, bootstrap_plan, task_intervals  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--suite", default="offline")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = ls.load_model(args.model)
    tasks = resolve(args.suite)
    texts = {task.metadata.name: collect_texts([task]) for task in tasks}  # loads each task's data
    every = list(dict.fromkeys(text for group in texts.values() for text in group))
    tokens = dict(zip(every, (len(ids) for ids in model.tokenizer(every)["input_ids"]), strict=True))
    last = model.num_layers
    start = time.perf_counter()
    extraction = ls.extract(model, every, layers=[last], progress=False)
    scores = evaluate_layers(model, tasks, layers=[last], extraction=extraction, progress=False, eval_workers=1)
    boot = bootstrap_layers(scores, extraction, tasks, n_resamples=args.n_boot, progress=False, eval_workers=1)
    seconds = time.perf_counter() - start
    intervals = task_intervals(boot).set_index("task")
    print(f"{model.model_id}, suite {args.suite}: last layer {last}, {args.n_boot} bootstrap resamples, "
          f"95% intervals ({seconds:.0f} s)")
    print("| task | type | n examples | unique texts | tokens | score (last layer) | 95% width |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for task in tasks:
        name = task.metadata.name
        units = bootstrap_plan(task, 1, 0).n_units
        row = intervals.loc[name]
        print(f"| {name} | {task.metadata.type} | {units} | {len(texts[name])} | "
              f"{sum(tokens[t] for t in texts[name])} | {row['score']:.1f} | {row['high'] - row['low']:.1f} |")
    print(f"suite: {len(tasks)} tasks, {len(every)} unique texts, {sum(tokens.values())} tokens "
          f"({model.model_id} tokenizer)")


if __name__ == "__main__":
    main()
