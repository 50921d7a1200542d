"""Bookkeeping of the speed comparison: recorded gaps and clocks turned into times to accuracy,
steps needed, projections of sequential loops and fitted exponents (numpy only, no timing).

Used by :mod:`benchmarks.measure`; tested in ``tests/test_benchmarks.py``.
"""

from __future__ import annotations

import statistics

import numpy as np

#: The tolerances of the original comparison (the defaults of the bookkeeping functions).
TOLS = (1e-2, 1e-5)
#: Every tolerance the run reports (nats per datapoint, every configuration within it).
ALL_TOLS = (1e-2, 1e-5, 1e-6, 1e-8)


def first_index(values: np.ndarray, tol: float):
    idx = np.flatnonzero(values <= tol)
    return int(idx[0]) if idx.size else None


def sweep_time_to_accuracy(gaps: np.ndarray, compile_s: float, train_s: float, log_every: int, tols=TOLS) -> dict:
    """gaps (C, R): time of record r = compile + (r + 1) / R * training seconds; all configs at once.

    For optimisers whose steps all cost the same (Adam); see :func:`chunked_time_to_accuracy`."""
    worst = gaps.max(axis=0)
    R = gaps.shape[1]
    out = {}
    for tol in tols:
        r = first_index(worst, tol)
        out[f"{tol:g}"] = (
            None if r is None else {"seconds": compile_s + (r + 1) / R * train_s, "step": (r + 1) * log_every}
        )
    r = int(np.argmin(worst))
    out["best_worst_gap"] = {
        "gap": float(worst[r]),
        "step": (r + 1) * log_every,
        "seconds": compile_s + (r + 1) / R * train_s,
    }
    out["final_worst_gap"] = float(worst[-1])
    return out


def record_clock(n_records: int, log_every: int, chunk_ends) -> np.ndarray:
    """Training seconds charged to each record: the clock at the end of the chunk that holds it.

    ``chunk_ends`` lists ``(steps done, training seconds)`` at every chunk end, in order (what a
    ``progress`` callback of ``train_sweep`` sees); record ``r`` is step ``(r + 1) * log_every`` and
    is charged the first chunk end with at least that many steps done.  Nothing is interpolated,
    so steps of unequal cost (Newton's) are timed correctly up to the chunk's granularity.
    """
    done = np.array([s for s, _ in chunk_ends])
    seconds = np.array([t for _, t in chunk_ends], dtype=float)
    steps = (np.arange(n_records) + 1) * log_every
    idx = np.searchsorted(done, steps, side="left")
    if n_records and (not len(done) or idx[-1] >= len(done)):
        raise ValueError(
            f"records up to step {steps[-1]} but the last chunk end is at step {done[-1] if len(done) else 0}"
        )
    return seconds[idx]


def chunked_time_to_accuracy(gaps: np.ndarray, compile_s: float, log_every: int, chunk_ends, tols=ALL_TOLS) -> dict:
    """As :func:`sweep_time_to_accuracy`, with the clock of :func:`record_clock`: ``seconds`` =
    compile + training seconds at the end of the chunk holding the first record where every
    configuration is within tol (``train_seconds`` without the compilation)."""
    worst = gaps.max(axis=0)
    clock = record_clock(gaps.shape[1], log_every, chunk_ends)
    out = {}
    for tol in tols:
        r = first_index(worst, tol)
        out[f"{tol:g}"] = (
            None
            if r is None
            else {"seconds": float(compile_s + clock[r]), "train_seconds": float(clock[r]), "step": (r + 1) * log_every}
        )
    r = int(np.argmin(worst))
    out["best_worst_gap"] = {
        "gap": float(worst[r]),
        "step": (r + 1) * log_every,
        "seconds": compile_s + float(clock[r]),
    }
    out["final_worst_gap"] = float(worst[-1])
    return out


def steps_needed(gaps: np.ndarray, log_every: int, tols=TOLS) -> dict:
    """Per configuration: the first recorded step whose gap is <= tol (None if never)."""
    return {
        f"{tol:g}": [None if (r := first_index(g, tol)) is None else (r + 1) * log_every for g in gaps] for tol in tols
    }


def chunk_seconds(chunk_ends) -> np.ndarray:
    """Seconds of each chunk alone from cumulative ``(steps, seconds)`` chunk ends."""
    seconds = np.array([t for _, t in chunk_ends], dtype=float)
    return np.diff(np.concatenate([[0.0], seconds]))


def summarise_loop(per_config: list, needed_ours: dict, total_steps: int, project: bool = True, tols=TOLS) -> dict:
    """Sequential loop over configurations: time to accuracy = sum over configurations of each
    one's first time within tol.  Configurations not run, or cut by the budget before reaching tol,
    are PROJECTED from the measured seconds per step times the steps our identical trajectory
    needed; the measured and projected parts are reported apart."""
    run = [p for p in per_config if p is not None]
    per_step = statistics.median(p["seconds_per_step"] for p in run)
    out = {"configs_run": len(run), "seconds_per_step_median": per_step, "tolerances": {}}
    for tol in tols:
        measured, projected, n_measured, missing = 0.0, 0.0, 0, 0
        for c, p in enumerate(per_config):
            hit = None if p is None else next((rec for rec in p["records"] if rec[2] <= tol), None)
            if hit is not None:
                measured += hit[1]
                n_measured += 1
            else:
                s = needed_ours[f"{tol:g}"][c]
                if s is None:
                    missing += 1
                    s = total_steps
                projected += s * per_step
        out["tolerances"][f"{tol:g}"] = {
            "measured_seconds": measured,
            "configs_measured": n_measured,
            "projected_seconds": projected,
            "configs_projected": len(per_config) - n_measured,
            "total_seconds": (measured + projected) if project or n_measured == len(per_config) else None,
            "configs_never_within_tol_in_ours": missing,
            "label": "measured"
            if n_measured == len(per_config)
            else ("PARTLY PROJECTED" if project else "not reached by every configuration"),
        }
    best = [min(p["records"], key=lambda r: r[2]) for p in run]
    worst = max(best, key=lambda r: r[2])
    out["best_gap_per_config_run"] = [{"gap": b[2], "step": b[0], "seconds": b[1]} for b in best]
    out["worst_of_best_gaps"] = {"gap": worst[2], "step": worst[0], "seconds_into_that_config": worst[1]}
    return out


def fit_exponent(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])
