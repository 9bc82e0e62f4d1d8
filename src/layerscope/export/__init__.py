"""Take a chosen layer away: a smaller, faster embedding model that stops at that layer.

:func:`export_layer` writes a Hugging Face model keeping only the embeddings and blocks 1..L of a
model (the rest and any LM head dropped; GGUF bundles exported from their dequantized weights), its
tokenizer, and a sentence-transformers configuration (the model, its pooling, an optional L2
normalization, its maximum sequence length), so that ``SentenceTransformer(DIR).encode(texts)``
gives layerscope's layer-L embeddings and ``AutoModel.from_pretrained(DIR)`` loads it, with no
layerscope and no remote code. Layer L is the raw residual stream after block L (``final_norm="none"``,
read from ``hidden_states[L]`` with ``tie_last_hidden_states`` off) or the final norm applied to it
(``final_norm="all"``, the model's own ``last_hidden_state``, as the paper's truncated models measured).
The last layer of a model that ships L2-normalized is exported as it ships by default (a ``Normalize``
module after pooling, before any conditioning). A mean over a window of layers (a recipe's
``mean``/``zmean``) is :mod:`layerscope.export.window`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from layerscope.errors import LayerscopeError

__all__ = ["ExportResult", "SpeedComparison", "affine_module", "compare_speed", "encode_speed", "export_layer",
           "truncated_config"]

#: Texts the export is checked on (different lengths, so padding is exercised).
PROBE_TEXTS = (
    "Intermediate layers often make better embeddings than the last layer.",
    "A short one.",
    "Matrix entropy, curvature and augmentation invariance explain this without labels, layer by layer.",
)
#: Largest difference allowed between the exported model's embeddings and layerscope's.
TOLERANCE = 1e-5
_ST_POOLING = {"mean": "mean", "last": "lasttoken", "first": "cls"}
#: The export's record, written last: a folder with it holds a complete export.
MARKER = "layerscope_export.json"


@dataclass
class ExportResult:
    """What :func:`export_layer` wrote.

    Attributes
    ----------
    out : pathlib.Path
        The model folder.
    layer, num_layers : int
        The layer kept (the model's last block in the export) and the source model's depth L.
    parameters, parameters_full : int
        Parameters kept and of the source model.
    max_difference : float or None
        Largest absolute difference between ``SentenceTransformer(out).encode`` and layerscope's layer
        embeddings on a few probe texts (None when not checked).
    record : dict
        Everything above plus pooling, final norm, normalization, max length, source model.
    """

    out: Path
    layer: int
    num_layers: int
    parameters: int
    parameters_full: int
    max_difference: float | None = None
    record: dict[str, Any] = field(default_factory=dict)


def truncated_config(config: Any, layer: int) -> Any:
    """A copy of a transformers config with ``layer`` blocks (per-layer lists cut to match)."""
    truncated = copy.deepcopy(config)
    total = int(config.num_hidden_layers)
    for key, value in vars(config).items():  # e.g. Gemma 3 / Qwen 2 "layer_types": one entry per block
        if isinstance(value, (list, tuple)) and len(value) == total and key != "architectures":
            setattr(truncated, key, type(value)(value[:layer]))
    truncated.num_hidden_layers = layer
    return truncated


def _save_truncated(model: Any, layer: int, out: Path, final_norm: str, all_hidden_states: bool = False) -> int:
    """Save embeddings + blocks 1..layer of ``model`` to ``out`` (the loaded model is left as it was);
    ``all_hidden_states``: its config asks for every layer's states (a window export reads them)."""
    base = model.model
    path = model.adapter.blocks
    parent_path, _, attribute = path.rpartition(".")
    parent = base.get_submodule(parent_path) if parent_path else base
    blocks = getattr(parent, attribute)
    config = base.config
    kept = nn.ModuleList(list(blocks)[:layer])
    truncated = truncated_config(config, layer)
    if final_norm == "none":
        truncated.tie_last_hidden_states = False  # hidden_states[-1] stays the raw last block
    if all_hidden_states:
        truncated.output_hidden_states = True
    try:
        setattr(parent, attribute, kept)
        base.config = truncated
        parameters = sum(p.numel() for p in base.parameters())
        base.save_pretrained(str(out))
    finally:
        setattr(parent, attribute, blocks)
        base.config = config
    tokenizer = copy.copy(model.tokenizer)
    tokenizer.padding_side = "right"  # layerscope pads right; rotary models see the same positions
    tokenizer.save_pretrained(str(out))
    return parameters


def _hidden_state_index(out: Path, reference: np.ndarray, probe: Sequence[str], pooling: str) -> int:
    """Which entry of the exported model's ``hidden_states`` is layerscope's layer (found, not assumed:
    models differ in whether entry 0 is the embedding output)."""
    return _hidden_state_indices(out, [reference], probe, pooling)[0]


def _hidden_state_indices(out: Path, references: Sequence[np.ndarray], probe: Sequence[str], pooling: str,
                          layers: Sequence[int] | None = None) -> list[int]:
    """The entry of the exported model's ``hidden_states`` holding each layer (``layers``, for messages)
    whose pooled probe embeddings are ``references`` (each ``(probes, d)``; only the first probe text runs)."""
    from transformers import AutoModel, AutoTokenizer

    exported = AutoModel.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    encoded = tokenizer(list(probe[:1]), return_tensors="pt", truncation=True)
    with torch.inference_mode():
        states = exported(**encoded, output_hidden_states=True).hidden_states
    from layerscope.extract.pooling import pool

    mask = encoded["attention_mask"]
    pooled = [pool(state.float().unsqueeze(0), mask, pooling)[0][0].numpy() for state in states]
    indices = []
    for position, reference in enumerate(references):
        differences = [float(np.abs(candidate - reference[0]).max()) for candidate in pooled]
        index = int(np.argmin(differences))
        if differences[index] > _allowed(reference[0]):
            named = "" if layers is None else f" {layers[position]}"
            raise LayerscopeError(f"cannot find layerscope's layer{named} among the exported model's {len(states)} "
                                  f"hidden states (closest differs by {differences[index]:.2e})")
        indices.append(index)
    return indices


def _allowed(expected: np.ndarray) -> float:
    """The largest difference float32 forward passes may show: :data:`TOLERANCE` relative to the largest
    value, once it exceeds 1 (e.g. SmolLM2's massive activations make pooled values of about 1,800)."""
    return TOLERANCE * max(1.0, float(np.abs(expected).max()))


def export_layer(
    model: Any,
    layer: int,
    out: str | Path,
    *,
    pooling: str = "mean",
    final_norm: str = "none",
    normalize: bool | None = None,
    max_length: int | None = None,
    condition: str = "none",
    fit_texts: Sequence[str] | None = None,
    verify: bool = True,
    record: dict[str, Any] | None = None,
) -> ExportResult:
    """Write layer ``layer`` of ``model`` as a standalone sentence-transformers / Hugging Face model.

    Parameters
    ----------
    model : LoadedModel or str
        The source model (loaded, or a name for :func:`layerscope.load_model`).
    layer : int
        The layer to keep: 1..L (negative counts from the last); blocks after it are dropped.
    out : str or Path
        The model folder to write.
    pooling : {"mean", "last", "first"}
        Pooling of the token states, as in :func:`layerscope.extract`.
    final_norm : {"none", "all"}
        The raw residual stream after block ``layer``, or the model's final norm applied to it.
    normalize : bool or None
        ``True``: an L2 normalization last (cosine-ready vectors); ``False``: none; ``None`` (auto): the
        last layer of a model that ships normalized is exported as it ships, L2-normalized after pooling
        (before any conditioning), as :class:`~layerscope.config.ExtractConfig` scores it.
    max_length : int, optional
        Maximum sequence length in tokens (default: the model's configured one, else 512).
    condition : str
        A label-free conditioning (``standardize``, ``whiten[:rank]``, ``remove-top[:k]``; see
        :mod:`layerscope.extract.conditioning`) fitted on ``fit_texts`` at this layer and carried into
        the model as a sentence-transformers ``Dense`` module (after pooling, before ``normalize``).
    fit_texts : sequence of str, optional
        Unlabelled texts the conditioning is fitted on (required with a conditioning).
    verify : bool
        Encode a few probe texts with sentence-transformers and check they equal layerscope's
        embeddings (to :data:`TOLERANCE`).
    record : dict, optional
        Further entries of the export's record (e.g. the recipe the export computes).

    Returns
    -------
    ExportResult
    """
    from layerscope.atomic import writable_directory
    from layerscope.config import ExtractConfig
    from layerscope.extract import extract, resolve_layers

    if isinstance(model, str):
        from layerscope.models import load_model

        model = load_model(model, device="cpu")
    if model.modality != "text":
        raise LayerscopeError(f"export supports text models; {model.model_id} is a {model.modality} model")
    ExtractConfig(pooling=pooling, final_norm=final_norm, condition=condition)  # one-line errors
    (layer,) = resolve_layers([int(layer)], model.num_layers)
    if layer < 1:
        raise LayerscopeError("export needs at least one block: choose a layer >= 1 (layer 0 is the embeddings)")
    from layerscope.extract.engine import resolve_max_length

    max_length, _ = resolve_max_length(model, max_length)
    final = writable_directory(out, "export folder")
    source = model if model.final_norm == final_norm else _with_final_norm(model, final_norm)

    first = layer in ExtractConfig(normalize=normalize).normalized_layers(model)  # as the model ships it
    conditioner = None
    if condition != "none":
        if not fit_texts:
            raise LayerscopeError(f"the conditioning '{condition}' is fitted on texts: give some (--fit-dataset)")
        from layerscope.extract.conditioning import fit_conditioner

        fitted = extract(source, list(fit_texts), pooling=pooling, layers=[layer], max_length=max_length, progress=False)
        conditioner = fit_conditioner(np.asarray(fitted.pooled), condition, normalize_first=(0,) if first else ())

    with _staged(final, _weight_bytes(model, layer)) as folder:
        return _export_into(model, source, layer, folder, final, conditioner, pooling=pooling, final_norm=final_norm,
                            normalize=(first, bool(normalize)), max_length=max_length, verify=verify,
                            extra=record or {})


def _weight_bytes(model: Any, layer: int) -> int:
    """Bytes of the weights an export of ``layer`` keeps (what its ``model.safetensors`` needs)."""
    dropped = {id(p) for block in list(model.blocks)[layer:] for p in block.parameters()}
    return sum(p.numel() * p.element_size() for p in model.model.parameters() if id(p) not in dropped)


@contextlib.contextmanager
def _staged(final: Path, needs: int | None = None) -> Iterator[Path]:
    """A hidden folder inside ``final`` to write the export to; on success its files are moved into
    ``final`` (renames on one file system), ``layerscope_export.json`` last, so a full disk or a kill
    while writing leaves no complete-looking model, and files of the user's already in ``final`` stay.
    (Inside rather than beside ``final``: ``final`` was proven writable, its parent may not be.) A full
    disk raises the one-line :class:`~layerscope.errors.DiskFullError` naming ``final``."""
    from layerscope.errors import disk_full

    try:
        staging = Path(tempfile.mkdtemp(prefix=".layerscope-export-", dir=final))
    except OSError as error:
        full = disk_full(error, final, needs)
        if full is not None:
            raise full from error
        raise
    try:
        try:
            yield staging
        except Exception as error:
            full = disk_full(error, final, needs)
            if full is None or full is error:
                raise
            raise full from error
        (final / MARKER).unlink(missing_ok=True)  # no old marker beside new files if the moves stop
        for entry in sorted(staging.iterdir(), key=lambda path: path.name == MARKER):
            target = final / entry.name
            if entry.is_dir() and target.is_dir() and not target.is_symlink():  # an earlier export's module
                aside = staging / f".old-{entry.name}"
                os.replace(target, aside)
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_into(model: Any, source: Any, layer: int, folder: Path, final: Path, conditioner: Any, *, pooling: str,
                 final_norm: str, normalize: tuple[bool, bool], max_length: int, verify: bool,
                 extra: dict[str, Any]) -> ExportResult:
    """:func:`export_layer`'s writing and checking, into ``folder`` (the staging folder of ``final``);
    ``normalize``: L2 normalizations (before the conditioning, after it)."""
    from layerscope.extract import extract

    parameters = _save_truncated(model, layer, folder, final_norm)
    reference = np.asarray(extract(source, list(PROBE_TEXTS), pooling=pooling, layers=[layer], max_length=max_length,
                                   progress=False).pooled[0], dtype=np.float64)  # (probes, d)
    output: list[Any] = ["last_hidden_state"]
    index = None
    if final_norm == "none" and model.adapter.final_norm is not None:
        index = _hidden_state_index(folder, reference, PROBE_TEXTS, pooling)
        output = ["hidden_states", index]
    affine = None if conditioner is None else conditioner.layer(0)  # the export normalizes on its own
    first, last = normalize
    _write_sentence_transformer(folder, output, pooling, normalize, max_length, model.hidden_size, affine)

    difference = largest = None
    if verify:
        from sentence_transformers import SentenceTransformer

        encoded = SentenceTransformer(str(folder), device="cpu").encode(list(PROBE_TEXTS), convert_to_numpy=True)
        expected = reference / np.linalg.norm(reference, axis=1, keepdims=True) if first else reference
        expected = expected if affine is None else expected @ affine[0] + affine[1]
        expected = expected / np.linalg.norm(expected, axis=1, keepdims=True) if last else expected
        difference = float(np.abs(encoded.astype(np.float64) - expected).max())
        largest = float(np.abs(expected).max())
        if difference > _allowed(expected):
            raise LayerscopeError(f"the exported model differs from layerscope's layer {layer} by {difference:.2e}")
    full = sum(p.numel() for p in model.model.parameters())
    record = {"source": model.describe(), "layer": layer, "num_layers": model.num_layers, "pooling": pooling,
              "final_norm": final_norm, "normalize": last, "normalized_as_shipped": first, "max_length": max_length,
              "hidden_states_index": index, "parameters": parameters, "parameters_full": full,
              "max_difference": difference, "largest_value": largest,
              "conditioning": None if conditioner is None else conditioner.describe(), **extra}
    from layerscope.atomic import atomic_write_json

    atomic_write_json(folder / MARKER, record)
    return ExportResult(final, layer, model.num_layers, parameters, full, difference, record)


def _with_final_norm(model: Any, final_norm: str) -> Any:
    import dataclasses

    return dataclasses.replace(model, final_norm=final_norm)


def _write_sentence_transformer(folder: Path, output: list[Any], pooling: str, normalize: tuple[bool, bool],
                                max_length: int, dimension: int,
                                affine: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """The sentence-transformers modules of the export, saved over the model folder (``normalize``: an L2
    normalization before the conditioning's ``Dense``, one after it)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(str(folder), max_seq_length=max_length, module_output_name="token_embeddings",
                              modality_config={"text": {"method": "forward", "method_output_name": output}})
    modules: list[nn.Module] = [transformer, Pooling(dimension, pooling_mode=_ST_POOLING[pooling])]
    if normalize[0]:
        modules.append(Normalize())
    if affine is not None:
        modules.append(affine_module(affine))
    if normalize[1]:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))


def affine_module(affine: tuple[np.ndarray, np.ndarray]) -> nn.Module:
    """A fitted conditioning ``x -> x A + c`` (``A (d, k)``, ``c (k,)``) as a sentence-transformers ``Dense``
    module: a linear layer with weight ``A^T``, no activation."""
    from sentence_transformers.base.modules import Dense

    weight, bias = (torch.as_tensor(value, dtype=torch.float32) for value in affine)
    return Dense(weight.shape[0], weight.shape[1], activation_function=nn.Identity(),
                 init_weight=weight.T.contiguous(), init_bias=bias)


def encode_speed(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 32,
                 max_length: int | None = 512, repeats: int = 3) -> float:
    """Seconds (best of ``repeats``) a bare forward pass of ``model`` takes over ``texts``, in batches."""
    batches = [tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True, truncation=True,
                         max_length=max_length) for start in range(0, len(texts), batch_size)]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches:
                model(**batch)
            best = min(best, time.perf_counter() - start)
    return best


class SpeedComparison(NamedTuple):
    """Encode time of the source model and of its export (:func:`compare_speed`), best of three passes each."""

    n_texts: int  # texts encoded
    threads: int  # torch's CPU threads
    full_s: float  # seconds of the source model
    exported_s: float  # seconds of the exported model


def compare_speed(model: Any, result: ExportResult) -> SpeedComparison:
    """Time the source model against its export, loaded back with ``AutoModel`` as a user would load it.

    Both encode the :data:`PROBE_TEXTS` 32 times over (numbered, so no two texts are equal), truncated
    at the export's maximum length, in batches of 32, with the source model's tokenizer.

    Parameters
    ----------
    model : LoadedModel
        The model :func:`export_layer` exported.
    result : ExportResult
        What it wrote.
    """
    from transformers import AutoModel

    exported = AutoModel.from_pretrained(str(result.out)).eval()
    texts = [f"{text} ({index})" for index in range(32) for text in PROBE_TEXTS]
    length = result.record["max_length"]
    return SpeedComparison(n_texts=len(texts), threads=torch.get_num_threads(),
                           full_s=encode_speed(model.model, model.tokenizer, texts, max_length=length),
                           exported_s=encode_speed(exported, model.tokenizer, texts, max_length=length))
