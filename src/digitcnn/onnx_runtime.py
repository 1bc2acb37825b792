"""A digitcnn model exported to ONNX, run by onnxruntime: what `load_model` returns for an .onnx file, so
predict, evaluate, `digitcnn predict`/`evaluate` and the server run it without any PyTorch computation."""

import json
import os
from pathlib import Path

import numpy as np

from .errors import ModelError
from .inference import as_pixel_array
from .models import ModelConfig, model_config_from_dict

# The key of the model config in the file's metadata; the same as in a self-describing .safetensors.
METADATA_KEY = "digitcnn_model"
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class OnnxModel:
    """An exported model behind onnxruntime's CPUExecutionProvider, carrying its ModelConfig as `.config`.

    Only files written by `digitcnn export` are accepted: their metadata says what the outputs mean (class
    names, temperature) and promises the input contract ([0, 1] pixels, normalization inside the graph).
    A foreign MNIST model may expect other pixels and would answer wrongly without any error, so it is
    refused instead."""

    training = False  # never trains; lets code written for nn.Module ask

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            import onnxruntime
            from onnxruntime.capi import onnxruntime_pybind11_state as runtime_errors
        except ImportError:
            raise ModelError("running an .onnx model needs onnxruntime: pip install 'digitcnn[export]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model {self.path} does not exist")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1  # the graph is one chain of layers: nothing runs beside anything
        load_errors = (runtime_errors.Fail, runtime_errors.InvalidProtobuf, runtime_errors.InvalidGraph,
                       runtime_errors.InvalidArgument, runtime_errors.NoSuchFile, runtime_errors.NotImplemented,
                       runtime_errors.RuntimeException)  # fmt: skip
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except load_errors as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelError(f"{self.path} is not a valid ONNX model: {reason}") from None
        self.config = read_config(self.session, self.path)
        inputs = [(item.name, item.shape) for item in self.session.get_inputs()]
        outputs = [item.name for item in self.session.get_outputs()]
        if [name for name, _ in inputs] != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
            raise ModelError(f"{self.path} takes {inputs} and gives {outputs}, not digitcnn's input -> logits")

    def predict_logits(self, images, batch_size: int = 1024) -> np.ndarray:
        """Raw logits (N, classes) as float32, for any images `as_pixels` takes."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        pixels = as_pixel_array(images)
        outputs = [
            self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels[start : start + batch_size]})[0]
            for start in range(0, len(pixels), batch_size)
        ]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.config.num_classes), np.float32)

    def eval(self) -> "OnnxModel":
        return self

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, arch={self.config.arch!r})"


def read_config(session, path: Path) -> ModelConfig:
    metadata = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in metadata:
        raise ModelError(f"{path} was not exported by digitcnn (no {METADATA_KEY} metadata); "
                         "export a run with `digitcnn export --model RUN_DIR --out FILE.onnx`")  # fmt: skip
    try:
        return model_config_from_dict(json.loads(metadata[METADATA_KEY]))
    except (json.JSONDecodeError, TypeError) as error:
        raise ModelError(f"{path} carries an unreadable {METADATA_KEY} config: {error}") from None
