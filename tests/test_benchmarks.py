"""Tests of the bookkeeping in ``benchmarks/run.py`` that turns training traces into the reported
times to accuracy and ratios (the timings themselves are never asserted: machines are noisy).

Each case is small enough to compute by hand; the expected numbers are written out below.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

RUN_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_time_to_accuracy_waits_for_the_worst_configuration(bench):
    # Two configurations, 4 records of 100 steps; training took 8 s after 2 s of compilation.
    gaps = np.array([[1.0, 5e-3, 1e-6, 1e-7],
                     [2.0, 2e-2, 5e-3, 2e-6]])
    out = bench.sweep_time_to_accuracy(gaps, compile_s=2.0, train_s=8.0, log_every=100)
    # Worst gaps per record: 2.0, 2e-2, 5e-3, 2e-6.  <= 1e-2 first at record 2 (step 300, 2 + 6 s);
    # <= 1e-5 first at record 3 (step 400, 2 + 8 s).
    assert out["0.01"] == {"seconds": 8.0, "step": 300}
    assert out["1e-05"] == {"seconds": 10.0, "step": 400}
    assert out["best_worst_gap"] == {"gap": 2e-6, "step": 400, "seconds": 10.0}


def test_sweep_time_to_accuracy_reports_a_tolerance_never_reached(bench):
    gaps = np.array([[1.0, 5e-3, 3e-5, 4e-5]])
    out = bench.sweep_time_to_accuracy(gaps, compile_s=0.0, train_s=4.0, log_every=10)
    assert out["1e-05"] is None
    assert out["best_worst_gap"] == {"gap": 3e-5, "step": 30, "seconds": 3.0}
    assert out["final_worst_gap"] == 4e-5


def test_steps_needed_per_configuration(bench):
    gaps = np.array([[1.0, 5e-3, 1e-6], [1.0, 1.0, 1.0]])
    assert bench.steps_needed(gaps, 50) == {"0.01": [100, None], "1e-05": [150, None]}


def test_summarise_loop_splits_measured_and_projected_time(bench):
    # Configuration 0 was run and reached both tolerances; configuration 1 was cut by the budget
    # before 1e-5; configuration 2 was not run.  Our identical trajectory needed the steps below.
    per_config = [
        {"records": [(100, 1.0, 5e-3), (200, 2.0, 1e-6)], "seconds_per_step": 0.01},
        {"records": [(100, 1.0, 5e-3)], "seconds_per_step": 0.01},
        None,
    ]
    needed = {"0.01": [100, 100, 300], "1e-05": [200, 400, None]}
    out = bench.summarise_loop(per_config, needed, total_steps=1000)
    tol2, tol5 = out["tolerances"]["0.01"], out["tolerances"]["1e-05"]
    # 1e-2: measured 1 s + 1 s; configuration 2 projected at 300 steps x 0.01 s.
    assert (tol2["measured_seconds"], tol2["projected_seconds"]) == (2.0, pytest.approx(3.0))
    assert tol2["total_seconds"] == pytest.approx(5.0) and tol2["label"] == "PARTLY PROJECTED"
    # 1e-5: measured 2 s; configuration 1 projected at 400 steps; configuration 2 never reached it
    # in ours, so it is charged the whole 1000-step schedule and flagged.
    assert tol5["projected_seconds"] == pytest.approx(4.0 + 10.0)
    assert tol5["configs_never_within_tol_in_ours"] == 1
    assert out["worst_of_best_gaps"]["gap"] == 5e-3


def test_summarise_loop_without_projection_reports_nothing_unmeasured(bench):
    per_config = [{"records": [(100, 1.0, 5e-3)], "seconds_per_step": 0.01}]
    out = bench.summarise_loop(per_config, {"0.01": [100], "1e-05": [None]}, 1000, project=False)
    assert out["tolerances"]["0.01"]["total_seconds"] == 1.0
    assert out["tolerances"]["1e-05"]["total_seconds"] is None


def test_fit_exponent_recovers_a_power_law(bench):
    d = np.array([100.0, 300.0, 1000.0, 3000.0])
    assert bench.fit_exponent(d, 3e-9 * d**2) == pytest.approx(2.0, abs=1e-12)
    assert math.isclose(bench.fit_exponent(d, 5.0 * d), 1.0, abs_tol=1e-12)


def test_step_flops_counts_the_products_of_one_step():
    import sys
    sys.path.insert(0, str(RUN_PY.parent))
    from trainer import step_flops

    # d = 784, k = 32: 4 k d^2 + 12 d k^2 + 4 d k, the number the README quotes (88.4 MFLOP).
    assert step_flops(784, 32) == 4 * 32 * 784**2 + 12 * 784 * 32**2 + 4 * 784 * 32 == 88_410_112


def test_a_method_short_of_the_tolerance_gives_a_lower_bound_on_the_ratio(bench):
    # The data-basis sweep never reaches 1e-5 (it spent 2 + 98 s); the eigenbasis reaches it at 40 s.
    def sweep(hit, compile_s, train_s):
        return {"time_to_accuracy": {"0.01": {"seconds": 10.0, "step": 100}, "1e-05": hit},
                "compile_seconds": compile_s, "train_seconds": train_s,
                "steps_needed_per_config": {"0.01": [100, 200], "1e-05": [300, None]}}

    res = {"optimiser": {"steps": 1000}, "problem": {"betas": [1.0, 2.0]},
           "sweep_data": sweep(None, 2.0, 98.0), "sweep_eigen": sweep({"seconds": 40.0, "step": 800}, 1.0, 49.0),
           "python_loop_train_single": {"compile_seconds": 1.0, "seconds_per_run_median": 50.0}}
    t_data = bench.time_to_accuracy(res, "ours_sweep_data", "1e-05")
    assert t_data == {"seconds": 100.0, "at_least": True}
    # The loop: 300 steps of configuration 0, the whole 1000-step schedule of configuration 1.
    assert bench.time_to_accuracy(res, "loop", "1e-05") == {"seconds": 1.0 + 1300 * 0.05, "at_least": True}
    assert bench.time_to_accuracy(res, "loop", "0.01") == {"seconds": 1.0 + 300 * 0.05, "at_least": False}
    assert bench.time_to_accuracy(res, "b", "0.01") is None  # no PyTorch results
