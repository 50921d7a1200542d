"""File readers behind :func:`linear_vae.data.datasets.load_file`: ``.npy``, ``.npz``, ``.csv`` and MNIST IDX
files (gzipped or not, recognised by their magic number), each checked and read into a float64
matrix, with a one-line ``ValueError`` naming what is wrong with the file and what to do.
numpy only.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from pathlib import Path

import numpy as np

#: IDX type byte -> numpy dtype (big-endian), from the MNIST file-format description.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_SUPPORTED = ".npy, .npz, .csv or an MNIST IDX file (e.g. train-images-idx3-ubyte[.gz])"


def read_matrix(path: str | os.PathLike, key: str | None = None) -> tuple[np.ndarray, bool]:
    """The data matrix in ``path`` and whether it holds images: ``(X, is_image)``, ``X`` float64
    ``(n, d)``.  Formats, and the ``ValueError`` of each problem: :func:`linear_vae.data.datasets.load_file`.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "data.csv"
    ...     _ = path.write_text("1,2,3\\n4,5,6\\n")
    ...     X, is_image = read_matrix(path)
    >>> X, is_image
    (array([[1., 2., 3.],
           [4., 5., 6.]]), False)
    """
    path = Path(path).expanduser()
    name = str(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"data file {name} {what}; pass the path of a data file")
    head = _read_head(path)
    if _is_idx_magic(head):
        if key is not None:
            raise _key_not_npz(name)
        X, is_image = _load_idx(path)
        return X, is_image
    suffix = path.suffix.lower()
    is_csv = suffix == ".csv" or path.name.lower().endswith(".csv.gz")
    if suffix not in (".npy", ".npz") and not is_csv and _looks_like_idx(path):
        raise ValueError(
            f"{name} looks like an MNIST IDX file but has a wrong magic number "
            f"{head[:4].hex(' ') or '(empty file)'} (want 00 00 08..0e ndim); "
            "the file is damaged or not IDX"
        )
    if suffix == ".npz":
        return _as_matrix(_load_npz(path, key), name), False
    if key is not None:
        raise _key_not_npz(name)
    if suffix == ".npy":
        return _as_matrix(_load_npy(path), name), False
    if is_csv:
        return _as_matrix(_load_csv(path), name), False
    raise ValueError(f"unknown data format for {name}; use {_SUPPORTED}")


def _key_not_npz(name: str) -> ValueError:
    return ValueError(f"`key` applies only to .npz files, not {name}; drop `key`")


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """Read (at most ``limit``) bytes of a file, transparently gunzipping it."""
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == _GZIP_MAGIC
        opener = gzip.open if gz else open
        with opener(path, "rb") as fh:
            return fh.read() if limit is None else fh.read(limit)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"cannot read {path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _read_head(path: Path) -> bytes:
    return _read_bytes(path, limit=4)


def _is_idx_magic(head: bytes) -> bool:
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in _IDX_DTYPES and head[3] >= 1


def _looks_like_idx(path: Path) -> bool:
    lowered = path.name.lower()
    return "idx" in lowered or "ubyte" in lowered


def _load_idx(path: Path) -> tuple[np.ndarray, bool]:
    """Parse an IDX file (magic already checked): ``(X, is_image)``, images flattened and scaled to [0, 1]."""
    raw = _read_bytes(path)
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise ValueError(f"IDX file {path} is truncated inside its header; re-download it")
    shape = struct.unpack(f">{ndim}i", raw[4:header_end])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header_end
    if found != expected:
        raise ValueError(
            f"IDX file {path} has {found} data bytes but its header {shape} needs {expected}; "
            "the file is truncated or damaged, re-download it"
        )
    if ndim == 1:
        raise ValueError(f"{path} is a label file (1-D IDX); pass the images file")
    data = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    X = data.reshape(shape[0], -1).astype(np.float64)
    is_image = ndim == 3 and dtype == np.uint8
    if is_image:
        X /= 255.0
    return X, is_image


def _load_npy(path: Path) -> np.ndarray:
    if _read_head(path)[:4] != b"\x93NUM":
        raise ValueError(f"{path} is not a NumPy .npy file (no .npy header); check the file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read {path} as .npy: {_one_line(exc)}") from None


def _load_npz(path: Path, key: str | None) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read {path} as .npz: {_one_line(exc)}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not an .npz archive; rename it .npy")
    with archive:
        chosen = _choose_npz_key(path, list(archive.files), key)
        try:
            return archive[chosen]
        except (OSError, ValueError, EOFError, KeyError) as exc:
            raise ValueError(f"cannot read array {chosen!r} of {path}: {_one_line(exc)}") from None


def _choose_npz_key(path: Path, keys: list[str], key: str | None) -> str:
    listing = ", ".join(keys)
    if not keys:
        raise ValueError(f"{path} contains no arrays; pass a file with a data matrix")
    if key is not None:
        if key not in keys:
            raise ValueError(f"{path} has no array {key!r}; choose `key` from: {listing}")
        return key
    if len(keys) > 1:
        raise ValueError(f"{path} holds several arrays; choose one with `key` ({listing})")
    return keys[0]


def _load_csv(path: Path) -> np.ndarray:
    """Parse a comma-separated numeric file, skipping a non-numeric first line (header)."""
    try:
        text = _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file; pass a numeric CSV") from None
    lines = text.splitlines()
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    if numbered and not _is_numeric_row(numbered[0][1]):
        numbered = numbered[1:]  # header
    if not numbered:
        raise ValueError(f"{path} has no data rows; pass a CSV with one sample per row")
    _check_not_ragged(path, numbered)
    try:
        return np.loadtxt(
            io.StringIO("\n".join(ln for _, ln in numbered)),
            delimiter=",",
            dtype=np.float64,
            ndmin=2,
        )
    except ValueError as exc:
        raise _csv_value_error(path, numbered, exc) from None


def _csv_value_error(path: Path, numbered: list[tuple[int, str]], exc: ValueError) -> ValueError:
    """Name the line and column of the first non-numeric field (slow path, errors only)."""
    for lineno, line in numbered:
        for col, field in enumerate(line.split(","), start=1):
            try:
                float(field)
            except ValueError:
                return ValueError(
                    f"{path} line {lineno}, column {col}: {field.strip()!r} is not a number; "
                    "the CSV must be numeric apart from one header line"
                )
    return ValueError(f"cannot parse {path} as CSV: {_one_line(exc)}")


def _is_numeric_row(line: str) -> bool:
    try:
        for field in line.split(","):
            float(field)
    except ValueError:
        return False
    return True


def _check_not_ragged(path: Path, numbered: list[tuple[int, str]]) -> None:
    first_line, first = numbered[0]
    width = first.count(",") + 1
    for lineno, line in numbered[1:]:
        fields = line.count(",") + 1
        if fields != width:
            raise ValueError(
                f"{path} line {lineno} has {fields} fields but line {first_line} has {width}; "
                "every row must have the same number of columns"
            )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _as_matrix(array: np.ndarray, name: str) -> np.ndarray:
    """Check a loaded numeric array is a 2-D matrix; float64."""
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} holds {array.dtype} data; pass a numeric array")
    if array.ndim != 2:
        raise ValueError(f"{name} holds a {array.ndim}-D array of shape {array.shape}; reshape to (samples, features)")
    return array.astype(np.float64, copy=False)
