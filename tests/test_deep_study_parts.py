"""The deep-VAE study trains in parts and keeps every finished part beside its output, so a study
longer than one sitting loses at most the part it was training (linear_vae.experiments.deep_vae).

The training itself is replaced here by a stand-in that records which parts it was asked for: what
is tested is the bookkeeping (which parts are trained again, the order of the runs, the totals).
The real training of a part, its checkpoint and its bitwise resume are tested in
tests/test_stopping.py, and a whole quick study in tests/test_experiments.py.
"""

from __future__ import annotations

import json

import pytest

from linear_vae.experiments import deep_vae

CONFIG = {**deep_vae.CONFIG, **deep_vae.QUICK}
SETTING = deep_vae.SETTING
#: The parts with runs in the quick configuration (an empty part trains nothing).
PARTS = [part for part in deep_vae.PARTS if deep_vae.grid(CONFIG, part)]


@pytest.fixture
def trained(monkeypatch):
    """Replace :func:`deep_vae.study_part` by a stand-in; returns the list of parts it trained."""
    calls = []

    def study_part(config, splits, epsilons, part, progress, checkpoint):
        calls.append(part)
        configs = deep_vae.grid(config, part)
        steps = [100 * (i + 1) for i in range(len(configs))]
        if checkpoint is not None:
            checkpoint.write_bytes(b"grid state")  # as the real training leaves it
        return {
            "runs": [{**g, "stop_step": s, "from": part} for g, s in zip(configs, steps)],
            "training": {
                "seconds": 2.0,
                "compile_seconds": 1.0,
                "configuration_steps": sum(steps),
                "lane_steps": sum(steps) + 10,
                "cap_steps": len(configs) * config["rule"]["max_steps"],
                "timed_lane_steps": sum(steps) + 10,
                "seconds_total": 2.0,
                "grid_sizes": [[0, len(configs)]],
                "resumed_from_record": 0,
                "ms_per_configuration_step": 2e3 / (sum(steps) + 10),
            },
        }

    monkeypatch.setattr(deep_vae, "study_part", study_part)
    return calls


def test_the_parts_divide_the_grid():
    full = {**deep_vae.CONFIG}
    runs = deep_vae.grid(full)
    assert sorted(map(str, runs)) == sorted(str(g) for part in deep_vae.PARTS for g in deep_vae.grid(full, part))
    assert all(deep_vae.grid(full, part) for part in deep_vae.PARTS)
    assert len(PARTS) >= 2


def test_every_part_is_trained_once_and_its_runs_come_back_in_grid_order(trained, tmp_path):
    checkpoint = tmp_path / "deep_vae.checkpoint.pkl"
    study = deep_vae.deep_study(CONFIG, None, None, None, checkpoint)
    assert trained == PARTS
    assert [tuple(r[k] for k in SETTING) for r in study["runs"]] == [
        tuple(g[k] for k in SETTING) for g in deep_vae.grid(CONFIG)
    ]
    for part in PARTS:
        saved = json.loads(deep_vae.part_path(checkpoint, part).read_text())
        assert saved["runs"] and all(deep_vae.part_of(r, CONFIG) == part for r in saved["runs"])
    assert not checkpoint.exists(), "a finished part's grid checkpoint must not be resumed by the next part"
    parts = study["training"]["parts"]
    for key in deep_vae.ADDITIVE:
        assert study["training"][key] == sum(t[key] for t in parts.values())
    timed = sum(t["timed_lane_steps"] for t in parts.values())
    assert study["training"]["ms_per_configuration_step"] == pytest.approx(1e3 * study["training"]["seconds"] / timed)


def test_a_finished_part_is_read_back_not_trained_again(trained, tmp_path):
    checkpoint = tmp_path / "deep_vae.checkpoint.pkl"
    first = deep_vae.deep_study(CONFIG, None, None, None, checkpoint)
    last = PARTS[-1]
    deep_vae.part_path(checkpoint, last).unlink()  # as if the process had died in that part
    trained.clear()
    second = deep_vae.deep_study(CONFIG, None, None, None, checkpoint)
    assert trained == [last]
    assert second["runs"] == first["runs"]


def test_a_part_saved_under_other_training_settings_is_trained_again(trained, tmp_path):
    checkpoint = tmp_path / "deep_vae.checkpoint.pkl"
    deep_vae.deep_study(CONFIG, None, None, None, checkpoint)
    trained.clear()
    changed = {**CONFIG, "learning_rate": CONFIG["learning_rate"] / 2}
    deep_vae.deep_study(changed, None, None, None, checkpoint)
    assert trained == PARTS


def test_a_part_saved_with_other_runs_is_trained_again(trained, tmp_path):
    """The part a run belongs to depends on ``part_sigma2``, which a part's identity does not name:
    a saved part is taken only when it holds exactly the runs the part has now."""
    checkpoint = tmp_path / "deep_vae.checkpoint.pkl"
    deep_vae.deep_study(CONFIG, None, None, None, checkpoint)
    trained.clear()
    regrouped = {**CONFIG, "part_sigma2": 2.0}  # the fixed runs at 1.0 move to the small part
    deep_vae.deep_study(regrouped, None, None, None, checkpoint)
    assert "fixed-large-sigma2" in trained and "fixed-small-sigma2" in trained


def test_finished_only_trains_nothing_and_lists_the_missing_parts(trained, tmp_path):
    checkpoint = tmp_path / "deep_vae.checkpoint.pkl"
    deep_vae.deep_study(CONFIG, None, None, None, checkpoint)
    deep_vae.part_path(checkpoint, PARTS[-1]).unlink()
    trained.clear()
    study = deep_vae.deep_study(CONFIG, None, None, None, checkpoint, finished_only=True)
    assert trained == [] and study["missing_parts"] == [PARTS[-1]]
    assert {deep_vae.part_of(r, CONFIG) for r in study["runs"]} == set(PARTS[:-1])
    with pytest.raises(ValueError, match="no part of deep_vae is finished"):
        deep_vae.deep_study(
            CONFIG, None, None, None, tmp_path / "empty" / "deep_vae.checkpoint.pkl", finished_only=True
        )


def test_without_an_output_folder_nothing_is_saved(trained, tmp_path):
    deep_vae.deep_study(CONFIG, None, None, None, None)
    assert trained == PARTS
    assert list(tmp_path.iterdir()) == []


def test_a_separation_below_the_shown_precision_is_shown_with_the_digits_that_carry_it():
    """The report's rate at sigma2 = 10 once read "above (0.0 [0.0, 0.0] against 0.0)": an interval
    above zero by 2.5e-4 nats printed at one decimal. The direction must come with digits that show it."""
    interval = {"mean": 4.6e-4, "low": 2.5e-4, "high": 7.2e-4, "n": 5}
    assert deep_vae._against_point(interval, 0.0) == "above (0.00046 [0.00025, 0.00072] against 0)"
    wide = {"mean": 2.2, "low": -1.1, "high": 5.5, "n": 5}
    assert deep_vae._against_point(wide, 3.0) == "consistent with (2.2 [-1.1, 5.5] against 3.0)"


def test_the_report_says_which_condition_of_the_rule_a_run_at_the_cap_missed():
    """Two runs at a 600-step cap (records every 100, patience 300, window 200): a learned-sigma2 run
    whose ELBO stopped gaining at step 200 while log sigma2 kept falling by 0.02 per record (window
    means 0.04 apart), and a fixed run still gaining 1 nat per record."""
    config = {"log_every": 100, "rule": {"patience": 300, "tolerance": 0.1, "window": 200,
                                         "sigma2_tolerance": 0.01, "max_steps": 600}}  # fmt: skip
    steps = [100, 200, 300, 400, 500, 600]
    settled_elbo = {"step": steps, "validation_objective": [1.0, 2.0, 2.0, 2.0, 2.0, 2.0],
                    "mean_log_sigma2": [-0.02 * i for i in range(6)]}  # fmt: skip
    gaining = {"step": steps, "validation_objective": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "mean_log_sigma2": [0.0] * 6}
    runs = [
        {"kind": "learned", "sigma2": 0.01, "sigma2_step": 0.001, "warmup": 0, "seed": 0, "converged": False,
         "stop_reason": "cap", "history": settled_elbo},
        {"kind": "fixed", "sigma2": 1.0, "sigma2_step": None, "warmup": 0, "seed": 0, "converged": False,
         "stop_reason": "cap", "history": gaining},
    ]  # fmt: skip
    text = deep_vae.cap_diagnosis(runs, config)
    assert text.startswith("**At the cap**: 2 runs reached 600 steps. 1 of them had met the ELBO condition")
    assert "400-400 steps without one" in text
    assert "0.040-0.040 apart where the rule asks less than 0.01 (learned from 0.01, Adam step 0.001)" in text
    assert text.endswith("the other 1 were still gaining.")
    assert deep_vae.cap_diagnosis([runs[1]], config).endswith(
        "None had met the ELBO condition (no gain of more than 0.1 nats for 300 steps): all were still gaining."
    )
    assert deep_vae.cap_diagnosis([{**runs[0], "converged": True, "stop_reason": "converged"}], config) == ""


def test_learned_runs_that_never_settle_are_compared_only_with_the_settling_condition_waived_and_said_so():
    """Learned-sigma2 runs at the cap: their validation ELBO stopped gaining (ELBO condition met)
    while log sigma2 kept drifting, so none converged.  The report must say the rule gives no answer,
    and compare the runs at their checkpoints only under that heading, counting the runs it admits;
    a run still gaining at the cap is not admitted."""
    config = {"log_every": 100, "rule": {"patience": 300, "tolerance": 0.1, "window": 200,
                                         "sigma2_tolerance": 0.01, "max_steps": 600}}  # fmt: skip
    steps = [100, 200, 300, 400, 500, 600]
    plateau = {"step": steps, "validation_objective": [1.0, 2.0, 2.0, 2.0, 2.0, 2.0],
               "mean_log_sigma2": [-0.02 * i for i in range(6)]}  # fmt: skip
    gaining = {**plateau, "validation_objective": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}

    def run(start, seed, test_elbo, history=plateau):
        measures = dict.fromkeys(deep_vae.MEASURES, 1.0)
        return {**measures, "kind": "learned", "sigma2": start, "sigma2_step": 0.001, "warmup": 0, "seed": seed,
                "converged": False, "stop_reason": "cap", "test_elbo": test_elbo, "history": history}  # fmt: skip

    runs = [run(0.01, 0, 500.0), run(0.01, 1, 501.0), run(0.01, 2, 900.0, gaining),
            run(10.0, 0, 450.0), run(10.0, 1, 451.0), run(10.0, 2, 452.0)]  # fmt: skip
    results = {"runs": runs}
    assert [deep_vae.plateaued(r, config) for r in runs] == [True, True, False, True, True, True]
    summary = deep_vae.summary_by_setting(deep_vae.summaries(results))
    text = deep_vae._learned_text(results, summary, config)
    assert text.startswith("**Learned sigma2: no answer under the rule.** 0 of 6 learned-sigma2 runs converged")
    assert (
        "5 of the 6 met its ELBO condition (no gain of more than 0.1 nats for 300 steps): the 0 converged and 5" in text
    )
    assert "(test images at the best validation checkpoint, sigma2 unsettled)" in text
    assert "Adam at 0.001, from 10 (3 of 3 runs against 2 of 3): test ELBO lower" in text
    assert text.endswith(
        "- **test ELBO**: a deficit under Adam at 0.001 from every large start compared.\n"
        "- **rate**: a deficit under no update; none under Adam at 0.001.\n"
        "- **active units**: a deficit under no update; none under Adam at 0.001."
    )


def test_the_deficit_answer_names_the_updates_and_concludes_only_from_a_clean_pattern():
    """Two updates, two large starts: a deficit from both under Adam and from neither under the
    exact update is a step-size effect; a missing setting gives no conclusion and is named, and a
    setting of one seed (no interval) gives no direction."""
    steps, large = ["0.001", "exact"], [3.0, 10.0]
    clean = {("m", "0.001", 3.0): -1, ("m", "0.001", 10.0): -1, ("m", "exact", 3.0): 0, ("m", "exact", 10.0): 1}
    assert deep_vae._deficit_answer(clean, "m", "active units", steps, large) == (
        "- **active units**: a deficit under Adam at 0.001 from every large start compared; none under the exact "
        "update: it depends on how fast sigma2 may move, not on the objective alone."
    )
    gap = {**clean, ("m", "exact", 10.0): None}
    assert deep_vae._deficit_answer(gap, "m", "active units", steps, large).endswith(
        "none under the exact update; not comparable: the exact update from 10."
    )
    everywhere = dict.fromkeys(clean, -1)
    assert deep_vae._deficit_answer(everywhere, "m", "rate", steps, large).endswith(
        "under Adam at 0.001, the exact update from every large start compared: it does not depend on the step size."
    )
    assert deep_vae.separated(deep_vae.interval([400.0]), deep_vae.interval([480.0, 482.0, 481.0])) == 0
