"""Shared figure style and atomic PNG writing for every experiment (one place, not one per script).

Colours are the Okabe-Ito palette (distinguishable with every common colour-vision deficiency);
the closed-form prediction is always drawn as a line and trained results as markers, so that
agreement is visible at a glance.
"""

from __future__ import annotations

import io as _io

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from linear_vae.core.io import atomic_write_bytes  # noqa: E402
from linear_vae.theory.metrics import rate_distortion_frontier  # noqa: E402

#: Okabe & Ito (2008) colour-blind-safe palette.
COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
PREDICTION_STYLE = {"linestyle": "-", "linewidth": 1.8}
TRAINED_STYLE = {"linestyle": "none", "marker": "o", "markersize": 5, "markerfacecolor": "none", "markeredgewidth": 1.4}

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 8.5,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.prop_cycle": matplotlib.cycler(color=COLORS),
    }
)


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.2, height: float = 3.8, **kwargs):
    """A figure of ``nrows x ncols`` panels, each ``width x height`` inches, laid out without overlaps.

    >>> fig, axes = new_figure(ncols=2, width=3.0, height=2.0)
    >>> axes.shape, fig.get_size_inches().tolist()
    ((1, 2), [6.0, 2.0])
    >>> plt.close(fig)
    """
    return plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained", squeeze=False, **kwargs
    )


def save_png(fig, path) -> None:
    """Render ``fig`` to PNG in memory, then write it atomically (an interrupted run keeps the old file).

    >>> import tempfile
    >>> from pathlib import Path
    >>> fig, axes = new_figure(width=1.0, height=1.0)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save_png(fig, Path(folder) / "empty.png")
    ...     (Path(folder) / "empty.png").read_bytes()[1:4]
    b'PNG'
    """
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


#: The note :func:`mark_quick` puts on every figure of ``linear-vae reproduce --quick``.
QUICK_NOTE = "quick budget: may not have converged; see the full figures"


def mark_quick(fig, note: str = QUICK_NOTE, strip: float = 0.3) -> None:
    """Write ``note`` in a strip ``strip`` inches tall added below everything else on ``fig``.

    The layout is computed once and frozen, then the figure grows by the strip and every panel,
    figure title and figure legend moves up by it unchanged, so the note overlaps nothing (a
    figure legend "outside lower center" sits at the figure's bottom edge, where a note placed by
    the layout engine alone would collide with it).

    >>> fig, axes = new_figure(width=2.0, height=2.0)
    >>> mark_quick(fig)
    >>> [text.get_text() == QUICK_NOTE for text in fig.texts], fig.get_size_inches().round(2).tolist()
    ([True], [2.0, 2.3])
    >>> plt.close(fig)
    """
    if any(text.get_text() == note for text in fig.texts):
        return
    fig.draw_without_rendering()  # run the layout engine: positions as they would be saved
    fig.set_layout_engine("none")  # ... and keep them
    width, height = fig.get_size_inches()
    frac = strip / (height + strip)

    def up(y):  # figure fraction before -> after growing at the bottom
        return frac + y * (1 - frac)

    fig.set_size_inches(width, height + strip)
    for ax in fig.axes:  # panels and colour bars
        x0, y0, w, h = ax.get_position().bounds
        ax.set_position((x0, up(y0), w, h * (1 - frac)))
    for text in fig.texts:  # figure texts, suptitle and sup-labels included
        if text.get_transform() is fig.transFigure:
            x, y = text.get_position()
            text.set_position((x, up(y)))
    for legend in fig.legends:  # anchored to the whole figure: anchor to the part above
        if legend.get_bbox_to_anchor() is fig.bbox:
            legend.set_bbox_to_anchor((0, frac, 1, 1 - frac), transform=fig.transFigure)
    fig.text(0.5, frac / 2, note, ha="center", va="center", color="#D55E00", fontsize=9, fontweight="bold")


def log_axis(ax, which: str = "x", subs=(1.0, 2.0, 5.0)) -> None:
    """Log scale with plain-number labels at ``subs`` x 10^n (default 1, 2, 5; pass ``(1.0,)`` for
    decades only on axes spanning more than about three decades) and no minor-tick labels.

    >>> fig, axes = new_figure(width=2.0, height=2.0)
    >>> log_axis(axes[0, 0], "y")
    >>> axes[0, 0].get_yscale()
    'log'
    >>> plt.close(fig)
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def frontier_curve(eigenvalues, latent_dim: int, theta_min: float, theta_max: float, *, trace=None, dim=None):
    """``(theta, R, D)`` on a log grid of water levels plus every eigenvalue inside it (the kinks).

    >>> theta, rate, distortion = frontier_curve([4.0, 1.0, 0.5], latent_dim=2, theta_min=0.5, theta_max=4.0)
    >>> len(theta), float(theta[0]), float(theta[-1]), round(float(rate[-1]), 6), round(float(distortion[-1]), 6)
    (301, 4.0, 0.5, 1.386294, 1.5)
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)[:latent_dim]
    grid = np.geomspace(theta_min, theta_max, 300)
    kinks = lam[(lam > theta_min) & (lam < theta_max)]
    theta = np.unique(np.concatenate([grid, kinks]))[::-1]
    rate, distortion = rate_distortion_frontier(eigenvalues, latent_dim, theta, trace=trace, dim=dim)
    return theta, rate, distortion


def draw_frontier(
    ax,
    eigenvalues,
    latent_dim: int,
    *,
    trace=None,
    dim=None,
    theta_range=None,
    color=None,
    label: str | None = None,
    mark_thresholds: bool = True,
):
    """Draw the frontier ``D_k(R)`` of :func:`linear_vae.theory.metrics.rate_distortion_frontier` on ``ax``
    (rate in nats per datapoint on x, distortion in squared data units on y), as a line, with its
    collapse thresholds ``theta = lambda_i`` (``i <= k``, inside ``theta_range``) as dots.

    ``eigenvalues``: the full spectrum, or its top ``m >= k`` with ``trace`` and ``dim``;
    ``theta_range``: ``(theta_min, theta_max)``, default ``(lambda_k / 10, lambda_1)`` (down to
    ``lambda_1 / 1e4`` when ``lambda_k`` is 0).  Returns the line.

    >>> fig, axes = new_figure(width=2.0, height=2.0)
    >>> line = draw_frontier(axes[0, 0], [4.0, 1.0, 0.5], latent_dim=2, label="K = 2")
    >>> line.get_label(), len(line.get_xdata())
    ('K = 2', 301)
    >>> plt.close(fig)

    References: docs/theory.md (T11.5); Alemi et al. 2018.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if theta_range is None:
        low = lam[min(latent_dim, len(lam)) - 1]
        theta_range = (low / 10 if low > 0 else lam[0] * 1e-4, lam[0])
    theta, rate, distortion = frontier_curve(lam, latent_dim, *theta_range, trace=trace, dim=dim)
    (line,) = ax.plot(rate, distortion, color=color, label=label, **PREDICTION_STYLE)
    if mark_thresholds:
        kinks = lam[:latent_dim]
        kinks = kinks[(kinks >= theta_range[0]) & (kinks <= theta_range[1])]
        if kinks.size:
            r, d = rate_distortion_frontier(lam, latent_dim, kinks, trace=trace, dim=dim)
            ax.plot(r, d, "o", color=line.get_color(), markersize=2.8, zorder=line.get_zorder() + 0.1)
    return line
