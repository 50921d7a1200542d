"""How long plain gradient ascent takes to leave a collapsed saddle, in closed form.

A zero column of ``W`` is a saddle of the pPCA likelihood while an unused eigenvalue
``lambda > sigma2`` remains (curvature ``(lambda - sigma2) / sigma2^2``,
:func:`linear_vae.theory.ppca.collapsed_curvature`).  Started a small distance from it, gradient ascent
with a constant step ``lr`` leaves it along ``u``; the functions below predict the number of
steps for the squared column norm to reach a fraction of its optimal value ``lambda - sigma2``,
for the MLL (pPCA alone, k = 1) and for the exact ELBO, whose encoder row lags the decoder
column.  The prediction is the continuous gradient flow; discrete steps of a small ``lr`` follow
it to within a few per cent (``linear_vae/experiments/escape_time.py`` measures it).

Every input is in the eigen-coordinates of the escape direction: ``lam`` is its eigenvalue,
``a0`` the initial amplitude of the column along it, ``w0_norm_sq`` the initial squared norm of the
column (the encoder starts at its optimum for that column).

References: docs/theory.md (T9); Lucas et al. 2019, Section 4.1.
"""

from __future__ import annotations

import numpy as np

from linear_vae.theory.ppca import collapsed_curvature

#: Objectives with a prediction: the pPCA likelihood, and the exact (closed-form) ELBO.
OBJECTIVES = ("mll", "exact")


def elbo_growth_rate(lam, sigma2):
    """Positive eigenvalue of the ELBO's Hessian in ``(a, b)`` (``w = a u``, ``v = b u^T``) at the
    collapsed point: ``[[-1/sigma2, lam/sigma2], [lam/sigma2, -lam]]`` (beta = 1, ``D = 1``).

    From the closed-form ELBO (docs/theory.md (T3.1)): ``-1/(2 sigma2) [-2 a b lam + a^2 b^2 lam + D a^2]
    - 1/2 [D + b^2 lam - 1 - log D]`` plus constants.  Returns ``(mu_plus, r)`` with ``(1, r)``
    the unstable eigenvector.

    >>> mu_plus, r = elbo_growth_rate(2.0, 1.0)
    >>> round(float(mu_plus), 4), round(float(r), 4)  # slower than the MLL's (lam - sigma2) / sigma2^2 = 1
    (0.5616, 0.7808)

    References: docs/theory.md (T9.2); Lucas et al. 2019, Section 4.2.
    """
    lam, sigma2 = np.asarray(lam, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    trace = -(1.0 / sigma2 + lam)
    det = lam * (sigma2 - lam) / sigma2**2
    mu_plus = 0.5 * (trace + np.sqrt(trace**2 - 4.0 * det))
    r = (1.0 + sigma2 * mu_plus) / lam
    return mu_plus, r


def flow_steps(lam, sigma2, u0, fraction, learning_rate, rate_scale=1.0):
    """Steps of gradient ascent (continuous flow) for ``u = (u^T w)^2`` to grow from ``u0`` to
    ``fraction * (lam - sigma2)`` on the MLL; ``rate_scale`` multiplies the rate (``mu_+ / c``
    for the ELBO).

    With ``a = lam - sigma2`` and ``u_T = fraction * a``, the flow ``du/dt = 2 lr u (a - u) / (sigma2 + u)^2``
    integrates (partial fractions) to
    ``lr T = 1/2 [(sigma2^2 / a) log(u_T / u0) + (lam^2 / a) log((a - u0) / (a - u_T)) - (u_T - u0)]``.

    >>> round(float(flow_steps(2.0, 1.0, u0=1e-6, fraction=0.5, learning_rate=0.01)), 2)
    769.75

    References: docs/theory.md (T9.1); Lucas et al. 2019, Section 4.1.
    """
    a = lam - sigma2
    uT = fraction * a
    lr_t = 0.5 * ((sigma2**2 / a) * np.log(uT / u0) + (lam**2 / a) * np.log((a - u0) / (a - uT)) - (uT - u0))
    return lr_t / (learning_rate * rate_scale)


def initial_amplitude_sq(lam, sigma2, a0, w0_norm_sq, objective: str):
    """``u_0``: the squared amplitude the flow of :func:`flow_steps` starts from (one per ``sigma2``).

    MLL: ``a0^2``, the squared amplitude along ``u``.  ELBO: the start ``(a0, b0)``, with the encoder
    at its optimum ``b0 = a0 / (||w_0||^2 + sigma2)``, projected on the unstable eigenvector
    ``(1, r)`` of :func:`elbo_growth_rate`, in units of its ``w``-component:
    ``((a0 + r b0) / (1 + r^2))^2``.

    >>> initial_amplitude_sq(2.0, np.array([1.0]), a0=1e-3, w0_norm_sq=0.0, objective="mll")
    array([1.e-06])

    References: docs/theory.md (T9.1, T9.2); Lucas et al. 2019, Section 4.1.
    """
    if objective == "mll":
        return np.full_like(sigma2, a0**2)
    _check_objective(objective)
    _, r = elbo_growth_rate(lam, sigma2)
    b0 = a0 / (w0_norm_sq + sigma2)
    return ((a0 + r * b0) / (1.0 + r**2)) ** 2


def predicted_escape_steps(lam, sigma2, a0, w0_norm_sq, fraction, learning_rate, objective: str):
    """Predicted steps of gradient ascent (constant step ``learning_rate``) until the squared column
    norm reaches ``fraction * (lam - sigma2)``, for ``objective`` ``"mll"`` or ``"exact"`` (the ELBO).

    The MLL's time is :func:`flow_steps` from :func:`initial_amplitude_sq`; the ELBO's is the
    same flow with its rate scaled by ``mu_+ / c`` (:func:`elbo_growth_rate` over
    :func:`linear_vae.theory.ppca.collapsed_curvature`), from the amplitude along its unstable eigenvector.
    Its leading term is ``log(sqrt(u_T / u_0)) / (lr * rate)``: slope -1 against ``lam - sigma2``
    on log axes, up to a slowly varying logarithm.

    From a column of amplitude 1e-3 along an eigenvector with lambda = 2 at sigma2 = 1, the MLL
    escapes in fewer steps than the ELBO, whose unstable direction grows more slowly:

    >>> args = dict(lam=2.0, sigma2=np.array([1.0]), a0=1e-3, w0_norm_sq=0.0, fraction=0.5, learning_rate=0.01)
    >>> predicted_escape_steps(**args, objective="mll").round(1), predicted_escape_steps(**args, objective="exact").round(1)
    (array([769.7]), array([1352.8]))

    References: docs/theory.md (T9); Lucas et al. 2019, Section 4.1.
    """
    _check_objective(objective)
    u0 = initial_amplitude_sq(lam, sigma2, a0, w0_norm_sq, objective)
    scale = 1.0 if objective == "mll" else elbo_growth_rate(lam, sigma2)[0] / collapsed_curvature(lam, sigma2)
    return flow_steps(lam, sigma2, u0, fraction, learning_rate, scale)


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"no escape-time prediction for objective {objective!r}; expected one of {OBJECTIVES}")
