"""Tests of the data layer (:mod:`linear_vae.data.datasets`): shipped MNIST, exact synthetic
spectra, file loaders and their one-line errors.  Everything written to disk goes to
``tmp_path``."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from linear_vae.cli import main
from linear_vae.data.datasets import (
    Dataset,
    default_synthetic_spectrum,
    load_data,
    load_fashion_mnist,
    load_file,
    load_mnist,
    make_synthetic,
    random_subset,
    validate_data,
)


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_mnist()


def write_idx(path, array: np.ndarray, *, type_byte: int = 0x08, gz: bool = False, magic=None):
    """Write ``array`` as an MNIST-format IDX file (big-endian), optionally gzipped."""
    dtype = {0x08: ">u1", 0x0D: ">f4"}[type_byte]
    header = magic if magic is not None else bytes([0, 0, type_byte, array.ndim])
    payload = header + struct.pack(f">{array.ndim}i", *array.shape)
    payload += np.asarray(array, dtype=dtype).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------
# Shipped MNIST
# --------------------------------------------------------------------------------------------


def test_shipped_mnist_is_5000_by_784_float64_in_0_1(mnist):
    assert mnist.X.shape == (5000, 784) and (mnist.n, mnist.d) == (5000, 784)
    assert mnist.X.dtype == np.float64 and mnist.X.flags.c_contiguous
    assert mnist.X.min() == 0.0 and mnist.X.max() == 1.0
    assert mnist.name == "mnist" and mnist.is_image and mnist.population_eigenvalues is None


def test_mnist_classes_sorted_in_blocks_of_500(mnist):
    assert np.bincount(mnist.labels).tolist() == [500] * 10
    assert np.array_equal(mnist.labels, np.repeat(np.arange(10), 500))


def test_mnist_has_121_constant_pixels(mnist):
    constant = mnist.X.max(axis=0) == mnist.X.min(axis=0)
    assert constant.sum() == 121
    assert np.all(mnist.X[:, constant] == 0.0)


def test_mnist_pixels_are_multiples_of_1_over_255(mnist):
    assert np.array_equal(np.round(mnist.X * 255) / 255, mnist.X)


# --------------------------------------------------------------------------------------------
# Shipped Fashion-MNIST
# --------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
FASHION_DEB = Path("/var/cache/apt/archives/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb")


def _fashion_script():
    """``scripts/make_fashion_mnist_subset.py`` as a module: it records the checksums the tests check."""
    spec = importlib.util.spec_from_file_location(
        "make_fashion_mnist_subset", ROOT / "scripts" / "make_fashion_mnist_subset.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    return load_fashion_mnist()


def test_shipped_fashion_mnist_is_5000_by_784_float64_in_0_1(fashion):
    assert fashion.X.shape == (5000, 784) and fashion.X.dtype == np.float64 and fashion.X.flags.c_contiguous
    assert fashion.X.min() == 0.0 and fashion.X.max() == 1.0
    assert fashion.name == "fashion_mnist" and fashion.is_image and fashion.population_eigenvalues is None


def test_fashion_mnist_has_10_classes_sorted_in_blocks_of_500(fashion):
    assert np.bincount(fashion.labels).tolist() == [500] * 10
    assert np.array_equal(fashion.labels, np.repeat(np.arange(10), 500))


def test_fashion_mnist_pixels_are_uint8_over_255_with_one_constant_pixel(fashion):
    assert np.array_equal(np.round(fashion.X * 255) / 255, fashion.X)
    constant = fashion.X.max(axis=0) == fashion.X.min(axis=0)
    assert constant.sum() == 1 and np.all(fashion.X[:, constant] == 0.0)


def test_fashion_mnist_is_not_mnist_and_loads_deterministically(fashion, mnist):
    np.testing.assert_array_equal(load_fashion_mnist().X, fashion.X)
    # Clothing fills far more of the frame than digits: MNIST's mean pixel is about 0.13, Fashion-MNIST's about 0.29.
    assert fashion.X.mean() > 2 * mnist.X.mean()
    sub = load_data("fashion_mnist", n=200, subset_seed=5)
    np.testing.assert_array_equal(sub.X, random_subset(fashion, 200, seed=5).X)
    assert sub.name == "fashion_mnist" and np.array_equal(sub.labels, random_subset(fashion, 200, seed=5).labels)


def test_shipped_fashion_mnist_matches_the_checksums_its_script_records(fashion):
    script = _fashion_script()
    path = ROOT / "linear_vae" / "resources" / "fashion_mnist_5k.npz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == script.FILE_SHA256
    # The loader's floats, turned back into bytes, are exactly the recorded subset: the checksum
    # covers the loader's scaling too, not only the file.
    images = np.round(fashion.X * 255).astype(np.uint8)
    assert script.content_sha256(images, fashion.labels.astype(np.uint8)) == script.CONTENT_SHA256


@pytest.mark.skipif(not FASHION_DEB.is_file(), reason="the dataset-fashion-mnist .deb is not cached on this machine")
def test_fashion_mnist_subset_rebuilds_from_the_debian_package(fashion):
    """The script's selection, rerun on the source files, gives the shipped rows and labels."""
    script = _fashion_script()
    sources, _ = script.read_sources(FASHION_DEB)
    assert {name: hashlib.sha256(raw).hexdigest() for name, raw in sources.items()} == script.SOURCE_SHA256
    labels = script.parse_idx(sources[script.LABELS_NAME], ndim=1)
    images = script.parse_idx(sources[script.IMAGES_NAME], ndim=3).reshape(-1, 784)
    rows = script.select_subset(labels)
    np.testing.assert_array_equal(images[rows] / 255.0, fashion.X)
    np.testing.assert_array_equal(labels[rows], fashion.labels)


def test_unknown_source_lists_the_data_sets_in_one_line():
    with pytest.raises(ValueError) as err:
        load_data("fashion")
    assert one_line(err) == (
        "`source` 'fashion' is neither a data set (mnist, fashion_mnist, synthetic) nor an existing file; use one of those"
    )


def test_command_line_reads_fashion_mnist_and_names_the_data_option(capsys):
    assert main(["analyze", "--data", "fashion_mnist", "--n", "300", "-k", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 300 and report["d"] == 784
    assert main(["analyze", "--data", "fashion", "-k", "2"]) == 2
    assert "--data 'fashion' is neither a data set (mnist, fashion_mnist, synthetic)" in capsys.readouterr().err


def test_key_is_refused_for_the_shipped_sets():
    with pytest.raises(ValueError) as err:
        load_data("fashion_mnist", key="images")
    assert one_line(err) == "`key` applies only to .npz files, not fashion_mnist; drop `key`"


# --------------------------------------------------------------------------------------------
# random_subset
# --------------------------------------------------------------------------------------------


def test_random_subset_deterministic_and_seed_dependent(mnist):
    a = random_subset(mnist, 300, seed=1)
    b = random_subset(mnist, 300, seed=1)
    c = random_subset(mnist, 300, seed=2)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.X, c.X)
    assert a.X.shape == (300, 784) and a.X.flags.c_contiguous and a.name == "mnist"


def test_random_subset_is_not_the_first_rows(mnist):
    # The first 1000 rows are only 0s and 1s; a random 1000 must cover all ten digits.
    assert set(np.unique(mnist.labels[:1000])) == {0, 1}
    sub = random_subset(mnist, 1000, seed=0)
    assert set(np.unique(sub.labels)) == set(range(10))
    assert not np.array_equal(sub.X, mnist.X[:1000])


def test_random_subset_keeps_file_order(mnist):
    sub = random_subset(mnist, 500, seed=3)
    assert np.all(np.diff(sub.labels) >= 0)  # labels are sorted in the file, so stay sorted


def test_random_subset_matches_documented_indices(mnist):
    idx = np.sort(np.random.default_rng(7).choice(5000, 50, replace=False))
    assert np.array_equal(random_subset(mnist, 50, seed=7).X, mnist.X[idx])


def test_random_subset_refuses_more_rows_than_the_data_or_fewer_than_2(mnist):
    with pytest.raises(ValueError) as err:
        random_subset(mnist, 6000)
    assert one_line(err) == ("`n` = 6000 is larger than the 5000 samples in mnist; use `n` <= 5000")
    with pytest.raises(ValueError, match="at least 2"):
        random_subset(mnist, 1)


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


def test_default_synthetic_spectrum_is_8_times_0p75_to_the_i_in_20_dimensions():
    s = default_synthetic_spectrum()
    assert s.shape == (20,) and s[0] == 8.0
    np.testing.assert_allclose(s[1:] / s[:-1], 0.75, rtol=1e-15)


def test_synthetic_sample_spectrum_is_exact():
    data = make_synthetic()
    s = default_synthetic_spectrum()
    assert data.X.shape == (2000, 20) and data.X.dtype == np.float64
    eig = np.linalg.eigvalsh(np.cov(data.X.T, bias=True))[::-1]
    # 1e-10 relative: the construction is exact in exact arithmetic, so only float64 round-off
    # of the whitening and of a 20x20 symmetric eigenproblem remains (~1e-14 relative even for
    # the smallest eigenvalue, 8 * 0.75**19 ~ 0.034); 1e-10 leaves a wide margin while still
    # catching any statistical (O(1/sqrt(N)) ~ 3%) error.
    np.testing.assert_allclose(eig, s, rtol=1e-10)
    np.testing.assert_array_equal(data.population_eigenvalues, s)


def test_synthetic_mean_is_not_zero_and_seeded():
    data = make_synthetic(seed=0)
    # A nonzero mean catches code that forgets to centre before taking the covariance.
    assert np.linalg.norm(data.X.mean(axis=0)) > 1.0
    np.testing.assert_array_equal(data.X, make_synthetic(seed=0).X)
    assert not np.array_equal(data.X, make_synthetic(seed=1).X)


def test_synthetic_sorts_custom_spectrum_and_allows_zeros():
    data = make_synthetic([1.0, 3.0, 0.0, 2.0], n=50, seed=4)
    np.testing.assert_array_equal(data.population_eigenvalues, [3.0, 2.0, 1.0, 0.0])
    eig = np.linalg.eigvalsh(np.cov(data.X.T, bias=True))[::-1]
    np.testing.assert_allclose(eig, [3.0, 2.0, 1.0, 0.0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "spectrum, n, match",
    [
        (None, 20, "n=20 <= d=20"),
        ([1.0, -1.0], 10, "negative"),
        ([1.0, np.nan], 10, "NaN or inf"),
        ([[1.0, 2.0]], 10, "1-D"),
        ([], 10, "non-empty"),
    ],
)
def test_synthetic_rejects_bad_arguments(spectrum, n, match):
    with pytest.raises(ValueError, match=match) as err:
        make_synthetic(spectrum, n=n)
    one_line(err)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "t10k-images.idx", "anything.bin"])
def test_idx_images_load_flattened_and_scaled_to_0_1_whatever_the_file_name(tmp_path, gz, name):
    images = np.random.default_rng(0).integers(0, 256, size=(6, 4, 3), dtype=np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 0, 255
    path = write_idx(tmp_path / (name + (".gz" if gz else "")), images, gz=gz)
    data = load_file(path)
    assert data.X.shape == (6, 12) and data.X.dtype == np.float64 and data.is_image
    np.testing.assert_array_equal(data.X, images.reshape(6, 12) / 255.0)
    assert data.X.max() == 1.0 and data.name == str(path)


def test_idx_float_matrix_is_used_as_given_and_not_as_an_image(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3) * 1.5
    data = load_file(write_idx(tmp_path / "m.idx", matrix, type_byte=0x0D))
    np.testing.assert_array_equal(data.X, matrix)
    assert not data.is_image


@pytest.mark.parametrize("gz", [False, True])
def test_idx_label_file_is_refused(tmp_path, gz):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(5, dtype=np.uint8), gz=gz)
    with pytest.raises(ValueError, match=r"label file \(1-D IDX\); pass the images file") as err:
        load_file(path)
    one_line(err)


def test_idx_file_with_a_wrong_magic_number_is_refused_in_one_line(tmp_path):
    images = np.zeros((2, 2, 2), dtype=np.uint8)
    path = write_idx(tmp_path / "train-images-idx3-ubyte", images, magic=b"\x00\x00\x07\x03")
    with pytest.raises(ValueError, match="wrong magic number") as err:
        load_file(path)
    one_line(err)


def test_truncated_idx_file_is_refused(tmp_path):
    path = write_idx(tmp_path / "x.idx", np.zeros((3, 2, 2), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        load_file(path)


def test_npy_matrix_loads_as_c_contiguous_float64_without_labels(tmp_path):
    matrix = np.arange(6, dtype=np.int32).reshape(3, 2)
    np.save(tmp_path / "a.npy", matrix)
    data = load_file(tmp_path / "a.npy")
    assert data.X.dtype == np.float64 and data.X.flags.c_contiguous
    np.testing.assert_array_equal(data.X, matrix)
    assert data.labels is None and not data.is_image


def test_file_extension_wins_over_an_idx_like_name(tmp_path):
    np.save(tmp_path / "features-idx.npy", np.eye(3))
    np.testing.assert_array_equal(load_file(tmp_path / "features-idx.npy").X, np.eye(3))


def test_gzipped_csv_loads_like_plain_csv(tmp_path):
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(b"a,b\n1,2\n3,4\n"))
    np.testing.assert_array_equal(load_file(tmp_path / "d.csv.gz").X, [[1, 2], [3, 4]])


def test_npy_one_dimensional_is_refused(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(5.0))
    with pytest.raises(ValueError, match=r"reshape to \(samples, features\)") as err:
        load_file(tmp_path / "v.npy")
    one_line(err)


def test_npz_with_one_array_loads_it_and_with_several_needs_an_existing_key(tmp_path):
    a, b = np.ones((3, 2)), np.arange(8.0).reshape(4, 2)
    np.savez(tmp_path / "one.npz", data=a)
    np.testing.assert_array_equal(load_file(tmp_path / "one.npz").X, a)

    np.savez(tmp_path / "two.npz", a=a, b=b)
    np.testing.assert_array_equal(load_file(tmp_path / "two.npz", key="b").X, b)
    with pytest.raises(ValueError, match=r"several arrays.*`key`.*a, b") as err:
        load_file(tmp_path / "two.npz")
    one_line(err)
    with pytest.raises(ValueError, match=r"no array 'c'.*a, b") as err:
        load_file(tmp_path / "two.npz", key="c")
    one_line(err)


def test_key_on_non_npz_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 2)))
    with pytest.raises(ValueError, match="only to .npz"):
        load_file(tmp_path / "a.npy", key="x")


@pytest.mark.parametrize("header", ["", "x,y,z\n"])
def test_csv_loads_with_or_without_a_header_ignoring_spaces_and_blank_lines(tmp_path, header):
    path = tmp_path / "d.csv"
    path.write_text(header + "1,2,3\n4.5, 5e-1 ,-6\n\n")
    data = load_file(path)
    np.testing.assert_array_equal(data.X, [[1, 2, 3], [4.5, 0.5, -6]])


def test_csv_single_column_is_a_matrix(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("1\n2\n3\n")
    assert load_file(path).X.shape == (3, 1)


def test_csv_ragged_names_the_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n7,8\n")
    with pytest.raises(ValueError, match="line 4 has 2 fields but line 2 has 3") as err:
        load_file(path)
    one_line(err)


def test_csv_non_numeric_field_names_line_and_column(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("1,2\n3,oops\n")
    with pytest.raises(ValueError, match="line 2, column 2: 'oops' is not a number"):
        load_file(path)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.npy", "does not exist"),
        (lambda p: p, "is a directory"),
        (lambda p: (p / "x.txt").write_text("1,2\n") and p / "x.txt", "unknown data format"),
        (lambda p: (p / "g.npy").write_text("hello") and p / "g.npy", "not a NumPy .npy"),
        (lambda p: (p / "g.npz").write_text("hello") and p / "g.npz", "cannot read"),
    ],
)
def test_unusable_file_is_refused_in_one_line_naming_the_problem(tmp_path, make, match):
    with pytest.raises(ValueError, match=match) as err:
        load_file(make(tmp_path))
    one_line(err)


# --------------------------------------------------------------------------------------------
# validate_data and load_data
# --------------------------------------------------------------------------------------------


def test_validate_data_reports_the_nan_count_and_first_position():
    X = np.ones((4, 3))
    X[1, 2] = np.nan
    X[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN/inf.*row 1, column 2") as err:
        validate_data(X)
    one_line(err)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.full((5, 3), 0.25), "all samples are identical; the covariance is zero"),
        (np.ones((1, 3)), "at least 2 samples"),
        (np.ones(3), "2-D"),
        (np.ones((3, 0)), "no features"),
    ],
)
def test_validate_data_rejects_degenerate_arrays_in_one_line(X, match):
    with pytest.raises(ValueError, match=match) as err:
        validate_data(X)
    one_line(err)


def test_validate_data_accepts_a_finite_varying_matrix():
    validate_data(np.arange(6.0).reshape(3, 2))


def test_load_data_reads_mnist_subsets_synthetic_data_and_files(tmp_path, mnist):
    sub = load_data("mnist", n=200, subset_seed=5)
    np.testing.assert_array_equal(sub.X, random_subset(mnist, 200, seed=5).X)

    syn = load_data("synthetic", n=100, synthetic_seed=3)
    assert syn.X.shape == (100, 20)
    eig = np.linalg.eigvalsh(np.cov(syn.X.T, bias=True))[::-1]
    np.testing.assert_allclose(eig, default_synthetic_spectrum(), rtol=1e-10)

    np.save(tmp_path / "f.npy", np.arange(20.0).reshape(10, 2))
    assert load_data(str(tmp_path / "f.npy"), n=4).X.shape == (4, 2)


def test_load_data_refuses_constant_single_row_and_nan_files(tmp_path):
    np.save(tmp_path / "const.npy", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="identical"):
        load_data(str(tmp_path / "const.npy"))
    np.save(tmp_path / "single.npy", np.ones((1, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        load_data(str(tmp_path / "single.npy"))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="NaN"):
        load_data(str(tmp_path / "nan.npy"))
