"""Seed-network training throughput: digitcnn.fit against a Keras 3 Sequential + fit on the PyTorch backend,
the same network, images, batch size and threads, in one process, alternating sides each round.

    .venv/bin/python -m benchmarks.throughput            # 20,000 images a side after warm-up (~8 minutes)
    .venv/bin/python -m benchmarks.throughput --tiny     # the CI smoke run
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3's fastest backend on our CPUs

import numpy as np
import torch

from benchmarks.common import machine, write_result
from digitcnn import build_model, fit, load_data, to_categorical


def keras_seed_network():
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.Conv2D(128, 3, activation="relu"),
            layers.Dropout(0.25),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )


def time_digitcnn(x, y, warmup_x, warmup_y, batch_size: int) -> float:
    model = build_model("seed")
    fit(model, warmup_x, warmup_y, batch_size=batch_size, epochs=1, validation_split=0.0, verbose=False)
    started = time.perf_counter()
    fit(model, x, y, batch_size=batch_size, epochs=1, validation_split=0.0, verbose=False)
    return len(x) / (time.perf_counter() - started)


def time_keras(x, y, warmup_x, warmup_y, batch_size: int) -> float:
    model = keras_seed_network()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    # The tutorial's preparation: (N, 28, 28, 1) floats in [0, 1] and one-hot labels.
    model.fit(warmup_x[..., None] / np.float32(255), to_categorical(warmup_y, 10), batch_size=batch_size, verbose=0)
    inputs, targets = x[..., None] / np.float32(255), to_categorical(y, 10)
    started = time.perf_counter()
    model.fit(inputs, targets, batch_size=batch_size, epochs=1, verbose=0)
    return len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000, help="timed training images per side and round")
    parser.add_argument("--warmup", type=int, default=1_280, help="untimed images first (oneDNN picks kernels)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the median is reported")
    parser.add_argument("--tiny", action="store_true", help="a few hundred images: checks the script runs")
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    arguments = parser.parse_args()
    if arguments.tiny:
        arguments.images, arguments.warmup = 256, 128
    (x_train, y_train), _ = load_data()
    warmup_x, warmup_y = x_train[: arguments.warmup], y_train[: arguments.warmup]
    x = x_train[arguments.warmup : arguments.warmup + arguments.images]
    y = y_train[arguments.warmup : arguments.warmup + arguments.images]
    rates: dict[str, list[float]] = {"digitcnn": [], "keras": []}
    for round_index in range(arguments.rounds):
        for side, timer in (("digitcnn", time_digitcnn), ("keras", time_keras)):
            torch.manual_seed(round_index)
            rates[side].append(timer(x, y, warmup_x, warmup_y, arguments.batch_size))
            print(f"round {round_index + 1}: {side:8s} {rates[side][-1]:7.1f} images/s", file=sys.stderr)
    digitcnn_rate, keras_rate = statistics.median(rates["digitcnn"]), statistics.median(rates["keras"])
    import keras

    result = {
        "benchmark": "seed-network training throughput",
        "images_per_side": len(x),
        "batch_size": arguments.batch_size,
        "rounds": arguments.rounds,
        "digitcnn_images_per_second": round(digitcnn_rate, 1),
        "keras_images_per_second": round(keras_rate, 1),
        "ratio": round(digitcnn_rate / keras_rate, 3),
        "keras": f"{keras.__version__} ({keras.backend.backend()} backend)",
        "all_rounds": rates,
        **machine(),
    }
    print(f"\n{'side':10s} {'images/s':>10s}\n{'digitcnn':10s} {digitcnn_rate:10.1f}\n{'keras':10s} {keras_rate:10.1f}")
    print(f"ratio digitcnn / keras: {result['ratio']:.2f}x  ({len(x)} images a side, batch {arguments.batch_size})")
    write_result(arguments.out, result, tiny=arguments.tiny)


if __name__ == "__main__":
    main()
