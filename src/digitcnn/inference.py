"""load_model, predict and evaluate: the one inference path the CLI, the API, the server and the tests share.
PyTorch is imported only where a PyTorch model is built or run: a model's ONNX twin reads images without it."""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .config import STRIPS_FILE, WEIGHTS_FILE, read_run_config
from .errors import ModelError
from .files import file_sha256
from .metrics import negative_log_likelihood, softmax
from .model_config import is_torch_model, model_config_from_dict

# The model shipped inside the package, so `predict` and `serve` answer straight after installing; beside it, its
# ONNX twin (`scripts/ship_model.sh` exports it).
SHIPPED_MODEL = Path(__file__).parent / "weights" / "default.safetensors"


class Evaluation(NamedTuple):
    """What `evaluate` returns; indexes like Keras' [loss, accuracy] list."""

    loss: float
    accuracy: float


def load_model(source: str | Path | None = None, onnx_twin: bool = False):
    """A run folder, a model .safetensors file, an exported .onnx file (run by onnxruntime), or None for the
    model shipped with the package.

    With `onnx_twin`, a run folder or weights file that has an ONNX twin (`model.onnx` in the run folder, which
    `train`, `finetune` and `ensemble` write when the export extra is installed, or the file's name with .onnx from
    `digitcnn export`; the shipped model has one) runs on onnxruntime instead, when it is installed and the twin
    was exported from these very weights: the same answers (export checks them against PyTorch) without importing
    PyTorch. The twin runs one thread, as reading a few images at a time wants, and every core for a large batch.

    The model's `strip_weights` is its run's own strip reader (`finetune` writes one, taught the same hand; an
    exported run's is beside its .onnx), which `recognize` then reads touching digits with; None for the shipped
    reader."""
    weights = weights_file(source)
    if weights is None:
        from .onnx_model import OnnxModel  # onnx_model imports nothing of inference's, so no circle

        model = OnnxModel(source)
        # An exported fine-tuned run carries its strip reader beside it (`digitcnn export`).
        beside = exported_strip_reader(source)
        model.strip_weights = beside if beside.is_file() else None
        return model
    run_dir = Path(source) if source is not None and Path(source).is_dir() else None
    if not (onnx_twin and (model := load_twin(weights, run_dir)) is not None):
        from .runs import load_model_file, load_run_model

        model = load_run_model(run_dir) if run_dir else load_model_file(weights)
    # A fine-tuned run reads touching digits with the strip reader taught its hand; any other, the shipped one.
    model.strip_weights = run_dir / STRIPS_FILE if run_dir and (run_dir / STRIPS_FILE).is_file() else None
    return model


def exported_strip_reader(exported: str | Path) -> Path:
    """Where `digitcnn export` writes a run's own strip reader beside the exported model: model.strips.onnx."""
    return Path(exported).with_suffix(".strips.onnx")


def weights_file(source: str | Path | None) -> Path | None:
    """The .safetensors file behind a model source (None for an .onnx file); a clear error for anything else."""
    if source is None:
        if not SHIPPED_MODEL.exists():
            raise ModelError("no model given and no shipped model in this install; pass --model RUN_DIR")
        return SHIPPED_MODEL
    path = Path(source)
    if path.is_dir():
        return path / WEIGHTS_FILE
    if path.suffix in (".safetensors", ".onnx"):
        if not path.exists():
            raise ModelError(f"model {path} does not exist")
        return path if path.suffix == ".safetensors" else None
    if not path.exists():
        raise ModelError(f"model {path} does not exist")
    raise ModelError(f"{path} is neither a run folder nor a {WEIGHTS_FILE} or .onnx file")


def load_twin(weights: Path, run_dir: Path | None = None):
    """The ONNX twin of a weights file, or None: none exported, onnxruntime missing, or exported from other
    weights or, in a run folder, another config than its config.json's (a temperature fitted since, say)."""
    twin_path = weights.with_suffix(".onnx")
    if not twin_path.is_file() or not weights.is_file():
        return None
    try:
        import onnxruntime  # noqa: F401 (the export extra: without it, the weights are read by PyTorch)
    except ImportError:
        return None
    from .onnx_model import SOURCE_KEY, OnnxModel

    try:
        twin = OnnxModel(twin_path, threads=1)
    except ModelError:
        return None  # not a twin digitcnn can read: the weights themselves still are
    if twin.metadata.get(SOURCE_KEY) != file_sha256(weights):
        return None
    return twin if source_config(weights, run_dir) == twin.config else None


def source_config(weights: Path, run_dir: Path | None):
    """The ModelConfig the weights load with, read without PyTorch: a run folder's config.json says what its model
    is; a lone file's metadata does (as runs.load_model_file reads them)."""
    if run_dir is not None:
        return read_run_config(run_dir).model
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        return model_config_from_dict(json.loads(metadata["digitcnn_model"]))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError):
        return None  # no config to match: PyTorch's loading of the weights says what is wrong with them


def as_labels(labels) -> np.ndarray:
    """Integer class labels, or one-hot rows from `to_categorical` (as Keras' categorical loss takes)."""
    array = np.asarray(labels)
    if array.ndim == 2:
        array = array.argmax(axis=1)
    if array.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices or 2-D one-hot rows, not {array.shape}")
    return array.astype(np.int64)


def predict_logits(model, images, batch_size: int = 1024) -> np.ndarray:
    """Raw logits (N, classes) as float32, from a PyTorch model or an exported one alike."""
    if not is_torch_model(model):
        return model.predict_logits(images, batch_size)  # a non-PyTorch runtime (ONNX) brings its own
    from .models import torch_logits

    return torch_logits(model, images, batch_size)


def predict(model, images, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities (N, classes), calibrated by the model's fitted temperature. A single 28×28 image
    gives a single row of 10 probabilities."""
    single = np.ndim(images) == 2
    logits = predict_logits(model, images, batch_size)
    probabilities = softmax(logits, model.config.temperature).astype(np.float32)
    return probabilities[0] if single else probabilities


def evaluate(model, images, labels, batch_size: int = 1024) -> Evaluation:
    """Mean cross-entropy (at temperature 1, as training measures it) and accuracy."""
    logits = predict_logits(model, images, batch_size)
    targets = as_labels(labels)
    if len(targets) != len(logits):
        raise ValueError(f"{len(logits)} images but {len(targets)} labels")
    # A diverged model (NaN logits) or no images at all measure as NaN, as training's history records them.
    finite = len(logits) > 0 and bool(np.isfinite(logits).all())
    loss = negative_log_likelihood(logits, targets, from_logits=True) if finite else float("nan")
    accuracy = float((logits.argmax(axis=1) == targets).mean())
    return Evaluation(loss, accuracy)
