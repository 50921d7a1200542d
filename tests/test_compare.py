"""How :mod:`linear_vae.verification.compare` words its numbers for people: a gap below zero by round-off only is
not shown as the trained model beating the optimum, and a predicted gain that does not exist is not
shown as ``inf``."""

from __future__ import annotations

import math

import pytest

from linear_vae.verification.compare import ROUNDOFF_GAP, gain_text, gap_text, verdict


def test_a_gap_below_zero_by_round_off_only_reads_as_zero():
    optimum = -941.9  # round-off of an ELBO this size: 1e-9 (1 + 941.9), about 9.4e-7
    assert gap_text(-3e-13, optimum).strip() == ROUNDOFF_GAP
    assert gap_text(-9e-7, optimum).strip() == ROUNDOFF_GAP
    assert gap_text(-1e-6, optimum).strip() == "-1.00e-06"  # past round-off: shown signed ("disagrees")
    assert gap_text(0.0, optimum).strip() == "0.00e+00"
    assert gap_text(2.5e-9, optimum).strip() == "2.50e-09"
    assert len(gap_text(-3e-13, optimum)) == 10  # the table keeps its width


def test_an_undefined_predicted_gain_is_explained_not_printed_as_inf():
    assert gain_text(2.5e-3) == "2.50e-03"
    assert "inf" not in gain_text(math.inf) and "indefinite" in gain_text(math.inf)
    report = {
        "converged": False,
        "gap": 1.0,
        "optimal_elbo": -50.0,
        "active_dims": 3,
        "predicted_active_dims": 3,
        "predicted_gain": math.inf,
        "steps_used": 40,
        "convergence_rate": 0.99,
        "steps_needed": 372,
    }
    outcome, reasons = verdict(report)
    assert outcome == "not converged"
    assert "predicted gain not defined yet" in reasons[0] and "inf" not in reasons[0]
    assert "about 372 more steps" in reasons[0]


# --- the Python API: a grid or zipped lists, and a learned sigma2's start by its own name -----------
def test_misreadable_arguments_are_refused_before_training():
    from linear_vae.data.datasets import make_synthetic
    from linear_vae.data.problem import Problem
    from linear_vae.training.train import TrainConfig
    from linear_vae.verification.compare import train_and_compare_grid, train_and_compare_zipped

    problem = Problem.from_dataset(make_synthetic(n=200))
    fixed, learned = TrainConfig(latent_dim=2), TrainConfig(latent_dim=2, learn_sigma2=True)
    with pytest.raises(ValueError, match="share one length .*betas 2, sigma2s 3, seeds 1.*train_and_compare_grid"):
        train_and_compare_zipped(problem, fixed, [1.0, 2.0], [0.5, 1.0, 2.0])
    for train in (train_and_compare_grid, train_and_compare_zipped):
        with pytest.raises(ValueError, match="`sigma2_init`"):
            train(problem, learned, [1.0], [0.5])
        with pytest.raises(ValueError, match="pass the fixed `sigma2s`"):
            train(problem, fixed, [1.0])
        with pytest.raises(ValueError, match="fixes it"):
            train(problem, fixed, [1.0], [0.5], sigma2_init=1.0)


def test_an_unconverged_run_is_described_by_what_stopped_it():
    """A decayed schedule stopped the run: no "more steps at that rate"; otherwise the rate reads as
    a percentage (never "x1" for a rate just below 1) and the step count with separators."""
    from linear_vae.verification.compare import progress_text

    base = {"converged": False, "predicted_gain": 3e-4, "steps_used": 4000, "convergence_rate": 0.9999988}
    text = progress_text({**base, "schedule": "cosine", "steps_needed": 884119})
    assert "decayed to 0" in text and "more steps" not in text and "raise `steps`" in text
    text = progress_text({**base, "schedule": "constant", "steps_needed": 884119})
    assert text == "remaining gain shrinking by 0.00012% per step, about 884,119 more steps at that rate"
    assert progress_text({**base, "schedule": None, "convergence_rate": 1.0}) == "the remaining gain is not shrinking"
    assert verdict({**base, "schedule": "exponential"})[0] == "not converged"
