"""Benchmark: layerscope's batched metrics against a reference written the way the paper's code works.

Issue 3, point 6. Both sides get identical synthetic inputs sized like a real run: L+1 = 31 layers,
1,000 prompts of 64 tokens, D = 576 (SmolLM2-135M), plus 2 and 16 augmented views of each prompt's
pooled embedding. The reference side is written the way the paper's code works (OFSkean/
information_flow, ``metric_functions.py``): Python loops over prompts and layers, one full
``torch.linalg.eigh`` (with eigenvectors) per matrix in float64, DiME one permutation at a time
(repitl's ``doe``), LiDAR scatter matrices accumulated sample by sample (``compute_LDA_matrix``),
curvature by a loop over consecutive token pairs (``compute_curvature``). Token states are generated
batch by batch (the extraction engine streams them; 31 x 1,000 x 64 x 576 float32 would be 4.6 GB)
and generation time is not counted on either side. Both sides run on one CPU thread (BLAS included)
and are timed interleaved (batch by batch, then 4 layers at a time) so that other processes on a
shared machine slow both alike.

If the reference would run past ``--budget`` seconds (default 300), the number of layers is reduced
for both sides alike (per-layer costs are what is compared) and the sizes used are printed.

Prints per metric: seconds on each side, their ratio, the largest absolute difference of the values
(the definitions coincide, so it should be <= 1e-6); then the metric time as a fraction of the
forward time on the bundled SmolLM2 (skipped with a message if the model cannot be loaded); the last
line is ``ratio: <reference total / layerscope total>``.

Run: ``.venv/bin/python benchmarks/bench_metrics.py`` (``--help`` for sizes; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from layerscope import metrics
from layerscope.metrics import functional as F
from layerscope.metrics.accumulators import CurvatureAccumulator, PromptEntropyAccumulator, TokenMetrics

TOL = F.DEFAULT_TOL


@dataclass(frozen=True)
class Sizes:
    layers: int = 31
    prompts: int = 1000
    tokens: int = 64
    dim: int = 576
    views: int = 16
    batch: int = 50
    seed: int = 0

    def describe(self) -> str:
        return (
            f"layers={self.layers} prompts={self.prompts} tokens={self.tokens} dim={self.dim} "
            f"views=2 and {self.views} batch={self.batch}"
        )


# --------------------------------------------------------------------------------------------------
# synthetic inputs (deterministic, shared by both sides)


def _spectrum(dim: int) -> torch.Tensor:
    return torch.logspace(0, -2, dim)  # decaying feature scales, like trained representations


def token_batches(sizes: Sizes) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (states (layers, B, T, D) float32, lengths (B,), indices (B,)) like the extraction hook."""
    generator = torch.Generator().manual_seed(sizes.seed)
    scale = _spectrum(sizes.dim)
    offset = 4.0 * torch.randn(sizes.layers, 1, 1, sizes.dim, generator=generator)  # massive mean direction
    for start in range(0, sizes.prompts, sizes.batch):
        b = min(sizes.batch, sizes.prompts - start)
        steps = torch.randn(sizes.layers, b, sizes.tokens, sizes.dim, generator=generator) * scale
        states = steps.cumsum(dim=2).mul_(0.3).add_(torch.randn(sizes.layers, b, 1, sizes.dim, generator=generator))
        states.add_(offset)
        lengths = torch.full((b,), sizes.tokens, dtype=torch.long)
        yield states, lengths, torch.arange(start, start + b)


def pooled_inputs(sizes: Sizes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """pooled (layers, N, D), view a and b (layers, N, D), views (layers, N, J, D); float32 like the cache."""
    generator = torch.Generator().manual_seed(sizes.seed + 1)
    scale = _spectrum(sizes.dim)
    shape = (sizes.layers, sizes.prompts, sizes.dim)
    pooled = torch.randn(*shape, generator=generator) * scale + 2.0
    views = pooled.unsqueeze(2) + 0.5 * torch.randn(*shape[:2], sizes.views, sizes.dim, generator=generator) * scale
    return pooled, views[:, :, 0].contiguous(), views[:, :, 1].contiguous(), views


# --------------------------------------------------------------------------------------------------
# the reference: one matrix at a time, eigenvectors included, Python loops (the paper's code style)


def ref_normalize(R: torch.Tensor) -> torch.Tensor:
    R = R - R.mean(dim=0)
    return R / torch.norm(R, p=2, dim=1, keepdim=True)


def ref_entropy_of(matrix: torch.Tensor, alpha: float = 1.0) -> float:
    eigenvalues, _ = torch.linalg.eigh(matrix)
    keep = eigenvalues[(eigenvalues > TOL * eigenvalues.max()) & (eigenvalues > 0)]
    p = keep / keep.sum()
    if alpha == 1.0:
        return float(-(p * torch.log(p)).sum())
    return float(torch.log((p**alpha).sum()) / (1 - alpha))


def ref_gram(Z: torch.Tensor) -> torch.Tensor:
    return Z @ Z.T if Z.shape[0] <= Z.shape[1] else Z.T @ Z


def ref_prompt_curvature(tokens: torch.Tensor) -> float:
    """The authors' compute_curvature: a Python loop over consecutive token pairs of one prompt."""
    total, count = 0.0, 0
    for k in range(1, tokens.shape[0] - 1):
        v_k = tokens[k] - tokens[k - 1]
        v_next = tokens[k + 1] - tokens[k]
        cosine = torch.dot(v_next, v_k) / (torch.norm(v_next) * torch.norm(v_k))
        total += float(torch.arccos(torch.clamp(cosine, -1.0, 1.0)))
        count += 1
    return total / count


def ref_prompt_entropy(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per prompt, per layer: normalize, Gram, eigh, maxEntropy-normalized entropy -> (layers, B)."""
    layers, prompts, _, dim = states.shape
    out = torch.zeros(layers, prompts, dtype=torch.float64)
    for b in range(prompts):
        for layer in range(layers):
            Z = states[layer, b, : lengths[b]].double()
            out[layer, b] = ref_entropy_of(ref_gram(ref_normalize(Z))) / math.log(min(int(lengths[b]), dim))
    return out


def ref_curvature(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per prompt, per layer: the authors' token-pair loop -> (layers, B)."""
    layers, prompts = states.shape[:2]
    out = torch.zeros(layers, prompts, dtype=torch.float64)
    for b in range(prompts):
        for layer in range(layers):
            out[layer, b] = ref_prompt_curvature(states[layer, b, : lengths[b]].double())
    return out


def ref_dataset_entropy(pooled: torch.Tensor) -> torch.Tensor:
    n, d = pooled.shape[1:]
    values = [ref_entropy_of(ref_gram(ref_normalize(layer.double()))) / math.log(min(n, d)) for layer in pooled]
    return torch.tensor(values, dtype=torch.float64)


def ref_effective_rank(pooled: torch.Tensor) -> torch.Tensor:
    out = []
    for layer in pooled:
        eigenvalues, _ = torch.linalg.eigh(ref_gram(ref_normalize(layer.double())))
        s = eigenvalues[(eigenvalues > TOL * eigenvalues.max()) & (eigenvalues > 0)].sqrt()
        q = s / s.sum()
        out.append(float(torch.exp(-(q * torch.log(q)).sum())))
    return torch.tensor(out, dtype=torch.float64)


def ref_entropy_rank(pooled: torch.Tensor) -> torch.Tensor:
    values = [math.exp(ref_entropy_of(ref_gram(ref_normalize(layer.double())))) for layer in pooled]
    return torch.tensor(values, dtype=torch.float64)


def ref_infonce(view_a: torch.Tensor, view_b: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    out = []
    for a, b in zip(view_a, view_b, strict=True):
        logits = ref_normalize(a.double()) @ ref_normalize(b.double()).T / tau
        labels = torch.arange(len(a))
        out.append(float(torch.nn.functional.cross_entropy(logits, labels)))
    return torch.tensor(out, dtype=torch.float64)


def ref_lidar(views: torch.Tensor, delta: float = 1e-4) -> torch.Tensor:
    """Scatter matrices accumulated sample by sample, as in the authors' compute_LDA_matrix."""
    out = []
    for layer in views:
        layer = layer.double()
        n, j, d = layer.shape
        dataset_mean = layer.mean(dim=(0, 1))
        class_means = layer.mean(dim=1)
        between = torch.zeros(d, d, dtype=torch.float64)
        for i in range(n):
            between += torch.outer(class_means[i] - dataset_mean, class_means[i] - dataset_mean)
        between /= n
        within = torch.zeros(d, d, dtype=torch.float64)
        for i in range(n):
            for k in range(j):
                within += torch.outer(layer[i, k] - class_means[i], layer[i, k] - class_means[i])
        within = within / (n * j) + delta * torch.eye(d, dtype=torch.float64)
        eigenvalues, eigenvectors = torch.linalg.eigh(within)
        inverse_sqrt = eigenvectors @ torch.diag(eigenvalues**-0.5) @ eigenvectors.T
        out.append(ref_entropy_of(inverse_sqrt @ between @ inverse_sqrt) / math.log(min(n, d)))
    return torch.tensor(out, dtype=torch.float64)


def ref_dime(view_a: torch.Tensor, view_b: torch.Tensor, n_permutations: int = 10, seed: int = 0) -> torch.Tensor:
    """One permutation at a time, one eigh per matrix (the authors' repitl ``doe``)."""
    n, d = view_a.shape[1:]
    generator = torch.Generator().manual_seed(seed)
    permutations = [torch.randperm(n, generator=generator) for _ in range(n_permutations)]
    out = []
    for a, b in zip(view_a, view_b, strict=True):
        a, b = ref_normalize(a.double()), ref_normalize(b.double())
        Ka, Kb = a @ a.T, b @ b.T
        joint = Ka * Kb
        paired = ref_entropy_of(joint / torch.trace(joint))
        unpaired = 0.0
        for perm in permutations:
            shuffled = Ka * Kb[perm][:, perm]
            unpaired += ref_entropy_of(shuffled / torch.trace(shuffled)) / n_permutations
        out.append((unpaired - paired) / math.log(min(n, d)))
    return torch.tensor(out, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------
# the two sides


def timed(function: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - start, value


def run_both(sizes: Sizes, pooled, view_a, view_b, views) -> tuple[dict[str, list], dict[str, list]]:
    """Time both sides on the same inputs, interleaved (batch by batch, then group of layers by group)
    so that a change in the machine's load affects both alike. Returns ``{metric: [seconds, values]}``
    for layerscope and for the reference."""
    ours: dict[str, list] = {}
    reference: dict[str, list] = {}

    def add(table: dict[str, list], name: str, seconds: float, values: torch.Tensor) -> None:
        entry = table.setdefault(name, [0.0, []])
        entry[0] += seconds
        entry[1].append(values.double())

    hooks = {
        "prompt_entropy": TokenMetrics([PromptEntropyAccumulator(sizes.prompts)]),
        "curvature": TokenMetrics([CurvatureAccumulator(sizes.prompts)]),
    }
    references = {"prompt_entropy": ref_prompt_entropy, "curvature": ref_curvature}
    for states, lengths, indices in token_batches(sizes):
        for name, hook in hooks.items():
            seconds, _ = timed(hook, states, lengths, indices)
            add(ours, name, seconds, torch.zeros(0))
            seconds, values = timed(references[name], states, lengths)
            add(reference, name, seconds, values.sum(dim=1))
    for name, hook in hooks.items():
        seconds, result = timed(hook.compute)
        key = "maxEntropy" if name == "prompt_entropy" else "raw"
        ours[name] = [ours[name][0] + seconds, torch.from_numpy(result[name].mean[key])]
        reference[name] = [reference[name][0], torch.stack(reference[name][1]).sum(dim=0) / sizes.prompts]

    reference_functions = {
        "dataset_entropy": ref_dataset_entropy,
        "effective_rank": ref_effective_rank,
        "entropy_rank": ref_entropy_rank,
        "infonce": ref_infonce,
        "lidar": ref_lidar,
        "dime": ref_dime,
    }
    inputs = {0: (pooled,), 2: (view_a, view_b), 16: (views,)}
    group = 4  # layers per interleaving step (layerscope batches the layers of a group)
    for name, reference_function in reference_functions.items():
        spec = metrics.get(name)
        for start in range(0, sizes.layers, group):
            part = tuple(x[start : start + group] for x in inputs[spec.n_views])
            seconds, out = timed(spec.compute, *part)
            add(ours, name, seconds, out[spec.normalizations[0]])
            seconds, values = timed(reference_function, *part)
            add(reference, name, seconds, values)
        ours[name][1] = torch.cat(ours[name][1])
        reference[name][1] = torch.cat(reference[name][1])
    return ours, reference


def estimate_reference_seconds(sizes: Sizes) -> float:
    """Reference time of the full run, extrapolated from one layer (and a few prompts) of each part."""
    few = replace(sizes, layers=1, prompts=min(sizes.prompts, 50), batch=50)
    states, lengths, _ = next(token_batches(few))
    token_seconds = timed(ref_prompt_entropy, states, lengths)[0] + timed(ref_curvature, states, lengths)[0]
    small = replace(sizes, layers=1, prompts=min(sizes.prompts, 200))
    lidar_seconds, _ = timed(ref_lidar, pooled_inputs(small)[3])
    pooled, view_a, view_b, _ = pooled_inputs(replace(sizes, layers=1))
    dime_seconds, _ = timed(ref_dime, view_a, view_b)
    rest_seconds, _ = timed(lambda: (ref_dataset_entropy(pooled), ref_effective_rank(pooled), ref_entropy_rank(pooled)))
    per_layer = (
        token_seconds * sizes.prompts / few.prompts
        + lidar_seconds * sizes.prompts / small.prompts  # the sample loop is linear in prompts
        + dime_seconds
        + rest_seconds
    )
    return per_layer * sizes.layers


# --------------------------------------------------------------------------------------------------
# forward time on the bundled SmolLM2


def forward_seconds_per_text(sizes: Sizes, n_texts: int) -> float | None:
    """Seconds per text of a forward pass with every hidden state, on the bundled SmolLM2 (or None)."""
    try:
        import layerscope

        loaded = layerscope.load_model("smollm2-135m")
        model = loaded.model
        vocab = int(model.config.vocab_size)
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(vocab, (n_texts, sizes.tokens), generator=generator)
        with torch.inference_mode():
            model(input_ids=input_ids[:2], output_hidden_states=True)  # warm-up
            start = time.perf_counter()
            for i in range(0, n_texts, 32):
                batch = input_ids[i : i + 32]
                model(input_ids=batch, attention_mask=torch.ones_like(batch), output_hidden_states=True)
            return (time.perf_counter() - start) / n_texts
    except Exception as error:  # the model loader is optional for this benchmark
        print(f"forward time: skipped (could not run the bundled SmolLM2: {type(error).__name__}: {error})")
        return None


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=Sizes.layers)
    parser.add_argument("--prompts", type=int, default=Sizes.prompts)
    parser.add_argument("--tokens", type=int, default=Sizes.tokens)
    parser.add_argument("--dim", type=int, default=Sizes.dim)
    parser.add_argument("--views", type=int, default=Sizes.views)
    parser.add_argument("--budget", type=float, default=300.0, help="reference seconds before layers are reduced")
    parser.add_argument("--forward-texts", type=int, default=96, help="texts timed for the SmolLM2 forward (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:  # NumPy's BLAS/LAPACK (used for large eigenvalue problems) gets the same thread count
        import threadpoolctl

        threadpoolctl.threadpool_limits(args.threads)
    except ImportError:
        print("threadpoolctl not installed: NumPy's BLAS thread count is not pinned")

    sizes = Sizes(args.layers, args.prompts, args.tokens, args.dim, args.views)
    if args.quick:
        sizes = Sizes(layers=3, prompts=60, tokens=16, dim=32, views=4, batch=20)
    print(f"requested sizes: {sizes.describe()}; threads={args.threads}; device=cpu")
    tiny = Sizes(layers=2, prompts=12, tokens=6, dim=8, views=sizes.views, batch=6)
    run_both(tiny, *pooled_inputs(tiny))  # warm-up: one-time library initialisation on both sides
    estimate = estimate_reference_seconds(sizes)
    print(f"reference estimated at {estimate:.0f} s for {sizes.layers} layers")
    if estimate > args.budget:
        layers = max(1, int(sizes.layers * args.budget / estimate))
        sizes = replace(sizes, layers=layers)
        print(f"reduced to {layers} layers for both sides to stay near the {args.budget:.0f} s budget")
    print(f"sizes used: {sizes.describe()}")

    pooled, view_a, view_b, views = pooled_inputs(sizes)
    ours, reference = run_both(sizes, pooled, view_a, view_b, views)

    print(f"{'metric':<16} {'reference s':>12} {'layerscope s':>13} {'ratio':>8} {'max abs diff':>13}")
    for name, (seconds, value) in ours.items():
        ref_seconds, ref_value = reference[name]
        difference = float((value.double() - ref_value.double()).abs().max())
        print(f"{name:<16} {ref_seconds:12.2f} {seconds:13.3f} {ref_seconds / seconds:8.1f} {difference:13.2e}")
    ours_total = sum(seconds for seconds, _ in ours.values())
    reference_total = sum(seconds for seconds, _ in reference.values())
    print(f"{'total':<16} {reference_total:12.2f} {ours_total:13.3f} {reference_total / ours_total:8.1f}")

    if args.forward_texts > 0 and not args.quick:
        per_text = forward_seconds_per_text(sizes, args.forward_texts)
        if per_text is not None:
            # Scale the metric time to all 31 layers (if reduced) to compare with a full forward pass.
            full_metric = ours_total * Sizes.layers / sizes.layers if sizes.dim == Sizes.dim else ours_total
            texts_forward = per_text * sizes.prompts
            with_views = per_text * sizes.prompts * (1 + sizes.views)  # the 16 views also serve the 2-view metrics
            print(
                f"forward on SmolLM2 ({sizes.tokens} tokens, {args.threads} thread, measured on {args.forward_texts} texts): "
                f"{per_text * 1000:.1f} ms/text -> {texts_forward:.0f} s for {sizes.prompts} texts, "
                f"{with_views:.0f} s with {sizes.views} views each"
            )
            print(
                f"layerscope metric time ({full_metric:.1f} s for {Sizes.layers} layers) = "
                f"{full_metric / texts_forward:.1%} of the forward time of the texts, "
                f"{full_metric / with_views:.1%} of the forward time of texts + views"
            )
    print(f"ratio: {reference_total / ours_total:.1f}")


if __name__ == "__main__":
    main()
