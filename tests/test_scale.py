"""Tests of the closed form at scale: ``analyze`` from the top eigenpairs of the data matrix.

:func:`linear_vae.data.moments.top_eigenpairs` gives the top ``m`` eigenpairs of ``S`` and ``tr S``
from the N x N Gram matrix when ``d > N``, and the closed forms take them in place of the full
spectrum (:func:`linear_vae.theory.ppca.spectrum_totals`).  Checked here: the ``"top"`` solver reproduces
the d x d ``"full"`` solver on every key of the JSON report (N < d and N > d, learned and fixed
sigma2, several beta, exact-zero eigenvalues); the closed-form functions give the same numbers
from the full spectrum and from its top plus ``(trace, d)``; the ``"top"`` path never allocates a
d x d array; the CLI runs on a d = 20,000 ``.npy`` and matches an independent Gram-matrix reference.
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from reference import LOG_2PI, ppca_mle

import linear_vae  # noqa: F401
from linear_vae.analysis import analyze
from linear_vae.cli import main
from linear_vae.data import problem as problem_module
from linear_vae.data.moments import compute_moments, eigen_decomposition, top_eigenpairs
from linear_vae.theory.optimum import beta_elbo_optimum, learned_sigma2
from linear_vae.theory.ppca import mll_in_eigenbasis

#: Two float64 routes to the same numbers (eigh of S against syevr of the Gram matrix) agree to
#: ~1e-14 relative on every value built from non-negligible eigenvalues; 1e-9 is the required agreement.
RTOL = 1e-9
#: Round-off zeros of S come out as ~1e-16 lambda_1 either way: compare eigenvalues (and the
#: arrays linear in them) with this absolute floor times lambda_1.
ATOL_EIG = 1e-12

#: Keys whose values are eigenvalues up to a common factor (and compared with the floor above).
EIGENVALUE_KEYS = {"eigenvalues": 1.0, "spectrum": 1.0, "collapse_thresholds": "1/sigma2", "column_norms_sq": 1.0}


def low_rank_data(n, d, rank=5, seed=0, zero_columns=0, noise=1.0):
    """Rank-``rank`` signal with distinct strengths plus isotropic noise, a nonzero mean, and
    ``zero_columns`` constant features (exact-zero eigenvalues of S)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, rank)) * np.linspace(6.0, 2.0, rank)
    X = Z @ rng.standard_normal((rank, d)) / np.sqrt(rank) + noise * rng.standard_normal((n, d))
    X += rng.normal(scale=5.0, size=d)
    X[:, :zero_columns] = 3.0
    return X


def assert_reports_match(top, full):
    assert set(top) == set(full)
    lam1 = full["eigenvalues"][0]
    for key, value in full.items():
        if isinstance(value, (bool, int, str)) or value is None:
            assert top[key] == value, key
        elif isinstance(value, float):
            assert top[key] == pytest.approx(value, rel=RTOL), key
        else:
            a, b = np.asarray(top[key], dtype=float), np.asarray(value, dtype=float)
            assert a.shape == b.shape, key
            scale = EIGENVALUE_KEYS.get(key)
            if scale is None:
                atol = 1e-12  # kl_per_dim: 0 for collapsed dimensions on both sides
            else:
                atol = ATOL_EIG * lam1 * (1.0 / full["sigma2"] if scale == "1/sigma2" else 1.0)
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=atol, err_msg=key)


def distinct_nonzero(eigenvalues, count, gap=1e-6):
    """How many leading eigenvalues (of the first ``count``) are nonzero and separated from their
    neighbours by a relative gap > ``gap``: there the eigenvectors are determined up to sign."""
    lam = np.asarray(eigenvalues)
    ok = 0
    for i in range(count):
        neighbours = [lam[j] for j in (i - 1, i + 1) if 0 <= j < len(lam)]
        if lam[i] <= ATOL_EIG * lam[0] or any(abs(lam[i] - v) <= gap * lam[i] for v in neighbours):
            break
        ok += 1
    return ok


# --------------------------------------------------------------------------------------------
# The "top" solver against the d x d "full" solver
# --------------------------------------------------------------------------------------------

CASES = {
    "N<d": dict(n=60, d=400, zero_columns=0),
    "N<d-zero-columns": dict(n=60, d=400, zero_columns=7),
    "N>d": dict(n=400, d=60, zero_columns=0),
    "N>d-zero-columns": dict(n=400, d=60, zero_columns=5),
    "N=d": dict(n=80, d=80, zero_columns=3),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    "beta,sigma2_factor", [(1.0, None), (2.5, None), (0.5, None), (1.0, 0.7), (2.5, 0.3), (0.4, 4.0)]
)
def test_top_solver_matches_full_solver_on_every_report_key(case, beta, sigma2_factor):
    params = CASES[case]
    X = low_rank_data(params["n"], params["d"], zero_columns=params["zero_columns"], seed=len(case))
    K = 4
    full_analysis = analyze(X, K, beta, None, solver="full")
    if sigma2_factor is None:
        sigma2 = None
    else:  # between eigenvalues, so that some dimensions collapse and none sits on a threshold
        lam = full_analysis.problem.spectrum.eigenvalues
        sigma2 = float(np.sqrt(lam[1] * lam[2]) * sigma2_factor)
        full_analysis = analyze(X, K, beta, sigma2, solver="full")
    top_analysis = analyze(X, K, beta, sigma2, solver="top")
    full, top = full_analysis.to_dict(), top_analysis.to_dict()
    assert_reports_match(top, full)
    assert top_analysis.problem.cov is None and full_analysis.problem.cov.shape == (params["d"],) * 2
    np.testing.assert_allclose(top_analysis.problem.mean, full_analysis.problem.mean, rtol=0, atol=1e-13)
    # Eigenvectors: the same canonical signs, where the eigenvalue is nonzero and simple.
    m = len(top_analysis.problem.spectrum.eigenvalues)
    assert m == K + 1 and top_analysis.problem.spectrum.eigenvectors.shape == (params["d"], m)
    r = distinct_nonzero(full_analysis.problem.spectrum.eigenvalues, m)
    assert r >= K
    np.testing.assert_allclose(
        top_analysis.problem.spectrum.eigenvectors[:, :r],
        full_analysis.problem.spectrum.eigenvectors[:, :r],
        rtol=0,
        atol=1e-9,
    )


def test_auto_solver_is_top_iff_d_exceeds_n():
    wide, tall = low_rank_data(30, 31), low_rank_data(31, 31)
    assert analyze(wide, 2).problem.cov is None
    assert analyze(tall, 2).problem.cov is not None
    with pytest.raises(ValueError, match="solver"):
        analyze(wide, 2, solver="lanczos")


@pytest.mark.parametrize("n,d", [(30, 200), (200, 30)])
def test_top_eigenpairs_with_more_pairs_than_the_rank_are_orthonormal_with_zero_eigenvalues(n, d):
    """m > rank(S): the eigenvalues beyond the rank are 0 and their eigenvectors an orthonormal
    basis of the null space (for N < d from the orthonormal completion), as ``eigh`` of S gives."""
    X = low_rank_data(n, d, rank=3, noise=0.0, zero_columns=2, seed=3)  # rank(S) = 3
    m = min(n + 5, d)
    top = top_eigenpairs(X, m)
    full = eigen_decomposition(compute_moments(X).cov)
    lam1 = full.eigenvalues[0]
    np.testing.assert_allclose(top.eigenvalues, full.eigenvalues[:m], rtol=RTOL, atol=ATOL_EIG * lam1)
    assert np.all(top.eigenvalues[3:] <= ATOL_EIG * lam1)
    U = top.eigenvectors
    np.testing.assert_allclose(U.T @ U, np.eye(m), atol=1e-12)
    S_U = compute_moments(X).cov @ U  # S u_i = lambda_i u_i
    np.testing.assert_allclose(S_U, U * top.eigenvalues, atol=1e-10 * lam1)
    assert top.trace == pytest.approx(full.trace, rel=1e-12) and top.dim == d
    # The report with K above the rank (fixed sigma2: a learned one is refused) still matches.
    K = min(n, d) - 1
    sigma2 = 0.1 * float(full.eigenvalues[2])
    assert_reports_match(
        analyze(X, K, 1.0, sigma2, solver="top").to_dict(), analyze(X, K, 1.0, sigma2, solver="full").to_dict()
    )


@pytest.mark.parametrize("solver", ["top", "full"])
def test_learned_sigma2_of_round_off_rank_deficient_data_is_refused_by_both_solvers(solver):
    """Rank-1 data in a generic direction (tail eigenvalues ~1e-16 lambda_1) with K = 1, and data
    of rank N - 1 < K: the learned sigma2 is round-off, refused with the rank error."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((40, 1)) * rng.standard_normal(300) + rng.standard_normal(300)
    with pytest.raises(ValueError, match="rank <= 1"):
        analyze(X, 1, solver=solver)
    Y = low_rank_data(12, 100, seed=5)  # rank(S) <= N - 1 = 11
    with pytest.raises(ValueError, match="rank <= 11"):
        analyze(Y, 11, solver=solver)
    assert analyze(Y, 10, solver=solver).optimum.sigma2 > 0  # rank 11 > K = 10: fine


# --------------------------------------------------------------------------------------------
# The closed forms from the top of the spectrum plus (trace, d)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_closed_forms_from_top_eigenvalues_and_trace_equal_the_full_spectrum_call(beta):
    rng = np.random.default_rng(7)
    lam = np.sort(rng.exponential(size=50) * 10.0 ** rng.uniform(-2, 1, 50))[::-1]
    k = 6
    totals = dict(trace=float(lam.sum()), dim=len(lam))
    for m in (k, k + 1, 20):
        s_full = learned_sigma2(lam, k, beta)
        assert learned_sigma2(lam[:m], k, beta, **totals) == s_full
        for sigma2 in (s_full, 0.5 * lam[2]):
            full, top = beta_elbo_optimum(lam, k, beta, sigma2), beta_elbo_optimum(lam[:m], k, beta, sigma2, **totals)
            assert top.elbo == full.elbo and top.mll == full.mll
            np.testing.assert_array_equal(top.column_variances, full.column_variances)
            assert mll_in_eigenbasis(lam[:m], full.column_variances, sigma2, **totals) == full.mll
    # The MLL in the trace form equals the sum over all d eigenvalues written out.
    cv = np.maximum(lam[:k] - 0.3, 0.0)
    c = np.full_like(lam, 0.3)
    c[:k] += cv
    assert mll_in_eigenbasis(lam[:k], cv, 0.3, **totals) == pytest.approx(
        -0.5 * (len(lam) * LOG_2PI + np.log(c).sum() + (lam / c).sum()), rel=1e-13
    )
    with pytest.raises(ValueError, match="trace and dim"):
        beta_elbo_optimum(lam[:k], k, beta, 1.0, trace=1.0)
    with pytest.raises(ValueError, match="eigenvalues given"):
        beta_elbo_optimum(lam[: k - 1], k, beta, 1.0, **totals)


def test_learned_sigma2_rank_error_from_top_eigenvalues():
    """Exactly rank k, and rank k up to round-off (tail ~ 1e-17 lambda_1 in the trace)."""
    lam = np.array([5.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="rank <= 3"):
        learned_sigma2(lam, 3, 1.0, trace=8.0, dim=10_000)
    with pytest.raises(ValueError, match="rank <= 3"):
        learned_sigma2(lam, 3, 1.0, trace=8.0 * (1 + 1e-16), dim=10_000)
    assert learned_sigma2(lam, 3, 1.0, trace=8.0 + 1e-3, dim=10_000) == pytest.approx(1e-3 / 9_997, rel=1e-9)


# --------------------------------------------------------------------------------------------
# No d x d array, and the CLI at d = 20,000
# --------------------------------------------------------------------------------------------

D_BIG, N_SMALL, K_BIG = 20_000, 50, 5


@pytest.fixture(scope="module")
def wide_data():
    return low_rank_data(N_SMALL, D_BIG, seed=11, zero_columns=10)


def test_top_path_never_allocates_a_d_by_d_array(monkeypatch, wide_data):
    """At d = 20,000 one d x d float64 array is 3.2 GB; the top path's numpy allocations peak at a
    few times the 8 MB of X (tracemalloc sees numpy's buffers, LAPACK's workspaces included)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the d x d path was used")

    monkeypatch.setattr(problem_module, "compute_moments", forbidden)
    monkeypatch.setattr(problem_module, "eigen_decomposition", forbidden)
    tracemalloc.start()
    try:
        report = analyze(wide_data, K_BIG).to_dict()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report["d"] == D_BIG and report["n"] == N_SMALL
    assert peak < 10 * wide_data.nbytes, f"peak {peak / 2**20:.1f} MiB"  # 80 MB << 3.2 GB


def gram_reference(X, K):
    """Learned sigma2 at beta = 1, independently: eigvalsh of the centred Gram matrix, and the pPCA
    MLE ``(tr S - sum_{i<=K} lambda_i) / (d - K)`` with its ``MLL*`` (tests/reference.py, from the
    top eigenvalues and the trace)."""
    n, d = X.shape
    Xc = X - X.mean(axis=0)
    gram = Xc @ Xc.T / n
    lam = np.sort(np.linalg.eigvalsh(gram))[::-1]
    trace = float(np.sum(Xc * Xc) / n)
    sigma2, mll = ppca_mle(lam, K, trace=trace, dim=d)
    return lam, trace, sigma2, mll


def test_cli_on_a_wide_npy_matches_a_gram_matrix_reference(capsys, tmp_path, wide_data):
    path = tmp_path / "wide.npy"
    np.save(path, wide_data)
    code = main(["analyze", "--data", str(path), "--latent-dim", str(K_BIG), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    lam, trace, sigma2, mll = gram_reference(wide_data, K_BIG)
    assert report["n"] == N_SMALL and report["d"] == D_BIG and report["sigma2_learned"] is True
    np.testing.assert_allclose(report["eigenvalues"], lam[: K_BIG + 1], rtol=RTOL)
    assert report["total_variance"] == pytest.approx(trace, rel=1e-12)
    assert report["sigma2"] == pytest.approx(sigma2, rel=RTOL)
    assert report["mll"] == pytest.approx(mll, rel=RTOL)
    assert report["elbo"] == pytest.approx(mll, rel=1e-10)  # beta = 1: the bound is tight
    assert report["active_dims"] == K_BIG
    # The text table runs too (same numbers, one line per quantity).
    assert main(["analyze", "--data", str(path), "--latent-dim", str(K_BIG)]) == 0
    assert f"d = {D_BIG}" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# Claim: train and verify work on wide data (d = 20,000 > N = 500) without a d x d matrix, and
# land on the closed form computed from the Gram matrix.
# --------------------------------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[(2_000, 100), pytest.param((20_000, 500), marks=pytest.mark.slow)],
    ids=["d=2000,N=100", "d=20000,N=500"],
)
def wide_problem(request):
    """Wide data; the d = 20,000 case takes about 40 s per training test, so it is marked slow."""
    from linear_vae.data.problem import Problem

    n, d = request.param[1], request.param[0]
    return Problem.from_data(low_rank_data(n, d, seed=3, zero_columns=10))


def test_wide_problem_is_the_eigenbasis_of_the_data_span(wide_problem):
    """On wide data the problem holds the top N eigenpairs and no covariance; the data lie in
    the span of those eigenvectors (their coordinates reproduce the centred data exactly)."""
    assert wide_problem.wide and wide_problem.cov is None
    assert wide_problem.eigenvectors.shape == (wide_problem.d, wide_problem.n)
    X, mean, eigenvalues = wide_problem.coordinates("eigen")
    centred = wide_problem.dataset.X - wide_problem.mean
    back = (X - mean) @ wide_problem.eigenvectors.T
    np.testing.assert_allclose(back, centred, rtol=0, atol=1e-9 * np.abs(centred).max())
    assert wide_problem.trace == pytest.approx(np.sum(centred**2) / wide_problem.n, rel=1e-12)
    with pytest.raises(ValueError, match="eigenbasis"):
        wide_problem.check_basis("data")
    from linear_vae.data.problem import Problem

    truncated = Problem.from_dataset(wide_problem.dataset, form_covariance=False, eigenpairs=3)
    with pytest.raises(ValueError, match="fewer than the min"):  # 3 eigenvectors cannot hold the data
        truncated.check_basis("eigen")


@pytest.mark.parametrize("learn_sigma2", [False, True], ids=["fixed sigma2", "learned sigma2"])
def test_training_on_wide_data_reaches_the_closed_form_without_a_d_by_d_matrix(monkeypatch, wide_problem, learn_sigma2):
    """Newton in the N-dimensional eigen-coordinates converges and agrees with the closed form
    (whose d enters only as a number) to 1e-6 nats; the d x d path is never taken."""
    from linear_vae.training.train import TrainConfig
    from linear_vae.verification.compare import train_and_compare_zipped

    def forbidden(*args, **kwargs):
        raise AssertionError("the d x d path was used")

    monkeypatch.setattr(problem_module, "compute_moments", forbidden)
    monkeypatch.setattr(problem_module, "eigen_decomposition", forbidden)
    sigma2 = float(np.sqrt(wide_problem.eigenvalues[2] * wide_problem.eigenvalues[3]))
    config = TrainConfig(latent_dim=5, learn_sigma2=learn_sigma2)
    # Learned: it starts at the default, the data's mean variance tr S / d.
    result, [report] = train_and_compare_zipped(wide_problem, config, 1.0, None if learn_sigma2 else sigma2)
    assert result.params.W.shape == (1, wide_problem.d, 5)
    assert report["converged"] and report["verdict"] == "agrees", report
    assert abs(report["gap"]) < 1e-6 and abs(report["decoder_gap"]) < 1e-6
    assert report["active_dims"] == report["predicted_active_dims"]
    assert report["bias_error"] < 1e-9 * np.abs(wide_problem.mean).max()
