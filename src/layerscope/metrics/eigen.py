"""An exact batched symmetric eigenvalue solver in torch, for stacks of many small and medium matrices.

``torch.linalg.eigvalsh`` on a GPU solves a stack of matrices larger than 32 x 32 one matrix after
another (cuSOLVER ``syevd``), each a long chain of tiny kernels: 1,600 matrices of 256 x 256 took
3 s on an H200 for about 36 GFLOP of work. :func:`eigvalsh` instead works on the whole stack at once,
in float64 from end to end:

1. Householder reduction to tridiagonal form, blocked as in LAPACK's ``sytrd``/``latrd``: inside a
   panel of :data:`PANEL` columns each reflector costs one batched matrix-vector product with the
   trailing matrix, and the panel's reflectors update the trailing matrix at once by one batched
   matrix product (a rank-2k update).
2. All eigenvalues of all tridiagonal matrices at once by Sturm-sequence bisection: every (matrix,
   eigenvalue index) pair is a lane of one tensor, and each pass counts the eigenvalues below every
   lane's midpoint with the LDL^T pivot recurrence, one tensor operation per row over all lanes (on
   a GPU, small stacks split each bracket at up to 15 points per pass instead: fewer passes).

The Python loops run over the m columns and the bisection passes, never over matrices. Exactness:
both stages are backward stable (Householder; Kahan's Sturm count in IEEE arithmetic, where a zero
pivot becomes an infinity instead of a NaN), and the passes narrow every bracket to the resolution
of float64 at the matrix's norm, so each eigenvalue is within a few ``eps * sqrt(m) * max |lambda|``
of the exact one, the accuracy of LAPACK's values-only solvers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GPU_MEMORY_FRACTION", "GPU_POINTS_BUDGET", "MAX_CHUNK_BYTES", "PANEL", "eigvalsh", "tridiagonal_eigvalsh", "tridiagonalize"]

#: Columns per panel of the blocked Householder reduction (LAPACK's default block size).
PANEL = 32
#: Upper bound (bytes) on the working set of one chunk of the stack on the CPU: about ``m^2`` times
#: (32 + 9 * points) bytes per matrix (float64 copies of the matrix, and one float64 pivot plus one
#: bool sign per row, eigenvalue and trial point).
MAX_CHUNK_BYTES = 64 * 2**20
#: On a GPU a chunk may take this fraction of the memory available there (free, plus what PyTorch's
#: allocator holds unused): every chunk costs the same number of launches, so fewer is faster.
GPU_MEMORY_FRACTION = 0.25
#: On a GPU, trial points per bracket are added (1, 3, 7 or 15: 1 to 4 bits per pass) while a
#: chunk's lanes times points stay below this. A row of the pivot recurrence then moves at most
#: 24 bytes x 2^19 = 12 MB, a few microseconds of a data-center GPU's bandwidth, below the cost of
#: launching it: extra points are free there and cut the passes. Beyond it the recurrence is
#: bandwidth-bound and points would cost more than the passes they save (provisional: unmeasured).
GPU_POINTS_BUDGET = 2**19


@torch.no_grad()
def eigvalsh(matrix: Tensor, *, max_chunk_bytes: int | None = None) -> Tensor:
    """Ascending eigenvalues of a stack of real symmetric matrices, computed in float64.

    Like ``torch.linalg.eigvalsh``, only the lower triangle is read; unlike it, there is no
    gradient (bisection has none to give).

    Parameters
    ----------
    matrix : Tensor, shape (..., m, m)
        Real floating-point matrices (any float dtype; cast to float64).
    max_chunk_bytes : int, optional
        Bound on the working set of one chunk of the flattened stack (default
        :data:`MAX_CHUNK_BYTES`, on a GPU :data:`GPU_MEMORY_FRACTION` of its available memory); a
        chunk holds at least one matrix.

    Returns
    -------
    Tensor, float64, shape (..., m)
        Ascending eigenvalues, on the input's device. A matrix holding NaN or inf gives NaN.
    """
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"eigvalsh expects square matrices (..., m, m), got shape {tuple(matrix.shape)}")
    if not matrix.is_floating_point():
        raise TypeError(f"eigvalsh expects real floating-point matrices, got {matrix.dtype}")
    m = matrix.shape[-1]
    flat = matrix.reshape(-1, m, m)
    if flat.shape[0] == 0 or m == 0:
        return flat.new_zeros(matrix.shape[:-1], dtype=torch.float64)
    on_gpu = matrix.device.type == "cuda"
    points = 1
    while on_gpu and points < 15 and flat.shape[0] * m * (2 * points + 1) <= GPU_POINTS_BUDGET:
        points = 2 * points + 1
    budget = max_chunk_bytes
    if budget is None and on_gpu:
        free = torch.cuda.mem_get_info(matrix.device)[0]
        cached = torch.cuda.memory_reserved(matrix.device) - torch.cuda.memory_allocated(matrix.device)
        budget = int(GPU_MEMORY_FRACTION * (free + cached))
    elif budget is None:
        budget = MAX_CHUNK_BYTES
    step = max(1, int(budget) // (m * m * (32 + 9 * points)))
    values = [_solve(flat[start : start + step], points) for start in range(0, flat.shape[0], step)]
    return torch.cat(values).reshape(matrix.shape[:-1])


def _solve(matrix: Tensor, points: int) -> Tensor:
    """(b, m, m) any float dtype -> (b, m) float64 ascending eigenvalues."""
    lower = matrix.to(torch.float64).tril()
    symmetric = lower + lower.tril(-1).mT  # (b, m, m), from the lower triangle as LAPACK reads it
    # Scaling by the largest entry keeps every square and norm far from overflow and underflow.
    scale = symmetric.abs().amax(dim=(-2, -1))  # (b,); NaN or inf where an entry is
    finite = torch.isfinite(scale)
    safe = torch.where((scale > 0) & finite, scale, 1.0)
    diagonal, off_diagonal = tridiagonalize(symmetric / safe[:, None, None])
    values = tridiagonal_eigvalsh(diagonal, off_diagonal, points)
    # Times the scale itself, so that a zero matrix gives exact zeros rather than the bracket's size.
    return torch.where(finite[:, None], values * scale[:, None] + 0.0, math.nan)  # + 0.0: no -0.0


def tridiagonalize(matrix: Tensor, panel: int = PANEL) -> tuple[Tensor, Tensor]:
    """Householder reduction of symmetric matrices to tridiagonal form, blocked by panels.

    Parameters
    ----------
    matrix : Tensor, float64, shape (b, m, m)
        Symmetric (both triangles are read). Not modified.
    panel : int
        Columns reduced before the trailing matrix is updated by one batched matrix product.

    Returns
    -------
    diagonal : Tensor, float64, shape (b, m)
    off_diagonal : Tensor, float64, shape (b, m - 1)
        Of a tridiagonal matrix orthogonally similar to ``matrix`` (its signs are arbitrary).
    """
    work = matrix.clone()
    batch, m, _ = work.shape
    diagonal: list[Tensor] = []  # (b,) each, stacked at the end: one copy instead of m
    off_diagonal: list[Tensor] = []
    # [W | V] from [V | W]: the panel's update V W^T + W V^T is the product [V | W] [W | V]^T.
    swap = torch.arange(2 * panel, device=work.device).roll(panel)
    for start in range(0, m - 1, panel):
        stop = min(start + panel, m - 1)
        trailing = work[:, start:, start:]  # (b, k, k) view; not updated inside the panel
        reflectors = work.new_zeros(batch, m - start, 2 * panel)  # [V | W], rows relative to start
        for t in range(stop - start):
            # Column t of the current matrix: the trailing matrix minus the panel's pending update.
            pending = reflectors[:, t, swap]  # (b, 2 panel): [W_t | V_t]
            column = torch.baddbmm(trailing[:, t:, t, None], reflectors[:, t:], pending[..., None], alpha=-1)
            diagonal.append(column[:, 0, 0])
            vector, tau, norm = _householder(column[:, 1:, 0])  # (b, k - t - 1), (b,), (b,)
            off_diagonal.append(norm)
            # y = A v for the current A = trailing - [V | W] [W | V]^T; then H A H = A - v w^T - w v^T
            # with w = tau (y - (tau / 2)(y . v) v) for H = I - tau v v^T.
            below = reflectors[:, t + 1 :]  # (b, k - t - 1, 2 panel)
            y = trailing[:, t + 1 :, t + 1 :] @ vector[..., None]  # (b, k - t - 1, 1)
            y.baddbmm_(below, (below.mT @ vector[..., None])[:, swap], alpha=-1)
            coefficient = (vector[:, None, :] @ y)[..., 0].mul_(0.5 * tau[:, None])  # (b, 1)
            below[:, :, t] = vector
            w = torch.addcmul(y[..., 0], coefficient, vector, value=-1.0)
            torch.mul(w, tau[:, None], out=below[:, :, panel + t])
        done = stop - start
        rest = reflectors[:, done:]  # (b, m - stop, 2 panel)
        work[:, stop:, stop:].baddbmm_(rest, rest[..., swap].mT, alpha=-1)
    diagonal.append(work[:, m - 1, m - 1])
    off = torch.stack(off_diagonal, dim=-1) if off_diagonal else work.new_empty(batch, 0)
    return torch.stack(diagonal, dim=-1), off


def _householder(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Reflectors ``H = I - tau v v^T`` with ``H x = -sign(x_0) ||x|| e_1`` and ``v_0 = 1``.

    ``x`` (b, n) -> ``v`` (b, n), ``tau`` (b,), ``||x||`` (b,) (the new off-diagonal, up to a sign
    that no eigenvalue depends on). With ``beta = -sign(x_0) ||x||`` (the sign that avoids
    cancellation), ``v = [1, x_1: / (x_0 - beta)]`` and ``tau = 1 - x_0 / beta = 1 + |x_0| / ||x||``.
    Where ``x[1:]`` is zero this is the sign flip ``tau = 2``, ``v = e_1``; where all of ``x`` is zero,
    ``tau = 0``.
    """
    tiny = torch.finfo(x.dtype).tiny
    norm = torch.linalg.vector_norm(x, dim=-1)  # (b,)
    alpha = x[:, 0]
    shift = alpha.abs() + norm  # |x_0 - beta|, zero only where x is
    vector = x / torch.copysign(shift.clamp_min(tiny), alpha)[:, None]
    vector[:, 0] = 1.0
    return vector, shift / norm.clamp_min(tiny), norm


def tridiagonal_eigvalsh(diagonal: Tensor, off_diagonal: Tensor, points: int = 1) -> Tensor:
    """All eigenvalues of symmetric tridiagonal matrices by Sturm-sequence multisection, vectorized.

    Lane (matrix i, index j) brackets the j-th smallest eigenvalue of matrix i. A pass splits every
    bracket at ``points`` equally spaced trial points (``points = 1``: bisection) and keeps the piece
    holding the eigenvalue. The number of eigenvalues below a point ``x`` is the number of negative
    pivots ``q_k = (d_k - x) - e_{k-1}^2 / q_{k-1}`` of ``T - x I = L D L^T`` (Sylvester's law of
    inertia), computed for all lanes and points at once, one row k at a time. A zero pivot gives an
    infinite next pivot and then a finite one again (IEEE arithmetic); zero off-diagonals are raised
    to the smallest normal number so that 0 / 0 never occurs. The passes stop at the float64
    resolution of the Gershgorin bound, a number fixed in advance: the loop never waits on the device.

    Parameters
    ----------
    diagonal : Tensor, float64, shape (b, m)
    off_diagonal : Tensor, float64, shape (b, m - 1)
    points : int, default 1
        Trial points per bracket and pass. More points mean fewer passes (``log2(points + 1)`` bits
        each) for ``points`` times the arithmetic: a gain only where each operation is dominated
        by its launch cost, on a GPU.

    Returns
    -------
    Tensor, float64, shape (b, m)
        Ascending eigenvalues.
    """
    batch, m = diagonal.shape
    tiny = torch.finfo(torch.float64).tiny
    eps = torch.finfo(torch.float64).eps
    magnitude = off_diagonal.abs()
    radius = torch.zeros_like(diagonal)
    radius[:, 1:] += magnitude
    radius[:, :-1] += magnitude
    low = (diagonal - radius).amin(dim=-1)  # (b,) Gershgorin interval holding every eigenvalue
    high = (diagonal + radius).amax(dim=-1)
    bound = torch.maximum(low.abs(), high.abs())
    # Widened so that the rounding of the pivot count cannot put an eigenvalue outside (LAPACK stebz).
    margin = 2.1 * m * eps * bound + 4 * tiny
    low, high = low - margin, high + margin
    # Every width is at most 2 * (bound + margin): after this many passes the midpoint is within
    # eps * bound of the bracketed eigenvalue.
    passes = math.ceil(math.log((1.0 + 2.1 * m * eps) / eps) / math.log(points + 1))

    squares = off_diagonal.square().clamp_min(tiny).T[:, :, None, None].contiguous()  # (m - 1, b, 1, 1)
    rows = diagonal.T[:, :, None, None].contiguous()  # (m, b, 1, 1)
    index = torch.arange(m, device=diagonal.device)[:, None]  # (m, 1) eigenvalue index of each lane
    fractions = torch.arange(1, points + 1, device=diagonal.device, dtype=torch.float64) / (points + 1)
    lower = low[:, None].expand(batch, m).contiguous()  # (b, m) bracket of each lane
    upper = high[:, None].expand(batch, m).contiguous()
    pivots = diagonal.new_empty(m, batch, m, points)  # (rows, b, lanes, points)
    # Views made once: the row loop below is the hot path, one operation per row and pass.
    pivot_rows, square_rows = pivots.unbind(0), squares.unbind(0)
    for _ in range(passes):
        trial = torch.addcmul(lower[..., None], (upper - lower)[..., None], fractions)  # (b, m, points)
        torch.sub(rows, trial, out=pivots)  # d_k - x for every row, lane and point
        for k in range(1, m):
            pivot_rows[k].addcdiv_(square_rows[k - 1], pivot_rows[k - 1], value=-1.0)
        # signbit counts -0 as negative: consistent with the +inf pivot that follows it.
        below = torch.signbit(pivots).sum(dim=0, dtype=torch.int32)  # (b, m, points): eigenvalues below
        kept = (below <= index).sum(dim=-1, keepdim=True)  # (b, m, 1) points left of the eigenvalue
        ends = torch.cat([lower[..., None], trial, upper[..., None]], dim=-1)  # (b, m, points + 2)
        lower = ends.gather(-1, kept)[..., 0]
        upper = ends.gather(-1, kept + 1)[..., 0]
    # Rounding can make the count non-monotonic by one inside a cluster; sorting restores the order.
    return torch.sort(0.5 * (lower + upper), dim=-1).values
