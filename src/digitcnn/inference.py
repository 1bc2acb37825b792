"""load_model, predict and evaluate: the one inference path the CLI, the API, the server and the tests share."""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .errors import ModelError
from .metrics import negative_log_likelihood, softmax
from .models import is_torch_model, torch_logits
from .runs import WEIGHTS_FILE, load_model_file, load_run_model

# The model shipped inside the package, so `predict` and `serve` answer straight after installing.
SHIPPED_MODEL = Path(__file__).parent / "weights" / "default.safetensors"


class Evaluation(NamedTuple):
    """What `evaluate` returns; indexes like Keras' [loss, accuracy] list."""

    loss: float
    accuracy: float


def load_model(source: str | Path | None = None):
    """A run folder, a model .safetensors file, an exported .onnx file (run by onnxruntime), or None for the
    model shipped with the package."""
    if source is None:
        if not SHIPPED_MODEL.exists():
            raise ModelError("no model given and no shipped model in this install; pass --model RUN_DIR")
        return load_model_file(SHIPPED_MODEL)
    path = Path(source)
    if path.is_dir():
        return load_run_model(path)
    if path.suffix == ".safetensors":
        return load_model_file(path)
    if path.suffix == ".onnx":
        from .onnx_model import OnnxModel  # onnx_model imports nothing of inference's, so no circle

        return OnnxModel(path)
    if not path.exists():
        raise ModelError(f"model {path} does not exist")
    raise ModelError(f"{path} is neither a run folder nor a {WEIGHTS_FILE} or .onnx file")


def as_labels(labels) -> torch.Tensor:
    """Integer class labels, or one-hot rows from `to_categorical` (as Keras' categorical loss takes)."""
    tensor = torch.as_tensor(np.asarray(labels))
    if tensor.dim() == 2:
        tensor = tensor.argmax(dim=1)
    if tensor.dim() != 1:
        raise ValueError(f"labels must be 1-D class indices or 2-D one-hot rows, not {tuple(tensor.shape)}")
    return tensor.long()


def predict_logits(model, images, batch_size: int = 1024) -> np.ndarray:
    """Raw logits (N, classes) as float32, from a PyTorch model or an exported one alike."""
    if is_torch_model(model):
        return torch_logits(model, images, batch_size)
    return model.predict_logits(images, batch_size)  # a non-PyTorch runtime (ONNX) brings its own


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
    targets = as_labels(labels).numpy()
    if len(targets) != len(logits):
        raise ValueError(f"{len(logits)} images but {len(targets)} labels")
    # A diverged model (NaN logits) or no images at all measure as NaN, as training's history records them.
    finite = len(logits) > 0 and bool(np.isfinite(logits).all())
    loss = negative_log_likelihood(logits, targets, from_logits=True) if finite else float("nan")
    accuracy = float((logits.argmax(axis=1) == targets).mean())
    return Evaluation(loss, accuracy)
