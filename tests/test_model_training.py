"""The linear CVAE and the two-level HVAE trained through the solver interface reach their closed forms
(docs/theory.md (T17.7)).

Claims:

* each model's exact objective (:func:`linear_vae.training.cvae_training.cvae_negative_elbo`,
  :func:`linear_vae.training.hvae_training.hvae_negative_elbo`), evaluated from the moments, equals the
  independent per-row reference of ``tests/reference.py`` at the trained parameters (so the reported
  values are the objective of the model's definition, not of its reduction);
* trained by trust-region Newton from a random start on hard synthetic pairs (near-equal residual
  eigenvalues within 1% of each other and at least 2% from the threshold; a singular ``A``; raw scales;
  ``d_y > N``; no biases), the trained negative beta-ELBO is the closed form's to 1e-6 nats and the
  active counts are exact, with the three-way verdict "agrees";
* the profiled blocks are at their maximisers: the convergence test's block gain is round-off.

Tolerances.  ``GAP_TOL = 1e-6`` nats per datapoint is the issue's and the linear VAE's verify
tolerance; Newton stops at a predicted gain of 1e-8 and converges quadratically, so measured gaps
are round-off (about 1e-14).  Trained values may lie below the optimum only by float64 round-off,
``1e-9 (1 + |ELBO*|)`` (:func:`linear_vae.verification.compare.roundoff`).  The reference objective agrees with
the moment form to 1e-9 relative: both sum the same terms in float64, one over rows and one over
second moments, whose round-off differs at ``1e-16 * E||y||^2 / eta^2`` per term.

Shapes are shared between cases (d_x = 4, d_y = 6 for the CVAE; d_x = 5, d_y = 4, (d1, d2) = (3, 2) for the
HVAE) so that each model compiles its programs once.  MNIST, Fashion-MNIST, both splits and Adam are in
``test_model_training_slow.py`` (``-m slow``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import cvae_objective, hvae_objective

from linear_vae.data.joint_moments import JointMoments
from linear_vae.theory.conditional import cvae_optimum
from linear_vae.verification.compare import GAP_TOL, roundoff
from linear_vae.verification.model_verify import overall_verdict, train_and_compare


def rotation(d, rng):
    return np.linalg.qr(rng.standard_normal((d, d)))[0]


def pairs_with_residual(theta, rng, n=None, x_scale=1.0, y_scale=1.0, d_x=4, singular=False, mean=0.0):
    """Rows ``(X, Y)`` whose residual second moment ``S = B - C^T A^+ C`` has eigenvalues ``theta``
    exactly (n >= d_x + d_y + 1 rows, centred moments): ``Y = X M + E`` with ``E`` orthogonal to ``X``
    and ``E^T E / n = Q diag(theta) Q^T``.  ``singular``: ``x`` has a constant coordinate and a
    duplicated one (``A`` of rank d_x - 2)."""
    d_y = len(theta)
    n = n or 40
    G = rng.standard_normal((n, d_x + d_y))
    G -= G.mean(axis=0)
    Q, _ = np.linalg.qr(G)
    Q *= np.sqrt(n)  # Q^T Q / n = I, columns centred
    X = Q[:, :d_x] * np.linspace(2.0, 0.5, d_x)
    if singular:
        X[:, -1] = 0.0
        X[:, -2] = X[:, 0]
    E = Q[:, d_x:] @ (rotation(d_y, rng) * np.sqrt(theta)).T
    Y = X @ rng.standard_normal((d_x, d_y)) + E
    return x_scale * X + mean, y_scale * Y + mean


def check(report, exact_counts=True):
    """The verdict and the numbers behind it (module docstring for the tolerances)."""
    assert report["converged"], report["reasons"]
    assert -roundoff(report["optimal_elbo"]) <= report["gap"] <= GAP_TOL
    assert abs(report["block_gain"]) <= 1e-9 * (1 + abs(report["elbo"]))
    if exact_counts:
        assert report["kind"] == "far"
        assert report["active_dims"] == report["predicted_active_dims"]
    assert report["status"] == "agrees", report["reasons"]


#: Residual spectra of d_y = 6 against the threshold t = beta eta^2 = 1: three near-equal values
#: (within 1% of each other), every one at least 2% from t.
NEAR_EQUAL = np.array([3.0, 2.985, 2.97, 1.3, 0.5, 0.1])
CVAE_K = 4


def test_cvae_near_equal_residual_eigenvalues():
    rng = np.random.default_rng(0)
    X, Y = pairs_with_residual(NEAR_EQUAL, rng)
    m = JointMoments.from_data(X, Y)
    np.testing.assert_allclose(cvae_optimum(m, CVAE_K, 1.0, 1.0).modes.spectrum, NEAR_EQUAL[:CVAE_K], rtol=1e-10)
    report = train_and_compare(m, "cvae", 1.0, latent_dim=CVAE_K, beta=1.0, prior_variance=2.0)
    check(report)
    assert report["active_dims"] == 4


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(dict(singular=True), id="singular-A"),
        pytest.param(dict(x_scale=1e3, y_scale=255.0, mean=128.0), id="raw-scales"),
        pytest.param(dict(n=5), id="d_y-above-N"),
        pytest.param(dict(mean=3.0, bias=False), id="no-bias-raw-moments"),
    ],
)
def test_cvae_hard_pairs_train_to_the_closed_form(case):
    rng = np.random.default_rng(1)
    case = dict(case)
    bias = case.pop("bias", True)
    theta = np.array([2.0, 1.5, 0.8, 0.6, 0.3, 0.1])
    if case.get("n") == 5:  # d_y = 6 > N = 5, and x of rank 2: S has rank N - 1 - 2 = 2
        X = rng.standard_normal((5, 4)) * [1.0, 1.0, 0.0, 0.0]
        Y = rng.standard_normal((5, 6)) * [3.0, 2.0, 1.0, 1.0, 0.5, 0.5]
    else:
        X, Y = pairs_with_residual(theta, rng, **case)
    scale = case.get("y_scale", 1.0) ** 2
    m = JointMoments.from_data(X, Y, centred=bias)
    spectrum = cvae_optimum(m, CVAE_K, 1.0, 1.0).modes.spectrum
    positive = spectrum[spectrum > 1e-9 * scale]
    # the threshold at the geometric mean of the two largest residual variances: far from both
    eta2 = float(np.sqrt(positive[0] * positive[1])) if len(positive) > 1 else 0.5 * positive[0]
    report = train_and_compare(m, "cvae", eta2, latent_dim=CVAE_K, beta=1.0)
    check(report)


def test_cvae_trains_when_x_explains_all_of_y():
    """y a linear function of x: ``S = 0`` up to round-off, whose trace can come out slightly negative
    (-3e-14 on the ``x = y`` family of the conditional_information figure), and whose square root
    sizes the start and the trust region: training reaches the all-collapsed optimum, not NaN."""
    m = JointMoments.from_matrices(np.eye(2), np.eye(2), np.eye(2) - 1e-15 * np.eye(2))
    report = train_and_compare(m, "cvae", 1.0, latent_dim=2)
    assert report["status"] == "agrees" and report["converged"]
    assert report["active_dims"] == report["predicted_active_dims"] == 0


def test_cvae_exact_objective_is_the_reference_at_the_trained_model():
    from linear_vae.training.cvae_training import cvae_model
    from linear_vae.training.model_objective import fit

    rng = np.random.default_rng(2)
    X, Y = pairs_with_residual(np.array([2.0, 1.5, 0.8, 0.6, 0.3, 0.1]), rng, mean=1.5)
    for bias in (True, False):
        m = JointMoments.from_data(X, Y, centred=bias)
        trained = fit(cvae_model(m, CVAE_K, 0.7, 1.1, 2.0))
        p = trained.params
        ref = cvae_objective(
            (p.W1, p.W2, p.encoder_bias, np.log(p.encoder_variances), p.U1, p.U2, p.decoder_bias), X, Y, 0.7, 1.1, 2.0
        )
        assert trained.value == pytest.approx(ref, rel=1e-9)
        assert trained.value - cvae_optimum(m, CVAE_K, 0.7, 1.1, 2.0).value <= GAP_TOL


HVAE_DIMS = (3, 2)


def hvae_pairs(rng, n=60, x_scale=1.0, y_scale=1.0, mean=0.0):
    X = rng.standard_normal((n, 5)) * [2.0, 1.5, 1.0, 0.7, 0.4]
    Y = X @ rng.standard_normal((5, 4)) * 0.6 + 0.3 * rng.standard_normal((n, 4))
    return x_scale * X + mean, y_scale * Y + mean


def hvae_far_settings(m, s1, beta1, z2_variance=None):
    """``(beta2, eta^2)`` with the z2 threshold at the geometric mean of theta_1^2 and theta_2^2
    (``beta2^2 c^4 sigma2^4 / (beta1 sigma1^2)``, ``c^2 sigma2^2 = eta^2`` when learned, ``eta^2 sigma2^2`` when
    fixed at ``eta_enc = 1``); the configuration is chosen from the closed form, which training never sees."""
    from linear_vae.theory.hierarchical import hvae_optimum

    theta2 = hvae_optimum(m, HVAE_DIMS, 1.0, 1.0, s1, 1.0).spectrum
    eta2 = 0.5 * theta2[2] / beta1
    T = np.sqrt(theta2[0] * theta2[1])
    level = 1.0 if z2_variance is None else z2_variance  # c^2 sigma2^2 / eta^2 = sigma2^2 at eta_enc = 1
    beta2 = float(np.sqrt(T * beta1 * s1) / (eta2 * level))
    return beta2, eta2


@pytest.mark.parametrize(
    "s1, beta1, case",
    [
        pytest.param(0.05, 1.0, {}, id="learned"),
        pytest.param(0.3, 2.0, dict(x_scale=1e3, y_scale=255.0, mean=128.0), id="learned-raw-scales"),
        pytest.param(0.05, 0.5, dict(mean=2.0, bias=False), id="learned-no-bias"),
    ],
)
def test_hvae_with_learned_z2_variance_trains_to_the_closed_form(s1, beta1, case):
    rng = np.random.default_rng(3)
    case = dict(case)
    bias = case.pop("bias", True)
    X, Y = hvae_pairs(rng, **case)
    m = JointMoments.from_data(X, Y, centred=bias)
    beta2, eta2 = hvae_far_settings(m, s1, beta1)
    report = train_and_compare(m, "hvae", eta2, latent_dims=HVAE_DIMS, beta1=beta1, beta2=beta2, z1_variance=s1)
    check(report, exact_counts=report["kind"] == "far")
    assert report["kind"] == "far", report["nearest_threshold_distance"]


def test_hvae_with_both_variances_fixed_trains_to_the_closed_form():
    rng = np.random.default_rng(4)
    X, Y = hvae_pairs(rng)
    m = JointMoments.from_data(X, Y)
    beta2, eta2 = hvae_far_settings(m, 0.05, 1.0, z2_variance=0.5)
    report = train_and_compare(m, "hvae", eta2, latent_dims=HVAE_DIMS, beta2=beta2, z1_variance=0.05, z2_variance=0.5)
    check(report)


def test_hvae_exact_objective_is_the_reference_at_the_trained_model():
    from linear_vae.theory.hierarchical import hvae_optimum
    from linear_vae.training.hvae_training import hvae_model
    from linear_vae.training.model_objective import fit

    rng = np.random.default_rng(5)
    X, Y = hvae_pairs(rng, mean=1.5)
    for bias in (True, False):
        m = JointMoments.from_data(X, Y, centred=bias)
        trained = fit(hvae_model(m, HVAE_DIMS, 1.5, 0.7, 0.2, 0.4, 2.0))
        p = trained.params
        ref = hvae_objective(
            (p.W1, p.b1, p.W2, p.b2, np.log(p.z2_variances), p.U1, p.c1, p.U2, p.c2), X, Y, 1.5, 0.7, 0.2, 0.4, 2.0
        )
        assert trained.value == pytest.approx(ref, rel=1e-9)
        assert trained.value - hvae_optimum(m, HVAE_DIMS, 1.5, 0.7, 0.2, 0.4, 2.0).value <= GAP_TOL


def test_overall_verdict_never_confuses_not_converged_with_disagrees():
    assert overall_verdict([{"status": "agrees"}, {"status": "not converged"}]) == "not converged"
    assert overall_verdict([{"status": "not converged"}, {"status": "disagrees"}]) == "disagrees"


def test_an_unconverged_run_is_reported_as_not_converged():
    """One Newton iteration from a random start cannot pass the convergence test: "not converged",
    whatever its gap, never "disagrees"."""
    rng = np.random.default_rng(0)
    X, Y = pairs_with_residual(NEAR_EQUAL, rng)
    report = train_and_compare(JointMoments.from_data(X, Y), "cvae", 1.0, latent_dim=CVAE_K, iterations=1)
    assert not report["converged"]
    assert report["status"] == "not converged" and report["gap"] > GAP_TOL


# -- The command line: train, sweep and verify with --model cvae|hvae (same shapes as above, so the
# -- compiled programs are shared) ------------------------------------------------------------------


def run(capsys, *argv) -> tuple[int, str, str]:
    from linear_vae.cli import main

    quiet = ["--quiet"] if argv[0] != "analyze" else []
    code = main([str(a) for a in argv] + quiet)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    """``x`` (d_x = 4) and ``y`` (d_y = 6) as two files, the CVAE's test shapes, and the same for the HVAE."""
    folder = tmp_path_factory.mktemp("pairs")
    X, Y = pairs_with_residual(NEAR_EQUAL, np.random.default_rng(0))
    Xh, Yh = hvae_pairs(np.random.default_rng(3))
    paths = {}
    for name, rows in (("x", X), ("y", Y), ("xh", Xh), ("yh", Yh)):
        paths[name] = folder / f"{name}.npy"
        np.save(paths[name], rows)
    return paths


def test_train_cvae_reports_each_mode_against_the_closed_form(capsys, pair_files):
    common = [
        "--data",
        pair_files["y"],
        "--condition",
        pair_files["x"],
        "--model",
        "cvae",
        "-k",
        CVAE_K,
        "--sigma2",
        1.0,
    ]
    code, out, err = run(capsys, "train", *common, "--json")
    assert code == 0, err
    report = json.loads(out)
    code, out, _ = run(capsys, "analyze", *common, "--json")
    analysis = json.loads(out)
    assert report["status"] == "agrees" and report["optimal_elbo"] == pytest.approx(analysis["elbo"], rel=1e-12)
    assert [m["spectrum"] for m in report["modes"]] == pytest.approx(analysis["spectrum"], rel=1e-12)
    assert all(m["threshold"] == analysis["threshold"] for m in report["modes"])
    assert [m["kl"] for m in report["modes"]] == pytest.approx(analysis["kl_per_dim"], rel=1e-12)
    assert [m["trained_kl"] for m in report["modes"]] == pytest.approx(analysis["kl_per_dim"], rel=1e-6, abs=1e-9)
    code, out, _ = run(capsys, "train", *common)
    assert code == 0 and "spectrum: eigenvalues theta_i of S" in out and out.strip().endswith("AGREES")


def test_train_hvae_reports_both_levels(capsys, pair_files):
    from linear_vae.theory.hierarchical import hvae_optimum

    m = JointMoments.from_data(np.load(pair_files["xh"]), np.load(pair_files["yh"]))
    beta2, eta2 = hvae_far_settings(m, 0.05, 1.0)
    code, out, err = run(
        capsys, "train", "--data", pair_files["yh"], "--condition", pair_files["xh"], "--model", "hvae",
        "--latent-dims", *HVAE_DIMS, "--z1-variance", 0.05, "--beta2", beta2, "--sigma2", eta2, "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    optimum = hvae_optimum(m, HVAE_DIMS, 1.0, beta2, 0.05, eta2)
    assert report["predicted_active_dims"] == [optimum.active_z1_dims, optimum.active_z2_dims]
    assert report["active_dims"] == report["predicted_active_dims"] and report["status"] == "agrees"


def test_sweep_cvae_trains_every_beta(capsys, pair_files):
    code, out, err = run(
        capsys, "sweep", "--data", pair_files["y"], "--condition", pair_files["x"], "--model", "cvae", "-k", CVAE_K,
        "--betas", "0.5,4", "--sigma2s", 1.0, "--json",
    )  # fmt: skip
    assert code == 0, err
    reports = json.loads(out)
    assert [r["beta"] for r in reports] == [0.5, 4.0]
    assert [r["predicted_active_dims"] for r in reports] == [4, 0]
    assert all(r["status"] == "agrees" for r in reports)


def test_sweep_hvae_trains_every_beta2(capsys, pair_files):
    code, out, err = run(
        capsys, "sweep", "--data", pair_files["yh"], "--condition", pair_files["xh"], "--model", "hvae",
        "--latent-dims", *HVAE_DIMS, "--z1-variance", 0.05, "--betas", "0.5,2", "--sigma2s", 0.3, "--json",
    )  # fmt: skip
    assert code == 0, err
    reports = json.loads(out)
    assert [r["beta2"] for r in reports] == [0.5, 2.0]
    assert all(r["active_dims"] == r["predicted_active_dims"] or r["kind"] == "near" for r in reports)
    assert all(r["status"] == "agrees" for r in reports)


def test_verify_cvae_agrees_and_an_unfinished_run_is_not_converged(capsys, pair_files):
    """Exit 0 with AGREES; with one Newton iteration, exit 1 with NOT CONVERGED (never DISAGREES)."""
    common = ["verify", "--data", pair_files["y"], "--condition", pair_files["x"], "--model", "cvae", "-k", CVAE_K]
    code, out, err = run(capsys, *common)
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("AGREES")
    code, out, _ = run(capsys, *common, "--steps", 1)
    assert code == 1
    assert out.strip().splitlines()[-1].startswith("NOT CONVERGED") and "DISAGREES" not in out


@pytest.mark.parametrize(
    "argv, says",
    [
        (("train", "--model", "hvae", "--sigma2", 1), "--latent-dims"),
        (("train", "--model", "cvae", "-k", 2), "needs a fixed --sigma2"),
        (("train", "--model", "cvae", "-k", 2, "--sigma2", 1, "--optimizer", "sgd"), "newton or adam"),
        (("train", "--model", "cvae", "-k", 2, "--sigma2", 1, "--lr", 0.1), "--lr"),
        (("train", "--model", "cvae", "-k", 2, "--sigma2", 1, "--save-model", "m.npz"), "--save-model"),
        (("train", "--model", "vae", "-k", 2, "--split", "half"), "--model cvae or hvae"),
        (
            (
                "train",
                "--model",
                "hvae",
                "--latent-dims",
                2,
                1,
                "--z1-variance",
                0.1,
                "--sigma2",
                1,
                "--z2-variance",
                -1,
            ),
            "--z2-variance",
        ),  # fmt: skip
        (("sweep", "--model", "cvae", "-k", 2, "--betas", "1"), "--sigma2s"),
        (("verify", "--model", "hvae", "--latent-dims", 2, 1, "--z1-variance", 0.1), "--sigma2"),
        (("train", "--model", "cvae", "-k", 99, "--sigma2", 1), "--latent-dim = 99"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, pair_files, argv, says):
    code, out, err = run(capsys, *argv, "--data", pair_files["y"], "--condition", pair_files["x"])
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and says in err, err
