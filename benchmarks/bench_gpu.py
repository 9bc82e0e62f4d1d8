"""GPU speed of layerscope (issue 14): extraction, token metrics, dataset metrics and eigenvalues.

On a CUDA device: a random-init Pythia-410M-shape GPT-NeoX (24 layers x 1024, 16 heads, MLP 4096,
vocabulary 50,304) in bf16, and 1,024 texts of 32 to 512 random words of a word-level tokenizer over
that vocabulary (nothing is downloaded). Every input shape is warmed before it is timed (the first
pass over a new sequence length pays for kernel selection), then each time is the best of
``--repeats``:

- bare forward: the model alone on the batches ``extract`` plans (inputs copied to the device);
- ``extract``: all 25 layers pooled, from the texts (tokenizing included; its time is also shown);
- ``extract`` with the prompt entropy and curvature token hook;
- every dataset-level metric of the registry on 25 layers of N = 1,000 prompts, on the device,
  with random views of the right shapes (2 views for InfoNCE and DiME, 16 for LiDAR);
- the eigenvalues of 1,600 float64 256 x 256 Grams: the batched solver against ``torch.linalg.eigvalsh``.

The last line is ``ratio: <extract with token metrics / bare forward>`` (target: at most 2; extract
alone at most 1.10; the batched solver at least 20x faster than ``torch.linalg.eigvalsh``).
Elsewhere it prints one line saying it skips, unless ``--dry-run``, which runs the same steps on the
CPU at tiny sizes (it tests the script, it measures nothing).

    python benchmarks/bench_gpu.py [--repeats 3] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

#: Not installed on the GPU machine (../shared/RESOURCES.md): this script must not import them.
ABSENT_THERE = ("duckdb", "mteb", "nlpaug", "dcor", "platformdirs", "gguf", "ray")


@dataclass(frozen=True)
class Sizes:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocabulary: int
    texts: int
    min_words: int
    max_words: int
    prompts: int  # N of the dataset metrics
    matrices: int  # eigenvalue stack
    matrix_size: int


FULL = Sizes(1024, 24, 16, 4096, 50304, 1024, 32, 512, 1000, 1600, 256)
TINY = Sizes(64, 2, 4, 128, 512, 24, 4, 40, 20, 80, 40)


def word_tokenizer(vocabulary: int):
    """A word-level tokenizer whose words ``w2 .. w{vocabulary - 1}`` are the token ids themselves."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, vocabulary)}}
    core = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", eos_token="[PAD]")


def build_model(sizes: Sizes, device: torch.device):
    from transformers import GPTNeoXConfig, GPTNeoXModel

    from layerscope.models.loading import wrap_model

    config = GPTNeoXConfig(
        hidden_size=sizes.hidden, num_hidden_layers=sizes.layers, num_attention_heads=sizes.heads,
        intermediate_size=sizes.intermediate, vocab_size=sizes.vocabulary, max_position_embeddings=2048,
        pad_token_id=0, eos_token_id=0, bos_token_id=0,
    )
    torch.manual_seed(0)
    with device:
        model = GPTNeoXModel(config).to(torch.bfloat16)
    return wrap_model(model, word_tokenizer(sizes.vocabulary), "pythia-410m-shape", source="random init")


def random_texts(sizes: Sizes) -> list[str]:
    generator = np.random.default_rng(0)
    lengths = generator.integers(sizes.min_words, sizes.max_words + 1, sizes.texts)
    return [" ".join(f"w{i}" for i in generator.integers(2, sizes.vocabulary, length)) for length in lengths]


def timed(function: Callable[[], object], device: torch.device, repeats: int, warm: bool = True) -> float:
    """Best wall time of ``function`` over ``repeats`` runs, after a warm-up run, device work included."""

    def once() -> float:
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    if warm:
        once()
    return min(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU at tiny sizes (tests the script)")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device, skipping (use --dry-run to run it on the CPU at tiny sizes)")
        return
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = TINY if args.dry_run else FULL
    repeats = 1 if args.dry_run else args.repeats
    if args.dry_run:  # a shared CPU can make two threads ten times slower than one
        torch.set_num_threads(1)

    import layerscope as ls
    from layerscope.extract.engine import TokenizedTexts, _plan_batches
    from layerscope.metrics import eigen
    from layerscope.metrics import functional as F
    from layerscope.metrics.accumulators import CurvatureAccumulator, PromptEntropyAccumulator, TokenMetrics
    from layerscope.metrics.registry import available

    model = build_model(sizes, device)
    texts = random_texts(sizes)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run: tiny sizes)"
    tokenized = TokenizedTexts.from_texts(model, texts, 512)
    plan = _plan_batches(tokenized.lengths, np.arange(len(texts)), "auto", model)
    batches = [tokenized.batch(torch.from_numpy(rows)) for rows in plan]
    print(f"{name}, torch {torch.__version__}; GPT-NeoX {sizes.layers} layers x {sizes.hidden}, random init, bf16; "
          f"{len(texts)} texts, {int(tokenized.lengths.sum())} tokens, {len(batches)} batches; best of {repeats}")

    def bare() -> None:
        with torch.inference_mode():
            for input_ids, mask in batches:
                model.model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)

    def extract(hook=None) -> object:
        return ls.extract(model, texts, token_hook=hook, progress=False)

    def with_token_metrics() -> None:
        extract(TokenMetrics([PromptEntropyAccumulator(len(texts)), CurvatureAccumulator(len(texts))]))

    t_bare = timed(bare, device, repeats)
    t_tokenize = timed(lambda: TokenizedTexts.from_texts(model, texts, 512), device, repeats, warm=False)
    t_extract = timed(extract, device, repeats)
    t_tokens = timed(with_token_metrics, device, repeats)
    print(f"{'bare forward':<38}: {t_bare:8.3f} s")
    print(f"{f'extract (all {sizes.layers + 1} layers pooled)':<38}: {t_extract:8.3f} s  {t_extract / t_bare:6.2f}x bare "
          f"(tokenizing alone {t_tokenize:.3f} s: {(t_extract - t_tokenize) / t_bare:.2f}x without it)")
    print(f"{'extract + prompt entropy + curvature':<38}: {t_tokens:8.3f} s  {t_tokens / t_bare:6.2f}x bare")

    # Dataset-level metrics on the device: the extraction's pooled rows, random views around them.
    pooled = extract().tensor(torch.float32)[:, : sizes.prompts].to(device)  # (layers, N, d)
    generator = torch.Generator(device=device).manual_seed(0)

    def around(center: torch.Tensor) -> torch.Tensor:
        return center + 0.1 * center.std() * torch.randn(center.shape, generator=generator, device=device)

    inputs = {
        "pooled": (pooled,),
        "pair": (around(pooled), around(pooled)),
        "views": (around(pooled.unsqueeze(-2).expand(-1, -1, 16, -1)),),  # (layers, N, 16, d)
    }
    total = 0.0
    print(f"dataset metrics, {pooled.shape[0]} layers, N = {pooled.shape[1]}, on {device.type}:")
    for spec in available():
        if spec.level != "dataset":
            continue
        seconds = timed(lambda spec=spec: spec.compute(*inputs[spec.inputs]), device, repeats)
        total += seconds
        print(f"  {spec.name:<16} ({spec.n_views:>2} views) : {seconds:8.3f} s")
    print(f"  {'all':<16}            : {total:8.3f} s")

    # Eigenvalues of a stack of Grams (rank m / 2, like short prompts' token Grams).
    rows = torch.randn(sizes.matrices, sizes.matrix_size, sizes.matrix_size // 2, dtype=torch.float64,
                       generator=generator, device=device)
    grams = rows @ rows.mT
    t_lapack = timed(lambda: torch.linalg.eigvalsh(grams), device, repeats)
    t_batched = timed(lambda: eigen.eigvalsh(grams), device, repeats)
    reference = torch.linalg.eigvalsh(grams)
    error = float(((eigen.eigvalsh(grams) - reference).abs().amax(-1) / reference.abs().amax(-1)).max())
    print(f"eigvalsh, {sizes.matrices} float64 {sizes.matrix_size} x {sizes.matrix_size} Grams: "
          f"torch.linalg {t_lapack:.3f} s, batched {t_batched:.3f} s = {t_lapack / t_batched:.1f}x faster; "
          f"max error {error:.1e} of the largest eigenvalue; auto takes "
          f"{'the batched solver' if F._batched_is_faster(grams) else 'LAPACK/cuSOLVER'}")
    F.eigvalsh(grams)  # the entry point: the batched solver's first-use check against LAPACK, if it runs here
    verdict = {True: "passed", False: "FAILED (LAPACK used instead)"}.get(F._BATCHED_TRUSTED.get(str(grams.device)))
    print(f"batched solver's self-check on {grams.device}: {verdict or 'not run (auto keeps LAPACK here)'}")

    if args.dry_run:
        imported = [module for module in ABSENT_THERE if module in sys.modules]
        print(f"modules absent on the GPU machine that this run imported: {imported or 'none'}")
    print(f"ratio: {t_tokens / t_bare:.3f}")


if __name__ == "__main__":
    main()
