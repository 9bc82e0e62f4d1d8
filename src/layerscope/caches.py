"""Where layerscope keeps what it caches: one folder per kind under one root."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cached files (``embeddings``, ``models``, ``data``).

    ``$LAYERSCOPE_CACHE/<kind>`` (``~`` expanded) where the variable is set, else ``<kind>`` in the
    platform's user cache folder for layerscope (e.g. ``~/.cache/layerscope/<kind>`` on Linux). Not created.
    """
    root = os.environ.get("LAYERSCOPE_CACHE")
    if root:
        return Path(root).expanduser() / kind
    import platformdirs

    return Path(platformdirs.user_cache_dir("layerscope")) / kind
