"""load_model, predict and evaluate: the one inference path the CLI, the API, the server and the tests share."""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .errors import ModelError
from .metrics import softmax
from .runs import WEIGHTS_FILE, load_model_file, load_run_model

# The model shipped inside the package (issue: people's own digits); absent until it is trained and committed.
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
        from .onnx_runtime import OnnxModel  # onnxruntime is the export extra's; imported only when asked for

        return OnnxModel(path)
    if not path.exists():
        raise ModelError(f"model {path} does not exist")
    raise ModelError(f"{path} is neither a run folder nor a {WEIGHTS_FILE} or .onnx file")


def as_pixels(images) -> torch.Tensor:
    """Any image batch a user may hold -> float32 (N, 1, 28, 28) in [0, 1].

    Accepts uint8 (scaled by 1/255) or float in [0, 1]; (28, 28), (N, 28, 28), Keras' (N, 28, 28, 1) or
    PyTorch's (N, 1, 28, 28)."""
    tensor = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if tensor.dtype == torch.uint8:
        tensor = tensor.float().div_(255)
    elif not tensor.is_floating_point():
        raise ValueError(f"images must be uint8 or float, not {tensor.dtype}")
    return as_batch_shape(tensor.float(), np.shape(images))


def as_pixel_array(images) -> np.ndarray:
    """`as_pixels` as a contiguous float32 numpy array, for runtimes other than PyTorch (onnxruntime)."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / np.float32(255)
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float, not {array.dtype}")
    return np.ascontiguousarray(as_batch_shape(array.astype(np.float32, copy=False), np.shape(images)))


def as_batch_shape(pixels, shape_given: tuple):
    """(28, 28), (N, 28, 28) or (N, 28, 28, 1) -> (N, 1, 28, 28); the same for a numpy array and a tensor."""
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim == 4 and pixels.shape[-1] == 1 and pixels.shape[1] != 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    if pixels.ndim != 4 or pixels.shape[1] != 1:
        raise ValueError(f"images must be shaped (N, 28, 28) or (N, 28, 28, 1), not {tuple(shape_given)}")
    return pixels


def as_labels(labels) -> torch.Tensor:
    """Integer class labels, or one-hot rows from `to_categorical` (as Keras' categorical loss takes)."""
    tensor = torch.as_tensor(np.asarray(labels))
    if tensor.dim() == 2:
        tensor = tensor.argmax(dim=1)
    if tensor.dim() != 1:
        raise ValueError(f"labels must be 1-D class indices or 2-D one-hot rows, not {tuple(tensor.shape)}")
    return tensor.long()


@torch.inference_mode()
def predict_logits(model, images, batch_size: int = 1024) -> np.ndarray:
    """Raw logits (N, classes) as float32; the model is used in eval mode and its mode restored."""
    if hasattr(model, "predict_logits"):  # a non-PyTorch runtime (ONNX) brings its own
        return model.predict_logits(images, batch_size)
    pixels = as_pixels(images)
    # Switching modes walks every submodule (~0.35 ms, a third of a served image's model time): only when needed.
    was_training = model.training
    if was_training:
        model.eval()
    try:
        device = next(model.parameters()).device
        batches = (pixels[start : start + batch_size].to(device) for start in range(0, len(pixels), batch_size))
        outputs = [model(batch).cpu() for batch in batches]
    finally:
        if was_training:
            model.train()
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, model.config.num_classes), np.float32)


def predict(model, images, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities (N, classes), calibrated by the model's fitted temperature. A single 28x28 image
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
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probabilities[np.arange(len(targets)), targets].mean())
    accuracy = float((logits.argmax(axis=1) == targets).mean())
    return Evaluation(loss, accuracy)
