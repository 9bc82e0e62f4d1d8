"""MTEB-side test helpers (import only after ``pytest.importorskip("mteb")``)."""

from __future__ import annotations

import numpy as np
from mteb.models.abs_encoder import AbsEncoder

from layerscope.evaluate.encoder import batch_texts, model_meta


class FixedEncoder(AbsEncoder):
    """MTEB's encoder protocol over one layer of fixed embeddings, looked up by text: MTEB run directly."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.row = {text: i for i, text in enumerate(texts)}
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.mteb_model_meta = model_meta("fixed-embeddings", None, self.vectors.shape[1])

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        return self.vectors[[self.row[text] for text in batch_texts(inputs)]]
