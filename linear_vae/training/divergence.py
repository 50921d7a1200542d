"""When a training run has diverged: one rule for the linear and the deep trainer.

A run whose numbers stay finite can still have blown up (Adam at ``--lr 100`` drives sigma2 to
1e246 and ends thousands of nats below where it started).  The rule below uses only the run
itself, never the closed form, so that "diverged" stays a statement about the optimiser and
is never confused with "disagrees with the theory".  A run has diverged when

1. its objective or parameters became non-finite (NaN or inf) at some step; or
2. its objective ends more than ``MARGIN_NATS + MARGIN_FRACTION * |start|`` nats per datapoint
   below its value at the start (10 nats plus 1%: far beyond the wobble of a stochastic
   objective or a transient of Adam, and a healthy ascent method never ends below its start); or
3. the total variance of the model's predictive distribution exceeds ``SCALE_FACTOR**2`` times the
   total variance of the data: for the linear VAE ``||W||_F^2 + d sigma2 > 1e12 tr S``, i.e. the
   model's scale is a million times the data's (at the optimum the two are equal when sigma2 is
   learned; with a fixed sigma2 the model's exceeds the data's by at most ``d sigma2``).

Rule 3 is checked during training as well as at the end; rule 2 only at the end ("ends"), so
that a transient dip is not called divergence.

References: docs/theory.md (T10).
"""

from __future__ import annotations

import numpy as np


class DivergenceError(ValueError):
    """Training diverged by the rule above; raised by either trainer naming the configuration and the step."""


MARGIN_NATS = 10.0
MARGIN_FRACTION = 0.01
SCALE_FACTOR = 1e6


def margin(start: np.ndarray) -> np.ndarray:
    """Nats per datapoint the objective may end below its start before the run counts as diverged.

    >>> margin(np.array([-1000.0, 0.0]))  # 10 nats plus 1% of the start
    array([20., 10.])

    References: docs/theory.md (T10).
    """
    return MARGIN_NATS + MARGIN_FRACTION * np.abs(start)


def diverged_runs(start, end, model_variance, data_variance: float, first_nonfinite_step, final_step):
    """``(diverged, reasons)`` for each run of a batch (arrays with a leading run axis).

    ``start`` and ``end`` are the objective (nats per datapoint) before the first step and after
    the last; ``model_variance`` the total variance of the model at the end;
    ``first_nonfinite_step`` is -1 where every value stayed finite; ``final_step`` the steps taken.
    ``reasons[i]`` is one phrase naming the step, or ``None`` for a run that did not diverge.

    >>> diverged, reasons = diverged_runs(
    ...     start=np.array([-10.0, -10.0, -10.0]), end=np.array([-5.0, np.nan, -50.0]),
    ...     model_variance=np.ones(3), data_variance=1.0,
    ...     first_nonfinite_step=np.array([-1, 7, -1]), final_step=np.array([100, 100, 100]))
    >>> diverged
    array([False,  True,  True])
    >>> reasons[1:]
    ['non-finite objective or parameters by step 7', 'the objective fell from -10 to -50 nats per datapoint by step 100 (more than 10.1 below its start)']

    References: docs/theory.md (T10).
    """
    start, end = np.asarray(start, float), np.asarray(end, float)
    model_variance = np.asarray(model_variance, float)
    first_nonfinite_step = np.asarray(first_nonfinite_step)
    final_step = np.asarray(final_step)
    reasons = []
    for i in range(len(start)):
        if first_nonfinite_step[i] >= 0 or not np.isfinite(end[i]) or not np.isfinite(model_variance[i]):
            step = first_nonfinite_step[i] if first_nonfinite_step[i] >= 0 else final_step[i]
            reasons.append(f"non-finite objective or parameters by step {int(step)}")
        elif model_variance[i] > SCALE_FACTOR**2 * data_variance:
            reasons.append(
                f"the model's total variance reached {model_variance[i]:.3g}, more than "
                f"{SCALE_FACTOR**2:.0e} times the data's {data_variance:.3g} (a scale {SCALE_FACTOR:.0e} times the "
                f"data's), by step {int(final_step[i])}"
            )
        elif end[i] < start[i] - margin(start[i]):
            reasons.append(
                f"the objective fell from {start[i]:.6g} to {end[i]:.6g} nats per datapoint "
                f"by step {int(final_step[i])} (more than {float(margin(start[i])):.3g} below its start)"
            )
        else:
            reasons.append(None)
    return np.array([r is not None for r in reasons], dtype=bool), reasons
