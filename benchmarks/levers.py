"""The speed levers, one at a time, against a reference in the same process: training steps per second of
the `fast` and `seed` networks with and without channels_last, of the `fast` and `best` networks with their
forward pass in bfloat16 and in float32, of `lean` against `fast` (in the precision `auto` trains in on this CPU,
with each one's forward FLOPs per image), of `lean` with and without `train.keep_freed_memory` (what the
training commands set; it cannot be undone within a process, so each side runs in a fresh one), and Dropout's
mask cost with nn.Dropout against ByteDropout. Sides alternate each round and the median is reported.

    .venv/bin/python -m benchmarks.levers            # 30 s to 3 minutes, by the CPU
    .venv/bin/python -m benchmarks.levers --tiny     # the CI smoke run
"""

import argparse
import math
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import machine, write_result
from digitcnn import build_model, load_data
from digitcnn.models import ByteDropout
from digitcnn.train import autocast, keep_freed_memory, resolved_precision


def training_rate(
    arch: str, channels_last: bool, precision: str, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> float:
    """Images per second of plain SGD steps (forward, backward, update) on real digits."""
    torch.manual_seed(0)
    model = build_model(arch)
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(batch, targets):
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(batch.device, precision):
            loss = F.cross_entropy(model(batch), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(images[:batch_size], labels[:batch_size])  # warm-up: oneDNN picks its kernels
    started = time.perf_counter()
    for start in range(0, len(images) - batch_size + 1, batch_size):
        step(images[start : start + batch_size], labels[start : start + batch_size])
    return (len(images) // batch_size * batch_size) / (time.perf_counter() - started)


def rate_in_fresh_process(keep_memory: bool, arch: str, precision: str, images: int) -> float:
    """`training_rate` in a process of its own, with or without `keep_freed_memory`, which only process exit
    undoes."""
    command = [sys.executable, "-m", "benchmarks.levers", "--rate-of", arch, precision, "--images", str(images)]
    command += ["--keep-freed-memory"] if keep_memory else []
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])


def forward_mflops(arch: str) -> float:
    """Millions of floating-point operations (two per multiply-add) in one image's forward pass through the
    network's convolutions and linear layers, counted on the layers' real output shapes."""
    model = build_model(arch).eval()
    multiply_adds = 0

    def count(module, inputs, output):
        nonlocal multiply_adds
        if isinstance(module, nn.Conv2d):
            multiply_adds += output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            multiply_adds += output.numel() * module.in_features

    layers = [module for module in model.modules() if isinstance(module, nn.Conv2d | nn.Linear)]
    handles = [layer.register_forward_hook(count) for layer in layers]
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for handle in handles:
        handle.remove()
    return 2 * multiply_adds / 1e6


def mask_milliseconds(layer: nn.Module, shape: tuple[int, ...], repeats: int) -> float:
    features = torch.ones(shape)
    layer.train()
    layer(features)
    started = time.perf_counter()
    for _ in range(repeats):
        layer(features)
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8192, help="timed images per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/levers.json")
    parser.add_argument("--rate-of", nargs=2, metavar=("ARCH", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--keep-freed-memory", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.tiny:  # one timed step of each case
        arguments.images, arguments.rounds = 128, 1
    if arguments.keep_freed_memory:
        keep_freed_memory()
    (x_train, y_train), _ = load_data()
    images = torch.tensor(x_train[: arguments.images, None], dtype=torch.float32) / 255
    labels = torch.tensor(y_train[: arguments.images], dtype=torch.long)
    if arguments.rate_of:  # one side of the memory lever, in its own process
        print(training_rate(arguments.rate_of[0], True, arguments.rate_of[1], images, labels, 128))
        return
    native = resolved_precision("auto", torch.device("cpu"))

    cases = {
        f"{arch} {layout}": (arch, layout == "channels_last", "float32")
        for arch in ("fast", "seed")
        for layout in ("channels_last", "contiguous")
    }
    cases |= {"fast bfloat16": ("fast", True, "bfloat16")}  # against "fast channels_last", float32
    # The default network's lever, in the precision the default trains in here.
    lean_against = "fast bfloat16" if native == "bfloat16" else "fast channels_last"
    cases |= {f"lean {native}": ("lean", True, native)}
    cases |= {f"best {precision}": ("best", True, precision) for precision in ("bfloat16", "float32")}
    # The seed network trains ~11x slower than `fast`, `best` ~3.5x (levers.json; 13x and 6x its FLOPs per image):
    # fewer images keep each case's time alike.
    fewer_images = {"seed": max(256, arguments.images // 8), "best": max(256, arguments.images // 3)}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    masks: dict[str, list[float]] = {"nn.Dropout": [], "ByteDropout": []}
    # The seed network's first dropout sees (batch 128, 128 channels, 22, 22).
    mask_shape, repeats = (128, 128, 22, 22), 3 if arguments.tiny else 20
    for round_index in range(arguments.rounds):
        for name, (arch, channels_last, precision) in cases.items():
            data = images[: fewer_images.get(arch, len(images))]
            rates[name].append(training_rate(arch, channels_last, precision, data, labels[: len(data)], 128))
            print(f"round {round_index + 1}: {name:22s} {rates[name][-1]:8.1f} images/s", file=sys.stderr)
        masks["nn.Dropout"].append(mask_milliseconds(nn.Dropout(0.25), mask_shape, repeats))
        masks["ByteDropout"].append(mask_milliseconds(ByteDropout(0.25), mask_shape, repeats))
        for keep in (False, True):
            name = f"lean {native}, freed memory {'kept' if keep else 'returned'}"
            rates.setdefault(name, []).append(rate_in_fresh_process(keep, "lean", native, len(images)))
            print(f"round {round_index + 1}: {name:22s} {rates[name][-1]:8.1f} images/s", file=sys.stderr)

    medians = {name: statistics.median(values) for name, values in rates.items()}
    mask_medians = {name: statistics.median(values) for name, values in masks.items()}
    print(f"\n{'training, batch 128':24s} {'images/s':>10s}")
    for name, value in medians.items():
        print(f"{name:24s} {value:10.1f}")
    ratios = {arch: medians[f"{arch} channels_last"] / medians[f"{arch} contiguous"] for arch in ("fast", "seed")}
    print("channels_last speed-up: " + ", ".join(f"{arch} {ratio:.2f}x" for arch, ratio in ratios.items()))
    bfloat16_speedup = {
        "fast": medians["fast bfloat16"] / medians["fast channels_last"],
        "best": medians["best bfloat16"] / medians["best float32"],
    }
    print(
        "bfloat16 forward pass speed-up: "
        + ", ".join(f"{arch} {ratio:.2f}x" for arch, ratio in bfloat16_speedup.items())
    )
    mflops = {arch: round(forward_mflops(arch), 2) for arch in ("fast", "lean", "best", "seed")}
    lean_speedup = medians[f"lean {native}"] / medians[lean_against]
    print(
        f"lean against fast ({native}): {lean_speedup:.2f}x the images/s, {mflops['lean']:.2f} against "
        f"{mflops['fast']:.2f} MFLOP per image (forward)"
    )
    memory_speedup = medians[f"lean {native}, freed memory kept"] / medians[f"lean {native}, freed memory returned"]
    print(f"freed memory kept rather than returned (keep_freed_memory): {memory_speedup:.2f}x, lean {native}")
    print(
        f"dropout mask on {mask_shape}: nn.Dropout {mask_medians['nn.Dropout']:.1f} ms, "
        f"ByteDropout {mask_medians['ByteDropout']:.1f} ms"
    )
    result = {
        "benchmark": "speed levers",
        "rounds": arguments.rounds,
        "training_images_per_second": medians,
        "channels_last_speedup": ratios,
        "bfloat16_speedup": bfloat16_speedup,
        "lean_speedup": lean_speedup,
        "lean_precision": native,
        "keep_freed_memory_speedup": memory_speedup,
        "forward_mflops_per_image": mflops,
        "dropout_mask_milliseconds": mask_medians,
        "dropout_mask_shape": mask_shape,
        **machine(),
    }
    write_result(arguments.out, result, tiny=arguments.tiny)


if __name__ == "__main__":
    main()
