"""Label-free conditioning of pooled embeddings: affine maps fitted per layer on unlabelled texts.

Anisotropy (a few directions carrying most of the variance, e.g. after a massive-activation token)
hides structure from cosine similarity and from the entropy metrics. These transforms, fitted on the
embeddings of unlabelled texts, are known to repair it:

``standardize``
    Per-dimension z-scores: ``(x - mean) / std`` (constant dimensions only centred).
``whiten[:rank]``
    PCA whitening (BERT-whitening, Su et al. 2021): ``(x - mean) U diag(s)^(-1/2)`` on the top
    ``rank`` principal directions (default: as many as the fitting texts allow, ``min(n - 1, d)``).
``remove-top[:k]``
    All-but-the-top (Mu & Viswanath 2018): centre, then remove the projections on the top ``k``
    principal directions (default 1).

Each is an affine map ``x -> x A + c``, one per layer, computed in float64 and applied with one
batched matrix product; a sentence-transformers ``Dense`` module carries it into an exported model.
An optional L2 normalization of each embedding comes last (what a sentence-transformers model's final
``Normalize`` module does; layerscope's layers are taken before it). Some layers may be L2-normalized
*first*, before the fit and the map: the last layer of a model that ships normalized, as it ships.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from layerscope.config import parse_condition
from layerscope.errors import LayerscopeError
from layerscope.metrics.functional import as_tensor

if TYPE_CHECKING:
    from layerscope.config import ExtractConfig

__all__ = ["Conditioner", "fit_conditioner", "fit_configured", "l2_normalize_layers", "normalize_record"]

#: Principal variances below this fraction of the largest are treated as zero (no whitening blow-up).
_RELATIVE_FLOOR = 1e-10


@dataclass(frozen=True)
class Conditioner:
    """A fitted conditioning: one affine map per layer.

    Attributes
    ----------
    spec : str
        The transform (``"whiten:64"``...).
    weight : Tensor, shape (layers, d, k), float64
    bias : Tensor, shape (layers, k), float64
    n_fit : int
        Texts it was fitted on.
    normalize : bool
        L2-normalize every embedding last.
    normalize_first : tuple of int
        Positions on the layer axis L2-normalized before the map (and before the fit).
    """

    spec: str
    weight: Tensor | None
    bias: Tensor | None
    n_fit: int
    normalize: bool = False
    normalize_first: tuple[int, ...] = ()

    @property
    def dim(self) -> int | None:
        """Output dimension ``k`` (None: unchanged)."""
        return None if self.weight is None else int(self.weight.shape[-1])

    def apply(self, embeddings: Tensor | np.ndarray) -> Tensor:
        """``(layers, ..., d)`` embeddings -> ``(layers, ..., k)`` float64 (any leading axes after layers)."""
        out = x = l2_normalize_layers(as_tensor(embeddings, torch.float64), self.normalize_first)
        if self.weight is not None and self.bias is not None:
            if x.shape[0] != self.weight.shape[0] or x.shape[-1] != self.weight.shape[1]:
                raise LayerscopeError(f"conditioning fitted on {tuple(self.weight.shape[:2])} (layers, features) "
                                      f"cannot apply to embeddings of shape {tuple(x.shape)}")
            weight, bias = self.weight.to(out.device), self.bias.to(out.device)
            flat = out.reshape(out.shape[0], -1, out.shape[-1])  # (layers, m, d)
            out = torch.baddbmm(bias.unsqueeze(1), flat, weight).reshape(*x.shape[:-1], weight.shape[-1])
        if self.normalize:
            out = out / torch.linalg.vector_norm(out, dim=-1, keepdim=True).clamp_min(1e-300)
        return out

    def layer(self, position: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(A (d, k), c (k,))`` of one layer (by position in the fitted stack), e.g. for an export."""
        if self.weight is None or self.bias is None:
            return None
        return self.weight[position].numpy(), self.bias[position].numpy()

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {"condition": self.spec, "n_fit": self.n_fit, "dim": self.dim,
                                        "normalize": self.normalize}
        if self.normalize_first:
            described["normalize_first"] = list(self.normalize_first)
        return described


def l2_normalize_layers(x: Tensor, positions: tuple[int, ...]) -> Tensor:
    """``(layers, ..., d)`` ``x`` with the slices ``positions`` of its layer axis L2-normalized (a new
    tensor where any is: ``x`` may share memory with the caller's array)."""
    if not positions:
        return x
    index = torch.as_tensor(positions, device=x.device)
    chosen = x.index_select(0, index)
    return x.index_copy(0, index, chosen / torch.linalg.vector_norm(chosen, dim=-1, keepdim=True).clamp_min(1e-300))


def fit_conditioner(embeddings: Tensor | np.ndarray, spec: str, normalize: bool = False,
                    normalize_first: tuple[int, ...] = ()) -> Conditioner | None:
    """Fit a conditioning per layer on unlabelled embeddings ``(layers, n, d)``; None when there is nothing
    to do (``"none"`` without any normalization).

    Parameters
    ----------
    embeddings : Tensor or ndarray, shape (layers, n, d)
        Pooled embeddings of the fitting texts (no labels involved).
    spec : str
        ``none``, ``standardize``, ``whiten[:rank]`` or ``remove-top[:k]``.
    normalize : bool
        L2-normalize each embedding last.
    normalize_first : tuple of int
        Positions on the layer axis L2-normalized first (fitted and applied so): the last layer of a
        model that ships normalized (``ExtractConfig.normalized_layers``).
    """
    name, count = parse_condition(spec)
    normalize_first = tuple(int(position) for position in normalize_first)
    if name == "none":
        if not (normalize or normalize_first):
            return None
        return Conditioner(str(spec), None, None, int(np.shape(embeddings)[1]), normalize, normalize_first)
    x = l2_normalize_layers(as_tensor(embeddings, torch.float64), normalize_first)
    if x.ndim != 3 or x.shape[1] < 2:
        raise LayerscopeError(f"conditioning needs embeddings (layers, n >= 2, d), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise LayerscopeError("conditioning cannot be fitted on embeddings holding NaN or inf")
    layers, n, d = x.shape
    mean = x.mean(dim=1)  # (layers, d)
    centered = x - mean.unsqueeze(1)
    if name == "standardize":
        std = centered.square().mean(dim=1).sqrt()  # (layers, d)
        floor = _RELATIVE_FLOOR * std.amax(dim=-1, keepdim=True)
        scale = torch.where(std > floor, 1.0 / torch.where(std > floor, std, 1.0), 1.0)
        weight = torch.diag_embed(scale)  # (layers, d, d)
    else:
        covariance = centered.mT @ centered / n  # (layers, d, d)
        variances, vectors = torch.linalg.eigh(covariance)  # ascending
        variances, vectors = variances.flip(-1), vectors.flip(-1)  # largest first
        if name == "whiten":
            rank = min(count or d, n - 1, d)
            top = variances[:, :rank].clamp_min(_RELATIVE_FLOOR * variances[:, :1])
            weight = vectors[:, :, :rank] / top.sqrt().unsqueeze(1)  # (layers, d, rank)
        else:  # remove-top
            k = min(count or 1, d)
            top = vectors[:, :, :k]
            weight = torch.eye(d, dtype=torch.float64) - top @ top.mT  # (layers, d, d)
    bias = -(mean.unsqueeze(1) @ weight).squeeze(1)  # (layers, k): the fitted mean maps to 0
    return Conditioner(str(spec), weight, bias, n, normalize, normalize_first)


def fit_configured(pooled: Tensor | np.ndarray, layers: Sequence[int], extraction: ExtractConfig,
                   model: Any) -> Conditioner | None:
    """The conditioning an ``ExtractConfig`` asks for, fitted on ``pooled`` (one slice per canonical layer
    in ``layers``): its ``condition``, and the last layer L2-normalized first where the model ships
    normalized (``normalized_layers``) or every layer last (``normalize=True``). None: nothing to do."""
    shipped = [layer for layer in extraction.normalized_layers(model) if layer in layers]
    return fit_conditioner(pooled, extraction.condition, bool(extraction.normalize),
                           tuple(list(layers).index(layer) for layer in shipped))


def normalize_record(extraction: ExtractConfig, model: Any) -> dict[str, Any]:
    """How the layers were L2-normalized, for a run's record: the setting, the layers normalized before
    any conditioning (the last layer as a model that ships normalized ships it) and why."""
    shipped = list(extraction.normalized_layers(model))
    if extraction.normalize is not None:
        how = "every layer, after any conditioning" if extraction.normalize else "no layer (raw layers)"
    elif shipped:
        how = (f"the last layer ({shipped[0]}) before any conditioning, as the model ships it (its "
               "sentence-transformers pipeline ends in Normalize); the other layers raw")
    else:
        how = "no layer (the model does not ship normalized)"
    return {"setting": "auto" if extraction.normalize is None else bool(extraction.normalize),
            "normalized_as_shipped": shipped[0] if shipped else None, "applied": how}
