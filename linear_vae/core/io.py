"""One JSON writer, and atomic file writes: an interrupted run never leaves a half-written file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
from pathlib import Path

import numpy as np


def to_jsonable(obj):
    """Convert numpy scalars and arrays (recursively) to JSON types; non-finite floats become null.

    >>> to_jsonable({"x": np.float64(0.5), "n": np.int64(3), "v": np.array([1.0, np.inf])})
    {'x': 0.5, 'n': 3, 'v': [1.0, None]}
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        return to_jsonable(arr.tolist()) if arr.ndim else to_jsonable(arr.item())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def dumps(obj, indent: int | None = None) -> str:
    """Serialise to JSON with :func:`to_jsonable` (the only JSON encoder of the package).

    >>> dumps({"gap": np.float64(-3e-13), "missing": float("nan")})
    '{"gap": -3e-13, "missing": null}'
    """
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


class WritesAborted(RuntimeError):
    """Raised by :func:`atomic_write_bytes` once :func:`abort_writes` has run (the process is exiting)."""


#: Temporary files being written right now; guarded by ``_lock`` so that
#: :func:`abort_writes` (called from a signal handler on the main thread while the work runs on
#: another) sees every temporary file and no write completes after it.
_lock = threading.Lock()
_pending: set[str] = set()
_aborted = False


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The temporary file is registered until it is renamed, so that :func:`abort_writes` can
    remove it when the process is interrupted; a crash or an exception removes it here.

    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write_bytes(folder / "a.bin", b"payload")
    >>> (folder / "a.bin").read_bytes(), sorted(p.name for p in folder.iterdir())  # no temporary left
    (b'payload', ['a.bin'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock:
        if _aborted:
            raise WritesAborted(f"not writing {path}: the process is exiting")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        _pending.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with _lock:
            if _aborted:
                raise WritesAborted(f"not writing {path}: the process is exiting")
            os.replace(tmp, path)
            _pending.discard(tmp)
    except BaseException as error:
        with _lock:
            _pending.discard(tmp)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _aborted and not isinstance(error, WritesAborted):  # abort_writes removed the file under us
            raise WritesAborted(f"not writing {path}: the process is exiting") from error
        raise


def abort_writes() -> None:
    """Refuse every further :func:`atomic_write_bytes` and delete the temporary files of the writes
    in progress (for the interrupt handler of the CLI).

    >>> folder = Path(tempfile.mkdtemp())
    >>> abort_writes()
    >>> atomic_write_bytes(folder / "a.bin", b"payload")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    linear_vae.core.io.WritesAborted: not writing .../a.bin: the process is exiting
    >>> sorted(folder.iterdir())  # nothing written, no temporary left
    []
    >>> import linear_vae.core.io
    >>> linear_vae.core.io._aborted = False  # (only so the other examples can write: an aborted process is exiting)
    """
    global _aborted
    with _lock:
        _aborted = True
        pending = list(_pending)
    for tmp in pending:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically.

    >>> path = Path(tempfile.mkdtemp()) / "r.json"
    >>> atomic_write_json(path, {"active_dims": np.int64(2)})
    >>> json.loads(path.read_text())
    {'active_dims': 2}
    """
    atomic_write_bytes(path, (dumps(obj, indent=2) + "\n").encode())


def check_output_dir(path, option: str = "--out") -> Path:
    """Create the folder ``path`` (and its parents) if needed and check that a file can be written in it.

    Returns it as a :class:`~pathlib.Path`.  Raises ``ValueError`` with one line saying what to
    change when it cannot be created, is not a folder (a file, ``/dev/null``) or is not writable.
    Writability is tested by creating and removing a temporary file (``os.access`` says yes to root
    even on a read-only file system).

    >>> check_output_dir("/dev/null")
    Traceback (most recent call last):
    ...
    ValueError: cannot write figures to /dev/null: it exists and is not a folder; pass --out a writable folder
    """
    path = Path(path)
    advice = f"pass {option} a writable folder"
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot write figures to {path}: it exists and is not a folder; {advice}")
    step = "cannot create it"
    try:
        path.mkdir(parents=True, exist_ok=True)
        step = "cannot create a file in it"
        fd, probe = tempfile.mkstemp(dir=path, prefix=".linear-vae-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"cannot write figures to {path}: {step} ({reason}); {advice}") from None
    return path


def check_output_file(path, option: str) -> Path:
    """Check, before any work, that a file can be written at ``path`` (its folder exists and takes a
    new file, and ``path`` is not a folder); ``ValueError`` with one line saying what to change.

    >>> check_output_file("/no/such/folder/model.npz", "--save-model")
    Traceback (most recent call last):
    ...
    ValueError: cannot write /no/such/folder/model.npz: the folder /no/such/folder does not exist; pass --save-model a file path in a writable folder
    """
    path = Path(path)
    advice = f"pass {option} a file path in a writable folder"
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder; {advice}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: the folder {folder} does not exist; {advice}")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".linear-vae-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"cannot write {path}: {error.strerror or error}; {advice}") from None
    return path


@contextlib.contextmanager
def folder_lock(folder, what: str):
    """Hold an exclusive lock on ``folder`` (the file ``.linear-vae.lock`` in it) for as long as the
    block runs, so that two commands never write results into one folder at once; ``ValueError``
    naming the holder when another process (or another open of the lock) holds it.  The lock goes
    with the process: a killed command leaves no stale lock behind (``flock``).

    >>> folder = tempfile.mkdtemp()
    >>> with folder_lock(folder, "reproduce"):  # doctest: +ELLIPSIS
    ...     with folder_lock(folder, "reproduce"):
    ...         pass
    Traceback (most recent call last):
    ...
    ValueError: ... is being written by another reproduce (pid ...); wait for it to finish, or pass another --out
    """
    import fcntl

    path = Path(folder) / ".linear-vae.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ValueError(
            f"{folder} is being written by another {what} ({holder}); wait for it to finish, or pass another --out"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield path
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
