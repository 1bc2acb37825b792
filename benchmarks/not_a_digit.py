"""Not a digit: the share of non-digits a model answers "not a digit", family by family, beside the share of
digits it flags and its test accuracy. Every image is written as a file (dark ink on light paper, PNG) and read
through the same `read_images` as `digitcnn predict` (load_image -> preprocess -> predict).

Held out (never drawn by the generator that trains the "not a digit" output, nondigits.py):
- letters in fonts never used in training: matplotlib's STIX and Computer Modern (training uses DejaVu only);
- hand-drawn symbols: arrows, stars, check marks, hearts, smileys, spirals, lightning bolts, houses, envelopes;
Never trained but read on the validation split too, as the held-out symbols' stand-in: pictograms (trees, suns,
fish, keys, cups, boats, flowers) drawn as they are.
Held-out digits, family trained: MNIST *test* digits side by side (2-4, as the numbers issue photographs them)
and cut in half. Held-in: the generator's own families at a seed training never uses.
Digits: MNIST's test set as the model sees it (no file), and the `benchmarks.user_style` renders of test digits.
Goals (issue 16): >= 90% of every held-out family flagged, <= 1% of digits flagged. Deterministic for a seed.

    .venv/bin/python -m digitcnn train --reject --out runs/reject   # rejection is opt-in (TrainConfig.reject)
    .venv/bin/python -m benchmarks.not_a_digit --model runs/reject  # a run folder
    .venv/bin/python -m benchmarks.not_a_digit                  # the shipped model (no "not a digit" output)
    .venv/bin/python -m benchmarks.not_a_digit --tiny           # the CI smoke run
    .venv/bin/python -m benchmarks.not_a_digit --split validation --model RUN   # for tuning: see --split
"""

import argparse
import dataclasses
import io
import time

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.common import machine, write_result
from benchmarks.user_style import STYLES
from digitcnn import load_data, load_model, predict
from digitcnn.config import DataConfig
from digitcnn.nondigits import CANVAS, FAMILIES, FONT_FOLDER, LATIN, glyph
from digitcnn.recognize import read_images
from digitcnn.rejection import NOT_A_DIGIT, REJECT, flagged, rejects
from digitcnn.report import validation_slice
from digitcnn.segment import DEFAULTS, SegmentConfig

HELD_OUT_FONTS = [
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
    "cmmi10.ttf",
]
# Symbols no training font draws (fixed before any model was measured on them): maths, card suits, music, stars.
# Left out as digit-like or too close to training's own symbols: the integral and dagger (a 1), the partial (a 6),
# the infinity (an 8 on its side), the sum (the trained Sigma).
HELD_OUT_SYMBOLS = "±÷√∀∃∈∩∪⊂≠≤≥♠♣♥♦★☆♪♫¤∧∨∠⊥≈≡∝ℵ⌘∇"
SYMBOL_FONTS = ["STIXGeneral.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBol.ttf"]  # cmsy10 draws boxes for them
HELD_IN_SEED = 7_777_777  # the generator's families at a seed no training pool uses (those take the run's seed)


def page(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """A drawing (ink 1 on 0) as dark ink on light, slightly grainy paper, at 0.8-1.6x its size, as PNG."""
    factor = rng.uniform(0.8, 1.6)
    size = (max(1, round(ink.shape[1] * factor)), max(1, round(ink.shape[0] * factor)))
    ink = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)) / 255
    ink = np.pad(ink, 30)
    paper = 0.95 - 0.85 * ink + rng.normal(0, 0.015, ink.shape)
    buffer = io.BytesIO()
    Image.fromarray((np.clip(paper, 0, 1) * 255).astype(np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def ellipse(
    centre: tuple[float, float],
    radii: tuple[float, float],
    points: int = 30,
    turn: tuple[float, float] = (0, 2 * np.pi),
) -> list[tuple[float, float]]:
    """Points along an ellipse, or along the arc of it from turn[0] to turn[1] (radians)."""
    t = np.linspace(*turn, points)
    return list(zip(centre[0] + radii[0] * np.cos(t), centre[1] + radii[1] * np.sin(t), strict=True))


def polyline_symbol(name: str, rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """The strokes of a hand-drawn symbol in unit coordinates, before jitter."""
    if name == "arrow":
        return [[(0.1, 0.5), (0.9, 0.5)], [(0.65, 0.28), (0.9, 0.5), (0.65, 0.72)]]
    if name == "star":
        corners = [(0.5 + 0.45 * np.sin(k * 4 * np.pi / 5), 0.5 - 0.45 * np.cos(k * 4 * np.pi / 5)) for k in range(6)]
        return [corners]
    if name == "check mark":
        return [[(0.1, 0.55), (0.38, 0.85), (0.9, 0.12)]]
    if name == "heart":
        t = np.linspace(0, 2 * np.pi, 40)
        x, y = 16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return [list(zip(0.5 + x / 36, 0.45 - y / 36, strict=True))]
    if name == "smiley":
        return [
            ellipse((0.5, 0.5), (0.42, 0.42), 40),
            [(0.36, 0.38), (0.37, 0.39)],
            [(0.63, 0.38), (0.64, 0.39)],
            ellipse((0.5, 0.52), (0.22, 0.18), 12, (0.2 * np.pi, 0.8 * np.pi)),
        ]
    if name == "spiral":
        t = np.linspace(0, rng.uniform(4, 6) * np.pi, 60)
        radius = 0.05 + 0.4 * t / t[-1]
        return [list(zip(0.5 + radius * np.cos(t), 0.5 + radius * np.sin(t), strict=True))]
    if name == "lightning bolt":
        return [[(0.62, 0.02), (0.3, 0.52), (0.62, 0.5), (0.34, 0.98)]]
    if name == "house":
        return [[(0.2, 0.45), (0.2, 0.95), (0.8, 0.95), (0.8, 0.45), (0.2, 0.45), (0.5, 0.1), (0.8, 0.45)]]
    if name == "envelope":
        return [[(0.08, 0.25), (0.92, 0.25), (0.92, 0.8), (0.08, 0.8), (0.08, 0.25), (0.5, 0.55), (0.92, 0.25)]]
    return pictogram(name)


def pictogram(name: str) -> list[list[tuple[float, float]]]:
    """The strokes of a pictogram, drawn as the hand-drawn symbols are: the validation split's stand-in for them."""
    if name == "tree":
        return [
            [(0.5, 0.05), (0.15, 0.7), (0.85, 0.7), (0.5, 0.05)],
            [(0.45, 0.7), (0.45, 0.95), (0.55, 0.95), (0.55, 0.7)],
        ]
    if name == "sun":
        rays = [(np.cos(a), np.sin(a)) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
        return [
            ellipse((0.5, 0.5), (0.2, 0.2)),
            *[[(0.5 + 0.28 * x, 0.5 + 0.28 * y), (0.5 + 0.45 * x, 0.5 + 0.45 * y)] for x, y in rays],
        ]
    if name == "fish":
        return [
            ellipse((0.42, 0.5), (0.3, 0.17)),
            [(0.72, 0.5), (0.95, 0.3), (0.95, 0.7), (0.72, 0.5)],
            [(0.25, 0.45), (0.26, 0.46)],
        ]
    if name == "key":
        return [
            ellipse((0.22, 0.5), (0.15, 0.15)),
            [(0.37, 0.5), (0.92, 0.5)],
            [(0.8, 0.5), (0.8, 0.62)],
            [(0.9, 0.5), (0.9, 0.62)],
        ]
    if name == "cup":
        return [
            [(0.2, 0.2), (0.25, 0.85), (0.65, 0.85), (0.7, 0.2)],
            ellipse((0.68, 0.5), (0.15, 0.15), 12, (-np.pi / 2, np.pi / 2)),
        ]
    if name == "boat":
        return [
            [(0.1, 0.65), (0.9, 0.65), (0.75, 0.85), (0.25, 0.85), (0.1, 0.65)],
            [(0.5, 0.65), (0.5, 0.1)],
            [(0.5, 0.12), (0.8, 0.55), (0.5, 0.55)],
        ]
    if name == "flower":
        petals = [
            ellipse((0.5 + 0.18 * np.cos(a), 0.35 + 0.18 * np.sin(a)), (0.09, 0.09), 16)
            for a in np.linspace(0, 2 * np.pi, 5, endpoint=False)
        ]
        return [ellipse((0.5, 0.35), (0.08, 0.08), 16), *petals, [(0.5, 0.55), (0.5, 0.97)], [(0.5, 0.8), (0.7, 0.7)]]
    raise ValueError(name)


SYMBOLS = ("arrow", "star", "check mark", "heart", "smiley", "spiral", "lightning bolt", "house", "envelope")
# Never drawn by the generator that trains and never the held-out symbols: read on the validation split, so a
# change to the training data can be judged on drawings it was not shown (its own families no longer tell).
PICTOGRAMS = ("tree", "sun", "fish", "key", "cup", "boat", "flower")


def hand_drawn_symbol(rng: np.random.Generator, names: tuple[str, ...] = SYMBOLS) -> np.ndarray:
    name = names[rng.integers(len(names))]
    strokes = polyline_symbol(name, rng)
    # Arrows point anywhere; the others are drawn upright, give or take.
    angle = rng.uniform(0, 2 * np.pi) if name == "arrow" else rng.normal(0, 0.2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    stretch = np.array([rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)])
    image = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(image)
    width = int(rng.integers(3, 12))
    for stroke in strokes:
        points = (np.asarray(stroke) - 0.5) @ rotation.T * stretch + rng.normal(0, 0.015, (len(stroke), 2))
        points = (points * 0.8 + 0.5) * CANVAS
        draw.line([tuple(point) for point in points], fill=255, width=width, joint="curve")
    return np.asarray(image, dtype=np.float32) / 255


def held_out_letter(rng: np.random.Generator) -> np.ndarray:
    font = str(FONT_FOLDER / HELD_OUT_FONTS[rng.integers(len(HELD_OUT_FONTS))])
    return glyph(LATIN[rng.integers(len(LATIN))], font, rng)


def held_out_symbol(rng: np.random.Generator) -> np.ndarray:
    font = str(FONT_FOLDER / SYMBOL_FONTS[rng.integers(len(SYMBOL_FONTS))])
    return glyph(HELD_OUT_SYMBOLS[rng.integers(len(HELD_OUT_SYMBOLS))], font, rng)


def digits_side_by_side(rng, digits) -> np.ndarray:
    """2-4 MNIST test digits in a row, as the numbers issue builds a number, close enough that `preprocess`
    frames them together: touching, up to 3 px apart or overlapping by up to 3 px (at MNIST's scale). Farther
    apart, `preprocess` keeps the largest digit alone, and it is rightly read as that digit."""
    count = int(rng.integers(2, 5))
    pieces = [digits[index].astype(np.float32) / 255 for index in rng.integers(len(digits), size=count)]
    pieces = [piece[:, np.flatnonzero(piece.max(axis=0) > 0.1)] for piece in pieces]
    gaps = rng.integers(-3, 4, size=count - 1)
    width = sum(piece.shape[1] for piece in pieces) + int(np.clip(gaps, 0, None).sum())
    row = np.zeros((32, width), dtype=np.float32)
    x = 0
    for index, piece in enumerate(pieces):
        y = int(rng.integers(0, 5))
        row[y : y + 28, x : x + piece.shape[1]] = np.maximum(row[y : y + 28, x : x + piece.shape[1]], piece)
        x += piece.shape[1] + (int(gaps[index]) if index < count - 1 else 0)
    return row


def families(x_test, y_test) -> dict:
    """name -> (held out? True: read on the test split only; "validation": never trained, read on both; "digits";
    False: the generator's own), and a function of a random generator that draws one ink image."""
    held_in = {name: FAMILIES[name] for name in ("scribble", "dash", "shape", "outline", "letter", "blob", "doodle")}
    return {
        "letters, held-out fonts (STIX, Computer Modern)": (True, held_out_letter),
        "symbols, held-out fonts (STIX: maths, suits, ...)": (True, held_out_symbol),
        "hand-drawn symbols (arrows, stars, checks, ...)": (True, hand_drawn_symbol),
        "MNIST test digits side by side (2-4, gaps -3..3 px)": ("digits", lambda rng: digits_side_by_side(rng, x_test)),
        "MNIST test digits cut in half": ("digits", lambda rng: FAMILIES["cut digit"](rng, x_test, y_test)),
        **{
            f"generator: {name}": (False, lambda rng, draw=draw: draw(rng, x_test, y_test))
            for name, draw in held_in.items()
        },
        # Last, so the families above keep their seeds (each family's generator is seeded by its place).
        "pictograms, never trained (trees, suns, fish, ...)": (
            "validation",
            lambda rng: hand_drawn_symbol(rng, PICTOGRAMS),
        ),
    }


def read_family(model, draw, count: int, rng, config: SegmentConfig = DEFAULTS) -> dict:
    files = []
    while len(files) < count:
        ink = draw(rng)
        if ink is not None and ink.max() > 0.1:  # matplotlib's DejaVu Display fonts draw most letters blank
            files.append(page(ink, rng))
    readings = read_images(model, files, names=[str(index) for index in range(count)], config=config)
    errors = [reading.error for reading in readings]
    # Of those answered, the ones read as several digits: the several-digit rule's misses, not the detector's.
    numbers = sum(reading.error is None and len(reading.text.replace("\n", "")) > 1 for reading in readings)
    return {
        "flagged": round(errors.count(NOT_A_DIGIT) / count, 4),
        "no_digit_found": round(errors.count("no digit found") / count, 4),
        "answered_as_a_digit": round(sum(error is None for error in errors) / count, 4),
        "answered_as_several_digits": round(numbers / count, 4),
        "images": count,
    }


def read_right(readings, labels) -> np.ndarray:
    """Which of these readings of single digits answered the digit drawn (`labels` may run longer)."""
    return np.array([reading.label == label for reading, label in zip(readings, labels, strict=False)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="run folder or model file (default: the shipped model)")
    parser.add_argument("--per-family", type=int, default=1000, help="non-digit images per family")
    parser.add_argument("--per-style", type=int, default=2000, help="test digits per user_style render")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="40 images per family and style: checks the script runs")
    parser.add_argument("--no-strips", action="store_true", help="without the strip reader: the search's cuts alone")
    parser.add_argument(
        "--split",
        choices=["test", "validation"],
        default="test",
        help="validation: the digits are the training data's validation part and the held-out families are left "
        "out, so a generator or a threshold can be tuned without looking at what the goals are judged on",
    )
    parser.add_argument("--out", default="benchmarks/results/not_a_digit.json")
    arguments = parser.parse_args()
    config = dataclasses.replace(DEFAULTS, read_blobs=not arguments.no_strips)
    per_family, per_style = (40, 40) if arguments.tiny else (arguments.per_family, arguments.per_style)
    model = load_model(arguments.model)
    (x_train, y_train), (x_test, y_test) = load_data()
    if arguments.split == "validation":
        x_test, y_test = validation_slice(x_train, y_train, DataConfig().validation_split)
    started = time.perf_counter()

    probabilities = predict(model, x_test)
    digit_part = probabilities[:, :10]
    mnist = {
        "test_accuracy": round(float((probabilities.argmax(axis=1) == y_test).mean()), 4),
        "test_accuracy_ten_digits": round(float((digit_part.argmax(axis=1) == y_test).mean()), 4),
        "test_digits_flagged": round(float(flagged(probabilities, model.config).mean()), 4),
    }
    print(f"model rejects: {rejects(model.config)}; threshold {getattr(model.config, 'not_a_digit_threshold', None)}")
    print(f"MNIST {arguments.split}: accuracy {mnist['test_accuracy']:.4f}, flagged {mnist['test_digits_flagged']:.2%}")

    # A gated model's reader alone reads each digit too: a flagged digit it reads wrong costs nothing (a wrong
    # answer became "not a digit"); one it reads right is a digit lost to the rejection.
    reader = model.members[0] if model.config.arch == "gated" else None
    print(f"{'digits, as people send them':52s} {'flagged':>8s} {'accuracy':>9s} {'lost':>6s}")
    styles = {}
    for style, render in STYLES.items():
        rng = np.random.default_rng([arguments.seed, len(style)])
        files = [render(digit, rng) for digit in x_test[:per_style]]
        names = [str(index) for index in range(len(files))]
        readings = read_images(model, files, names=names, config=config)
        is_flagged = np.array([reading.error == NOT_A_DIGIT for reading in readings])
        accuracy = float(read_right(readings, y_test).mean())
        styles[style] = {"flagged": round(float(is_flagged.mean()), 4), "accuracy": round(accuracy, 4)}
        lost = None
        if reader is not None:
            alone = read_right(read_images(reader, files, names=names, config=config), y_test)
            lost = float((is_flagged & alone).mean())
            styles[style]["reader_accuracy"] = round(float(alone.mean()), 4)
            styles[style]["flagged_read_right"] = round(lost, 4)
        styles[style]["digits"] = len(readings)
        lost_column = "" if lost is None else f"{lost:6.2%}"
        print(f"{style:52s} {is_flagged.mean():8.2%} {accuracy:9.4f} {lost_column}", flush=True)

    print(f"{'non-digits':52s} {'flagged':>8s} {'as digit':>9s} {'no digit':>9s} {'several':>8s}")
    rows = {}
    for index, (name, (held_out, draw)) in enumerate(families(x_test, y_test).items()):
        if held_out is True and arguments.split == "validation":
            continue
        rng = np.random.default_rng([arguments.seed, HELD_IN_SEED, index])
        row = read_family(model, draw, per_family, rng, config)
        rows[name] = {"held_out": held_out, **row}
        print(
            f"{name:52s} {row['flagged']:8.2%} {row['answered_as_a_digit']:9.2%} {row['no_digit_found']:9.2%} "
            f"{row['answered_as_several_digits']:8.2%}",
            flush=True,
        )

    result = {
        "benchmark": "not a digit: non-digits flagged, digits flagged",
        "model": str(arguments.model or "shipped"),
        "not_a_digit_threshold": getattr(model.config, "not_a_digit_threshold", None),
        "several_digits_share": REJECT.several_digits_share,
        "temperature": model.config.temperature,
        "seed": arguments.seed,
        "split": arguments.split,
        "strip_reader": not arguments.no_strips,
        "mnist": mnist,
        "user_styles": styles,
        "families": rows,
        "goals": {"held_out_families_flagged_at_least": 0.9, "digits_flagged_at_most": 0.01},
        "columns": {
            "flagged_read_right": "a gated model's digits flagged that its reader alone reads right (digits lost)",
            "answered_as_several_digits": "of answered_as_a_digit, the images read as several digits (a number)",
        },
        "seconds": round(time.perf_counter() - started, 1),
        **machine(),
    }
    write_result(arguments.out, result, tiny=arguments.tiny)


if __name__ == "__main__":
    main()
