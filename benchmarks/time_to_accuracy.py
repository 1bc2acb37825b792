"""Time to accuracy: whole training runs of a recipe, from loading the (cached) data to the trained model,
over several seeds; each run's test accuracy is measured once, at its end.

A one-cycle schedule's middle epochs are not a shorter run's result, so each epoch budget is its own run:
`--epochs 3,6` trains the recipe for 3 epochs and, separately, for 6.

    .venv/bin/python -m benchmarks.time_to_accuracy                        # lean: 3 and 6 epochs, seeds 0-2
    .venv/bin/python -m benchmarks.time_to_accuracy --arch best --epochs 0 # best, its own recipe's epochs
    .venv/bin/python -m benchmarks.time_to_accuracy --command              # `digitcnn train` itself, seeds 0-2
    .venv/bin/python -m benchmarks.time_to_accuracy --command --dataset fashion-mnist  # ...on Fashion-MNIST
    .venv/bin/python -m benchmarks.time_to_accuracy --tiny                 # the CI smoke run

`--command` times the default command as a user runs it, each seed in a fresh process: from process start
(importing PyTorch) through loading the cached data, training on the recipe's training part (the validation
split held out, each epoch evaluated on it), the one test evaluation and the run folder's files.
"""

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import machine, write_result
from digitcnn import build_model, evaluate, fit, load_data
from digitcnn.config import DEFAULT_ARCH, DataConfig, default_arch, read_run_config, recipe
from digitcnn.train import resolved_precision

TARGETS = (0.9940, 0.9950)  # the tutorial's 99.39%, rounded up, and the second goal
# The benchmark measures the recipe as shipped, trained on all 60,000 images: nothing is held out.
VALIDATION_SPLIT = 0.0


def one_run(arch: str, epochs: int | None, seed: int, limit: int | None) -> dict:
    started = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_data()
    if limit:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
    torch.manual_seed(seed)
    model = build_model(arch)
    fit(model, x_train, y_train, epochs=epochs, validation_split=VALIDATION_SPLIT, seed=seed, verbose=False)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, x_test, y_test).accuracy
    return {"seed": seed, "seconds": round(seconds, 1), "test_accuracy": round(accuracy, 4)}


def command_run(dataset: str, arch: str | None, epochs: int | None, seed: int, limit: int | None) -> dict:
    """`digitcnn train --dataset D --seed N` (with `--arch A` if one is given) in its own process, timed from start
    to exit, and the test accuracy it wrote."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "digitcnn", "train", "--dataset", dataset, "--seed", str(seed)]
        command += ["--out", str(Path(folder) / "run")]
        command += ["--arch", arch] if arch else []
        command += ["--epochs", str(epochs)] if epochs else []
        command += ["--limit", str(limit)] if limit else []
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        results = read_run_config(Path(folder) / "run").results
    return {"seed": seed, "seconds": round(seconds, 1), "test_accuracy": round(results["test_accuracy"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default=None, help=f"default: {DEFAULT_ARCH}; with --command, the command's own")
    parser.add_argument(
        "--epochs",
        default=None,
        help="comma-separated epoch budgets; 0 means the recipe's own (default: 3,6; with --command, 0)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1; medians are reported")
    parser.add_argument(
        "--command", action="store_true", help="time `digitcnn train` in its own process (the default command)"
    )
    parser.add_argument(
        "--dataset", default="mnist", choices=("mnist", "fashion-mnist"), help="with --command: the data set trained on"
    )
    parser.add_argument("--tiny", action="store_true", help="2,000 images, one seed: checks the script runs")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/time_to_accuracy-ARCH.json")
    arguments = parser.parse_args()
    limit = 2000 if arguments.tiny else None
    seeds = 1 if arguments.tiny else arguments.seeds
    epochs_text = arguments.epochs or ("0" if arguments.command else "3,6")
    budgets = [int(text) or None for text in epochs_text.split(",")]
    if arguments.dataset != "mnist" and not arguments.command:
        parser.error("--dataset is for --command (in process, the benchmark trains on MNIST)")
    dataset = arguments.dataset
    arch = arguments.arch or default_arch(dataset)
    trained = recipe(arch, dataset)
    measure = (
        functools.partial(command_run, dataset, arguments.arch)
        if arguments.command
        else functools.partial(one_run, arch)
    )
    rows = []
    for epochs in budgets:
        runs = []
        for seed in range(seeds):
            runs.append(measure(epochs, seed, limit))
            print(
                f"{arch} {epochs or 'recipe'} epochs, seed {seed}: {runs[-1]['test_accuracy']:.4f} "
                f"in {runs[-1]['seconds']:.1f} s",
                file=sys.stderr,
            )
        rows.append(
            {
                "epochs": epochs or trained.epochs,
                "median_seconds": statistics.median(run["seconds"] for run in runs),
                "median_test_accuracy": statistics.median(run["test_accuracy"] for run in runs),
                "runs": runs,
            }
        )
    print(f"\n{'epochs':>6s} {'median s':>9s} {'median test acc':>16s}  per seed")
    for row in rows:
        each = ", ".join(f"{run['test_accuracy']:.4f}/{run['seconds']:.0f}s" for run in row["runs"])
        print(f"{row['epochs']:6d} {row['median_seconds']:9.1f} {row['median_test_accuracy']:16.4f}  {each}")
    for target in TARGETS if dataset == "mnist" else ():  # MNIST's goals
        reached = [row for row in rows if row["median_test_accuracy"] >= target]
        fastest = min(reached, key=lambda row: row["median_seconds"]) if reached else None
        verdict = f"{fastest['median_seconds']:.1f} s ({fastest['epochs']} epochs)" if fastest else "not reached"
        print(f"time to >= {target:.2%} (median of {seeds} seeds): {verdict}")
    result = {
        "benchmark": "time to accuracy",
        "arch": arch,
        "dataset": dataset,
        "recipe": {key: value for key, value in vars(trained).items() if key != "epochs"},
        "precision": resolved_precision(trained.precision, torch.device("cpu")),  # "auto" as it trained
        "validation_split": DataConfig().validation_split if arguments.command else VALIDATION_SPLIT,
        "measured": "digitcnn train, process start to exit" if arguments.command else "load_data + fit, in process",
        "seeds": seeds,
        "train_examples": 60000 if limit is None else limit,
        "budgets": rows,
        **machine(),
    }
    command_name = "-".join(
        ["command", *([dataset] if dataset != "mnist" else []), *([arguments.arch] if arguments.arch else [])]
    )
    name = command_name if arguments.command else arch
    write_result(arguments.out or f"benchmarks/results/time_to_accuracy-{name}.json", result, arguments.tiny)


if __name__ == "__main__":
    main()
