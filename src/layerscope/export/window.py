"""Export a mean over a window of layers as a sentence-transformers model (a recipe's ``mean``/``zmean``).

:func:`export_window` writes the model truncated after the window's last block, its tokenizer, and a
sentence-transformers pipeline: the ``Transformer`` module (its config asks for every layer's hidden
states), :class:`~layerscope.export.layerscope_window.LayerWindowMean` (pooling of each layer of the
window, the layers taken as the model ships them L2-normalized, each layer's affine map, the mean), an
optional ``Dense`` module carrying a fitted conditioning, and an optional ``Normalize``. No module of
sentence-transformers averages layers, so the window's module is custom code: its file
``layerscope_window.py`` is copied into the folder and listed in ``modules.json`` as a repository-local
class, which sentence-transformers imports with ``SentenceTransformer(folder, trust_remote_code=True)``
(no layerscope needed); the folder's README says so.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import LayerscopeError
from layerscope.export import (
    MARKER,
    PROBE_TEXTS,
    ExportResult,
    _allowed,
    _hidden_state_indices,
    _save_truncated,
    _staged,
    _weight_bytes,
    affine_module,
)

__all__ = ["WindowMaps", "export_window"]

#: The custom module's file and class, as ``modules.json`` names them (repository-local code).
MODULE_FILE = "layerscope_window.py"
MODULE_CLASS = "layerscope_window.LayerWindowMean"
#: How an export with the custom module loads.
LOAD_LINE = "SentenceTransformer({path!r}, trust_remote_code=True)"


@dataclass(frozen=True)
class WindowMaps:
    """What an exported window computes after pooling, fitted beforehand.

    Attributes
    ----------
    layers : list of int
        The window's canonical layers (the last one >= 1: the model keeps blocks up to it).
    normalized : tuple of int
        Positions in ``layers`` L2-normalized after pooling, before the per-layer map.
    scale, shift : ndarray, shape (w, d), optional
        Per-layer map ``x * scale + shift`` (e.g. z-scores); None: the identity.
    affine : tuple of ndarray, optional
        ``(A (d, k), c (k,))`` applied to the mean (a conditioning); None: none.
    normalize : bool
        L2-normalize the result last.
    """

    layers: list[int]
    normalized: tuple[int, ...] = ()
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    affine: tuple[np.ndarray, np.ndarray] | None = None
    normalize: bool = False

    def apply(self, pooled: np.ndarray) -> np.ndarray:
        """``(w, n, d)`` pooled embeddings of :attr:`layers` -> ``(n, k)``, in float64."""
        x = np.array(pooled, dtype=np.float64)  # (w, n, d), a copy
        for position in self.normalized:
            x[position] /= np.maximum(np.linalg.norm(x[position], axis=-1, keepdims=True), 1e-300)
        if self.scale is not None and self.shift is not None:
            x = x * self.scale[:, None, :] + self.shift[:, None, :]
        mean = x.mean(axis=0)  # (n, d)
        if self.affine is not None:
            mean = mean @ self.affine[0] + self.affine[1]
        if self.normalize:
            mean = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-300)
        return mean


def export_window(
    model: Any,
    maps: WindowMaps,
    out: str | Path,
    *,
    pooling: str = "mean",
    max_length: int | None = None,
    verify: bool = True,
    expected: Callable[[np.ndarray], np.ndarray] | None = None,
    record: dict[str, Any] | None = None,
    readme: str = "",
) -> ExportResult:
    """Write the mean over a window of layers of ``model`` as a sentence-transformers model folder.

    Parameters
    ----------
    model : LoadedModel
        The source model (raw residual stream: ``final_norm="none"``, or a model without a final norm).
    maps : WindowMaps
        The window and what is computed after pooling.
    out : str or Path
        The model folder to write.
    pooling : {"mean", "last", "first"}
    max_length : int, optional
        Maximum sequence length in tokens (default: the model's configured one, else 512).
    verify : bool
        Load the folder as a user would (``SentenceTransformer(out, trust_remote_code=True)``), encode a
        few probe texts and check they equal ``expected`` of layerscope's embeddings (to
        :data:`~layerscope.export.TOLERANCE` relative to the largest value).
    expected : callable, optional
        ``(w, n, d)`` pooled probe embeddings -> ``(n, k)`` expected output (default: ``maps.apply``).
    record : dict, optional
        Further entries of the export's record.
    readme : str
        Text put first in the folder's README (what the model computes).

    Returns
    -------
    ExportResult
    """
    from layerscope.atomic import writable_directory
    from layerscope.extract import extract, resolve_layers
    from layerscope.extract.engine import resolve_max_length

    if model.modality != "text":
        raise LayerscopeError(f"export supports text models; {model.model_id} is a {model.modality} model")
    if model.final_norm != "none" and model.adapter.final_norm is not None:
        raise LayerscopeError("a window of layers exports the raw residual stream only: export with --final-norm none")
    layers = resolve_layers(list(maps.layers), model.num_layers)
    stop = layers[-1]
    if stop < 1:
        raise LayerscopeError("export needs at least one block: a window ending at layer 0 holds the embeddings only")
    max_length, _ = resolve_max_length(model, max_length)
    final = writable_directory(out, "export folder")
    reference = np.asarray(extract(model, list(PROBE_TEXTS), pooling=pooling, layers=layers, max_length=max_length,
                                   progress=False).pooled, dtype=np.float64)  # (w, probes, d)
    want = (expected or maps.apply)(reference)  # (probes, k)
    with _staged(final, _weight_bytes(model, stop)) as folder:
        parameters = _save_truncated(model, stop, folder, "none", all_hidden_states=True)
        indices = _hidden_state_indices(folder, list(reference), PROBE_TEXTS, pooling, layers)
        _write_pipeline(folder, maps, indices, pooling, max_length, model.hidden_size)
        load = LOAD_LINE.format(path=str(final))
        _write_readme(folder, readme, load, model, layers)
        difference = largest = None
        if verify:
            difference, largest = _check(folder, want)
        full = sum(p.numel() for p in model.model.parameters())
        result = {"source": model.describe(), "layers": layers, "layer": stop, "num_layers": model.num_layers,
                  "pooling": pooling, "final_norm": "none", "max_length": max_length, "hidden_states_indices": indices,
                  "normalized_first": [layers[position] for position in maps.normalized], "normalize": maps.normalize,
                  "parameters": parameters, "parameters_full": full, "max_difference": difference,
                  "largest_value": largest, "load": load, "custom_module": MODULE_FILE, **(record or {})}
        from layerscope.atomic import atomic_write_json

        atomic_write_json(folder / MARKER, result)
    return ExportResult(final, stop, model.num_layers, parameters, full, difference, result)


def _write_pipeline(folder: Path, maps: WindowMaps, indices: Sequence[int], pooling: str, max_length: int,
                    dimension: int) -> None:
    """The sentence-transformers modules, saved over the model folder, with the window module's code
    beside them and ``modules.json`` naming it as repository-local code."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from torch import nn

    from layerscope.export.layerscope_window import LayerWindowMean

    transformer = Transformer(str(folder), max_seq_length=max_length, module_output_name="token_embeddings",
                              modality_config={"text": {"method": "forward",
                                                        "method_output_name": ["hidden_states", int(indices[-1])]}})
    window = LayerWindowMean(list(indices), pooling, list(maps.normalized), dimension, maps.scale, maps.shift)
    modules: list[nn.Module] = [transformer, window]
    if maps.affine is not None:
        modules.append(affine_module(maps.affine))
    if maps.normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    shutil.copyfile(Path(__file__).with_name(MODULE_FILE), folder / MODULE_FILE)
    listing = json.loads((folder / "modules.json").read_text())
    for entry in listing:
        if entry["type"].endswith(".LayerWindowMean"):
            entry["type"] = MODULE_CLASS  # imported from the folder, not from layerscope
    (folder / "modules.json").write_text(json.dumps(listing, indent=2))


def _write_readme(folder: Path, readme: str, load: str, model: Any, layers: Sequence[int]) -> None:
    """The folder's README: what the model computes and how it loads (replaces sentence-transformers' card)."""
    text = f"""# {model.model_id}: the mean of layers {layers[0]}-{layers[-1]}, exported by layerscope

{readme}

The model keeps the embeddings and blocks 1-{layers[-1]} of {model.model_id} (of {model.num_layers}).
The mean over layers is computed by a custom sentence-transformers module, `{MODULE_FILE}` in this folder
(torch, safetensors and sentence-transformers only; no layerscope). Load it with

```python
from sentence_transformers import SentenceTransformer

model = {load}
embeddings = model.encode(texts)
```

`trust_remote_code=True` lets sentence-transformers import `{MODULE_FILE}` from this folder (read it first:
it pools each layer, maps it and averages). `transformers.AutoModel.from_pretrained` loads the truncated
model alone (its config sets `output_hidden_states`).
"""
    (folder / "README.md").write_text(text)


def _check(folder: Path, want: np.ndarray) -> tuple[float, float]:
    """Load the folder as a user would and compare its encoding of the probe texts with ``want``."""
    from sentence_transformers import SentenceTransformer

    encoded = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True).encode(
        list(PROBE_TEXTS), convert_to_numpy=True)
    difference = float(np.abs(encoded.astype(np.float64) - want).max())
    if difference > _allowed(want):
        raise LayerscopeError(f"the exported model differs from layerscope's embeddings by {difference:.2e}")
    return difference, float(np.abs(want).max())
