"""``load_model``: any Hugging Face id or local path, GGUF files, and the bundled offline aliases."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerscope.errors import LayerscopeError, suggest
from layerscope.models.adapters import Adapter, adapter_for, get_module
from layerscope.models.bundled import BUNDLED, model_cache_dir, resolve_bundled
from layerscope.models.load_bars import load_bars_shown
from layerscope.models.load_bars import show_load_bars as show_load_bars  # its former home

logger = logging.getLogger(__name__)

FINAL_NORM_OPTIONS = ("none", "all")


@dataclass
class LoadedModel:
    """A base model (no LM head) with its tokenizer and the adapter that gives canonical layers.

    Attributes
    ----------
    model : nn.Module
        The base model (``LlamaModel``, ``BertModel``, ...) in eval mode.
    tokenizer : Any
        Its tokenizer (text models) or image processor (vision models); has a pad token.
    model_id : str
        Alias, hub id or path it was loaded from: the identity recorded with every result.
    revision : str or None
        Hub revision (branch, tag, commit) or the bundled package version.
    final_norm : {"none", "all"}
        ``"all"`` applies the model's final norm to every layer's output (what the paper's
        truncated-model MTEB runs measured); ``"none"`` is the raw residual stream.
    adapter : Adapter
        Where blocks and final norm live.
    max_length : int or None
        The model's own maximum sequence length, where it configures one (a sentence-transformers
        model's ``max_seq_length``); extraction truncates there unless told otherwise.
    ships_normalized : bool
        Whether the model ships as a sentence-transformers pipeline ending in ``Normalize``: its last
        layer is then L2-normalized by default where layers are scored (``ExtractConfig.normalize``).
    kind : {"language-model", "sentence-encoder"}
        ``sentence-encoder`` where the model ships a sentence-transformers pipeline (``modules.json``
        beside its weights: it was trained to embed sentences), else ``language-model``. Known without
        labels; ``--recipes auto`` takes the recipe set chosen held out on models of the same kind.
    """

    model: nn.Module
    tokenizer: Any
    model_id: str
    revision: str | None = None
    final_norm: str = "none"
    adapter: Adapter = field(default=None)  # type: ignore[assignment]
    source: str = ""
    max_length: int | None = None
    ships_normalized: bool = False
    kind: str = "language-model"

    def __post_init__(self) -> None:
        if self.final_norm not in FINAL_NORM_OPTIONS:
            raise LayerscopeError(
                f"final_norm must be one of {', '.join(FINAL_NORM_OPTIONS)}, got '{self.final_norm}'"
            )
        if self.adapter is None:
            self.adapter = adapter_for(self.model)
        self.model.eval()
        if self.final_norm == "all" and self.adapter.final_norm is None:
            logger.warning("%s has no final norm: final_norm='all' leaves layers unchanged", self.model_id)

    @property
    def blocks(self) -> nn.ModuleList:
        return get_module(self.model, self.adapter.blocks)  # type: ignore[return-value]

    @property
    def final_norm_module(self) -> nn.Module | None:
        return None if self.adapter.final_norm is None else get_module(self.model, self.adapter.final_norm)

    @property
    def num_layers(self) -> int:
        """L, the number of blocks; there are L + 1 layers counting the embedding output (layer 0)."""
        return len(self.blocks)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def modality(self) -> str:
        return self.adapter.modality

    def depth_pct(self, layer: int) -> float:
        """Depth of ``layer`` in percent: 100 * l / L."""
        return 100.0 * layer / self.num_layers

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description recorded with results."""
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "family": self.adapter.family,
            "model_type": getattr(self.model.config, "model_type", None),
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "final_norm": self.final_norm,
            "max_length": self.max_length,
            "ships_normalized": self.ships_normalized,
            "kind": self.kind,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "source": self.source,
        }


def wrap_model(
    model: nn.Module,
    tokenizer: Any,
    model_id: str,
    revision: str | None = None,
    final_norm: str = "none",
    source: str = "in-memory",
) -> LoadedModel:
    """Wrap an already-built model (a base model or one with a head) as a :class:`LoadedModel`."""
    base = getattr(model, "base_model", model)
    if tokenizer is not None and hasattr(tokenizer, "pad_token") and tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LayerscopeError(f"tokenizer of {model_id} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(base, tokenizer, model_id, revision, final_norm, source=source)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise LayerscopeError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or map") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise LayerscopeError("this torch build has no CUDA; use --device cpu")
        raise LayerscopeError("torch sees no CUDA device (no GPU, or CUDA_VISIBLE_DEVICES hides it); use --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise LayerscopeError(f"no CUDA device {resolved.index}: torch sees {torch.cuda.device_count()} "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return resolved


def check_source(name_or_path: str, device: str | torch.device | None = None) -> None:
    """Fail in one line, before any work, on a device this torch cannot use or a local path that is no model.

    :func:`load_model` checks the same; the CLI calls this first, before it reads the texts.
    """
    if str(device) != "map":
        _resolve_device(device)
    if name_or_path not in BUNDLED:
        path = Path(name_or_path).expanduser()
        reason = _not_a_model(path) if path.exists() else None
        if reason is not None:
            raise LayerscopeError(reason)


def _not_a_model(path: Path) -> str | None:
    """Why a local path is not something :func:`load_model` can read, or None if it may be one."""
    if path.is_file():
        if path.suffix != ".gguf":
            return f"{path} is a file, not a model: give a model folder (with config.json) or a .gguf file"
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF":
                return f"{path} is not a GGUF model: it does not start with the GGUF magic bytes"
        return None
    if path.is_dir() and not (path / "config.json").is_file():
        what = "an empty folder" if not any(path.iterdir()) else "a folder without config.json"
        return f"{path} is {what}, not a model: give a Hugging Face model folder, a .gguf file or a hub id"
    return None


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[str(dtype)]
    except KeyError:
        raise LayerscopeError(f"unknown dtype '{dtype}'; use float32, bfloat16 or float16") from None


def load_model(
    name_or_path: str,
    revision: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    final_norm: str = "none",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a model for layer-wise analysis.

    Parameters
    ----------
    name_or_path : str
        A bundled alias (``smollm2-135m``, ``gemma3-270m``, ``minilm-l6``), a Hugging Face hub id, a
        local model folder, or a ``.gguf`` file.
    revision : str, optional
        Hub revision (branch, tag or commit, e.g. Pythia's ``step64000``).
    dtype : str or torch.dtype, optional
        Forward precision; default float32 on CPU, bfloat16 (or float16) on CUDA.
    device : str, optional
        ``"auto"`` (default) picks CUDA when present, else CPU; ``"map"`` spreads a model too big for
        one GPU over all GPUs (and the CPU) with ``device_map="auto"`` (needs ``accelerate``).
    final_norm : {"none", "all"}
        See :class:`LoadedModel`.
    trust_remote_code : bool
        Passed to ``from_pretrained``; off unless asked.
    """
    if final_norm not in FINAL_NORM_OPTIONS:
        raise LayerscopeError(f"final_norm must be one of {', '.join(FINAL_NORM_OPTIONS)}, got '{final_norm}'")
    if not load_bars_shown():
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    device_map = "auto" if str(device) == "map" else None
    torch_device = _resolve_device(None if device_map else device)
    torch_dtype = _resolve_dtype(dtype, torch_device)
    start = time.perf_counter()
    if name_or_path in BUNDLED:
        loaded = _load_bundled(name_or_path, torch_dtype)
    else:
        path = Path(name_or_path).expanduser()
        check_source(name_or_path)
        if path.is_file():
            try:
                model, tokenizer = _load_gguf_cached(path.parent, path.name, f"gguf-{path.stem}", torch_dtype)
            except (OSError, ValueError, KeyError) as error:
                raise LayerscopeError(f"cannot load the GGUF model {path}: {_first_line(error)}") from None
            loaded = wrap_model(model, tokenizer, str(path), revision, source=f"GGUF file {path}")
        elif path.exists():
            try:
                model, tokenizer = _from_pretrained(str(path), None, torch_dtype, trust_remote_code,
                                                    device_map=device_map)
            except (OSError, ValueError, KeyError) as error:
                raise LayerscopeError(f"cannot load the model in {path}: {_first_line(error)}") from None
            loaded = wrap_model(model, tokenizer, str(path), revision, source=f"local folder {path}")
        else:
            model, tokenizer = _from_hub(name_or_path, revision, torch_dtype, trust_remote_code, device_map)
            loaded = wrap_model(model, tokenizer, name_or_path, revision, source="huggingface hub")
    loaded.final_norm = final_norm
    loaded.max_length = configured_max_length(loaded)
    loaded.ships_normalized = configured_normalize(loaded)
    loaded.kind = configured_kind(loaded)
    loaded.__post_init__()
    if device_map is None and loaded.device != torch_device:
        loaded.model.to(torch_device)
    logger.info("loaded %s in %.1f s", name_or_path, time.perf_counter() - start)
    return loaded


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_tokenizer(source: str, **kwargs: Any) -> Any:
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, TypeError):
        # vision models have an image processor instead of a tokenizer
        return AutoImageProcessor.from_pretrained(source, **kwargs)


def _from_pretrained(
    source: str, revision: str | None, dtype: torch.dtype, trust_remote_code: bool, local_only: bool = False,
    device_map: str | None = None,
) -> tuple[nn.Module, Any]:
    from transformers import AutoModel

    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if local_only:
        kwargs["local_files_only"] = True
    placement = {"device_map": device_map} if device_map else {}
    model = AutoModel.from_pretrained(source, dtype=dtype, **kwargs, **placement)
    tokenizer = _load_tokenizer(source, **kwargs)
    return model, tokenizer


def _from_hub(
    name: str, revision: str | None, dtype: torch.dtype, trust_remote_code: bool, device_map: str | None = None
) -> tuple[nn.Module, Any]:
    from huggingface_hub import errors as hub_errors

    from layerscope.hub import offline_reason

    aliases = ", ".join(BUNDLED)
    offline = offline_reason()  # offline, only the local HF cache is tried: no minutes of retries
    try:
        return _from_pretrained(name, revision, dtype, trust_remote_code, local_only=offline is not None,
                                device_map=device_map)
    except hub_errors.RevisionNotFoundError:
        raise LayerscopeError(f"revision '{revision}' does not exist for model '{name}'") from None
    except hub_errors.RepositoryNotFoundError:
        raise LayerscopeError(
            f"unknown model '{name}'{suggest(name, BUNDLED)}: not a bundled alias ({aliases}), a local "
            "path, nor a model on the Hugging Face hub"
        ) from None
    except (OSError, ValueError) as error:
        text = str(error)
        if offline or "offline" in text.lower() or "connect" in text.lower():
            raise LayerscopeError(
                f"model '{name}' is not a bundled alias ({aliases}) nor a local path, and is not in the local "
                f"Hugging Face cache: downloading it needs the hub, which cannot be reached "
                f"({offline or 'offline'}){suggest(name, BUNDLED)}"
            ) from None
        if revision and "revision" in text.lower():
            raise LayerscopeError(f"revision '{revision}' does not exist for model '{name}'") from None
        raise LayerscopeError(f"cannot load model '{name}': {text.splitlines()[0] if text else type(error).__name__}") from None


def _load_bundled(alias: str, dtype: torch.dtype) -> LoadedModel:
    folder, gguf_file, bundled = resolve_bundled(alias)
    if gguf_file is None:
        model, tokenizer = _from_pretrained(str(folder), None, dtype, False)
    else:
        model, tokenizer = _load_gguf_cached(folder, gguf_file, alias, dtype)
    return wrap_model(model, tokenizer, alias, bundled.pip, source=bundled.description)


#: The manifest of a dequantized model in the cache (files, sizes, sha256, the GGUF it came from).
MODEL_MANIFEST = "layerscope-source.json"


def _load_gguf_cached(folder: Path, gguf_file: str, key: str, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """Dequantize a GGUF model once; later loads read the saved safetensors (seconds, not tens).

    The saved folder carries a manifest (:mod:`layerscope.integrity`) checked on every load (0.7-0.9 s
    for SmolLM2-135M's 538 MB on a shared 2-core Xeon): a damaged or stale folder is reported in one
    line, removed and rebuilt.
    """
    gguf_path = folder / gguf_file
    stat = gguf_path.stat()
    # the dtype too: weights saved in bfloat16 would come back upcast, not as a float32 dequantization
    fingerprint = {"gguf": str(gguf_path.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime),
                   "dtype": str(dtype).removeprefix("torch.")}
    target = model_cache_dir() / key
    cached = _read_model_cache(target, key, fingerprint, dtype)
    if cached is not None:
        return cached
    logger.info("dequantizing %s once into %s (later loads take seconds)", gguf_file, target)
    model, tokenizer = _dequantize(folder, gguf_file, dtype)
    _write_model_cache(target, key, model, tokenizer, fingerprint)
    return model, tokenizer


def _read_model_cache(target: Path, key: str, fingerprint: dict[str, Any],
                      dtype: torch.dtype) -> tuple[nn.Module, Any] | None:
    """The cached model of ``key`` if it is whole and made from this GGUF in this dtype, else None (a
    damaged or stale folder is reported and removed)."""
    from layerscope.integrity import DamagedEntry, report_damaged, verify_manifest

    if not target.is_dir():
        return None
    try:
        manifest = verify_manifest(target / MODEL_MANIFEST, identity=key)
    except DamagedEntry as error:
        report_damaged(logger, key, error)
        shutil.rmtree(target, ignore_errors=True)
        return None
    if manifest.get("source") != fingerprint:  # another GGUF file, or dtype: made again (not damage)
        return None
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(target), dtype=dtype), AutoTokenizer.from_pretrained(str(target))


def _dequantize(folder: Path, gguf_file: str, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """The base model and tokenizer of a GGUF file, its weights dequantized to ``dtype`` by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    causal = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    model = causal.base_model
    # the weights are plain tensors after dequantization; the quantizer would block save_pretrained
    for holder in (causal, model):
        if hasattr(holder, "hf_quantizer"):
            holder.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _write_model_cache(target: Path, key: str, model: nn.Module, tokenizer: Any, fingerprint: dict[str, Any]) -> None:
    """Save the model, its tokenizer and their manifest into a staging folder renamed into place (a
    killed or failed save never leaves a half-written cache). A cache that cannot be written (read-only,
    full disk) costs speed, not correctness: one warning line, and the run goes on."""
    from layerscope.errors import disk_full
    from layerscope.integrity import write_manifest

    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        files = {str(path.relative_to(staging)): path for path in sorted(staging.rglob("*")) if path.is_file()}
        write_manifest(staging / MODEL_MANIFEST, files, identity=key, source=fingerprint)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)  # atomic: the files and their manifest appear together
    except OSError as error:
        needs = sum(p.numel() * p.element_size() for p in model.parameters())
        full = disk_full(error, target, needs)
        reason = str(full).split(":")[0] if full is not None else str(error)
        logger.warning("could not cache the dequantized model in %s: %s (later loads dequantize again)", target,
                       reason)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _sentence_transformers_file(model: LoadedModel, name: str) -> Any:
    """A sentence-transformers configuration file saved beside the model's weights, parsed, or None."""
    from transformers.utils import cached_file

    source = getattr(model.model.config, "_name_or_path", "") or model.model_id
    try:
        path = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, local_files_only=Path(source).exists())
    except (OSError, ValueError):
        return None
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def configured_max_length(model: LoadedModel) -> int | None:
    """The model's own maximum sequence length: a sentence-transformers ``max_seq_length`` saved
    beside its weights (``sentence_bert_config.json``), or None where it configures none."""
    config = _sentence_transformers_file(model, "sentence_bert_config.json")
    value = config.get("max_seq_length") if isinstance(config, dict) else None
    return int(value) if isinstance(value, int) and value > 0 else None


#: What a model was trained for, as its files say (:attr:`LoadedModel.kind`).
MODEL_KINDS = ("language-model", "sentence-encoder")


def configured_kind(model: LoadedModel) -> str:
    """``sentence-encoder`` where a sentence-transformers pipeline (``modules.json``) ships beside the
    model's weights, else ``language-model``."""
    modules = _sentence_transformers_file(model, "modules.json")
    return MODEL_KINDS[1] if isinstance(modules, list) and modules else MODEL_KINDS[0]


def configured_normalize(model: LoadedModel) -> bool:
    """Whether the model's sentence-transformers pipeline (``modules.json`` beside its weights) ends in
    ``Normalize``: the embedding it ships is then its last layer, pooled and L2-normalized."""
    modules = _sentence_transformers_file(model, "modules.json")
    if not isinstance(modules, list) or not modules or not isinstance(modules[-1], dict):
        return False
    return str(modules[-1].get("type", "")).rsplit(".", 1)[-1] == "Normalize"
