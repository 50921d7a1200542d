"""What the conditional and hierarchical experiments share: image pairs ``(x, y)``, their moments,
trained reports summarised for the JSON, and one BLAS thread for the closed forms.

References: docs/theory.md (T17.1, T7.3).
"""

from __future__ import annotations

import contextlib

from linear_vae.data.conditioning import image_split
from linear_vae.data.datasets import load_data
from linear_vae.data.joint_moments import JointMoments


def image_pairs(config: dict) -> tuple[JointMoments, dict]:
    """Centred moments of ``config['split']`` of the digits ``config['data']`` (``n``, ``subset_seed``),
    and what the JSON records about them.

    >>> moments, description = image_pairs({"data": "mnist", "n": 100, "split": "quarter"})
    >>> description
    {'data': 'mnist', 'n': 100, 'split': 'quarter', 'd_x': 196, 'd_y': 588, 'subset_seed': 0}
    """
    dataset = load_data(config["data"], n=config.get("n"), subset_seed=config.get("subset_seed", 0))
    x, y = image_split(dataset.X, config["split"])
    description = {
        "data": config["data"],
        "n": int(dataset.X.shape[0]),
        "split": config["split"],
        "d_x": int(x.shape[1]),
        "d_y": int(y.shape[1]),
        "subset_seed": config.get("subset_seed", 0),
    }
    return JointMoments.from_data(x, y, centred=True), description


def one_blas_thread():
    """numpy's LAPACK on one thread while the experiment runs (threadpoolctl, when installed): on a
    shared 2-core machine OpenBLAS's busy-waiting threads made the closed forms' 784 x 784
    decompositions ten times slower (measured: 0.7 s against 9.9 s).  Results are unchanged.

    >>> import numpy as np
    >>> with one_blas_thread():  # the same numbers, on one thread
    ...     float(np.linalg.eigvalsh(np.diag([2.0, 1.0]))[-1])
    2.0
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


#: The keys of a trained report (:func:`linear_vae.verification.model_verify.train_and_compare`) the JSON keeps.
REPORT_KEYS = (
    "status",
    "reasons",
    "gap",
    "elbo",
    "optimal_elbo",
    "converged",
    "predicted_gain",
    "steps_used",
    "seconds",
    "active_dims",
    "predicted_active_dims",
    "nearest_threshold_distance",
    "kind",
)


def summary(report: dict, **settings) -> dict:
    """One trained point for the JSON: its settings and the report's verdict, gap and counts.

    >>> report = {key: 0 for key in REPORT_KEYS} | {"status": "pass", "active_dims": 2, "not kept": "dropped"}
    >>> point = summary(report, beta=1.0)
    >>> point["beta"], point["status"], point["active_dims"], "not kept" in point
    (1.0, 'pass', 2, False)
    """
    return {**settings, **{key: report[key] for key in REPORT_KEYS}}
