"""Reading a run of touching digits whole (issue 17): a small convolutional network that reads a strip of ink
left to right and is trained with CTC (Graves et al. 2006), so it needs no cut between digits that touch or
overlap. The search (search.py) still lays out the number: lines, spaced digits, digits in several pieces. What
the search may have got wrong (a blob of ink it cut, a short line it read as several digits or read leaving a
piece out) is read whole by this reader too, and the reading both networks like better is kept.

Its strips are normalized here, one way for training and reading: the ink's box, scaled to STRIP_INK rows,
framed in STRIP_HEIGHT rows with STRIP_MARGIN columns either side.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .onnx_model import open_session
from .preprocess import frame_crop
from .segment import SegmentConfig, short_digit_cost

STRIP_HEIGHT = 32  # rows of the reader's input
STRIP_INK = 24  # rows the ink's box is scaled to: MNIST's 20-px digits with room for baselines that wander
STRIP_MARGIN = 4  # empty columns either side of the ink
MAX_STRIP_WIDTH = 400  # columns: a blob wider than ~16 digits is read in the search's cuts instead
BLANK = 10  # CTC's "no digit here" class; the ten digits keep their own indices
FRAME = 2  # input columns per output frame: a narrow 1 still spans three frames, two 1s leave a blank between
METADATA_KEY = "digitcnn_strip_reader"  # the reader's config in its .safetensors, its source's hash in its .onnx


def strip_input(ink: np.ndarray) -> np.ndarray | None:
    """A blob's ink (float, bright on dark, cropped to its box) -> the reader's (STRIP_HEIGHT, width) float32
    input in [0, 1], width a multiple of FRAME; None when it is too wide to read whole."""
    ink = ink.astype(np.float32) / max(float(ink.max()), 1e-6)
    scale = STRIP_INK / ink.shape[0]
    width = max(1, round(ink.shape[1] * scale))
    if width + 2 * STRIP_MARGIN > MAX_STRIP_WIDTH:
        return None
    resized = np.asarray(Image.fromarray(ink, "F").resize((width, STRIP_INK), Image.Resampling.LANCZOS))
    total = -(-(width + 2 * STRIP_MARGIN) // FRAME) * FRAME
    strip = np.zeros((STRIP_HEIGHT, total), np.float32)
    top = (STRIP_HEIGHT - STRIP_INK) // 2
    strip[top : top + STRIP_INK, STRIP_MARGIN : STRIP_MARGIN + width] = np.clip(resized, 0, 1)
    return strip


def decode(log_probabilities: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Greedy CTC decoding of one strip's (frames, 11) log-probabilities: each digit read, left to right, as
    (its ten digits' probabilities at its surest frame, that frame's centre in the strip's input columns)."""
    best = log_probabilities.argmax(axis=1)
    digits, frame = [], 0
    while frame < len(best):
        label, end = int(best[frame]), frame + 1
        while end < len(best) and best[end] == label:
            end += 1
        if label != BLANK:
            surest = frame + int(log_probabilities[frame:end, label].argmax())
            probabilities = np.exp(log_probabilities[surest, :BLANK].astype(np.float64))
            digits.append((probabilities / probabilities.sum(), (surest + 0.5) * FRAME))
        frame = end
    return digits


def read_strips(logits, strips: list[np.ndarray]) -> list[np.ndarray]:
    """Each strip's (frames, 11) log-probabilities; `logits` maps a (N, 1, 32, W) batch to (N, W / 2, 11) logits,
    and strips of one width go through it together."""
    readings: list = [None] * len(strips)
    by_width: dict[int, list[int]] = {}
    for index, strip in enumerate(strips):
        by_width.setdefault(strip.shape[1], []).append(index)
    for indices in by_width.values():
        scores = logits(np.stack([strips[index] for index in indices])[:, None]).astype(np.float64)
        scores -= scores.max(axis=2, keepdims=True)
        log_probabilities = scores - np.log(np.exp(scores).sum(axis=2, keepdims=True))
        for index, row in zip(indices, log_probabilities, strict=True):
            readings[index] = row
    return readings


def log_likelihood(log_probabilities: np.ndarray, labels: list[int]) -> float:
    """log P(labels | strip) under CTC: the sum over every alignment of the labels to the frames (the forward
    algorithm over the labels with blanks between, Graves et al. 2006, §4.1)."""
    states = [BLANK]
    for label in labels:
        states += [label, BLANK]
    states = np.array(states)
    # A move may skip a blank between two different labels; between two equal ones the blank must be read.
    skip = np.zeros(len(states), bool)
    skip[3::2] = states[3::2] != states[1:-2:2]
    alpha = np.full(len(states), -np.inf)
    alpha[:2] = log_probabilities[0, states[:2]]
    for frame in log_probabilities[1:]:
        stay, step = alpha, np.concatenate([[-np.inf], alpha[:-1]])
        jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], alpha[:-2]]), -np.inf)
        alpha = np.logaddexp(np.logaddexp(stay, step), jump) + frame[states]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if len(states) > 1 else alpha[-1])


class OnnxStripReader:
    """The strip reader's ONNX export on onnxruntime, one thread: read without importing PyTorch. A file onnxruntime
    cannot open, or onnxruntime missing, raises ModelError."""

    def __init__(self, path: str | Path):
        self.session = open_session(Path(path), threads=1)
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.source_sha256 = json.loads(metadata.get(METADATA_KEY, "{}")).get("source_sha256")

    def logits(self, strips: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"strips": strips.astype(np.float32)})[0]

    def __call__(self, strips: list[np.ndarray]) -> list:
        return read_strips(self.logits, strips)


def reread_blobs(
    layout,
    lines: list[list[int]],
    probabilities: np.ndarray,
    read,
    classify,
    config: SegmentConfig,
) -> tuple[list[list[int]], np.ndarray]:
    """The search's digits, with each doubtful stretch read whole where that reads better. A stretch is a run of a
    line's digits that share a component the segmenter cut (digits that touch or overlap), with every piece those
    digits took, or a whole line `doubtful_line` doubts; `read` gives each stretch's CTC log-probabilities
    (strips -> (frames, 11) each). Two readings compete: the search's digits and the strip reader's (each of its
    digits cropped where it stands and given to `classify`, crops -> probability rows as `probabilities` holds
    them), each scored by `reading_score` less its digits' `short_digit_cost`. When both read one digit of the
    same ink, the classifier's stays: on a lone digit it is the better reader. The strip reader's digits become new
    inputs of the layout (crop and box) and new rows of `probabilities` (the strip reader's ten digits; "not a
    digit", if the model has it, the classifier's); returns the lines and the probabilities."""
    pieces_of = {index: layout.lines[line][first:end] for line, first, end, index in layout.candidates}
    line_of = {index: line for line, _, _, index in layout.candidates}
    groups: list[list] = []  # [line number in `lines`, first position, end position, components]
    for number, line in enumerate(lines):
        if doubtful_line(layout, line_of[line[0]], [pieces_of[index] for index in line], config.short_line):
            groups.append([number, 0, len(line), {piece.component for piece in layout.lines[line_of[line[0]]]}])
            continue
        cut_before: set[int] = set()
        for position, index in enumerate(line):
            components = {piece.component for piece in pieces_of[index]}
            cut = {piece.component for piece in pieces_of[index] if piece.parts > 1}
            if cut & cut_before and groups[-1][0] == number and groups[-1][2] == position:
                groups[-1][2], groups[-1][3] = position + 1, groups[-1][3] | components
            elif cut:
                groups.append([number, position, position + 1, components])
            cut_before = cut
    blobs = [(group, region) for group in groups if (region := blob_region(layout, group[3]))]
    if not blobs:
        return lines, probabilities
    readings = read([region[0] for _, region in blobs])
    splits = [
        split_region(layout, region, decode(log_probabilities))
        for (_, region), log_probabilities in zip(blobs, readings, strict=True)
    ]
    crops = [crop for split in splits for _, _, crop in split]
    classified = np.split(classify(crops), np.cumsum([len(split) for split in splits])[:-1]) if crops else splits
    rows, new_lines = [], [list(line) for line in lines]
    # Last stretch first: replacing one changes the positions of the digits after it, never of those before.
    for (group, _), log_probabilities, split, classified_crops in reversed(
        list(zip(blobs, readings, splits, classified, strict=True))
    ):
        number, first, end = group[:3]
        replaced = lines[number][first:end]
        taken = {piece.component for index in replaced for piece in pieces_of[index]}
        if not split or (len(split) == len(replaced) == 1 and taken == group[3]):
            continue  # one digit either way, of the same ink: the classifier reads a lone digit better
        read_probabilities = np.stack([digit_probabilities for digit_probabilities, _, _ in split])
        read_labels = read_probabilities.argmax(axis=1)
        search_labels = probabilities[replaced, :BLANK].argmax(axis=1)
        line = line_of[lines[number][0]]
        read_score = reading_score(log_probabilities, read_labels, classified_crops, config)
        read_score -= sum(short_digit_cost(box, layout, line, config) for _, box, _ in split)
        search_score = reading_score(log_probabilities, search_labels, probabilities[replaced], config)
        search_score -= sum(short_digit_cost(layout.boxes[index], layout, line, config) for index in replaced)
        if read_score <= search_score:
            continue
        classified_crops = classified_crops.copy()
        classified_crops[:, :BLANK] = read_probabilities * classified_crops[:, :BLANK].sum(axis=1, keepdims=True)
        new_lines[number][first:end] = list(range(len(layout.inputs), len(layout.inputs) + len(split)))
        for (_, box, crop), row in zip(split, classified_crops, strict=True):
            layout.inputs.append(crop)
            layout.boxes.append(box)
            rows.append(row)
    if rows:
        probabilities = np.concatenate([probabilities, np.stack(rows).astype(probabilities.dtype)])
    return new_lines, probabilities


def doubtful_line(layout, line: int, digits: list, short_line: float) -> bool:
    """Whether the search's reading of a line may have cut one digit in two or left part of it out: the line is
    at most short_line of its height wide and read as several digits, or a piece of it a third of its height
    or more is in no digit read."""
    pieces, height = layout.lines[line], layout.line_heights[line]
    taken = {(piece.component, piece.part) for pieces in digits for piece in pieces}
    left_out = [piece for piece in pieces if (piece.component, piece.part) not in taken]
    if any(max(piece.bottom - piece.top, piece.right - piece.left) >= height / 3 for piece in left_out):
        return True
    span = max(piece.right for piece in pieces) - min(piece.left for piece in pieces)
    return len(digits) >= 2 and span <= short_line * height


def reading_score(log_probabilities, labels, classified: np.ndarray, config: SegmentConfig) -> float:
    """A blob's reading as both networks see it: the strip reader's log P(labels), the classifier's log P of each
    label on that reading's crops (rows of `classified`) weighted, less a cost per digit."""
    classifier = float(np.log(np.maximum(classified[np.arange(len(labels)), labels], 1e-12)).sum())
    strip_reader = log_likelihood(log_probabilities, list(labels))
    return strip_reader + config.classifier_weight * classifier - config.digit_cost * len(labels)


def blob_region(layout, components: set[int]):
    """The ink of these components in their joint box (with the faint ink around it that belongs to no
    component, as `segment.crop` keeps it) -> (strip input, (top, left, ink, mine), scale from working pixels
    to strip columns); None when too wide to read whole."""
    boxes = layout.component_boxes[[component - 1 for component in components]]
    top, bottom = int(boxes[:, 0].min()), int(boxes[:, 1].max())
    left, right = int(boxes[:, 2].min()), int(boxes[:, 3].max())
    labels = layout.labels[top:bottom, left:right]
    mine = np.isin(labels, list(components))
    ink = np.where(mine | (labels == 0), layout.ink[top:bottom, left:right], 0)
    strip = strip_input(ink)
    if strip is None:
        return None
    return strip, (top, left, ink, mine), STRIP_INK / ink.shape[0]


def split_region(layout, region, digits):
    """Each digit read in a blob as (its probabilities, its box in the original's pixels, its 28x28 input): each
    inked column of the blob goes to the digit whose centre is nearest."""
    _, (top, left, ink, mine), scale = region
    if not digits:
        return []
    centres = np.array([(centre - STRIP_MARGIN) / scale for _, centre in digits])
    columns = np.flatnonzero(mine.any(axis=0))
    owner = np.abs(columns[:, None] - centres[None, :]).argmin(axis=1)
    x_scale, y_scale = layout.scale
    found = []
    for number, (digit_probabilities, _) in enumerate(digits):
        own = columns[owner == number]
        if len(own) == 0:  # two centres closer than a column: the digit shares its neighbour's
            own = columns[[np.abs(columns - centres[number]).argmin()]]
        x0, x1 = int(own[0]), int(own[-1]) + 1
        rows = np.flatnonzero(mine[:, x0:x1].any(axis=1))
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        piece = np.where(mine[y0:y1, x0:x1], ink[y0:y1, x0:x1], 0)
        crop = frame_crop(piece, layout.writer)
        box = [int((left + x0) * x_scale), int((top + y0) * y_scale)]
        box += [int(np.ceil((left + x1) * x_scale)), int(np.ceil((top + y1) * y_scale))]
        found.append((digit_probabilities, box, crop))
    return found
