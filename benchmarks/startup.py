"""How long the command takes to answer, as a person at a terminal waits for it: `digitcnn --help`, and
`digitcnn predict one.png` (a 140x140 MNIST test digit) with the shipped model, both through its ONNX twin (the
default when onnxruntime is installed) and through PyTorch (the twin set aside). Each is a fresh process, run
`--runs` times in turn; medians and ranges of wall time are reported.

    .venv/bin/python -m benchmarks.startup            # 10 runs of each
    .venv/bin/python -m benchmarks.startup --tiny     # 2 runs of each: checks the script runs
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks.common import machine, write_result
from digitcnn.data import load_data
from digitcnn.inference import SHIPPED_MODEL

GOALS = {"help": 0.3, "predict, ONNX twin": 1.0}


def wall_seconds(command: list[str], environment: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=environment)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="fresh processes per command")
    parser.add_argument("--tiny", action="store_true", help="2 runs of each: checks the script runs")
    parser.add_argument("--out", default="benchmarks/results/startup.json")
    arguments = parser.parse_args()
    runs = 2 if arguments.tiny else arguments.runs
    command = [str(Path(sys.executable).with_name("digitcnn"))]
    if not Path(command[0]).exists():
        command = [sys.executable, "-m", "digitcnn"]
    _, (x_test, _) = load_data("mnist")
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "one.png"
        Image.fromarray(255 - x_test[0]).resize((140, 140)).save(image)
        # The shipped weights without their twin beside them: `predict --model` that file reads with PyTorch.
        bare = Path(folder) / "weights" / SHIPPED_MODEL.name
        bare.parent.mkdir()
        shutil.copyfile(SHIPPED_MODEL, bare)
        cases = {
            "help": [*command, "--help"],
            "predict, ONNX twin": [*command, "predict", str(image)],
            "predict, PyTorch": [*command, "predict", "--model", str(bare), str(image)],
        }
        environment = dict(os.environ)
        for case in cases.values():  # warm the page cache: the first run of anything reads it from disk
            subprocess.run(case, check=True, capture_output=True, env=environment)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, case in cases.items():
                times[name].append(wall_seconds(case, environment))
    summary = {
        name: {
            "median_seconds": round(statistics.median(values), 3),
            "min_seconds": round(min(values), 3),
            "max_seconds": round(max(values), 3),
            "goal_seconds": GOALS.get(name),
        }
        for name, values in times.items()
    }
    for name, figures in summary.items():
        goal = f"  (goal <= {figures['goal_seconds']} s)" if figures["goal_seconds"] else ""
        print(
            f"{name:20s} median {figures['median_seconds']:.3f} s, {figures['min_seconds']:.3f}-"
            f"{figures['max_seconds']:.3f} s{goal}"
        )
    result = {"benchmark": "startup: wall time of a fresh digitcnn command", "runs": runs, **summary, **machine()}
    write_result(arguments.out, result, tiny=arguments.tiny)


if __name__ == "__main__":
    main()
