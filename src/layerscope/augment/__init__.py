"""Augmentations: text and image views for the invariance metrics, token perturbations for section 7.4."""

from __future__ import annotations

from layerscope.augment.images import random_resized_crops
from layerscope.augment.text import paper_pipeline, text_views
from layerscope.augment.tokens import random_tokens, repeat_tokens

__all__ = ["paper_pipeline", "random_resized_crops", "random_tokens", "repeat_tokens", "text_views"]
