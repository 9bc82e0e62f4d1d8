"""Embeddings of one layer for new texts, written with each text's row id (``layerscope embed``).

Texts go through the model in chunks; each chunk is one extraction of the chosen layer only (the
forward pass stops after it and the cache keeps that layer alone), so a long file streams with bounded
memory and an interrupted run resumes from the cache. The output is written next to its final name
and moved into place at the end: a ``.parquet`` file (columns ``id`` and ``embedding``) or a ``.npy``
structured array (fields ``id`` and ``embedding``), one row per non-empty text, in the file's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import LayerscopeError

__all__ = ["EmbedResult", "embed_layer"]

FORMATS = (".parquet", ".npy")


@dataclass
class EmbedResult:
    """What :func:`embed_layer` wrote: ``n_written`` rows of dimension ``dim`` to ``out``."""

    out: Path
    layer: int
    n_written: int
    n_skipped: int
    dim: int
    record: dict[str, Any] = field(default_factory=dict)


def embed_layer(
    model: Any,
    rows: Any,
    layer: int,
    out: str | Path,
    *,
    extraction: Any = None,
    cache_dir: str | None = None,
    chunk_size: int = 4096,
    progress: bool = True,
) -> EmbedResult:
    """Write the layer-``layer`` embeddings of ``rows`` (texts with ids) to ``out``.

    Parameters
    ----------
    model : LoadedModel
    rows : layerscope.data.Rows
        The texts and their row ids (from :func:`layerscope.data.load_rows`).
    layer : int
        Canonical layer (negative counts from the last).
    out : str or Path
        ``.parquet`` or ``.npy`` file.
    extraction : ExtractConfig, optional
        Pooling, max length, batch size, ``normalize``; a ``condition`` is not applied here (fit it
        with ``analyze``/``export``), and outlier tokens are left out of the pooling when asked.
    cache_dir : str, optional
        Embedding cache: a rerun reads the chunks already encoded.
    chunk_size : int
        Texts per extraction.
    progress : bool
        A bar per chunk.
    """
    from layerscope.atomic import atomic_path, writable_directory
    from layerscope.config import ExtractConfig
    from layerscope.extract import extract, resolve_layers

    extraction = extraction or ExtractConfig()
    target = Path(out).expanduser()
    if target.suffix.lower() not in FORMATS:
        raise LayerscopeError(f"--out must be a .parquet or .npy file, got '{target.name}'")
    if extraction.condition != "none":
        raise LayerscopeError("embed writes the layer as it is (or L2-normalized): fit a conditioning with "
                              "`layerscope export --condition ... --fit-dataset ...` and encode with the export")
    writable_directory(target.parent, "output folder")
    (layer,) = resolve_layers([int(layer)], model.num_layers)
    ids, embeddings, skipped = [], [], 0
    for start in range(0, len(rows.texts), chunk_size):
        texts = rows.texts[start:start + chunk_size]
        if not any(isinstance(text, str) and text.strip() for text in texts):
            skipped += len(texts)
            continue
        label = f"layer {layer}, texts {start + 1}-{start + len(texts)} of {len(rows.texts)}" if progress else False
        result = extract(model, texts, layers=[layer], cache_dir=cache_dir, progress=label,
                         **extraction.extract_options())
        vectors = np.asarray(result.pooled[0], dtype=np.float32)
        if extraction.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
        ids += [rows.ids[start + int(i)] for i in result.kept]
        embeddings.append(vectors)
        skipped += len(texts) - len(result.kept)
    if not embeddings:
        raise LayerscopeError(f"all {len(rows.texts)} texts are empty: nothing to embed")
    matrix = np.concatenate(embeddings)
    with atomic_path(target, needs=matrix.nbytes) as temporary:  # a full disk: one line with the size
        _write(temporary, ids, matrix)
    record = {"model": model.describe(), "layer": layer, "n_written": len(ids), "n_skipped_empty": skipped,
              "dim": int(matrix.shape[1]), "source": rows.source, **extraction.to_dict()}
    return EmbedResult(target, layer, len(ids), skipped, int(matrix.shape[1]), record)


def _write(path: Path, ids: list[Any], matrix: np.ndarray) -> None:
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        embedding = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])
        pq.write_table(pa.table({"id": pa.array(ids), "embedding": embedding}), path)
        return
    id_values = np.asarray(ids)
    if id_values.dtype == object:  # mixed or text ids: fixed-width unicode keeps the file pickle-free
        id_values = id_values.astype(str)
    array = np.empty(len(ids), dtype=[("id", id_values.dtype), ("embedding", np.float32, (matrix.shape[1],))])
    array["id"], array["embedding"] = id_values, matrix
    np.save(path, array, allow_pickle=False)
