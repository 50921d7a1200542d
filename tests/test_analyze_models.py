"""``linear-vae analyze --model vae|cvae|hvae`` (:func:`linear_vae.analysis.analyze_pairs`): the closed
forms of docs/theory.md (T17) from the command line, on pairs ``(x, y)`` cut from images or given as
two files.

The CVAE's report is checked against numpy written here (the residual second moment by
``np.linalg.pinv``) and against the negative beta-ELBO of ``tests/reference.py`` evaluated at the
optimum's parameters (an objective written from the model's definition, averaged over the rows).
The scaled prior is checked against the plain linear VAE's own closed form (T4.1): by (T17.2) the
prior variance changes neither the value nor the active set.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import cvae_objective

from linear_vae.cli import main
from linear_vae.data.conditioning import image_split
from linear_vae.data.joint_moments import JointMoments
from linear_vae.theory.conditional import cvae_optimum

#: 6 x 6 "images": a random non-diagonal covariance, so every quarter carries information on the rest.
SIDE, N = 6, 400


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(7)
    mixing = rng.normal(size=(SIDE * SIDE, SIDE * SIDE)) * rng.uniform(0.05, 1.0, SIDE * SIDE)
    X = rng.normal(size=(N, SIDE * SIDE)) @ mixing.T + 0.5
    path = tmp_path_factory.mktemp("images") / "images.npy"
    np.save(path, X)
    return X, str(path)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def report_of(capsys, *argv) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_cvae_on_a_quarter_split_reports_the_residual_spectrum_and_the_exact_objective(capsys, images):
    X, path = images
    k, sigma2 = 5, 16.0  # residual variances run from 28.7 to 14.3: the threshold falls inside
    report = report_of(capsys, "analyze", "--data", path, "--model", "cvae", "--split", "quarter", "-k", k,
                       "--sigma2", sigma2)  # fmt: skip
    x, y = image_split(X, "quarter")
    assert (report["d_x"], report["d_y"]) == (SIDE * SIDE // 4, 3 * SIDE * SIDE // 4)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    A, C, B = xc.T @ xc / N, xc.T @ yc / N, yc.T @ yc / N
    theta = np.sort(np.linalg.eigvalsh(B - C.T @ np.linalg.pinv(A) @ C))[::-1][:k]
    # eigenvalues of the same 27 x 27 matrix by two routes: round-off of float64 eigh
    np.testing.assert_allclose(report["spectrum"], theta, rtol=1e-9)
    assert report["threshold"] == sigma2 and report["active_dims"] == int(np.sum(theta > sigma2))
    assert 0 < report["active_dims"] < k, "the example should cross the threshold"
    p = cvae_optimum(JointMoments.from_data(x, y), k, 1.0, sigma2).parameters()
    params = (p.W1, p.W2, p.encoder_bias, np.log(p.encoder_variances), p.U1, p.U2, p.decoder_bias)
    # the reference averages over 400 rows of 36 values: agreement to float64 summation error
    assert report["elbo"] == pytest.approx(-cvae_objective(params, x, y, 1.0, sigma2, 1.0), rel=1e-10)


def test_a_condition_file_gives_what_the_split_gives(capsys, images, tmp_path):
    X, path = images
    x, y = image_split(X, "half")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    common = ("--model", "cvae", "-k", 4, "--sigma2", 0.5)
    from_split = report_of(capsys, "analyze", "--data", path, "--split", "half", *common)
    from_files = report_of(capsys, "analyze", "--data", tmp_path / "y.npy", "--condition", tmp_path / "x.npy", *common)
    # the same numbers reach the moments by two memory layouts: float64 summation order at most
    np.testing.assert_allclose(from_files["spectrum"], from_split["spectrum"], rtol=1e-12)
    assert from_files["elbo"] == pytest.approx(from_split["elbo"], rel=1e-12)


def test_the_prior_variance_changes_neither_the_value_nor_the_active_set(capsys, images):
    _, path = images
    plain = report_of(capsys, "analyze", "--data", path, "-k", 6, "--sigma2", 1.5)
    scaled = report_of(capsys, "analyze", "--data", path, "-k", 6, "--sigma2", 1.5, "--prior-variance", 4.0)
    assert scaled["model"] == plain["model"] == "vae"
    assert scaled["active_dims"] == plain["active_dims"]
    np.testing.assert_allclose(scaled["spectrum"], plain["spectrum"], rtol=1e-10)
    assert scaled["elbo"] == pytest.approx(plain["elbo"], rel=1e-11)  # (T17.2) against (T4.1)


def test_hvae_reports_both_levels(capsys, images):
    _, path = images
    report = report_of(capsys, "analyze", "--data", path, "--model", "hvae", "--latent-dims", 4, 2,
                       "--z1-variance", 0.2, "--sigma2", 1.0, "--beta2", 2.0)  # fmt: skip
    assert report["latent_dims"] == [4, 2] and len(report["z1_thresholds"]) == 4
    assert 0 <= report["active_z2"] <= 2 and report["active_dims"] == report["active_z1"]
    code, out, err = run(capsys, "analyze", "--data", path, "--model", "hvae", "--latent-dims", 4, 2, "--z1-variance",
                         0.2, "--sigma2", 1.0)  # fmt: skip
    assert code == 0 and "active z2 modes" in out


@pytest.mark.parametrize(
    "argv, says",
    [
        (("--model", "cvae", "--split", "quarter", "-k", 3), "needs a fixed --sigma2"),
        (("--model", "cvae", "--split", "quarter", "--condition", "x.npy", "-k", 3, "--sigma2", 1), "not both"),
        (("--model", "hvae", "--sigma2", 1), "--latent-dims"),
        (("--model", "cvae", "--split", "quarter", "-k", 99, "--sigma2", 1), "--latent-dim"),
        (("--model", "cvae", "--split", "half", "-k", 2, "--sigma2", -1), "sigma2"),
    ],
)
def test_bad_model_options_exit_2_with_one_line(capsys, images, argv, says):
    _, path = images
    code, out, err = run(capsys, "analyze", "--data", path, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and says in err


def test_a_split_needs_square_images():
    with pytest.raises(ValueError, match="square images"):
        image_split(np.ones((3, 10)), "quarter")
