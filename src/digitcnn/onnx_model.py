"""ONNX: `export_onnx` writes a self-describing .onnx file (the model config in its metadata), kept only after
onnxruntime and PyTorch agree on real test digits; `OnnxModel` runs such a file with onnxruntime, and is what
`load_model` returns for it, so predict, evaluate, `digitcnn predict`/`evaluate` and the server run its graph
on onnxruntime rather than PyTorch.

An ensemble exports as one graph holding every member; its averaging is part of its forward. onnx and onnxruntime
come with the export extra and are imported only when asked for, so the package works without them."""

import copy
import dataclasses
import importlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import ModelError
from .files import atomic_path, file_sha256
from .model_config import ModelConfig, model_config_from_dict
from .pixels import SIDE, pixel_array

# The key of the model config in the file's metadata; the same as in a self-describing .safetensors.
METADATA_KEY = "digitcnn_model"
# The sha256 of the weights file an export was made from: `load_model(..., onnx_twin=True)` runs the export in
# their place only while they are unchanged.
SOURCE_KEY = "digitcnn_source_sha256"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Opset 17 (ONNX 1.12, 2022) runs on every onnxruntime since 1.12 and holds all our layers.
OPSET = 17
# Largest |logit difference| allowed between onnxruntime and PyTorch: float32 kernels that sum in another
# order differ by ~1e-6 on our models, so 1e-4 passes any faithful export and fails any wrong layer.
TOLERANCE = 1e-4
VALIDATION_DIGITS = 1000
# 1,000 digits make batches of 256 and 232, so validation sends two batch sizes through the graph.
VALIDATION_BATCH_SIZE = 256
# A model opened with fewer threads than cores (a twin: reading a few images at a time, where a second thread
# only spins when the other core is busy) runs a batch of at least this many images on every core: there each
# thread has tens of milliseconds of work, and two threads nearly halve it (benchmarks.onnx_vs_torch).
MANY_IMAGES = 256


def import_extra(name: str, purpose: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ModelError(f"{purpose} needs {name}: pip install 'digitcnn[export]'") from None


class OnnxModel:
    """An exported model behind onnxruntime's CPUExecutionProvider, carrying its ModelConfig as `.config`.

    Only files written by `digitcnn export` are accepted: their metadata says what the outputs mean (class
    names, temperature) and promises the input contract ([0, 1] pixels, normalization inside the graph).
    A foreign MNIST model may expect other pixels and would answer wrongly without any error, so it is
    refused instead."""

    training = False  # never trains; lets code written for nn.Module ask

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model {self.path} does not exist")
        self.cores = os.cpu_count() or 1
        self.threads = threads or self.cores
        self.session = open_session(self.path, self.threads)
        self.every_core_session = None  # opened for the first batch of MANY_IMAGES, when threads < cores
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.config = read_config(self.metadata, self.path)
        inputs = [(item.name, item.shape) for item in self.session.get_inputs()]
        outputs = [item.name for item in self.session.get_outputs()]
        if [name for name, _ in inputs] != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
            raise ModelError(f"{self.path} takes {inputs} and gives {outputs}, not digitcnn's input -> logits")

    def predict_logits(self, images, batch_size: int = 1024) -> np.ndarray:
        """Raw logits (N, classes) as float32, for any images `pixel_array` takes."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        pixels = pixel_array(images)
        outputs = [
            self.session_for(len(batch)).run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
            for batch in (pixels[start : start + batch_size] for start in range(0, len(pixels), batch_size))
        ]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.config.num_classes), np.float32)

    def session_for(self, images: int):
        """The session that runs a batch of this many images: every core's for a large one (MANY_IMAGES)."""
        if images < MANY_IMAGES or self.threads >= self.cores:
            return self.session
        if self.every_core_session is None:  # two threads opening it at once open two: both are correct
            self.every_core_session = open_session(self.path, self.cores)
        return self.every_core_session

    def eval(self) -> "OnnxModel":
        return self

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, arch={self.config.arch!r})"


def open_session(path: Path, threads: int):
    """An onnxruntime session of `path` on the CPU. A file onnxruntime cannot open (truncated, not ONNX, an
    operator it lacks) raises ModelError in one line, and so does onnxruntime missing."""
    onnxruntime = import_extra("onnxruntime", "running an .onnx model")
    runtime_errors = onnxruntime.capi.onnxruntime_pybind11_state
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graph is one chain of layers: nothing runs beside anything
    load_errors = (
        runtime_errors.Fail,
        runtime_errors.InvalidProtobuf,
        runtime_errors.InvalidGraph,
        runtime_errors.InvalidArgument,
        runtime_errors.NoSuchFile,
        runtime_errors.NotImplemented,
        runtime_errors.RuntimeException,
    )
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except load_errors as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{path} is not a valid ONNX model: {reason}") from None


def read_config(metadata: dict, path: Path) -> ModelConfig:
    if METADATA_KEY not in metadata:
        raise ModelError(
            f"{path} was not exported by digitcnn (no {METADATA_KEY} metadata); "
            "export a run with `digitcnn export --model RUN_DIR --out FILE.onnx`"
        )
    try:
        return model_config_from_dict(json.loads(metadata[METADATA_KEY]))
    except (json.JSONDecodeError, TypeError) as error:
        raise ModelError(f"{path} carries an unreadable {METADATA_KEY} config: {error}") from None


def export_onnx(model, path: str | Path, opset: int = OPSET, images=None, source: Path | None = None) -> dict:
    """Writes `model` to `path` as ONNX (input `input` float32 [batch, 1, 28, 28] in [0, 1], output `logits`
    [batch, classes]) and returns the validation report. `images` are the validation digits (default: the
    first 1,000 test digits of the model's data set); `source`, the weights file the model was read from, makes
    the file that model's ONNX twin (inference.load_twin). The file is replaced only when validation passes;
    otherwise ModelError, and nothing is written."""
    import torch  # exporting traces the PyTorch model; running the file (OnnxModel) needs no PyTorch

    onnx = import_extra("onnx", "export")
    import_extra("onnxruntime", "export")  # the validation runs the file: fail before any work
    if images is None:
        from .data import load_data

        _, (x_test, _) = load_data(model.config.dataset)
        images = x_test[:VALIDATION_DIGITS]
    if len(images) == 0:
        raise ValueError("validating an export needs at least one digit")
    # A contiguous CPU copy in eval mode: the exporter traces the model as it stands, channels_last strides
    # and all, and the caller's model keeps its device, layout and mode.
    network = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    with atomic_path(path) as temporary:
        with warnings.catch_warnings():
            # torch 2.9+ calls the TorchScript exporter legacy; it needs no onnxscript and handles our layers.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                network,
                (torch.rand(2, 1, SIDE, SIDE),),
                str(temporary),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        describe(onnx, temporary, model.config, source)
        report = validate(model, OnnxModel(temporary), images)
        if not report["passed"]:
            raise ModelError(
                f"the ONNX export disagrees with PyTorch on {report['digits']} test digits (max |difference| "
                f"{report['max_abs_difference']:.2e}, tolerance {TOLERANCE:g}; labels identical: "
                f"{report['labels_identical']}); nothing was written"
            )
    return {**report, "path": str(path), "opset": opset}


def export_twin(model, weights: Path, images) -> str | None:
    """Writes the ONNX twin of the weights file `weights` that `model` was just saved to (model.onnx beside a run's
    model.safetensors), checked against PyTorch on `images`: `load_model(..., onnx_twin=True)`, as `digitcnn
    predict` and the server load a run, then runs it on onnxruntime. None when it is written; otherwise why not,
    in one line (the export extra missing, or a failed check), and the run reads with PyTorch as before."""
    try:
        export_onnx(model, weights.with_suffix(".onnx"), images=images[:VALIDATION_DIGITS], source=weights)
    except (ModelError, ValueError) as error:  # the extra missing is a ModelError that says what to install
        return str(error)
    return None


def describe(onnx, path: Path, config, source: Path | None) -> None:
    """Stores the model config in the file's metadata, so the .onnx alone says what its logits mean, and the
    sha256 of the weights file `source` it was exported from, if any."""
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(dataclasses.asdict(config))
    if source is not None:
        entry = graph.metadata_props.add()
        entry.key, entry.value = SOURCE_KEY, file_sha256(source)
    graph.producer_name, graph.doc_string = "digitcnn", f"digitcnn {config.arch}: [0, 1] pixels -> logits"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def validate(model, exported: OnnxModel, images) -> dict:
    """PyTorch and onnxruntime logits on the same digits: the largest difference and whether labels agree."""
    from .models import torch_logits

    expected = torch_logits(model, images, VALIDATION_BATCH_SIZE)
    actual = exported.predict_logits(images, VALIDATION_BATCH_SIZE)
    difference = float(np.abs(expected - actual).max())
    labels_identical = bool((expected.argmax(axis=1) == actual.argmax(axis=1)).all())
    return {
        "digits": len(expected),
        "max_abs_difference": difference,
        "tolerance": TOLERANCE,
        "labels_identical": labels_identical,
        "passed": labels_identical and difference <= TOLERANCE,  # a NaN difference fails too
    }
