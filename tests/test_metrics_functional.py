"""layerscope.metrics.functional against independent float64 NumPy/SciPy implementations of SPEC section 4.

The ``ref_*`` functions below are written from the formulas, one matrix at a time, with explicit
loops and full decompositions; they share no code with the library.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import torch

from layerscope.errors import LayerscopeError
from layerscope.metrics import functional as F

ALPHAS = [0.5, 1.0, 2.0, 3.0]
TOL = F.DEFAULT_TOL


# ---------------------------------------------------------------------------------------------
# references


def ref_normalize(Z: np.ndarray) -> np.ndarray:
    centered = Z - Z.mean(axis=0, keepdims=True)
    out = np.zeros_like(centered)
    for i, row in enumerate(centered):
        norm = np.linalg.norm(row)
        if norm > 1e-10 * np.linalg.norm(Z, axis=1).max():
            out[i] = row / norm
    return out


def ref_entropy_from_eigenvalues(lam: np.ndarray, alpha: float) -> float:
    lam = lam[(lam > TOL * lam.max()) & (lam > 0)]
    if lam.size == 0:
        return 0.0
    p = lam / lam.sum()
    if alpha == 1.0:
        return float(-np.sum(p * np.log(p)))
    return float(np.log(np.sum(p**alpha)) / (1.0 - alpha))


def ref_normalizer(normalization: str, n: int, d: int) -> float:
    return {
        "raw": 1.0,
        "maxEntropy": math.log(min(n, d)),
        "logN": math.log(n),
        "logD": math.log(d),
        "logNlogD": math.log(n) * math.log(d),
    }[normalization]


def ref_matrix_entropy(Z: np.ndarray, alpha: float, normalization: str = "raw", normalize: bool = True) -> float:
    """Always through the n x n Gram matrix K = Z Z^T, whatever the shape."""
    Zn = ref_normalize(Z) if normalize else Z
    K = Zn @ Zn.T
    lam = scipy.linalg.eigh(K, eigvals_only=True)
    return ref_entropy_from_eigenvalues(lam, alpha) / ref_normalizer(normalization, *Z.shape)


def ref_effective_rank(Z: np.ndarray, normalize: bool = True) -> float:
    s = scipy.linalg.svdvals(ref_normalize(Z) if normalize else Z)
    s = s[s**2 > TOL * (s**2).max()]
    q = s / s.sum()
    return float(np.exp(-np.sum(q * np.log(q))))


def ref_curvature(tokens: np.ndarray, abs_cos: bool = False) -> float:
    """Mean angle over consecutive steps of one prompt (T, D); NaN when undefined."""
    angles = []
    for k in range(len(tokens) - 2):
        v0, v1 = tokens[k + 1] - tokens[k], tokens[k + 2] - tokens[k + 1]
        n0, n1 = np.linalg.norm(v0), np.linalg.norm(v1)
        if n0 == 0 or n1 == 0:
            continue
        cos = v1 @ v0 / (n0 * n1)
        angles.append(math.acos(min(1.0, max(-1.0, abs(cos) if abs_cos else cos))))
    return float(np.mean(angles)) if angles else math.nan


def ref_infonce(za: np.ndarray, zb: np.ndarray, tau: float) -> float:
    a, b = ref_normalize(za), ref_normalize(zb)
    losses = []
    for i in range(len(a)):
        logits = np.array([a[i] @ b[j] / tau for j in range(len(b))])
        losses.append(scipy.special.logsumexp(logits) - logits[i])
    return float(np.mean(losses))


def ref_ntxent(za: np.ndarray, zb: np.ndarray, tau: float) -> float:
    z = np.concatenate([ref_normalize(za), ref_normalize(zb)])
    n = len(za)
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        logits = np.array([z[i] @ z[j] / tau for j in range(2 * n) if j != i])
        losses.append(scipy.special.logsumexp(logits) - z[i] @ z[positive] / tau)
    return float(np.mean(losses))


def ref_lidar_entropy(views: np.ndarray, alpha: float, delta: float = 1e-4) -> float:
    n, j, d = views.shape
    mu_i = views.mean(axis=1)
    mu = views.reshape(-1, d).mean(axis=0)
    between = np.zeros((d, d))
    within = np.zeros((d, d))
    for i in range(n):
        between += np.outer(mu_i[i] - mu, mu_i[i] - mu)
        for k in range(j):
            within += np.outer(views[i, k] - mu_i[i], views[i, k] - mu_i[i])
    between /= n
    within = within / (n * j) + delta * np.eye(d)
    w, V = np.linalg.eigh(within)
    inv_sqrt = V @ np.diag(w**-0.5) @ V.T
    lam = np.linalg.eigvalsh(inv_sqrt @ between @ inv_sqrt)
    return ref_entropy_from_eigenvalues(lam, alpha)


def ref_permutations(size: int, n_permutations: int, seed: int) -> list[np.ndarray]:
    """The documented seeding: torch.Generator().manual_seed(seed), one randperm per permutation."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(size, generator=generator).numpy() for _ in range(n_permutations)]


def ref_dime(za: np.ndarray, zb: np.ndarray, alpha: float, n_permutations: int = 10, seed: int = 0) -> float:
    a, b = ref_normalize(za), ref_normalize(zb)
    Ka, Kb = a @ a.T, b @ b.T

    def entropy(K: np.ndarray) -> float:
        return ref_entropy_from_eigenvalues(np.linalg.eigvalsh(K / np.trace(K)), alpha)

    joint = entropy(Ka * Kb)
    permuted = [entropy(Ka * Kb[np.ix_(perm, perm)]) for perm in ref_permutations(len(za), n_permutations, seed)]
    return float(np.mean(permuted) - joint)


# ---------------------------------------------------------------------------------------------
# helpers


def random_stack(layers: int, n: int, d: int, seed: int = 0, spread: bool = True) -> torch.Tensor:
    """(layers, n, d) float64 with a non-flat spectrum and a nonzero mean, like hidden states."""
    generator = torch.Generator().manual_seed(seed)
    Z = torch.randn(layers, n, d, generator=generator, dtype=torch.float64)
    if spread:
        Z = Z * torch.logspace(0, -1.5, d, dtype=torch.float64) + 3.0
    return Z


def random_rotation(d: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return Q


def padded(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (layers, T_i, D) -> zero-padded (layers, B, T, D) and lengths (B,)."""
    layers, _, d = prompts[0].shape
    t_max = max(p.shape[1] for p in prompts)
    out = torch.zeros(layers, len(prompts), t_max, d, dtype=prompts[0].dtype)
    for b, p in enumerate(prompts):
        out[:, b, : p.shape[1]] = p
    return out, torch.tensor([p.shape[1] for p in prompts])


# ---------------------------------------------------------------------------------------------
# values against the references


@pytest.mark.numeric
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("n", "d"), [(12, 20), (30, 8)])  # Gram side and covariance side
@pytest.mark.parametrize("normalization", F.NORMALIZATIONS)
def test_matrix_entropy_matches_reference(alpha, n, d, normalization):
    Z = random_stack(3, n, d)
    got = F.matrix_entropy(Z, alpha, normalization)
    expected = [ref_matrix_entropy(layer.numpy(), alpha, normalization) for layer in Z]
    assert got.dtype == torch.float64 and got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-8)


@pytest.mark.numeric
@pytest.mark.parametrize("alpha", ALPHAS)
def test_matrix_entropy_without_row_normalization(alpha):
    Z = random_stack(2, 10, 6, seed=3)
    got = F.matrix_entropy(Z, alpha, "raw", normalize_rows=False)
    expected = [ref_matrix_entropy(layer.numpy(), alpha, normalize=False) for layer in Z]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-8)


@pytest.mark.numeric
@pytest.mark.parametrize(("n", "d"), [(12, 20), (30, 8)])
def test_effective_rank_matches_reference(n, d):
    Z = random_stack(3, n, d, seed=5)
    np.testing.assert_allclose(
        F.effective_rank(Z).numpy(), [ref_effective_rank(layer.numpy()) for layer in Z], rtol=1e-8
    )
    np.testing.assert_allclose(
        F.effective_rank(Z, normalize_rows=False).numpy(),
        [ref_effective_rank(layer.numpy(), normalize=False) for layer in Z],
        rtol=1e-8,
    )


@pytest.mark.numeric
@pytest.mark.parametrize("alpha", ALPHAS)
def test_prompt_and_dataset_entropy_match_reference(alpha):
    prompts = [random_stack(2, t, 7, seed=t) for t in (5, 9, 3, 12)]
    tokens, lengths = padded(prompts)
    result = F.prompt_entropy(tokens, lengths, alpha, "maxEntropy")
    expected = np.array([[ref_matrix_entropy(p[layer].numpy(), alpha, "maxEntropy") for p in prompts] for layer in range(2)])
    np.testing.assert_allclose(result.per_prompt.numpy(), expected, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.mean.numpy(), expected.mean(axis=1), rtol=1e-8)
    assert result.n_used.tolist() == [4, 4] and result.n_skipped.tolist() == [0, 0]

    pooled = random_stack(2, 15, 6, seed=9)
    np.testing.assert_allclose(
        F.dataset_entropy(pooled, alpha, "logNlogD").numpy(),
        [ref_matrix_entropy(p.numpy(), alpha, "logNlogD") for p in pooled],
        rtol=1e-8,
    )


@pytest.mark.numeric
@pytest.mark.parametrize("abs_cos", [False, True])
def test_curvature_matches_reference(abs_cos):
    prompts = [random_stack(3, t, 6, seed=t, spread=False) for t in (4, 8, 2, 6)]
    tokens, lengths = padded(prompts)
    result = F.curvature(tokens, lengths, abs_cos=abs_cos)
    expected = np.array([[ref_curvature(p[layer].numpy(), abs_cos) for p in prompts] for layer in range(3)])
    np.testing.assert_allclose(result.per_prompt.numpy(), expected, rtol=1e-10, atol=1e-12)  # NaN == NaN
    np.testing.assert_allclose(result.mean.numpy(), np.nanmean(expected, axis=1), rtol=1e-10)
    assert result.n_used.tolist() == [3, 3, 3] and result.n_skipped.tolist() == [1, 1, 1]


@pytest.mark.numeric
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_infonce_and_ntxent_match_reference(tau):
    za = random_stack(2, 9, 5, seed=1)
    zb = za + 0.3 * random_stack(2, 9, 5, seed=2, spread=False)
    result = F.infonce(za, zb, tau)
    expected = np.array([ref_infonce(a.numpy(), b.numpy(), tau) for a, b in zip(za, zb, strict=True)])
    np.testing.assert_allclose(result.loss.numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(result.bound.numpy(), math.log(9) - expected, rtol=1e-10)
    np.testing.assert_allclose(result.normalized.numpy(), 1 - expected / math.log(9), rtol=1e-10)
    ntxent = F.infonce(za, zb, tau, "ntxent")
    expected = np.array([ref_ntxent(a.numpy(), b.numpy(), tau) for a, b in zip(za, zb, strict=True)])
    np.testing.assert_allclose(ntxent.loss.numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(ntxent.bound.numpy(), math.log(17) - expected, rtol=1e-10)


@pytest.mark.numeric
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("n", "d"), [(6, 10), (14, 5)])  # n < d and n > d sides
def test_lidar_matches_reference(alpha, n, d):
    generator = torch.Generator().manual_seed(4)
    centers = torch.randn(2, n, 1, d, generator=generator, dtype=torch.float64)
    views = centers + 0.5 * torch.randn(2, n, 4, d, generator=generator, dtype=torch.float64)
    result = F.lidar(views, alpha, "logN")
    raw = np.array([ref_lidar_entropy(v.numpy(), alpha) for v in views])
    np.testing.assert_allclose(result.entropy.numpy(), raw / math.log(n), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.lidar.numpy(), np.exp(raw), rtol=1e-8)


@pytest.mark.numeric
@pytest.mark.parametrize("alpha", ALPHAS)
def test_dime_matches_reference(alpha):
    za = random_stack(2, 10, 6, seed=7)
    zb = za + 0.5 * random_stack(2, 10, 6, seed=8, spread=False)
    got = F.dime(za, zb, n_permutations=4, seed=3, alpha=alpha, normalization="raw")
    expected = [ref_dime(a.numpy(), b.numpy(), alpha, 4, 3) for a, b in zip(za, zb, strict=True)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-10)
    maxent = F.dime(za, zb, n_permutations=4, seed=3, alpha=alpha)
    np.testing.assert_allclose(maxent.numpy(), np.array(expected) / math.log(6), rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# identities


@pytest.mark.numeric
@pytest.mark.parametrize("alpha", ALPHAS)
def test_orthonormal_rows_have_maximal_entropy(alpha):
    Q = random_rotation(16)[:, :10].T.contiguous()  # 10 orthonormal rows in R^16
    assert F.matrix_entropy(Q, alpha, "raw", normalize_rows=False).item() == pytest.approx(math.log(10), abs=1e-10)
    assert F.matrix_entropy(Q, alpha, "maxEntropy", normalize_rows=False).item() == pytest.approx(1.0, abs=1e-10)
    # Centering an orthonormal set leaves N - 1 equal eigenvalues (Gram = I - 11^T / N).
    assert F.matrix_entropy(Q, alpha, "raw").item() == pytest.approx(math.log(9), abs=1e-10)


@pytest.mark.numeric
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("normalize_rows", [True, False])
def test_rank_one_has_zero_entropy(alpha, normalize_rows):
    u = torch.linspace(1.0, 3.0, 12, dtype=torch.float64)
    Z = torch.outer(u, torch.randn(20, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    value = F.matrix_entropy(Z, alpha, "raw", normalize_rows=normalize_rows).item()
    assert value == pytest.approx(0.0, abs=1e-12) and math.copysign(1.0, value) == 1.0
    assert F.effective_rank(Z, normalize_rows=normalize_rows).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.numeric
@pytest.mark.parametrize("alpha", ALPHAS)
def test_gram_and_covariance_sides_agree(alpha):
    for n, d in [(8, 20), (25, 6)]:
        Z = random_stack(2, n, d, seed=n)
        gram = F.matrix_entropy(Z, alpha, "raw", side="gram")
        covariance = F.matrix_entropy(Z, alpha, "raw", side="covariance")
        torch.testing.assert_close(gram, covariance, rtol=1e-10, atol=1e-12)
    lam_gram = F.gram_eigenvalues(Z, side="gram")  # (2, 25), 19 zeros
    lam_cov = F.gram_eigenvalues(Z, side="covariance")  # (2, 6)
    torch.testing.assert_close(lam_gram[:, -6:], lam_cov, rtol=1e-9, atol=1e-9)
    assert F.gram_eigenvalues(Z).shape == (2, 6)


def test_clamp_gram_is_off_by_default_and_changes_the_value():
    Z = random_stack(2, 10, 30, seed=2)
    assert torch.equal(F.matrix_entropy(Z), F.matrix_entropy(Z, clamp_gram=False))  # one computation: exact
    assert not torch.allclose(F.matrix_entropy(Z), F.matrix_entropy(Z, clamp_gram=True))


@pytest.mark.numeric
def test_alpha_two_frobenius_equals_eigenvalue_path():
    for n, d in [(9, 14), (20, 5)]:
        Z = random_stack(3, n, d, seed=d)
        frobenius = F.matrix_entropy(Z, 2.0, "raw")
        eigen = F.entropy_from_eigenvalues(F.gram_eigenvalues(F.normalize(Z)), 2.0)
        torch.testing.assert_close(frobenius, eigen, rtol=1e-10, atol=1e-12)


@pytest.mark.numeric
def test_alpha_near_one_approaches_shannon():
    Z = random_stack(2, 10, 8)
    torch.testing.assert_close(F.matrix_entropy(Z, 1.0 + 1e-7), F.matrix_entropy(Z, 1.0), rtol=1e-5, atol=1e-6)


@pytest.mark.numeric
def test_effective_rank_is_at_least_exp_shannon_entropy():
    for seed in range(5):
        for n, d in [(10, 40), (40, 10), (16, 16)]:
            Z = random_stack(4, n, d, seed=seed)
            effective, entropic = F.effective_rank(Z), F.entropy_rank(Z)
            assert bool((effective >= entropic - 1e-12).all()), (effective, entropic)
            assert bool((entropic >= 1.0).all()) and bool((effective <= min(n, d) + 1e-9).all())
    # Equality for a flat spectrum.
    Q = random_rotation(12)[:, :5].T
    torch.testing.assert_close(
        F.effective_rank(Q, normalize_rows=False), F.entropy_rank(Q, normalize_rows=False), rtol=1e-12, atol=0
    )


# ---------------------------------------------------------------------------------------------
# invariances


@pytest.mark.numeric
def test_entropies_are_invariant_to_row_permutation():
    Z = random_stack(2, 15, 9, seed=11)
    perm = torch.randperm(15, generator=torch.Generator().manual_seed(0))
    for alpha in ALPHAS:
        torch.testing.assert_close(F.matrix_entropy(Z[:, perm], alpha), F.matrix_entropy(Z, alpha), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(F.effective_rank(Z[:, perm]), F.effective_rank(Z), rtol=1e-10, atol=0)
    tokens = Z.unsqueeze(1)  # one prompt of 15 tokens: token order does not matter for entropy
    torch.testing.assert_close(F.prompt_entropy(tokens[:, :, perm]).mean, F.prompt_entropy(tokens).mean)


@pytest.mark.numeric
def test_all_metrics_are_invariant_to_feature_rotation():
    d = 7
    Q = random_rotation(d, seed=3)
    Z = random_stack(2, 11, d, seed=1)
    zb = Z + 0.4 * random_stack(2, 11, d, seed=2, spread=False)
    views = Z.unsqueeze(2) + 0.3 * random_stack(2, 11 * 4, d, seed=5, spread=False).reshape(2, 11, 4, d)
    tokens, lengths = padded([random_stack(2, t, d, seed=t) for t in (4, 7, 5)])

    def same(a, b):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)

    for alpha in ALPHAS:
        same(F.matrix_entropy(Z @ Q, alpha), F.matrix_entropy(Z, alpha))
        same(F.lidar(views @ Q, alpha).entropy, F.lidar(views, alpha).entropy)
        same(F.dime(Z @ Q, zb @ Q, alpha=alpha), F.dime(Z, zb, alpha=alpha))
    same(F.effective_rank(Z @ Q), F.effective_rank(Z))
    same(F.infonce(Z @ Q, zb @ Q).loss, F.infonce(Z, zb).loss)
    same(F.infonce(Z @ Q, zb @ Q, variant="ntxent").loss, F.infonce(Z, zb, variant="ntxent").loss)
    same(F.prompt_entropy(tokens @ Q, lengths).per_prompt, F.prompt_entropy(tokens, lengths).per_prompt)
    same(F.curvature(tokens @ Q, lengths).per_prompt, F.curvature(tokens, lengths).per_prompt)


# ---------------------------------------------------------------------------------------------
# behaviour


def test_dime_positive_for_identical_views_and_near_zero_for_independent():
    Z = random_stack(3, 64, 32, seed=0)
    identical = F.dime(Z, Z.clone())
    assert bool((identical > 0.05).all()), identical
    independent = F.dime(Z, random_stack(3, 64, 32, seed=99))
    assert bool((independent.abs() < 0.02).all()), independent
    assert bool((identical > 5 * independent.abs()).all())


def test_dime_is_seeded_and_legacy_covariance_is_an_option():
    za = random_stack(2, 20, 6, seed=1)
    zb = za + 0.5 * random_stack(2, 20, 6, seed=2, spread=False)
    assert torch.equal(F.dime(za, zb, seed=5), F.dime(za, zb, seed=5))  # the same call again: exact
    assert not torch.equal(F.dime(za, zb, seed=5), F.dime(za, zb, seed=6))
    legacy = F.dime(za, zb, legacy_covariance=True)  # n > d: d x d covariances, a different value
    assert legacy.shape == (2,) and not torch.allclose(legacy, F.dime(za, zb))
    small = za[:, :5]  # n <= d: legacy falls back to the n x n Grams
    assert torch.equal(F.dime(small, zb[:, :5], legacy_covariance=True), F.dime(small, zb[:, :5]))  # one path: exact


@pytest.mark.numeric
@pytest.mark.parametrize(("n", "block_size", "sizes"), [(30, 10, [10, 10, 10]), (23, 10, [12, 11]),
                                                      (44, 8, [9, 9, 9, 9, 8])])
def test_blocked_dime_is_the_mean_of_dime_on_seeded_blocks(n, block_size, sizes):
    """The size-free form: the prompts in the seed's random order, cut into n // block_size blocks of near-equal
    sizes (the first n mod k one larger), DiME of each normalized with its own size, then the mean."""
    za = random_stack(2, n, 16, seed=11)  # d above every block's size: the normalizer log(size) differs per size
    zb = za + 0.5 * random_stack(2, n, 16, seed=12, spread=False)
    got = F.dime(za, zb, n_permutations=3, seed=4, block_size=block_size)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(4)).numpy()
    blocks = np.array_split(order, n // block_size)
    assert [len(rows) for rows in blocks] == sorted(sizes, reverse=True)
    expected = [np.mean([ref_dime(a.numpy()[rows], b.numpy()[rows], 1.0, 3, 4) / math.log(min(len(rows), 16))
                         for rows in blocks]) for a, b in zip(za, zb, strict=True)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-10)


@pytest.mark.numeric
def test_blocked_lidar_is_the_mean_of_lidar_on_seeded_blocks():
    """LiDAR's size-free form, as DiME's: 23 prompts in blocks of 5 -> 4 blocks of 6, 6, 6 and 5, in the seed's order."""
    generator = torch.Generator().manual_seed(6)
    centers = torch.randn(2, 23, 1, 12, generator=generator, dtype=torch.float64)
    views = centers + 0.5 * torch.randn(2, 23, 3, 12, generator=generator, dtype=torch.float64)
    got = F.lidar(views, block_size=5, seed=2)
    blocks = np.array_split(torch.randperm(23, generator=torch.Generator().manual_seed(2)).numpy(), 4)
    assert [len(rows) for rows in blocks] == [6, 6, 6, 5]
    raw = np.array([[ref_lidar_entropy(v.numpy()[rows], 1.0) for rows in blocks] for v in views])  # (2, blocks)
    sizes = np.array([len(rows) for rows in blocks])
    np.testing.assert_allclose(got.entropy.numpy(), (raw / np.log(sizes)).mean(axis=1), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got.lidar.numpy(), np.exp(raw).mean(axis=1), rtol=1e-8)
    assert torch.equal(F.lidar(views, block_size=12).entropy, F.lidar(views).entropy)  # 23 // 12 = 1 block: plain
    with pytest.raises(LayerscopeError, match="LiDAR's block_size must be at least 2, got 0"):
        F.lidar(views, block_size=0)


def test_blocked_dime_with_one_block_is_dime_and_a_block_needs_two_prompts():
    za = random_stack(2, 15, 6, seed=1)
    zb = za + 0.5 * random_stack(2, 15, 6, seed=2, spread=False)
    assert torch.equal(F.dime(za, zb, block_size=8), F.dime(za, zb))  # 15 // 8 = 1 block: the same call
    assert torch.equal(F.dime(za, zb, block_size=100), F.dime(za, zb))
    assert not torch.allclose(F.dime(za, zb, block_size=7), F.dime(za, zb))  # two blocks of 8 and 7
    with pytest.raises(LayerscopeError, match="DiME's block_size must be at least 2, got 1"):
        F.dime(za, zb, block_size=1)


@pytest.mark.numeric
def test_dime_chunking_does_not_change_values(monkeypatch):
    za = random_stack(5, 12, 6, seed=1)
    zb = za + 0.5 * random_stack(5, 12, 6, seed=2, spread=False)
    whole = F.dime(za, zb)
    views = za.unsqueeze(2) + random_stack(5, 12 * 3, 6, seed=3).reshape(5, 12, 3, 6)
    lidar_whole = F.lidar(views).entropy
    monkeypatch.setattr(F, "MAX_CHUNK_BYTES", 1)  # one leading index per chunk, one matrix per call
    torch.testing.assert_close(F.dime(za, zb), whole, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(F.lidar(views).entropy, lidar_whole, rtol=1e-12, atol=1e-14)


@pytest.mark.numeric
def test_curvature_straight_line_and_back_and_forth():
    direction = torch.randn(8, dtype=torch.float64)
    start = torch.randn(8, dtype=torch.float64)
    positions = torch.tensor([0.0, 0.5, 2.0, 2.1, 5.0, 9.0], dtype=torch.float64)  # uneven steps forward
    line = (start + positions[:, None] * direction).reshape(1, 1, 6, 8)
    assert F.curvature(line).mean.item() == pytest.approx(0.0, abs=1e-6)
    signs = torch.tensor([1.0, -1.0] * 3, dtype=torch.float64)
    zigzag = (start + signs[:, None] * direction).reshape(1, 1, 6, 8)
    assert F.curvature(zigzag).mean.item() == pytest.approx(math.pi, abs=1e-6)
    assert F.curvature(zigzag, abs_cos=True).mean.item() == pytest.approx(0.0, abs=1e-6)
    right_angles = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    assert F.curvature(right_angles.reshape(1, 1, 4, 2)).mean.item() == pytest.approx(math.pi / 2)


@pytest.mark.numeric
def test_stacked_layers_equal_a_per_layer_loop():
    Z = random_stack(4, 10, 6, seed=2)
    zb = Z + 0.3 * random_stack(4, 10, 6, seed=3, spread=False)
    views = Z.unsqueeze(2) + random_stack(4, 30, 6, seed=4).reshape(4, 10, 3, 6)
    for function, args in [
        (F.matrix_entropy, (Z,)),
        (F.effective_rank, (Z,)),
        (lambda a, b: F.infonce(a, b).loss, (Z, zb)),
        (F.dime, (Z, zb)),
        (lambda v: F.lidar(v).entropy, (views,)),
    ]:
        stacked = function(*args)
        looped = torch.stack([function(*(a[layer] for a in args)) for layer in range(4)])
        torch.testing.assert_close(stacked, looped, rtol=1e-10, atol=1e-12)
    # Extra leading axes are batched too: (models, layers, n, d).
    torch.testing.assert_close(F.matrix_entropy(Z.reshape(2, 2, 10, 6)), F.matrix_entropy(Z).reshape(2, 2))


@pytest.mark.numeric
def test_low_precision_inputs_are_computed_in_float64():
    Z = random_stack(2, 10, 6).to(torch.bfloat16)
    got = F.matrix_entropy(Z)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, F.matrix_entropy(Z.to(torch.float64)))


# ---------------------------------------------------------------------------------------------
# degenerate inputs


def test_normalize_keeps_zero_rows_zero():
    Z = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    assert torch.equal(F.normalize(Z), torch.zeros_like(Z))  # every row equals the mean (of equal rows: exact)
    Z = torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 2.0], [0.1, 0.2, 0.3], [-3.0, 0.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([True, True, True, False])
    out = F.normalize(Z, mask)
    assert torch.equal(out[3], torch.zeros(3, dtype=torch.float64))  # padded row
    torch.testing.assert_close(torch.linalg.vector_norm(out[:3], dim=-1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(out[:3], F.normalize(Z[:3]))


def test_identical_rows_give_zero_entropy_not_nan():
    Z = torch.ones(2, 5, 4, dtype=torch.float64)
    for alpha in ALPHAS:
        assert F.matrix_entropy(Z, alpha).tolist() == [0.0, 0.0]
    assert F.effective_rank(Z).tolist() == [1.0, 1.0]


@pytest.mark.numeric
def test_zero_rows_add_nothing_without_row_normalization():
    Z = random_stack(2, 6, 9, seed=1)
    with_zeros = torch.cat([Z, torch.zeros(2, 3, 9, dtype=torch.float64)], dim=1)
    for alpha in ALPHAS:
        torch.testing.assert_close(
            F.matrix_entropy(with_zeros, alpha, "raw", normalize_rows=False),
            F.matrix_entropy(Z, alpha, "raw", normalize_rows=False),
        )


def test_single_row_and_single_prompt():
    one = torch.randn(3, 1, 5, dtype=torch.float64)
    assert F.matrix_entropy(one, normalization="raw").tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(LayerscopeError, match="log 1 = 0"):
        F.matrix_entropy(one)  # maxEntropy divides by log(min(1, 5)) = 0
    with pytest.raises(LayerscopeError, match="at least 2 prompts"):
        F.dataset_entropy(one)
    with pytest.raises(LayerscopeError, match="at least 2 prompts"):
        F.infonce(one, one)
    with pytest.raises(LayerscopeError, match="at least 2 prompts"):
        F.dime(one, one)
    with pytest.raises(LayerscopeError, match="at least 2 prompts and 2 views"):
        F.lidar(torch.randn(2, 1, 4, 5))
    with pytest.raises(LayerscopeError, match="at least 2 prompts and 2 views"):
        F.lidar(torch.randn(2, 6, 1, 5))


def test_short_prompts_are_skipped_and_counted():
    tokens, lengths = padded([random_stack(2, t, 5, seed=t) for t in (1, 2, 3, 6)])
    entropy = F.prompt_entropy(tokens, lengths)
    assert torch.isnan(entropy.per_prompt[:, 0]).all()  # 1 token: skipped
    assert entropy.per_prompt[:, 1].tolist() == [0.0, 0.0]  # 2 tokens: opposite after centering, rank one
    assert entropy.n_used.tolist() == [3, 3] and entropy.n_skipped.tolist() == [1, 1]
    assert not torch.isnan(entropy.mean).any()
    curv = F.curvature(tokens, lengths)
    assert torch.isnan(curv.per_prompt[:, :2]).all() and not torch.isnan(curv.per_prompt[:, 2:]).any()
    assert curv.n_used.tolist() == [2, 2] and curv.n_skipped.tolist() == [2, 2]
    zero_tokens = F.prompt_entropy(tokens, torch.tensor([0, 0, 1, 1]))
    assert zero_tokens.n_used.tolist() == [0, 0] and torch.isnan(zero_tokens.mean).all()  # counted, not silent


@pytest.mark.numeric
def test_repeated_tokens_leave_out_zero_steps():
    a, b, c = (torch.randn(4, dtype=torch.float64) for _ in range(3))
    path = torch.stack([a, b, b, c]).reshape(1, 1, 4, 4)  # steps: b-a, 0, c-b
    result = F.curvature(path)
    assert result.n_used.item() == 0 and result.n_skipped.item() == 1  # both pairs contain the zero step
    path = torch.stack([a, b, b, c, a]).reshape(1, 1, 5, 4)
    result = F.curvature(path)  # steps: b-a, 0, c-b, a-c: only the last pair counts
    assert result.n_used.item() == 1
    assert result.mean.item() == pytest.approx(ref_curvature(path[0, 0].numpy()))


def test_nan_and_inf_inputs_raise_naming_the_layer():
    Z = random_stack(4, 6, 5)
    Z[2, 1, 3] = math.nan
    with pytest.raises(LayerscopeError, match="NaN or inf values at leading index 2"):
        F.matrix_entropy(Z)
    Z[2, 1, 3] = math.inf
    for call in (
        lambda: F.dataset_entropy(Z),
        lambda: F.effective_rank(Z),
        lambda: F.infonce(Z, Z),
        lambda: F.dime(Z, Z),
        lambda: F.prompt_entropy(Z.unsqueeze(1)),
        lambda: F.curvature(Z.unsqueeze(1)),
        lambda: F.lidar(Z.reshape(4, 3, 2, 5)),
    ):
        with pytest.raises(LayerscopeError, match="NaN or inf"):
            call()


def test_bad_options_raise_clear_errors():
    Z = random_stack(1, 5, 4)
    with pytest.raises(LayerscopeError, match="did you mean 'maxEntropy'"):
        F.matrix_entropy(Z, normalization="maxentropy")
    with pytest.raises(LayerscopeError, match="alpha"):
        F.matrix_entropy(Z, alpha=0)
    with pytest.raises(LayerscopeError, match="lengths"):
        F.prompt_entropy(Z.unsqueeze(1), torch.tensor([9]))
    with pytest.raises(LayerscopeError, match="same shape"):
        F.dime(Z, Z[:, :4])
    with pytest.raises(LayerscopeError, match="variant"):
        F.infonce(Z, Z, variant="simclr")


@pytest.mark.numeric
def test_numpy_and_torch_eigenvalue_backends_agree(monkeypatch):
    Z = random_stack(2, 40, 30, seed=6)
    matrices = F.normalize(Z) @ F.normalize(Z).mT
    monkeypatch.setattr(F, "NUMPY_EIGVALSH_MIN_SIZE", 8)
    via_numpy = F.eigvalsh(matrices)
    monkeypatch.setattr(F, "NUMPY_EIGVALSH_MIN_SIZE", None)
    torch.testing.assert_close(via_numpy, torch.linalg.eigvalsh(matrices), rtol=1e-10, atol=1e-12)
    assert via_numpy.dtype == torch.float64 and via_numpy.shape == (2, 40)


@pytest.mark.numeric
def test_lidar_scatter_blocks_do_not_change_values(monkeypatch):
    generator = torch.Generator().manual_seed(2)
    views = torch.randn(2, 9, 3, 5, generator=generator, dtype=torch.float64) + torch.randn(2, 9, 1, 5, generator=generator, dtype=torch.float64)
    whole = F.lidar(views).entropy
    monkeypatch.setattr(F, "_SCATTER_BLOCK_BYTES", 1)  # one prompt per block
    torch.testing.assert_close(F.lidar(views).entropy, whole, rtol=1e-12, atol=1e-14)
    expected = [ref_lidar_entropy(v.numpy(), 1.0) / math.log(5) for v in views]
    np.testing.assert_allclose(whole.numpy(), expected, rtol=1e-8)


def ref_clamped_prompt_entropy(tokens: np.ndarray) -> float:
    """The authors' clamped entropy of one unpadded prompt (T, D), from the formula in float64:
    normalize, take the smaller of Z Z^T (T <= D) and Z^T Z, clamp negative entries to 0, then S_1."""
    Z = tokens - tokens.mean(axis=0)
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    K = Z @ Z.T if Z.shape[0] <= Z.shape[1] else Z.T @ Z
    lam = np.linalg.eigvalsh(np.maximum(K, 0.0))
    lam = lam[lam > 1e-12 * lam.max()]
    p = lam / lam.sum()
    return float(-(p * np.log(p)).sum())


@pytest.mark.numeric
def test_clamped_prompt_entropy_takes_each_prompts_own_gram_side_whatever_the_padding():
    generator = torch.Generator().manual_seed(21)
    d = 8
    short = torch.randn(2, 6, d, dtype=torch.float64, generator=generator).cumsum(dim=1)  # 6 <= d tokens
    long = torch.randn(2, 13, d, dtype=torch.float64, generator=generator).cumsum(dim=1)  # 13 > d tokens
    expected_short = [ref_clamped_prompt_entropy(layer.numpy()) for layer in short]
    expected_long = [ref_clamped_prompt_entropy(layer.numpy()) for layer in long]
    for padded_length in (6, 8, 9, 13, 20):  # up to d, just past d, and far past it
        tokens = torch.zeros(2, 3, padded_length, d, dtype=torch.float64)
        tokens[:, 0, :6] = short
        tokens[:, 2, :4] = short[:, :4]
        lengths = [6, 0, 4]
        if padded_length >= 13:
            tokens[:, 1, :13] = long
            lengths[1] = 13
        values = F.prompt_entropy_values(tokens, torch.tensor(lengths), clamp_gram=True)  # (layers, prompts)
        np.testing.assert_allclose(values[:, 0].numpy(), expected_short, rtol=1e-12, err_msg=f"T = {padded_length}")
        expected_prefix = [ref_clamped_prompt_entropy(layer[:4].numpy()) for layer in short]
        np.testing.assert_allclose(values[:, 2].numpy(), expected_prefix, rtol=1e-12)
        if padded_length >= 13:
            np.testing.assert_allclose(values[:, 1].numpy(), expected_long, rtol=1e-12)
    # the clamp does change the value here, so the test can tell the two sides apart
    covariance_side = F.matrix_entropy(short, 1.0, "raw", side="covariance", clamp_gram=True)
    assert not np.allclose(covariance_side.numpy(), expected_short, rtol=1e-6)


@pytest.mark.numeric
def test_read_only_arrays_are_read_silently_and_equal_to_a_copy(tmp_path):
    """The embedding cache is memory-mapped read-only; a metric given it must not print torch's
    "non-writable array" warning. Torch warns once per process, so the check runs in a fresh one."""
    import subprocess
    import sys
    import textwrap

    pooled = np.random.default_rng(3).normal(size=(2, 12, 5))
    np.save(tmp_path / "pooled.npy", pooled)
    code = textwrap.dedent(f"""
        import warnings
        import numpy as np
        from layerscope.metrics import functional as F
        cached = np.load({str(tmp_path / "pooled.npy")!r}, mmap_mode="r")
        assert not cached.flags.writeable
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value = F.dataset_entropy(cached, 1.0, "maxEntropy")
            views = F.infonce(cached[0], cached[1], tau=0.1).loss
        print(repr(value.tolist()), repr(float(views)), sep="|")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    value, views = (eval(part) for part in done.stdout.strip().split("|"))  # noqa: S307 - our own repr output
    np.testing.assert_allclose(value, [ref_matrix_entropy(layer, 1.0, "maxEntropy") for layer in pooled], rtol=1e-8)
    np.testing.assert_allclose(views, ref_infonce(pooled[0], pooled[1], 0.1), rtol=1e-8)


def test_the_ranks_and_the_dataset_entropy_share_one_spectrum_and_it_is_never_stale(monkeypatch):
    calls = []
    real = F.eigvalsh
    monkeypatch.setattr(F, "eigvalsh", lambda matrix: calls.append(matrix.shape) or real(matrix))
    rng = np.random.default_rng(0)
    Z = torch.from_numpy(rng.standard_normal((3, 40, 12)))  # (layers, n, d)
    first = (F.dataset_entropy(Z), F.entropy_rank(Z), F.effective_rank(Z))
    assert len(calls) == 1  # one decomposition serves the three metrics of the normalized rows
    F.effective_rank(Z, normalize_rows=False)  # RankMe: the raw rows, another spectrum
    assert len(calls) == 2
    monkeypatch.setattr(F, "EIGVALSH_BACKEND", "lapack")  # another solver asked: computed again, not reused
    F.entropy_rank(Z)
    assert len(calls) == 3
    monkeypatch.setattr(F, "EIGVALSH_BACKEND", "auto")
    # the shared values are those of a fresh computation on an equal tensor (another object): bit for bit,
    # as the operations are the same
    fresh = Z.clone()
    again = (F.dataset_entropy(fresh), F.entropy_rank(fresh), F.effective_rank(fresh))
    for shared, computed in zip(first, again, strict=True):
        torch.testing.assert_close(shared, computed, rtol=0, atol=0)
    # an in-place change of the tensor is a new version: its spectrum is computed again
    Z[:, :, 0] = 0.0
    changed = F.dataset_entropy(Z)
    assert len(calls) == 5
    torch.testing.assert_close(changed, F.dataset_entropy(Z.clone()), rtol=0, atol=0)
    assert not torch.equal(changed, first[0])
