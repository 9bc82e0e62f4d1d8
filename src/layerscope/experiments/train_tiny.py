"""Train a small GPT-NeoX (Pythia-style) model from scratch on bundled text, saving checkpoints.

No checkpoint series can be downloaded offline, so this makes one: a byte-level BPE tokenizer is
trained on the corpus with the ``tokenizers`` library, then a GPT-NeoX causal LM (Pythia's
architecture: rotary embeddings on 25 % of each head, parallel attention and MLP, untied
embeddings) is trained for a wall-clock budget on CPU. Checkpoints are saved at log-spaced steps
(0 = the random initialisation, then 1, 2, 4, 8, ..., like Pythia's early checkpoints) and at the
last step, each as a Hugging Face folder ``<out>/checkpoints/step<N>`` holding the model and the
tokenizer, so ``layerscope.load_model(folder)`` and
:func:`layerscope.experiments.checkpoints.checkpoint_progression` work on them offline.

A set of texts is held out of training (``<out>/heldout.jsonl``): the validation loss at each
checkpoint is measured on them, and the progression experiment reads them by default.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from layerscope.errors import LayerscopeError
from layerscope.experiments.base import ExperimentResult, Plot, Setup, int_list, progress_bar, texts_digest

__all__ = ["checkpoint_steps", "train_tiny", "train_tokenizer", "tiny_neox_config"]

EXPERIMENT = "train_tiny"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
CHECKPOINTS_DIRNAME = "checkpoints"
HELDOUT_FILENAME = "heldout.jsonl"


def train_tokenizer(texts: Sequence[str], vocab_size: int = 4096) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (GPT-2/Pythia style; any text is tokenizable).

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        With ``<|endoftext|>`` as BOS/EOS/UNK and ``<|padding|>`` as pad (Pythia's special tokens).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=[EOS_TOKEN, PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(list(texts), trainer=trainer)
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                   unk_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def tiny_neox_config(
    vocab_size: int,
    num_layers: int = 6,
    hidden_size: int = 128,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 256,
    eos_token_id: int = 0,
) -> Any:
    """A Pythia-style ``GPTNeoXConfig`` (parallel residual, rotary on 25 % of each head, untied embeddings)."""
    from transformers import GPTNeoXConfig

    if hidden_size % num_heads:
        raise LayerscopeError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    return GPTNeoXConfig(
        vocab_size=int(vocab_size), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_positions, rotary_pct=0.25, use_parallel_residual=True,
        tie_word_embeddings=False, hidden_act="gelu", attention_dropout=0.0, hidden_dropout=0.0,
        bos_token_id=eos_token_id, eos_token_id=eos_token_id,
    )


def checkpoint_steps(schedule: str | Sequence[int], step: int) -> bool:
    """Whether ``step`` gets a checkpoint: ``"log2"`` = 0 and the powers of two, or an explicit list."""
    if isinstance(schedule, str):
        if schedule != "log2":
            return step in set(int_list(schedule, "checkpoints"))
        return step == 0 or (step & (step - 1)) == 0
    return step in set(int(value) for value in schedule)


def _save_checkpoint(model: Any, tokenizer: Any, folder: Path, metadata: dict[str, Any]) -> None:
    """Save atomically: a killed run never leaves a half-written checkpoint folder."""
    from transformers.utils import logging as hf_logging

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one "writing shards" bar per checkpoint would drown the training bar
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / "layerscope-training.json").write_text(json.dumps(metadata, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@torch.no_grad()
def _validation_loss(model: Any, windows: torch.Tensor) -> float:
    model.eval()
    losses = [float(model(input_ids=batch, labels=batch).loss) for batch in windows.split(8)]
    model.train()
    return float(np.mean(losses)) if losses else math.nan


def train_tiny(
    out: str | Path = "runs/experiments/train_tiny",
    *,
    minutes: float = 3.0,
    texts: Sequence[str] | None = None,
    dataset: str = "bbc",
    limit: int | None = None,
    n_heldout: int = 64,
    num_layers: int = 6,
    hidden_size: int = 128,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    vocab_size: int = 4096,
    seq_len: int = 128,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    warmup_steps: int = 50,
    weight_decay: float = 0.01,
    max_steps: int | None = None,
    checkpoints: str | Sequence[int] = "log2",
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Train a small Pythia-style model from scratch for a time budget, saving log-spaced checkpoints.

    Parameters
    ----------
    out : str or Path
        Output directory: ``checkpoints/step<N>/`` (model + tokenizer), ``heldout.jsonl``,
        ``train_tiny.json``, ``train_tiny_loss.png`` and ``results.duckdb``.
    minutes : float, default 3
        Wall-clock budget of the training loop (checkpoint saves and validation included).
    texts : sequence of str, optional
        Training corpus; default the bundled ``dataset``.
    dataset : str, default "bbc"
        Bundled corpus (BBC news, about 2,200 articles, 1M tokens at the default vocabulary).
    limit : int, optional
        Use a seeded subset of this many texts.
    n_heldout : int, default 64
        Texts held out of training (validation loss, and the prompts of the progression experiment).
    num_layers, hidden_size, num_heads, intermediate_size
        Architecture (default 6 layers of width 128, MLP 4x width: about 2.3M parameters with the
        default vocabulary).
    vocab_size : int, default 4096
        Size of the trained BPE vocabulary.
    seq_len, batch_size : int
        Training windows (random contiguous windows of the token stream, documents joined by
        ``<|endoftext|>``).
    learning_rate, warmup_steps, weight_decay : float, int, float
        AdamW (betas 0.9, 0.95); linear warm-up then inverse square-root decay (independent of
        the unknown number of steps a time budget allows); gradients clipped at norm 1.
    max_steps : int, optional
        Stop after this many steps even if time remains.
    checkpoints : "log2", list of int or comma string
        Steps saved besides the last one (``"log2"``: 0, 1, 2, 4, 8, ...).
    seed : int
        Seed of the subset, the held-out split, the initialisation and the batches.
    threads : int, optional
        Torch CPU threads during training (restored afterwards); default: leave torch's setting.
        On cores shared with other processes one thread is often faster than several.
    progress : bool
        Progress bar with the running loss.

    Returns
    -------
    ExperimentResult
        Tables ``log`` (``step, elapsed_s, loss, learning_rate``) and ``checkpoints`` (``step, path,
        train_loss, val_loss, tokens_seen, elapsed_s``; ``train_loss`` is the mean loss of the last 10
        steps, at step 0 the initial model's loss on the first training windows); the summary has the
        step count, tokens, losses and the paths of the checkpoint folder and the held-out texts.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    try:
        return _train(out, minutes, texts, dataset, limit, n_heldout, num_layers, hidden_size, num_heads,
                      intermediate_size, vocab_size, seq_len, batch_size, learning_rate, warmup_steps, weight_decay,
                      max_steps, checkpoints, seed, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _prepare_data(corpus: Sequence[str], n_heldout: int, vocab_size: int, seq_len: int,
                  seed: int) -> tuple[Any, list[str], list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold texts out, train the tokenizer on the others, and cut the token streams into windows.

    Returns
    -------
    tokenizer, training texts, held-out texts
    train_ids : Tensor, shape (tokens,)
        The training stream (documents joined by ``<|endoftext|>``).
    validation : Tensor, shape (windows, seq_len)
        Held-out windows (the validation loss).
    first_windows : Tensor, shape (windows, seq_len)
        The first training windows (the initial model's training loss, before any step).
    """
    corpus = [text for text in corpus if text.strip()]
    order = np.random.default_rng(seed).permutation(len(corpus))
    n_heldout = min(int(n_heldout), max(len(corpus) // 5, 1))
    heldout = [corpus[i] for i in sorted(order[:n_heldout])]
    training = [corpus[i] for i in sorted(order[n_heldout:])]
    if not training:
        raise LayerscopeError(f"too few texts to train on: {len(corpus)}")
    tokenizer = train_tokenizer(training, vocab_size)
    eos = tokenizer.eos_token_id

    def stream(documents: Sequence[str]) -> torch.Tensor:
        encoded = tokenizer(list(documents), add_special_tokens=False)["input_ids"]
        return torch.tensor([token for ids in encoded for token in [*ids, eos]], dtype=torch.long)

    train_ids, heldout_ids = stream(training), stream(heldout)
    if len(train_ids) <= seq_len + 1:
        raise LayerscopeError(f"the training text has {len(train_ids)} tokens: fewer than seq_len={seq_len}")
    n_windows = min(32, max(1, (len(heldout_ids) - 1) // seq_len))
    validation = heldout_ids[: n_windows * seq_len].reshape(n_windows, seq_len) if len(heldout_ids) >= seq_len \
        else heldout_ids[None, :]
    n_first = min(n_windows, (len(train_ids) - 1) // seq_len)
    return tokenizer, training, heldout, train_ids, validation, train_ids[: n_first * seq_len].reshape(n_first, seq_len)


def _train(
    out: str | Path, minutes: float, texts: Sequence[str] | None, dataset: str, limit: int | None, n_heldout: int,
    num_layers: int, hidden_size: int, num_heads: int, intermediate_size: int | None, vocab_size: int, seq_len: int,
    batch_size: int, learning_rate: float, warmup_steps: int, weight_decay: float, max_steps: int | None,
    checkpoints: str | Sequence[int], seed: int, progress: bool,
) -> ExperimentResult:
    """The body of :func:`train_tiny`."""
    if minutes <= 0 and not max_steps:
        raise LayerscopeError("train_tiny needs a positive time budget (minutes) or max_steps")
    architecture = {"family": "gpt_neox", "layers": num_layers, "hidden_size": hidden_size, "heads": num_heads,
                    "seq_len": seq_len, "batch_size": batch_size}
    setup = Setup.from_options(
        EXPERIMENT, texts=texts, dataset=dataset, limit=limit, seed=seed, out=out, progress=progress, extracts=False,
        options={**architecture, "vocab_size": vocab_size, "learning_rate": learning_rate, "minutes": minutes,
                 "max_steps": max_steps, "n_heldout": n_heldout, "intermediate_size": intermediate_size,
                 "warmup_steps": warmup_steps, "weight_decay": weight_decay,
                 "checkpoints": checkpoints if isinstance(checkpoints, str) else [int(step) for step in checkpoints]})
    directory = setup.out
    assert directory is not None
    corpus, source, _ = setup.load_texts()
    started = time.perf_counter()
    tokenizer, training, heldout, train_ids, validation, first_windows = _prepare_data(
        corpus, n_heldout, vocab_size, seq_len, seed)
    eos = tokenizer.eos_token_id
    tokenizer_s = time.perf_counter() - started

    model = _new_model(tiny_neox_config(len(tokenizer), num_layers, hidden_size, num_heads, intermediate_size,
                                        max_positions=max(256, seq_len), eos_token_id=eos), seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=weight_decay)

    rate = functools.partial(_learning_rate, peak=learning_rate, warmup_steps=warmup_steps)
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.arange(seq_len)
    budget_s = max(0.0, float(minutes) * 60.0)
    checkpoint_dir = directory / CHECKPOINTS_DIRNAME
    log_rows: list[dict[str, Any]] = []
    saved: list[dict[str, Any]] = []
    n_parameters = sum(parameter.numel() for parameter in model.parameters())

    def save(step: int) -> None:
        recent = [row["loss"] for row in log_rows[-10:]]
        entry = {"step": step, "path": str(checkpoint_dir / f"step{step}"),
                 "train_loss": float(np.mean(recent)) if recent else _validation_loss(model, first_windows),
                 "val_loss": _validation_loss(model, validation), "tokens_seen": step * batch_size * seq_len,
                 "elapsed_s": round(time.perf_counter() - loop_start, 2)}
        _save_checkpoint(model, tokenizer, Path(entry["path"]),
                         {**entry, "seed": seed, "dataset": source, "parameters": n_parameters})
        saved.append(entry)

    loop_start = time.perf_counter()
    save(0)
    step = 0
    bar = progress_bar(None, progress, f"{EXPERIMENT} ({minutes:g} min)", total=max_steps)

    def keep_training() -> bool:
        if max_steps is not None and step >= max_steps:
            return False
        return budget_s == 0 or time.perf_counter() - loop_start < budget_s  # budget 0: max_steps decides

    while keep_training():
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = rate(step)
        starts = torch.randint(0, len(train_ids) - seq_len, (batch_size,), generator=generator)
        value = _train_step(model, optimizer, train_ids[starts[:, None] + offsets[None, :]], step)
        log_rows.append({"step": step, "elapsed_s": round(time.perf_counter() - loop_start, 3), "loss": value,
                         "learning_rate": rate(step)})
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        if checkpoint_steps(checkpoints, step):
            save(step)
    bar.close()
    if saved[-1]["step"] != step:
        save(step)
    elapsed = time.perf_counter() - loop_start

    from layerscope.store import atomic_write_json, atomic_write_text

    atomic_write_text(directory / HELDOUT_FILENAME,
                      "".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in heldout))
    log = pd.DataFrame(log_rows, columns=["step", "elapsed_s", "loss", "learning_rate"])
    table = pd.DataFrame(saved)
    summary = {
        "steps": step, "tokens_seen": step * batch_size * seq_len, "train_seconds": round(elapsed, 1),
        "tokenizer_seconds": round(tokenizer_s, 1), "parameters": n_parameters, "vocab_size": len(tokenizer),
        "train_tokens": len(train_ids), "heldout_texts": len(heldout), "dataset": source,
        **_losses(log, table),
        "checkpoint_dir": str(checkpoint_dir), "heldout": str(directory / HELDOUT_FILENAME),
        "architecture": architecture,
    }
    atomic_write_json(directory / f"{EXPERIMENT}.json", summary)
    setup.write(details={"steps": step}, model_id=str(checkpoint_dir), revision=f"step{step}",
                data_hash=texts_digest(training), experiment_values=_checkpoint_rows(setup, table))
    return setup.finish({"log": log, "checkpoints": table}, summary, _plots)


def _learning_rate(step: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then inverse square-root decay (``step`` counts from 1)."""
    warm = max(1, warmup_steps)
    return peak * min(step / warm, math.sqrt(warm / step))


def _new_model(config: Any, seed: int) -> Any:
    """A GPT-NeoX language model of ``config`` with weights drawn from ``seed`` (the global RNG untouched),
    in training mode."""
    from transformers import GPTNeoXForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(config)
    model.train()
    return model


def _train_step(model: Any, optimizer: torch.optim.Optimizer, batch: torch.Tensor, step: int) -> float:
    """One optimizer step on a batch of token windows (gradients clipped to norm 1); its loss.

    Raises a one-line error when the loss is not finite (training diverged)."""
    loss = model(input_ids=batch, labels=batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise LayerscopeError(f"training diverged at step {step} (loss {value}); lower the learning rate")
    return value


def _losses(log: pd.DataFrame, table: pd.DataFrame) -> dict[str, Any]:
    """The summary's losses: held-out at the first and last checkpoints, training over the first and
    last 10 steps, and the checkpoints' steps."""
    return {
        "first_val_loss": round(float(table["val_loss"].iloc[0]), 4),
        "final_val_loss": round(float(table["val_loss"].iloc[-1]), 4),
        "first_train_loss": round(float(log["loss"].iloc[:10].mean()), 4) if len(log) else None,
        "final_train_loss": round(float(log["loss"].iloc[-10:].mean()), 4) if len(log) else None,
        "checkpoints": [int(value) for value in table["step"]],
    }


def _checkpoint_rows(setup: Setup, table: pd.DataFrame) -> pd.DataFrame:
    """The experiment's values for the store: training and held-out loss and tokens seen per checkpoint."""
    return pd.concat([
        setup.rows(table.assign(condition="step" + table["step"].astype(str), key=key), "condition", "key", value=key,
                   layer=None)
        for key in ("train_loss", "val_loss", "tokens_seen")
    ], ignore_index=True)


def _plots(result: ExperimentResult) -> list[Plot]:
    log, table = result["log"], result["checkpoints"]
    data = pd.concat([log.assign(split="training (per step)")[["step", "loss", "split"]],
                      table.rename(columns={"val_loss": "loss"}).assign(split="held-out (checkpoints)")[
                          ["step", "loss", "split"]]], ignore_index=True)
    return [Plot("loss", _loss_plot, data,
                 f"Training loss, GPT-NeoX of {result.summary['parameters'] / 1e6:.2f}M parameters")]


def _loss_plot(data: pd.DataFrame, title: str, out: Path) -> Path:
    from layerscope.report import plots

    figure = plots.lines_by_condition_figure(data, "step", "loss", "split", ordered=False, xlabel="training step",
                                             ylabel="cross-entropy loss (nats)", hue_label="loss", title=title)
    figure.set_size_inches(8.0, 4.0)
    return plots.save_figure(figure, out)


def train_tiny_progression(
    out: str | Path = "runs/experiments/train_tiny",
    *,
    progression: bool = True,
    metrics: str | Sequence[str] | None = None,
    max_length: int = 128,
    eval_limit: int | None = None,
    eval_batch_size: int | str = "auto",
    progress: bool = True,
    **train_options: Any,
) -> ExperimentResult:
    """:func:`train_tiny`, then the checkpoint progression on its checkpoints and held-out texts.

    Parameters
    ----------
    out : str or Path
        One directory for both: checkpoints, ``results.duckdb`` and every PNG.
    progression : bool, default True
        Run :func:`~layerscope.experiments.checkpoints.checkpoint_progression` after training.
    metrics : str or sequence of str, optional
        Metrics of the progression (default: its defaults).
    max_length : int, default 128
        Truncation of the held-out prompts in the progression.
    eval_limit : int, optional
        Use only this many held-out texts in the progression.
    eval_batch_size : int or "auto"
        Batch size of the progression's extraction (``batch_size`` is the training batch).
    progress : bool
        Progress bars.
    **train_options
        Options of :func:`train_tiny` (``minutes``, ``num_layers``, ``hidden_size``, ``batch_size``, ...).

    Returns
    -------
    ExperimentResult
        The training tables (``log``, ``checkpoints``) and the progression's tables prefixed with
        ``progression_``; the summary holds the progression's under ``"progression"``.
    """
    from layerscope.config import ExtractConfig, TextConfig
    from layerscope.data import load_texts
    from layerscope.experiments.checkpoints import checkpoint_progression
    from layerscope.metrics.registry import resolve

    if progression:  # a bad option of the progression fails now, not after minutes of training
        ExtractConfig(max_length=max_length, batch_size=eval_batch_size)
        TextConfig(dataset=HELDOUT_FILENAME, limit=eval_limit)
        if metrics is not None:
            resolve(metrics)
    trained = train_tiny(out, progress=progress, **train_options)
    if not progression:
        return trained
    options: dict[str, Any] = {} if metrics is None else {"metrics": metrics}
    heldout = load_texts(trained.summary["heldout"], limit=eval_limit)
    followed = checkpoint_progression(trained.summary["checkpoint_dir"], texts=heldout, limit=None,
                                      max_length=max_length, batch_size=eval_batch_size, out=trained.out,
                                      progress=progress, **options)
    tables = {**trained.tables, **{f"progression_{name}": table for name, table in followed.tables.items()}}
    summary = {**trained.summary, "progression": followed.summary}
    return ExperimentResult(EXPERIMENT, tables, summary, trained.out, trained.plots + followed.plots,
                            trained.run_ids + followed.run_ids, trained.config)
