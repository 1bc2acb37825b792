"""People's own digits, simulated from MNIST's test set: each test digit re-rendered the way users' images
arrive, encoded to a file format, and read through the same `read_images` as `digitcnn predict` (load_image ->
preprocess -> predict). Accuracy per style beside the clean test accuracy. Deterministic for a given seed.

    .venv/bin/python -m benchmarks.user_style                # the shipped model, all 10,000 test digits
    .venv/bin/python -m benchmarks.user_style --digits validation --limit 1000  # for tuning `preprocess`
    .venv/bin/python -m benchmarks.user_style --tiny         # the CI smoke run
"""

import argparse
import io
import sys
import time

import numpy as np
from PIL import Image, ImageFilter

from benchmarks.common import machine, write_result
from digitcnn import load_data, load_model, predict
from digitcnn.nondigits import skeleton
from digitcnn.recognize import read_images


def scaled(digit: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64) / 255


def encoded(image: Image.Image, kind: str, quality: int = 80) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **({"quality": quality} if kind == "JPEG" else {}))
    return buffer.getvalue()


def paper_photo(digit, rng, stroke: str = "normal") -> bytes:
    """Dark ink on light paper, scaled up and off-centre on a larger page, lit from one side, noisy, tinted
    RGB, JPEG-compressed: a phone photo of a digit on a page."""
    side = int(rng.integers(80, 200))
    ink = scaled(digit, side)
    if stroke == "fine":  # the same digit written with a fine pen: its skeleton, drawn about 1 MNIST pixel wide
        pen = Image.fromarray((skeleton(ink > 0.5) * 255).astype(np.uint8))
        pen = pen.filter(ImageFilter.MaxFilter(max(1, side // 28) | 1))
        ink = np.asarray(pen.filter(ImageFilter.GaussianBlur(side / 56)), dtype=np.float64) / 255
    elif stroke != "normal":  # MNIST's own strokes eroded or dilated by one MNIST pixel a side
        size = max(3, side // 28 * 2 + 1)
        kind = ImageFilter.MinFilter(size) if stroke == "thin" else ImageFilter.MaxFilter(size)
        ink = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).filter(kind), dtype=np.float64) / 255
    height, width = side * 3, side * 4
    angle = rng.uniform(0, 2 * np.pi)
    rows, columns = np.mgrid[0:height, 0:width] / max(height, width)
    light = 0.9 - 0.25 * (np.cos(angle) * columns + np.sin(angle) * rows)
    page = np.clip(light + rng.normal(0, 0.02, (height, width)), 0, 1)
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    page[top : top + side, left : left + side] *= 1 - 0.85 * ink
    tint = np.array([1.0, 0.97, 0.9])  # warm indoor light
    rgb = (np.clip(page[..., None] * tint, 0, 1) * 255).astype(np.uint8)
    return encoded(Image.fromarray(rgb, "RGB"), "JPEG", quality=int(rng.integers(60, 90)))


def canvas_drawing(digit, rng) -> bytes:
    """A browser canvas: strokes in some colour on a transparent 280x280 background, saved as RGBA PNG."""
    alpha = (scaled(digit, 200) * 255).astype(np.uint8)
    canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    colour = tuple(int(value) for value in rng.integers(0, 80, 3))
    layer = Image.new("RGBA", (200, 200), (*colour, 255))
    layer.putalpha(Image.fromarray(alpha))
    canvas.alpha_composite(layer, (int(rng.integers(0, 80)), int(rng.integers(0, 80))))
    return encoded(canvas, "PNG")


def scan(digit, rng) -> bytes:
    """A flat greyscale scan: dark ink on white, 300 dpi-ish, PNG."""
    side = int(rng.integers(100, 160))
    page = 1 - 0.9 * scaled(digit, side)
    big = np.ones((side + 80, side + 80))
    big[40 : 40 + side, 40 : 40 + side] = page
    return encoded(Image.fromarray((big * 255).astype(np.uint8), "L"), "PNG")


STYLES = {
    "photo of a page (RGB JPEG, gradient, noise)": lambda digit, rng: paper_photo(digit, rng),
    "photo, fine pen (1 px strokes)": lambda digit, rng: paper_photo(digit, rng, "fine"),
    "photo, eroded strokes (thin parts lost)": lambda digit, rng: paper_photo(digit, rng, "thin"),
    "photo, thick marker": lambda digit, rng: paper_photo(digit, rng, "thick"),
    "canvas drawing (RGBA PNG)": canvas_drawing,
    "scan (greyscale PNG)": scan,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="run folder or model file (default: the shipped model)")
    parser.add_argument("--limit", type=int, default=10_000, help="test digits per style")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--digits",
        choices=("test", "validation"),
        default="test",
        help="MNIST's test digits (the reported figure) or the shipped model's validation split, "
        "the last 6,000 training digits (the ones to tune preprocessing on)",
    )
    parser.add_argument("--tiny", action="store_true", help="50 digits per style: checks the script runs")
    parser.add_argument("--out", default="benchmarks/results/user_style.json")
    arguments = parser.parse_args()
    limit = 50 if arguments.tiny else arguments.limit
    model = load_model(arguments.model)
    (x_train, y_train), (x_test, y_test) = load_data()
    if arguments.digits == "validation":
        x_test, y_test = x_train[-6000:], y_train[-6000:]
    x_test, y_test = x_test[:limit], y_test[:limit]
    clean = float((predict(model, x_test).argmax(axis=1) == y_test).mean())
    rows = {"clean MNIST test digits": {"accuracy": round(clean, 4), "unreadable": 0}}
    print(f"{'style':46s} {'accuracy':>9s} {'vs clean':>9s} {'no digit':>9s}")
    print(f"{'clean MNIST test digits':46s} {clean:9.4f}")
    started = time.perf_counter()
    for style, render in STYLES.items():
        rng = np.random.default_rng([arguments.seed, len(style)])
        files = [render(digit, rng) for digit in x_test]
        readings = read_images(model, files, names=[f"{index}" for index in range(len(files))])
        labels = np.array([-1 if reading.label is None else reading.label for reading in readings])
        accuracy = float((labels == y_test).mean())
        unreadable = int((labels == -1).sum())
        rows[style] = {
            "accuracy": round(accuracy, 4),
            "points_below_clean": round(100 * (clean - accuracy), 2),
            "unreadable": unreadable,
        }
        print(f"{style:46s} {accuracy:9.4f} {100 * (accuracy - clean):+8.2f}p {unreadable:9d}", flush=True)
    result = {
        "benchmark": "people's own digits, simulated",
        "model": str(arguments.model or "shipped"),
        "digits": arguments.digits,
        "digits_per_style": limit,
        "seed": arguments.seed,
        "styles": rows,
        "seconds": round(time.perf_counter() - started, 1),
        **machine(),
    }
    write_result(arguments.out, result, tiny=arguments.tiny)
    print(f"{result['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
