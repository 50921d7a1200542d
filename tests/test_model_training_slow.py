"""The bigger grids of tests/test_model_training.py (``-m slow``): the shipped images, both splits,
d_z = 64 for the CVAE and (d1, d2) = (32, 32) for the HVAE, and Adam.

Each configuration is placed away from every threshold (at least 2%, chosen from the closed form,
which training never sees), so the claim is the issue's: trained = closed form to ``GAP_TOL = 1e-6``
nats per datapoint, with exact active counts, and the verdict "agrees".  Measured (2-core machine
shared with other work): one configuration on the quarter split takes a minute or two with
compilation, under half a minute after; gaps are at round-off (1e-12 or below).
"""

from __future__ import annotations

import numpy as np
import pytest

from linear_vae.data.conditioning import image_split
from linear_vae.data.datasets import load_data
from linear_vae.data.joint_moments import JointMoments
from linear_vae.theory.conditional import cvae_optimum
from linear_vae.theory.hierarchical import hvae_optimum
from linear_vae.verification.compare import GAP_TOL, roundoff
from linear_vae.verification.model_verify import train_and_compare

pytestmark = pytest.mark.slow

FAR = 0.02


def far(values, threshold) -> bool:
    values = np.asarray(values)
    return bool(np.all(np.abs(values / threshold - 1.0) >= FAR))


def cvae_far_decoder_variances(spectrum, count=2):
    """``eta^2`` (at beta = 1) at the geometric mean of two consecutive residual variances, where every
    ``theta_i`` is at least 2% away, spread over the spectrum."""
    chosen = []
    for i in np.linspace(2, len(spectrum) - 3, 12).astype(int):
        t = float(np.sqrt(spectrum[i] * spectrum[i + 1]))
        if far(spectrum, t):
            chosen.append(t)
    return chosen[:: max(1, len(chosen) // count)][:count]


def hvae_far_settings(m, dims, eta2=0.05, z2_variance=None):
    """``(sigma1^2, beta2)`` at beta1 = 1 with every z1 and z2 threshold (and the noise-modelling
    condition) at least 2% from the spectrum."""
    theta2 = hvae_optimum(m, dims, 1.0, 1.0, 0.1, eta2).spectrum
    d2 = dims[1]
    level = 1.0 if z2_variance is None else z2_variance  # c^2 sigma2^2 / eta^2 at eta_enc = 1
    for s1 in (0.05, 0.2, 0.02, 0.1):
        for i in (d2 // 3, d2 // 2, 2 * d2 // 3):
            T = float(np.sqrt(theta2[i] * theta2[i + 1]))
            beta2 = float(np.sqrt(T * s1) / (eta2 * level))
            opt = hvae_optimum(m, dims, 1.0, beta2, s1, eta2, 1.0, z2_variance)
            ok = far(theta2, opt.z1_thresholds[0]) and far([s1], beta2 * eta2 * level)
            if ok and (opt.z2_models_z1_noise or far(theta2[:d2], opt.z2_threshold)):
                return s1, beta2
    raise AssertionError("no configuration away from every threshold")


def pairs(name, split, bias=True):
    x, y = image_split(load_data(name).X, split)
    return JointMoments.from_data(x, y, centred=bias)


def check(report):
    assert report["converged"], report["reasons"]
    assert -roundoff(report["optimal_elbo"]) <= report["gap"] <= GAP_TOL
    assert report["kind"] == "far"
    assert report["active_dims"] == report["predicted_active_dims"]
    assert report["status"] == "agrees"


@pytest.mark.parametrize("name, split", [("mnist", "quarter"), ("mnist", "half"), ("fashion_mnist", "quarter")])
def test_cvae_on_images_trains_to_the_closed_form(name, split):
    m = pairs(name, split)
    spectrum = cvae_optimum(m, 64, 1.0, 1.0).modes.spectrum
    for eta2 in cvae_far_decoder_variances(spectrum):
        check(train_and_compare(m, "cvae", eta2, latent_dim=64, beta=1.0))


@pytest.mark.parametrize(
    "name, split, z2_variance",
    [
        ("mnist", "quarter", None),
        ("mnist", "half", None),
        ("fashion_mnist", "quarter", None),
        ("mnist", "quarter", 0.5),
    ],
)
def test_hvae_on_images_trains_to_the_closed_form(name, split, z2_variance):
    m = pairs(name, split)
    s1, beta2 = hvae_far_settings(m, (32, 32), z2_variance=z2_variance)
    check(
        train_and_compare(m, "hvae", 0.05, latent_dims=(32, 32), beta2=beta2, z1_variance=s1, z2_variance=z2_variance)
    )


def test_cvae_without_biases_on_raw_image_moments():
    m = pairs("mnist", "quarter", bias=False)
    spectrum = cvae_optimum(m, 64, 1.0, 1.0).modes.spectrum
    check(train_and_compare(m, "cvae", cvae_far_decoder_variances(spectrum, 1)[0], latent_dim=64, beta=1.0))


def test_adam_reaches_the_closed_form_on_small_pairs():
    """Adam on the same profiled objective: slower than Newton, but it gets there and its own
    convergence test says so."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    Y = X @ rng.standard_normal((3, 4)) + rng.standard_normal((200, 4)) * [2.0, 1.0, 0.5, 0.2]
    m = JointMoments.from_data(X, Y)
    spectrum = cvae_optimum(m, 3, 1.0, 1.0).modes.spectrum
    eta2 = float(np.sqrt(spectrum[0] * spectrum[1]))
    report = train_and_compare(m, "cvae", eta2, latent_dim=3, optimizer="adam", iterations=100000)
    check(report)


def test_hvae_with_a_singular_A_and_more_targets_than_pairs():
    """``x`` with a constant and a duplicated coordinate (``A`` of rank 3 of 5) and ``d_y = 8 > N = 7``: the
    range of ``A`` is a different compiled shape from the default suite's, hence here."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((7, 5)) * [2.0, 1.0, 0.5, 0.0, 0.0]
    X[:, 4] = X[:, 0]
    X[:, 3] = 1.0
    Y = X @ rng.standard_normal((5, 8)) * 0.6 + 0.3 * rng.standard_normal((7, 8))
    m = JointMoments.from_data(X, Y)
    theta2 = hvae_optimum(m, (3, 2), 1.0, 1.0, 0.05, 1.0).spectrum
    T = float(np.sqrt(theta2[0] * theta2[1]))
    eta2 = 0.5 * float(theta2[2]) if theta2[2] > 0 else 0.1
    beta2 = float(np.sqrt(T * 0.05) / eta2)
    report = train_and_compare(m, "hvae", eta2, latent_dims=(3, 2), beta2=beta2, z1_variance=0.05)
    assert report["converged"] and -roundoff(report["optimal_elbo"]) <= report["gap"] <= GAP_TOL
    if report["kind"] == "far":
        assert report["active_dims"] == report["predicted_active_dims"]
    assert report["status"] == "agrees"
