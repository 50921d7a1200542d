"""Tests of ``linear-vae analyze`` (:func:`linear_vae.cli.main`) and of the Python API behind it
(:func:`linear_vae.analysis.analyze`).

The reported numbers are checked against an independent numpy computation on data the code
has never seen (random files written to ``tmp_path``): ``np.linalg.eigh`` of
``np.cov(X.T, bias=True)`` and the formulas of docs/theory.md written out here.  Every bad input must
give exit status 2 and one line on stderr starting with ``linear-vae: error:`` (no traceback);
the Python API raises ``ValueError``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference import (
    dense_mll,
    optimal_beta_elbo,
    optimal_decoder,
    optimal_kl_per_dim,
    optimal_learned_sigma2,
    ppca_mle,
)

import linear_vae  # noqa: F401
from linear_vae.analysis import analyze
from linear_vae.cli import main

REPORT_KEYS = {
    "n",
    "d",
    "latent_dim",
    "beta",
    "sigma2",
    "sigma2_learned",
    "eigenvalues",
    "elbo",
    "mll",
    "active_dims",
    "collapse_thresholds",
    "kl_per_dim",
}


# --------------------------------------------------------------------------------------------
# Data and the independent reference
# --------------------------------------------------------------------------------------------


def random_data(seed=0, n=250, d=7):
    """Gaussian-plus-exponential data with a random, non-diagonal covariance and nonzero mean."""
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((d, d)) * rng.uniform(0.2, 2.0, d)
    Z = np.concatenate([rng.standard_normal((n, d - 2)), rng.exponential(size=(n, 2))], axis=1)
    return Z @ L.T + rng.normal(scale=3.0, size=d)


def reference_report(X, K, beta=1.0, sigma2=None):
    """The report, computed independently: numpy ``eigh`` of the 1/N covariance and the formulas
    of docs/theory.md (T2), (T4) in tests/reference.py (the MLL through a dense d x d ``C``)."""
    S = np.cov(X.T, bias=True)  # the 1/N covariance
    lam, U = np.linalg.eigh(S)
    lam, U = np.clip(lam[::-1], 0, None), U[:, ::-1]
    learned = sigma2 is None
    if learned:
        assert beta == 1.0, "the reference only knows the beta = 1 learned sigma2 (pPCA MLE)"
        sigma2 = ppca_mle(lam, K)[0]
    return {
        "n": X.shape[0],
        "d": lam.size,
        "latent_dim": K,
        "beta": beta,
        "sigma2": sigma2,
        "sigma2_learned": learned,
        "eigenvalues": lam,
        "elbo": optimal_beta_elbo(lam, K, beta, sigma2),
        "mll": dense_mll(optimal_decoder(lam, U, K, beta, sigma2), sigma2, S),
        "active_dims": int(np.sum(lam[:K] > beta * sigma2)),
        "collapse_thresholds": lam[:K] / sigma2,
        "kl_per_dim": optimal_kl_per_dim(lam, K, beta, sigma2),
    }


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # exactly one JSON object, on one line
    report = json.loads(lines[0])
    assert isinstance(report, dict)
    return report


def check_against_reference(report, ref, K):
    assert REPORT_KEYS <= set(report)
    for key in ("n", "d", "latent_dim", "active_dims", "sigma2_learned"):
        assert report[key] == ref[key], key
    eig = np.asarray(report["eigenvalues"])
    assert eig.size >= K + 1
    assert np.all(np.diff(eig) <= 0)  # descending
    # Two float64 eigen-solvers of the same 1/N covariance: eigenvalues agree to ~1e-15 * lambda_1
    # absolute; 1e-9 relative (the required agreement) with an absolute floor of 1e-12 * lambda_1.
    np.testing.assert_allclose(eig, ref["eigenvalues"][: eig.size], rtol=1e-9, atol=1e-12 * ref["eigenvalues"][0])
    # Values: 1e-9 relative (O(10) numbers computed by different float64 routes; rounding ~1e-14,
    # the eigenvalue differences above propagate at the same ~1e-15 relative level).
    for key in ("beta", "sigma2", "elbo", "mll"):
        assert report[key] == pytest.approx(ref[key], rel=1e-9), key
    assert len(report["collapse_thresholds"]) == K and len(report["kl_per_dim"]) == K
    np.testing.assert_allclose(report["collapse_thresholds"], ref["collapse_thresholds"], rtol=1e-9)
    np.testing.assert_allclose(report["kl_per_dim"], ref["kl_per_dim"], rtol=1e-9, atol=1e-12)


@pytest.fixture
def npy_data(tmp_path):
    X = random_data(seed=1)
    path = tmp_path / "data.npy"
    np.save(path, X)
    return X, path


@pytest.fixture
def csv_data(tmp_path):
    X = random_data(seed=2, n=180, d=6)
    path = tmp_path / "data.csv"
    # %.18e round-trips float64 exactly; a header line is allowed.
    np.savetxt(path, X, delimiter=",", fmt="%.18e", header=",".join(f"f{i}" for i in range(6)), comments="")
    return X, path


# --------------------------------------------------------------------------------------------
# JSON report against the independent reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [1, 3, 6])
def test_json_report_learned_sigma2_matches_numpy_reference_and_is_tail_mean(capsys, npy_data, K):
    X, path = npy_data
    report = run_json(capsys, "analyze", "--data", path, "--latent-dim", K)
    ref = reference_report(X, K)
    check_against_reference(report, ref, K)
    # Learned sigma2 at beta = 1 is mean(lambda_{K+1..d}) and every dimension is active.
    lam = np.sort(np.linalg.eigvalsh(np.cov(X.T, bias=True)))[::-1]
    assert report["sigma2_learned"] is True
    assert report["sigma2"] == pytest.approx(lam[K:].mean(), rel=1e-9)
    assert report["active_dims"] == K
    # At beta = 1 the bound is tight at the optimum: ELBO = MLL (rounding, 1e-10 relative).
    assert report["elbo"] == pytest.approx(report["mll"], rel=1e-10)


@pytest.mark.parametrize("beta,sigma2_factor", [(1.0, 0.5), (2.5, 0.3), (0.4, 4.0)])
def test_json_report_fixed_sigma2_and_beta_matches_numpy_reference_with_collapse(capsys, csv_data, beta, sigma2_factor):
    X, path = csv_data
    K = 4
    lam = np.sort(np.linalg.eigvalsh(np.cov(X.T, bias=True)))[::-1]
    # sigma2 placed between eigenvalues (geometric mean of lambda_2, lambda_3, scaled) so that some
    # dimensions collapse and none sits on a threshold.
    sigma2 = float(np.sqrt(lam[1] * lam[2]) * sigma2_factor)
    report = run_json(
        capsys, "analyze", "--data", path, "--latent-dim", K, "--beta", repr(beta), "--sigma2", repr(sigma2)
    )
    ref = reference_report(X, K, beta, sigma2)
    check_against_reference(report, ref, K)
    assert report["sigma2_learned"] is False
    # By construction each case collapses at least one of the K = 4 dimensions (3, 2, 1 active).
    assert 1 <= report["active_dims"] < K


def test_json_report_learned_sigma2_with_beta_not_one_is_stationary_formula(capsys, npy_data):
    X, path = npy_data
    K, beta = 4, 2.0
    report = run_json(capsys, "analyze", "--data", path, "--latent-dim", K, "--beta", beta)
    lam = np.sort(np.clip(np.linalg.eigvalsh(np.cov(X.T, bias=True)), 0, None))[::-1]
    m = report["active_dims"]
    # docs/theory.md (T4): sigma2 = sum_{i not active} lambda_i / (d - beta m), with a consistent active set.
    assert report["sigma2"] == pytest.approx(optimal_learned_sigma2(lam, K, beta), rel=1e-9)
    t = beta * report["sigma2"]
    assert m == int(np.sum(lam[:K] > t))
    check_against_reference(report, reference_report(X, K, beta, report["sigma2"]) | {"sigma2_learned": True}, K)


def test_text_mode_prints_a_table_with_the_same_numbers(capsys, npy_data):
    X, path = npy_data
    K = 3
    code, out, err = run_cli(capsys, "analyze", "--data", path, "--latent-dim", K)
    assert code == 0, err
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
    lines = out.strip().splitlines()
    assert len(lines) >= 8
    ref = reference_report(X, K)
    table = {}
    for line in lines:
        name, _, value = re.split(r"(\s{2,})", line.strip(), maxsplit=1)
        table[name] = value
    for row in (
        "latent dimensions K",
        "sigma2",
        "optimal beta-ELBO",
        "MLL at the optimum",
        "active dimensions",
        "collapse thresholds beta*",
        "KL per dimension (nats)",
        "rate",
        "distortion",
        "active units",
    ):
        assert row in table, (row, list(table))
    assert table["latent dimensions K"] == str(K)
    assert table["active dimensions"].startswith(f"{ref['active_dims']} of {K}")
    # Printed with 6 decimals: compare to the reference within half a unit of the last digit.
    elbo_printed = float(table["optimal beta-ELBO"].split()[0])
    assert abs(elbo_printed - ref["elbo"]) <= 5e-7 + 1e-12
    mll_printed = float(table["MLL at the optimum"].split()[0])
    assert abs(mll_printed - ref["mll"]) <= 5e-7 + 1e-12
    assert "learned" in table["sigma2"]


# --------------------------------------------------------------------------------------------
# Bad inputs: exit status 2, one line on stderr, no traceback
# --------------------------------------------------------------------------------------------


def _write_npy(tmp_path, name, X):
    path = tmp_path / name
    np.save(path, np.asarray(X, dtype=np.float64))
    return path


def _bad_cases(tmp_path):
    X = random_data(seed=3, n=40, d=4)
    good = _write_npy(tmp_path, "good.npy", X)
    with_nan = X.copy()
    with_nan[5, 2] = np.nan
    with_inf = X.copy()
    with_inf[7, 1] = np.inf
    rank_one = np.zeros((30, 3))
    rank_one[:, 0] = np.arange(30.0)  # exact rank 1: columns 2, 3 constant -> eigenvalues 0
    rank_one[:, 1:] = 5.0
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3\n4,5,6\n7,8\n")
    bad_idx = tmp_path / "train-images-idx3-ubyte"
    bad_idx.write_bytes(b"\x00\x00\x07\x03" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x02" * 2 + bytes(8))
    k = ["--latent-dim", "2"]
    return {
        "nan-in-data": ["--data", _write_npy(tmp_path, "nan.npy", with_nan), *k],
        "inf-in-data": ["--data", _write_npy(tmp_path, "inf.npy", with_inf), *k],
        "n-1": ["--data", good, "--n", "1", *k],
        "one-row-file": ["--data", _write_npy(tmp_path, "one.npy", X[:1]), *k],
        "one-row-file-fixed-sigma2": ["--data", _write_npy(tmp_path, "one2.npy", X[:1]), *k, "--sigma2", "1"],
        "constant-data": ["--data", _write_npy(tmp_path, "const.npy", np.full((20, 4), 3.0)), *k],
        "constant-data-fixed-sigma2": [
            "--data",
            _write_npy(tmp_path, "const2.npy", np.full((20, 4), 3.0)),
            *k,
            "--sigma2",
            "1",
        ],
        "latent-dim-0": ["--data", good, "--latent-dim", "0"],
        "latent-dim-d-plus-1": ["--data", good, "--latent-dim", "5"],
        "beta-0": ["--data", good, *k, "--beta", "0"],
        "beta-negative": ["--data", good, *k, "--beta", "-1"],
        "sigma2-0": ["--data", good, *k, "--sigma2", "0"],
        "sigma2-nan": ["--data", good, *k, "--sigma2", "nan"],
        "sigma2-inf": ["--data", good, *k, "--sigma2", "inf"],
        "learned-sigma2-zero-rank-le-K": ["--data", _write_npy(tmp_path, "rank1.npy", rank_one), "--latent-dim", "1"],
        "n-larger-than-data": ["--data", good, "--n", "41", *k],
        "missing-file": ["--data", tmp_path / "does-not-exist.npy", *k],
        "ragged-csv": ["--data", ragged, *k],
        "wrong-idx-magic": ["--data", bad_idx, *k],
        "unknown-option": ["--data", good, *k, "--bogus"],
        "latent-dim-not-int": ["--data", good, "--latent-dim", "two"],
    }


BAD_CASE_IDS = [
    "nan-in-data",
    "inf-in-data",
    "n-1",
    "one-row-file",
    "one-row-file-fixed-sigma2",
    "constant-data",
    "constant-data-fixed-sigma2",
    "latent-dim-0",
    "latent-dim-d-plus-1",
    "beta-0",
    "beta-negative",
    "sigma2-0",
    "sigma2-nan",
    "sigma2-inf",
    "learned-sigma2-zero-rank-le-K",
    "n-larger-than-data",
    "missing-file",
    "ragged-csv",
    "wrong-idx-magic",
    "unknown-option",
    "latent-dim-not-int",
]


@pytest.mark.parametrize("case", BAD_CASE_IDS)
def test_bad_input_exits_2_with_one_error_line_and_no_traceback(capsys, tmp_path, case):
    argv = ["analyze", *_bad_cases(tmp_path)[case]]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (case, out, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("linear-vae: error:"), err
    assert len(lines[0]) > len("linear-vae: error: ") + 10  # says something


def test_bad_input_case_list_is_complete(tmp_path):
    assert set(_bad_cases(tmp_path)) == set(BAD_CASE_IDS)


def test_rank_deficient_data_by_round_off_is_refused_when_sigma2_is_learned(capsys, tmp_path):
    """Data of rank 1 <= K = 1 in a generic (rotated) direction: the tail eigenvalues are 0
    mathematically but ~1e-16 after round-off, so the learned sigma2 (their mean) is round-off
    noise and the 'optimal ELBO' is meaningless (grows like d/2 log(1/1e-16)).  It must be refused
    like the exactly-rank-deficient case."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((40, 1)) * rng.standard_normal(3) + rng.standard_normal(3)
    path = _write_npy(tmp_path, "rank1_rotated.npy", X)
    code, out, err = run_cli(capsys, "analyze", "--data", path, "--latent-dim", "1", "--json")
    assert code == 2, out
    assert err.startswith("linear-vae: error:")
    with pytest.raises(ValueError):
        analyze(X, 1)


# --------------------------------------------------------------------------------------------
# The same errors through the Python API
# --------------------------------------------------------------------------------------------


def _api_cases():
    X = random_data(seed=5, n=40, d=4)
    with_nan = X.copy()
    with_nan[3, 0] = np.nan
    with_inf = X.copy()
    with_inf[2, 3] = -np.inf
    rank_one = np.zeros((30, 3))
    rank_one[:, 0] = np.arange(30.0)
    return {
        "nan-learned": (with_nan, dict(latent_dim=2), r"(?i)nan"),
        "nan-fixed-sigma2": (with_nan, dict(latent_dim=2, sigma2=1.0), r"(?i)nan"),
        "inf-fixed-sigma2": (with_inf, dict(latent_dim=2, sigma2=1.0), r"(?i)inf"),
        "one-sample-learned": (X[:1], dict(latent_dim=2), None),
        "one-sample-fixed-sigma2": (X[:1], dict(latent_dim=2, sigma2=1.0), None),
        "constant-learned": (np.full((20, 4), 3.0), dict(latent_dim=2), None),
        "constant-fixed-sigma2": (np.full((20, 4), 3.0), dict(latent_dim=2, sigma2=1.0), None),
        "latent-dim-0": (X, dict(latent_dim=0), None),
        "latent-dim-d-plus-1": (X, dict(latent_dim=5), None),
        "beta-0": (X, dict(latent_dim=2, beta=0.0), None),
        "beta-negative": (X, dict(latent_dim=2, beta=-1.0), None),
        "sigma2-0": (X, dict(latent_dim=2, sigma2=0.0), None),
        "sigma2-nan": (X, dict(latent_dim=2, sigma2=float("nan")), None),
        "sigma2-inf": (X, dict(latent_dim=2, sigma2=float("inf")), None),
        "learned-sigma2-zero-rank-le-K": (rank_one, dict(latent_dim=1), None),
    }


@pytest.mark.parametrize("case", list(_api_cases()))
def test_analyze_api_raises_value_error_with_one_line_message(case):
    X, kwargs, pattern = _api_cases()[case]
    with pytest.raises(ValueError) as info:
        analyze(X, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    if pattern is not None:
        # The message must name the problem (not e.g. LAPACK's "Eigenvalues did not converge").
        assert re.search(pattern, message), message


def test_analyze_api_matches_reference_on_fresh_data():
    X = random_data(seed=6, n=120, d=5)
    result = analyze(X, 2).to_dict()
    check_against_reference(result, reference_report(X, 2), 2)


# --------------------------------------------------------------------------------------------
# The installed console script (the one subprocess test)
# --------------------------------------------------------------------------------------------


def test_installed_console_script_runs_analyze_on_synthetic_data():
    script = Path(sys.executable).with_name("linear-vae")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "linear_vae.cli"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")  # tiny matrices; avoid BLAS thread contention
    out = subprocess.run(
        command + ["analyze", "--data", "synthetic", "--latent-dim", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    # The default synthetic data have the exact 1/N spectrum 8 * 0.75**i, i < 20, n = 2000.
    spectrum = 8.0 * 0.75 ** np.arange(20)
    assert report["n"] == 2000 and report["d"] == 20 and report["latent_dim"] == 3
    # The sample spectrum is exact up to float64 round-off of the whitening (~1e-14 relative).
    np.testing.assert_allclose(report["eigenvalues"], spectrum[: len(report["eigenvalues"])], rtol=1e-9)
    assert report["sigma2_learned"] is True
    assert report["sigma2"] == pytest.approx(spectrum[3:].mean(), rel=1e-9)
    assert report["active_dims"] == 3
    assert report["elbo"] == pytest.approx(report["mll"], rel=1e-10)
