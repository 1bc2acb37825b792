"""Server time and size of POST /api/inside: the work one request does inside the server (decode and preprocess the
image, read the digit, look inside the model, encode the JSON), on one thread as the server runs it, for real test
digits drawn as the page sends them (dark ink on a white 280×280 PNG). Also the look-inside step alone at several
saliency step counts, which is what InsideConfig.saliency_steps trades against.

    .venv/bin/python -m benchmarks.inside                 # the served default model and the shipped seed model
    .venv/bin/python -m benchmarks.inside --model RUN_DIR # another model in place of the default
    .venv/bin/python -m benchmarks.inside --tiny          # the CI smoke run
"""

import argparse
import io
import statistics
import time

import numpy as np
import torch
from fastapi.responses import JSONResponse
from PIL import Image

from benchmarks.common import machine, write_result
from digitcnn import load_data
from digitcnn.config import InsideConfig
from digitcnn.inference import load_model
from digitcnn.inside import TUTORIAL_MODEL, look_inside
from digitcnn.serve import look_inside_one


def canvas_png(digit: np.ndarray) -> bytes:
    """An MNIST digit as the page's canvas sends one: 280×280, dark ink on white, PNG."""
    buffer = io.BytesIO()
    Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BICUBIC).save(buffer, "PNG")
    return buffer.getvalue()


def request_ms(model, body: bytes) -> tuple[float, int]:
    """One request's server time in milliseconds and its response's size in bytes."""
    started = time.perf_counter()
    answer, _ = look_inside_one(model, body, "canvas.png")
    size = len(JSONResponse(answer).body)
    return (time.perf_counter() - started) * 1000, size


def look_ms(model, pixels: np.ndarray, steps: int) -> float:
    started = time.perf_counter()
    look_inside(model, pixels, config=InsideConfig(saliency_steps=steps))
    return (time.perf_counter() - started) * 1000


def percentiles(values: list[float]) -> dict:
    return {"p50": round(float(np.percentile(values, 50)), 2), "p90": round(float(np.percentile(values, 90)), 2)}


def measure(model, digits: np.ndarray, rounds: int, sweep: list[int]) -> dict:
    bodies = [canvas_png(digit) for digit in digits]
    for body in bodies[:5]:  # warm-up: oneDNN picks its kernels on first use
        request_ms(model, body)
    times, sizes = [], []
    for _ in range(rounds):
        for body in bodies:
            elapsed, size = request_ms(model, body)
            times.append(elapsed)
            sizes.append(size)
    pixels = [digit.astype(np.float32) / 255 for digit in digits]
    # The look-inside step alone, alternating step counts per digit so drifting load hits each count alike.
    by_steps: dict[int, list[float]] = {steps: [] for steps in sweep}
    for image in pixels:
        for steps in sweep:
            by_steps[steps].append(look_ms(model, image, steps))
    return {
        "arch": model.config.arch,
        "requests": len(times),
        "server_ms": percentiles(times),
        "response_bytes": {"median": int(statistics.median(sizes)), "max": max(sizes)},
        "look_inside_ms_by_saliency_steps": {str(steps): percentiles(values) for steps, values in by_steps.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run folder or model file in place of the shipped default model")
    parser.add_argument("--digits", type=int, default=200, help="test digits, each sent as one request per round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the digits; percentiles pool them")
    parser.add_argument("--sweep", default="8,16,32,64", help="saliency step counts to time the look-inside step at")
    parser.add_argument("--tiny", action="store_true", help="a few digits: checks the script runs")
    parser.add_argument("--out", default="benchmarks/results/inside.json")
    arguments = parser.parse_args()
    if arguments.tiny:
        arguments.digits, arguments.rounds, arguments.sweep = 8, 1, "4,16"
    torch.set_num_threads(1)  # as `digitcnn serve` runs each request
    _, (x_test, _) = load_data("mnist")
    digits = x_test[-arguments.digits :]  # the end of the test set, as the other latency benchmarks take theirs
    sweep = [int(steps) for steps in arguments.sweep.split(",")]
    models = {"default": load_model(arguments.model)}
    if TUTORIAL_MODEL.exists():
        models["seed"] = load_model(TUTORIAL_MODEL)
    result = {
        "machine": machine(),
        "saliency_steps": InsideConfig().saliency_steps,
        "tiles_per_layer": InsideConfig().tiles_per_layer,
        "models": {name: measure(model, digits, arguments.rounds, sweep) for name, model in models.items()},
    }
    for name, figures in result["models"].items():
        print(f"{name} ({figures['arch']}): server time p50 {figures['server_ms']['p50']} ms, "
              f"p90 {figures['server_ms']['p90']} ms; response {figures['response_bytes']['max']:,} bytes at most")  # fmt: skip
    write_result(arguments.out, result, tiny=arguments.tiny)


if __name__ == "__main__":
    main()
