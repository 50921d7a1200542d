"""The command line's manners: output folder checked first, --version, help with defaults, --only
choices, quick figures marked on the image, distinct progress labels, a closing line naming the folder."""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

import linear_vae
from linear_vae.cli import build_parser, main
from linear_vae.core import io
from linear_vae.experiments import runner
from linear_vae.experiments.plotting import QUICK_NOTE, mark_quick, new_figure


def _stderr_lines(text: str) -> list[str]:
    """Lines of stderr, split at newlines only (progress rewrites its line with ``\\r``)."""
    return [line for line in text.split("\n") if line.strip()]


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if any experiment is loaded or run."""

    def forbidden(*args, **kwargs):
        pytest.fail("an experiment was loaded or run before the output folder was checked")

    monkeypatch.setattr(runner, "run_experiment", forbidden)
    monkeypatch.setattr(runner, "load", forbidden)


# --- 1. the output folder is checked before anything runs ------------------------------------------
@pytest.mark.parametrize("case", ["existing file", "/dev/null", "/proc", "under a file"])
def test_unusable_out_exits_2_in_one_line_before_anything_runs(case, tmp_path, capsys, nothing_runs):
    a_file = tmp_path / "figures.txt"
    a_file.write_text("keep me")
    out = {
        "existing file": a_file,
        "/dev/null": "/dev/null",
        "/proc": "/proc/linear_vae_test/x",
        "under a file": a_file / "sub",
    }[case]
    start = time.perf_counter()
    status = main(["reproduce", "--quick", "--out", str(out)])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert status == 2
    lines = _stderr_lines(err)
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"linear-vae: error: cannot write figures to {out}: ")
    assert lines[0].endswith("pass --out a writable folder")
    assert elapsed < 5
    assert a_file.read_text() == "keep me"


def test_check_output_dir_creates_parents_and_leaves_no_probe(tmp_path):
    out = io.check_output_dir(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir()
    assert list(out.iterdir()) == []
    assert io.check_output_dir(out) == out  # an existing folder is fine


def test_check_output_dir_tests_writability_by_writing(tmp_path, monkeypatch):
    """Root passes ``os.access`` everywhere: the probe file decides (here it fails: read-only)."""

    def read_only(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)
    with pytest.raises(ValueError, match=r"cannot create a file in it \(Read-only file system\); pass --out") as info:
        io.check_output_dir(tmp_path)
    assert "\n" not in str(info.value)


# --- 2. --version ------------------------------------------------------------------------------------
def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"linear-vae {linear_vae.__version__}\n"


# --- 3. every option has help, with its default --------------------------------------------------------
def _options(parser: argparse.ArgumentParser, command: str = "linear-vae"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from _options(subparser, name)
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield command, action


def test_every_option_has_help_showing_its_default():
    options = list(_options(build_parser()))
    assert {command for command, _ in options} >= {"analyze", "train", "sweep", "verify", "reproduce"}
    for command, action in options:
        name = f"{command} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and action.help.strip(), f"{name} has no help"
        if action.default is not None and action.default is not False:
            assert "default" in action.help, f"{name} does not show its default {action.default!r}"


# --- 4. reproduce --only lists its choices --------------------------------------------------------------
def test_reproduce_help_lists_the_experiments(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for name in runner.EXPERIMENTS:
        assert name in out


def test_reproduce_unknown_experiment_is_a_one_line_usage_error(capsys, nothing_runs):
    assert main(["reproduce", "--only", "landscape", "no_such_figure"]) == 2
    lines = _stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "invalid choice: 'no_such_figure'" in lines[0] and "landscape" in lines[0]


# --- 5. quick figures say so on the image ------------------------------------------------------------------
def _has_note(fig) -> bool:
    return any("quick budget" in text.get_text() for text in fig.texts)


@pytest.mark.parametrize("quick", [True, False])
def test_run_experiment_marks_figures_only_when_quick(quick, tmp_path, monkeypatch):
    """A stand-in experiment (instant) with two figures: both stamped when quick, neither otherwise."""

    def plot(results, config):
        return {key: new_figure()[0] for key in ("a", "b")}

    fake = SimpleNamespace(
        CONFIG={"x": 1}, QUICK={"x": 0}, TITLE="fake", plot=plot, run=lambda config, progress=None: {"x": config["x"]}
    )
    saved, marked = [], []
    monkeypatch.setattr(runner, "load", lambda name: fake)
    monkeypatch.setattr(runner, "save_png", lambda fig, path: saved.append(fig))
    monkeypatch.setattr(runner, "mark_quick", lambda fig: (marked.append(fig), mark_quick(fig)))
    payload = runner.run_experiment("fake", out_dir=tmp_path, quick=quick)
    assert payload["figures"] == ["fake_a.png", "fake_b.png"] and len(saved) == 2
    assert [_has_note(fig) for fig in saved] == [quick, quick]
    assert len(marked) == (2 if quick else 0)


def test_quick_landscape_figure_carries_the_note(tmp_path, monkeypatch):
    """The cheapest experiment (about 2 s with --quick), run for real through the command line."""
    saved = []
    monkeypatch.setattr(runner, "save_png", lambda fig, path: saved.append(fig))
    assert main(["reproduce", "--quick", "--quiet", "--only", "landscape", "--out", str(tmp_path)]) == 0
    assert saved and all(_has_note(fig) for fig in saved)
    assert (tmp_path / "landscape.json").exists()


def test_mark_quick_note_overlaps_nothing_and_keeps_the_panels():
    """Below an "outside lower center" figure legend (placed at the figure's bottom edge), the
    x labels and the suptitle; the panels keep their size in inches."""
    fig, axes = new_figure(ncols=2)
    for ax in axes[0]:
        ax.plot([1, 2], [3, 4], label="a line")
        ax.set_xlabel("x label")
    fig.suptitle("title")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center")
    fig.canvas.draw()
    height = fig.get_size_inches()[1]
    sizes = [ax.get_window_extent().size.copy() for ax in fig.axes]
    mark_quick(fig)
    mark_quick(fig)  # idempotent
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    notes = [text for text in fig.texts if text.get_text() == QUICK_NOTE]
    assert len(notes) == 1
    note = notes[0].get_window_extent(renderer)
    others = [ax.get_tightbbox(renderer) for ax in fig.axes] + [fig.legends[0].get_window_extent(renderer)]
    others += [text.get_window_extent(renderer) for text in fig.texts if text is not notes[0]]
    assert all(note.y1 < box.y0 for box in others)
    assert 0 <= note.y0 and note.x0 >= 0 and note.x1 <= fig.bbox.width
    assert fig.get_size_inches()[1] == pytest.approx(height + 0.3)
    np.testing.assert_allclose([ax.get_window_extent().size for ax in fig.axes], sizes, rtol=1e-6)


# --- 6. distinct progress labels ---------------------------------------------------------------------
@pytest.mark.parametrize("quick", [True, False])
def test_latent_dim_progress_labels_are_distinct(quick, monkeypatch):
    """Every training sweep of latent_dim (fixed and learned sigma2 at each K) has its own label."""
    from linear_vae.experiments import latent_dim

    labels = []

    def fake_train(problem, config, betas, sigma2s, seeds, basis="data", progress=None, label=""):
        labels.append(label)
        n = len(betas)
        history = SimpleNamespace(elbo=np.zeros((n, 1)), mll=np.zeros((n, 1)))
        row = {
            "active_dims": 1,
            "active_dims_epsilon_delta": 1,
            "optimal_elbo": 0.0,
            "optimal_sigma2": 1.0,
            "predicted_active_dims": 1,
            "gap": 0.0,
            "nearest_threshold_distance": 1.0,
        }
        return SimpleNamespace(history=history, sigma2=np.ones(n)), [dict(row) for _ in range(n)]

    monkeypatch.setattr(latent_dim, "train", fake_train)
    config = runner.experiment_config("latent_dim", quick)
    latent_dim.run(config, progress=lambda message: None)
    assert len(labels) == 2 * len(config["trained_latent_dims"])
    assert len(set(labels)) == len(labels), labels
    assert any("learned" in label for label in labels) and any("fixed" in label for label in labels)


# --- 7. the closing line says where the figures went ---------------------------------------------------
@pytest.mark.parametrize("slash", ["", "/"])
def test_reproduce_closing_line_names_the_folder(slash, tmp_path, capsys, monkeypatch):
    def fake_run(name, out_dir, quick=False, progress=None, **kwargs):
        return {"figures": [f"{name}_a.png", f"{name}_b.png"]}

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    out = tmp_path / "new" / "figures"
    assert main(["reproduce", "--only", "landscape", "kl_per_dim", "--out", str(out) + slash]) == 0
    assert out.is_dir()  # created before anything ran
    lines = _stderr_lines(capsys.readouterr().err)
    assert lines[0] == "[1/2] landscape: loading data"  # a phase line per stage (stderr is not a terminal)
    assert any(
        f"[1/2] landscape: wrote landscape_a.png, landscape_b.png, landscape.json in {out}/" in line for line in lines
    )
    assert lines[-1].startswith(f"reproduce: 4 figure(s) from 2 experiment(s) written to {out}/ in ")


# --- 8. a quick run never replaces the committed full-budget figures ----------------------------------
def _fake_run(name, out_dir, quick=False, progress=None, **kwargs):
    io.atomic_write_json(f"{out_dir}/{name}.json", {"name": name, "quick": quick})
    return {"figures": []}


def test_reproduce_quick_writes_to_figures_quick_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_experiment", _fake_run)
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--quick", "--only", "landscape"]) == 0
    assert (tmp_path / "figures-quick" / "landscape.json").exists()
    assert not (tmp_path / "figures").exists()
    assert "written to figures-quick/" in _stderr_lines(capsys.readouterr().err)[-1]


def test_a_quick_run_refuses_to_replace_full_budget_results_unless_forced(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_experiment", _fake_run)
    full = tmp_path / "landscape.json"
    io.atomic_write_json(full, {"name": "landscape", "quick": False})
    status = main(["reproduce", "--quick", "--only", "landscape", "kl_per_dim", "--out", str(tmp_path)])
    lines = _stderr_lines(capsys.readouterr().err)
    assert status == 2 and len(lines) == 1
    assert "full-budget results of landscape" in lines[0] and "--force" in lines[0]
    assert json.loads(full.read_text())["quick"] is False  # untouched
    assert not (tmp_path / "kl_per_dim.json").exists()  # nothing ran
    assert main(["reproduce", "--quick", "--only", "landscape", "--out", str(tmp_path), "--force"]) == 0
    assert json.loads(full.read_text())["quick"] is True


def test_two_reproduce_runs_never_write_one_folder_at_once(tmp_path, monkeypatch, capsys):
    """While one holds the folder's lock, a second refuses in one line (status 2) and writes nothing;
    once the first is done, the folder is free again."""
    monkeypatch.setattr(runner, "run_experiment", _fake_run)
    with io.folder_lock(tmp_path, "linear-vae reproduce"):
        status = main(["reproduce", "--quick", "--only", "landscape", "--out", str(tmp_path)])
        lines = _stderr_lines(capsys.readouterr().err)
        assert status == 2 and len(lines) == 1
        assert "being written by another linear-vae reproduce (pid " in lines[0] and "--out" in lines[0]
        assert not (tmp_path / "landscape.json").exists()
    assert main(["reproduce", "--quick", "--only", "landscape", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "landscape.json").exists()


def test_a_study_checkpoint_is_never_overwritten_unasked(tmp_path, monkeypatch, capsys):
    """A full-budget deep-VAE run keeps its training state beside its output: running it again
    refuses before anything runs, unless told to --resume it or to start over with --force; a quick
    run keeps no checkpoint and never refuses."""
    ran = []

    def fake_run(name, out_dir, quick=False, progress=None, **kwargs):
        ran.append((name, kwargs))
        return {"figures": []}

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    (tmp_path / "deep_vae.checkpoint.pkl").write_bytes(b"state")
    argv = ["reproduce", "--only", "landscape", "deep_vae", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "deep_vae.checkpoint.pkl holds the training state" in err and "--resume" in err and not ran
    assert main([*argv, "--resume"]) == 0
    assert ran[-1] == ("deep_vae", {"resume": True, "restart": False, "finished_parts": False})
    assert main([*argv, "--quick", "--force"]) == 0  # quick: no checkpoint, no refusal
    assert runner.unresolved_checkpoints(["deep_vae"], tmp_path, quick=True) == []


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--only", "deep_vae", "--finished-parts", "--quick"], "trains nothing"),
        (["--only", "deep_vae", "--finished-parts", "--resume"], "trains nothing"),
        (["--only", "landscape", "--finished-parts"], "a study trained in parts"),
        (["--only", "deep_vae", "--finished-parts"], "no part of deep_vae is finished"),
    ],
)
def test_finished_parts_is_refused_where_it_has_nothing_to_read(argv, says, tmp_path, capsys):
    """``reproduce --finished-parts`` trains nothing: with --quick or --resume, for an experiment not
    trained in parts, or with no finished part in --out, it exits 2 with one line and writes nothing."""
    status = main(["reproduce", *argv, "--out", str(tmp_path)])
    lines = _stderr_lines(capsys.readouterr().err)
    assert status == 2 and len(lines) == 1 and says in lines[-1], lines
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    "name, kwargs, says",
    [
        ("deep_vae", {"quick": True}, "trains nothing"),
        ("deep_vae", {"resume": True}, "trains nothing"),
        ("landscape", {}, "a study trained in parts"),
        ("deep_vae", {}, "no part of deep_vae is finished"),
    ],
)
def test_run_experiment_refuses_finished_parts_with_nothing_to_read(name, kwargs, says, tmp_path):
    """The Python API refuses what ``reproduce --finished-parts`` refuses, with the same check
    (:func:`linear_vae.experiments.runner.check_finished_parts`), before anything runs."""
    with pytest.raises(ValueError, match=says):
        runner.run_experiment(name, out_dir=tmp_path, finished_parts=True, **kwargs)
    assert not list(tmp_path.iterdir())
