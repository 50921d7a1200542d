"""Figure 4: the landscape around a collapsed stationary point, from saddle to local maximum.

Claim (Lucas et al. Section 4.1, Figure 1; docs/theory.md (T2.4)): at a fixed ``sigma2`` the decoder
``W0`` whose first columns are ``u_j sqrt(lambda_j - sigma2)`` (``j`` in ``used_directions``) and whose
last column is ZERO is a stationary point of the pPCA marginal likelihood.  Moving the zero column along an unused principal
direction ``u_i`` changes the MLL by ``1/2 (lambda_i - sigma2) / sigma2^2 * a^2`` to second
order (:func:`linear_vae.theory.ppca.collapsed_curvature`): the collapsed point is a saddle while some
unused ``lambda_i > sigma2`` and becomes a local maximum once ``sigma2`` exceeds every unused
eigenvalue.  The ELBO with the optimal encoder (beta = 1) inherits this landscape: on the slice
``a u_2 + b u_3`` the columns stay orthogonal (``W^T W`` diagonal), so it equals the MLL exactly
(docs/theory.md (T3.3)), and it adds no local maximum of its own (Lucas et al. Section 4.2).
Where both directions ascend, the saddle is a local MINIMUM of the plotted slice (it still is a
saddle of the whole landscape: the used columns' directions descend); the titles say so.

We evaluate both objectives on a grid of ``(a, b)`` for three ``sigma2``: below ``lambda_3``
(both directions ascend), between ``lambda_3`` and ``lambda_2`` (only ``u_2`` ascends) and above
``lambda_2`` (a local maximum), on synthetic data whose sample covariance has exactly the
spectrum ``8 * 0.75**i`` (well-separated eigenvalues give a clean picture).  The paper's setting,
MNIST with four used columns and the zero column moved along ``u_5`` and ``u_7``, is
:mod:`linear_vae.experiments.landscape_paper` (only ``CONFIG`` differs).  The whole grid is one
``vmap``ped, ``jit``ted call; no training is involved.  The closed-form quadratic is drawn as lines
(1-D slices) and as the dashed zero-level lines of the predicted quadratic form (contours), the
computed landscape as markers and filled contours; the finite-difference curvature at ``(0, 0)``
is stored next to the prediction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from linear_vae.experiments.common import data_description, load_problem
from linear_vae.experiments.plotting import COLORS, PREDICTION_STYLE, TRAINED_STYLE, new_figure
from linear_vae.theory.elbo import DataStats, exact_elbo, with_optimal_encoder
from linear_vae.theory.ppca import collapsed_curvature, log_marginal_likelihood

NAME = "landscape"
TITLE = "MLL and ELBO around a collapsed stationary point: saddle below the eigenvalues, maximum above"

# --- configuration -------------------------------------------------------------------------------
CONFIG = {
    "data": "synthetic",  # d = 20, sample-covariance eigenvalues exactly 8 * 0.75**i
    "latent_dim": 2,  # column 0 on u_1, column 1 collapsed (zero)
    "used_directions": [0],  # 0-based eigen-directions of the columns before the zero one
    "directions": [1, 2],  # 0-based: the zero column moves along a u_2 + b u_3
    "sigma2s": [3.5, 5.2, 7.0],  # < lambda_3 = 4.5;  in (lambda_3, lambda_2 = 6);  in (lambda_2, lambda_1 = 8)
    "extent": 1.2,  # a, b in [-extent, extent]
    "grid_points": 41,  # odd, so (0, 0) lies on the grid
    "fd_step": 1e-3,  # central second difference for the curvature at (0, 0)
    "basis": "eigen",  # evaluate where S is diagonal; both objectives are rotation invariant
}
QUICK = {"grid_points": 21}


def stationary_column_norms_of(eigenvalues, sigma2, used_directions):
    """Column norms of the collapsed stationary point ``W0``: ``sqrt(lambda_j - sigma2)`` for each used
    direction ``j``, then one zero column (docs/theory.md (T2.4)).

    >>> stationary_column_norms_of([8.0, 6.0, 4.5], 3.5, used_directions=[0])  # sqrt(8 - 3.5), then 0
    array([2.12132034, 0.        ])
    """
    used = np.asarray(eigenvalues)[list(used_directions)]
    if not np.all(used > sigma2):
        raise ValueError(
            f"`sigma2s` = {sigma2} must lie below the used eigenvalues {np.round(used, 6).tolist()}; lower it"
        )
    return np.concatenate([np.sqrt(used - sigma2), [0.0]])


def make_landscape(eigenvectors, cov, mean, eigenvalues, used_directions, directions):
    """``f(a, b, sigma2) -> (MLL, ELBO)`` at ``W0 + (a u_i + b u_j) e_k^T`` (``e_k``: the zero column),
    ``vmap``ped over points and sigma2.

    >>> landscape = make_landscape(np.eye(3), np.array([8.0, 6.0, 4.5]), np.zeros(3), np.array([8.0, 6.0, 4.5]), [0], (1, 2))
    >>> mll, elbo = landscape(jnp.array([0.0, 0.5]), jnp.array([0.0, 0.0]), jnp.array([3.5, 7.0]))
    >>> (mll - mll[:, :1]).round(6), bool(jnp.allclose(mll, elbo))  # u_2 ascends at sigma2 = 3.5, descends at 7; ELBO = MLL
    (Array([[ 0.      ,  0.022646],
           [ 0.      , -0.002767]], dtype=float64), True)
    """
    U = jnp.asarray(eigenvectors)
    stats = DataStats.from_moments(mean, cov)
    used = list(used_directions)
    lam_used = jnp.asarray(np.asarray(eigenvalues)[used])
    i, j = directions
    zero_column = jnp.zeros(len(used) + 1).at[len(used)].set(1.0)

    def objectives(a, b, sigma2):
        W0 = jnp.concatenate([U[:, used] * jnp.sqrt(lam_used - sigma2), jnp.zeros((U.shape[0], 1))], axis=1)
        W = W0 + jnp.outer(a * U[:, i] + b * U[:, j], zero_column)
        mll = log_marginal_likelihood(W, sigma2, stats.cov)
        elbo = exact_elbo(with_optimal_encoder(W, stats.mean, sigma2, 1.0), sigma2, 1.0, stats)
        return mll, elbo

    over_points = jax.vmap(objectives, in_axes=(0, 0, None))
    return jax.jit(jax.vmap(over_points, in_axes=(None, None, 0)))


# --- run -----------------------------------------------------------------------------------------
def run(config: dict, progress=None) -> dict:
    """Both objectives on the ``(a, b)`` grid for each ``sigma2`` (one ``vmap``ped call), the predicted
    and finite-difference curvatures at ``(0, 0)`` and the regime of each ``sigma2``.

    >>> from linear_vae.experiments.runner import experiment_config
    >>> results = run(experiment_config("landscape", quick=True))
    >>> results["regime"]
    ['saddle: ascends along both (a local minimum on this slice)', 'saddle: ascends along one', 'local maximum (here the global one)']
    >>> results["max_curvature_error"] < 1e-4, results["max_abs_elbo_minus_mll"] < 1e-9  # as predicted; ELBO = MLL
    (True, True)
    """
    problem = load_problem(config)
    eigenvalues = problem.eigenvalues
    used = list(config["used_directions"])
    if config["latent_dim"] != len(used) + 1:
        raise ValueError(f"`latent_dim` must be len(`used_directions`) + 1 = {len(used) + 1} (one zero column)")
    i, j = config["directions"]
    if {i, j} & set(used):
        raise ValueError(f"`directions` {[i, j]} must be unused eigen-directions, not in {used}")
    sigma2s = np.asarray(config["sigma2s"], dtype=np.float64)
    for s in sigma2s:
        stationary_column_norms_of(eigenvalues, s, used)
    if config["basis"] == "eigen":
        U, cov, mean = np.eye(problem.d), eigenvalues, problem.mean @ problem.eigenvectors
    else:
        U, cov, mean = problem.eigenvectors, problem.cov, problem.mean
    landscape = make_landscape(U, cov, mean, eigenvalues, used, (i, j))

    axis = np.linspace(-config["extent"], config["extent"], int(config["grid_points"]))
    A, B = np.meshgrid(axis, axis, indexing="ij")  # values[s, p, q] at (a = axis[p], b = axis[q])
    h = config["fd_step"]
    fd_a = np.array([0.0, h, -h, 0.0, 0.0])
    fd_b = np.array([0.0, 0.0, 0.0, h, -h])
    a_all = np.concatenate([A.ravel(), fd_a])
    b_all = np.concatenate([B.ravel(), fd_b])
    if progress:
        progress.task(f"{NAME}: {len(a_all)} points x {len(sigma2s)} sigma2 in one vmapped call")
        progress.phase("computing")
    mll, elbo = (np.asarray(v) for v in landscape(jnp.asarray(a_all), jnp.asarray(b_all), jnp.asarray(sigma2s)))

    n_grid = A.size
    shape = (len(sigma2s),) + A.shape
    mll0, elbo0 = mll[:, n_grid], elbo[:, n_grid]  # the stationary point itself
    mll_grid = mll[:, :n_grid].reshape(shape) - mll0[:, None, None]
    elbo_grid = elbo[:, :n_grid].reshape(shape) - elbo0[:, None, None]

    def second_difference(values):
        f0, fa_p, fa_m, fb_p, fb_m = values[:, n_grid:].T
        return np.stack([(fa_p + fa_m - 2 * f0) / h**2, (fb_p + fb_m - 2 * f0) / h**2], axis=1)

    predicted = np.stack([collapsed_curvature(eigenvalues[[i, j]], s) for s in sigma2s])  # (sigma2, direction)
    fitted_mll = second_difference(mll)
    fitted_elbo = second_difference(elbo)
    centre = len(axis) // 2

    def top_used(s):  # the used directions are the top min(k, #{lambda > sigma2}): the global maximum (T2.4)
        return sorted(used) == list(range(min(len(used) + 1, int(np.sum(eigenvalues > s)))))

    regimes = [
        "saddle: ascends along both (a local minimum on this slice)"
        if np.all(c > 0)
        else ("local maximum (here the global one)" if top_used(s) else "local maximum")
        if np.all(c < 0)
        else "saddle: ascends along one"
        for c, s in zip(predicted, sigma2s)
    ]
    return {
        **data_description(problem, config),
        "sigma2s": sigma2s.tolist(),
        "directions": [i, j],
        "direction_eigenvalues": eigenvalues[[i, j]].tolist(),
        "lambda_1": float(eigenvalues[0]),
        "used_directions": used,
        "stationary_column_norms": [stationary_column_norms_of(eigenvalues, s, used).tolist() for s in sigma2s],
        "axis": axis.tolist(),
        "mll_at_stationary_point": mll0.tolist(),
        "elbo_at_stationary_point": elbo0.tolist(),
        "mll_change": mll_grid.tolist(),  # [sigma2][a index][b index], minus the value at (0, 0)
        "elbo_change": elbo_grid.tolist(),
        "slice_mll": [[g[:, centre].tolist(), g[centre, :].tolist()] for g in mll_grid],  # [sigma2][direction][point]
        "slice_elbo": [[g[:, centre].tolist(), g[centre, :].tolist()] for g in elbo_grid],
        "predicted_curvature": predicted.tolist(),  # (lambda_i - sigma2) / sigma2^2, [sigma2][direction]
        "fitted_curvature_mll": fitted_mll.tolist(),  # central second difference at (0, 0), step fd_step
        "fitted_curvature_elbo": fitted_elbo.tolist(),
        "max_curvature_error": float(
            max(np.max(np.abs(fitted_mll - predicted)), np.max(np.abs(fitted_elbo - predicted)))
        ),
        "max_abs_elbo_minus_mll": float(np.max(np.abs(elbo[:, :n_grid] - mll[:, :n_grid]))),
        "max_change_mll": np.max(mll_grid, axis=(1, 2)).tolist(),  # <= 0 only at a local maximum
        "regime": regimes,
    }


# --- figure --------------------------------------------------------------------------------------
def _sub(i: int) -> str:
    return str(i + 1).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def plot(results: dict, config: dict):
    """The landscape of each ``sigma2`` (filled contours, top) and its two slices (bottom).

    >>> from linear_vae.experiments.runner import experiment_config
    >>> config = experiment_config("landscape", quick=True)
    >>> figure = plot(run(config), config)
    >>> len(figure.axes) >= 6
    True
    """
    fig, axes = new_figure(ncols=3, nrows=2, width=4.1, height=3.5)
    axis = np.array(results["axis"])
    i, j = results["directions"]
    lam_i, lam_j = results["direction_eigenvalues"]
    names = [f"u{_sub(i)}", f"u{_sub(j)}"]
    used = results["used_directions"]
    zero = f"column {len(used) + 1}"
    for col, sigma2 in enumerate(results["sigma2s"]):
        change = np.array(results["mll_change"][col])
        curv = np.array(results["predicted_curvature"][col])
        relation = (
            rf"$\sigma^2$ = {sigma2:g} < $\lambda_{j + 1}$ = {lam_j:.3g}"
            if sigma2 < lam_j
            else rf"$\lambda_{j + 1}$ = {lam_j:.3g} < $\sigma^2$ = {sigma2:g} < $\lambda_{i + 1}$ = {lam_i:.3g}"
            if sigma2 < lam_i
            else rf"$\sigma^2$ = {sigma2:g} > $\lambda_{i + 1}$ = {lam_i:.3g}"
        )

        # top: filled contours of the computed MLL change, zero level solid, predicted zero level dashed
        ax = axes[0, col]
        vmin, vmax = float(change.min()), float(change.max())
        scale = max(abs(vmin), abs(vmax))
        norm = TwoSlopeNorm(vcenter=0.0, vmin=min(vmin, -1e-3 * scale), vmax=max(vmax, 1e-3 * scale))
        filled = ax.contourf(axis, axis, change.T, levels=21, cmap="PuOr_r", norm=norm)
        if vmin < 0 < vmax:
            ax.contour(axis, axis, change.T, levels=[0.0], colors="k", linewidths=1.2)
        if curv[0] * curv[1] < 0:  # quadratic form c_a a^2 + c_b b^2 = 0 along b = +-sqrt(-c_a / c_b) a
            slope = np.sqrt(-curv[0] / curv[1])
            for sign in (1, -1):
                ax.plot(axis, sign * slope * axis, color=COLORS[7], linestyle="--", linewidth=1.2)
        ax.plot([0], [0], marker="*", color="k", markersize=10, linestyle="none")
        ax.set_xlim(axis[0], axis[-1])
        ax.set_ylim(axis[0], axis[-1])
        ax.set_aspect("equal")
        ax.set_xlabel(f"a ({zero} along {names[0]})")
        ax.set_ylabel(f"b ({zero} along {names[1]})")
        ax.set_title(f"{relation}\n{results['regime'][col]}".replace(" (", "\n("))  # narrow panels
        bar = fig.colorbar(filled, ax=ax, shrink=0.9)
        bar.set_label("MLL change (nats per datapoint)")
        bar.formatter.set_powerlimits((-2, 2))

        # bottom: 1-D slices, closed-form quadratic (lines) and computed MLL / ELBO (markers)
        ax = axes[1, col]
        for d, (name, color) in enumerate(zip(names, (COLORS[0], COLORS[3]))):
            ax.plot(
                axis,
                0.5 * curv[d] * axis**2,
                color=color,
                **PREDICTION_STYLE,
                label=rf"quadratic $\frac{{1}}{{2}}(\lambda - \sigma^2)a^2/\sigma^4$, {name}",
            )
            ax.plot(
                axis, results["slice_mll"][col][d], color=color, markevery=2, **TRAINED_STYLE, label=f"MLL along {name}"
            )
            ax.plot(
                axis,
                results["slice_elbo"][col][d],
                color=color,
                linestyle="none",
                marker="x",
                markersize=4,
                markevery=(1, 2),
                label=f"ELBO (opt. encoder) along {name}",
            )
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        computed = np.concatenate([results["slice_mll"][col][0], results["slice_mll"][col][1]])
        pad = 0.08 * (computed.max() - computed.min())
        ax.set_ylim(computed.min() - pad, computed.max() + pad)  # the local quadratic may leave the frame
        ax.set_xlabel(f"a (along {names[0]}) or b (along {names[1]})")
        ax.set_ylabel("change from W0 (nats per datapoint)")
        ax.yaxis.get_major_formatter().set_powerlimits((-2, 2))
        ax.set_title(rf"slices, $\sigma^2$ = {sigma2:g}")
    from matplotlib.lines import Line2D

    handles, labels = axes[1, 0].get_legend_handles_labels()
    handles += [
        Line2D([], [], color="k", linewidth=1.2),
        Line2D([], [], color=COLORS[7], linestyle="--", linewidth=1.2),
        Line2D([], [], color="k", marker="*", markersize=10, linestyle="none"),
    ]
    labels += ["computed MLL change = 0 (contours)", "closed-form quadratic = 0 (contours)", "stationary point W0"]
    fig.legend(handles, labels, loc="outside lower center", ncol=3)
    if len(used) == 1:
        columns = f"column 1 = u{_sub(used[0])}·sqrt(λ{_sub(used[0])} − σ²)"
    else:
        columns = f"columns 1–{len(used)} = u_j·sqrt(λ_j − σ²), j = " + ", ".join(str(u + 1) for u in used)
    data = f"MNIST ({results['n']} digits)" if results["data"] == "mnist" else f"{results['data']} data"
    fig.suptitle(
        f"Around the collapsed stationary point W0 ({columns}, {zero} = 0), {data}, d = {results['d']}\n"
        f"perturbed to {zero} = a u{_sub(i)} + b u{_sub(j)}; the ELBO with the optimal encoder equals "
        f"the MLL on this slice (the columns stay orthogonal)"
    )
    return fig
