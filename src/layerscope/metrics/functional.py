"""Representation-quality metrics as pure tensor functions (SPEC section 4).

Every function takes torch tensors whose last two axes are ``(n, d)`` (rows = tokens of one prompt, or
pooled prompts) with any number of leading axes, typically a stack over layers ``(layers, n, d)``,
and returns one value per leading index, ``(layers,)``. All arithmetic is float64 whatever the input
dtype; eigenvalues come from a batched values-only symmetric solver, :func:`eigvalsh` (eigenvectors
are never computed when only values are needed). There are no Python loops over samples, tokens or
layers. The only loops are over chunks of the leading axes, which bound peak memory for the two
metrics with large intermediates (LiDAR, DiME), over cache-sized blocks of prompts whose matrix
products sum to LiDAR's within-class scatter, and over the few prefix lengths of the prefix entropy.

Conventions for degenerate inputs (each pinned by a test):

- NaN or inf anywhere in an input raises :class:`~layerscope.errors.LayerscopeError` naming the
  leading indices (layers) concerned. The streaming accumulators instead skip and count such prompts.
- ``normalize`` leaves a row that equals the mean of its matrix (zero norm after centering) at zero
  instead of dividing by zero. "Zero" means a centered norm ``<= ZERO_ROW_RTOL`` times the largest
  uncentered row norm of the matrix, so rows equal to the mean up to rounding are treated alike.
- A matrix with no eigenvalue above the tolerance (all rows zero after normalization, for instance
  ``n = 1`` or identical rows) has entropy 0: the fully collapsed value, also that of rank one.
  Hence its effective rank and ``exp(S)`` are 1.
- A normalization that divides by ``log 1 = 0`` (``n = 1`` for maxEntropy/logN/logNlogD, ``d = 1``
  for maxEntropy/logD/logNlogD) raises for a whole matrix; per prompt it gives NaN and the prompt is
  counted as skipped.
- Token-level metrics skip prompts that are too short (prompt entropy: fewer than 2 tokens; curvature:
  fewer than 3 tokens, or no pair of consecutive non-zero steps) and return their number per layer;
  a skipped prompt's value is NaN and it never enters the mean.
- Metrics over pooled prompts need ``n >= 2`` rows (LiDAR also needs 2 views); otherwise they raise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from layerscope.errors import LayerscopeError, unknown
from layerscope.metrics import eigen

__all__ = [
    "DEFAULT_TOL",
    "NORMALIZATIONS",
    "ZERO_ROW_RTOL",
    "InfoNCEResult",
    "LidarResult",
    "PromptMetric",
    "as_tensor",
    "curvature",
    "curvature_values",
    "dataset_entropy",
    "dime",
    "effective_rank",
    "eigvalsh",
    "entropy_from_eigenvalues",
    "entropy_rank",
    "gram_eigenvalues",
    "infonce",
    "lidar",
    "matrix_entropy",
    "normalize",
    "normalize_entropy",
    "prefix_entropy_values",
    "prompt_entropy",
    "prompt_entropy_values",
    "summarize_prompts",
]

#: Eigenvalues ``<= DEFAULT_TOL * max`` eigenvalue are dropped before computing an entropy (float64
#: eigen-solvers return the zero eigenvalues of a rank-deficient Gram matrix as +-1e-16 * max).
DEFAULT_TOL = 1e-12
#: A centered row whose norm is ``<= ZERO_ROW_RTOL`` times the largest row norm is treated as zero.
ZERO_ROW_RTOL = 1e-10
#: Normalizations of an entropy S of an ``n x d`` matrix: ``raw`` = S; ``maxEntropy`` = S / log(min(n, d))
#: (the largest possible value, so the result lies in [0, 1]); ``logN`` = S / log n; ``logD`` = S / log d;
#: ``logNlogD`` = S / (log n * log d) (the authors' definition: a product, not a sum).
NORMALIZATIONS: tuple[str, ...] = ("raw", "maxEntropy", "logN", "logD", "logNlogD")
#: Upper bound (bytes) on the float64 intermediates of one chunk of the leading axes in lidar/dime.
MAX_CHUNK_BYTES = 512 * 2**20
#: CPU matrices at least this large go to NumPy's LAPACK (``numpy.linalg.eigvalsh``) instead of
#: ``torch.linalg.eigvalsh``: both are values-only ``syevd`` solvers, but on the CPUs we measured,
#: the MKL build inside torch was about 2x slower from n = 576 up (1000 x 1000: 0.24 s vs 0.12 s on
#: one thread). ``None`` always uses torch.
NUMPY_EIGVALSH_MIN_SIZE: int | None = 512
#: Solver behind :func:`eigvalsh`: ``"auto"`` (the rule of :func:`_batched_is_faster`), ``"lapack"``
#: (``torch.linalg.eigvalsh``, i.e. LAPACK on the CPU and cuSOLVER on a GPU, or NumPy as above) or
#: ``"batched"`` (:func:`layerscope.metrics.eigen.eigvalsh`, on every device). Set it to compare them.
EIGVALSH_BACKEND: Literal["auto", "lapack", "batched"] = "auto"
#: ``"auto"`` takes the batched solver for stacks of at least this many matrices on a CUDA device...
BATCHED_MIN_MATRICES = 64
#: ... whose size m lies in this range (inclusive).
BATCHED_SIZES = (33, 1024)
#: The batched solver checks itself on its first use in a process on each device: up to
#: :data:`SELF_CHECK_MATRICES` matrices of the stack (first, middle, last) are also solved by LAPACK
#: (NumPy, float64, on the CPU). Both are backward stable, so a correct solver agrees to about
#: ``m * eps`` (2e-13 at m = 1,024) of the matrix's largest eigenvalue; a disagreement beyond this
#: relative tolerance, 1e5 times that, can only be a fault of the solver (a kernel miscompiled or
#: mis-dispatched on that device): it warns once and the process uses LAPACK/cuSOLVER on that device.
SELF_CHECK_RTOL = 1e-8
SELF_CHECK_MATRICES = 3
#: Per device (``str(tensor.device)``): True once the batched solver passed its check there, False once
#: it failed (LAPACK from then on); absent until its first use.
_BATCHED_TRUSTED: dict[str, bool] = {}
#: Size (bytes) of the float64 blocks of centered views whose products build LiDAR's S_w.
_SCATTER_BLOCK_BYTES = 8 * 2**20

Side = Literal["auto", "gram", "covariance"]


class PromptMetric(NamedTuple):
    """A token-level metric over a batch of prompts.

    Attributes
    ----------
    mean : Tensor, shape (...,)
        Mean over the used prompts; NaN only where ``n_used == 0``.
    per_prompt : Tensor, shape (..., prompts)
        One value per prompt; NaN for a skipped prompt.
    n_used, n_skipped : Tensor of int64, shape (...,)
        Number of prompts that entered the mean, and number skipped (too short / degenerate).
    """

    mean: Tensor
    per_prompt: Tensor
    n_used: Tensor
    n_skipped: Tensor


class InfoNCEResult(NamedTuple):
    """InfoNCE loss and the mutual-information lower bound it gives.

    Attributes
    ----------
    loss : Tensor, shape (...,)
        The loss L (natural log). Lower = views more alike relative to other prompts.
    bound : Tensor, shape (...,)
        ``log K - L`` with K candidates per anchor (K = n for ``infonce``, 2n - 1 for ``ntxent``):
        a lower bound on the mutual information between the views.
    normalized : Tensor, shape (...,)
        ``1 - L / log K`` (the authors' "mi-lower-bound" column).
    """

    loss: Tensor
    bound: Tensor
    normalized: Tensor


class LidarResult(NamedTuple):
    """LiDAR of Thilak et al.

    Attributes
    ----------
    entropy : Tensor, shape (...,)
        Entropy of the eigenvalue distribution of the LDA matrix, normalized as requested
        (``n`` = number of prompts, ``d`` = feature dimension).
    lidar : Tensor, shape (...,)
        ``exp(S)`` of the raw entropy (for alpha = 1 this is LiDAR proper, a soft rank).
    """

    entropy: Tensor
    lidar: Tensor


# --------------------------------------------------------------------------------------------------
# validation helpers


def as_tensor(x: Tensor | np.ndarray, dtype: torch.dtype | None = None) -> Tensor:
    """``x`` as a tensor (cast to ``dtype`` if given); a tensor keeps its device.

    An array shares its memory unless it is read-only (a memory-mapped embedding cache): torch cannot
    share a read-only buffer safely and warns, so that one is copied.
    """
    if not isinstance(x, Tensor):
        array = np.asarray(x)
        x = torch.from_numpy(np.ascontiguousarray(array if array.flags.writeable else np.array(array)))
    return x if dtype is None else x.to(dtype)


def _as_float64(x: Tensor, name: str, min_ndim: int = 2) -> Tensor:
    """Return ``x`` as a float64 tensor, checking its rank and that every value is finite."""
    return _checked(x, name, min_ndim).to(torch.float64)


def _checked(x: Tensor, name: str, min_ndim: int = 2) -> Tensor:
    """Like :func:`_as_float64` without the cast: rank, real dtype and finiteness checked."""
    x = as_tensor(x)
    if x.ndim < min_ndim:
        raise LayerscopeError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise LayerscopeError(f"{name} must be a real tensor, got {x.dtype}")
    _check_finite(x, name, min_ndim)
    return x


def _check_finite(x: Tensor, name: str, trailing: int) -> None:
    """Raise naming the leading indices that hold NaN/inf; fast path: one float64 sum, no bool copy."""
    if not x.is_floating_point() or bool(torch.isfinite(x.sum(dtype=torch.float64))):
        return
    finite = torch.isfinite(x)
    if bool(finite.all()):  # the sum overflowed on huge finite float64 values
        return
    leading = finite.flatten(-trailing).all(-1) if x.ndim > trailing else finite.all().reshape(())
    where = [tuple(int(i) for i in idx) for idx in torch.nonzero(~leading)][:5] if leading.ndim else []
    at = f" at leading index {', '.join(str(w[0] if len(w) == 1 else w) for w in where)}" if where else ""
    raise LayerscopeError(f"{name} contains NaN or inf values{at}")


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not alpha > 0 or math.isinf(alpha):
        raise LayerscopeError(f"entropy order alpha must be a finite number > 0, got {alpha}")
    return alpha


def _check_normalization(normalization: str) -> str:
    if normalization not in NORMALIZATIONS:
        raise unknown("normalization", normalization, NORMALIZATIONS)
    return normalization


def _lengths_mask(lengths: Tensor | None, n_prompts: int, n_tokens: int, device: torch.device) -> Tensor:
    """(..., prompts) lengths -> (..., prompts, tokens) bool mask of real tokens; None = all tokens real.

    Lengths may differ per leading index (e.g. per layer, when outlier tokens were left out)."""
    if lengths is None:
        return torch.ones(n_prompts, n_tokens, dtype=torch.bool, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.ndim < 1 or lengths.shape[-1] != n_prompts:
        raise LayerscopeError(f"lengths must have shape ({n_prompts},), got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or bool(((lengths < 0) | (lengths > n_tokens)).any()):
        raise LayerscopeError(f"lengths must be integers in [0, {n_tokens}]")
    return torch.arange(n_tokens, device=device) < lengths.unsqueeze(-1)


def _chunked(
    function: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    trailing: int,
    item_bytes: int,
    max_bytes: int | None = None,
) -> Tensor:
    """Apply ``function`` to slices of the flattened leading axes, bounding peak memory.

    Every input has the same leading axes followed by ``trailing`` axes; ``function`` maps a batch
    ``(b, *trailing)`` of each input to a result of shape ``(b, *rest)``. A slice holds as many
    leading indices as fit in ``max_bytes`` (default :data:`MAX_CHUNK_BYTES`) at ``item_bytes`` each.
    """
    leading = inputs[0].shape[: inputs[0].ndim - trailing]
    flat = [x.reshape(-1, *x.shape[x.ndim - trailing :]) for x in inputs]
    batch = flat[0].shape[0]
    step = max(1, (MAX_CHUNK_BYTES if max_bytes is None else max_bytes) // max(1, item_bytes))
    if step >= batch:
        out = function(*flat)
    else:
        out = torch.cat([function(*(x[start : start + step] for x in flat)) for start in range(0, batch, step)])
    return out.reshape((*leading, *out.shape[1:]))


# --------------------------------------------------------------------------------------------------
# building blocks


def normalize(Z: Tensor, mask: Tensor | None = None) -> Tensor:
    """Center the rows of ``Z`` and scale each row to unit L2 norm (SPEC section 4).

    Parameters
    ----------
    Z : Tensor, shape (..., n, d)
        Rows to normalize (cast to float64).
    mask : Tensor of bool, shape (..., n), optional
        Real rows. The mean is taken over real rows only and padded rows come back as zero.

    Returns
    -------
    Tensor, float64, shape (..., n, d)
        ``(z_i - mean) / ||z_i - mean||``. A row at the mean (centered norm
        ``<= ZERO_ROW_RTOL * max_i ||z_i||``, e.g. the single row when ``n = 1``) stays zero.
    """
    centered, weights, scale = _center(Z, mask)
    norms = torch.linalg.vector_norm(centered, dim=-1, keepdim=True)  # (..., n, 1)
    return centered.mul_(_inverse_norms(norms.square_(), scale.unsqueeze(-1)))


def _center(Z: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """Float64 rows minus their (masked) mean, pads zeroed; the mask as float64 (..., n, 1) or None;
    and the largest (real) uncentered row norm (..., 1), the scale of the zero-row test."""
    Z = Z.to(torch.float64)
    row_norms = torch.linalg.vector_norm(Z, dim=-1)  # (..., n)
    if mask is None:
        return Z - Z.mean(dim=-2, keepdim=True), None, row_norms.amax(dim=-1, keepdim=True)
    weights = mask.to(torch.float64).expand(Z.shape[:-1]).unsqueeze(-1)  # (..., n, 1)
    count = weights.sum(dim=-2, keepdim=True).clamp_min(1.0)  # (..., 1, 1)
    mean = (weights.mT @ Z) / count  # (..., 1, d): a matrix product reads Z once
    centered = (Z - mean).mul_(weights)
    return centered, weights, (row_norms * weights.squeeze(-1)).amax(dim=-1, keepdim=True)


def _inverse_norms(squared_norms: Tensor, scale: Tensor) -> Tensor:
    """1 / norm, or 0 for a row at the mean (norm <= ZERO_ROW_RTOL * scale); shapes broadcast."""
    zero = squared_norms <= (ZERO_ROW_RTOL * scale).square()
    return torch.where(zero, 0.0, squared_norms.clamp_min(1e-300).rsqrt())


def eigvalsh(matrix: Tensor) -> Tensor:
    """Ascending eigenvalues of a stack of symmetric matrices (..., m, m), without eigenvectors.

    Every metric gets its eigenvalues here. :data:`EIGVALSH_BACKEND` chooses the solver; ``"auto"``
    takes the exact batched solver of :mod:`layerscope.metrics.eigen` where :func:`_batched_is_faster`
    says so, else ``torch.linalg.eigvalsh`` (NumPy's LAPACK for large CPU float64 matrices, see
    :data:`NUMPY_EIGVALSH_MIN_SIZE`). Only the lower triangle is read. The batched solver checks itself
    against LAPACK on its first use in the process on each device and, should it disagree, gives way to
    LAPACK there with one warning (:data:`SELF_CHECK_RTOL`).

    Parameters
    ----------
    matrix : Tensor, shape (..., m, m)

    Returns
    -------
    Tensor, shape (..., m)
        In the input's dtype and on its device (the batched solver computes in float64 whatever
        the input; it has no gradient).
    """
    if EIGVALSH_BACKEND not in ("auto", "lapack", "batched"):
        raise unknown("eigenvalue backend", EIGVALSH_BACKEND, ("auto", "lapack", "batched"))
    if EIGVALSH_BACKEND == "batched" or (EIGVALSH_BACKEND == "auto" and _batched_is_faster(matrix)):
        trusted = _BATCHED_TRUSTED.get(str(matrix.device))
        if trusted is not False:
            values = eigen.eigvalsh(matrix)
            if trusted or _batched_passes_check(matrix, values):
                return values.to(matrix.dtype)
    size = matrix.shape[-1]
    threshold = NUMPY_EIGVALSH_MIN_SIZE
    if threshold is not None and size >= threshold and matrix.device.type == "cpu" and matrix.dtype == torch.float64:
        return torch.from_numpy(np.linalg.eigvalsh(matrix.detach().numpy()))
    return torch.linalg.eigvalsh(matrix)


def _batched_passes_check(matrix: Tensor, values: Tensor) -> bool:
    """The batched solver's first-use check on ``matrix``'s device (see :data:`SELF_CHECK_RTOL`).

    Compares ``values`` (the batched solver's, float64) on a few finite matrices of the stack with
    NumPy's LAPACK in float64 on the CPU, records the verdict for the device in
    :data:`_BATCHED_TRUSTED` and warns once when it fails. A stack with no finite matrix decides
    nothing (checked again at the next call).
    """
    device = str(matrix.device)
    m = matrix.shape[-1]
    flat = matrix.reshape(-1, m, m)
    finite = torch.isfinite(flat).flatten(1).all(dim=1).nonzero().flatten().cpu()  # (k,) candidates
    if len(finite) == 0:
        return True  # the batched solver's NaN for a non-finite matrix is the documented answer
    picks = finite[torch.linspace(0, len(finite) - 1, min(SELF_CHECK_MATRICES, len(finite))).round().long()].unique()
    sample = flat[picks.to(flat.device)].detach().to(torch.float64).cpu().numpy()  # (s, m, m)
    reference = np.linalg.eigvalsh(sample)  # (s, m), lower triangle as the batched solver reads it
    checked = values.reshape(-1, m)[picks.to(values.device)].detach().to(torch.float64).cpu().numpy()
    scale = np.maximum(np.abs(reference).max(axis=-1), np.finfo(np.float64).tiny)  # (s,)
    error = float(np.max(np.abs(checked - reference).max(axis=-1) / scale))
    passed = bool(error <= SELF_CHECK_RTOL)  # a NaN error (NaN values for a finite matrix) fails
    _BATCHED_TRUSTED[device] = passed
    if not passed:
        warnings.warn(
            f"the batched eigenvalue solver disagreed with LAPACK on {device} (relative error {error:.1e} > "
            f"{SELF_CHECK_RTOL:.0e} on {len(picks)} of the {m} x {m} matrices): using LAPACK "
            "(torch.linalg.eigvalsh) on this device for the rest of the process",
            RuntimeWarning, stacklevel=3,
        )
    return passed


def _batched_is_faster(matrix: Tensor) -> bool:
    """The automatic choice of the batched solver: on CUDA, real float32/float64 stacks of at least
    :data:`BATCHED_MIN_MATRICES` matrices with ``m`` in :data:`BATCHED_SIZES`, not requiring grad.

    Provisional, reasoned from the first GPU measurements (issue 14), not yet measured on the GPU:
    cuSOLVER solves a stack of matrices larger than 32 one by one, each a chain of small kernels
    (1,600 float64 256 x 256 matrices: 3.0 s, 1.9 ms or about 7 us per row each; float32 is slower,
    7.5 s). The batched solver costs a few dozen kernel launches per row whatever the number of
    matrices until the device is saturated, so it wins from a few dozen matrices up, whatever m.
    Kept on cuSOLVER: m <= 32, which it already solves as one batched Jacobi call; m > 1024, where
    its per-matrix solver is efficient while the bisection's work grows as m^2 per matrix; and the
    CPU, where LAPACK was 10x to 25x faster than the batched solver at every shape of
    ``benchmarks/bench_eigvalsh.py`` (8 to 512 rows, one thread): there the bisection's ~50 m^2
    divisions per matrix cost more than LAPACK's whole solve.
    """
    size = matrix.shape[-1]
    return (
        matrix.device.type == "cuda"
        and matrix.dtype in (torch.float32, torch.float64)
        and not matrix.requires_grad
        and BATCHED_SIZES[0] <= size <= BATCHED_SIZES[1]
        and matrix.numel() >= BATCHED_MIN_MATRICES * size * size
    )


def _smaller_gram(Z: Tensor, side: Side = "auto", clamp_gram: bool = False) -> Tensor:
    """``Z Z^T`` (n x n) or ``Z^T Z`` (d x d), whichever is smaller unless ``side`` says otherwise."""
    n, d = Z.shape[-2:]
    use_gram = side == "gram" or (side == "auto" and n <= d)
    if side not in ("auto", "gram", "covariance"):
        raise unknown("side", side, ("auto", "gram", "covariance"))
    matrix = Z @ Z.mT if use_gram else Z.mT @ Z
    # The authors clamped negative entries of whichever matrix they decomposed (an approximation that
    # breaks the equality of the two sides); reproduced only on request.
    return matrix.clamp_min(0.0) if clamp_gram else matrix


#: Spectra already computed, per input tensor (held weakly: an entry goes with its tensor) and per
#: (version, normalize_rows, side, clamp_gram): the dataset entropy, the entropy rank and the effective
#: rank of one stack of pooled embeddings share one eigendecomposition instead of three.
_SPECTRA: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _spectrum(Z: Tensor, normalize_rows: bool, side: Side = "auto", clamp_gram: bool = False) -> Tensor:
    """Eigenvalues of the smaller Gram of ``Z`` (of :func:`normalize` (Z) with ``normalize_rows``), ascending.

    Computed once per tensor object and version: the metrics of one set of embeddings are called
    with the same tensor, and the values are those of a fresh computation (the same operations).
    """
    key = (Z._version, normalize_rows, side, clamp_gram, EIGVALSH_BACKEND)  # a solver switch recomputes
    memo = _SPECTRA.get(Z)
    if memo is not None and key in memo:
        return memo[key]
    X = _as_float64(Z, "Z")
    values = eigvalsh(_smaller_gram(normalize(X) if normalize_rows else X, side, clamp_gram))
    if memo is None or memo.get("version") != Z._version:  # an in-place change makes the old spectra stale
        memo = {"version": Z._version}
        _SPECTRA[Z] = memo
    memo[key] = values
    return values


def gram_eigenvalues(Z: Tensor, *, side: Side = "auto", clamp_gram: bool = False) -> Tensor:
    """Eigenvalues of the Gram matrix ``Z Z^T``, via the smaller of ``Z Z^T`` and ``Z^T Z``.

    Parameters
    ----------
    Z : Tensor, shape (..., n, d)
    side : {"auto", "gram", "covariance"}
        ``auto`` decomposes the smaller matrix; the nonzero eigenvalues of both sides are equal.
    clamp_gram : bool
        Clamp negative matrix entries to 0 before decomposing (the authors' code; off by default).

    Returns
    -------
    Tensor, float64, shape (..., k)
        Ascending eigenvalues, ``k = min(n, d)`` for ``auto``.
    """
    Z = _as_float64(Z, "Z")
    return eigvalsh(_smaller_gram(Z, side, clamp_gram))


def entropy_from_eigenvalues(eigenvalues: Tensor, alpha: float = 1.0, tol: float = DEFAULT_TOL) -> Tensor:
    """Matrix-based Renyi entropy of order ``alpha`` from the eigenvalues of a PSD matrix.

    ``S_a = log(sum_i p_i^a) / (1 - a)`` with ``p_i = lam_i / sum_j lam_j`` over the kept eigenvalues;
    ``a = 1`` gives the Shannon limit ``-sum_i p_i log p_i``. Eigenvalues ``<= tol * max`` (and
    non-positive ones) are dropped, so the distribution is normalized by the sum of the kept ones,
    which equals ``tr K`` up to the dropped round-off.

    Parameters
    ----------
    eigenvalues : Tensor, shape (..., k)
    alpha : float, > 0
    tol : float
        Relative threshold below which an eigenvalue counts as zero.

    Returns
    -------
    Tensor, float64, shape (...,)
        Entropy in nats; 0 where no eigenvalue is kept (zero matrix).
    """
    alpha = _check_alpha(alpha)
    lam = eigenvalues.to(torch.float64)
    lam_max = lam.amax(dim=-1, keepdim=True)
    keep = (lam > tol * lam_max) & (lam > 0)
    lam = torch.where(keep, lam, 0.0)
    total = lam.sum(dim=-1, keepdim=True)
    nonzero = total.squeeze(-1) > 0
    p = lam / torch.where(total > 0, total, 1.0)  # (..., k)
    if alpha == 1.0:
        entropy = -torch.special.xlogy(p, p).sum(dim=-1)
    else:
        power = torch.where(keep, p, 1.0).pow(alpha)
        entropy = torch.log(torch.where(keep, power, 0.0).sum(dim=-1).clamp_min(1e-300)) / (1.0 - alpha)
    return torch.where(nonzero, entropy, 0.0) + 0.0  # + 0.0 turns the -0.0 of rank one into 0.0


def normalize_entropy(entropy: Tensor, normalization: str, n: int | Tensor, d: int | Tensor) -> Tensor:
    """Divide an entropy by the normalizer named ``normalization`` (see :data:`NORMALIZATIONS`).

    Parameters
    ----------
    entropy : Tensor, shape (...,)
    normalization : {"raw", "maxEntropy", "logN", "logD", "logNlogD"}
    n, d : int or Tensor broadcastable to ``entropy``
        Number of rows and of columns of the matrix the entropy came from.

    Returns
    -------
    Tensor, float64, shape (...,)
        Integer ``n``/``d`` making the normalizer ``log 1 = 0`` raise; tensor ``n``/``d`` give NaN
        at those entries (per-prompt use: such prompts are skipped and counted).
    """
    _check_normalization(normalization)
    entropy = entropy.to(torch.float64)
    if normalization == "raw":
        return entropy
    n_t = torch.as_tensor(n, dtype=torch.float64, device=entropy.device)
    d_t = torch.as_tensor(d, dtype=torch.float64, device=entropy.device)
    if normalization == "maxEntropy":
        denominator = torch.log(torch.minimum(n_t, d_t))
    elif normalization == "logN":
        denominator = torch.log(n_t)
    elif normalization == "logD":
        denominator = torch.log(d_t)
    else:
        denominator = torch.log(n_t) * torch.log(d_t)
    if isinstance(n, int) and isinstance(d, int):
        if float(denominator) <= 0:
            raise LayerscopeError(
                f"normalization '{normalization}' divides by log 1 = 0 for a {n} x {d} matrix; use 'raw'"
            )
        return entropy / denominator
    return torch.where(denominator > 0, entropy / torch.where(denominator > 0, denominator, 1.0), math.nan)


def _entropy_of_matrix(matrix: Tensor, alpha: float, tol: float) -> Tensor:
    """Entropy of symmetric PSD matrices (..., m, m): Frobenius shortcut at alpha = 2, else eigvalsh."""
    if alpha == 2.0:
        # S_2 = -log(sum lam^2 / (sum lam)^2) = -log(||K||_F^2 / tr(K)^2): no decomposition needed.
        trace = matrix.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
        frobenius = matrix.square().sum(dim=(-2, -1))
        ratio = frobenius / torch.where(trace > 0, trace.square(), 1.0)
        # ratio <= 1 for a PSD matrix; clamping keeps rounding from giving -1e-16.
        return torch.where(trace > 0, -torch.log(ratio.clamp(1e-300, 1.0)), 0.0) + 0.0
    return entropy_from_eigenvalues(eigvalsh(matrix), alpha, tol)


# --------------------------------------------------------------------------------------------------
# matrix entropy and ranks


def matrix_entropy(
    Z: Tensor,
    alpha: float = 1.0,
    normalization: str = "maxEntropy",
    *,
    normalize_rows: bool = True,
    tol: float = DEFAULT_TOL,
    side: Side = "auto",
    clamp_gram: bool = False,
) -> Tensor:
    """Matrix-based Renyi entropy ``S_a(Z)`` of the Gram matrix of ``Z`` (SPEC Eq. 1).

    Parameters
    ----------
    Z : Tensor, shape (..., n, d)
        Rows = tokens of one prompt or pooled prompts; leading axes are batched (e.g. layers).
    alpha : float, default 1
        Order ``a > 0``; ``1`` is the Shannon limit, ``2`` uses ``-log(||K||_F^2 / tr(K)^2)``.
    normalization : str, default "maxEntropy"
        One of :data:`NORMALIZATIONS`; ``maxEntropy`` divides by ``log(min(n, d))``.
    normalize_rows : bool, default True
        Apply :func:`normalize` first (SPEC preprocessing).
    tol : float
        Eigenvalues ``<= tol * max`` are dropped.
    side : {"auto", "gram", "covariance"}
        Which of ``Z Z^T`` / ``Z^T Z`` to decompose; ``auto`` takes the smaller (same value).
    clamp_gram : bool, default False
        The authors' clamp of negative Gram entries (changes the value; off by default).

    Returns
    -------
    Tensor, float64, shape (...,)
    """
    alpha = _check_alpha(alpha)
    _check_normalization(normalization)
    X = _as_float64(Z, "Z")  # bad input fails here, every call
    n, d = X.shape[-2:]
    if alpha == 2.0:  # the Frobenius shortcut needs no eigenvalues
        entropy = _entropy_of_matrix(_smaller_gram(normalize(X) if normalize_rows else X, side, clamp_gram), alpha, tol)
    else:
        entropy = entropy_from_eigenvalues(_spectrum(Z, normalize_rows, side, clamp_gram), alpha, tol)
    return normalize_entropy(entropy, normalization, n, d)


def dataset_entropy(
    pooled: Tensor,
    alpha: float = 1.0,
    normalization: str = "maxEntropy",
    *,
    tol: float = DEFAULT_TOL,
    clamp_gram: bool = False,
) -> Tensor:
    """Dataset entropy: :func:`matrix_entropy` of the normalized pooled embeddings.

    Parameters
    ----------
    pooled : Tensor, shape (..., n, d)
        One pooled embedding per prompt, e.g. ``(layers, n_prompts, d)``; needs ``n >= 2``.

    Returns
    -------
    Tensor, float64, shape (...,)
    """
    pooled = _as_float64(pooled, "pooled")
    if pooled.shape[-2] < 2:
        raise LayerscopeError("dataset entropy needs at least 2 prompts")
    return matrix_entropy(pooled, alpha, normalization, tol=tol, clamp_gram=clamp_gram)


def effective_rank(Z: Tensor, *, normalize_rows: bool = True, tol: float = DEFAULT_TOL) -> Tensor:
    """Effective rank of Roy & Vetterli: ``exp(-sum q_i log q_i)``, ``q_i = s_i / sum_j s_j``.

    ``s`` are the singular values of ``Z`` (of :func:`normalize` (Z) by default, the same matrix
    whose entropy :func:`entropy_rank` measures), obtained as square roots of the Gram eigenvalues;
    a singular value is dropped when its squared value is ``<= tol`` times the largest, the rule of
    the entropies. Since ``q`` is flatter than ``p_i = s_i^2 / sum s_j^2``, effective rank >=
    ``exp(S_1)`` (the paper's Theorem 1 states the reverse inequality, which is false).
    With ``normalize_rows=False`` this is RankMe (Garrido et al.).

    Parameters
    ----------
    Z : Tensor, shape (..., n, d)

    Returns
    -------
    Tensor, float64, shape (...,)
        In ``[1, min(n, d)]``; 1 for a zero matrix.
    """
    _as_float64(Z, "Z")  # bad input fails here, every call
    lam = _spectrum(Z, normalize_rows)
    lam_max = lam.amax(dim=-1, keepdim=True)
    singular = torch.where((lam > tol * lam_max) & (lam > 0), lam, 0.0).sqrt()
    # Shannon entropy of q = s / sum(s) is the alpha = 1 entropy of "eigenvalues" s.
    return torch.exp(entropy_from_eigenvalues(singular, 1.0, 0.0))


def entropy_rank(Z: Tensor, *, normalize_rows: bool = True, tol: float = DEFAULT_TOL) -> Tensor:
    """Entropy-based rank ``exp(S_1(Z))`` (raw Shannon matrix entropy).

    Parameters
    ----------
    Z : Tensor, shape (..., n, d)

    Returns
    -------
    Tensor, float64, shape (...,)
        In ``[1, min(n, d)]``; never larger than :func:`effective_rank` of the same matrix.
    """
    return torch.exp(matrix_entropy(Z, 1.0, "raw", normalize_rows=normalize_rows, tol=tol))


# --------------------------------------------------------------------------------------------------
# token-level metrics (padded batches of prompts)


def summarize_prompts(per_prompt: Tensor, seen: Tensor | None = None) -> PromptMetric:
    """Mean over prompts ignoring NaN (skipped prompts), with the counts.

    Parameters
    ----------
    per_prompt : Tensor, shape (..., prompts)
        NaN marks a skipped prompt.
    seen : Tensor of bool, shape (prompts,), optional
        Prompts that were presented (default all); unseen ones count neither as used nor skipped.
    """
    used = ~torch.isnan(per_prompt)
    if seen is None:
        seen = torch.ones(per_prompt.shape[-1], dtype=torch.bool, device=per_prompt.device)
    n_used = used.sum(dim=-1)
    n_skipped = (seen & ~used).sum(dim=-1)
    total = torch.where(used, per_prompt, 0.0).sum(dim=-1)
    mean = torch.where(n_used > 0, total / n_used.clamp_min(1), math.nan)
    return PromptMetric(mean, per_prompt, n_used, n_skipped)


def _check_tokens(tokens: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    tokens = _as_float64(tokens, "tokens", min_ndim=3)
    n_prompts, n_tokens = tokens.shape[-3:-1]
    mask = _lengths_mask(lengths, n_prompts, n_tokens, tokens.device)
    return tokens, mask


def _normalized_gram(tokens: Tensor, mask: Tensor, clamp_gram: bool = False) -> Tensor:
    """Gram matrix (smaller side) of ``normalize(tokens, mask)`` without materializing the rows.

    ``tokens`` (..., b, t, d) padded, ``mask`` (b, t) of leading real tokens -> (..., b, s, s) with
    ``s = min(t, d)``. On the t x t side the centered Gram is rescaled by the inverse row norms read
    off its diagonal; on the d x d side the centered rows are scaled in place before the product.
    Without the clamp the side does not change the nonzero eigenvalues, so the padded length decides;
    with it (the authors' variant) each prompt gets the side its own length gives, as if unpadded.
    """
    centered, _, scale = _center(tokens, mask)  # (..., b, t, d), (..., b, 1)
    n, d = centered.shape[-2:]
    if n <= d:
        gram = _token_side_gram(centered, scale)  # (..., b, t, t)
    elif not clamp_gram:
        gram = _feature_side_gram(centered, scale)  # (..., b, d, d)
    else:
        # Prompts of at most d real tokens have them all in the first d rows: their d x d block of
        # the token-side Gram holds their whole Gram (zero rows and columns elsewhere stay zero).
        short = mask.sum(dim=-1) <= d  # (b,)
        gram = centered.new_empty((*centered.shape[:-2], d, d))
        gram[..., short, :, :] = _token_side_gram(centered[..., short, :d, :], scale[..., short, :])
        gram[..., ~short, :, :] = _feature_side_gram(centered[..., ~short, :, :], scale[..., ~short, :])
    return gram.clamp_min_(0.0) if clamp_gram else gram


def _token_side_gram(centered: Tensor, scale: Tensor) -> Tensor:
    """(..., n, d) centered rows, (..., 1) zero-row scale -> (..., n, n) Gram of the normalized rows."""
    gram = centered @ centered.mT
    inverse = _inverse_norms(gram.diagonal(dim1=-2, dim2=-1), scale)  # (..., n)
    return gram.mul_(inverse.unsqueeze(-1)).mul_(inverse.unsqueeze(-2))


def _feature_side_gram(centered: Tensor, scale: Tensor) -> Tensor:
    """(..., n, d) centered rows (scaled in place), (..., 1) -> (..., d, d) ``Z^T Z`` of the normalized rows."""
    inverse = _inverse_norms(centered.square().sum(dim=-1), scale)  # (..., n)
    centered.mul_(inverse.unsqueeze(-1))
    return centered.mT @ centered


def _prompt_entropies(
    tokens: Tensor, mask: Tensor, alpha: float, tol: float, clamp_gram: bool
) -> Tensor:
    """Raw entropy per prompt of padded tokens (..., b, t, d) and mask (b, t); NaN if < 2 tokens."""
    # Zero (padded) rows add only zero eigenvalues, which the tolerance drops: padding is harmless.
    entropy = _entropy_of_matrix(_normalized_gram(tokens, mask, clamp_gram), alpha, tol)  # (..., b)
    return torch.where(mask.sum(dim=-1) >= 2, entropy, math.nan)


def prompt_entropy_values(
    tokens: Tensor,
    lengths: Tensor | None = None,
    alpha: float = 1.0,
    *,
    tol: float = DEFAULT_TOL,
    clamp_gram: bool = False,
) -> Tensor:
    """Raw matrix entropy of each prompt's normalized token matrix (pads removed).

    Parameters
    ----------
    tokens : Tensor, shape (..., prompts, tokens, d)
        Right- or left-padded hidden states; the positions outside ``lengths`` are ignored.
    lengths : Tensor of int, shape (prompts,), optional
        Real tokens of each prompt, at the start of its row (default: all).

    Returns
    -------
    Tensor, float64, shape (..., prompts)
        NaN for prompts with fewer than 2 tokens (skipped: one token has no spread to measure).
        Two tokens always give 0: once centered they are opposite vectors, a rank-one matrix.
    """
    alpha = _check_alpha(alpha)
    tokens, mask = _check_tokens(tokens, lengths)
    return _prompt_entropies(tokens, mask, alpha, tol, clamp_gram)


def prompt_entropy(
    tokens: Tensor,
    lengths: Tensor | None = None,
    alpha: float = 1.0,
    normalization: str = "maxEntropy",
    *,
    tol: float = DEFAULT_TOL,
    clamp_gram: bool = False,
) -> PromptMetric:
    """Prompt entropy: matrix entropy of each prompt's normalized tokens, averaged over prompts.

    Each prompt is normalized with its own length ``T``: ``maxEntropy`` divides by ``log(min(T, d))``.

    Parameters
    ----------
    tokens : Tensor, shape (..., prompts, tokens, d)
        Padded hidden states, e.g. ``(layers, prompts, tokens, d)``.
    lengths : Tensor of int, shape (prompts,), optional
        Number of real (leading) tokens per prompt; default all.
    alpha, normalization, tol, clamp_gram
        As in :func:`matrix_entropy`.

    Returns
    -------
    PromptMetric
        ``mean`` (...,), ``per_prompt`` (..., prompts), counts (...,). Prompts with fewer than
        2 tokens are skipped.
    """
    _check_normalization(normalization)
    tokens, mask = _check_tokens(tokens, lengths)
    raw = _prompt_entropies(tokens, mask, _check_alpha(alpha), tol, clamp_gram)
    per_prompt = normalize_entropy(raw, normalization, mask.sum(dim=-1), tokens.shape[-1])
    return summarize_prompts(per_prompt)


def prefix_entropy_values(
    tokens: Tensor,
    lengths: Tensor | None,
    prefix_lengths: Sequence[int],
    alpha: float = 1.0,
    *,
    tol: float = DEFAULT_TOL,
    clamp_gram: bool = False,
) -> Tensor:
    """Raw entropy of the first ``t`` tokens of each prompt, for each ``t`` in ``prefix_lengths``.

    Returns
    -------
    Tensor, float64, shape (len(prefix_lengths), ..., prompts)
        NaN where a prompt has fewer than ``t`` tokens (so every value at ``t`` is over exactly
        ``t`` tokens) or ``t < 2``.
    """
    alpha = _check_alpha(alpha)
    tokens, mask = _check_tokens(tokens, lengths)
    n_real = mask.sum(dim=-1)  # (prompts,)
    out = []
    for t in prefix_lengths:
        t = int(t)
        width = max(1, min(t, tokens.shape[-2]))
        prefix_mask = mask[..., :width]
        values = _prompt_entropies(tokens[..., :width, :], prefix_mask, alpha, tol, clamp_gram)
        out.append(torch.where((n_real >= t) & (t >= 2), values, math.nan))
    return torch.stack(out)


def _curvatures(tokens: Tensor, mask: Tensor, abs_cos: bool) -> Tensor:
    """Mean turning angle per prompt of validated float64 padded tokens; NaN if not defined."""
    steps = tokens[..., 1:, :] - tokens[..., :-1, :]  # (..., b, t-1, d): v_k = z_{k+1} - z_k
    norms = torch.linalg.vector_norm(steps, dim=-1)  # (..., b, t-1)
    dots = (steps[..., 1:, :] * steps[..., :-1, :]).sum(dim=-1)  # (..., b, t-2): v_{k+1} . v_k
    n_real = mask.sum(dim=-1, keepdim=True)  # (b, 1)
    pair_in_prompt = torch.arange(dots.shape[-1], device=tokens.device) + 2 < n_real  # (b, t-2)
    # A zero step (identical consecutive states, e.g. a repeated token at the embedding layer) has no
    # direction: pairs involving one are left out of the prompt's mean.
    valid = pair_in_prompt & (norms[..., 1:] > 0) & (norms[..., :-1] > 0)
    cosine = dots / torch.where(valid, norms[..., 1:] * norms[..., :-1], 1.0)
    cosine = cosine.abs() if abs_cos else cosine
    angles = torch.arccos(cosine.clamp(-1.0, 1.0))
    count = valid.sum(dim=-1)
    total = torch.where(valid, angles, 0.0).sum(dim=-1)
    return torch.where(count > 0, total / count.clamp_min(1), math.nan)


def curvature_values(tokens: Tensor, lengths: Tensor | None = None, *, abs_cos: bool = False) -> Tensor:
    """Curvature of each prompt's token trajectory (radians); see :func:`curvature`.

    Returns
    -------
    Tensor, float64, shape (..., prompts)
        NaN for skipped prompts.
    """
    tokens, mask = _check_tokens(tokens, lengths)
    return _curvatures(tokens, mask, abs_cos)


def curvature(tokens: Tensor, lengths: Tensor | None = None, *, abs_cos: bool = False) -> PromptMetric:
    """Average curvature of Hosseini & Fedorenko over the tokens of each prompt.

    ``v_k = z_{k+1} - z_k``; ``C = mean_k arccos(v_{k+1} . v_k / (|v_{k+1}| |v_k|))`` in ``[0, pi]``
    (0 = straight line, pi = going back the way it came), then averaged over prompts.

    Parameters
    ----------
    tokens : Tensor, shape (..., prompts, tokens, d)
        Padded hidden states (not normalized).
    lengths : Tensor of int, shape (prompts,), optional
    abs_cos : bool, default False
        Use ``|cos|`` as the authors' code did (angles folded into ``[0, pi/2]``).

    Returns
    -------
    PromptMetric
        Prompts with fewer than 3 tokens, or with no pair of consecutive non-zero steps, are skipped.
    """
    return summarize_prompts(curvature_values(tokens, lengths, abs_cos=abs_cos))


# --------------------------------------------------------------------------------------------------
# invariance metrics (augmented views)


def _check_views(za: Tensor, zb: Tensor) -> tuple[Tensor, Tensor]:
    """Validate two views; they stay in their dtype (chunks are cast to float64 as they are used)."""
    za = _checked(za, "view a")
    zb = _checked(zb, "view b")
    if za.shape != zb.shape:
        raise LayerscopeError(f"the two views must have the same shape, got {tuple(za.shape)} and {tuple(zb.shape)}")
    if za.shape[-2] < 2:
        raise LayerscopeError("invariance metrics need at least 2 prompts")
    return za, zb


def infonce(
    za: Tensor,
    zb: Tensor,
    tau: float = 0.1,
    variant: Literal["infonce", "ntxent"] = "infonce",
    *,
    normalize_rows: bool = True,
) -> InfoNCEResult:
    """InfoNCE between two augmented views of each prompt (pooled, then normalized).

    ``infonce``: ``L = mean_i -log softmax_j(a_i . b_j / tau)_i`` (the positive of ``a_i`` is ``b_i``,
    the other prompts' ``b_j`` are negatives). ``ntxent``: the symmetric SimCLR loss over the 2n views,
    each view's positive is the other view of its prompt and all 2n - 2 other views are negatives.

    Parameters
    ----------
    za, zb : Tensor, shape (..., n, d)
        The two views' pooled embeddings, row i = prompt i; ``n >= 2``.
    tau : float, default 0.1
    variant : {"infonce", "ntxent"}
    normalize_rows : bool, default True
        Apply :func:`normalize` to each view (cosine similarities of centered embeddings).

    Returns
    -------
    InfoNCEResult
        ``loss``, ``bound = log K - loss`` and ``normalized = 1 - loss / log K``, each (...,).
    """
    if variant not in ("infonce", "ntxent"):
        raise unknown("InfoNCE variant", variant, ("infonce", "ntxent"))
    if not tau > 0:
        raise LayerscopeError(f"temperature tau must be > 0, got {tau}")
    za, zb = _check_views(za, zb)
    n, d = za.shape[-2:]

    def loss_chunk(a: Tensor, b: Tensor) -> Tensor:  # (c, n, d) x 2 -> (c,)
        a, b = (normalize(a), normalize(b)) if normalize_rows else (a.to(torch.float64), b.to(torch.float64))
        if variant == "infonce":
            logits = (a @ b.mT).div_(tau)  # (c, n, n)
            return (torch.logsumexp(logits, dim=-1) - logits.diagonal(dim1=-2, dim2=-1)).mean(dim=-1)
        both = torch.cat([a, b], dim=-2)  # (c, 2n, d)
        logits = (both @ both.mT).div_(tau)  # (c, 2n, 2n)
        positives = torch.cat([logits.diagonal(n, dim1=-2, dim2=-1), logits.diagonal(-n, dim1=-2, dim2=-1)], dim=-1)
        logits.diagonal(dim1=-2, dim2=-1).fill_(-math.inf)  # a view is not its own candidate
        return (torch.logsumexp(logits, dim=-1) - positives).mean(dim=-1)

    size = n if variant == "infonce" else 2 * n
    # Cache-sized chunks: the similarity matrices are memory-bound, one layer or a few at a time.
    loss = _chunked(loss_chunk, [za, zb], 2, 8 * (4 * n * d + 2 * size * size), max_bytes=64 * 2**20)
    candidates = n if variant == "infonce" else 2 * n - 1
    log_k = math.log(candidates)
    return InfoNCEResult(loss, log_k - loss, 1.0 - loss / log_k)


def lidar(
    views: Tensor,
    alpha: float = 1.0,
    normalization: str = "maxEntropy",
    *,
    delta: float = 1e-4,
    tol: float = DEFAULT_TOL,
    block_size: int | None = None,
    seed: int = 0,
) -> LidarResult:
    """LiDAR (Thilak et al.): entropy of the LDA matrix with prompts as classes and views as samples.

    ``mu_i`` = mean of prompt i's J views, ``mu`` = mean of all; ``S_b = 1/n sum_i (mu_i - mu)(...)^T``;
    ``S_w = 1/(nJ) sum_ij (z_ij - mu_i)(...)^T + delta I``; the spectrum is that of
    ``S_w^{-1/2} S_b S_w^{-1/2}``. It is computed as the spectrum of ``L^{-1} S_b L^{-T}`` with
    ``S_w = L L^T`` (Cholesky), a similar matrix with the same eigenvalues that avoids an
    eigendecomposition with eigenvectors, then as Gram eigenvalues of ``(L^{-1} M^T)^T / sqrt(n)``
    (``M`` = centered class means) on the smaller of the n x n and d x d sides.
    The scatter matrices are matrix products (``S_w`` summed over blocks of prompts that fit in
    cache); nothing loops over single samples. The views are used as given (not normalized), as in
    LiDAR and the authors' code.

    Parameters
    ----------
    views : Tensor, shape (..., n, J, d)
        J >= 2 views of each of n >= 2 prompts, e.g. ``(layers, n, 16, d)``.
    alpha : float, default 1
    normalization : str, default "maxEntropy"
        Applied to the entropy with n = number of prompts and d = feature dimension.
    delta : float, default 1e-4
        Ridge added to ``S_w``.
    tol : float
        Relative eigenvalue threshold.
    block_size : int, optional
        The size-free form, as :func:`dime`'s: with at least two blocks' worth of prompts, both values
        are the means over ``n // block_size`` seeded random blocks (each normalized with its own size).
        LiDAR's between-class scatter has rank at most n - 1, and its profile across layers changes
        with n. None (default): all the prompts at once.
    seed : int, default 0
        Seed of the blocks' random order (nothing else is random).

    Returns
    -------
    LidarResult
        ``entropy`` (normalized, (...,)) and ``lidar = exp(raw entropy)`` (...,).
    """
    alpha = _check_alpha(alpha)
    _check_normalization(normalization)
    views = _checked(views, "views (..., n, J, d)", 3)
    n, n_views, d = views.shape[-3:]
    if n < 2 or n_views < 2:
        raise LayerscopeError(f"LiDAR needs at least 2 prompts and 2 views each, got {n} x {n_views}")
    if not delta > 0:
        raise LayerscopeError(f"LiDAR ridge delta must be > 0, got {delta}")
    block_size = _check_block(block_size, "LiDAR")
    if block_size is not None and n // block_size >= 2:
        parts = _in_blocks(lambda v: lidar(v, alpha, normalization, delta=delta, tol=tol), [views], -3,
                           block_size, seed)
        return LidarResult(*(torch.cat(values, dim=-1).mean(dim=-1) for values in zip(*parts, strict=True)))

    def entropy_chunk(chunk: Tensor) -> Tensor:  # (b, n, J, d) -> (b,)
        batch = chunk.shape[0]
        class_means = torch.empty(batch, n, d, dtype=torch.float64, device=chunk.device)
        within = torch.zeros(batch, d, d, dtype=torch.float64, device=chunk.device)
        # S_w accumulates as a sum of matrix products over blocks of prompts (all their views at
        # once): each float64 block stays in cache instead of copies of the whole input.
        step = max(1, _SCATTER_BLOCK_BYTES // (8 * batch * n_views * d))
        for start in range(0, n, step):
            block = chunk[:, start : start + step].to(torch.float64, copy=True)  # (b, k, J, d), ours to modify
            means = block.mean(dim=-2)  # (b, k, d)
            class_means[:, start : start + step] = means
            block = block.sub_(means.unsqueeze(-2)).reshape(batch, -1, d)  # (b, k J, d)
            within.baddbmm_(block.mT, block)
        within.div_(n * n_views).diagonal(dim1=-2, dim2=-1).add_(delta)  # (b, d, d)
        between = class_means - class_means.mean(dim=-2, keepdim=True)  # (b, n, d)
        cholesky, info = torch.linalg.cholesky_ex(within)
        if bool((info != 0).any()):
            raise LayerscopeError("LiDAR within-class scatter is not positive definite; increase delta")
        whitened = torch.linalg.solve_triangular(cholesky, between.mT, upper=False)  # (b, d, n)
        return _entropy_of_matrix(_smaller_gram(whitened.mT / math.sqrt(n)), alpha, tol)

    item_bytes = 8 * (3 * d * d + 3 * n * d)
    entropy = _chunked(entropy_chunk, [views], 3, item_bytes)
    return LidarResult(normalize_entropy(entropy, normalization, n, d), torch.exp(entropy))


def dime(
    za: Tensor,
    zb: Tensor,
    n_permutations: int = 10,
    seed: int = 0,
    alpha: float = 1.0,
    normalization: str = "maxEntropy",
    *,
    tol: float = DEFAULT_TOL,
    legacy_covariance: bool = False,
    block_size: int | None = None,
) -> Tensor:
    """DiME (Skean et al., 2023): difference of matrix-based entropies between paired and unpaired views.

    ``K_a``, ``K_b`` = n x n Grams of the two views' normalized rows;
    ``DiME = mean_P S_a(K_a o P K_b P^T) - S_a(K_a o K_b)`` (``o`` = Hadamard product, P random
    permutations, the same for every leading index), each entropy trace-normalized. The 1 + P
    matrices of all leading indices go to one batched eigenvalue call (per memory chunk of
    :data:`MAX_CHUNK_BYTES`); at ``alpha = 2`` the Frobenius shortcut needs none. Larger = the views' pairing carries more
    information (more augmentation-invariant prompts).

    Parameters
    ----------
    za, zb : Tensor, shape (..., n, d)
        Pooled embeddings of the two views, row i = prompt i.
    n_permutations : int, default 10
    seed : int, default 0
        Seeds the ``torch.Generator`` that draws the permutations.
    alpha : float, default 1
    normalization : str, default "maxEntropy"
        Divides the difference by the normalizer of an n x d matrix (the authors' convention).
    tol : float
        Relative eigenvalue threshold.
    legacy_covariance : bool, default False
        When ``n > d``, use the d x d matrices ``Z^T Z`` as the authors' code did (this permutes
        features, not prompts: a different quantity, kept only to reproduce their numbers).
    block_size : int, optional
        The size-free form: the prompts, in a seeded random order (``seed``), are cut into
        ``max(1, n // block_size)`` blocks of near-equal sizes (``n // k`` or one more), DiME is taken
        on each block (normalized with its own size) and the blocks are averaged. DiME compares n x n
        Grams, so its profile across layers changes with n; the blocked value estimates the same
        quantity whatever the number of prompts, with less noise the more there are
        (``benchmarks/bench_dime_size.py``). None (default): one block of all the prompts.

    Returns
    -------
    Tensor, float64, shape (...,)
    """
    alpha = _check_alpha(alpha)
    _check_normalization(normalization)
    if int(n_permutations) < 1:
        raise LayerscopeError(f"DiME needs at least one permutation, got {n_permutations}")
    za, zb = _check_views(za, zb)
    n, d = za.shape[-2:]
    block_size = _check_block(block_size, "DiME")
    if block_size is not None and n // block_size >= 2:
        options = {"n_permutations": n_permutations, "seed": seed, "alpha": alpha, "normalization": normalization,
                   "tol": tol, "legacy_covariance": legacy_covariance}
        parts = _in_blocks(lambda a, b: dime(a, b, **options), [za, zb], -2, block_size, seed)
        return torch.cat(parts, dim=-1).mean(dim=-1)
    size = d if legacy_covariance and n > d else n
    generator = torch.Generator().manual_seed(int(seed))
    permutations = torch.stack([torch.randperm(size, generator=generator) for _ in range(int(n_permutations))])
    permutations = permutations.to(za.device)  # (P, size)
    # Row 0 is the identity (the paired matrix K_a o K_b); rows 1..P the permutations.
    orders = torch.cat([torch.arange(size, device=za.device).unsqueeze(0), permutations])  # (1+P, size)
    n_matrices = orders.shape[0]

    def dime_chunk(a: Tensor, b: Tensor) -> Tensor:  # (c, n, d) x 2 -> (c,)
        a, b = normalize(a), normalize(b)
        gram_a = a.mT @ a if size != n else a @ a.mT  # (c, size, size)
        gram_b = b.mT @ b if size != n else b @ b.mT
        # All 1 + P matrices go to one eigenvalue call, unless one chunk's set would not fit in
        # MAX_CHUNK_BYTES (thousands of prompts): then as many per call as fit.
        group = max(1, MAX_CHUNK_BYTES // (16 * a.shape[0] * size * size))
        entropies = []
        for start in range(0, n_matrices, group):
            order = orders[start : start + group]
            matrices = gram_b[..., order[:, :, None], order[:, None, :]]  # (c, g, s, s): P K_b P^T
            matrices.mul_(gram_a.unsqueeze(-3))  # Hadamard product with K_a
            entropies.append(_entropy_of_matrix(matrices, alpha, tol))  # (c, g)
        entropy = torch.cat(entropies, dim=-1)  # (c, 1+P)
        return entropy[..., 1:].mean(dim=-1) - entropy[..., 0]

    item_bytes = 8 * (2 * n_matrices * size * size + 2 * size * size + 4 * n * d)
    value = _chunked(dime_chunk, [za, zb], 2, item_bytes)
    return normalize_entropy(value, normalization, n, d)


def _in_blocks(compute: Callable[..., Any], inputs: Sequence[Tensor], axis: int, block_size: int,
               seed: int) -> list[Any]:
    """``compute`` on seeded random blocks of the prompts (axis ``axis`` of every input).

    The prompts, in the order of ``torch.randperm`` seeded with ``seed``, are cut into
    ``k = n // block_size`` blocks of near-equal sizes (the first ``n mod k`` one larger); the blocks of
    each size go to one ``compute`` call as an extra leading axis (at most two calls), whose results
    end in that axis: ``(..., count)``.
    """
    n = inputs[0].shape[axis]
    k = max(1, n // block_size)
    small, larger = divmod(n, k)  # ``larger`` blocks of small + 1 prompts, then k - larger of ``small``
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).to(inputs[0].device)
    inputs = [x.index_select(axis, order) for x in inputs]
    cut = larger * (small + 1)
    return [compute(*(x.narrow(axis, start, stop - start).unflatten(axis, (count, size)) for x in inputs))
            for start, stop, count, size in ((0, cut, larger, small + 1), (cut, n, k - larger, small)) if count]


def _check_block(block_size: int | None, metric: str) -> int | None:
    if block_size is not None and int(block_size) < 2:
        raise LayerscopeError(f"{metric}'s block_size must be at least 2, got {block_size}")
    return None if block_size is None else int(block_size)
