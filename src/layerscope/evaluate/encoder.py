"""MTEB encoders over cached embeddings: a per-layer view, a text recorder, and a direct reference.

MTEB's evaluators only ever see an object implementing its encoder protocol
(``mteb.models.models_protocols.EncoderProtocol``). :class:`LayerView` serves layer ``l`` of a
pooled-embedding array looked up by text, so MTEB's own evaluators run once per layer on one
encoding pass. :class:`TextRecorder` collects exactly the texts MTEB asks for (after MTEB's own
preprocessing: corpus titles joined, instructions added, stripping), which are then encoded once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

    from layerscope.models import LoadedModel

logger = logging.getLogger(__name__)


def model_meta(name: str, revision: str | None, dim: int | None) -> ModelMeta:
    """MTEB model metadata for a layerscope encoder (cosine similarity, text only)."""
    return ModelMeta.create_empty(
        overwrites={
            "name": name,
            "revision": revision or "unknown",
            "modalities": ["text"],
            "similarity_fn_name": ScoringFunction.COSINE,
            "embed_dim": dim,
        }
    )


def batch_texts(inputs: Iterable[dict[str, Any]]) -> list[str]:
    """All texts of an MTEB dataloader, in order."""
    texts: list[str] = []
    for batch in inputs:
        texts.extend(batch["text"])
    return texts


class TextEncoder(AbsEncoder):
    """An MTEB encoder that only needs the texts: subclasses implement :meth:`encode_texts`."""

    def encode(
        self,
        inputs: DataLoader[Any],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        return self.encode_texts(batch_texts(inputs))

    def encode_texts(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - overridden
        """Embeddings (n_texts, dim) of ``texts``, in order."""
        raise NotImplementedError


class TextRecorder(TextEncoder):
    """Records every text MTEB asks to encode and answers with seeded random vectors.

    Used for one dry run of the evaluators before extraction, so the unique texts of all tasks
    are known exactly (whatever MTEB's task type does to build them).

    Parameters
    ----------
    dim : int
        Size of the dummy vectors (small: the dry run's scores are discarded).
    seed : int
        Seed of the dummy vectors.
    """

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed
        self.texts: dict[str, None] = {}
        self.mteb_model_meta = model_meta("layerscope/text-recorder", None, dim)
        self._rng = np.random.default_rng(seed)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        for text in texts:
            self.texts.setdefault(text, None)
        return self._rng.standard_normal((len(texts), self.dim)).astype(np.float32)


class LayerView(TextEncoder):
    """Serves one layer of cached pooled embeddings to MTEB, looked up by text.

    Parameters
    ----------
    texts : list of str
        Text of each row of the embedding arrays (``Extraction.texts``).
    name : str
        Model name recorded in MTEB's results (the layer is appended).
    revision : str, optional
        Model revision.

    Notes
    -----
    Call :meth:`set_layer` before each evaluation. A text that was not extracted (an empty
    string, which extraction skips) is served as a zero vector and counted in ``n_missing``.
    """

    def __init__(self, texts: list[str], name: str, revision: str | None = None) -> None:
        self.row = {text: i for i, text in enumerate(texts)}
        self.name = name
        self.revision = revision
        self.layer: int | None = None
        self.vectors: np.ndarray | None = None  # (n_texts, dim)
        self.n_missing = 0
        self.mteb_model_meta = model_meta(name, revision, None)

    def set_layer(self, layer: int, vectors: np.ndarray) -> None:
        """Serve ``vectors`` (n_texts, dim), the pooled embeddings of canonical layer ``layer``."""
        if vectors.shape[0] != len(self.row):
            raise ValueError(f"expected {len(self.row)} rows, got {vectors.shape[0]}")
        self.layer = layer
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.mteb_model_meta = model_meta(f"{self.name}@layer{layer}", self.revision, vectors.shape[1])

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if self.vectors is None:
            raise RuntimeError("LayerView.set_layer must be called before encode")
        rows = np.array([self.row.get(text, -1) for text in texts], dtype=np.int64)
        out = self.vectors[np.maximum(rows, 0)]  # (batch, dim), a copy
        missing = rows < 0
        if missing.any():
            self.n_missing += int(missing.sum())
            out[missing] = 0.0
            logger.warning("%d text(s) had no cached embedding (empty texts); served as zero vectors", int(missing.sum()))
        return out


class DirectLayerEncoder(TextEncoder):
    """Encodes each batch MTEB gives it with the model and returns one layer: the per-layer protocol.

    This is what the paper's code did (a model truncated at layer ``l``, run per layer); layerscope
    uses it as the reference for parity tests and the benchmark.

    Parameters
    ----------
    model : LoadedModel
        The model.
    layer : int
        Canonical layer to return.
    pooling, max_length, batch_size
        As for :func:`layerscope.extract`.
    """

    def __init__(
        self,
        model: LoadedModel,
        layer: int,
        pooling: str = "mean",
        max_length: int | None = None,
        batch_size: int | str = "auto",
    ) -> None:
        self.model = model
        self.layer = layer
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.mteb_model_meta = model_meta(f"{model.model_id}@layer{layer}", model.revision, model.hidden_size)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        from layerscope.extract import extract

        # MTEB repeats texts (an STS document appears in many pairs): encode each once.
        unique = list(dict.fromkeys(texts))
        vectors = np.zeros((len(unique), self.model.hidden_size), dtype=np.float32)
        if any(t.strip() for t in unique):
            extraction = extract(
                self.model,
                unique,
                pooling=self.pooling,
                layers=[self.layer],
                batch_size=self.batch_size,
                max_length=self.max_length,
                cache_dir=None,
                progress=False,
            )
            vectors[extraction.kept] = extraction.pooled[0]
        position = {text: i for i, text in enumerate(unique)}
        return vectors[[position[text] for text in texts]]
