"""Numbers, not just digits (issue 17): numbers of 2-6 MNIST digits laid side by side at four spacings, each
rendered three ways, read through the same `read_images` as `digitcnn predict`. Reports, per spacing and render,
the share of whole numbers read exactly and the per-digit accuracy; single digits through the new path beside
today's (`preprocess` -> `predict`); and the time of a 4,000 x 3,000 photo of a 6-digit number and of a
140 x 140 digit. Deterministic for a given seed.

Spacings are horizontal distances between the boxes of two neighbours' inks (pixels above half intensity), at
MNIST's scale: a gap of g px leaves g empty columns between the boxes, touching boxes share an edge, and
overlapping by k px share k columns. Slanted digits' strokes may meet at any of these spacings; the table says
how many numbers hold ink that does (`inks_touch`: fewer connected blobs than digits). Each digit is also scaled
by 0.85-1 and moved up to 2 px off the baseline. Blobs of digits that touch are read whole by the shipped strip
reader too (`digitcnn/strips.py`, trained on numbers of MNIST's first 54,000 training digits only); `--no-strips`
reads as before it, by the search's cuts alone.

    .venv/bin/python -m benchmarks.numbers                 # MNIST's test digits: the reported figures
    .venv/bin/python -m benchmarks.numbers --split train   # the last 6,000 training digits: tune on these
    .venv/bin/python -m benchmarks.numbers --split train --set digit_cost=3   # ...a knob of SegmentConfig
    .venv/bin/python -m benchmarks.numbers --tiny          # the CI smoke run
    .venv/bin/python -m benchmarks.numbers --timings-only  # the two read times alone, on a quiet machine
"""

import argparse
import dataclasses
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import machine, write_result
from benchmarks.user_style import canvas_drawing, paper_photo, scan
from digitcnn import load_data, load_model, predict
from digitcnn.files import file_sha256
from digitcnn.images import load_image
from digitcnn.preprocess import preprocess
from digitcnn.recognize import read_images, strip_weights
from digitcnn.rejection import REJECT
from digitcnn.segment import DEFAULTS, SegmentConfig
from digitcnn.strip_training import scaled_digit
from digitcnn.strokes import label_components

SPACINGS = {"wide gaps": (6, 12), "tight gaps": (1, 3), "touching": (0, 0), "overlapping 1-3 px": (-3, -1)}
INK = 128  # a pixel above half intensity is ink when spacings are measured
BASELINE_JITTER = 2  # px at MNIST's scale, up or down
SMALLEST_SCALE = 0.85  # digits are written at 85-100% of MNIST's size


def compose(digits: list[np.ndarray], spacing: tuple[int, int], rng) -> np.ndarray:
    """Digits (28x28 uint8, bright ink) side by side on one dark strip, as float ink in [0, 1]."""
    placed = []  # (image, top)
    for digit in digits:
        image = scaled_digit(digit, rng.uniform(SMALLEST_SCALE, 1.0))
        jitter = int(rng.integers(-BASELINE_JITTER, BASELINE_JITTER + 1))
        top = 2 + BASELINE_JITTER + round((28 - image.shape[0]) / 2) + jitter
        placed.append((image, top))
    height = 32 + 2 * BASELINE_JITTER
    lefts = [0]
    for (previous, previous_top), (image, top) in zip(placed[:-1], placed[1:], strict=True):
        separation = int(rng.integers(spacing[0], spacing[1] + 1))
        lefts.append(lefts[-1] + offset_for(previous, previous_top, image, top, separation))
    width = max(left + image.shape[1] for left, (image, _) in zip(lefts, placed, strict=True))
    shift = max(0, -min(lefts))
    strip = np.zeros((height, width + shift), np.float32)
    for left, (image, top) in zip(lefts, placed, strict=True):
        window = strip[top : top + image.shape[0], left + shift : left + shift + image.shape[1]]
        np.maximum(window, image, out=window)
    return strip


def offset_for(left_image, left_top, right_image, right_top, separation: int) -> int:
    """How far right of the left digit's first column the right digit starts, so that `separation` empty
    columns lie between their inks' boxes (0: the boxes meet; negative: they share that many columns)."""
    del left_top, right_top  # the boxes are measured whatever the rows: a spacing is a horizontal distance
    left_columns = np.flatnonzero(left_image.max(axis=0) * 255 > INK)
    right_columns = np.flatnonzero(right_image.max(axis=0) * 255 > INK)
    return int(left_columns[-1]) + 1 + separation - int(right_columns[0])


def paper(strip: np.ndarray, rng) -> bytes:
    """Dark ink on white paper, 2-5x MNIST's scale, as a greyscale PNG."""
    scale = rng.uniform(2, 5)
    margin = int(rng.integers(20, 60))
    ink = scaled(strip, scale)
    page = np.ones((ink.shape[0] + 2 * margin, ink.shape[1] + 2 * margin))
    page[margin:-margin, margin:-margin] -= 0.9 * ink
    return encoded(Image.fromarray((page * 255).astype(np.uint8), "L"), "PNG")


def photo(strip: np.ndarray, rng) -> bytes:
    """A phone photo of the number on a page: 3-7x MNIST's scale, off-centre on a larger page, lit from one side,
    noisy, tinted, as JPEG."""
    ink = scaled(strip, rng.uniform(3, 7))
    height, width = int(ink.shape[0] * rng.uniform(2, 4)), int(ink.shape[1] * rng.uniform(1.2, 1.8))
    return encoded(Image.fromarray(photographed(ink, height, width, rng), "RGB"), "JPEG", int(rng.integers(60, 90)))


def photographed(ink: np.ndarray, height: int, width: int, rng) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    rows, columns = np.ogrid[0:height, 0:width]
    light = (0.9 - 0.25 * (np.cos(angle) * columns + np.sin(angle) * rows) / max(height, width)).astype(np.float32)
    page = np.clip(light + rng.normal(0, 0.02, (height, width)).astype(np.float32), 0, 1)
    top, left = int(rng.integers(0, height - ink.shape[0])), int(rng.integers(0, width - ink.shape[1]))
    page[top : top + ink.shape[0], left : left + ink.shape[1]] *= 1 - 0.85 * ink
    tint = np.array([1.0, 0.97, 0.9], np.float32)  # warm indoor light
    return (np.clip(page[..., None] * tint, 0, 1) * 255).astype(np.uint8)


def canvas(strip: np.ndarray, rng) -> bytes:
    """The page's canvas: strokes in a dark colour on a transparent 840x280 background, as RGBA PNG."""
    scale = min(7.0, 0.9 * 840 / strip.shape[1], 0.9 * 280 / strip.shape[0])
    alpha = (scaled(strip, scale) * 255).astype(np.uint8)
    colour = tuple(int(value) for value in rng.integers(0, 80, 3))
    layer = Image.new("RGBA", (alpha.shape[1], alpha.shape[0]), (*colour, 255))
    layer.putalpha(Image.fromarray(alpha))
    drawing = Image.new("RGBA", (840, 280), (0, 0, 0, 0))
    where = (int(rng.integers(0, 841 - alpha.shape[1])), int(rng.integers(0, 281 - alpha.shape[0])))
    drawing.alpha_composite(layer, where)
    return encoded(drawing, "PNG")


RENDERS = {"paper (grey PNG)": paper, "phone photo (RGB JPEG)": photo, "canvas (RGBA PNG)": canvas}


def scaled(ink: np.ndarray, scale: float) -> np.ndarray:
    size = (round(ink.shape[1] * scale), round(ink.shape[0] * scale))
    image = Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255


def encoded(image: Image.Image, kind: str, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **({"quality": quality} if kind == "JPEG" else {}))
    return buffer.getvalue()


def edit_distance(read: str, truth: str) -> int:
    row = list(range(len(truth) + 1))
    for i, character in enumerate(read, 1):
        previous, row[0] = row[0], i
        for j, expected in enumerate(truth, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (character != expected))
    return row[-1]


def numbers_table(model, images, labels, count: int, rng, config: SegmentConfig = DEFAULTS) -> dict:
    rows = {}
    for spacing_name, spacing in SPACINGS.items():
        for render_name, render in RENDERS.items():
            truths, files, touching = [], [], 0
            for _ in range(count):
                chosen = rng.choice(len(images), int(rng.integers(2, 7)), replace=False)
                truths.append("".join(str(label) for label in labels[chosen]))
                strip = compose(list(images[chosen]), spacing, rng)
                touching += label_components(strip * 255 > INK)[1].shape[0] < len(chosen)
                files.append(render(strip, rng))
            texts = [reading.text for reading in read_images(model, files, config=config)]
            exact = float(np.mean([text == truth for text, truth in zip(texts, truths, strict=True)]))
            errors = sum(edit_distance(text, truth) for text, truth in zip(texts, truths, strict=True))
            digits = sum(len(truth) for truth in truths)
            count_right = float(np.mean([len(text) == len(truth) for text, truth in zip(texts, truths, strict=True)]))
            row = {
                "numbers": count,
                "exact": round(exact, 4),
                "count_right": round(count_right, 4),
                "digit_accuracy": round(max(0.0, 1 - errors / digits), 4),
                "inks_touch": round(touching / count, 4),
            }
            rows[f"{spacing_name} / {render_name}"] = row
            print(
                f"{spacing_name:20s} {render_name:24s} {row['exact']:8.4f} {row['digit_accuracy']:8.4f} "
                f"{row['count_right']:8.4f} {row['inks_touch']:8.4f}",
                flush=True,
            )
    return rows


def singles_table(model, images, labels, rng, config: SegmentConfig = DEFAULTS) -> dict:
    """Single digits through today's path (load_image -> preprocess -> predict) and through read_images."""
    styles = {
        "MNIST as it is (28x28 PNG)": lambda digit, rng: encoded(Image.fromarray(digit), "PNG"),
        "scan (greyscale PNG)": scan,
        "photo of a page (RGB JPEG)": paper_photo,
        "canvas drawing (RGBA PNG)": canvas_drawing,
    }
    rows = {}
    for name, render in styles.items():
        files = [render(digit, rng) for digit in images]
        old = predict(model, np.stack([preprocess(load_image(data)) for data in files])).argmax(axis=1)
        new = np.array([-1 if r.label is None else r.label for r in read_images(model, files, config=config)])
        row = {
            "digits": len(files),
            "old_path": round(float((old == labels).mean()), 4),
            "new_path": round(float((new == labels).mean()), 4),
        }
        row["points_lost"] = round(100 * (row["old_path"] - row["new_path"]), 2)
        rows[name] = row
        print(
            f"{name:30s} old {row['old_path']:.4f}  new {row['new_path']:.4f}  lost {row['points_lost']:+.2f}p",
            flush=True,
        )
    return rows


def timings(model, images, labels, seed: int, repeats: int, config: SegmentConfig = DEFAULTS) -> dict:
    """Milliseconds (median) to read a 4,000 x 3,000 photo of a 6-digit number and a 140x140 digit PNG. Drawn
    from a generator of their own, so a full run and --timings-only time the same two images."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), 6, replace=False)
    strip = compose(list(images[chosen]), SPACINGS["tight gaps"], rng)
    ink = scaled(strip, 300 / 28)  # digits about 300 px tall, a number about half the photo's width
    big = encoded(Image.fromarray(photographed(ink, 3000, 4000, rng), "RGB"), "JPEG", 85)
    small = encoded(Image.fromarray(255 - images[chosen[0]]).resize((140, 140), Image.Resampling.BICUBIC), "PNG")
    result = {}
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        torch.set_num_threads(threads)
        cases = (("photo_4000x3000_6_digits_ms", big, repeats), ("digit_140x140_ms", small, 10 * repeats))
        for name, data, times in cases:
            read_images(model, [data], config=config)  # warm
            spent = []
            for _ in range(times):
                started = time.perf_counter()
                read_images(model, [data], config=config)
                spent.append(1000 * (time.perf_counter() - started))
            result[f"{name}_{threads}_threads"] = round(statistics.median(spent), 1)
    big_text = read_images(model, [big], config=config)[0].text
    result["photo_read"] = big_text
    result["photo_truth"] = "".join(str(label) for label in labels[chosen])
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="run folder or model file (default: the shipped model)")
    parser.add_argument(
        "--split",
        choices=("test", "train"),
        default="test",
        help="MNIST's test digits (the reported figures, looked at once) or the last 6,000 "
        "training digits (the validation split: the ones to tune segmentation on)",
    )
    parser.add_argument("--numbers", type=int, default=300, help="numbers per spacing and render")
    parser.add_argument("--singles", type=int, default=10_000, help="single digits per style, old path vs new")
    parser.add_argument("--repeats", type=int, default=10, help="timed reads of the photo (x10 of the small digit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="10 numbers per cell, 50 single digits: checks it runs")
    parser.add_argument(
        "--timings-only", action="store_true", help="only the two read times, into numbers-timings.json"
    )
    parser.add_argument("--no-strips", action="store_true", help="without the strip reader: the search's cuts alone")
    parser.add_argument("--strips", default=None, help="another strip reader's .safetensors (a candidate to compare)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a SegmentConfig knob (tune on --split train)"
    )
    parser.add_argument("--out", default=None, help="default: benchmarks/results/numbers[-train].json")
    arguments = parser.parse_args()
    count, singles = (10, 50) if arguments.tiny else (arguments.numbers, arguments.singles)
    kinds = {field.name: field.type for field in dataclasses.fields(SegmentConfig)}
    knobs = dict(setting.partition("=")[::2] for setting in arguments.set)
    if unknown := [name for name in knobs if kinds.get(name) not in (int, float)]:
        parser.error(f"--set takes a number knob of SegmentConfig, not {', '.join(unknown)}")
    try:
        knobs = {name: kinds[name](value) for name, value in knobs.items()}
    except ValueError as error:
        parser.error(f"--set: {error}")
    config = dataclasses.replace(DEFAULTS, read_blobs=not arguments.no_strips, **knobs)
    model = load_model(arguments.model)
    if arguments.strips:
        model.strip_weights = Path(arguments.strips)
    strips = None if arguments.no_strips else file_sha256(strip_weights(model))[:12]
    (x_train, y_train), (x_test, y_test) = load_data()
    images, labels = (x_test, y_test) if arguments.split == "test" else (x_train[-6000:], y_train[-6000:])
    rng = np.random.default_rng(arguments.seed)
    facts = machine()  # before the timings try other thread counts
    started = time.perf_counter()
    if arguments.timings_only:
        result = {"benchmark": "numbers: read times", "model": str(arguments.model or "shipped"),
                  "timings": timings(model, images, labels, arguments.seed, arguments.repeats, config),
                  "strip_reader": strips, **facts}  # fmt: skip
        write_result(arguments.out or "benchmarks/results/numbers-timings.json", result, tiny=arguments.tiny)
        return
    print(f"{'spacing':20s} {'render':24s} {'exact':>8s} {'digits':>8s} {'count':>8s} {'touch':>8s}")
    result = {
        "benchmark": "numbers: several digits in one image",
        "model": str(arguments.model or "shipped"),
        "split": arguments.split,
        "seed": arguments.seed,
        "strip_reader": strips,  # the shipped reader's sha256, first 12 digits; None: --no-strips
        "knobs": knobs,
        "several_digits_share": REJECT.several_digits_share,  # a model with the "not a digit" output judges by it
        "numbers": numbers_table(model, images, labels, count, rng, config),
        "single_digits": singles_table(model, images[:singles], labels[:singles], rng, config),
        "timings": timings(model, images, labels, arguments.seed, 2 if arguments.tiny else arguments.repeats, config),
        **facts,
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = arguments.out or f"benchmarks/results/numbers{'' if arguments.split == 'test' else '-train'}.json"
    write_result(out, result, tiny=arguments.tiny)
    print(f"{result['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
