"""Shared fixtures. Tests run offline: no hub access, MTEB's cache in a temporary folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if "MTEB_CACHE" not in os.environ:
    os.environ["MTEB_CACHE"] = tempfile.mkdtemp(prefix="layerscope-mteb-")
    atexit.register(shutil.rmtree, os.environ["MTEB_CACHE"], ignore_errors=True)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from layerscope.models.families import families_under_test  # noqa: E402

#: Every text family with a tiny model, from the one family table (layerscope.models.families).
TEXT_FAMILIES = families_under_test("text")

SAMPLE_TEXTS = [
    "Intermediate layers often make better embeddings.",
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "short",
    "Matrix entropy of the Gram matrix measures how spread the tokens are.",
    "a b",
    "Curvature measures how straight the token trajectory is through the space of a layer.",
]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return list(SAMPLE_TEXTS)


@pytest.fixture(scope="session", params=TEXT_FAMILIES)
def family_model(request: pytest.FixtureRequest):
    """A tiny random-init model of every supported text family."""
    from layerscope.models.tiny import tiny_model

    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    from layerscope.models.tiny import tiny_model

    return tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_bert():
    from layerscope.models.tiny import tiny_model

    return tiny_model("bert")
