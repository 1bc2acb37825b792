"""Where the digits of a number are: an image's ink split into lines of pieces, and the candidate digits those
pieces can make.

The ink map is computed once per image, on a working copy no larger than `SegmentConfig.working_side`. Its
connected components are the pieces. A candidate digit is a run of consecutive pieces of one line (a 5 and its
detached flag, the two strokes of a 4, a stroke broken by the light); each goes through `preprocess`'s own MNIST
normalization. Once the classifier has seen them, a component too wide for one digit, or not read as one with
confidence, is cut along seams (strokes.py) where the least ink lies, so digits that touch or overlap can come
apart, and the new runs are added. Which candidates are the digits is for the classifier to say: `search.py`
scores them and keeps the best path (segmentation by recognition, LeCun et al. 1998, §VI).
"""

import dataclasses
import itertools

import numpy as np
from PIL import Image

from .errors import NoDigitError, TooManyDigitsError
from .preprocess import MIN_CONTRAST, frame_crop, grey_levels, ink_map, otsu_threshold
from .quantiles import median
from .strokes import find_seams, label_components
from .writer import Writer


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    """Every knob of the segmentation and of the search over it; lengths are fractions of a line's height
    (the median height of its digit-sized components) unless a unit says otherwise."""

    # The image is read from a copy whose longer side is at most this (px): a digit in a 12-MP photo keeps
    # 50-100 px, more than MNIST's 20, and the ink map of a 4,000 x 3,000 photo costs a sixteenth.
    working_side: int = 1024
    # Ink at this fraction of the layout's ink threshold still joins the strong ink it touches (a faint stroke);
    # at 0.5, neighbours in tight gaps met by their faint edges (benchmarks/README.md).
    faint_ink: float = 0.7
    max_digits: int = 64  # more digits in one image are refused ("too many digits")
    # A digit stands at least this fraction of the image's shorter side, and at least min_digit_pixels of the
    # working copy: a page of specks has no digit in it, however many specks there are.
    min_digit_fraction: float = 0.03
    min_digit_pixels: int = 6
    speck_size: float = 0.15  # a piece whose longer side is under this is a speck: never a digit or part of one
    line_overlap: float = 0.5  # digit-sized components share a line when their rows overlap this much of the shorter
    stack_gap: float = 0.25  # ...or when one stands above the other, this much of the taller's height apart at most,
    stack_columns: float = 0.0  # sharing this much of the narrower's columns (0: meeting): a broken digit, a 5's flag
    min_height: float = 0.45  # a digit stands at least this tall: smaller numbers mixed in still read
    max_width: float = 1.4  # and is no wider than this, but for short marks over it: two digits side by side are
    max_inner_gap: float = 0.35  # pieces further apart than this are two digits, never one
    max_pieces: int = 6  # pieces one digit may be made of
    max_digit_overlap: float = 0.5  # of the narrower's width: neighbouring digits share fewer columns than this
    cut_from_width: float = 0.45  # components narrower than this are never cut: not even two 1s fit
    one_digit_width: float = 1.0  # components wider than this are always cut; narrower ones only when unsure
    sure_logit: float = 4.0  # a component whose top digit logit reaches this is read as one digit, uncut
    cut_margin: float = 0.12  # no cut nearer than this to a component's side: a cut there leaves a sliver
    cut_spacing: float = 0.15  # between two cuts of one component
    cuts_per_height: float = 3.0  # at most this many cuts per line height of a component's width
    seam_step: float = 0.3  # a seam's cost of moving one column sideways, in ink pixels crossed
    seam_rows: int = 48  # seams are found on a copy of the component at most this tall (a row is a loop step)
    max_cut_strokes: float = 2.5  # a seam crossing more strokes than this cuts through a digit, not between two
    min_part: float = 0.1  # of a component's ink: a seam leaving less on one side shaves a sliver, cuts nothing
    read_blobs: bool = True  # what the search may have read wrong is read whole by the strip reader too (strips.py)
    # When the search's and the strip reader's readings of a blob compete (strips.reread_blobs), each scores the
    # strip reader's log P(its labels), plus classifier_weight times the classifier's log P of each label on its
    # crops, less digit_cost per digit (a wide lone digit otherwise reads as two). A line at most short_line of its
    # height wide that the search reads as several digits is read whole too (a digit in two pieces reads as two
    # otherwise). Chosen on validation numbers and digits: weights 0.1-1 and costs 0-3 were tried (benchmarks/README).
    classifier_weight: float = 0.15
    digit_cost: float = 2.0
    short_line: float = 2.2
    # The search's weights, tuned on numbers built from MNIST's training digits (benchmarks/numbers.py
    # --split train), never on its test digits. A path's score is the sum over its digits of log P(one digit)
    # + digit_bonus (search.digit_scores), less cut_cost per stroke a cut crosses and skip_cost per line
    # height of a piece left out.
    digit_logit: float = 3.5  # the top digit logit at which a crop is as likely one digit as not
    logit_scale: float = 0.3  # logits per e-fold of those odds
    digit_bonus: float = 0.6
    cut_cost: float = 1.0
    skip_cost: float = 3.0
    # A digit shorter than short_digit of the tallest ink on its line pays up to short_digit_cost, in proportion to
    # how much shorter: a number's digits stand about as tall as each other, while a stray mark or a stroke broken
    # off a digit reads as a confident "1" that digit_bonus would otherwise keep. Both readings of a blob pay it
    # (strips.reread_blobs). Chosen on validation numbers and digits (benchmarks/README.md).
    short_digit: float = 0.7
    short_digit_cost: float = 3.0
    # One digit's strokes that part leave a sliver of empty columns between them at most (a 4's or a 9's stem); two
    # digits written close stand further apart, yet the crop of both may read as one sure digit ("44" as a 4) where
    # a narrow neighbour alone reads unsure. So a digit holding digit-tall blobs with side_by_side_gap of its line's
    # height or more of empty columns between them pays side_by_side_cost per such gap. Chosen on validation
    # numbers and digits (benchmarks/README.md).
    side_by_side_gap: float = 0.07
    side_by_side_cost: float = 1.5


DEFAULTS = SegmentConfig()


@dataclasses.dataclass(frozen=True, eq=False)
class Piece:
    """One connected component, or the part of it between two cuts. A cut is a seam: one column per row of
    the component, so it can wind between two digits' strokes where they overlap."""

    component: int  # its label in Layout.labels
    part: int  # its place among its component's parts, left to right
    parts: int  # how many parts its component was cut into (1: whole)
    left: int
    right: int  # columns [left, right) and rows [top, bottom) its pixels span
    top: int
    bottom: int
    seam_top: int  # the component's top row, where the seams' rows start
    left_seam: np.ndarray | None  # per row of the component: its pixels start at this column
    right_seam: np.ndarray | None  # ...and stop before this one
    left_cost: float  # strokes the seam on its left crosses; 0 where the component itself begins
    right_cost: float


@dataclasses.dataclass
class Layout:
    """An image's ink laid out for the search: lines (top to bottom) of pieces (left to right), the candidate
    digits as (line, first piece, end piece, input), and each input's 28x28 image and box. Inputs are only
    ever added, so the classifier's answers for them stay valid as components are cut."""

    ink: np.ndarray = dataclasses.field(repr=False)  # (H, W) the working copy's ink map
    labels: np.ndarray = dataclasses.field(repr=False)  # (H, W) int32 component labels, 0 = ground
    component_boxes: np.ndarray  # (components, 4) top, bottom, left, right (exclusive), working pixels
    scale: tuple[float, float]  # original image pixels per working pixel, (x, y)
    line_heights: list[float] = dataclasses.field(default_factory=list)
    lines: list[list[Piece]] = dataclasses.field(default_factory=list)
    candidates: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)
    inputs: list[np.ndarray] = dataclasses.field(default_factory=list)
    boxes: list[list[int]] = dataclasses.field(default_factory=list)  # [x0, y0, x1, y1] in the original's pixels
    known: dict[tuple, int] = dataclasses.field(default_factory=dict, repr=False)  # pieces -> input index
    writer: Writer | None = None  # a hand undone in every crop (writer.py; a fine-tuned model's)


def tallest_component(layout: Layout, line: int) -> float:
    """The height of the tallest component on layout line `line`, in working pixels: what a digit of it is measured
    against (SegmentConfig.short_digit)."""
    components = layout.component_boxes[[piece.component - 1 for piece in layout.lines[line]]]
    return float((components[:, 1] - components[:, 0]).max())


def short_digit_cost(box: list[int], layout: Layout, line: int, config: SegmentConfig) -> float:
    """What a digit in `box` ([x0, y0, x1, y1], the original's pixels) on layout line `line` pays for standing
    shorter than config.short_digit of the tallest component on that line (SegmentConfig.short_digit_cost)."""
    if config.short_digit <= 0:
        return 0.0
    tallest = tallest_component(layout, line) * layout.scale[1]
    shortfall = max(0.0, config.short_digit - (box[3] - box[1]) / tallest) / config.short_digit
    return config.short_digit_cost * shortfall


def side_by_side_cost(layout: Layout, line: int, first: int, end: int, config: SegmentConfig) -> float:
    """What a digit made of pieces [first, end) of layout line `line` pays for the blobs in it that stand apart,
    side by side (SegmentConfig.side_by_side_gap): config.side_by_side_cost per gap of empty columns between two
    blobs each as tall as a digit of this line (config.short_digit of its tallest; a shorter one is a mark)."""
    digit_tall = max(
        config.min_height * layout.line_heights[line], config.short_digit * tallest_component(layout, line)
    )
    spans: dict[int, list[int]] = {}  # component -> the columns and rows of its pieces in this digit
    for piece in layout.lines[line][first:end]:
        span = spans.setdefault(piece.component, [piece.left, piece.right, piece.top, piece.bottom])
        span[:] = (
            min(span[0], piece.left),
            max(span[1], piece.right),
            min(span[2], piece.top),
            max(span[3], piece.bottom),
        )
    tall = sorted((left, right) for left, right, top, bottom in spans.values() if bottom - top >= digit_tall)
    gaps, right_so_far = 0, None
    for left, right in tall:
        if right_so_far is not None and left - right_so_far >= config.side_by_side_gap * layout.line_heights[line]:
            gaps += 1
        right_so_far = right if right_so_far is None else max(right_so_far, right)
    return config.side_by_side_cost * gaps


def working_copy(image: Image.Image, config: SegmentConfig) -> tuple[np.ndarray, tuple[float, float]]:
    """Luminance of the image shrunk (by PIL, in C) to at most working_side, and the original's pixels per
    working pixel. A JPEG that `load_image(max_side=...)` already decoded small records its full size."""
    full_width, full_height = image.info.get("full_size", image.size)
    longer = max(image.size)
    if longer > config.working_side:
        factor = int(np.ceil(longer / config.working_side))
        image = image.reduce(factor)
    return grey_levels(image), (full_width / image.size[0], full_height / image.size[1])


def lay_out(image, config: SegmentConfig = DEFAULTS, writer: Writer | None = None) -> Layout:
    """A PIL image or an array -> its Layout, candidates and their inputs included (each crop with `writer`'s
    hand undone). Raises NoDigitError when no ink stands out or nothing digit-sized does, TooManyDigitsError when
    far more than max_digits do."""
    if isinstance(image, Image.Image):
        grey, scale = working_copy(image, config)
    else:
        grey, scale = grey_levels(image), (1.0, 1.0)
    ink = ink_map(grey)  # once per image; every candidate's crop is cut from it
    sample = ink[:: max(1, ink.shape[0] // 256), :: max(1, ink.shape[1] // 256)]
    threshold = max(otsu_threshold(sample), MIN_CONTRAST)
    # Components are traced down to a fraction of the ink threshold, so a stroke that fades between two dark
    # parts (a fine pen, thin parts lost to a photo's light) holds them together as one; a component counts only
    # where it reaches the threshold itself, so faint marks alone are no ink (hysteresis, as Canny's edges).
    labels, boxes = label_components(ink > max(config.faint_ink * threshold, MIN_CONTRAST))
    reaches = np.zeros(len(boxes) + 1, dtype=bool)
    reaches[labels[ink > threshold]] = True
    heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    smallest_digit = max(config.min_digit_pixels, config.min_digit_fraction * min(ink.shape))
    keep = reaches[1:] & ~lies_along_edge(labels, len(boxes)) & (np.maximum(heights, widths) >= 2)
    tallest = float(heights[keep].max()) if keep.any() else 0.0
    if tallest < smallest_digit:
        raise NoDigitError("no digit found")
    major = keep & (heights >= max(smallest_digit, config.min_height * tallest))
    if major.sum() > 2 * config.max_digits:  # refused before any work is spent on the pieces
        raise TooManyDigitsError("too many digits")
    minor = keep & ~major & (np.maximum(heights, widths) >= config.speck_size * tallest)
    lines = group_lines(boxes, np.flatnonzero(major), np.flatnonzero(minor), config)
    layout = Layout(ink=ink, labels=labels, component_boxes=boxes, scale=scale, writer=writer)
    for members in lines:
        line_height = stack_height(boxes[members], config)
        pieces = [
            whole_piece(boxes[index], index + 1)
            for index in members
            if max(heights[index], widths[index]) >= config.speck_size * line_height
        ]
        layout.lines.append(sorted(pieces, key=lambda piece: piece.left + piece.right))
        layout.line_heights.append(line_height)
    add_candidates(layout, config)
    return layout


def whole_piece(box: np.ndarray, label: int) -> Piece:
    top, bottom, left, right = (int(value) for value in box)
    return Piece(label, 0, 1, left, right, top, bottom, top, None, None, 0.0, 0.0)


def cut_unsure(layout: Layout, logits: np.ndarray, config: SegmentConfig) -> bool:
    """Cuts the components that may hold more than one digit: tall enough for a digit, wide enough for two
    narrow ones, and either too wide for one or, beside other digits, not read as one with confidence (top
    logit under sure_logit). A component the classifier is sure of stays whole, so a clear digit is never
    searched for halves. Adds the new candidates; True if any component was cut."""
    changed = False
    sure = {}
    for line, first, end, index in layout.candidates:
        if end == first + 1:
            sure[(line, first)] = float(logits[index, :10].max()) >= config.sure_logit
    for line, (pieces, line_height) in enumerate(zip(layout.lines, layout.line_heights, strict=True)):
        cut = []
        # A blob alone on its line is one digit unless it is too wide for one: most digits the classifier is
        # unsure of are odd digits, not two touching ones.
        alone = sum(piece.bottom - piece.top >= config.min_height * line_height for piece in pieces) == 1
        for position, piece in enumerate(pieces):
            width, height = piece.right - piece.left, piece.bottom - piece.top
            could_be_two = (
                piece.parts == 1
                and height >= config.min_height * line_height
                and width >= config.cut_from_width * line_height
            )
            unsure = not alone and not sure.get((line, position))
            if could_be_two and (width > config.one_digit_width * line_height or unsure):
                cut.extend(
                    cut_component(
                        layout.labels, layout.component_boxes[piece.component - 1], piece.component, line_height, config
                    )
                )
            else:
                cut.append(piece)
        if len(cut) != len(pieces):
            layout.lines[line] = sorted(cut, key=lambda piece: piece.left + piece.right)
            changed = True
    if changed:
        add_candidates(layout, config)
    return changed


def lies_along_edge(labels: np.ndarray, count: int) -> np.ndarray:
    """Components covering more than half of one of the frame's edges: a page's edge or a shadow, not ink (a
    digit that reaches the edge touches it only where its strokes end)."""
    along = np.zeros(count + 1, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        along |= np.bincount(edge, minlength=count + 1) > len(edge) / 2
    return along[1:]


def group_lines(boxes: np.ndarray, major: np.ndarray, minor: np.ndarray, config: SegmentConfig) -> list[np.ndarray]:
    """Lines of components, top to bottom. Digit-sized components share a line when their rows overlap enough
    or when one stands just above the other (a digit broken across, a 5's flag), and so do their neighbours'
    neighbours, so a line may slope; a smaller piece joins the line it overlaps or stands just above or below,
    or is left out."""
    line_of = np.zeros(len(major), np.intp)
    if len(major) > 1:  # a lone digit, as most images hold, is its own line
        linked = stacked_or_side_by_side(boxes[major], boxes[major], config)
        line_of = np.arange(len(major))
        while True:  # each component takes the smallest line number among those it is linked to
            merged = np.where(linked, line_of[None, :], len(major)).min(axis=1)
            if np.array_equal(merged, line_of):
                break
            line_of = merged
        _, line_of = np.unique(line_of, return_inverse=True)
    members = [list(major[line_of == line]) for line in range(int(line_of.max()) + 1)]
    spans = np.array([[boxes[m, 0].min(), boxes[m, 1].max(), boxes[m, 2].min(), boxes[m, 3].max()] for m in members])
    if len(minor):
        near = stacked_or_side_by_side(boxes[minor], spans, config)
        shared = np.minimum(spans[None, :, 1], boxes[minor, 1, None]) - np.maximum(
            spans[None, :, 0], boxes[minor, 0, None]
        )
        for index, row, overlaps in zip(minor, near, shared, strict=True):
            if row.any():
                members[int(np.argmax(np.where(row, overlaps, -np.inf)))].append(index)
    order = np.argsort(spans[:, 0])
    return [np.array(members[line]) for line in order]


def stacked_or_side_by_side(first: np.ndarray, second: np.ndarray, config: SegmentConfig) -> np.ndarray:
    """(len(first), len(second)) booleans for boxes [top, bottom, left, right): rows overlapping by line_overlap
    of the shorter (side by side), or stacked."""
    rows = np.minimum(first[:, 1, None], second[None, :, 1]) - np.maximum(first[:, 0, None], second[None, :, 0])
    shorter = np.minimum((first[:, 1] - first[:, 0])[:, None], (second[:, 1] - second[:, 0])[None, :])
    return (rows >= config.line_overlap * shorter) | stacked(first, second, config)


def stacked(first: np.ndarray, second: np.ndarray, config: SegmentConfig) -> np.ndarray:
    """(len(first), len(second)) booleans: one box above the other, at most stack_gap of the taller's height
    apart and sharing at least stack_columns of the narrower's columns (a digit broken across, a 5's flag)."""
    rows = np.minimum(first[:, 1, None], second[None, :, 1]) - np.maximum(first[:, 0, None], second[None, :, 0])
    columns = np.minimum(first[:, 3, None], second[None, :, 3]) - np.maximum(first[:, 2, None], second[None, :, 2])
    taller = np.maximum((first[:, 1] - first[:, 0])[:, None], (second[:, 1] - second[:, 0])[None, :])
    narrower = np.minimum((first[:, 3] - first[:, 2])[:, None], (second[:, 3] - second[:, 2])[None, :])
    return (rows < 0.5 * taller) & (-rows <= config.stack_gap * taller) & (columns >= config.stack_columns * narrower)


def stack_height(boxes: np.ndarray, config: SegmentConfig) -> float:
    """A line's height: the median height of its digit-sized stacks of components (pieces one above the other
    make one stack), so a digit broken across counts whole."""
    if len(boxes) == 1:  # a lone component is its own stack
        return float(boxes[0, 1] - boxes[0, 0])
    linked = stacked(boxes, boxes, config)
    stack_of = np.arange(len(boxes))
    while True:
        merged = np.where(linked, stack_of[None, :], len(boxes)).min(axis=1)
        merged = np.minimum(merged, stack_of)
        if np.array_equal(merged, stack_of):
            break
        stack_of = merged
    heights = np.array(
        [boxes[stack_of == stack, 1].max() - boxes[stack_of == stack, 0].min() for stack in np.unique(stack_of)],
        dtype=np.float64,
    )
    return float(median(heights[heights >= 0.5 * heights.max()]))


def cut_component(
    labels: np.ndarray, box: np.ndarray, label: int, line_height: float, config: SegmentConfig
) -> list[Piece]:
    """A component as the pieces between its candidate cuts: the top-to-bottom seams that cross the least of
    its ink (a touching point, the gap between two overlapping strokes), kept apart from each other and from
    its sides."""
    top, bottom, left, right = (int(value) for value in box)
    own = labels[top:bottom, left:right] == label
    seams = find_seams(own, line_height, config)
    bounds = [(None, 0.0), *((left + seam, cost) for seam, cost in seams), (None, 0.0)]
    pieces = []
    columns = np.arange(left, right)[None, :]
    for part, ((left_seam, left_cost), (right_seam, right_cost)) in enumerate(itertools.pairwise(bounds)):
        inside = own.copy()
        if left_seam is not None:
            inside &= columns >= left_seam[:, None]
        if right_seam is not None:
            inside &= columns < right_seam[:, None]
        rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if len(rows) == 0:
            continue
        pieces.append(
            Piece(
                label,
                part,
                len(bounds) - 1,
                left + int(cols[0]),
                left + int(cols[-1]) + 1,
                top + int(rows[0]),
                top + int(rows[-1]) + 1,
                top,
                left_seam,
                right_seam,
                left_cost,
                right_cost,
            )
        )
    return pieces


def add_candidates(layout: Layout, config: SegmentConfig) -> None:
    """Every run of consecutive pieces in a line that could be one digit by its shape, with its 28x28 input
    (made once: a run of the same pieces keeps its input when the line is laid out again)."""
    layout.candidates = []
    for line, (pieces, line_height) in enumerate(zip(layout.lines, layout.line_heights, strict=True)):
        for first in range(len(pieces)):
            right_so_far = pieces[first].left
            for end in range(first + 1, min(first + config.max_pieces, len(pieces)) + 1):
                group = pieces[first:end]
                if group[-1].left - right_so_far > config.max_inner_gap * line_height:
                    break
                right_so_far = max(right_so_far, group[-1].right)
                left, right = min(p.left for p in group), max(p.right for p in group)
                top, bottom = min(p.top for p in group), max(p.bottom for p in group)
                if right - left > config.max_width * line_height:
                    # Wider than a digit, so two digits side by side, unless it is one blob of ink, whole (a flat 0
                    # or 2), or one digit-sized blob and short marks over its columns (a 5's flag reaching past it).
                    parts_of = {piece.component: piece.parts for piece in group}
                    whole = len(group) == sum(parts_of.values())
                    if len(parts_of) == 1 and not whole:  # part of a cut blob: the rest of it may follow
                        continue
                    if not (
                        whole
                        and one_digit_and_marks(layout.component_boxes[[c - 1 for c in parts_of]], line_height, config)
                    ):
                        break
                if bottom - top < config.min_height * line_height:
                    continue
                key = tuple(sorted((p.component, p.part, p.parts) for p in group))
                if key not in layout.known:
                    digit = crop(layout.labels, layout.ink, group, (top, bottom, left, right), layout.writer)
                    if digit is None:
                        continue
                    layout.known[key] = len(layout.inputs)
                    layout.inputs.append(digit)
                    x_scale, y_scale = layout.scale
                    layout.boxes.append(
                        [
                            int(left * x_scale),
                            int(top * y_scale),
                            int(np.ceil(right * x_scale)),
                            int(np.ceil(bottom * y_scale)),
                        ]
                    )
                layout.candidates.append((line, first, end, layout.known[key]))


def one_digit_and_marks(boxes: np.ndarray, line_height: float, config: SegmentConfig) -> bool:
    """Whether components [top, bottom, left, right) are one blob, or one digit-sized blob and pieces too short
    to be digits that share its columns: a digit's own marks, where a short piece beside it is a neighbour's."""
    if len(boxes) == 1:
        return True
    tall = boxes[:, 1] - boxes[:, 0] >= config.min_height * line_height
    if np.count_nonzero(tall) != 1:
        return False
    digit, marks = boxes[tall][0], boxes[~tall]
    return bool(np.all((np.minimum(marks[:, 3], digit[3]) - np.maximum(marks[:, 2], digit[2])) > 0))


def crop(
    labels: np.ndarray, ink: np.ndarray, group: list[Piece], box: tuple[int, int, int, int], writer: Writer | None
) -> np.ndarray | None:
    """The pieces' ink, and the faint ink around it that belongs to no component, without any other piece's;
    tightened as `preprocess` tightens a lone digit, then normalized as MNIST's digits were."""
    top, bottom, left, right = box
    top, left = max(0, top - 1), max(0, left - 1)
    bottom, right = min(ink.shape[0], bottom + 1), min(ink.shape[1], right + 1)
    region_labels = labels[top:bottom, left:right]
    columns = np.arange(left, right)[None, :]
    keep = region_labels == 0
    for piece in group:
        mine = region_labels == piece.component
        for seam, side in ((piece.left_seam, 1), (piece.right_seam, -1)):
            if seam is not None:
                bound = seam[np.clip(np.arange(top, bottom) - piece.seam_top, 0, len(seam) - 1)][:, None]
                mine &= columns >= bound if side == 1 else columns < bound
        keep |= mine
    region = np.where(keep, ink[top:bottom, left:right], 0)
    strong = region > 0.5 * max(otsu_threshold(region), MIN_CONTRAST)
    rows, columns = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
    if len(rows) == 0:
        return None
    return frame_crop(region[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1], writer)
