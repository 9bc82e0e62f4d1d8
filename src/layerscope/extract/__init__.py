"""The single-pass extraction engine: batching, hooks, pooling, token streaming, embedding cache.

``layerscope.extract`` is both this package and the function :func:`extract`: importing the package
binds the name on ``layerscope``, so the module itself is made callable and forwards to the function.
"""

import sys
import types

from layerscope.extract.engine import Extraction, extract, extract_token_ids, resolve_layers
from layerscope.extract.images import extract_images, prepare_images
from layerscope.extract.pooling import POOLING_MODES, pool

__all__ = ["POOLING_MODES", "Extraction", "extract", "extract_images", "extract_token_ids", "pool", "prepare_images",
           "resolve_layers"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return extract(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
