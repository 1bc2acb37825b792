"""Inference on PyTorch against onnxruntime (CPUExecutionProvider): batched throughput and single-image latency
of one model exported by `digitcnn export`, through the same `predict_logits` the CLI and the server call,
with the same threads on both sides, alternating sides each round; and of the model's ONNX twin, if it has one,
as `digitcnn predict` loads it (one thread for a few images, every core for a large batch).

    .venv/bin/python -m benchmarks.onnx_vs_torch                  # the shipped model, 10,000 digits x 5 rounds
    .venv/bin/python -m benchmarks.onnx_vs_torch --model RUN_DIR  # any run folder
    .venv/bin/python -m benchmarks.onnx_vs_torch --tiny           # the CI smoke run
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from benchmarks.common import machine, write_result
from digitcnn import load_data
from digitcnn.inference import SHIPPED_MODEL, load_model, predict_logits
from digitcnn.onnx_model import OnnxModel, export_onnx


def images_per_second(model, images, batch_size: int) -> float:
    started = time.perf_counter()
    predict_logits(model, images, batch_size)
    return len(images) / (time.perf_counter() - started)


def latencies_ms(model, images) -> list[float]:
    """One image per call, as the server sees them: milliseconds per call."""
    times = []
    for index in range(len(images)):
        started = time.perf_counter()
        predict_logits(model, images[index : index + 1])
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run folder or model file (default: the shipped model)")
    parser.add_argument("--images", type=int, default=10_000, help="test digits per side and round, batched")
    parser.add_argument("--batch-size", type=int, default=1024, help="predict_logits' default")
    parser.add_argument("--latency-images", type=int, default=1_000, help="single-image calls per side and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for each runtime")
    parser.add_argument("--tiny", action="store_true", help="a few hundred digits: checks the script runs")
    parser.add_argument("--out", default="benchmarks/results/onnx_vs_torch.json")
    arguments = parser.parse_args()
    if arguments.tiny:
        arguments.images, arguments.latency_images, arguments.rounds = 256, 20, 1
    if arguments.model is None and not SHIPPED_MODEL.exists():
        parser.error("no shipped model in this install: pass --model RUN_DIR")

    torch.set_num_threads(arguments.threads)
    torch_model = load_model(arguments.model)
    _, (x_test, _) = load_data(torch_model.config.dataset)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        check = export_onnx(torch_model, path)
        onnx_model = OnnxModel(path, threads=arguments.threads)
        sides = {"pytorch": torch_model, "onnxruntime": onnx_model}
        # The model as `digitcnn predict` and the server load it: its ONNX twin (train writes one) when it has one.
        as_predict_loads_it = load_model(arguments.model, onnx_twin=True)
        if isinstance(as_predict_loads_it, OnnxModel):
            sides["twin"] = as_predict_loads_it
        batched, single = x_test[: arguments.images], x_test[-arguments.latency_images :]
        for model in sides.values():  # warm-up: oneDNN and onnxruntime pick their kernels on first use
            predict_logits(model, batched[: arguments.batch_size], arguments.batch_size)
            latencies_ms(model, single[:10])
        rates: dict[str, list[float]] = {side: [] for side in sides}
        times: dict[str, list[float]] = {side: [] for side in sides}
        for round_index in range(arguments.rounds):
            for side, model in sides.items():
                rates[side].append(images_per_second(model, batched, arguments.batch_size))
                times[side].extend(latencies_ms(model, single))
                print(
                    f"round {round_index + 1}: {side:11s} {rates[side][-1]:9.0f} images/s, single image "
                    f"p50 {percentile(times[side], 50):.3f} ms",
                    file=sys.stderr,
                )

    summary = {
        side: {
            "images_per_second": round(statistics.median(rates[side]), 1),
            "latency_p50_ms": round(percentile(times[side], 50), 4),
            "latency_p99_ms": round(percentile(times[side], 99), 4),
        }
        for side in sides
    }
    result = {
        "benchmark": "inference: PyTorch vs onnxruntime",
        "model": arguments.model or f"shipped ({SHIPPED_MODEL.name})",
        "arch": torch_model.config.arch,
        "images_per_round": len(batched),
        "batch_size": arguments.batch_size,
        "latency_calls_per_round": len(single),
        "rounds": arguments.rounds,
        "threads": arguments.threads,
        **summary,
        "throughput_ratio_onnx_over_torch": round(
            summary["onnxruntime"]["images_per_second"] / summary["pytorch"]["images_per_second"], 3
        ),
        # What the goal compares: `predict` on the model as loaded (its twin, if any) against onnxruntime.
        "throughput_ratio_twin_over_onnx": round(
            summary["twin"]["images_per_second"] / summary["onnxruntime"]["images_per_second"], 3
        )
        if "twin" in summary
        else None,
        "export_check": {key: check[key] for key in ("digits", "max_abs_difference", "labels_identical")},
        "onnxruntime_version": onnxruntime.__version__,
        "all_rounds_images_per_second": rates,
        **machine(),
    }
    print(f"\n{'runtime':12s} {'images/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for side, figures in summary.items():
        print(
            f"{side:12s} {figures['images_per_second']:10.0f} {figures['latency_p50_ms']:8.3f} "
            f"{figures['latency_p99_ms']:8.3f}"
        )
    print(
        f"onnxruntime / PyTorch throughput: {result['throughput_ratio_onnx_over_torch']:.2f}x "
        f"({torch_model.config.arch}, batch {arguments.batch_size}, {arguments.threads} threads)"
    )
    if result["throughput_ratio_twin_over_onnx"] is not None:
        print(f"the twin `predict` loads / onnxruntime throughput: {result['throughput_ratio_twin_over_onnx']:.2f}x")
    else:
        print("no ONNX twin: `predict` runs the model on PyTorch")
    write_result(arguments.out, result, tiny=arguments.tiny)


if __name__ == "__main__":
    main()
