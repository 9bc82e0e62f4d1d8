"""Why DiME's profile does not settle with the views budget: sampling noise, permutation noise, and size.

Issue 25 asks every invariance metric's per-layer profile at the default budget to rank the layers as
the full-size estimate does (rho >= 0.95). LiDAR and InfoNCE do; DiME on all the texts at once does
not on SmolLM2 (``bench_views.py``). This script says why, and measures the size-free form that is
now the default (DiME averaged over blocks of 256 texts), for each model, from one encoding of
``--texts`` (2,048) seeded Rotten Tomatoes texts x 2 views (cut at ``--max-length`` tokens, the plan
and cache of ``metrics``):

- ``reference``: DiME on all the texts at once (``blocked``: in blocks, the default's full-size estimate);
- for each size N of ``--sizes``, the texts cut into disjoint samples of N (``--draws`` at most), which
  are independent:
  - ``rho draws``: (DiME on all the sample's texts at once, ``block_size=None``) Spearman across
    layers of each sample's profile with the reference, mean [min];
  - ``split-half``: rho between two disjoint samples (neither is the reference);
  - ``rho of the mean``: rho of the samples' mean profile with the reference. The mean of k samples
    has 1/k of their noise, so where it stays below 1 the profile at N texts ranks the layers
    differently from the profile at all texts: DiME's shape depends on N, not only its noise;
  - ``sample sd`` and ``shape sd``: the per-layer spread over the samples (of the value, and of the
    value less the profile's mean over layers), median over layers, as a share of the reference's
    range across layers;
  - ``permutation sd``: the spread of the first sample's profile over 5 other permutation seeds (the
    10 random permutations of DiME's definition), same scale; and ``rho, P`` the first sample's rho
    with ``--permutations`` permutations instead of 10 (more permutations cost no forward pass);
  - ``at ref layer``: share of the samples whose argmin (the registry's direction) is the reference's;
  - ``blocked``: the size-free form (``dime(..., block_size=--block-size)``: the mean of DiME over
    seeded blocks of ``--block-size`` texts, the registry's 256), each sample's against the blocked reference (all the texts in blocks),
    mean [min] of rho, and the share of samples at the blocked reference's argmin;
  - ``InfoNCE: rho``: the same samples' InfoNCE loss profile against InfoNCE on all the texts, the
    other metric of the pair budget, mean [min].

The last line is ``rho: <lowest mean rho of the samples at the default budget's texts
(``DEFAULT_VIEW_TEXTS``, 512), over the models, of the default (blocked) form>``; the line before
gives the same for the whole-sample form.

    python benchmarks/bench_dime_size.py [--models smollm2-135m minilm-l6 gemma3-270m] [--texts 2048]
        [--sizes 256 512] [--draws 8] [--permutations 100] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_views import _machine, encode_pools, markdown  # noqa: E402


def encode_pairs(alias: str, args: argparse.Namespace) -> Any:
    """2 views of every text, as ``metrics`` plans and encodes them (``bench_views.encode_pools`` without
    LiDAR texts): (layers, texts, 2, d)."""
    from layerscope import load_model
    from layerscope.data import load_rows

    texts = [text for text in load_rows(args.dataset, limit=args.texts, seed=args.seed).texts if text.strip()]
    pairs, _, _, _ = encode_pools(load_model(alias), texts, argparse.Namespace(**vars(args), views_max=2,
                                                                                 lidar_texts=0))
    return pairs


def study(alias: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    from scipy.stats import spearmanr

    from layerscope.metrics.functional import dime, infonce

    started = time.perf_counter()
    pairs = encode_pairs(alias, args)
    total = pairs.shape[1]

    def profile(rows: np.ndarray, seed: int = 0, permutations: int = 10, block_size: int | None = None) -> np.ndarray:
        index = torch.as_tensor(np.sort(rows))
        return dime(pairs[:, index, 0], pairs[:, index, 1], n_permutations=permutations, seed=seed,
                    block_size=block_size).numpy()

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        return float(spearmanr(a, b).statistic)

    def infonce_loss(rows: np.ndarray) -> np.ndarray:  # the registry's main InfoNCE value, the loss
        index = torch.as_tensor(np.sort(rows))
        return infonce(pairs[:, index, 0], pairs[:, index, 1]).loss.numpy()

    reference = profile(np.arange(total))
    blocked_reference = profile(np.arange(total), block_size=args.block_size)
    infonce_reference = infonce_loss(np.arange(total))
    span = float(np.ptp(reference))
    order = np.random.default_rng(args.seed).permutation(total)
    print(f"{alias}: {pairs.shape[0]} layers, {total:,} texts x 2 views; reference argmin {int(reference.argmin())}, "
          f"range {span:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    rows = []
    for n in args.sizes:
        samples = [order[i * n:(i + 1) * n] for i in range(min(total // n, args.draws))]
        drawn = np.array([profile(rows) for rows in samples])  # (samples, layers)
        seeds = np.array([profile(samples[0], seed=seed) for seed in range(1, 6)])
        rhos = [rho(values, reference) for values in drawn]
        blocked = np.array([profile(rows, block_size=args.block_size) for rows in samples])
        blocked_rhos = [rho(values, blocked_reference) for values in blocked]
        infonce_rhos = [rho(infonce_loss(rows), infonce_reference) for rows in samples]
        shape = drawn - drawn.mean(axis=1, keepdims=True)
        rows.append({
            "model": alias, "texts": n, "samples": len(samples),
            "rho draws": f"{np.mean(rhos):.3f} [{np.min(rhos):.3f}]", "rho_mean": float(np.mean(rhos)),
            "split-half": f"{np.mean([rho(drawn[i], drawn[i + 1]) for i in range(0, len(drawn) - 1, 2)]):.3f}",
            "rho of the mean": f"{rho(drawn.mean(axis=0), reference):.3f}",
            "sample sd": f"{100 * np.median(drawn.std(axis=0, ddof=1)) / span:.0f}%",
            "shape sd": f"{100 * np.median(shape.std(axis=0, ddof=1)) / span:.0f}%",
            "permutation sd": f"{100 * np.median(seeds.std(axis=0, ddof=1)) / span:.1f}%",
            f"rho, P={args.permutations} (P=10)": f"{rho(profile(samples[0], permutations=args.permutations), reference):.3f}"
                                                   f" ({rhos[0]:.3f})",
            "at ref layer": f"{100 * np.mean([values.argmin() == reference.argmin() for values in drawn]):.0f}%",
            "blocked: rho": f"{np.mean(blocked_rhos):.3f} [{np.min(blocked_rhos):.3f}]",
            "blocked_mean": float(np.mean(blocked_rhos)),
            "blocked: at ref layer": f"{100 * np.mean([v.argmin() == blocked_reference.argmin() for v in blocked]):.0f}%",
            "InfoNCE: rho": f"{np.mean(infonce_rhos):.3f} [{np.min(infonce_rhos):.3f}]",
        })
    print(f"{alias}: done in {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "minilm-l6", "gemma3-270m"])
    parser.add_argument("--dataset", default="rotten-tomatoes")
    parser.add_argument("--texts", type=int, default=2048, help="texts with 2 views (the reference)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512], help="sample sizes (the default budget's is added)")
    parser.add_argument("--draws", type=int, default=8, help="disjoint samples per size, at most")
    parser.add_argument("--permutations", type=int, default=100, help="permutations of the many-permutation check")
    parser.add_argument("--block-size", type=int, default=None, help="block of the size-free form (default: "
                        "the registry's, DIME_BLOCK)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: layerscope's)")
    args = parser.parse_args()
    from layerscope.config import DEFAULT_VIEW_TEXTS
    from layerscope.metrics.registry import DIME_BLOCK

    args.sizes = sorted({*args.sizes, DEFAULT_VIEW_TEXTS})
    args.block_size = args.block_size or DIME_BLOCK
    if any(not 2 <= 2 * n <= args.texts for n in args.sizes):
        parser.error("every size needs two disjoint samples in --texts")

    import threadpoolctl
    import torch

    torch.set_num_threads(args.threads)
    threadpoolctl.threadpool_limits(args.threads)
    print(f"DiME and the number of texts: {args.texts:,} texts of {args.dataset} x 2 views, sizes {args.sizes}, "
          f"seed {args.seed}, {args.threads} threads; {_machine()}", flush=True)
    frame = pd.DataFrame([row for alias in args.models for row in study(alias, args)])
    print("\n" + markdown(frame.drop(columns=["rho_mean", "blocked_mean"])))
    default = frame[frame["texts"] == DEFAULT_VIEW_TEXTS]
    if not default.empty:
        print(f"\nat {DEFAULT_VIEW_TEXTS} texts, all at once (block_size=None): rho {default['rho_mean'].min():.3f}")
        print(f"rho: {default['blocked_mean'].min():.3f}")


if __name__ == "__main__":
    main()
