"""Server time and size of POST /api/inside: the work one request does inside the server (decode and preprocess the
image, read the digit, look inside the model, encode the JSON), on one thread as the server runs it, for real test
digits drawn as the page sends them (dark ink on a white 280×280 PNG). The CPU time of the request's thread is
recorded beside its wall time, with the load average, as the machine is shared. Also, on validation digits (how a
knob is chosen), the look-inside step at several saliency step counts: its time, and how close its saliency comes
to explain's 64 steps (cosine similarity), which is what InsideConfig.saliency_steps trades.

    .venv/bin/python -m benchmarks.inside                 # the served default model and the shipped seed model
    .venv/bin/python -m benchmarks.inside --model RUN_DIR # another model in place of the default
    .venv/bin/python -m benchmarks.inside --tiny          # the CI smoke run
"""

import argparse
import io
import os
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
from digitcnn.recognize import read_images
from digitcnn.serve import look_inside_one


def canvas_png(digit: np.ndarray) -> bytes:
    """An MNIST digit as the page's canvas sends one: 280×280, dark ink on white, PNG."""
    buffer = io.BytesIO()
    Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BICUBIC).save(buffer, "PNG")
    return buffer.getvalue()


def request_ms(model, body: bytes) -> tuple[float, float, int]:
    """One request's server time and its thread's CPU time in milliseconds, and its response's size in bytes."""
    started, cpu_started = time.perf_counter(), time.thread_time()
    answer, _ = look_inside_one(model, body, "canvas.png")
    size = len(JSONResponse(answer).body)
    return (time.perf_counter() - started) * 1000, (time.thread_time() - cpu_started) * 1000, size


def reading_cpu_ms(model, body: bytes) -> float:
    """The CPU time of /api/predict's share of the request (decode, preprocess, the model): the yardstick of how
    much sharing the cores inflates CPU time, against the idle figure of benchmarks.load."""
    started = time.thread_time()
    read_images(model, [body], names=["canvas.png"])
    return (time.thread_time() - started) * 1000


def look(model, pixels: np.ndarray, steps: int) -> tuple[float, np.ndarray]:
    """The look-inside step alone: its time in milliseconds and its saliency."""
    started = time.perf_counter()
    view = look_inside(model, pixels, config=InsideConfig(saliency_steps=steps))
    return (time.perf_counter() - started) * 1000, view.saliency.ravel()


def cosine(first: np.ndarray, second: np.ndarray) -> float:
    return float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second) or 1.0))


def percentiles(values: list[float]) -> dict:
    return {"p50": round(float(np.percentile(values, 50)), 2), "p90": round(float(np.percentile(values, 90)), 2)}


def measure(model, digits: np.ndarray, validation_digits: np.ndarray, rounds: int, sweep: list[int]) -> dict:
    bodies = [canvas_png(digit) for digit in digits]
    for body in bodies[:5]:  # warm-up: oneDNN picks its kernels on first use
        request_ms(model, body)
    times, cpu_times, sizes = [], [], []
    for _ in range(rounds):
        for body in bodies:
            elapsed, cpu, size = request_ms(model, body)
            times.append(elapsed)
            cpu_times.append(cpu)
            sizes.append(size)
    reading_times = [reading_cpu_ms(model, body) for body in bodies]
    # Step counts alternate per digit, so a drifting load hits each count alike.
    by_steps: dict[int, dict[str, list[float]]] = {steps: {"ms": [], "cosine": []} for steps in sweep}
    for digit in validation_digits:
        image = digit.astype(np.float32) / 255
        _, reference = look(model, image, 64)
        for steps in sweep:
            elapsed, saliency = look(model, image, steps)
            by_steps[steps]["ms"].append(elapsed)
            by_steps[steps]["cosine"].append(cosine(saliency, reference))
    return {
        "arch": model.config.arch,
        "requests": len(times),
        "server_ms": percentiles(times),
        "server_cpu_ms": percentiles(cpu_times),
        "reading_only_cpu_ms": percentiles(reading_times),
        "response_bytes": {"median": int(statistics.median(sizes)), "max": max(sizes)},
        "by_saliency_steps": {
            str(steps): {
                "look_inside_ms": percentiles(figures["ms"]),
                "saliency_cosine_to_64_steps": {
                    "median": round(float(np.median(figures["cosine"])), 4),
                    "min": round(float(np.min(figures["cosine"])), 4),
                },
            }
            for steps, figures in by_steps.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run folder or model file in place of the shipped default model")
    parser.add_argument("--digits", type=int, default=200, help="test digits, each sent as one request per round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the digits; percentiles pool them")
    parser.add_argument("--sweep", default="8,16,32", help="saliency step counts to compare with 64")
    parser.add_argument("--validation-digits", type=int, default=50, help="validation digits for the sweep")
    parser.add_argument("--tiny", action="store_true", help="a few digits: checks the script runs")
    parser.add_argument("--out", default="benchmarks/results/inside.json")
    arguments = parser.parse_args()
    if arguments.tiny:
        arguments.digits, arguments.rounds, arguments.sweep, arguments.validation_digits = 8, 1, "4,16", 4
    torch.set_num_threads(1)  # as `digitcnn serve` runs each request
    (x_train, _), (x_test, _) = load_data("mnist")
    digits = x_test[-arguments.digits :]  # the end of the test set, as the other latency benchmarks take theirs
    validation_digits = x_train[-arguments.validation_digits :]  # the end of the validation split
    sweep = [int(steps) for steps in arguments.sweep.split(",")]
    models = {"default": load_model(arguments.model)}
    if TUTORIAL_MODEL.exists():
        models["seed"] = load_model(TUTORIAL_MODEL)
    load_before = os.getloadavg()
    measured = {
        name: measure(model, digits, validation_digits, arguments.rounds, sweep) for name, model in models.items()
    }
    result = {
        "machine": {**machine(), "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]]},
        "saliency_steps": InsideConfig().saliency_steps,
        "tiles_per_layer": InsideConfig().tiles_per_layer,
        "models": measured,
    }
    for name, figures in measured.items():
        wall, cpu, size = figures["server_ms"], figures["server_cpu_ms"], figures["response_bytes"]["max"]
        print(
            f"{name} ({figures['arch']}): server time p50 {wall['p50']} ms (CPU {cpu['p50']} ms), p90 {wall['p90']} "
            f"ms; response {size:,} bytes at most"
        )
    write_result(arguments.out, result, tiny=arguments.tiny)


if __name__ == "__main__":
    main()
