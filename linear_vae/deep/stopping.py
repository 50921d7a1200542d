"""Trained results with no closed form to check against (the deep VAE): when a run stops, and when
two settings differ.

A run is recorded every ``log_every`` steps: its validation objective (the one-sample ELBO on the
validation images, drawn with the same noise at every record, so that records differ only by the
parameters) and, when ``sigma2`` is learned, the mean of ``log sigma2`` over the steps since the
previous record.  docs/theory.md (T16.1) states the rule:

* **patience**: the run stops once its best validation objective has not improved by more than
  ``tolerance`` nats over the last ``patience`` steps: the best now is within ``tolerance`` of the
  best as it stood ``patience`` steps ago.  Many small gains add up: a run that creeps up by less
  than ``tolerance`` per record but by more over the window keeps going (an earlier version, which
  restarted the clock only at a single record beating the best by ``tolerance``, stopped such runs);
* **settled sigma2** (learned runs only): the mean of ``log sigma2`` over the last ``window`` steps
  differs from its mean over the ``window`` steps before by less than ``sigma2_tolerance``.  Window
  means rather than end points, since constant-step Adam and the raw minibatch update both jitter
  by more than the tolerance from step to step;
* **cap**: a run that reaches ``max_steps`` without meeting both is *not converged*.

:func:`decide` is evaluated on the host after every record, so a run stops at the first record at
which the rule holds and its checkpoint is the best record up to there.

Over seeds, :func:`interval` gives the mean and its 95% t-interval, and :func:`separated` says
whether two intervals give a direction (docs/theory.md (T16.3)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.stats

#: The version of the rule, part of every deep-study identity: results stopped by an earlier version
#: (version 1 restarted the patience clock only at one record beating the best by ``tolerance``, so
#: runs creeping up by less per record stopped early) are never taken for results of this one.
RULE_VERSION = 2
#: Why a run stopped (``StopDecision.reason``).
CONVERGED, CAP, NONFINITE, RUNNING = "converged", "cap", "non-finite", "running"


class StoppingRule(NamedTuple):
    """The rule's constants (steps and nats; the defaults are the deep-VAE study's)."""

    patience: int = 3000
    tolerance: float = 0.1
    window: int = 1500
    sigma2_tolerance: float = 0.01
    max_steps: int = 20000

    def validate(self, log_every: int) -> "StoppingRule":
        """The rule itself, or ``ValueError`` naming what to change when its step counts are not
        positive multiples of the record interval ``log_every``, or a tolerance is negative.

        >>> StoppingRule(patience=250).validate(log_every=100)
        Traceback (most recent call last):
        ...
        ValueError: `patience` 250, `window` 1500 and `max_steps` 20000 must be multiples of the record interval 100
        """
        if min(self.patience, self.window, self.max_steps, log_every) < 1:
            raise ValueError(f"the stopping rule needs positive step counts, got {self._asdict()}")
        if self.window % log_every or self.patience % log_every or self.max_steps % log_every:
            raise ValueError(
                f"`patience` {self.patience}, `window` {self.window} and `max_steps` {self.max_steps} must be "
                f"multiples of the record interval {log_every}"
            )
        if self.tolerance < 0 or self.sigma2_tolerance <= 0:
            raise ValueError("`tolerance` must be >= 0 and `sigma2_tolerance` > 0")
        return self


class StopDecision(NamedTuple):
    stopped: bool
    reason: str  # CONVERGED, CAP, NONFINITE or RUNNING
    sigma2_drift: float  # |window mean difference| of log sigma2 at this record (nan if not learned / too early)
    steps_since_improvement: int


def decide(
    rule: StoppingRule, log_every: int, steps, objective, mean_log_sigma2, learned: bool, warmup: int = 0
) -> StopDecision:
    """The rule applied to one run's records so far, taken every ``log_every`` steps (``steps``,
    ``objective`` and ``mean_log_sigma2`` are 1-D, one entry per record, the last the newest).
    With KL annealing the patience clock starts no earlier than the end of the ``warmup``, when the
    objective trained becomes the one recorded.

    >>> rule = StoppingRule(patience=300, tolerance=0.1, window=200, sigma2_tolerance=0.01, max_steps=2000)
    >>> steps, objective = [100, 200, 300, 400, 500, 600], [1.0, 2.0, 2.5, 2.55, 2.6, 2.6]
    >>> decide(rule, 100, steps[:5], objective[:5], None, learned=False).reason  # last gain > 0.1 at 300
    'running'
    >>> decide(rule, 100, steps, objective, None, learned=False)
    StopDecision(stopped=True, reason='converged', sigma2_drift=nan, steps_since_improvement=300)
    """
    steps = np.asarray(steps)
    objective = np.asarray(objective, dtype=np.float64)
    step = int(steps[-1])
    if not np.isfinite(objective[-1]):
        return StopDecision(True, NONFINITE, float("nan"), 0)
    # The clock runs from the first record whose running best came within `tolerance` of the best
    # now: the best has not improved by more than `tolerance` since then (T16.1).
    running_best = np.maximum.accumulate(objective)
    anchor = int(steps[np.argmax(running_best >= running_best[-1] - rule.tolerance)])
    waited = step - max(anchor, int(warmup))
    drift = float("nan")
    if learned:
        per_window = rule.window // log_every
        values = np.asarray(mean_log_sigma2, dtype=np.float64)
        if len(values) >= 2 * per_window:
            drift = abs(values[-per_window:].mean() - values[-2 * per_window : -per_window].mean())
    settled = (not learned) or drift < rule.sigma2_tolerance
    if waited >= rule.patience and settled:
        return StopDecision(True, CONVERGED, drift, waited)
    if step >= rule.max_steps:
        return StopDecision(True, CAP, drift, waited)
    return StopDecision(False, RUNNING, drift, waited)


def interval(values) -> dict:
    """Mean and 95% t-interval over seeds, ``mean +- t_{0.975, n-1} s / sqrt(n)`` (``s`` the sample
    standard deviation): ``{"mean", "low", "high", "n"}``; with one value the interval is that value.

    >>> {key: round(value, 3) for key, value in interval([1.0, 1.2, 0.9]).items()}
    {'mean': 1.033, 'low': 0.654, 'high': 1.413, 'n': 3}

    References: docs/theory.md (T16.3).
    """
    values = np.asarray(values, dtype=np.float64)
    n, mean = values.size, float(values.mean())
    half = float(scipy.stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(n)}


def format_interval(iv: dict, fmt: str = ".1f") -> str:
    """``mean [low, high]`` of an :func:`interval`, each number formatted by ``fmt`` (``mean (one
    seed)`` when it rests on one value).

    >>> format_interval(interval([1.0, 1.2, 0.9]), ".2f"), format_interval(interval([2.0]))
    ('1.03 [0.65, 1.41]', '2.0 (one seed)')
    """
    if iv["n"] < 2:
        return f"{iv['mean']:{fmt}} (one seed)"
    return f"{iv['mean']:{fmt}} [{iv['low']:{fmt}}, {iv['high']:{fmt}}]"


def separated(a: dict, b: dict) -> int:
    """+1 when interval ``a`` lies wholly above ``b``, -1 when wholly below, 0 when they overlap (no
    direction at this number of seeds), and 0 when either rests on one seed, which has no interval.

    >>> separated(interval([2.0, 2.1, 1.95]), interval([1.0, 1.2, 0.9])), separated(interval([1.0, 1.2, 0.9]), interval([1.1, 1.0, 1.3]))
    (1, 0)
    >>> separated(interval([5.0]), interval([1.0, 1.2, 0.9]))  # one seed: no direction
    0

    References: docs/theory.md (T16.3).
    """
    if min(a["n"], b["n"]) < 2:
        return 0
    return 1 if a["low"] > b["high"] else -1 if a["high"] < b["low"] else 0
