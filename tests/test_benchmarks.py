"""Tests of the bookkeeping of the ``benchmarks`` package (``python -m benchmarks.run``) that turns
training traces into the reported times to accuracy and ratios (the timings themselves are never
asserted: machines are noisy).

Each case is small enough to compute by hand; the expected numbers are written out below.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmarks_module(name: str) -> types.ModuleType:
    """``benchmarks.<name>``, imported from this checkout as a submodule of the ``benchmarks``
    package (which is not installed, and whose folder pytest does not put on ``sys.path``)."""
    if "benchmarks" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "benchmarks", BENCHMARKS / "__init__.py", submodule_search_locations=[str(BENCHMARKS)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"benchmarks.{name}")


bookkeeping = benchmarks_module("bookkeeping")
measure = benchmarks_module("measure")
report = benchmarks_module("report")


def test_sweep_time_to_accuracy_waits_for_the_worst_configuration():
    # Two configurations, 4 records of 100 steps; training took 8 s after 2 s of compilation.
    gaps = np.array([[1.0, 5e-3, 1e-6, 1e-7], [2.0, 2e-2, 5e-3, 2e-6]])
    out = bookkeeping.sweep_time_to_accuracy(gaps, compile_s=2.0, train_s=8.0, log_every=100)
    # Worst gaps per record: 2.0, 2e-2, 5e-3, 2e-6.  <= 1e-2 first at record 2 (step 300, 2 + 6 s);
    # <= 1e-5 first at record 3 (step 400, 2 + 8 s).
    assert out["0.01"] == {"seconds": 8.0, "step": 300}
    assert out["1e-05"] == {"seconds": 10.0, "step": 400}
    assert out["best_worst_gap"] == {"gap": 2e-6, "step": 400, "seconds": 10.0}


def test_sweep_time_to_accuracy_reports_a_tolerance_never_reached():
    gaps = np.array([[1.0, 5e-3, 3e-5, 4e-5]])
    out = bookkeeping.sweep_time_to_accuracy(gaps, compile_s=0.0, train_s=4.0, log_every=10)
    assert out["1e-05"] is None
    assert out["best_worst_gap"] == {"gap": 3e-5, "step": 30, "seconds": 3.0}
    assert out["final_worst_gap"] == 4e-5


def test_steps_needed_per_configuration():
    gaps = np.array([[1.0, 5e-3, 1e-6], [1.0, 1.0, 1.0]])
    assert bookkeeping.steps_needed(gaps, 50) == {"0.01": [100, None], "1e-05": [150, None]}


def test_summarise_loop_splits_measured_and_projected_time():
    # Configuration 0 was run and reached both tolerances; configuration 1 was cut by the budget
    # before 1e-5; configuration 2 was not run.  Our identical trajectory needed the steps below.
    per_config = [
        {"records": [(100, 1.0, 5e-3), (200, 2.0, 1e-6)], "seconds_per_step": 0.01},
        {"records": [(100, 1.0, 5e-3)], "seconds_per_step": 0.01},
        None,
    ]
    needed = {"0.01": [100, 100, 300], "1e-05": [200, 400, None]}
    out = bookkeeping.summarise_loop(per_config, needed, total_steps=1000)
    tol2, tol5 = out["tolerances"]["0.01"], out["tolerances"]["1e-05"]
    # 1e-2: measured 1 s + 1 s; configuration 2 projected at 300 steps x 0.01 s.
    assert (tol2["measured_seconds"], tol2["projected_seconds"]) == (2.0, pytest.approx(3.0))
    assert tol2["total_seconds"] == pytest.approx(5.0) and tol2["label"] == "PARTLY PROJECTED"
    # 1e-5: measured 2 s; configuration 1 projected at 400 steps; configuration 2 never reached it
    # in ours, so it is charged the whole 1000-step schedule and flagged.
    assert tol5["projected_seconds"] == pytest.approx(4.0 + 10.0)
    assert tol5["configs_never_within_tol_in_ours"] == 1
    assert out["worst_of_best_gaps"]["gap"] == 5e-3


def test_summarise_loop_without_projection_reports_nothing_unmeasured():
    per_config = [{"records": [(100, 1.0, 5e-3)], "seconds_per_step": 0.01}]
    out = bookkeeping.summarise_loop(per_config, {"0.01": [100], "1e-05": [None]}, 1000, project=False)
    assert out["tolerances"]["0.01"]["total_seconds"] == 1.0
    assert out["tolerances"]["1e-05"]["total_seconds"] is None


def test_fit_exponent_recovers_a_power_law():
    d = np.array([100.0, 300.0, 1000.0, 3000.0])
    assert bookkeeping.fit_exponent(d, 3e-9 * d**2) == pytest.approx(2.0, abs=1e-12)
    assert math.isclose(bookkeeping.fit_exponent(d, 5.0 * d), 1.0, abs_tol=1e-12)


def test_step_flops_counts_the_products_of_one_step():
    step_flops = benchmarks_module("trainer").step_flops

    # d = 784, k = 32: 4 k d^2 + 12 d k^2 + 4 d k, the number benchmarks/results.md quotes (88.4 MFLOP).
    assert step_flops(784, 32) == 4 * 32 * 784**2 + 12 * 784 * 32**2 + 4 * 784 * 32 == 88_410_112


def test_a_method_short_of_the_tolerance_gives_a_lower_bound_on_the_ratio():
    # The data-basis sweep never reaches 1e-5 (it spent 2 + 98 s); the eigenbasis reaches it at 40 s.
    def sweep(hit, compile_s, train_s):
        return {
            "time_to_accuracy": {"0.01": {"seconds": 10.0, "step": 100}, "1e-05": hit},
            "compile_seconds": compile_s,
            "train_seconds": train_s,
            "steps_needed_per_config": {"0.01": [100, 200], "1e-05": [300, None]},
        }

    res = {
        "optimiser": {"steps": 1000},
        "problem": {"betas": [1.0, 2.0]},
        "sweep_data": sweep(None, 2.0, 98.0),
        "sweep_eigen": sweep({"seconds": 40.0, "step": 800}, 1.0, 49.0),
        "python_loop_train_single": {"compile_seconds": 1.0, "seconds_per_run_median": 50.0},
    }
    t_data = report.time_to_accuracy(res, "ours_sweep_data", "1e-05")
    assert t_data == {"seconds": 100.0, "at_least": True}
    # The loop: 300 steps of configuration 0, the whole 1000-step schedule of configuration 1.
    assert report.time_to_accuracy(res, "loop", "1e-05") == {"seconds": 1.0 + 1300 * 0.05, "at_least": True}
    assert report.time_to_accuracy(res, "loop", "0.01") == {"seconds": 1.0 + 300 * 0.05, "at_least": False}
    assert report.time_to_accuracy(res, "b", "0.01") is None  # no PyTorch results


# ------------------------------------------------------------------ Newton: chunk-end clock, targets


def test_record_clock_charges_each_record_its_chunk_end():
    # Chunks of 5 one-iteration records whose cost grows (1, 2, 4 s): records 1-5 end at 1 s,
    # 6-10 at 3 s, 11-15 at 7 s.  Nothing is interpolated.
    ends = [(5, 1.0), (10, 3.0), (15, 7.0)]
    clock = bookkeeping.record_clock(15, 1, ends)
    assert clock.tolist() == [1.0] * 5 + [3.0] * 5 + [7.0] * 5
    # Records every 2 steps, chunks of 4 steps: record r (step 2 r + 2) ends with the chunk holding it.
    assert bookkeeping.record_clock(4, 2, [(4, 0.5), (8, 2.0)]).tolist() == [0.5, 0.5, 2.0, 2.0]
    with pytest.raises(ValueError, match="last chunk end"):
        bookkeeping.record_clock(6, 1, [(5, 1.0)])


def test_chunked_time_to_accuracy_uses_the_chunk_clock():
    # Two configurations, 6 iterations in chunks of 3 (training clock 1 s, then 10 s); 2 s compile.
    gaps = np.array([[1.0, 1e-3, 1e-6, 1e-9, 1e-9, 1e-9], [2.0, 5e-2, 5e-3, 2e-6, 5e-7, 5e-9]])
    out = bookkeeping.chunked_time_to_accuracy(
        gaps, compile_s=2.0, log_every=1, chunk_ends=[(3, 1.0), (6, 10.0)], tols=(1e-2, 1e-5, 1e-6, 1e-8)
    )
    # Worst per iteration: 2, 5e-2, 5e-3, 2e-6, 5e-7, 5e-9.  1e-2 first at iteration 3 (first chunk);
    # 1e-5, 1e-6 and 1e-8 at iterations 4, 5, 6, all charged the second chunk's end (10 s).
    assert out["0.01"] == {"seconds": 3.0, "train_seconds": 1.0, "step": 3}
    assert out["1e-05"] == {"seconds": 12.0, "train_seconds": 10.0, "step": 4}
    assert out["1e-06"]["step"] == 5 and out["1e-08"] == {"seconds": 12.0, "train_seconds": 10.0, "step": 6}
    assert out["best_worst_gap"] == {"gap": 5e-9, "step": 6, "seconds": 12.0}
    # A linear interpolation would have put 1e-2 at 2 + 3/6 * 10 = 7 s.
    assert bookkeeping.sweep_time_to_accuracy(gaps, 2.0, 10.0, 1)["0.01"]["seconds"] == pytest.approx(7.0)


def test_chunked_time_to_accuracy_reports_a_tolerance_never_reached():
    gaps = np.array([[1.0, 1e-3, 4e-6, 3e-6]])
    out = bookkeeping.chunked_time_to_accuracy(gaps, 0.5, 1, [(2, 1.0), (4, 2.0)])
    assert out["1e-06"] is None and out["1e-08"] is None
    assert out["1e-05"] == {"seconds": 2.5, "train_seconds": 2.0, "step": 3}
    assert out["final_worst_gap"] == 3e-6


def test_chunk_clock_and_chunk_seconds(monkeypatch):
    ticks = iter([10.0, 10.5, 12.0])
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(ticks))
    clock = measure.ChunkClock()
    for done in (1, 2, 3):
        clock(done, 3)
    # train_sweep was called at 4 s and compiled for 5 s: training began at 9 s.
    ends = clock.training_clock(called_at=4.0, compile_s=5.0)
    assert ends == [(1, 1.0), (2, 1.5), (3, 3.0)]
    assert bookkeeping.chunk_seconds(ends).tolist() == [1.0, 0.5, 1.5]


def _newton_result(tta_1e5, tta_1e6, converged=True):
    return {
        "compile_seconds": 3.0,
        "train_seconds": 17.0,
        "iterations_run": 20,
        "all_converged": converged,
        "adam_steps_per_iteration": 150.0,
        "time_to_accuracy": {
            "0.01": {"seconds": 8.0, "train_seconds": 5.0, "step": 10},
            "1e-05": tta_1e5,
            "1e-06": tta_1e6,
            "1e-08": None,
            "best_worst_gap": {"gap": 2e-8, "step": 20, "seconds": 20.0},
        },
    }


def test_time_to_accuracy_of_newton_and_its_targets():
    hit = {"seconds": 20.0, "train_seconds": 17.0, "step": 20}
    res = {
        "optimiser": {"steps": 1000},
        "problem": {"betas": [1.0, 2.0], "tolerances_nats": [1e-2, 1e-5, 1e-6, 1e-8]},
        "sweep_newton": _newton_result(hit, hit),
        "sweep_eigen": {
            "time_to_accuracy": {"1e-05": {"seconds": 120.0, "step": 800}},
            "compile_seconds": 1.0,
            "train_seconds": 150.0,
        },
    }
    assert report.time_to_accuracy(res, "ours_newton", "1e-05") == {"seconds": 20.0, "at_least": False}
    # Stopped (converged by its own test) before every gap was within 1e-8: a lower bound, and why.
    assert report.time_to_accuracy(res, "ours_newton", "1e-08") == {
        "seconds": 20.0,
        "at_least": True,
        "why": "not reached; stopped after 20 iterations: every configuration converged",
    }
    times = {
        k: {m: report.time_to_accuracy(res, m, k) for m in ("ours_newton", "ours_sweep_eigen")}
        for k in ("1e-05", "1e-06")
    }
    ratios = {"ours_newton": {"1e-05": {"ours_sweep_eigen": {"ratio": 6.0, "at_least": False}}}}
    targets = report.newton_targets(res, times, ratios)
    assert targets["Newton reaches 1e-6 on every MNIST configuration (best worst gap)"]["met"] is True
    assert targets["time to 1e-5: Adam eigenbasis / Newton, same run (target >= 5x)"] == {
        "ratio": 6.0,
        "at_least": False,
        "met": True,
    }
    # Adam short of 1e-5: its time is a lower bound, met only if that bound already clears the target.
    for ratio, met in ((6.0, True), (3.0, None)):
        low = {"ours_newton": {"1e-05": {"ours_sweep_eigen": {"ratio": ratio, "at_least": True}}}}
        assert (
            report.newton_targets(res, times, low)["time to 1e-5: Adam eigenbasis / Newton, same run (target >= 5x)"][
                "met"
            ]
            is met
        )
    assert (
        report._target_cell({"ratio": 3.0, "at_least": True, "met": None})
        == "≥ 3x — undetermined (a lower bound below the target)"
    )
    assert report._target_cell({"ratio": 4.0, "at_least": False, "met": False}) == "4x — NOT met"
    # 20 s with compilation is within the 20 s goal; 17 s of training too.
    assert [v["met"] for k, v in targets.items() if k.startswith("goal")] == [True, True]
    assert (
        report._target_cell(targets["goal: Newton, whole sweep to 1e-6 <= 20 s (compilation included)"]) == "20 s — met"
    )


def test_newton_targets_not_met_and_hard_cases():
    res = {
        "optimiser": {"steps": 1000},
        "problem": {"betas": [1.0]},
        "sweep_newton": _newton_result({"seconds": 30.0, "train_seconds": 25.0, "step": 20}, None, False),
        "hard_cases": {
            "cases": [
                {"name": "x", "train_seconds": 4.0, "worst_gap": 3e-7, "converged": True},
                {"name": "y", "train_seconds": 12.0, "worst_gap": 1e-9, "converged": True},
            ]
        },
    }
    times = {"1e-06": {"ours_newton": report.time_to_accuracy(res, "ours_newton", "1e-06")}}
    targets = report.newton_targets(res, times, {})
    assert targets["Newton reaches 1e-6 on every MNIST configuration (best worst gap)"]["met"] is False
    assert targets["time to 1e-5: Adam eigenbasis / Newton, same run (target >= 5x)"] is None
    assert not any(v["met"] for k, v in targets.items() if k.startswith("goal: Newton"))
    assert targets["goal: every hard case trains in <= 10 s (slowest)"] == {"value": 12.0, "unit": " s", "met": False}
    assert targets["every hard case converged by its own test and lands within 1e-6 nats (worst gap)"]["met"] is True
    assert "NOT met" in report._target_cell(targets["goal: every hard case trains in <= 10 s (slowest)"])


def test_adam_config_asks_for_adam_without_checks():
    config = measure.adam_config(32, 400)
    assert (config.optimizer, config.steps, config.log_every, config.stop_when_converged) == ("adam", 400, 100, False)


# ------------------------------------------------------------------ the report and the entry point


def test_the_report_regenerates_results_md_from_results_json_alone():
    # --report-only: finalize + markdown on the committed JSON give the committed table, byte for byte.
    res = json.loads((BENCHMARKS / "results.json").read_text())
    report.finalize(res)
    assert report.markdown(res) == (BENCHMARKS / "results.md").read_text(encoding="utf-8")


def test_the_entry_point_runs_as_a_module_from_the_repository_root():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--help"],
        cwd=BENCHMARKS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "--report-only" in out.stdout and "--scaling-point" in out.stdout


@pytest.mark.slow
def test_a_scaling_point_runs_in_a_fresh_process():
    point = measure.step_cost_in_fresh_process(50, 4, 1, 1)
    assert "error" not in point and point["attempts"] == 1
    assert (point["d"], point["k"], point["configs"]) == (50, 4, 1) and point["seconds_per_step_per_config"] > 0


def test_the_speed_check_names_each_ratio_that_misses_its_bound():
    trainer = benchmarks_module("trainer")
    passing = {
        "sweep_over_loop_step_ratio": 1.25,
        "data_over_eigen_basis_ratio": 1.5,
        "fraction_of_float64_matmul": 0.5,
    }
    assert trainer.failed_checks(passing) == []  # the bounds themselves pass
    failing = {"sweep_over_loop_step_ratio": 1.8, "data_over_eigen_basis_ratio": 1.2, "fraction_of_float64_matmul": 0.4}
    lines = trainer.failed_checks(failing)
    assert len(lines) == 3
    assert "1.80, above the bound 1.25" in lines[0]
    assert "1.20, below the bound 1.5" in lines[1]
    assert "0.40, below the bound 0.5" in lines[2]
