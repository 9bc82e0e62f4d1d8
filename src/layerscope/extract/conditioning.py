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
``Normalize`` module does; layerscope's layers are taken before it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from layerscope.config import parse_condition
from layerscope.errors import LayerscopeError
from layerscope.metrics.functional import as_tensor

__all__ = ["Conditioner", "fit_conditioner"]

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
    """

    spec: str
    weight: Tensor | None
    bias: Tensor | None
    n_fit: int
    normalize: bool = False

    @property
    def dim(self) -> int | None:
        """Output dimension ``k`` (None: unchanged)."""
        return None if self.weight is None else int(self.weight.shape[-1])

    def apply(self, embeddings: Tensor | np.ndarray) -> Tensor:
        """``(layers, ..., d)`` embeddings -> ``(layers, ..., k)`` float64 (any leading axes after layers)."""
        out = x = as_tensor(embeddings, torch.float64)
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
        return {"condition": self.spec, "n_fit": self.n_fit, "dim": self.dim, "normalize": self.normalize}


def fit_conditioner(embeddings: Tensor | np.ndarray, spec: str, normalize: bool = False) -> Conditioner | None:
    """Fit a conditioning per layer on unlabelled embeddings ``(layers, n, d)``; None when there is nothing
    to do (``"none"`` without ``normalize``).

    Parameters
    ----------
    embeddings : Tensor or ndarray, shape (layers, n, d)
        Pooled embeddings of the fitting texts (no labels involved).
    spec : str
        ``none``, ``standardize``, ``whiten[:rank]`` or ``remove-top[:k]``.
    normalize : bool
        L2-normalize each embedding last.
    """
    name, count = parse_condition(spec)
    if name == "none":
        return Conditioner(str(spec), None, None, int(np.shape(embeddings)[1]), True) if normalize else None
    x = as_tensor(embeddings, torch.float64)
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
    return Conditioner(str(spec), weight, bias, n, normalize)
