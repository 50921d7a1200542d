"""JAX's persistent compilation cache for the ``linear-vae`` command: compiled programs kept on disk
between runs, so that a second run of the same command skips their compilation.

Where: the ``--compilation-cache DIR`` option, else the ``LINEAR_VAE_CACHE`` environment variable,
else ``$XDG_CACHE_HOME/linear-vae``, else ``~/.cache/linear-vae``; ``off`` (option or variable)
turns it off.  The command line turns it on; from Python, call :func:`enable` (importing the
package changes nothing).

Only the time changes: a program read from the cache is the executable XLA compiled, so results
are bitwise those of a cold run (tested), and JAX writes each entry atomically, so processes
sharing a folder do not corrupt it (tested).  A folder that cannot be written, or entries that
cannot be read, degrade to compiling, with one warning line.

What is cached: every program that took at least :data:`MIN_COMPILE_SECONDS` to compile, except
those that call back into Python, which JAX does not store; no program of the package does.  (The
k x k eigendecompositions of the Newton optimiser and of the convergence test once ran on the host
through ``jax.pure_callback``, which kept every Newton program out of the cache: a warm MNIST
16-beta sweep still compiled for 7-8 s.  :func:`linear_vae.core.spd.eigh` now maps LAPACK over the
configurations inside the program, and the same warm sweep compiles for 1.5 s.)
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

#: Environment variable naming the cache folder, or ``off``.
ENV = "LINEAR_VAE_CACHE"
#: JAX caches only programs slower to compile than this.  Its default, 1 s, leaves out most of the
#: package's programs, which compile in 0.01 to 1 s each and add up to seconds per command; reading
#: an entry takes about a millisecond, so every program is cached.  Measured on a small Adam
#: ``train`` (synthetic data, k = 2), the second run took 11.4-11.9 s wall with 0 against
#: 12.7-13.5 s with 0.1 (when the Newton-style convergence test could not yet be cached).
MIN_COMPILE_SECONDS = 0.0
#: JAX's warnings about entries it could not read or write (it then compiles).
_JAX_CACHE_WARNING = re.compile(r"Error (reading|writing) persistent compilation cache entry")


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/linear-vae``, else ``~/.cache/linear-vae``.

    >>> default_folder().name
    'linear-vae'
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "linear-vae"


def resolve(option: str | None = None) -> Path | None:
    """The folder to use: ``option``, else :data:`ENV`, else :func:`default_folder`; ``None`` for ``off``.

    >>> resolve("off") is None, resolve("/tmp/jax-programs")
    (True, PosixPath('/tmp/jax-programs'))
    """
    choice = option if option is not None else os.environ.get(ENV) or None
    if choice is None:
        return default_folder()
    return None if choice.strip().lower() == "off" else Path(choice).expanduser()


def enable(folder: Path | None) -> Path | None:
    """Turn JAX's persistent compilation cache on in ``folder`` (nothing for ``None``).

    Returns the folder in use, or ``None`` when it cannot be used: then one warning line is
    printed on stderr and every program is compiled as before.

    >>> enable(None) is None  # "off": nothing changes
    True
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as file:  # a file, not a folder: one warning line, no cache
    ...     print(enable(Path(file.name)))
    None
    """
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as error:
        _warn(f"the compilation cache {folder} cannot be used ({error.strerror or error}); compiling every program")
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    # JAX's default also points XLA's GPU autotuning cache into the folder, which puts the folder's
    # path into every cache key: a copied or moved cache would then never be read.
    jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
    _report_jax_cache_errors_once(folder)
    return folder


def _warn(message: str) -> None:
    print(f"linear-vae: warning: {message}", file=sys.stderr, flush=True)


def _report_jax_cache_errors_once(folder: Path) -> None:
    """Show JAX's cache read/write warnings (one per program, with a source line each) as one line."""
    previous = warnings.showwarning
    reported = False

    def show(message, category, filename, lineno, file=None, line=None):
        nonlocal reported
        if not _JAX_CACHE_WARNING.search(str(message)):
            return previous(message, category, filename, lineno, file, line)
        if not reported:
            reported = True
            _warn(f"entries of the compilation cache {folder} could not be used; compiling instead")

    warnings.showwarning = show
