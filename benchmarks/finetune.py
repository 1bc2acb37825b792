"""Learning a person's hand: writer styles the shipped model reads worst, made from MNIST digits it never trained on
(its validation split, the last 6,000 training digits), each fine-tuned on 10 samples per digit through the real
`finetune_run` and measured on that style's other samples, before and after, with MNIST's test accuracy after.

    .venv/bin/python -m benchmarks.finetune                 # every style, seeds 0-2: 10 a digit taught, 50 read
    .venv/bin/python -m benchmarks.finetune --styles        # how the base reads each style, and the hand undone
    .venv/bin/python -m benchmarks.finetune --tiny          # the CI smoke run
"""

import argparse
import dataclasses
import io
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.common import machine, write_result
from digitcnn import load_data, load_model
from digitcnn.config import FinetuneConfig, parse_knob
from digitcnn.finetune import finetune_run, hand_of
from digitcnn.folders import read_samples
from digitcnn.recognize import read_images, strip_weights
from digitcnn.strip_training import StripTrainingConfig, load_strip_reader, validation_accuracy
from digitcnn.writer import Writer

SIDE = 112  # each digit drawn at 4x MNIST's size, where a bar or a flag can be as wide as the digit's own strokes
VALIDATION = 6000  # the shipped model's held-out split: the last 6,000 training digits


def ink(digit: np.ndarray) -> Image.Image:
    """An MNIST digit at SIDE px, ink bright on black, for drawing on."""
    return Image.fromarray(digit).resize((SIDE, SIDE), Image.Resampling.BICUBIC)


def sheared(image: Image.Image, shear: float) -> Image.Image:
    """Slanted by `shear` (x moves by shear * (y - centre)): > 0 leans right, < 0 leans left (a backhand)."""
    return image.transform(image.size, Image.Transform.AFFINE, (1, shear, -shear * SIDE / 2, 0, 1, 0))


def squeezed(image: Image.Image, width: float) -> Image.Image:
    """`width` of the digit's own width, height unchanged: a narrow hand."""
    narrow = image.resize((max(4, round(SIDE * width)), SIDE), Image.Resampling.BICUBIC)
    canvas = Image.new("L", image.size)
    canvas.paste(narrow, ((SIDE - narrow.width) // 2, 0))
    return canvas


def ink_box(image: Image.Image) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero(np.asarray(image) > 96)
    return columns.min(), rows.min(), columns.max(), rows.max()


def pen(image: Image.Image) -> int:
    """The digit's stroke width in px: ink area over skeleton-ish length, about area / (2 x box height)."""
    left, top, right, bottom = ink_box(image)
    area = int((np.asarray(image) > 96).sum())
    return int(np.clip(area / (2.2 * (bottom - top + 1)), 5, 14))


def crossbar(image: Image.Image) -> Image.Image:
    """A 7 with a bar across its stem at mid-height, as much of Europe writes it."""
    left, top, right, bottom = ink_box(image)
    row = top + int(0.55 * (bottom - top))
    stem = np.flatnonzero(np.asarray(image)[row] > 96)
    centre = stem.mean() if len(stem) else (left + right) / 2
    half = 0.3 * (right - left + 1)
    image = image.copy()
    ImageDraw.Draw(image).line([(centre - half, row), (centre + half, row)], fill=255, width=pen(image))
    return image


def flag(image: Image.Image) -> Image.Image:
    """A 1 with a long flag from its top down to the left, and a foot."""
    left, top, right, bottom = ink_box(image)
    height = bottom - top + 1
    columns = np.flatnonzero(np.asarray(image)[top + 2] > 96)
    x = columns.mean() if len(columns) else (left + right) / 2
    image = image.copy()
    draw = ImageDraw.Draw(image)
    draw.line([(x, top), (x - 0.4 * height, top + 0.35 * height)], fill=255, width=pen(image))
    foot = bottom - 2
    columns = np.flatnonzero(np.asarray(image)[foot] > 96)
    x = columns.mean() if len(columns) else x
    draw.line([(x - 0.25 * height, foot), (x + 0.25 * height, foot)], fill=255, width=pen(image))
    return image


def european(image: Image.Image, label: int) -> Image.Image:
    return crossbar(image) if label == 7 else flag(image) if label == 1 else image


def slashed(image: Image.Image) -> Image.Image:
    """A 0 with a slash through it from upper right to lower left, past its ring, as programmers write it."""
    left, top, right, bottom = ink_box(image)
    overhang_x, overhang_y = 0.15 * (right - left + 1), 0.08 * (bottom - top + 1)
    image = image.copy()
    ImageDraw.Draw(image).line(
        [(right + overhang_x, top - overhang_y), (left - overhang_x, bottom + overhang_y)], fill=255, width=pen(image)
    )
    return image


def engineer(image: Image.Image, label: int) -> Image.Image:
    return slashed(image) if label == 0 else european(image, label)


# Each style is one writer's hand: every digit of theirs drawn so.
STYLES = {
    "backhand (leaning left)": lambda image, label: sheared(image, -0.55),
    "very slanted (leaning right)": lambda image, label: sheared(image, 0.75),
    "European 1 and 7 (flag and foot, crossbar)": european,
    "slashed 0 (as programmers write it)": lambda image, label: slashed(image) if label == 0 else image,
    "engineer's hand (slashed 0, European 1 and 7)": engineer,
    "narrow (half width)": lambda image, label: squeezed(image, 0.5),
    "backhand, narrow": lambda image, label: sheared(squeezed(image, 0.5), -0.4),
    "slanted, narrow": lambda image, label: squeezed(sheared(image, 0.6), 0.5),
    "European, backhand, narrow": lambda image, label: sheared(squeezed(european(image, label), 0.5), -0.4),
    "very narrow (a third of the width)": lambda image, label: squeezed(image, 0.35),
}


def drawn(digit: np.ndarray, label: int, style: str) -> bytes:
    """The digit in `style`, dark ink on white paper, as a PNG file."""
    image = STYLES[style](ink(digit), label)
    buffer = io.BytesIO()
    Image.fromarray(255 - np.asarray(image)).save(buffer, "PNG")
    return buffer.getvalue()


def style_digits(x, y, style: str, taught: int, read: int, seed: int):
    """(taught files, their labels, read files, their labels) from validation digits: disjoint, drawn with `seed`."""
    generator = np.random.default_rng([seed, zlib.crc32(style.encode())])  # a style's draws: its own
    taught_files, taught_labels, read_files, read_labels = [], [], [], []
    for label in range(10):
        chosen = generator.permutation(np.flatnonzero(y == label))[: taught + read]
        files = [drawn(x[index], label, style) for index in chosen]
        taught_files += files[:taught]
        read_files += files[taught:]
        taught_labels += [label] * taught
        read_labels += [label] * (len(files) - taught)
    return taught_files, np.array(taught_labels), read_files, np.array(read_labels)


def accuracy(model, files: list[bytes], labels: np.ndarray) -> float:
    readings = read_images(model, files)
    answers = np.array([-1 if reading.label is None else reading.label for reading in readings])
    return float((answers == labels).mean())


def write_folder(folder: Path, files: list[bytes], labels: np.ndarray) -> None:
    for index, (data, label) in enumerate(zip(files, labels, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        (folder / str(label) / f"{index}.png").write_bytes(data)


def measure(base, x, y, style: str, seed: int, config: FinetuneConfig, arguments, reference=()) -> dict:
    """One draw of a style's digits: read by the base, then fine-tuned on and read again (with --styles, only the
    hand `finetune` would find in them, against `reference`: the training digits and labels)."""
    taught_files, taught_labels, read_files, read_labels = style_digits(
        x, y, style, arguments.taught, arguments.read, seed
    )
    run = {
        "seed": seed,
        "read_before": round(accuracy(base, read_files, read_labels), 4),
        "samples_taught": len(taught_labels),
        "samples_read": len(read_labels),
    }
    with tempfile.TemporaryDirectory() as folder:
        write_folder(Path(folder) / "samples", taught_files, taught_labels)
        if arguments.styles:  # the hand `finetune` would undo: estimated as it estimates it, nothing taught
            hand = hand_of(read_samples(Path(folder) / "samples"), *reference) or Writer()
            return run | {"writer_slant": round(hand.slant, 3), "writer_width": round(hand.width, 3)}
        config = dataclasses.replace(config, samples=str(Path(folder) / "samples"), seed=seed)
        started, cpu_started = time.perf_counter(), time.process_time()
        results = finetune_run(Path(folder) / "run", config, verbose=False)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        tuned = load_model(Path(folder) / "run", onnx_twin=True)
        numbers = strip_numbers(tuned.strip_weights, x, y, arguments.numbers) if tuned.strip_weights else None
    return run | {
        "read_after": round(accuracy(tuned, read_files, read_labels), 4),
        "writer_slant": round(results["writer_slant"], 3),  # the hand it undid (0 and 1: none)
        "writer_width": round(results["writer_width"], 3),
        "mnist_test_after": results["test_accuracy"],
        "mnist_validation_after": results["validation_accuracy"],
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "train_seconds": results["train_seconds"],
        "strip_reader_numbers_after": numbers,
    }


def strip_numbers(weights, x, y, count: int) -> dict:
    """The strip reader at `weights` on everyone else's numbers: `count` made of plain validation digits per
    spacing, read whole (the share read exactly), as strip_training measures the shipped one."""
    return validation_accuracy(load_strip_reader(weights), x, y, StripTrainingConfig(), count)


def summary(runs: list[dict]) -> dict:
    """A style over its draws: mean reads, the lowest MNIST accuracy after and the slowest fine-tune; each run kept."""
    row = {key: runs[0][key] for key in ("samples_taught", "samples_read")}
    row["read_before"] = round(statistics.mean(run["read_before"] for run in runs), 4)
    if "read_after" in runs[0]:
        row["read_after"] = round(statistics.mean(run["read_after"] for run in runs), 4)
        row["mnist_test_after"] = min(run["mnist_test_after"] for run in runs)
        row["mnist_validation_after"] = min(run["mnist_validation_after"] for run in runs)
        row["seconds"] = max(run["seconds"] for run in runs)
        row["cpu_seconds"] = max(run["cpu_seconds"] for run in runs)
        if all(run["strip_reader_numbers_after"] for run in runs):
            row["strip_reader_numbers_after"] = {
                spacing: round(statistics.mean(run["strip_reader_numbers_after"][spacing] for run in runs), 4)
                for spacing in runs[0]["strip_reader_numbers_after"]
            }
    return row | {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="the base: run folder or model file (default: the shipped one)")
    parser.add_argument("--taught", type=int, default=10, help="samples per digit fine-tuned on")
    parser.add_argument("--read", type=int, default=50, help="other samples per digit read before and after")
    parser.add_argument("--styles", action="store_true", help="only read every style with the base model")
    parser.add_argument("--only", help="only the styles whose names start so")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="a FinetuneConfig knob other than its default, for tuning (repeatable)",
    )
    parser.add_argument(
        "--seeds",
        type=lambda text: [int(seed) for seed in text.split(",")],
        default=[0, 1, 2],
        help="each seed draws other digits to teach and read (comma-separated): one draw of 10 samples per digit "
        "moves a style's read-after by several points",
    )
    parser.add_argument(
        "--numbers", type=int, default=500, help="plain numbers per spacing the tuned strip reader reads after"
    )
    parser.add_argument("--tiny", action="store_true", help="one style, 3 taught and 5 read per digit, 5 steps")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/finetune.json (-styles.json)")
    arguments = parser.parse_args()
    overrides = dict(setting.split("=", 1) for setting in arguments.set)
    overrides = {name: parse_knob(FinetuneConfig, name, value) for name, value in overrides.items()}
    if arguments.tiny:
        arguments.taught, arguments.read, arguments.numbers = 3, 5, 20
        overrides["steps"], overrides["strip_steps"] = 5, 5
    base = load_model(arguments.model, onnx_twin=True)  # as `digitcnn predict` loads it
    (x_train, y_train), _ = load_data()
    x, y = x_train[-VALIDATION:], y_train[-VALIDATION:]
    config = dataclasses.replace(FinetuneConfig(base=arguments.model, holdout=0.0), **overrides)
    styles = [name for name in STYLES if arguments.only is None or name.startswith(arguments.only)]
    styles = styles[:1] if arguments.tiny else styles
    rows, load_before = {}, os.getloadavg()
    seeds = [0] if arguments.tiny else arguments.seeds
    print(
        f"{'style':46s} {'seed':>4s} {'before':>7s} {'after':>7s} {'MNIST val.':>10s} {'MNIST test':>10s} "
        f"{'seconds':>8s}"
    )
    for style in styles:
        runs = []
        for seed in seeds:
            run = measure(base, x, y, style, seed, config, arguments, (x_train, y_train))
            runs.append(run)
            print(
                f"{style:46s} {seed:4d} {run['read_before']:7.4f} {run.get('read_after', float('nan')):7.4f} "
                f"{run.get('mnist_validation_after', float('nan')):10.4f} "
                f"{run.get('mnist_test_after', float('nan')):10.4f} {run.get('seconds', float('nan')):8.1f} "
                f"(CPU {run.get('cpu_seconds', float('nan')):.1f}) hand: slant {run['writer_slant']:+.2f}, "
                f"width x{run['writer_width']:.2f}",
                flush=True,
            )
        rows[style] = summary(runs)
    if not arguments.styles:
        print(
            f"\n{'style, mean over seeds ' + ','.join(map(str, seeds)):46s} {'before':>7s} {'after':>7s} "
            f"{'lowest MNIST test':>18s}"
        )
        for style, row in rows.items():
            print(f"{style:46s} {row['read_before']:7.4f} {row['read_after']:7.4f} {row['mnist_test_after']:18.4f}")
    result = {
        "benchmark": "fine-tuning on a writer's own samples",
        "base": str(arguments.model or "shipped"),
        "digits": "MNIST validation split (last 6,000 training digits), redrawn per style",
        "finetune": dataclasses.asdict(dataclasses.replace(config, samples=None)),
        "samples_taught_per_digit": arguments.taught,
        "samples_read_per_digit": arguments.read,
        "seeds": seeds,
        "strip_reader_numbers_before": None
        if arguments.styles
        else strip_numbers(strip_weights(base), x, y, arguments.numbers),
        "styles": rows,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        **machine(),
    }
    out = arguments.out or f"benchmarks/results/finetune{'-styles' if arguments.styles else ''}.json"
    write_result(out, result, tiny=arguments.tiny)
    print(f"load average (1 min) {result['load_average_before_after']}", file=sys.stderr)


if __name__ == "__main__":
    main()
