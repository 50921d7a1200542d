"""The two-level linear HVAE's exact objective, and the model object that trains it (:mod:`linear_vae.training.model_objective`).

**Exact objective** (:func:`hvae_negative_elbo`; docs/theory.md (T17.4)), per datapoint, for
``q(z1|x) = N(W1 x + b1, sigma1^2 I)``, ``q(z2|z1) = N(W2 z1 + b2, Sigma2)``, ``p(y|z1) = N(U1 z1 + c1, eta_dec^2 I)``,
``p(z1|z2) = N(U2 z2 + c2, eta_dec^2 I)``, ``p(z2) = N(0, eta_enc^2 I)``, ``Sigma2 = diag(s^2)``:

``L = [E||y - U1 m1 - c1||^2 + sigma1^2 ||U1||_F^2] / (2 eta_dec^2) + (d_y/2) log(2 pi eta_dec^2)
+ beta1 {[E||(I - U2 W2) m1 - U2 b2 - c2||^2 + sigma1^2 ||I - U2 W2||_F^2 + sum_j s_j^2 ||u2_j||^2] / (2 eta_dec^2)
+ (d1/2) log(eta_dec^2 / sigma1^2) - d1/2}
+ (beta2/2) [(E||W2 m1 + b2||^2 + sigma1^2 ||W2||_F^2 + sum_j s_j^2) / eta_enc^2 - d2 - sum_j log s_j^2 + d2 log eta_enc^2]``,
``m1 = W1 x + b1``.

**What is trained** (docs/theory.md (T17.7)).  ``x = (Omega, eta_enc U2)`` with ``W1 = Omega A^{-1/2}`` on the
range of ``A`` (directions ``x`` never moves along cannot matter; this also makes the variable
scale-free in ``x``).  Profiled out given ``x``: ``U1`` (least squares: ``U1 = C^T W1^T K^{-1}``,
``K = Omega Omega^T + sigma1^2 I = E[z1 z1^T]``, which leaves ``E||y||^2 - tr(K^{-1} Omega G Omega^T)`` with
``G = Z^T Z``, ``Z = C^T A^{-1/2}``), the biases, and the ``z2`` encoder given its decoder: the ``z2`` level is a
linear VAE on ``z1`` (second moment ``K``, decoder noise ``eta_dec^2``, weight ``beta2 / beta1`` on its KL), so
with ``Sigma2`` learned it contributes ``beta1 (-Phi(eta_enc U2; K, eta_dec^2, beta2 / beta1))`` (docs/theory.md
(T7.1)), and with ``Sigma2 = sigma2^2 I`` fixed ``beta1 [tr K - tr(M^{-1} Ũ^T K Ũ) + rho ||Ũ||^2] / (2 eta_dec^2)``
plus constants (``Ũ = eta_enc U2``, ``M = Ũ^T Ũ + (beta2 / beta1) eta_dec^2 I``, ``rho = sigma2^2 / eta_enc^2``).
Newton climbs the rest from a random start; the singular vectors of ``Z``, the thresholds and the
closed-form optimum are never read.  The latent rotation of ``z2`` is projected out as the linear
VAE's; that of ``z1`` (``Omega -> Q Omega``, ``U2 -> Q U2``) is left to the trust-region solver, whose
conjugate gradients stop at a direction of zero curvature.

References: docs/theory.md (T17.4, T17.5, T17.7, T7.1); Dang et al. 2024 (arXiv:2306.05023), Section 4.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.core.spd import cholesky, eigh, solve
from linear_vae.core.validation import check_count, check_positive
from linear_vae.data.joint_expectations import JointArrays, expected_square
from linear_vae.data.joint_moments import JointMoments, range_of_xx
from linear_vae.data.moments import LOG_2PI
from linear_vae.theory.elbo import DataStats
from linear_vae.theory.hierarchical import HVAEParams
from linear_vae.training.model_objective import ModelObjective, static_last_field
from linear_vae.training.projected import inverse_and_log_det, projected_elbo, represented_vae, rotation_projector


@static_last_field
class HVAEData(NamedTuple):
    """What the HVAE's functions read (a pytree of arrays; the dimensions and whether ``Sigma2`` is
    learned are static).  ``whiten`` is ``A^{-1/2}`` on the range of ``A`` as an (r, d_x) map, ``G = Z^T Z``
    in those r coordinates, ``cross = C^T whiten^T`` (d_y, r)."""

    joint: JointArrays
    whiten: jax.Array
    G: jax.Array
    cross: jax.Array
    trace_yy: jax.Array
    beta1: jax.Array
    beta2: jax.Array
    z1_variance: jax.Array
    decoder_variance: jax.Array
    prior_variance: jax.Array
    z2_variance: jax.Array  # used only when Sigma2 is fixed
    dims: tuple  # (d1, d2, r, learned)


def hvae_negative_elbo(params: HVAEParams, data: HVAEData):
    """The exact negative beta-ELBO per datapoint of the module docstring (nats, constants included).

    >>> import numpy as np
    >>> m = JointMoments.from_matrices(np.eye(1), np.zeros((1, 1)), np.eye(1))
    >>> data = hvae_model(m, (1, 1), 1.0, 1.0, z1_variance=1.0, decoder_variance=1.0).data
    >>> zero = np.zeros((1, 1))
    >>> prior = HVAEParams(zero, np.zeros(1), zero, np.zeros(1), np.ones(1), zero, np.zeros(1), zero, np.zeros(1))
    >>> round(float(hvae_negative_elbo(prior, data)), 6)  # (1/2) log(2 pi) + E y^2 / 2; the z1 terms cancel
    1.418939

    References: docs/theory.md (T17.4).
    """
    W1, b1, W2, b2, s2, U1, c1, U2, c2 = params
    d1, d2 = W1.shape[0], W2.shape[0]
    d_y = U1.shape[0]
    s1, eta_dec2, eta_enc2 = data.z1_variance, data.decoder_variance, data.prior_variance
    on_x = jnp.concatenate([W1, jnp.zeros((d1, d_y))], axis=1)  # m1 - b1 as a map of the pair
    fit_y = expected_square(
        jnp.concatenate([-U1 @ W1, jnp.eye(d_y)], axis=1), -(U1 @ b1 + c1), data.joint
    ) + s1 * jnp.sum(U1**2)
    back = jnp.eye(d1) - U2 @ W2
    fit_z1 = (
        expected_square(back @ on_x, back @ b1 - U2 @ b2 - c2, data.joint)
        + s1 * jnp.sum(back**2)
        + jnp.sum(U2**2 * s2[None, :])
    )
    mean_sq_z2 = expected_square(W2 @ on_x, W2 @ b1 + b2, data.joint) + s1 * jnp.sum(W2**2)
    kl_z2 = 0.5 * ((mean_sq_z2 + jnp.sum(s2)) / eta_enc2 - d2 - jnp.sum(jnp.log(s2)) + d2 * jnp.log(eta_enc2))
    return (
        fit_y / (2.0 * eta_dec2)
        + 0.5 * d_y * (LOG_2PI + jnp.log(eta_dec2))
        + data.beta1 * (fit_z1 / (2.0 * eta_dec2) + 0.5 * d1 * (jnp.log(eta_dec2 / s1) - 1.0))
        + data.beta2 * kl_z2
    )


def _blocks(x, data: HVAEData):
    d1, d2, r, _ = data.dims
    return x[: d1 * r].reshape(d1, r), x[d1 * r :].reshape(d1, d2)


def _z1_moment(Omega, data: HVAEData):
    return Omega @ Omega.T + data.z1_variance * jnp.eye(Omega.shape[0])


def _negative(x, data: HVAEData):
    """``L`` with ``U1``, the biases and the ``z2`` encoder at their maximisers given ``x`` (module docstring)."""
    d1, d2, r, learned = data.dims
    Omega, U = _blocks(x, data)
    K = _z1_moment(Omega, data)
    K_inv, _ = inverse_and_log_det(K)
    eta_dec2 = data.decoder_variance
    explained = jnp.sum(K_inv * (Omega @ data.G @ Omega.T))
    d_y = data.cross.shape[0]
    level_y = (data.trace_yy - explained) / (2.0 * eta_dec2) + 0.5 * d_y * (LOG_2PI + jnp.log(eta_dec2))
    beta = data.beta2 / data.beta1
    if learned:
        stats = DataStats(jnp.zeros(d1), K, jnp.trace(K), jnp.asarray(d1, jnp.float64))
        level_z2 = -projected_elbo(U, jnp.log(eta_dec2), beta, stats)
    else:
        t = beta * eta_dec2
        rho = data.z2_variance / data.prior_variance
        M_inv, _ = inverse_and_log_det(U.T @ U + t * jnp.eye(d2))
        fit = jnp.trace(K) - jnp.sum(M_inv * (U.T @ K @ U)) + rho * jnp.sum(U**2)
        level_z2 = (
            fit / (2.0 * eta_dec2)
            + 0.5 * d1 * (LOG_2PI + jnp.log(eta_dec2))
            + 0.5 * beta * d2 * (rho - 1.0 - jnp.log(rho))
        )
    return level_y + data.beta1 * (level_z2 - 0.5 * d1 * (LOG_2PI + jnp.log(data.z1_variance) + 1.0))


def _projector(x, data: HVAEData):
    d1, d2, r, _ = data.dims
    _, U = _blocks(x, data)
    project_U = rotation_projector(U)
    return lambda v: v.at[d1 * r :].set(project_U(v[d1 * r :].reshape(d1, d2)).reshape(-1))


def _complete(x, data: HVAEData) -> HVAEParams:
    """``W1 = Omega A^{-1/2}``, ``U1 = C^T W1^T K^{-1}``, the ``z2`` level from :func:`linear_vae.training.projected.represented_vae`
    (learned ``Sigma2``) or ``W2 = eta_enc M^{-1} Ũ^T`` with ``Ũ``'s columns rotated orthogonal (fixed), biases centring
    ``z1`` and ``y``."""
    d1, d2, r, learned = data.dims
    Omega, U = _blocks(x, data)
    K = _z1_moment(Omega, data)
    W1 = Omega @ data.whiten
    U1 = solve(cholesky(K), Omega @ data.cross.T).T  # (K^{-1} Omega Z^T)^T = C^T W1^T K^{-1}
    eta_enc = jnp.sqrt(data.prior_variance)
    beta = data.beta2 / data.beta1
    if learned:
        vae = represented_vae(U, jnp.zeros(d1), data.decoder_variance, beta)
        U2, W2, s2 = vae.W / eta_enc, eta_enc * vae.V, data.prior_variance * jnp.exp(vae.log_D)
    else:
        t = beta * data.decoder_variance
        _, R = eigh(U.T @ U)
        U = U @ R[:, ::-1]  # orthogonal columns by decreasing norm, as represented_vae's (Sigma2 is isotropic)
        W2 = eta_enc * solve(cholesky(U.T @ U + t * jnp.eye(d2)), U.T)
        U2, s2 = U / eta_enc, jnp.full(d2, data.z2_variance)
    d_x = data.whiten.shape[1]
    mean_x, mean_y = data.joint.mu[:d_x], data.joint.mu[d_x:]
    b1 = -data.joint.centred * (W1 @ mean_x)
    c1 = data.joint.centred * mean_y
    return HVAEParams(W1, b1, W2, jnp.zeros(d2), s2, U1, c1, U2, jnp.zeros(d1))


def _initial(key, data: HVAEData):
    d1, d2, r, _ = data.dims
    return 1e-2 * jnp.sqrt(data.z1_variance) * jax.random.normal(key, (d1 * r + d1 * d2,), jnp.float64)


def hvae_model(
    moments: JointMoments,
    latent_dims: tuple[int, int],
    beta1: float,
    beta2: float,
    z1_variance: float,
    decoder_variance: float,
    prior_variance: float = 1.0,
    z2_variance: float | None = None,
) -> ModelObjective:
    """The two-level linear HVAE on ``moments`` as a :class:`linear_vae.training.model_objective.ModelObjective`
    (``z2_variance=None``: ``Sigma2`` learned, else fixed to ``z2_variance I``; the module docstring says
    what is trained and what is profiled out).

    >>> import numpy as np
    >>> from linear_vae.training.model_objective import fit
    >>> m = JointMoments.from_matrices(np.eye(2), np.diag([2.0, 0.5]), np.diag([4.0, 0.25]))
    >>> from linear_vae.theory.hierarchical import hvae_optimum
    >>> trained = fit(hvae_model(m, (2, 1), beta1=1.0, beta2=1.0, z1_variance=0.5, decoder_variance=1.0))
    >>> trained.converged, abs(trained.value - hvae_optimum(m, (2, 1), 1.0, 1.0, 0.5, 1.0).value) < 1e-9
    (True, True)

    References: docs/theory.md (T17.4, T17.5, T17.7).
    """
    beta1, beta2 = check_positive("beta1", beta1), check_positive("beta2", beta2)
    z1_variance = check_positive("z1_variance", z1_variance)
    decoder_variance = check_positive("decoder_variance", decoder_variance)
    prior_variance = check_positive("prior_variance", prior_variance)
    learned = z2_variance is None
    z2_variance = 1.0 if learned else check_positive("z2_variance", z2_variance)
    if np.ndim(latent_dims) != 1 or len(latent_dims) != 2:
        raise ValueError(f"`latent_dims` must be two numbers (d1, d2), got {latent_dims!r}")
    d1 = check_count("d1", latent_dims[0], moments.d_x, "d_x, the dimension of x")
    d2 = check_count("d2", latent_dims[1], d1, "d1: z2 has no more dimensions than z1")
    phi, V = range_of_xx(moments)
    whiten = (V / np.sqrt(phi)).T  # (r, d_x)
    cross = moments.xy.T @ whiten.T  # Z in range coordinates, (d_y, r)
    G = cross.T @ cross
    data = HVAEData(
        JointArrays.from_moments(moments),
        jnp.asarray(whiten),
        jnp.asarray((G + G.T) / 2),
        jnp.asarray(cross),
        jnp.asarray(float(np.trace(moments.yy))),
        jnp.asarray(beta1),
        jnp.asarray(beta2),
        jnp.asarray(z1_variance),
        jnp.asarray(decoder_variance),
        jnp.asarray(prior_variance),
        jnp.asarray(z2_variance),
        (d1, d2, len(phi), learned),
    )
    # ||Omega||^2 and ||Ũ||^2 are at most sum_i a_i, with a_i <= max(theta_i^2 sigma1^2 / (beta2 eta^2), theta_i sigma1 / sqrt(beta1)).
    total = float(np.trace(G))
    bound = (
        d1 * z1_variance + z1_variance * total / (beta2 * decoder_variance) + np.sqrt(d1 * total * z1_variance / beta1)
    )
    return ModelObjective(
        "hvae", data, _negative, _projector, _complete, hvae_negative_elbo, _initial, np.sqrt(2 * bound)
    )
