"""Build ``linear_vae/resources/fashion_mnist_5k.npz``: a seeded, class-balanced 5,000-image subset of Fashion-MNIST.

Provenance
----------
Fashion-MNIST (H. Xiao, K. Rasul & R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms", arXiv:1708.07747; https://github.com/zalandoresearch/fashion-mnist)
is 70,000 28x28 grey-scale images of clothing in 10 classes, MIT-licensed, Copyright (c) 2017
Zalando SE.  It stands in here for the paper's CelebA, which cannot be shipped offline.  The
source is the *training* set, ``train-images-idx3-ubyte.gz`` and ``train-labels-idx1-ubyte.gz``
(60,000 images, 6,000 per class), as packaged by Debian (``dataset-fashion-mnist``, version
``0.0~git20200523.55506a9-1``, files under ``usr/share/datasets/fashion-mnist/``).  The SHA-256
of both gzipped files is recorded below and checked on every run.

The subset
----------
Shaped like the shipped MNIST subset (``scripts/make_mnist_subset.py``), so that the two data
sets are interchangeable: 500 images of each class, drawn at random with
``numpy.random.default_rng(SEED)`` (one ``choice(6000, 500, replace=False)`` per class, classes
in label order), each class's 500 kept in training-file order, the classes stacked in ten blocks
of 500 (rows 0..499 are class 0, 500..999 class 1, ...).  As for MNIST, the first *n* rows are
therefore NOT a representative sample: always subset at random
(:func:`linear_vae.data.datasets.random_subset`).  Pixels are stored as uint8 and scaled to [0, 1]
(``/ 255``) by :func:`linear_vae.data.datasets.load_fashion_mnist`.

Output: ``images`` (uint8, (5000, 784), each 28x28 image unrolled row by row), ``labels``
(uint8, (5000,)) and ``source`` (a 1-element string array: the Debian package, source checksums,
seed, licence; the same whether the files were read from the ``.deb`` or a directory).  The ``.npz`` is written deterministically (fixed ZIP timestamps) and atomically
(temporary file in the target directory, then ``os.replace``).

Checksums
---------
``CONTENT_SHA256`` is the SHA-256 of ``images.tobytes() + labels.tobytes()`` (C order): it
identifies the subset whatever the compression, and this script exits 1 if it changes.
``FILE_SHA256`` is the SHA-256 of the shipped ``.npz`` bytes; another zlib may compress
differently, so a mismatch there is reported but not fatal when the content checksum matches.
``tests/test_datasets.py`` checks the shipped file against both.

Usage
-----
::

    # the .deb itself (read with Python's tarfile, no root or dpkg needed) ...
    python scripts/make_fashion_mnist_subset.py /var/cache/apt/archives/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb
    # ... or a directory holding the two training files (searched recursively)
    python scripts/make_fashion_mnist_subset.py /usr/share/datasets/fashion-mnist

This is a one-off conversion kept for provenance; the package itself never needs the source files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from linear_vae.core.io import atomic_write_bytes

IMAGES_NAME = "train-images-idx3-ubyte.gz"
LABELS_NAME = "train-labels-idx1-ubyte.gz"
#: SHA-256 of the gzipped training files (identical to the ones Zalando publishes).
SOURCE_SHA256 = {
    IMAGES_NAME: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    LABELS_NAME: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
}
SEED = 0
N_TRAIN, N_PIXELS, N_CLASSES, BLOCK = 60000, 784, 10, 500
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: SHA-256 of ``images.tobytes() + labels.tobytes()`` of the subset (the arrays in the .npz).
CONTENT_SHA256 = "a96e15f4d5ae750dc206a5abfaa39ba0194f57e1d5d99056329198de92e27a33"
#: SHA-256 of the shipped ``.npz`` file's bytes (deterministic with this script's zlib).
FILE_SHA256 = "228dd06a7d204c74bdd909bc84cc5bd1ac0ae3d611f272c3d9b0113a09df79f0"
#: Pixels that are 0 in every one of the 5,000 images (re-checked on every run).
EXPECTED_CONSTANT_PIXELS = 1
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "linear_vae" / "resources" / "fashion_mnist_5k.npz"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest ZIP timestamp: no build time in the file


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the subset's arrays, independent of how the ``.npz`` is compressed."""
    return sha256(
        np.ascontiguousarray(images, dtype=np.uint8).tobytes() + np.ascontiguousarray(labels, dtype=np.uint8).tobytes()
    )


def read_sources(path: Path) -> tuple[dict[str, bytes], str]:
    """The two gzipped training files' bytes, from the ``.deb`` or a directory, and their origin."""
    if path.is_dir():
        found = {}
        for name in (IMAGES_NAME, LABELS_NAME):
            matches = sorted(path.rglob(name))
            if not matches:
                raise SystemExit(f"{name} not found under {path}")
            found[name] = matches[0].read_bytes()
        return found, f"directory {path.name}"
    return _read_deb(path), f"Debian package {path.name}"


def _read_deb(path: Path) -> dict[str, bytes]:
    """Read the two files out of a ``.deb``: an ``ar`` archive whose ``data.tar.*`` member holds them."""
    raw = path.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise SystemExit(f"{path} is neither a directory nor a .deb (ar archive)")
    offset = 8
    while offset + 60 <= len(raw):
        header = raw[offset : offset + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = raw[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)  # ar members are 2-byte aligned
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                wanted = {}
                for member in tar.getmembers():
                    base = os.path.basename(member.name)
                    if base in (IMAGES_NAME, LABELS_NAME) and member.isfile():
                        wanted[base] = tar.extractfile(member).read()
            missing = {IMAGES_NAME, LABELS_NAME} - set(wanted)
            if missing:
                raise SystemExit(f"{path} lacks {', '.join(sorted(missing))}")
            return wanted
    raise SystemExit(f"{path} has no data.tar member")


def parse_idx(raw_gz: bytes, ndim: int) -> np.ndarray:
    """Parse a gzipped uint8 IDX file with ``ndim`` dimensions (magic ``00 00 08 ndim``)."""
    raw = gzip.decompress(raw_gz)
    if raw[:4] != bytes([0, 0, 0x08, ndim]):
        raise SystemExit(f"unexpected IDX magic {raw[:4].hex(' ')}, wanted 00 00 08 {ndim:02x}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise SystemExit(f"IDX payload has {data.size} bytes, header {shape} needs {int(np.prod(shape))}")
    return data.reshape(shape)


def select_subset(labels: np.ndarray, seed: int = SEED) -> np.ndarray:
    """Row indices into the training set: ``BLOCK`` per class, drawn by ``default_rng(seed)``, class-blocked, file order within a class."""
    rng = np.random.default_rng(seed)
    blocks = []
    for c in range(N_CLASSES):
        rows = np.flatnonzero(labels == c)
        blocks.append(np.sort(rng.choice(rows, BLOCK, replace=False)))
    return np.concatenate(blocks)


def check_facts(images: np.ndarray, labels: np.ndarray) -> list[str]:
    """Verify shape, class blocks and the constant-pixel count; return a printable report."""
    sorted_blocks = bool(np.all(labels.reshape(N_CLASSES, BLOCK) == np.arange(N_CLASSES)[:, None]))
    constant = images.max(axis=0) == images.min(axis=0)
    n_constant = int(constant.sum())
    report = [
        f"shape images {images.shape} {images.dtype}, labels {labels.shape} {labels.dtype}",
        f"class counts {np.bincount(labels, minlength=N_CLASSES).tolist()}",
        f"sorted by class in blocks of {BLOCK}: {sorted_blocks}",
        f"constant pixels: {n_constant} (values {np.unique(images[:, constant]).tolist()})",
        f"pixel range {int(images.min())}..{int(images.max())}",
    ]
    if images.shape != (N_CLASSES * BLOCK, N_PIXELS) or not sorted_blocks:
        raise SystemExit("the subset is not 10 class blocks of 500 images of 784 pixels")
    if n_constant != EXPECTED_CONSTANT_PIXELS:
        raise SystemExit(f"{n_constant} constant pixels, expected {EXPECTED_CONSTANT_PIXELS}; update the docstrings")
    return report


def npz_bytes(images: np.ndarray, labels: np.ndarray, source: str) -> bytes:
    """The ``.npz`` as ``np.savez_compressed`` lays it out, but with fixed ZIP timestamps (reproducible bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in (("images", images), ("labels", labels), ("source", np.array([source]))):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "input", type=Path, help="dataset-fashion-mnist .deb, or a directory holding the training IDX files"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)

    sources, origin = read_sources(args.input)
    for name, raw in sources.items():
        digest = sha256(raw)
        print(f"sha256({name}) = {digest}")
        if digest != SOURCE_SHA256[name]:
            raise SystemExit(f"{name}: sha256 {digest} differs from the recorded {SOURCE_SHA256[name]}")
    all_images = parse_idx(sources[IMAGES_NAME], ndim=3).reshape(-1, N_PIXELS)
    all_labels = parse_idx(sources[LABELS_NAME], ndim=1)
    if all_images.shape[0] != N_TRAIN or all_labels.shape != (N_TRAIN,):
        raise SystemExit(f"expected {N_TRAIN} training images and labels")
    rows = select_subset(all_labels)
    images, labels = np.ascontiguousarray(all_images[rows]), np.ascontiguousarray(all_labels[rows])
    for line in check_facts(images, labels):
        print(line)

    content = content_sha256(images, labels)
    print(f"content sha256 (images bytes + labels bytes) = {content}")
    if content != CONTENT_SHA256:
        raise SystemExit(f"content sha256 {content} differs from the recorded {CONTENT_SHA256}")
    print(f"read from {origin}")
    source = (
        f"Debian package dataset-fashion-mnist 0.0~git20200523.55506a9-1; sha256({IMAGES_NAME})={SOURCE_SHA256[IMAGES_NAME]}; "
        f"sha256({LABELS_NAME})={SOURCE_SHA256[LABELS_NAME]}; "
        f"Fashion-MNIST training set (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747), "
        f"{BLOCK} images per class drawn by numpy.random.default_rng({SEED}), rows sorted by class in blocks "
        f"of {BLOCK}; MIT License, Copyright (c) 2017 Zalando SE"
    )
    payload = npz_bytes(images, labels, source)
    atomic_write_bytes(args.out, payload)
    file_digest = sha256(payload)
    print(f"source: {source}")
    print(f"wrote {args.out} ({len(payload)} bytes), file sha256 = {file_digest}")
    if file_digest != FILE_SHA256:
        print(
            f"note: file sha256 differs from the recorded {FILE_SHA256} (another zlib?); the content checksum matches"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
