"""Every figure's numbers against the closed form: quick runs into a temporary folder, and the committed figures/*.json.

The closed form is recomputed here from the data the JSON names (numpy's ``eigvalsh`` of the
1/N covariance, not the package's eigen-decomposition), so a figure that disagrees with the
theory fails CI.  Quick runs use budgets of a few thousand steps, so their trained results are
judged with looser tolerances (stated per check) than the committed full-budget figures.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from reference import optimal_beta_elbo, ppca_mle

from linear_vae.datasets import load_data
from linear_vae.experiments.runner import EXPERIMENTS, experiment_config, run_experiment

FIGURES = Path(__file__).resolve().parent.parent / "figures"


@functools.lru_cache(maxsize=None)
def _reference(data: str, n, subset_seed: int):
    X = load_data(data, n=n, subset_seed=subset_seed).X
    centred = X - X.mean(axis=0)
    lam, U = np.linalg.eigh(centred.T @ centred / len(X))
    return X, np.clip(lam[::-1], 0, None), U[:, ::-1]


def reference(config: dict):
    """Data, eigenvalues (descending, clipped at 0) and eigenvectors of the 1/N covariance, by numpy alone."""
    return _reference(config["data"], config.get("n"), config.get("subset_seed", 0))


def eigenvalues_for(payload: dict) -> np.ndarray:
    """The reference eigenvalues, after checking the ones the JSON records against them."""
    _, lam, _ = reference(payload["config"])
    recorded = np.array(payload["results"]["eigenvalues"])
    # float64 eigh of a 784 x 784 covariance: agreement to ~1e-12 of lambda_1; 1e-9 leaves room.
    np.testing.assert_allclose(recorded, lam[: len(recorded)], rtol=0, atol=1e-9 * lam[0])
    return lam


def far(distances, strict: bool) -> np.ndarray:
    """Configurations judged on convergence: 2% from every threshold (full budget) or 10% (quick)."""
    return np.asarray(distances) >= (0.02 if strict else 0.10)


def check_collapse_threshold(payload: dict, strict: bool) -> None:
    config, results = payload["config"], payload["results"]
    lam = eigenvalues_for(payload)
    k = config["latent_dim"]
    for panel, beta_of, sigma2_of in (
        ("beta_panel", lambda x: x, lambda x: config["sigma2"]),
        ("sigma2_panel", lambda x: 1.0, lambda x: x),
    ):
        p = results[panel]
        x = np.array(p["x"])
        t = np.array([beta_of(v) * sigma2_of(v) for v in x])
        predicted = (lam[None, :k] > t[:, None]).sum(axis=1)
        np.testing.assert_array_equal(p["predicted_active_dims"], predicted)
        curve_t = np.array([beta_of(v) * sigma2_of(v) for v in p["curve_x"]])
        np.testing.assert_array_equal(p["curve_active_dims"], (lam[None, :k] > curve_t[:, None]).sum(axis=1))
        ok = far(p["nearest_threshold_distance"], strict)
        assert ok.sum() >= 3, "too few configurations away from thresholds to judge the figure"
        np.testing.assert_array_equal(np.array(p["trained_active_dims"])[ok], predicted[ok])
        # Trained never above the optimum (float64 round-off of ~1e3-nat values).  Newton runs to a
        # predicted gain of 1e-12 nats at either budget; 1e-6 is the trainer's contract.
        assert min(p["gap"]) > -1e-9 * 1e3
        assert max(np.array(p["gap"])[ok]) <= 1e-6
    np.testing.assert_allclose(results["beta_panel"]["thresholds"], lam[:k] / config["sigma2"], rtol=1e-9)


def check_kl_per_dim(payload: dict, strict: bool) -> None:
    config, results = payload["config"], payload["results"]
    lam = eigenvalues_for(payload)
    k, sigma2 = config["latent_dim"], config["sigma2"]
    betas = np.array(results["betas"])
    ratio = lam[None, :k] / (betas[:, None] * sigma2)
    predicted = np.where(ratio > 1, 0.5 * np.log(np.maximum(ratio, 1)), 0.0)
    np.testing.assert_allclose(results["predicted_kl_per_dim"], predicted, rtol=1e-9, atol=1e-12)
    ok = far(results["nearest_threshold_distance"], strict)
    trained = np.array(results["trained_kl_per_dim"])
    # Newton runs to a predicted gain of 1e-12 nats at either budget, which leaves each KL correct to
    # about sqrt(1e-12) = 1e-6 nats (measured: 1e-10)
    np.testing.assert_allclose(trained[ok], predicted[ok], atol=1e-6)


def check_escape_time(payload: dict, strict: bool) -> None:
    config, r = payload["config"], payload["results"]
    lam = eigenvalues_for(payload)
    gaps, s2 = np.array(r["gaps"]), np.array(r["sigma2s"])
    np.testing.assert_allclose(s2, lam[0] - gaps, rtol=1e-12)
    assert gaps.max() <= lam[0] - lam[1] + 1e-12  # u_1 is the only ascent direction
    c = (lam[0] - s2) / s2**2  # MLL curvature along the zero column
    np.testing.assert_allclose(r["mll_curvature"], c, rtol=1e-9)
    # ELBO: positive eigenvalue of the (w, v) Hessian block [[-1/s2, lam/s2], [lam/s2, -lam]].
    tr, det = -(1 / s2 + lam[0]), lam[0] * (s2 - lam[0]) / s2**2
    mu = 0.5 * (tr + np.sqrt(tr**2 - 4 * det))
    np.testing.assert_allclose(r["elbo_growth_rate"], mu, rtol=1e-9)
    np.testing.assert_allclose(r["elbo_growth_rate_hessian"], mu, rtol=1e-6)  # autodiff Hessian, float64
    assert np.all(mu < c) and np.all(mu > 0.9 * c)
    f, lr = r["fraction"], config["sgd_learning_rate"]

    def flow(u0, scale):
        """Escape steps of the exact 1-D gradient flow of the MLL (time rescaled by ``scale``)."""
        a = gaps
        uT = f * a
        return (
            0.5
            * ((s2**2 / a) * np.log(uT / u0) + (lam[0] ** 2 / a) * np.log((a - u0) / (a - uT)) - (uT - u0))
            / (lr * scale)
        )

    np.testing.assert_allclose(
        r["runs"]["sgd_mll"]["predicted_escape_steps"], flow(r["initial_amplitude_sq_mll"], 1.0), rtol=1e-9
    )
    np.testing.assert_allclose(
        r["runs"]["sgd_exact"]["predicted_escape_steps"],
        flow(np.array(r["initial_amplitude_sq_elbo"]), mu / c),
        rtol=1e-9,
    )
    np.testing.assert_allclose(r["initial_amplitude_sq_elbo"], r["initial_amplitude_sq_mll"], rtol=1e-2)
    for key in ("sgd_mll", "sgd_exact"):
        run = r["runs"][key]
        assert run["escaped"]
        # Discrete steps of size lr against the continuous flow: 2% (measured 0.2% and 0.9%).
        np.testing.assert_allclose(run["escape_steps"], run["predicted_escape_steps"], rtol=0.02)
        assert abs(run["fitted_slope"] - run["predicted_slope"]) < 0.02
        assert -1.25 < run["predicted_slope"] < -0.9
    assert np.all(np.array(r["runs"]["sgd_exact"]["escape_steps"]) > np.array(r["runs"]["sgd_mll"]["escape_steps"]))
    adam = [v for key, v in r["runs"].items() if key.startswith("adam")]
    assert adam
    for run in adam:
        assert run["escaped"]
        assert run["fitted_slope"] > r["runs"]["sgd_mll"]["fitted_slope"] + 1.0  # far flatter than -1
    if strict:
        assert gaps[-1] / gaps[0] >= 50
        for run in adam:
            assert run["max_to_min_escape_ratio"] < 5 < 50 < r["runs"]["sgd_mll"]["max_to_min_escape_ratio"]


def check_identifiability(payload: dict, strict: bool) -> None:
    config, r = payload["config"], payload["results"]
    lam = eigenvalues_for(payload)
    k = config["latent_dim"]
    s2, mll = ppca_mle(lam, k)
    np.testing.assert_allclose(r["mle_sigma2"], s2, rtol=1e-9)
    np.testing.assert_allclose(r["mle_mll"], mll, rtol=1e-10)
    np.testing.assert_allclose(r["predicted_column_norms_sq"], lam[:k] - s2, rtol=1e-9)
    vae, ppca = r["models"]["vae"], r["models"]["ppca"]
    for model in (vae, ppca):  # both reach the MLE's likelihood and the principal subspace
        np.testing.assert_allclose(model["final_mll"], mll, rtol=0, atol=1e-8)
        np.testing.assert_allclose(model["final_sigma2"], s2, rtol=1e-6)
        assert max(model["subspace_angle_deg"]) < 1e-3
    np.testing.assert_allclose(vae["final_elbo"], vae["final_mll"], rtol=0, atol=1e-8)  # the bound is tight
    assert max(vae["off_diagonal_ratio"]) < 1e-6
    assert min(vae["min_cosine_with_matched_eigenvector"]) > 1 - 1e-6
    for seed in vae["per_seed"]:
        assert seed["matched_eigenvector"] == list(range(k))
        np.testing.assert_allclose(seed["column_norms_sq"], lam[:k] - s2, rtol=1e-6)
        wtw = np.array(seed["wtw"])
        np.testing.assert_allclose(wtw, np.diag(np.diag(wtw)), atol=1e-6)
    assert min(ppca["off_diagonal_ratio"]) > 0.05  # rotated: pPCA alone is not identifiable
    assert max(ppca["min_cosine_with_matched_eigenvector"]) < 0.99


def check_collapse_fraction(payload: dict, strict: bool) -> None:
    config, r = payload["config"], payload["results"]
    X, lam, U = reference(config)
    eigenvalues_for(payload)
    k, delta = config["latent_dim"], config["delta"]
    eps, curve_eps = np.array(r["epsilons"]), np.array(r["curve_epsilons"])
    proj = (X - X.mean(0)) @ U[:, :k]
    for p in r["panels"]:
        s2 = p["sigma2"]
        m = int((lam[:k] > s2).sum())
        assert p["predicted_active_dims"] == m and p["predicted_collapsed_fraction"] == (k - m) / k
        # Closed-form KL_i(x) at the optimum, from numpy's eigh, independent of the package.
        active = lam[:k] > s2
        D = np.where(active, s2 / lam[:k], 1.0)
        coef = np.where(active, (lam[:k] - s2) / lam[:k] ** 2, 0.0)
        KL = 0.5 * (D + coef * proj**2 - 1 - np.log(D))

        def fraction(epsilons):
            return np.array([(np.mean(KL < e, axis=0) >= 1 - delta).mean() for e in epsilons])

        np.testing.assert_allclose(p["closed_form_fraction"], fraction(eps), atol=1e-12)
        np.testing.assert_allclose(p["curve_closed_form_fraction"], fraction(curve_eps), atol=1e-12)
        assert p["closed_form_fraction"][0] == (k - m) / k  # smallest epsilon: exactly the collapsed count
        np.testing.assert_allclose(
            p["closed_form_kl_quantiles"], np.sort(np.quantile(KL, 1 - delta, axis=0)), rtol=1e-8, atol=1e-12
        )
        np.testing.assert_allclose(
            p["closed_form_mean_kl_per_dim"],
            np.sort(np.where(active, 0.5 * np.log(lam[:k] / s2), 0.0)),
            rtol=1e-9,
            atol=1e-12,
        )
        assert p["trained_active_dims"] == m
        trained_q, closed_q = np.array(p["trained_kl_quantiles"]), np.array(p["closed_form_kl_quantiles"])
        # Newton runs to a predicted gain of 1e-12 nats at either budget: parameters correct to ~1e-6
        assert trained_q[: k - m].max(initial=0) < 1e-6  # collapsed dimensions: KL ~ 0
        np.testing.assert_allclose(trained_q[k - m :], closed_q[k - m :], rtol=1e-4)
        np.testing.assert_allclose(p["trained_mean_kl_per_dim"], p["closed_form_mean_kl_per_dim"], atol=1e-6)
        assert p["max_abs_difference"] <= 1e-12, (s2, p["max_abs_difference"])


def check_training_curves(payload: dict, strict: bool) -> None:
    config, r = payload["config"], payload["results"]
    lam = eigenvalues_for(payload)
    k = config["latent_dim"]
    s2, mll = ppca_mle(lam, k)
    np.testing.assert_allclose(r["mle_sigma2"], s2, rtol=1e-9)
    np.testing.assert_allclose(r["mle_mll"], mll, rtol=1e-10)
    exact, stochastic = r["curves"]["exact"], r["curves"]["stochastic"]
    for curve in (exact, stochastic):
        # ELBO <= MLL at every record (the bound), both <= the MLE; float64 round-off ~1e-9 on ~400 nats.
        assert min(np.array(curve["mll"]) - np.array(curve["elbo"])) >= -1e-9
        np.testing.assert_allclose(curve["final_elbo_gap"], mll - curve["final_elbo"], rtol=0, atol=1e-9)
        assert curve["final_mll_gap"] >= -1e-9 and curve["final_elbo_gap"] >= curve["final_mll_gap"] - 1e-9
        assert curve["active_dims"] == curve["predicted_active_dims"] == int((lam[:k] > s2).sum())
        assert curve["elbo"][0] < curve["elbo"][-1] - 100  # it did train
    # Exact objective: full budget within 1e-3 nats of the MLE (measured 5e-5), sigma2 to 1e-6;
    # stochastic: 0.5 nats (measured 0.24; minibatch noise with one sample of z), sigma2 to 1%.
    assert exact["final_elbo_gap"] < (1e-3 if strict else 0.2)
    assert abs(exact["final_sigma2"] / s2 - 1) < (1e-6 if strict else 1e-4)
    assert stochastic["final_elbo_gap"] < (0.5 if strict else 5.0)
    assert abs(stochastic["final_sigma2"] / s2 - 1) < (0.01 if strict else 0.15)


def check_landscape(payload: dict, strict: bool) -> None:
    config, r = payload["config"], payload["results"]
    lam = eigenvalues_for(payload)
    s2 = np.array(config["sigma2s"])
    direction_lam = lam[np.array(config["directions"])]
    np.testing.assert_allclose(r["direction_eigenvalues"], direction_lam, rtol=1e-12)
    predicted = (direction_lam[None, :] - s2[:, None]) / s2[:, None] ** 2
    np.testing.assert_allclose(r["predicted_curvature"], predicted, rtol=1e-12)
    # Central differences with step 1e-3 on a quartic-free quadratic leading term: error ~1e-7 measured.
    np.testing.assert_allclose(r["fitted_curvature_mll"], predicted, atol=1e-5)
    np.testing.assert_allclose(r["fitted_curvature_elbo"], predicted, atol=1e-5)
    # Saddle along both, along one, local maximum: the signs of the curvatures per sigma2.
    assert [tuple(np.sign(p)) for p in predicted] == [(1, 1), (1, -1), (-1, -1)]
    assert r["max_change_mll"][0] > 0 and r["max_change_mll"][1] > 0 and r["max_change_mll"][2] <= 1e-12
    assert r["max_abs_elbo_minus_mll"] < 1e-9  # the zero column stays orthogonal: the bound is tight
    centre = len(r["axis"]) // 2
    assert all(abs(change[centre][centre]) < 1e-12 for change in r["mll_change"])


def check_latent_dim(payload: dict, strict: bool) -> None:
    r = payload["results"]
    lam = eigenvalues_for(payload)
    for series in r["series"]:
        closed, trained = series["closed_form"], series["trained"]
        ks = closed["latent_dims"]
        if series["sigma2_learned"]:
            expected = [ppca_mle(lam, k)[1] for k in ks]
            np.testing.assert_array_equal(closed["active_dims"], ks)
        else:
            s2 = series["sigma2"]
            expected = [optimal_beta_elbo(lam, k, 1.0, s2) for k in ks]
            np.testing.assert_array_equal(closed["active_dims"], [min(k, int((lam > s2).sum())) for k in ks])
        np.testing.assert_allclose(closed["elbo"], expected, rtol=1e-10)
        np.testing.assert_allclose(closed["mll"], expected, rtol=1e-10)  # beta = 1: ELBO = MLL at the optimum
        np.testing.assert_array_equal(trained["active_dims"], trained["predicted_active_dims"])
        for k, elbo, mll_value, predicted in zip(
            trained["latent_dims"], trained["elbo"], trained["mll"], trained["predicted_elbo"]
        ):
            np.testing.assert_allclose(predicted, expected[ks.index(k)], rtol=1e-10)
            # Never above the optimum; Newton to convergence is within 1e-6 nats (the trainer's contract)
            assert -1e-9 <= predicted - elbo < 1e-6
            assert mll_value >= elbo - 1e-9
        if series["sigma2_learned"]:
            np.testing.assert_allclose(
                trained["sigma2"], [ppca_mle(lam, k)[0] for k in trained["latent_dims"]], rtol=1e-6
            )


def check_deep_vae(payload: dict, strict: bool) -> None:
    config, r = payload["config"], payload["results"]
    X = load_data(config["data"]).X
    train_rows = np.sort(np.random.default_rng(config["split_seed"]).permutation(len(X))[: config["n_train"]])
    centred = X[train_rows] - X[train_rows].mean(axis=0)
    lam = np.clip(np.linalg.eigvalsh(centred.T @ centred / len(train_rows))[::-1], 0, None)
    np.testing.assert_allclose(r["eigenvalues"], lam[: len(r["eigenvalues"])], rtol=0, atol=1e-9 * lam[0])
    k = config["latent_dim"]
    linear = r["linear"]
    np.testing.assert_array_equal(linear["predicted_active_dims"], [int((lam[:k] > s).sum()) for s in linear["sigma2"]])
    runs = {(run["kind"], run["sigma2"]): run for run in r["runs"]}
    fixed = sorted((run for run in r["runs"] if run["kind"] == "fixed"), key=lambda run: run["sigma2"])
    # The direction of the effect: more active dimensions at the smallest sigma2 than at the largest,
    # and never more as sigma2 grows by a factor of 10 (the linear count is monotone in sigma2).
    assert fixed[0]["active_dims"] > fixed[-1]["active_dims"]
    for small, large in zip(fixed, fixed[1:]):
        if large["sigma2"] >= 10 * small["sigma2"]:
            assert large["active_dims"] <= small["active_dims"]
    # Learned sigma2 from a large start: it decreases, and keeps more dimensions than that sigma2 fixed.
    for run in (run for run in r["runs"] if run["kind"] == "learned"):
        assert 0 < run["final_sigma2"]
        if run["sigma2"] >= max(config["fixed_sigma2s"]):
            assert run["final_sigma2"] < run["sigma2"]
            assert run["active_dims"] > runs[("fixed", run["sigma2"])]["active_dims"]
    for run in r["runs"]:
        fraction = np.array(run["collapsed_fraction"])
        assert np.all(np.diff(fraction) >= 0) and fraction[-1] <= 1  # more collapse at larger epsilon
        assert abs(fraction[np.searchsorted(r["epsilons"], r["epsilon"])] * k - (k - run["active_dims"])) <= 1
    if strict:
        # Trained linear VAEs on the same digits match the closed-form count (5,000 exact-ELBO steps).
        np.testing.assert_array_equal(linear["trained_active_dims"], linear["predicted_active_dims"])


CHECKS = {
    "collapse_threshold": check_collapse_threshold,
    "kl_per_dim": check_kl_per_dim,
    "escape_time": check_escape_time,
    "identifiability": check_identifiability,
    "collapse_fraction": check_collapse_fraction,
    "training_curves": check_training_curves,
    "landscape": check_landscape,
    "latent_dim": check_latent_dim,
    "deep_vae": check_deep_vae,
}


def test_every_experiment_has_a_check():
    assert set(CHECKS) == set(EXPERIMENTS)


class QuickRuns(dict):
    """Quick runs into one temporary folder, each made the first time a test asks for it (so that
    ``pytest -k NAME`` runs only that experiment)."""

    def __init__(self, out: Path):
        super().__init__()
        self.out = out

    def __missing__(self, name: str) -> dict:
        self[name] = run_experiment(name, out_dir=self.out, quick=True)
        return self[name]


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    runs = QuickRuns(tmp_path_factory.mktemp("figures"))
    return runs.out, runs


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_experiment_agrees_with_closed_form(name, quick_runs):
    out, payloads = quick_runs
    returned = payloads[name]
    payload = json.loads((out / f"{name}.json").read_text())
    assert payload["figures"] and all((out / png).stat().st_size > 10_000 for png in payload["figures"])
    assert payload == json.loads(json.dumps(returned))
    assert payload["config"] == experiment_config(name, quick=True)
    assert payload["quick"] is True and payload["versions"]["jax"]
    CHECKS[name](payload, strict=False)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_committed_figure_agrees_with_closed_form(name):
    payload = json.loads((FIGURES / f"{name}.json").read_text())
    assert all((FIGURES / png).exists() for png in payload.get("figures", [f"{name}.png"]))
    assert payload["quick"] is False
    assert payload["config"] == experiment_config(name, quick=False), "figure is stale: rerun linear-vae reproduce"
    CHECKS[name](payload, strict=True)
