"""The linear CVAE's exact objective, and the model object that trains it (:mod:`linear_vae.training.model_objective`).

**Exact objective** (:func:`cvae_negative_elbo`; docs/theory.md (T17.3)), per datapoint, for
``q(z|x,y) = N(W1 x + W2 y + b, diag(s^2))``, ``p(y|z,x) = N(U1 z + U2 x + c, eta_dec^2 I)``,
``p(z|x) = N(0, eta_enc^2 I)``:

``L = [E||y - U1 m - U2 x - c||^2 + sum_j s_j^2 ||u1_j||^2] / (2 eta_dec^2) + (d_y/2) log(2 pi eta_dec^2)
+ (beta/2) [(sum_j s_j^2 + E||m||^2) / eta_enc^2 - d_z - sum_j log s_j^2 + d_z log eta_enc^2]``,
``m = W1 x + W2 y + b``.

**What is trained** (docs/theory.md (T17.7)).  Three blocks are profiled out in closed form given
the rest: ``U2`` (given everything else, ``L`` is a least-squares problem in ``U2`` whose
minimiser is ``C^T A^+`` whatever the other blocks are, since ``I - U1 (M^{-1}) U1^T`` weighs every
residual direction positively), the encoder given the decoder (Lucas et al., Appendix C, with the
latent rescaled by ``eta_enc``), and the latent rotation.  What is left is the linear VAE's
projected objective ``Phi`` (docs/theory.md (T7.1)) on the residual second moment
``S(U2) = E[(y - U2 x)(y - U2 x)^T]`` with decoder ``W = eta_enc U1``, ``sigma2 = eta_dec^2``:
``L = -Phi(eta_enc U1; S, eta_dec^2, beta)``.  Newton climbs it from a random ``U1``; the eigenvectors
of ``S``, the thresholds and the closed-form optimum are never read.

References: docs/theory.md (T17.3, T17.7, T7.1); Dang et al. 2024 (arXiv:2306.05023), Section 4.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.core.validation import check_count, check_positive
from linear_vae.data.joint_expectations import JointArrays, expected_square
from linear_vae.data.joint_moments import JointMoments, regression_map
from linear_vae.data.moments import LOG_2PI
from linear_vae.theory.conditional import CVAEParams
from linear_vae.theory.elbo import DataStats
from linear_vae.training.model_objective import ModelObjective, static_last_field
from linear_vae.training.projected import projected_elbo, represented_vae, rotation_projector


@static_last_field
class CVAEData(NamedTuple):
    """What the CVAE's functions read (a pytree of arrays).

    ``U2`` is the least-squares regression map ``C^T A^+``, ``S`` the residual second moment it leaves,
    ``joint`` the moments for the exact objective, the rest the hyperparameters.
    """

    joint: JointArrays
    S: jax.Array
    trace: jax.Array
    U2: jax.Array
    beta: jax.Array
    decoder_variance: jax.Array
    prior_variance: jax.Array
    latent_dim: int


def cvae_negative_elbo(params: CVAEParams, data: CVAEData):
    """The exact negative beta-ELBO per datapoint of the module docstring (nats, constants included).

    >>> import numpy as np
    >>> m = JointMoments.from_matrices(np.eye(1), np.zeros((1, 1)), np.eye(1))
    >>> data = cvae_model(m, 1, beta=1.0, decoder_variance=1.0).data
    >>> prior = CVAEParams(*(np.zeros((1, 1)),) * 2, np.zeros(1), np.ones(1), *(np.zeros((1, 1)),) * 2, np.zeros(1))
    >>> round(float(cvae_negative_elbo(prior, data)), 6)  # the collapsed model: (1/2) log(2 pi) + 1/2
    1.418939

    References: docs/theory.md (T17.3).
    """
    W1, W2, b, s2, U1, U2, c = params
    d_y, k = U1.shape
    encoder = jnp.concatenate([W1, W2], axis=1)
    residual = jnp.concatenate([-(U1 @ W1 + U2), jnp.eye(d_y) - U1 @ W2], axis=1)
    squared = expected_square(residual, -(U1 @ b + c), data.joint) + jnp.sum(U1**2 * s2[None, :])
    eta_dec2, eta_enc2 = data.decoder_variance, data.prior_variance
    kl = 0.5 * (
        (jnp.sum(s2) + expected_square(encoder, b, data.joint)) / eta_enc2
        - k
        - jnp.sum(jnp.log(s2))
        + k * jnp.log(eta_enc2)
    )
    return squared / (2.0 * eta_dec2) + 0.5 * d_y * (LOG_2PI + jnp.log(eta_dec2)) + data.beta * kl


def _decoder(x, data: CVAEData):
    return x.reshape(data.S.shape[0], data.latent_dim)


def _negative(x, data: CVAEData):
    """``-Phi(eta_enc U1; S, eta_dec^2, beta)`` with ``x = vec(eta_enc U1)``."""
    stats = DataStats(jnp.zeros(data.S.shape[0]), data.S, data.trace, jnp.asarray(data.S.shape[0], jnp.float64))
    return -projected_elbo(_decoder(x, data), jnp.log(data.decoder_variance), data.beta, stats)


def _projector(x, data: CVAEData):
    project_W = rotation_projector(_decoder(x, data))
    return lambda v: project_W(_decoder(v, data)).reshape(-1)


def _complete(x, data: CVAEData) -> CVAEParams:
    """``U2 = C^T A^+``, ``U1 = W R / eta_enc``, the encoder ``m = eta_enc V (y - U2 x) + b``, ``s^2 = eta_enc^2 D``
    (``(W R, V, D)``: :func:`linear_vae.training.projected.represented_vae`), biases centring both sides."""
    vae = represented_vae(_decoder(x, data), jnp.zeros(data.S.shape[0]), data.decoder_variance, data.beta)
    eta_enc = jnp.sqrt(data.prior_variance)
    W2 = eta_enc * vae.V
    W1 = -W2 @ data.U2
    d_x = data.U2.shape[1]
    mean_x, mean_y = data.joint.mu[:d_x], data.joint.mu[d_x:]
    encoder_bias = -data.joint.centred * (W1 @ mean_x + W2 @ mean_y)
    decoder_bias = data.joint.centred * (mean_y - data.U2 @ mean_x)
    return CVAEParams(
        W1, W2, encoder_bias, data.prior_variance * jnp.exp(vae.log_D), vae.W / eta_enc, data.U2, decoder_bias
    )


def _initial(key, data: CVAEData):
    scale = 1e-2 * jnp.sqrt(data.trace / data.S.shape[0])
    return scale * jax.random.normal(key, (data.S.shape[0] * data.latent_dim,), jnp.float64)


def cvae_model(
    moments: JointMoments, latent_dim: int, beta: float, decoder_variance: float, prior_variance: float = 1.0
) -> ModelObjective:
    """The linear CVAE on ``moments`` as a :class:`linear_vae.training.model_objective.ModelObjective`
    (``x = vec(eta_enc U1)``; the module docstring says what is profiled out).

    >>> import numpy as np
    >>> from linear_vae.training.model_objective import fit
    >>> m = JointMoments.from_matrices(np.eye(2), np.eye(2), np.diag([3.5, 1.5]))
    >>> model = cvae_model(m, latent_dim=2, beta=1.0, decoder_variance=1.0)
    >>> np.diag(np.asarray(model.data.S))  # S = B - C^T A^+ C
    array([2.5, 0.5])
    >>> U1 = fit(model).params.U1  # columns sqrt((theta_i - beta eta_dec^2)_+) / eta_enc along S's eigenvectors
    >>> np.round(np.abs(U1), 6)
    array([[1.224745, 0.      ],
           [0.      , 0.      ]])

    References: docs/theory.md (T17.3, T17.7).
    """
    beta = check_positive("beta", beta)
    decoder_variance = check_positive("decoder_variance", decoder_variance)
    prior_variance = check_positive("prior_variance", prior_variance)
    latent_dim = check_count("latent_dim", latent_dim, moments.d_y, "d_y, the dimension of y")
    U2 = regression_map(moments)
    S = moments.yy - U2 @ moments.xy - moments.xy.T @ U2.T + U2 @ moments.xx @ U2.T
    S = (S + S.T) / 2
    # S is positive semi-definite; where y is a linear function of x (S = 0) round-off can leave its trace
    # at -1e-14, whose square root (the start's scale and the trust region's) would be NaN
    trace = abs(float(np.trace(S)))
    data = CVAEData(
        JointArrays.from_moments(moments),
        jnp.asarray(S),
        jnp.asarray(trace),
        jnp.asarray(U2),
        jnp.asarray(beta),
        jnp.asarray(decoder_variance),
        jnp.asarray(prior_variance),
        latent_dim,
    )
    return ModelObjective("cvae", data, _negative, _projector, _complete, cvae_negative_elbo, _initial, np.sqrt(trace))
