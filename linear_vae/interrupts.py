"""Stop a command cleanly on SIGINT (Ctrl-C) and SIGTERM, wherever the signal lands.

Why the work runs off the main thread.  CPython runs a Python-level signal handler only on the
main thread, between two bytecodes.  With the work on the main thread, Ctrl-C raises
``KeyboardInterrupt`` wherever that thread happens to be:

* inside a Python callback that XLA's compiler or JAX's tracing machinery is running, where
  the C++ frames above it were not written to be unwound by a Python exception: a long traceback
  through JAX internals, or a segmentation fault;
* inside a weakref finaliser or ``__del__`` (JAX's caches use ``WeakKeyDictionary``), where
  Python can only print ``Exception ignored in ...`` and carry on, so the interrupt is lost;
* and while the main thread is inside one long native call (an 11 s compilation), the handler
  cannot run at all until that call returns.

SIGTERM's default action kills the process at once, so no clean-up runs.

:func:`run_guarded` therefore runs the command on a worker thread and keeps the main thread
waiting in short ``join`` calls, where a signal is handled within 0.1 s.  The handler never
raises into the work: it removes the temporary files of the writes in progress
(:func:`linear_vae.core.io.abort_writes`, which also refuses any later write), prints one line and
leaves with ``os._exit`` (exit status 130 for SIGINT, 143 for SIGTERM), skipping the interpreter
shutdown that would otherwise wait for, or tear down under, XLA's threads.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

#: Exit status of a command stopped by each signal (128 + the signal number, the shell convention).
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}

_describe_progress: Callable[[], str] | None = None


def set_status(describe: Callable[[], str] | None) -> None:
    """Install what the "interrupted" line says about the work done so far (e.g. ``"3 of 9 figures
    written to figures/"``); ``None`` says nothing.

    >>> from linear_vae import interrupts
    >>> set_status(lambda: "3 of 9 figures written to figures/")
    >>> interrupts._describe_progress()  # what the "interrupted" line will say
    '3 of 9 figures written to figures/'
    >>> set_status(None)
    """
    global _describe_progress
    _describe_progress = describe


def stop(signum: int, _frame=None) -> None:
    """The signal handler: remove temporary files, print one line, leave with 130 or 143.

    >>> import subprocess
    >>> code = "import signal; from linear_vae.interrupts import stop; stop(signal.SIGTERM)"
    >>> done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    >>> done.returncode, done.stderr
    (143, 'linear-vae: interrupted; nothing partial left\\n')
    """
    from linear_vae.core.io import abort_writes

    for sig in EXIT_STATUS:  # a second Ctrl-C while cleaning up changes nothing
        signal.signal(sig, signal.SIG_IGN)
    abort_writes()
    done = ""
    if _describe_progress is not None:
        try:
            done = f"{_describe_progress()}; "
        except Exception:  # the summary is a courtesy; the exit must not depend on it
            done = ""
    clear = "\r\033[K" if sys.stderr.isatty() else ""  # wipe a live progress bar's line
    os.write(2, f"{clear}linear-vae: interrupted; {done}nothing partial left\n".encode())
    os._exit(EXIT_STATUS.get(signum, 128 + signum))


def run_guarded(work: Callable[[], int], received: list[int] | tuple = ()) -> int:
    """Run ``work()`` on a worker thread with :func:`stop` handling SIGINT and SIGTERM; return its exit status.

    ``received`` lists signals that arrived before the handlers were installed (the console entry
    point records them while the package and JAX are imported): the first one stops at once.
    An exception from ``work`` is re-raised here.

    >>> before = {sig: signal.getsignal(sig) for sig in EXIT_STATUS}
    >>> run_guarded(lambda: 3)  # the work's exit status
    3
    >>> for sig, handler in before.items():  # the handlers it installed stay installed: put them back
    ...     _ = signal.signal(sig, handler)
    """
    for sig in EXIT_STATUS:
        signal.signal(sig, stop)
    if received:
        stop(received[0])
    outcome: dict = {}

    def target():
        try:
            outcome["status"] = work()
        except BaseException as error:  # noqa: BLE001 (handed to the main thread below)
            outcome["error"] = error

    worker = threading.Thread(target=target, name="linear-vae-command", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)  # short waits: the handler runs between them
    if "error" in outcome:
        raise outcome["error"]
    return outcome["status"]
