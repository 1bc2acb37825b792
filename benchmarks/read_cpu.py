"""CPU time per image read, as one of the API's reader processes spends it: `read_images` on one load-benchmark
image at a time (MNIST test digits as 140x140 dark-on-light PNGs), onnxruntime's twin of the shipped model, one
thread. `benchmarks.load` needs an idle machine; CPU time does not, so this one can be run beside other work.
Reports the least disturbed pass (the closest to the true cost on a shared machine) and the median pass.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.read_cpu                  # 9 passes over 200 images
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.read_cpu --model RUN_DIR  # a reject model reads whole images too
    .venv/bin/python -m benchmarks.read_cpu --tiny                             # the CI smoke run
"""

import argparse
import statistics
import time

from benchmarks.common import machine, write_result
from benchmarks.load import digit_pngs
from digitcnn.inference import load_model
from digitcnn.recognize import read_images

WARM_UP = 20  # reads before timing: lazy imports and onnxruntime's first allocations are not a request's cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=None, help="run folder or weights; default: the shipped model")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--passes", type=int, default=9)
    parser.add_argument("--tiny", action="store_true", help="20 images, 2 passes: checks the script runs")
    parser.add_argument("--out", default="benchmarks/results/read_cpu.json")
    arguments = parser.parse_args()
    if arguments.tiny:
        arguments.images, arguments.passes = 20, 2
    bodies, _ = digit_pngs(arguments.images)
    model = load_model(arguments.model, onnx_twin=True)
    for body in bodies[:WARM_UP]:
        read_images(model, [body])
    milliseconds = []
    for _ in range(arguments.passes):
        started = time.process_time()
        for body in bodies:
            read_images(model, [body])
        milliseconds.append(1000 * (time.process_time() - started) / len(bodies))
    result = {
        "benchmark": "CPU per read_images call, one image at a time (process time)",
        "model": arguments.model or "shipped",
        "runtime": type(model).__name__,
        "images": len(bodies),
        "passes": arguments.passes,
        "cpu_ms_per_read": {"best": round(min(milliseconds), 3), "median": round(statistics.median(milliseconds), 3)},
        "image": "MNIST test digits, 140x140 dark-on-light PNG, as benchmarks.load sends them",
        **machine(),
    }
    print(f"CPU ms per read: best {min(milliseconds):.3f}, median {statistics.median(milliseconds):.3f}")
    write_result(arguments.out, result, tiny=arguments.tiny)


if __name__ == "__main__":
    main()
