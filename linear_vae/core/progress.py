"""Progress of a command on stderr: a live bar on a terminal, plain lines in a log.

One :class:`Progress` serves a whole command.  The trainers report to it through two calls:
``progress(steps_done, steps_total)`` between chunks, and ``progress.phase(name)`` when a stage
begins ("compiling", "training", "drawing"); Newton's sweeps also count "iterations"
(:meth:`Progress.units`) and show their worst gain (:meth:`Progress.status`).  Commands and experiments name what is running with
:meth:`Progress.task` (for example ``"[5/9] latent_dim K=16, sigma2 learned"``) and add free text
with :meth:`Progress.message`.

* On a terminal a `tqdm <https://tqdm.github.io>`_ bar shows the task, its phase, steps done,
  rate and time left, and is cleared when the task ends (tqdm redraws one line with carriage
  returns and clears it properly, which hand-written ``\\r`` output did not).
* Anywhere else (a file, a pipe, CI) every phase and message is one line, and step counts are a
  line at most every :data:`LINE_INTERVAL` seconds plus one at the end, each with its rate and
  the time left, so a log stays readable.
"""

from __future__ import annotations

import sys
import time

#: Seconds between two step-count lines when stderr is not a terminal.
LINE_INTERVAL = 10.0
#: A bar appears only once a task has run this long (short runs stay quiet on a terminal).
BAR_DELAY = 1.0
#: A stage without steps (loading, compiling, drawing) on a terminal: its name and clock.
STAGE_FORMAT = "{desc}: {postfix} [{elapsed}]"
#: Back to the start of the line and erase it (ANSI), written when a bar ends.
CLEAR_LINE = "\r\x1b[K"


def _duration(seconds: float) -> str:
    """``42 s``, ``3:07`` (minutes:seconds) or ``3:35:00`` (hours:minutes:seconds)."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class Progress:
    """Progress display for one command (see the module docstring).  ``enabled=False`` is silent.

    >>> progress = Progress(stream=sys.stdout, live=False)  # a log: one line per phase and message
    >>> progress.task("train K=2")
    >>> progress.phase("compiling")
    train K=2: compiling
    >>> progress(10, 10)
    train K=2: 10/10 steps
    >>> Progress(enabled=False).message("nothing is shown")
    """

    def __init__(self, enabled: bool = True, stream=None, live: bool | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._prefix = ""
        self._label = ""
        self._phase = ""
        self._bar = None
        self._steps_start: tuple[float, int] | None = None
        self._last_line = 0.0
        self._total = 0
        self._unit = "step"
        self._status = ""

    # -- what is running --------------------------------------------------------------------------
    def context(self, prefix: str) -> None:
        """A prefix for the labels of the tasks that follow (``"[5/9]"``: the fifth of nine experiments).

        >>> progress = Progress(stream=sys.stdout, live=False)
        >>> progress.context("[5/9]")
        >>> progress.task("latent_dim")
        >>> progress.phase("training")
        [5/9] latent_dim: training
        """
        self._prefix = prefix

    def task(self, label: str) -> None:
        """Start a new task (closes the previous one's bar).

        >>> progress = Progress(stream=sys.stdout, live=False)
        >>> progress.task("sweep")
        >>> progress.phase("drawing")
        sweep: drawing
        """
        self._end_bar()
        self._label, self._phase = f"{self._prefix} {label}".strip(), ""
        self._steps_start = None
        self._total = 0
        self._unit, self._status = "step", ""

    def units(self, name: str) -> None:
        """What the current task counts (``"iteration"`` for Newton; ``"step"`` by default).

        >>> progress = Progress(stream=sys.stdout, live=False)
        >>> progress.task("newton")
        >>> progress.units("iteration")
        >>> progress(5, 5)
        newton: 5/5 iterations
        """
        self._unit = name

    def status(self, text: str) -> None:
        """A short state of the current task shown with its counts (Newton: its worst gain).

        >>> progress = Progress(stream=sys.stdout, live=False)
        >>> progress.task("newton")
        >>> progress.status("worst gain 3e-09")
        >>> progress(5, 5)
        newton: 5/5 steps, worst gain 3e-09
        """
        self._status = text
        if self.enabled and self.live and self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)

    def phase(self, name: str) -> None:
        """A new stage of the current task: one line in a log, the bar's suffix on a terminal.

        >>> progress = Progress(stream=sys.stdout, live=False)
        >>> progress.phase("loading data")
        loading data
        """
        self._phase = name
        if not self.enabled:
            return
        if self.live:
            self._open_bar(total=None)  # a stage without steps shows its name and clock, then steps
            self._bar.set_postfix_str(self._postfix(), refresh=True)
        else:
            self._line(f"{self._label}: {name}" if self._label else name)

    def message(self, text: str) -> None:
        """One line of free text, as given.

        >>> Progress(stream=sys.stdout, live=False).message("wrote figures/latent_dim.png")
        wrote figures/latent_dim.png
        """
        if not self.enabled:
            return
        self._line(text)

    # -- steps --------------------------------------------------------------------------------
    def __call__(self, done: int, total: int) -> None:
        """``done`` of ``total`` optimiser steps (a trainer calls this between chunks)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._steps_start is None:
            self._steps_start = (now, done)  # the rate counts from here: a resumed run starts far from 0
        self._total = total
        if self.live:
            self._update_bar(done, total)
        elif now - self._last_line >= LINE_INTERVAL or done >= total:
            status = f", {self._status}" if self._status else ""
            self._line(f"{self._label}: {done}/{total} {self._unit}s{status}{self._rate_and_eta(done, total, now)}")

    def converged(self, done: int) -> None:
        """The task stopped at step ``done`` of its budget because every configuration converged.

        >>> progress = Progress(stream=sys.stdout, live=False)
        >>> progress.task("sweep")
        >>> progress(10, 500)
        sweep: 10/500 steps
        >>> progress.converged(40)
        sweep: converged after 40 of at most 500 steps
        """
        if not self.enabled or not self._total or done >= self._total:
            return
        if self.live:
            self._end_bar()
        self._line(f"{self._label}: converged after {done} of at most {self._total} {self._unit}s")

    def close(self) -> None:
        """End the current task's bar (nothing is left on the terminal line).

        >>> import io
        >>> terminal = io.StringIO()
        >>> progress = Progress(stream=terminal, live=True)
        >>> progress.task("sweep")
        >>> progress.close()  # no bar was drawn yet (short tasks stay quiet): nothing to clear
        >>> terminal.getvalue()
        ''
        """
        self._end_bar()

    # -- internals ----------------------------------------------------------------------------
    def _rate_and_eta(self, done: int, total: int, now: float) -> str:
        start, start_done = self._steps_start
        elapsed = now - start
        if done <= start_done or elapsed <= 0:
            return ""
        rate = (done - start_done) / elapsed
        left = f", about {_duration((total - done) / rate)} left at most" if done < total else ""
        return f" ({rate:.3g} {self._unit}s/s{left})"

    def _open_bar(self, total: int | None) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=self._label,
                unit=self._unit,
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                delay=BAR_DELAY,
                # no step count before there are steps (not "0step [00:00, ?step/s, compiling]")
                bar_format=STAGE_FORMAT if total is None else None,
            )
            if self._phase or self._status:
                self._bar.set_postfix_str(self._postfix(), refresh=False)

    def _postfix(self) -> str:
        return ", ".join(part for part in (self._phase, self._status) if part)

    def _update_bar(self, done: int, total: int) -> None:
        self._open_bar(total)
        if self._bar.total != total:  # the first steps after compiling: start the clock of the rate here
            self._bar.bar_format = None
            self._bar.reset(total=total)
        self._bar.update(max(0, done - self._bar.n))

    def _end_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()  # leave=False clears the line, except after a forced refresh within the delay
            self._bar = None
            if self.live:
                self.stream.write(CLEAR_LINE)  # so the next line never starts after a bar's text
                self.stream.flush()

    def _line(self, text: str) -> None:
        self._last_line = time.perf_counter()
        if self._bar is not None:
            self._bar.write(text, file=self.stream)  # printed above the bar, which is redrawn
        else:
            print(text, file=self.stream, flush=True)
