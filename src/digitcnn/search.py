"""Which of a layout's candidate digits are the number: segmentation by recognition (LeCun et al. 1998, §VI).

Each line's pieces are walked left to right; a path through them takes each piece into exactly one digit or
leaves it out, and is worth the sum of its digits' log-probabilities (the classifier's belief that the crop is
that digit; with a not-a-digit output, its mass is belief in none of them) plus the search's weights in
SegmentConfig (a digit much shorter than its line's tallest ink pays for it, and so does one whose blobs stand
apart). Dynamic programming keeps the best path: as many candidates as the line has, each seen once.
"""

import math

import numpy as np

from .segment import DEFAULTS, Layout, Piece, SegmentConfig, short_digit_cost, side_by_side_cost

DIGITS = 10  # the digit classes are a model's first ten; any output after them is not a digit


def digit_scores(logits: np.ndarray, config: SegmentConfig, not_a_digit: np.ndarray | None = None) -> np.ndarray:
    """Each candidate's worth as one digit: the log-probability that it is one, plus digit_bonus. A model with
    the "not a digit" output says so itself (not_a_digit: that output's probability for each candidate).
    Without it, the probability is a logistic of the largest digit logit (at temperature 1): a well-formed
    digit's top logit stands near the model's ceiling, while two digits squeezed into one crop, or half of one,
    fall short of it even when their softmax is confident."""
    if not_a_digit is not None:
        return np.log(np.maximum(1.0 - not_a_digit.astype(np.float64), 1e-12)) + config.digit_bonus
    top = logits[:, :DIGITS].max(axis=1).astype(np.float64)
    log_one_digit = -np.logaddexp(0.0, -(top - config.digit_logit) / config.logit_scale)  # log sigmoid
    return log_one_digit + config.digit_bonus


def best_digits(
    layout: Layout, logits: np.ndarray, config: SegmentConfig = DEFAULTS, not_a_digit: np.ndarray | None = None
) -> list[list[int]]:
    """For each line that holds a digit, top to bottom: the indices (into layout.inputs and `logits`) of its
    digits, left to right."""
    scores = digit_scores(logits, config, not_a_digit)
    starting: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for line, first, end, index in layout.candidates:
        starting.setdefault((line, first), []).append((end, index))
        scores[index] -= short_digit_cost(layout.boxes[index], layout, line, config)
        scores[index] -= side_by_side_cost(layout, line, first, end, config)
    found = []
    for line in range(len(layout.lines)):
        digits = line_digits(layout, line, starting, scores, config, leave_out_digits=False)
        if digits is None:  # no reading takes every digit-sized piece: the best that leaves some out
            digits = line_digits(layout, line, starting, scores, config, leave_out_digits=True)
        if digits:
            found.append(digits)
    return found


def line_digits(
    layout: Layout, line: int, starting: dict, scores: np.ndarray, config: SegmentConfig, leave_out_digits: bool
) -> list[int] | None:
    """The best path through one line's pieces, as its digits' input indices; None when no path reaches the
    line's end. A piece too short to be a digit may be left out (a stray mark); a digit-sized one only when
    leave_out_digits allows it."""
    pieces, line_height = layout.lines[line], layout.line_heights[line]
    best = [0.0] + [-math.inf] * len(pieces)
    came_from: list[tuple[int, int | None]] = [(0, None)] * (len(pieces) + 1)
    last_digit: list[int | None] = [None] * (len(pieces) + 1)  # the previous digit on each best path
    for first, piece in enumerate(pieces):
        if best[first] == -math.inf:
            continue
        if leave_out_digits or piece.bottom - piece.top < config.min_height * line_height:
            size = max(piece.right - piece.left, piece.bottom - piece.top) / line_height
            skipped = best[first] - config.skip_cost * size
            if skipped > best[first + 1]:
                best[first + 1], came_from[first + 1] = skipped, (first, None)
                last_digit[first + 1] = last_digit[first]
        for end, index in starting.get((line, first), ()):
            previous = last_digit[first]
            if previous is not None and stacked(layout.boxes[previous], layout.boxes[index], config):
                continue
            cuts = cut_strokes(pieces[first:end])
            score = best[first] + scores[index] - config.cut_cost * cuts / 2
            if score > best[end]:
                best[end], came_from[end], last_digit[end] = score, (first, index), index
    if best[-1] == -math.inf:
        return None
    digits, position = [], len(pieces)
    while position > 0:
        position, index = came_from[position]
        if index is not None:
            digits.append(index)
    return digits[::-1]


def stacked(left_box: list[int], right_box: list[int], config: SegmentConfig) -> bool:
    """Whether two neighbouring digits would share most of their columns: a number's digits stand side by side,
    so those are one digit's pieces (a 0 with a stroke through it, a 4's two strokes), not two digits."""
    shared = min(left_box[2], right_box[2]) - max(left_box[0], right_box[0])
    narrower = min(left_box[2] - left_box[0], right_box[2] - right_box[0])
    return shared > config.max_digit_overlap * narrower


def cut_strokes(group: list[Piece]) -> float:
    """Strokes crossed by the cuts that separate this group from the rest of its components: each cut is
    counted by the digit on either side of it, hence the half in its cost."""
    parts = {(piece.component, piece.part) for piece in group}
    crossed = sum(piece.left_cost for piece in group if (piece.component, piece.part - 1) not in parts)
    return crossed + sum(piece.right_cost for piece in group if (piece.component, piece.part + 1) not in parts)
