"""Trained against closed form for the linear CVAE and the two-level HVAE: one configuration's report,
and the verification plan of ``linear-vae verify --model cvae|hvae``.

:func:`train_and_compare` trains one configuration (:func:`linear_vae.training.model_objective.fit`) and
compares it with the closed form (:func:`linear_vae.theory.conditional.cvae_optimum`,
:func:`linear_vae.theory.hierarchical.hvae_optimum`): the gap ``trained - optimal`` negative beta-ELBO
(nats per datapoint), the active counts (trained, by the size of each mode; predicted, by the
thresholds) and, per mode, the spectrum (variance units), its threshold, active or collapsed, the KL
and the optimum.  The verdict follows the linear VAE's (:func:`linear_vae.verification.compare.verdict`,
:mod:`linear_vae.verification.verify`):

* *not converged* when the run's own closed-form-free test failed, whatever the gap;
* *disagrees* when it converged but the gap exceeds the tolerance, the trained value beats the
  optimum by more than round-off, or (away from every threshold) an active count differs;
* *agrees* otherwise.  Configurations within :data:`linear_vae.verification.verify.NEAR` of a threshold
  ("near") are judged only on not beating the optimum, as for the linear VAE.

Trained active counts (the rules of :func:`linear_vae.theory.collapse.active_by_column_norm`, relative to
each level's scale): a CVAE mode when ``||eta_enc u1_i||^2 > 1e-3 beta eta_dec^2``; a ``z1`` mode when
the eigenvalue of ``W1 A W1^T`` (``a_i - sigma1^2`` at the optimum) exceeds ``1e-3 sigma1^2``; a ``z2``
mode when the eigenvalue of ``E[m2 m2^T] / eta_enc^2`` exceeds ``1e-3`` (``1e-3 sigma2^2 / eta_enc^2``
with ``Sigma2`` fixed).  At a mode 2% above its threshold these are ten or more times the tolerance;
a collapsed mode decays to round-off.

References: docs/theory.md (T17.7, T7.5, T10).
"""

from __future__ import annotations

import numpy as np

from linear_vae.data.joint_moments import JointMoments
from linear_vae.theory.conditional import cvae_optimum
from linear_vae.theory.hierarchical import hvae_optimum
from linear_vae.training.cvae_training import cvae_model
from linear_vae.training.hvae_training import hvae_model
from linear_vae.training.model_objective import fit
from linear_vae.verification.compare import GAP_TOL, roundoff, verdict
from linear_vae.verification.verify import NEAR, plan_betas

#: Relative size below which a trained mode counts as collapsed (module docstring).
ACTIVE_TOLERANCE = 1e-3


def _mean_square_diag(L, offset, moments: JointMoments) -> np.ndarray:
    """``diag E[(L u + o)(L u + o)^T]`` (numpy; see :mod:`linear_vae.data.joint_expectations`)."""
    J = np.block([[moments.xx, moments.xy], [moments.xy.T, moments.yy]])
    mu = np.concatenate([moments.mean_x, moments.mean_y])
    spread = np.sum((L @ J) * L, axis=1)
    shift = L @ mu
    return spread + ((shift + offset) ** 2 if moments.centred else 2 * offset * shift + offset**2)


def _kl(mean_sq, variances, prior_variance) -> np.ndarray:
    r = variances / prior_variance
    return 0.5 * (r + mean_sq / prior_variance - 1.0 - np.log(r))


def _distance(values, thresholds) -> float:
    values, thresholds = np.atleast_1d(values), np.atleast_1d(thresholds)
    return float(np.min(np.abs(values / thresholds - 1.0))) if values.size else float("inf")


def _judge(report: dict, gap_tolerance: float) -> tuple[str, list[str]]:
    if report["gap"] < -roundoff(report["optimal_elbo"]):
        return "disagrees", [f"trained ELBO exceeds the optimum by {-report['gap']:.2e}"]
    if report["kind"] == "near":  # the collapsed saddle is almost flat there (linear_vae.verification.verify)
        return "agrees", []
    return verdict(report, gap_tolerance)


def _finish(report: dict, trained, optimum_value: float, gap_tolerance: float) -> dict:
    report |= {
        "elbo": -trained.value,
        "optimal_elbo": -optimum_value,
        "gap": trained.value - optimum_value,  # optimal ELBO - trained ELBO
        "converged": trained.converged,
        "predicted_gain": trained.predicted_gain,
        "block_gain": trained.block_gain,
        "steps_used": trained.iterations,
        "seconds": trained.seconds,
        "kind": "near" if report["nearest_threshold_distance"] < NEAR else "far",
    }
    report["status"], report["reasons"] = _judge(report, gap_tolerance)
    return report


def train_and_compare(
    moments: JointMoments,
    model: str,
    decoder_variance: float,
    *,
    latent_dim: int | None = None,
    latent_dims: tuple[int, int] | None = None,
    beta: float = 1.0,
    beta1: float = 1.0,
    beta2: float = 1.0,
    prior_variance: float = 1.0,
    z1_variance: float | None = None,
    z2_variance: float | None = None,
    optimizer: str = "newton",
    iterations: int | None = None,
    seed: int = 0,
    gap_tolerance: float = GAP_TOL,
    learning_rate: float = 1e-2,
) -> dict:
    """Train one ``model`` ("cvae" or "hvae") configuration on ``moments`` and compare it with the closed form.

    Returns a dict: the settings, ``elbo``/``optimal_elbo`` (beta-ELBO per datapoint, constants
    included), ``gap`` (optimal minus trained), ``converged``, ``predicted_gain``, ``steps_used``,
    ``seconds``, ``active_dims``/``predicted_active_dims`` (``[z1, z2]`` for the HVAE),
    ``nearest_threshold_distance``, ``kind`` ("far"/"near"), ``status`` ("agrees", "not converged",
    "disagrees"), ``reasons`` and ``modes`` (one dict per mode: ``spectrum``, ``threshold``, ``active``,
    ``trained_active``, ``kl``, ``trained_kl`` and the optimum's per-mode values).

    >>> m = JointMoments.from_matrices(np.eye(2), np.zeros((2, 2)), np.diag([3.0, 0.5]))
    >>> report = train_and_compare(m, "cvae", 1.0, latent_dim=2)
    >>> report["status"], report["active_dims"], report["modes"][0]["spectrum"], report["modes"][0]["threshold"]
    ('agrees', 1, 3.0, 1.0)

    References: docs/theory.md (T17.7).
    """
    if model == "cvae":
        if latent_dim is None:
            raise ValueError("--model cvae needs --latent-dim")
        return _cvae(
            moments, latent_dim, beta, decoder_variance, prior_variance, optimizer, iterations, seed, gap_tolerance,
            learning_rate,
        )  # fmt: skip
    if model == "hvae":
        if latent_dims is None or z1_variance is None:
            raise ValueError("--model hvae needs --latent-dims D1 D2 and --z1-variance")
        return _hvae(
            moments, tuple(latent_dims), beta1, beta2, z1_variance, decoder_variance, prior_variance, z2_variance,
            optimizer, iterations, seed, gap_tolerance, learning_rate,
        )  # fmt: skip
    raise ValueError(f"unknown model {model!r}; train and verify take cvae or hvae (the vae has its own trainer)")


def _settings(decoder_variance, prior_variance, moments: JointMoments, optimizer, seed) -> dict:
    """The report's settings every model shares (``spectrum_units``: the spectrum is in variance units)."""
    return {
        "sigma2": float(decoder_variance),
        "prior_variance": float(prior_variance),
        "bias": bool(moments.centred),
        "optimizer": optimizer,
        "seed": seed,
        "spectrum_units": "variance",
    }


def _cvae(moments, k, beta, eta2, prior, optimizer, iterations, seed, gap_tolerance, learning_rate) -> dict:
    optimum = cvae_optimum(moments, k, beta, eta2, prior)
    trained = fit(cvae_model(moments, k, beta, eta2, prior), optimizer, iterations, seed, learning_rate=learning_rate)
    p, modes = trained.params, optimum.modes
    norms = prior * np.sum(p.U1**2, axis=0)
    active = norms > ACTIVE_TOLERANCE * modes.threshold
    mean_sq = _mean_square_diag(np.concatenate([p.W1, p.W2], axis=1), p.encoder_bias, moments)
    trained_kl = _kl(mean_sq, p.encoder_variances, prior)
    report = {
        "model": "cvae",
        "latent_dim": k,
        "beta": float(beta),
        **_settings(eta2, prior, moments, optimizer, seed),
        "threshold": modes.threshold,
        "active_dims": int(active.sum()),
        "predicted_active_dims": modes.active_dims,
        "nearest_threshold_distance": _distance(modes.spectrum, modes.threshold),
        "modes": [
            {
                "spectrum": float(modes.spectrum[i]),
                "threshold": modes.threshold,
                "active": bool(modes.active[i]),
                "trained_active": bool(active[i]),
                "kl": float(modes.kl_per_mode[i]),
                "trained_kl": float(trained_kl[i]),
                "decoder_gain": float(modes.decoder_gains[i]),
                "trained_decoder_gain": float(np.sqrt(norms[i] / prior)),
                "encoder_variance": float(modes.encoder_variances[i]),
                "trained_encoder_variance": float(p.encoder_variances[i]),
            }
            for i in range(k)
        ],
    }
    return _finish(report, trained, optimum.value, gap_tolerance)


def _hvae(
    moments, dims, beta1, beta2, s1, eta2, prior, z2_variance, optimizer, iterations, seed, gap_tolerance, learning_rate
) -> dict:
    optimum = hvae_optimum(moments, dims, beta1, beta2, s1, eta2, prior, z2_variance)
    model = hvae_model(moments, dims, beta1, beta2, s1, eta2, prior, z2_variance)
    trained = fit(model, optimizer, iterations, seed, learning_rate=learning_rate)
    p = trained.params
    d1, d2 = dims
    z1_excess = np.sort(np.linalg.eigvalsh(p.W1 @ moments.xx @ p.W1.T))[::-1]
    K = p.W1 @ moments.xx @ p.W1.T + s1 * np.eye(d1)  # centred z1 (the biases centre it), or raw without biases
    if z2_variance is None:  # the represented z2 level: W2 K W2^T diagonal, each mode with its own s_j^2
        m2 = np.diag(p.W2 @ K @ p.W2.T)
        order = np.argsort(-m2)
        m2, s2 = m2[order], p.z2_variances[order]
    else:  # Sigma2 isotropic: the modes are the eigenvectors of W2 K W2^T, whatever the rotation of z2
        m2, s2 = np.sort(np.linalg.eigvalsh(p.W2 @ K @ p.W2.T))[::-1], p.z2_variances
    rho = 1.0 if z2_variance is None else z2_variance / prior
    active_z1 = z1_excess > ACTIVE_TOLERANCE * s1
    active_z2 = m2 / prior > ACTIVE_TOLERANCE * rho
    theta2 = optimum.spectrum
    distances = [_distance(theta2, optimum.z1_thresholds)]
    noise_level = beta2 * eta2 * (1.0 if z2_variance is None else z2_variance / prior)  # beta2 c^2 sigma2^2 (fixed)
    distances.append(_distance(beta1 * s1, noise_level))
    if not optimum.z2_models_z1_noise:
        distances.append(_distance(theta2[:d2], optimum.z2_threshold))
    trained_kl = _kl(m2, s2, prior)
    report = {
        "model": "hvae",
        "latent_dims": [d1, d2],
        "beta1": float(beta1),
        "beta2": float(beta2),
        "z1_variance": float(s1),
        "z2_variance": None if z2_variance is None else float(z2_variance),
        **_settings(eta2, prior, moments, optimizer, seed),
        "z2_threshold": optimum.z2_threshold,
        "z2_models_z1_noise": optimum.z2_models_z1_noise,
        "active_dims": [int(active_z1.sum()), int(active_z2.sum())],
        "predicted_active_dims": [optimum.active_z1_dims, optimum.active_z2_dims],
        "nearest_threshold_distance": min(distances),
        "modes": [
            {
                "spectrum": float(theta2[i]),
                "threshold": float(optimum.z1_thresholds[i]),
                "active": bool(optimum.active_z1[i]),
                "trained_active": bool(active_z1[i]),
                "z1_variance": float(optimum.z1_variances[i]),
                "trained_z1_variance": float(z1_excess[i] + s1),
                **(
                    {
                        "z2_active": bool(optimum.active_z2[i]),
                        "trained_z2_active": bool(active_z2[i]),
                        "kl": float(optimum.z2_kl_per_mode[i]),
                        "trained_kl": float(trained_kl[i]),
                    }
                    if i < d2
                    else {}
                ),
            }
            for i in range(d1)
        ],
    }
    return _finish(report, trained, optimum.value, gap_tolerance)


def plan(moments: JointMoments, model: str, decoder_variance: float, **settings) -> list[dict]:
    """The configurations ``linear-vae verify --model`` trains: for the CVAE the betas of
    :func:`linear_vae.verification.verify.plan_betas` on the residual spectrum ``theta_i`` (between consecutive
    thresholds, below the lowest, above the highest, and two within 0.5% of one); for the HVAE the
    ``beta2`` values that put the ``z2`` threshold ``beta2^2 eta^4 / (beta1 sigma1^2)`` at the same places
    among ``theta_i^2``, at the given ``beta1``.  Each is a dict of :func:`train_and_compare` settings.

    >>> m = JointMoments.from_matrices(np.eye(2), np.zeros((2, 2)), np.diag([3.0, 0.5]))
    >>> [round(c["beta"], 4) for c in plan(m, "cvae", 1.0, latent_dim=2)]
    [1.2247, 0.25, 6.0, 3.015, 2.985]

    References: docs/theory.md (T17.3, T17.4).
    """
    if model == "cvae":
        k = settings["latent_dim"]
        spectrum = cvae_optimum(moments, k, 1.0, decoder_variance).modes.spectrum
        far, near = plan_betas(spectrum, k, decoder_variance)
        return [settings | {"beta": b} for b in far + near]
    d1, d2 = settings["latent_dims"]
    beta1, s1 = settings.get("beta1", 1.0), settings["z1_variance"]
    theta2 = hvae_optimum(moments, (d1, d2), beta1, 1.0, s1, decoder_variance).spectrum[:d2]
    # z2 threshold T at beta2 = sqrt(T beta1 sigma1^2) / eta^2.
    far, near = plan_betas(theta2, d2, 1.0)
    return [settings | {"beta2": float(np.sqrt(T * beta1 * s1) / decoder_variance)} for T in far + near]


def overall_verdict(reports: list[dict]) -> str:
    """ "disagrees" when any report disagrees, else "not converged" when any did not converge, else "agrees".

    >>> overall_verdict([{"status": "agrees"}, {"status": "not converged"}])
    'not converged'
    """
    statuses = {r["status"] for r in reports}
    return "disagrees" if "disagrees" in statuses else "not converged" if "not converged" in statuses else "agrees"
