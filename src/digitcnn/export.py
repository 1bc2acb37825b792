"""ONNX export: one self-describing .onnx file (the model config in its metadata) that onnxruntime runs
without PyTorch, kept only after onnxruntime and PyTorch agree on real test digits.

An ensemble exports as one graph holding every member; its averaging is part of its forward."""

import copy
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from .errors import ModelError
from .files import atomic_path
from .inference import predict_logits
from .onnx_runtime import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, OnnxModel

# Opset 17 (ONNX 1.12, 2022) runs on every onnxruntime since 1.12 and holds all our layers.
OPSET = 17
# Largest |logit difference| allowed between onnxruntime and PyTorch: float32 kernels that sum in another
# order differ by ~1e-6 on our models, so 1e-4 passes any faithful export and fails any wrong layer.
TOLERANCE = 1e-4
VALIDATION_DIGITS = 1000
# 1,000 digits make batches of 256 and 232, so validation sends two batch sizes through the graph.
VALIDATION_BATCH_SIZE = 256


def export_onnx(model, path: str | Path, opset: int = OPSET, images=None) -> dict:
    """Writes `model` to `path` as ONNX (input `input` float32 [batch, 1, 28, 28] in [0, 1], output `logits`
    [batch, classes]) and returns the validation report. `images` are the validation digits (default: the
    first 1,000 test digits of the model's data set). The file is replaced only when validation passes;
    otherwise ModelError, and nothing is written."""
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
                (torch.rand(2, 1, 28, 28),),
                str(temporary),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        describe(temporary, model.config)
        report = validate(model, OnnxModel(temporary), images)
        if not report["passed"]:
            raise ModelError(
                f"the ONNX export disagrees with PyTorch on {report['digits']} test digits (max |difference| "
                f"{report['max_abs_difference']:.2e}, tolerance {TOLERANCE:g}; labels identical: "
                f"{report['labels_identical']}); nothing was written"
            )
    return {**report, "path": str(path), "opset": opset}


def describe(path: Path, config) -> None:
    """Stores the model config in the file's metadata, so the .onnx alone says what its logits mean."""
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(dataclasses.asdict(config))
    graph.producer_name, graph.doc_string = "digitcnn", f"digitcnn {config.arch}: [0, 1] pixels -> logits"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def validate(model, exported: OnnxModel, images) -> dict:
    """PyTorch and onnxruntime logits on the same digits: the largest difference and whether labels agree."""
    expected = predict_logits(model, images, VALIDATION_BATCH_SIZE)
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
