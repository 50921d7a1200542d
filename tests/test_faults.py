"""Behaviour under faults: interrupts, divergence that stays finite, records at the final step,
tables that runaway numbers cannot break.

The interrupt tests run the real console script in a subprocess and send the signal only after
the command has announced the phase (compiling, training, drawing) on stderr, so the signal
lands where it is meant to: the tests are neither flaky (no sleeps guessing when compilation
starts) nor vacuous (the signal is not sent after the work is over).
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from linear_vae.cli import _cell, main
from linear_vae.core import io
from linear_vae.data.datasets import load_data
from linear_vae.data.problem import Problem
from linear_vae.training import divergence
from linear_vae.training.divergence import DivergenceError
from linear_vae.training.sweep import train_sweep
from linear_vae.training.train import TrainConfig, TrainData, record_steps

#: The installed console script; ``python -m linear_vae_launcher`` (the same entry point) when it is
#: not on the PATH (a virtual environment used without activating it).
LAUNCHER = [shutil.which("linear-vae")] if shutil.which("linear-vae") else [sys.executable, "-m", "linear_vae_launcher"]


# --------------------------------------------------------------------------------------------
# Claim: SIGINT and SIGTERM stop a command wherever they land: one line, exit 130 / 143, no
# traceback, no temporary file left behind.
# --------------------------------------------------------------------------------------------


def _run_until(argv: list[str], marker: str, sig: int, timeout: float = 120.0):
    """Start ``linear-vae argv``, wait for a stderr line containing ``marker``, send ``sig``;
    return ``(exit status, stderr lines, seconds from the signal to the exit)``."""
    process = subprocess.Popen(
        [*LAUNCHER, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    lines: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=1.0):
                continue
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if marker in line:
                sent = time.monotonic()
                process.send_signal(sig)
                rest = process.communicate(timeout=60)[1]
                lines += rest.splitlines()
                return process.returncode, lines, time.monotonic() - sent
        pytest.fail(f"never saw {marker!r} on stderr; got {lines}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "experiment, marker, sig",
    [
        ("collapse_threshold", "compiling", signal.SIGINT),  # inside an XLA compilation
        ("collapse_threshold", "training", signal.SIGTERM),  # inside the compiled training loop
        ("landscape", "drawing", signal.SIGINT),  # while figures are rendered and written
    ],
)
def test_interrupt_stops_with_one_line_status_and_no_partial_file(tmp_path, experiment, marker, sig):
    out = tmp_path / "figures"
    status, lines, seconds = _run_until(["reproduce", "--quick", "--only", experiment, "--out", str(out)], marker, sig)
    assert status == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], lines
    text = "\n".join(lines)
    assert "Traceback" not in text and "Exception ignored" not in text
    interrupted = [line for line in lines if "interrupted" in line]
    assert interrupted == [
        f"linear-vae: interrupted; 0 of 1 experiments (0 figure(s)) written to {out}/; nothing partial left"
    ], lines
    assert lines[-1] == interrupted[0]  # nothing is printed after it
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not (out / f"{experiment}.json").exists()  # the JSON is written last: the experiment did not finish
    # The handler runs within 0.1 s of the signal; 30 s only guards against a hang on a loaded machine.
    assert seconds < 30


def test_signal_received_while_the_package_was_importing_stops_at_once():
    # The console entry point records signals while JAX is imported and hands them to run_guarded.
    code = (
        "import signal; from linear_vae.interrupts import run_guarded; "
        "run_guarded(lambda: print('ran'), [signal.SIGTERM])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143
    assert done.stdout == "" and done.stderr == "linear-vae: interrupted; nothing partial left\n"


def test_abort_writes_removes_the_temporary_file_of_a_write_in_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_aborted", False)
    monkeypatch.setattr(io, "_pending", set())
    written, release = threading.Event(), threading.Event()
    real_chmod = os.chmod

    def slow_chmod(path, mode):  # called after the data are written, before the rename
        written.set()
        release.wait(10)
        real_chmod(path, mode)

    monkeypatch.setattr(io.os, "chmod", slow_chmod)
    errors = []

    def write():
        try:
            io.atomic_write_bytes(tmp_path / "figure.png", b"x" * 1000)
        except io.WritesAborted as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    assert written.wait(10)
    [tmp] = list(tmp_path.iterdir())
    assert tmp.name.startswith(".figure.png.") and tmp.name.endswith(".tmp")
    io.abort_writes()
    assert list(tmp_path.iterdir()) == []  # removed by the handler's clean-up
    release.set()
    writer.join(10)
    assert len(errors) == 1  # the rename is refused once aborted: no file appears afterwards
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(io.WritesAborted):
        io.atomic_write_bytes(tmp_path / "later.json", b"{}")


# --------------------------------------------------------------------------------------------
# Claim: a run that blows up while staying finite is reported as diverged, by a rule that uses
# only the run itself.
# --------------------------------------------------------------------------------------------


def test_divergence_rule_boundaries():
    start = np.array([-100.0, -100.0, -100.0, -100.0, -100.0])
    margin = divergence.margin(-100.0)  # 10 + 1% of 100 = 11 nats
    assert margin == pytest.approx(11.0)
    end = np.array([-100 - 0.999 * margin, -100 - 1.001 * margin, -50.0, np.nan, -50.0])
    variance = np.array([1.0, 1.0, 1.0, 1.0, 2e12])
    diverged, reasons = divergence.diverged_runs(
        start, end, variance, 1.0, np.array([-1, -1, -1, 7, -1]), np.array([100] * 5)
    )
    assert diverged.tolist() == [False, True, False, True, True]
    assert reasons[0] is None and "fell" in reasons[1] and "step 7" in reasons[3] and "total variance" in reasons[4]
    assert "more than 1e+12 times the data's 1 (a scale 1e+06 times the data's)" in reasons[4]


@pytest.fixture(scope="module")
def synthetic_data():
    dataset = load_data("synthetic")
    return TrainData.build(Problem.from_dataset(dataset))


#: Adam at lr = 100 with learned sigma2: sigma2 runs away to ~1e246 while every number stays finite.
RUNAWAY = TrainConfig(latent_dim=2, optimizer="adam", learning_rate=100.0, steps=2000, log_every=100, learn_sigma2=True)


def test_finite_runaway_raises_naming_configuration_and_step(synthetic_data):
    with pytest.raises(
        DivergenceError, match=r"configuration 0 .*total variance .* by step \d+; lower the `learning_rate`"
    ):
        train_sweep(synthetic_data, RUNAWAY, [1.0], [1.0], [0])


def test_finite_runaway_is_reported_per_configuration_when_asked(synthetic_data):
    result = train_sweep(synthetic_data, RUNAWAY, [1.0, 1.0], [1.0, 2.0], [0, 1], on_divergence="report")
    assert result.diverged.tolist() == [True, True]
    assert all(np.isfinite(result.sigma2)) and all("total variance" in r for r in result.divergence)
    healthy = train_sweep(synthetic_data, TrainConfig(latent_dim=2), [1.0], [1.0], [0], on_divergence="report")
    assert healthy.diverged.tolist() == [False] and healthy.divergence == [None]


def test_sweep_marks_diverged_configurations_and_exits_2(capsys):
    argv = [
        "sweep",
        "--data",
        "synthetic",
        "-k",
        "2",
        "--optimizer",
        "adam",
        "--lr",
        "100",
        "--sigma2s",
        "0.5,1",
        "--steps",
        "2000",
        "--quiet",
    ]
    assert main(argv) == 2
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if "diverged (" in line]
    assert len(rows) == 2, captured.out
    assert captured.err.count("\n") == 1 and "2 of 2 configurations diverged" in captured.err
    assert main(argv + ["--json"]) == 2
    import json

    reports = json.loads(capsys.readouterr().out)
    assert [r["diverged"] for r in reports] == [True, True] and {r["verdict"] for r in reports} == {"diverged"}


# --------------------------------------------------------------------------------------------
# Claim: --steps need not be a multiple of --log-every; the last record is the final step.
# --------------------------------------------------------------------------------------------


def test_last_record_is_taken_at_the_final_step(synthetic_data):
    config = TrainConfig(latent_dim=2, optimizer="adam", steps=250, log_every=100, stop_when_converged=False)
    assert record_steps(config).tolist() == [100, 100, 50]
    result = train_sweep(synthetic_data, config, [1.0], [1.0], [0])
    assert result.history.step[0].tolist() == [100, 200, 250]
    assert result.steps_used.tolist() == [250]


# --------------------------------------------------------------------------------------------
# Claim: table cells keep their width whatever the number.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-941.652345, -8.7e263, 1.275e246, -1e-300, float("nan"), float("inf"), 0.0])
@pytest.mark.parametrize("width, spec", [(14, ".6f"), (10, ".4g"), (10, ".2e"), (9, ".3f"), (7, ".2f")])
def test_table_cells_have_fixed_width(value, width, spec):
    assert len(_cell(value, width, spec)) == width


def test_table_cell_keeps_fixed_point_when_it_fits():
    assert _cell(-941.652345, 14, ".6f") == "   -941.652345"
    assert _cell(None, 7, ".2f") == "      -"


# --------------------------------------------------------------------------------------------
# Claim: progress is plain lines in a log and a bar that clears itself on a terminal.
# --------------------------------------------------------------------------------------------


def test_progress_lines_in_a_log(monkeypatch):
    import io as std_io

    from linear_vae.core import progress as progress_module

    clock = iter(np.arange(0.0, 1000.0, 4.0))  # every reading of the clock is 4 s after the last
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: float(next(clock)))
    stream = std_io.StringIO()
    shown = progress_module.Progress(stream=stream, live=False)
    shown.context("[2/9]")
    shown.task("kl_per_dim")
    shown.phase("compiling")
    shown.phase("training")
    for done in (100, 200, 300, 400):
        shown(done, 1000)
    shown.converged(400)
    lines = stream.getvalue().splitlines()
    assert lines[:2] == ["[2/9] kl_per_dim: compiling", "[2/9] kl_per_dim: training"]
    steps = [line for line in lines if "steps (" in line]
    # a line at most every 10 s (the clock advances 4 s per reading): fewer lines than updates
    assert 1 <= len(steps) < 4 and all("steps/s" in line and "left at most" in line for line in steps[1:])
    assert lines[-1] == "[2/9] kl_per_dim: converged after 400 of at most 1000 steps"


def test_progress_bar_on_a_terminal_is_cleared_at_the_end(monkeypatch):
    import io as std_io

    from linear_vae.core import progress as progress_module
    from linear_vae.core.progress import Progress

    monkeypatch.setattr(progress_module, "BAR_DELAY", 0.0)  # draw at once, as after a second of a long run
    stream = std_io.StringIO()
    shown = Progress(stream=stream, live=True)
    shown.task("sweep")
    shown.phase("compiling")
    for done in (250, 500):
        shown(done, 500)
    shown.close()
    text = stream.getvalue()
    assert "\n" not in text  # redrawn in place with carriage returns, never a new line per update
    assert "/500" in text and "compiling" in text
    assert text.endswith(progress_module.CLEAR_LINE)  # the line is erased when the bar ends
    silent = std_io.StringIO()
    quiet = Progress(enabled=False, stream=silent, live=True)
    quiet.task("x")
    quiet.phase("compiling")
    quiet(1, 2)
    quiet.close()
    assert silent.getvalue() == ""


def _screen(data: str) -> list[str]:
    """The lines a terminal shows after ``data``: carriage return, erase-line (ESC [K) and newline."""
    lines, col = [""], 0
    i = 0
    while i < len(data):
        if data.startswith("\x1b[K", i):
            lines[-1] = lines[-1][:col]
            i += 3
            continue
        char = data[i]
        if char == "\r":
            col = 0
        elif char == "\n":
            lines.append("")
            col = 0
        else:
            line = lines[-1]
            lines[-1] = line[:col] + char + line[col + 1 :]
            col += 1
        i += 1
    return lines


def test_progress_on_a_real_terminal_leaves_whole_lines_only(monkeypatch):
    """Under a pseudo-terminal (what a user's shell gives): stages without steps show their name, not
    "0step"; every bar is erased before the next line, so no line starts after a bar's text; the
    output ends in a newline."""
    import fcntl
    import pty
    import struct
    import termios

    from linear_vae.core import progress as progress_module

    monkeypatch.setattr(progress_module, "BAR_DELAY", 0.0)  # draw at once, as a long run would
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    terminal = os.fdopen(slave, "w", encoding="utf-8")
    assert terminal.isatty()
    shown = progress_module.Progress(stream=terminal)  # live, because it is a terminal
    shown.context("[1/2]")
    shown.task("collapse_threshold")
    shown.phase("loading data")
    shown.phase("compiling")
    shown.phase("training")
    shown.units("iteration")  # as a Newton sweep counts
    for done, status in ((15, "worst last-iteration gain 2.0e-01 nats"), (20, "all 4 converged")):
        shown.status(status)
        shown(done, 500)
    shown.converged(20)
    shown.phase("drawing")
    shown.close()
    shown.message("[1/2] collapse_threshold: wrote collapse_threshold.png")
    shown.context("[2/2]")
    shown.task("encoders")
    shown.phase("drawing")
    shown.close()
    shown.message("reproduce: 2 figure(s)")
    terminal.close()
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the slave end is closed: everything has been read
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    text = data.decode("utf-8").replace("\r\n", "\n")  # the terminal's own newline translation
    assert "0step" not in text and "compiling" in text and "worst last-iteration gain" in text
    assert _screen(text) == [
        "[1/2] collapse_threshold: converged after 20 of at most 500 iterations",
        "[1/2] collapse_threshold: wrote collapse_threshold.png",
        "reproduce: 2 figure(s)",
        "",
    ]


def test_progress_rate_counts_only_the_steps_run_since_the_first_report(monkeypatch):
    """A resumed run reports its first progress far from 0: the rate is the steps since then over the
    time since then, not the resumed total over this process's time."""
    import io as std_io

    from linear_vae.core import progress as progress_module

    clock = iter([0.0, 100.0, 200.0, 300.0])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    stream = std_io.StringIO()
    shown = progress_module.Progress(stream=stream, live=False)
    shown.task("resumed")
    shown(300_000, 1_600_000)  # clock 100: the first report, after resuming
    shown(310_000, 1_600_000)  # clock 200: 10,000 steps in 100 s
    assert "(100 steps/s, about 3:35:00 left at most)" in stream.getvalue().splitlines()[-1]


def test_newton_progress_counts_iterations_and_shows_the_worst_gain(monkeypatch):
    """A Newton sweep's progress counts iterations, not steps, and says after every chunk how far
    the worst running configuration still is: its last iteration's gain while the check is
    skipped, the largest predicted gain after a check, then how many have converged."""
    import io as std_io

    from linear_vae.core import progress as progress_module
    from linear_vae.data.problem import Problem
    from linear_vae.training.sweep import train_sweep
    from linear_vae.training.train import TrainConfig, TrainData

    monkeypatch.setattr(progress_module, "LINE_INTERVAL", 0.0)  # a line per chunk
    stream = std_io.StringIO()
    shown = progress_module.Progress(stream=stream, live=False)
    shown.task("sweep")
    X = np.random.default_rng(0).normal(size=(400, 6)) * np.linspace(3.0, 0.5, 6)
    result = train_sweep(
        TrainData.build(Problem.from_data(X)), TrainConfig(latent_dim=2), [1.0, 4.0], [0.5, 0.5], [0, 1], progress=shown
    )
    lines = stream.getvalue().splitlines()
    counts = [line for line in lines if "/500 iterations" in line]
    assert counts and not any(" steps" in line for line in lines)
    assert all("gain" in line or "converged" in line for line in counts)
    assert counts[-1].startswith("sweep: ") and "all 2 converged" in counts[-1]
    assert result.converged.all()
    assert lines[-1] == f"sweep: converged after {int(result.steps_used.max())} of at most 500 iterations"


def test_the_worst_gain_shown_is_that_of_the_running_configurations():
    from linear_vae.training.sweep import _worst_gain_text

    converged = np.array([True, False, False])
    assert (
        _worst_gain_text(np.array([5.0, 2e-3, 4e-6]), converged) == "2 of 3 running, worst predicted gain 2.0e-03 nats"
    )
    assert "unknown" in _worst_gain_text(np.array([0.0, np.inf, 1.0]), converged)
    assert _worst_gain_text(np.zeros(3), np.ones(3, bool)) == "all 3 converged"
