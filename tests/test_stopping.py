"""Runs that stop by rule: the rule itself, the three-way split, the grid that drops finished runs,
the resume from a checkpoint (bitwise), and the two ways of learning sigma2 in the deep VAE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linear_vae.data.datasets import load_data, make_synthetic, three_way_split
from linear_vae.deep.deep import DeepConfig, DeepHyper, batched_hyper, init_state, train_step, train_until_stopped
from linear_vae.deep.stopping import CAP, CONVERGED, NONFINITE, RUNNING, StoppingRule, decide
from linear_vae.training import loop

RULE = StoppingRule(patience=300, tolerance=0.1, window=200, sigma2_tolerance=0.01, max_steps=2000)
EVERY = 100


def records(objective, log_sigma2=None):
    objective = np.asarray(objective, dtype=float)
    steps = EVERY * np.arange(1, objective.size + 1)
    return steps, objective, np.zeros_like(objective) if log_sigma2 is None else np.asarray(log_sigma2, float)


# --- the rule ---------------------------------------------------------------------------------------
def test_a_run_stops_once_its_best_gained_at_most_the_tolerance_over_the_patience():
    # Improves by 1 nat up to step 500, then by 0.02 per record: over 300 steps the best gains
    # 0.06 <= 0.1, so the run stops at step 800 (its best 5.06 is within 0.1 of the 5.0 of step 500).
    objective = [1, 2, 3, 4, 5, 5.02, 5.04, 5.06, 5.08]
    for n in range(1, len(objective) + 1):
        got = decide(RULE, EVERY, *records(objective[:n]), learned=False)
        assert got.stopped == (n * EVERY >= 800), n
    assert decide(RULE, EVERY, *records(objective), learned=False).reason == CONVERGED


def test_small_gains_that_add_up_to_more_than_the_tolerance_keep_a_run_going():
    """0.05 nats per record is below the tolerance at every record, but 0.15 over the patience of
    300 steps: the best has improved by more than 0.1, so the run must not stop (version 1 of the
    rule, which restarted the clock only at one record beating the best by 0.1, stopped it)."""
    creeping = [1, 2, 3, 4, 5] + [5 + 0.05 * i for i in range(1, 12)]
    assert not any(decide(RULE, EVERY, *records(creeping[:n]), learned=False).stopped for n in range(1, 17))
    assert decide(RULE, EVERY, *records(creeping + [5.55] * 2), learned=False).stopped


def test_an_improvement_larger_than_the_tolerance_restarts_the_clock():
    objective = [1, 2, 2, 2, 2.5, 2.5, 2.5]  # +0.5 at step 500: stop at 800, not at 500
    assert not decide(RULE, EVERY, *records(objective), learned=False).stopped
    assert decide(RULE, EVERY, *records(objective + [2.5]), learned=False).stopped


def test_learned_sigma2_must_also_settle_in_window_means():
    flat = [5.0] * 10
    # Jitter of +-0.05 per record averages out over 2-record windows: settled.
    jitter = [0.05 * (-1) ** i for i in range(10)]
    assert decide(RULE, EVERY, *records(flat, jitter), learned=True).reason == CONVERGED
    # A drift of 0.01 per record gives window means 0.02 apart: not settled, keeps running.
    drift = [-0.01 * i for i in range(10)]
    got = decide(RULE, EVERY, *records(flat, drift), learned=True)
    assert got.reason == RUNNING and got.sigma2_drift == pytest.approx(0.02)
    # ... which a fixed sigma2 ignores.
    assert decide(RULE, EVERY, *records(flat, drift), learned=False).reason == CONVERGED


def test_the_cap_and_a_nonfinite_objective_stop_a_run_without_calling_it_converged():
    rising = np.arange(RULE.max_steps // EVERY, dtype=float)  # +1 nat per record until the cap
    assert decide(RULE, EVERY, *records(rising), learned=False).reason == CAP
    assert decide(RULE, EVERY, *records(rising[:-1]), learned=False).reason == RUNNING
    assert decide(RULE, EVERY, *records([1.0, np.nan]), learned=False).reason == NONFINITE


def test_the_clock_starts_after_the_kl_warm_up():
    flat = [1.0] * 6
    assert decide(RULE, EVERY, *records(flat), learned=False).stopped
    assert not decide(RULE, EVERY, *records(flat), learned=False, warmup=400).stopped


def test_the_rule_refuses_step_counts_off_the_record_grid():
    with pytest.raises(ValueError, match="multiples"):
        StoppingRule(window=150).validate(100)


# --- the split ------------------------------------------------------------------------------------
def test_three_way_split_is_disjoint_complete_class_balanced_and_seeded():
    data = load_data("mnist")
    splits = three_way_split(data, 500, 500, seed=0)
    rows = splits.rows
    assert (rows["train"].size, rows["validation"].size, rows["test"].size) == (4000, 500, 500)
    everything = np.concatenate(list(rows.values()))
    assert np.unique(everything).size == data.n == everything.size  # disjoint and complete
    np.testing.assert_array_equal(splits.test.X, data.X[rows["test"]])
    shares = np.bincount(data.labels, minlength=10) / data.n
    for part, size in ((splits.validation, 500), (splits.test, 500)):
        assert np.all(np.abs(np.bincount(part.labels, minlength=10) - shares * size) <= 1)
    again = three_way_split(data, 500, 500, seed=0)
    np.testing.assert_array_equal(again.rows["test"], rows["test"])
    assert not np.array_equal(three_way_split(data, 500, 500, seed=1).rows["test"], rows["test"])


def test_three_way_split_refuses_parts_that_do_not_fit():
    with pytest.raises(ValueError, match="leave at least 2"):
        three_way_split(make_synthetic(n=100), 50, 49)


# --- the grid that drops finished runs, and its checkpoint ------------------------------------------
def test_padded_sizes_are_few_and_waste_at_most_a_third():
    sizes = {loop.padded_size(m, 81) for m in range(1, 82)}
    assert sizes == {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 81}
    assert all(loop.padded_size(m, 81) <= 1.5 * m for m in range(1, 82))


SMALL = DeepConfig(latent_dim=3, hidden=(8,), log_every=10, batch_size=20, learning_rate=3e-3)
# tolerance 1 nat: the tiny networks creep up by more than 0.1 per 60 steps for all 300, and the
# grid must see runs stop at different steps (and two reach the cap)
SMALL_RULE = StoppingRule(patience=60, tolerance=1.0, window=30, sigma2_tolerance=0.01, max_steps=300)


def small_grid():
    X = make_synthetic(n=300).X
    hyper = DeepHyper(
        np.array([0.3, 1.0, 3.0, 2.0, 5.0]),
        np.array([0, 0, 1, 0, 0.0]),
        np.array([0, 0, 0, 40, 0.0]),
        np.arange(5),
        sigma2_step_size=np.array([0, 0, 3e-2, 0, 0.0]),
        exact_sigma2=np.array([0, 0, 0, 0, 1.0]),
    )
    return X[:200], X[200:], hyper


def as_arrays(result):
    return [np.asarray(a) for a in jax.tree.leaves((result.histories, result.best_params, result.best_step))]


@pytest.fixture(scope="module")
def uninterrupted():
    X, X_val, hyper = small_grid()
    return train_until_stopped(SMALL, hyper, X, X_val, SMALL_RULE)


def test_runs_stop_at_different_steps_and_leave_the_grid(uninterrupted):
    stops = [int(h.step[-1]) for h in uninterrupted.histories]
    assert len(set(stops)) > 1, stops  # otherwise nothing was dropped
    grid = uninterrupted.grid
    assert grid.configuration_steps == sum(stops) < grid.cap_steps
    assert grid.configuration_steps <= grid.lane_steps <= grid.cap_steps
    assert [size for _, size in grid.sizes][0] == 5 and len(grid.sizes) > 1
    for h, d, best in zip(uninterrupted.histories, uninterrupted.decisions, uninterrupted.best_step):
        assert d.reason in (CONVERGED, CAP)
        # The kept checkpoint is the best validation record up to the stop.
        assert best == h.step[int(np.argmax(h.heldout_objective))]


def test_dropping_finished_runs_changes_no_run(uninterrupted):
    """The same grid with every run kept to the end: lanes are independent, so each run's records
    and checkpoint are those of the shrinking grid (float32, to within round-off of batched matmuls
    of other sizes)."""
    X, X_val, hyper = small_grid()
    kept = train_until_stopped(SMALL, hyper, X, X_val, SMALL_RULE, drop_finished=False)
    assert [int(h.step[-1]) for h in kept.histories] == [int(h.step[-1]) for h in uninterrupted.histories]
    for a, b in zip(as_arrays(kept), as_arrays(uninterrupted)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_an_interrupted_grid_resumes_to_bitwise_the_same_result(uninterrupted, tmp_path):
    X, X_val, hyper = small_grid()
    checkpoint = tmp_path / "grid.pkl"
    calls = []

    def interrupt_after_12_records(done, total):
        calls.append(done)
        if len(calls) == 12:
            raise KeyboardInterrupt

    original = loop.run_until_stopped

    def with_checkpoint_every_record(*args, **kwargs):
        return original(*args, **{**kwargs, "checkpoint_seconds": 0.0})

    loop.run_until_stopped = with_checkpoint_every_record
    try:
        with pytest.raises(KeyboardInterrupt):
            train_until_stopped(
                SMALL,
                hyper,
                X,
                X_val,
                SMALL_RULE,
                checkpoint=checkpoint,
                identity="a",
                progress=interrupt_after_12_records,
            )
        assert checkpoint.exists()
        with pytest.raises(ValueError, match="different configuration"):
            train_until_stopped(SMALL, hyper, X, X_val, SMALL_RULE, checkpoint=checkpoint, identity="b")
        resumed = train_until_stopped(SMALL, hyper, X, X_val, SMALL_RULE, checkpoint=checkpoint, identity="a")
    finally:
        loop.run_until_stopped = original
    assert resumed.grid.resumed_from_record == 11  # the checkpoint written after the 11th record
    # Training time adds up over the two processes (the first one's counted up to its checkpoint).
    assert resumed.grid.seconds_total is not None and resumed.grid.seconds_total > resumed.grid.seconds
    for a, b in zip(as_arrays(resumed), as_arrays(uninterrupted)):
        np.testing.assert_array_equal(a, b)
    assert [d.reason for d in resumed.decisions] == [d.reason for d in uninterrupted.decisions]


# --- learning sigma2: Adam at a per-run step size, or the exact update --------------------------------
def one_step(hyper_values: dict):
    X = jnp.asarray(make_synthetic(n=200).X, jnp.float32)
    hyper = jax.tree.map(lambda a: a[0], batched_hyper(SMALL, DeepHyper(**hyper_values)))
    state, _ = init_state(SMALL, hyper, X, X)
    return X, state, hyper, jitted_step(state, hyper, X)


jitted_step = jax.jit(lambda state, hyper, X: train_step(state, hyper, X, SMALL))


def test_adam_moves_log_sigma2_by_each_runs_own_step_size_on_its_first_step():
    for step in (1e-3, 3e-2):
        values = dict(sigma2=[2.0], learn_sigma2=[1.0], warmup=[0.0], seed=[0], sigma2_step_size=[step])
        _, before, _, after = one_step(values)
        # Adam's first update is the gradient's sign times the step size (up to its epsilon).
        moved = abs(float(after.params.log_sigma2 - before.params.log_sigma2))
        np.testing.assert_allclose(moved, step, rtol=1e-4)


def test_the_exact_update_sets_sigma2_to_the_minibatch_squared_error_per_pixel():
    """At the networks before the step, d/dsigma2 of the minibatch ELBO vanishes at the mean
    squared error per pixel; recomputed here from the minibatch the step drew."""
    values = dict(sigma2=[2.0], learn_sigma2=[0.0], warmup=[0.0], seed=[3], exact_sigma2=[1.0])
    X, before, _, after = one_step(values)
    _, key_rows, key_eps = jax.random.split(jax.random.wrap_key_data(before.key), 3)
    rows = jax.random.randint(key_rows, (SMALL.batch_size,), 0, X.shape[0])
    x = np.asarray(X[rows], np.float64)
    params = before.params
    out = np.asarray(x @ params.encoder[0][0] + params.encoder[0][1], np.float64)
    out = np.maximum(out, 0) @ np.asarray(params.encoder[1][0], np.float64) + np.asarray(params.encoder[1][1])
    mean, log_var = out[:, :3], out[:, 3:]
    z = mean + np.exp(0.5 * log_var) * np.asarray(jax.random.normal(key_eps, mean.shape, jnp.float32))
    h = np.maximum(z @ np.asarray(params.decoder[0][0], np.float64) + np.asarray(params.decoder[0][1]), 0)
    reconstruction = h @ np.asarray(params.decoder[1][0], np.float64) + np.asarray(params.decoder[1][1])
    expected = np.mean((x - reconstruction) ** 2)
    np.testing.assert_allclose(float(np.exp(after.params.log_sigma2)), expected, rtol=1e-4)  # float32 forward pass
