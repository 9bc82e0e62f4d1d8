"""Images through vision transformers (SPEC section 7.8): the same single pass, pooled over patch + CLS tokens.

``extract_images`` is :func:`layerscope.extract` for ViT-family models: one forward pass per batch,
every canonical layer (0 = patch + position embeddings, l = output of block l) pooled over all
tokens (patches and CLS, the mean of the paper's vision section; ``first`` = CLS), the same token
hook (prompt entropy and curvature over a picture's patch tokens), the same disk cache keyed by the
pixels' content.

Images are prepared with torch only (no torchvision, no image-processor quirks): to float in [0, 1],
to the model's channel count, resized (bilinear, antialiased) to its ``image_size``, normalized with
the processor's mean and standard deviation when the model has one (else 0.5 / 0.5, ViT's default).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from layerscope.errors import LayerscopeError
from layerscope.extract.cache import cache_key
from layerscope.extract.engine import Extraction, cached_or_run, check_cache_dtype, resolve_layers
from layerscope.extract.pooling import check_pooling
from layerscope.models.loading import LoadedModel

__all__ = ["ImageInputs", "extract_images", "prepare_images"]


def _image_size(model: LoadedModel) -> tuple[int, int]:
    size = getattr(model.model.config, "image_size", None)
    if size is None:
        raise LayerscopeError(f"{model.model_id} has no image_size in its config: not a ViT-style vision model")
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _as_array(image: Any) -> np.ndarray:
    """One image (PIL image, path, or array) as an (H, W) or (H, W, C) array."""
    if isinstance(image, (str, Path)):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow comes with matplotlib
            raise LayerscopeError("reading image files needs pillow: pip install pillow") from None
        try:
            with Image.open(image) as opened:
                return np.asarray(opened.convert("RGB"))
        except OSError as error:
            raise LayerscopeError(f"cannot read image {image}: {str(error).splitlines()[0]}") from None
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    return np.asarray(image)


def prepare_images(model: LoadedModel, images: Any) -> torch.Tensor:
    """Pixel values for ``model``: (N, C, H, W) float32, resized and normalized.

    Parameters
    ----------
    images : array or tensor, or sequence of images
        (N, H, W) grey, (N, H, W, C) or (N, C, H, W) arrays (uint8 in [0, 255] or floats in [0, 1]),
        or a list of PIL images, image file paths or per-image arrays (each resized on its own).

    Returns
    -------
    torch.Tensor, shape (N, C, H, W)
        ``C`` = the model's ``num_channels``, ``(H, W)`` = its ``image_size``.
    """
    height, width = _image_size(model)
    channels = int(getattr(model.model.config, "num_channels", 3))
    if isinstance(images, (np.ndarray, torch.Tensor)) and getattr(images, "ndim", 0) in (3, 4):
        batch = [torch.as_tensor(np.asarray(images))]
    else:
        items = list(images)
        if not items:
            raise LayerscopeError("no images to extract: the image list is empty")
        batch = [torch.as_tensor(np.array(_as_array(item)))[None] for item in items]
    prepared = [_to_pixels(part, channels, height, width) for part in batch]
    pixels = torch.cat(prepared) if len(prepared) > 1 else prepared[0]
    mean, std = _normalization(model, channels)
    return (pixels - mean) / std


def _to_pixels(array: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """(N, H, W[, C]) or (N, C, H, W) -> float (N, channels, height, width) in [0, 1]."""
    if array.ndim == 3:
        array = array[:, None]  # grey (N, H, W)
    elif array.ndim != 4:
        raise LayerscopeError(f"images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {tuple(array.shape)}")
    elif array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4):
        array = array.permute(0, 3, 1, 2)  # channels last -> first
    if not torch.isfinite(array.float()).all():
        raise LayerscopeError("images contain NaN or inf values")
    scale = 255.0 if array.dtype == torch.uint8 or float(array.max()) > 1.0 else 1.0
    pixels = array.float() / scale
    if pixels.shape[1] == 4:
        pixels = pixels[:, :3]  # drop alpha
    if pixels.shape[1] != channels:
        pixels = pixels.mean(1, keepdim=True) if channels == 1 else pixels.mean(1, keepdim=True).expand(-1, channels, -1, -1)
    if pixels.shape[-2:] != (height, width):
        pixels = F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return pixels.contiguous()


def _normalization(model: LoadedModel, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    processor = model.tokenizer
    mean = getattr(processor, "image_mean", None) or [0.5] * channels
    std = getattr(processor, "image_std", None) or [0.5] * channels
    mean, std = list(mean)[:channels], list(std)[:channels]
    if len(mean) != channels:
        mean, std = [float(np.mean(mean))] * channels, [float(np.mean(std))] * channels
    return torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)


class ImageInputs:
    """Prepared pixel values with the interface of the text batches (``lengths``, ``batch(rows)``).

    ``lengths`` is each image's token count (patches + CLS for a ViT), which sizes the batches.
    """

    def __init__(self, pixels: torch.Tensor, tokens_per_image: int) -> None:
        self.pixels = pixels
        self.lengths = torch.full((pixels.shape[0],), int(tokens_per_image), dtype=torch.long)

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.pixels[rows], None


def _tokens_per_image(model: LoadedModel) -> int:
    config = model.model.config
    height, width = _image_size(model)
    patch = getattr(config, "patch_size", None)
    if patch is None:
        return 256
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch
    return (height // patch_h) * (width // patch_w) + 1


def pixels_hash(pixels: torch.Tensor) -> str:
    """sha256 of prepared pixel values (their shape and float32 bytes)."""
    digest = hashlib.sha256(str(tuple(pixels.shape)).encode())
    digest.update(pixels.float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def extract_images(
    model: LoadedModel,
    images: Any,
    pooling: str = "mean",
    layers: str | int | Sequence[int] = "all",
    batch_size: int | str = "auto",
    cache_dir: str | None = None,
    token_hook: Any = None,
    progress: bool | str = True,
    cache_dtype: str = "float32",
    prepared: bool = False,
    outlier_tokens: float | None = None,
) -> Extraction:
    """Pooled embeddings of every layer of a vision model, shape (L+1, N, D), one pass per batch.

    Parameters
    ----------
    model : LoadedModel
        A ViT-family model (``modality == "vision"``).
    images : see :func:`prepare_images`
        Raw images, or with ``prepared=True`` the (N, C, H, W) output of :func:`prepare_images`
        (e.g. crops of it), used as they are.
    pooling : {"mean", "first", "last"}
        ``mean`` over all tokens (patches and CLS, the default), ``first`` = the CLS token.
    layers, batch_size, cache_dir, token_hook, progress, cache_dtype, outlier_tokens
        As in :func:`layerscope.extract`; the token hook sees each image's patch tokens.

    Returns
    -------
    Extraction
        ``texts`` holds ``"image <i>"`` names.
    """
    pooling = check_pooling(pooling)
    if model.modality != "vision":
        raise LayerscopeError(f"{model.model_id} is a {model.modality} model: use layerscope.extract for texts")
    check_cache_dtype(cache_dtype)
    pixels = torch.as_tensor(images, dtype=torch.float32) if prepared else prepare_images(model, images)
    if pixels.ndim != 4 or pixels.shape[0] == 0:
        raise LayerscopeError(f"no images to extract, or prepared pixels not (N, C, H, W): shape {tuple(pixels.shape)}")
    selected = resolve_layers(layers, model.num_layers)
    n_images = pixels.shape[0]
    names = [f"image {i}" for i in range(n_images)]
    kept = np.arange(n_images)
    key_fields = {"model_id": model.model_id, "revision": model.revision, "final_norm": model.final_norm,
                  "pooling": pooling, "dtype": str(model.dtype), "images": pixels_hash(pixels),
                  "n_texts": n_images, "cache_dtype": cache_dtype}
    if outlier_tokens is not None:
        key_fields["outlier_tokens"] = float(outlier_tokens)
    key = cache_key(key_fields)
    record: dict[str, Any] = {**model.describe(), "pooling": pooling, "batch_size": batch_size, "n_texts": n_images,
                              "n_kept": n_images, "n_skipped_empty": 0, "images_sha256": key_fields["images"],
                              "image_shape": list(pixels.shape[1:]), "cache_key": key, "cache_dtype": cache_dtype,
                              "input": "images"}
    return cached_or_run(model, lambda: ImageInputs(pixels, _tokens_per_image(model)), names, kept, selected, record,
                         pooling=pooling, batch_size=batch_size, cache_dir=cache_dir, token_hook=token_hook,
                         progress=progress, cache_dtype=cache_dtype, outlier_tokens=outlier_tokens)
