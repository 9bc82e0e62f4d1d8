"""The batched eigenvalue solver: exact against NumPy's LAPACK, batched, and metrics unchanged by it."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from layerscope.errors import LayerscopeError
from layerscope.metrics import eigen
from layerscope.metrics import functional as F

RTOL = 1e-10  # the contract: error relative to the largest |eigenvalue| of the matrix


def orthogonal(batch: int, m: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(batch, m, m, dtype=torch.float64, generator=generator))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def with_spectrum(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(batch, m) eigenvalues -> (batch, m, m) symmetric matrices Q diag(values) Q^T, Q random."""
    q = orthogonal(values.shape[0], values.shape[1], generator)
    matrix = (q * values.unsqueeze(-2)) @ q.mT
    return 0.5 * (matrix + matrix.mT)


def family(name: str, batch: int, m: int, seed: int = 0) -> torch.Tensor:
    """(batch, m, m) float64 symmetric matrices of one of the families the contract names."""
    generator = torch.Generator().manual_seed(seed)
    if name == "random":
        a = torch.randn(batch, m, m, dtype=torch.float64, generator=generator)
        return a + a.mT
    if name == "rank_deficient":  # a Gram of rank about m / 3, like a short prompt's padded Gram
        rows = torch.randn(batch, m, max(1, m // 3), dtype=torch.float64, generator=generator)
        return rows @ rows.mT
    if name == "repeated":  # two eigenvalues, each of multiplicity about m / 2, and -1 once
        values = torch.where(torch.arange(m) < m // 2, 3.0, 0.5).to(torch.float64)
        values[-1] = -1.0
        return with_spectrum(values.expand(batch, m), generator)
    if name == "nearly_diagonal":
        diagonal = torch.randn(batch, m, dtype=torch.float64, generator=generator)
        noise = 1e-9 * torch.randn(batch, m, m, dtype=torch.float64, generator=generator)
        return torch.diag_embed(diagonal) + noise + noise.mT
    if name == "ill_conditioned":  # eigenvalues from 1 down to 1e-15, alternating in sign
        values = torch.logspace(0, -15, m, dtype=torch.float64) * (-1.0) ** torch.arange(m)
        return with_spectrum(values.expand(batch, m), generator)
    if name == "zero":
        return torch.zeros(batch, m, m, dtype=torch.float64)
    raise ValueError(name)


FAMILIES = ("random", "rank_deficient", "repeated", "nearly_diagonal", "ill_conditioned", "zero")


def relative_error(values: torch.Tensor, matrix: torch.Tensor) -> float:
    """Largest |error| over each matrix's largest |eigenvalue| against numpy.linalg.eigvalsh in float64."""
    reference = np.linalg.eigvalsh(matrix.to(torch.float64).numpy())
    scale = np.abs(reference).max(axis=-1, keepdims=True)
    error = np.abs(values.numpy() - reference)
    return float(np.max(np.where(scale > 0, error / np.where(scale > 0, scale, 1.0), error)))


@pytest.mark.numeric
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("m", [1, 2, 3, 5, 17, 40, 97])
def test_exact_against_numpy(name, m, dtype):
    matrix = family(name, 3, m).to(dtype)
    values = eigen.eigvalsh(matrix)
    assert values.dtype == torch.float64 and values.shape == (3, m)
    assert relative_error(values, matrix) < RTOL
    assert bool((values[:, 1:] >= values[:, :-1]).all())  # ascending


@pytest.mark.numeric
@pytest.mark.parametrize(("name", "m"), [("random", 300), ("ill_conditioned", 160)])
def test_exact_on_larger_matrices_spanning_several_panels(name, m):
    matrix = family(name, 1, m, seed=1)
    assert relative_error(eigen.eigvalsh(matrix), matrix) < RTOL


@pytest.mark.numeric
def test_zero_matrix_gives_exact_zeros_and_scale_does_not_matter():
    assert eigen.eigvalsh(torch.zeros(2, 6, 6)).abs().max() == 0  # entropies need exact zeros to drop
    matrix = family("random", 2, 20, seed=3)
    for scale in (1e-200, 1e200):  # squares of the entries would underflow / overflow unscaled
        scaled = eigen.eigvalsh(matrix * scale) / scale
        assert relative_error(scaled, matrix) < RTOL


@pytest.mark.numeric
def test_leading_axes_are_batched_and_each_matrix_is_its_own():
    matrix = family("random", 6, 7, seed=2).reshape(2, 3, 7, 7)
    values = eigen.eigvalsh(matrix)
    assert values.shape == (2, 3, 7)
    alone = torch.stack([eigen.eigvalsh(matrix[i, j]) for i in range(2) for j in range(3)]).reshape(2, 3, 7)
    torch.testing.assert_close(values, alone, rtol=0, atol=1e-13)
    assert eigen.eigvalsh(torch.zeros(0, 4, 4)).shape == (0, 4)


@pytest.mark.numeric
def test_only_the_lower_triangle_is_read_as_by_lapack():
    matrix = family("random", 3, 9, seed=4)
    garbage = matrix.tril() + torch.triu(torch.randn(3, 9, 9, dtype=torch.float64), diagonal=1)
    torch.testing.assert_close(eigen.eigvalsh(garbage), torch.linalg.eigvalsh(garbage), rtol=0, atol=1e-13)


@pytest.mark.numeric
def test_a_nonfinite_matrix_gives_nan_and_leaves_the_others_alone():
    matrix = family("random", 3, 8, seed=5)
    matrix[1, 2, 1] = float("nan")
    matrix[2, 7, 7] = float("inf")
    values = eigen.eigvalsh(matrix)
    assert bool(values[1:].isnan().all()) and relative_error(values[:1], matrix[:1]) < RTOL


def test_bad_input_raises():
    with pytest.raises(ValueError, match="square"):
        eigen.eigvalsh(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="floating"):
        eigen.eigvalsh(torch.zeros(2, 2, dtype=torch.long))


@pytest.mark.numeric
def test_chunks_and_trial_points_do_not_change_the_values():
    matrix = family("rank_deficient", 5, 30, seed=6)
    whole = eigen.eigvalsh(matrix)  # one matrix per chunk: batched products may round differently
    torch.testing.assert_close(eigen.eigvalsh(matrix, max_chunk_bytes=1), whole, rtol=0, atol=1e-13)
    diagonal, off_diagonal = eigen.tridiagonalize(matrix)
    for points in (1, 3, 7, 15):  # multisection, as on a GPU
        assert relative_error(eigen.tridiagonal_eigvalsh(diagonal, off_diagonal, points), matrix) < RTOL


@pytest.mark.numeric
def test_tridiagonal_form_is_similar_to_the_matrix():
    matrix = family("random", 2, 70, seed=7)  # three panels of 32 columns
    diagonal, off_diagonal = eigen.tridiagonalize(matrix)
    tridiagonal = torch.diag_embed(diagonal) + torch.diag_embed(off_diagonal, 1) + torch.diag_embed(off_diagonal, -1)
    torch.testing.assert_close(torch.linalg.eigvalsh(tridiagonal), torch.linalg.eigvalsh(matrix), rtol=0, atol=1e-12)
    # similarity keeps the trace and the Frobenius norm
    torch.testing.assert_close(diagonal.sum(-1), matrix.diagonal(dim1=-2, dim2=-1).sum(-1), rtol=1e-12, atol=1e-12)
    frobenius = diagonal.square().sum(-1) + 2 * off_diagonal.square().sum(-1)
    torch.testing.assert_close(frobenius, matrix.square().sum((-2, -1)), rtol=1e-12, atol=0)


class _CountCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_the_work_is_batched_not_looped_over_matrices(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a per-matrix LAPACK routine was called")

    for name in ("eigvalsh", "eigh", "eigvals", "eig", "svd", "svdvals"):
        monkeypatch.setattr(torch.linalg, name, refuse)
    monkeypatch.setattr(np.linalg, "eigvalsh", refuse)
    counts = []
    for batch in (1, 40):  # the same number of tensor operations for 1 and for 40 matrices
        with _CountCalls() as mode:
            eigen.eigvalsh(family("random", batch, 24))
        counts.append(mode.calls)
    assert counts[0] == counts[1]


@pytest.mark.numeric
def test_entry_point_backends_and_dtype(monkeypatch):
    matrix = family("rank_deficient", 4, 20, seed=8)
    reference = torch.linalg.eigvalsh(matrix)
    monkeypatch.setattr(F, "EIGVALSH_BACKEND", "batched")
    torch.testing.assert_close(F.eigvalsh(matrix), reference, rtol=0, atol=1e-12)
    single = F.eigvalsh(matrix.float())
    assert single.dtype == torch.float32  # the entry point keeps the input dtype
    torch.testing.assert_close(single, eigen.eigvalsh(matrix.float()).float(), rtol=0, atol=0)  # the same solver: exact
    monkeypatch.setattr(F, "EIGVALSH_BACKEND", "cusolver")
    with pytest.raises(LayerscopeError, match="eigenvalue backend"):
        F.eigvalsh(matrix)


def test_auto_keeps_lapack_on_the_cpu(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the batched solver ran on the CPU")

    monkeypatch.setattr(eigen, "eigvalsh", refuse)
    assert F.EIGVALSH_BACKEND == "auto"
    F.eigvalsh(family("random", 200, 64))
    assert not F._batched_is_faster(family("random", 200, 64))


def metric_values() -> dict[str, torch.Tensor]:
    """Every eigenvalue-based metric on small stacks over layers (the paths the registry uses)."""
    generator = torch.Generator().manual_seed(9)
    tokens = torch.randn(3, 5, 24, 16, dtype=torch.float64, generator=generator).cumsum(dim=2)  # (L, B, T, D)
    lengths = torch.tensor([24, 17, 9, 3, 1])
    pooled = torch.randn(3, 40, 16, dtype=torch.float64, generator=generator)  # n > d
    wide = torch.randn(3, 12, 30, dtype=torch.float64, generator=generator)  # n < d
    view_b = pooled + 0.3 * torch.randn(pooled.shape, dtype=torch.float64, generator=generator)
    views = pooled[:, :20, None, :] + 0.5 * torch.randn(3, 20, 16, 16, dtype=torch.float64, generator=generator)
    return {
        "prompt_entropy": F.prompt_entropy_values(tokens, lengths),
        "prompt_entropy_clamped": F.prompt_entropy_values(tokens, lengths, clamp_gram=True),
        "prompt_entropy_alpha_0.5": F.prompt_entropy_values(tokens, lengths, alpha=0.5),
        "prefix_entropy": F.prefix_entropy_values(tokens, lengths, (4, 10)),
        "dataset_entropy": F.dataset_entropy(pooled),
        "dataset_entropy_wide": F.dataset_entropy(wide),
        "dime": F.dime(pooled, view_b),
        "dime_legacy": F.dime(pooled, view_b, legacy_covariance=True),
        "lidar": F.lidar(views).lidar,
        "effective_rank": F.effective_rank(pooled),
        "entropy_rank": F.entropy_rank(wide),
    }


@pytest.mark.numeric
def test_metrics_are_equal_with_the_batched_solver_on_and_off(monkeypatch):
    monkeypatch.setattr(F, "EIGVALSH_BACKEND", "lapack")
    lapack = metric_values()
    monkeypatch.setattr(F, "EIGVALSH_BACKEND", "batched")
    calls = []
    original = eigen.eigvalsh
    monkeypatch.setattr(eigen, "eigvalsh", lambda matrix: calls.append(matrix.shape) or original(matrix))
    batched = metric_values()
    # every metric went through the batched solver; effective_rank(pooled) reuses the decomposition that
    # dataset_entropy(pooled) made (one spectrum per tensor, functional._spectrum), hence one call fewer
    assert len(calls) >= len(batched) - 1
    for name, value in lapack.items():
        assert torch.isfinite(value).any(), name
        torch.testing.assert_close(batched[name], value, rtol=0, atol=1e-10, equal_nan=True, msg=name)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.numeric
@needs_cuda
def test_cuda_values_equal_the_cpu_and_auto_takes_the_batched_solver(monkeypatch):
    matrix = family("rank_deficient", 100, 64, seed=10)
    on_device = matrix.cuda()
    assert F._batched_is_faster(on_device) and not F._batched_is_faster(on_device[:10])
    values = eigen.eigvalsh(on_device)
    assert values.device.type == "cuda"
    assert relative_error(values.cpu(), matrix) < RTOL
    calls = []
    original = eigen.eigvalsh
    monkeypatch.setattr(eigen, "eigvalsh", lambda m: calls.append(m.shape) or original(m))
    torch.testing.assert_close(F.eigvalsh(on_device).cpu(), torch.linalg.eigvalsh(matrix), rtol=0, atol=1e-11)
    assert calls


@pytest.mark.numeric
@needs_cuda
def test_cuda_metrics_equal_the_cpu_with_the_batched_solver(monkeypatch):
    monkeypatch.setattr(F, "EIGVALSH_BACKEND", "batched")
    generator = torch.Generator().manual_seed(11)
    tokens = torch.randn(2, 80, 40, 48, dtype=torch.float64, generator=generator).cumsum(dim=2)
    lengths = torch.randint(2, 41, (80,), generator=generator)
    on_cpu = F.prompt_entropy_values(tokens, lengths)
    on_gpu = F.prompt_entropy_values(tokens.cuda(), lengths.cuda()).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=1e-10)


def _planted(monkeypatch, shift: float) -> list:
    """Force the batched solver through the entry point, with a fresh first-use state, its answers
    moved by ``shift`` times each matrix's largest |eigenvalue|; returns the list its calls go to."""
    monkeypatch.setattr(F, "EIGVALSH_BACKEND", "batched")
    monkeypatch.setattr(F, "_BATCHED_TRUSTED", {})
    calls: list = []
    original = eigen.eigvalsh

    def solver(matrix):
        calls.append(matrix.shape)
        values = original(matrix)
        return values + shift * values.abs().amax(dim=-1, keepdim=True)

    monkeypatch.setattr(eigen, "eigvalsh", solver)
    return calls


@pytest.mark.numeric
def test_the_batched_solver_checks_itself_and_gives_way_to_lapack_on_a_planted_error(monkeypatch):
    matrix = family("rank_deficient", 12, 40, seed=12)
    reference = torch.linalg.eigvalsh(matrix)
    calls = _planted(monkeypatch, 1e-6)  # 100x the tolerance: a fault, not rounding
    with pytest.warns(RuntimeWarning, match=r"batched eigenvalue solver disagreed with LAPACK on cpu \(relative "
                      r"error 1\.0e-06 > 1e-08 on 3 of the 40 x 40 matrices\)"):
        first = F.eigvalsh(matrix)
    # LAPACK's answer, not the planted one: LAPACK here and in the reference (one solver, one thread
    # count, but a sub-stack may take another blocking), so a few ulps of the largest eigenvalue.
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-12 * float(reference.abs().max()))
    assert F._BATCHED_TRUSTED == {"cpu": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the second call is silent
        second = F.eigvalsh(matrix)
    assert len(calls) == 1  # the failed solver is not asked again in this process
    torch.testing.assert_close(second, reference, rtol=0, atol=1e-12 * float(reference.abs().max()))


def test_the_batched_solver_check_passes_once_and_costs_nothing_after(monkeypatch):
    matrix = family("repeated", 9, 36, seed=13)
    calls = _planted(monkeypatch, 0.0)
    lapack_calls = []
    original = np.linalg.eigvalsh
    monkeypatch.setattr(np.linalg, "eigvalsh", lambda m: lapack_calls.append(m.shape) or original(m))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = F.eigvalsh(matrix)
        second = F.eigvalsh(matrix)
    assert len(calls) == 2  # both calls answered by the batched solver
    assert lapack_calls == [(3, 36, 36)]  # first, middle and last matrix, on the first call only
    assert F._BATCHED_TRUSTED == {"cpu": True}
    torch.testing.assert_close(first, eigen.eigvalsh(matrix), rtol=0, atol=0)  # the same solver on the same input
    torch.testing.assert_close(second, first, rtol=0, atol=0)


@pytest.mark.numeric
def test_the_batched_solver_check_fails_on_nan_for_a_finite_matrix_and_skips_nonfinite_ones(monkeypatch):
    matrix = family("random", 4, 20, seed=14)
    nonfinite = matrix.clone()
    nonfinite[:, 0, 0] = math.nan
    calls = _planted(monkeypatch, 0.0)
    assert torch.isnan(F.eigvalsh(nonfinite)).all()  # nothing finite to check: no verdict yet
    assert F._BATCHED_TRUSTED == {} and len(calls) == 1
    monkeypatch.setattr(eigen, "eigvalsh", lambda m: torch.full(m.shape[:-1], math.nan, dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="relative error nan > 1e-08"):
        values = F.eigvalsh(matrix)
    torch.testing.assert_close(values, torch.linalg.eigvalsh(matrix), rtol=0, atol=1e-12 * float(matrix.abs().max()))
    assert F._BATCHED_TRUSTED == {"cpu": False}
