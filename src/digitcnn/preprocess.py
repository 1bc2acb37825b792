"""Any image of a digit -> the 28x28 input MNIST itself would have made of it.

MNIST's digits were size-normalized to fit a 20x20 box (aspect ratio kept, anti-aliased), then placed in
28x28 with their centre of mass at the centre; ink is bright on a zero background. A photo, a scan or a canvas
drawing looks nothing like that until it is made to: `images.load_image` reads the file safely, `preprocess`
does the rest. The CLI, the Python API, the server and the tests all use these two functions.
"""

import functools
from statistics import NormalDist

import numpy as np
from PIL import Image

from .errors import ImageError, NoDigitError
from .images import normalize_mode
from .pixels import SIDE
from .quantiles import median, median_above, percentile, sparse_percentile
from .writer import Writer, straighten

BOX = 20  # MNIST's digits fill a 20x20 box: the longer side of the ink is 20 px for 9,997 of 10,000 test digits
CENTRE = 14.0  # where MNIST's centre of mass sits, in pixel-index coordinates (measured: 14.0 +- 0.3)
# Stroke width (2 * ink area / ink boundary, in MNIST pixels, measured at the working scale below) of the
# first 2,000 test digits: median 2.8 px, 2-98% range 1.7-5.1. Outside (THIN, THICK) a pen is far from MNIST's
# and is brought to TARGET_STROKE; inside, the writer's stroke is kept (98% of MNIST passes untouched).
TARGET_STROKE, THIN, THICK = 2.8, 1.6, 5.2
MAX_THINNING, MAX_THICKENING = 1, 2  # MNIST pixels of stroke width removed or added at most
WORK_SCALE = 4  # strokes are adjusted at 4x MNIST's scale (80 px), where a 1-px step is a quarter of a pixel
ANALYSIS_SIDE = 128  # the ink is located on a copy no larger than this: cheap, and large enough for a digit
BACKGROUND_BLOCKS = 8  # the lighting is estimated on an 8x8 grid: coarser than any stroke, finer than a gradient
PAPER_FIT_ROUNDS = 5  # rounds of dropping ink-covered blocks from the paper fit; it settles in two or three
PAPER_TOLERANCE = 0.01  # block levels within 3x this of the fitted paper are paper (JPEG and grain wobble)
PAPER_PERCENTILE = 10  # a block's paper level: ink must cover 90% of a block to lift it
MIN_BLOCK = 32  # ...of blocks at least this many pixels wide: a small image's paper is one level
NOISE_FLOOR = 3.0  # grain within 3 standard deviations of the paper is paper, not ink
MIN_CONTRAST = 0.12  # ink must stand this far (of full scale) above the local paper, or there is no digit
MIN_INK_FRACTION = 0.001  # the digit's ink covers at least this much of the analysis image (noise specks do not)
SPECK_FRACTION = 0.05  # components under 5% of the main one's area are specks, unless they touch it
BORDER_PENALTY = 0.25  # ink touching the frame's edge is more often a shadow or the table than the digit


def preprocess(image, writer: Writer | None = None) -> np.ndarray:
    """An image (PIL, or an array: 2-D grey, HxWx3 RGB, HxWx4 RGBA; uint8 or floats in [0, 1]) -> float32
    (28, 28) in [0, 1], ink = 1, as MNIST would have it (with a `writer`'s slant and width undone, as a model
    fine-tuned on their hand reads). Raises NoDigitError when there is no ink."""
    return frame_digit(ink_map(grey_levels(image)), writer)  # the ink map: (H, W) in [0, 1], at full resolution


def frame_digit(ink: np.ndarray, writer: Writer | None = None) -> np.ndarray:
    """An image's ink map (as `ink_map` makes it) -> the 28x28 `preprocess` makes of the image: its digit found,
    cropped and framed as MNIST's. Raises NoDigitError when no digit stands out."""
    rows, columns = locate_digit(ink)
    return frame_crop(ink[rows, columns], writer)


def frame_crop(digit: np.ndarray, writer: Writer | None = None) -> np.ndarray:
    """A digit's ink cropped to it (bright on 0) -> its 28x28: the writer's hand undone, the strokes brought toward
    MNIST's, fitted to the 20x20 box and centred. Every crop the reading path makes ends here."""
    digit = digit / max(float(digit.max()), 1e-6)
    return place_in_frame(normalize_strokes(straighten(digit, writer)))


def grey_levels(image) -> np.ndarray:
    """Luminance in [0, 1]; transparency composited onto whichever of black or white the ink contrasts with."""
    if isinstance(image, Image.Image):
        image = normalize_mode(image)
        values = np.asarray(image, dtype=np.float32) / 255
    else:
        values = np.asarray(image, dtype=np.float32)
        if np.asarray(image).dtype == np.uint8:
            values = values / 255
        values = np.clip(values, 0, 1)
    if values.ndim == 2:
        return values
    if values.ndim != 3 or values.shape[2] not in (3, 4):
        raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4, not {values.shape}")
    luminance = values[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if values.shape[2] == 3:
        return luminance
    alpha = values[..., 3]
    if alpha.min() > 0.99:
        return luminance
    # A canvas drawing: the opaque strokes are the ink, whatever their colour; lay them on a contrasting ground.
    ink_luminance = float((luminance * alpha).sum() / max(alpha.sum(), 1e-6))
    ground = 0.0 if ink_luminance > 0.5 else 1.0
    return luminance * alpha + ground * (1 - alpha)


def ink_map(grey: np.ndarray) -> np.ndarray:
    """Bright ink on a zero ground: polarity decided by the paper (the median), lighting gradients removed by
    subtracting the paper's own local brightness, then its grain, scaled so the strokes reach about 1."""
    if grey.size == 0:
        raise NoDigitError("empty image")
    if median_above(grey, 0.5):  # most of a page is paper; light paper means dark ink
        grey = 1 - grey
    paper, grain = paper_level(grey)
    residual = grey - paper  # the paper is now 0 +- its grain
    ink = np.clip(residual - NOISE_FLOOR * grain, 0, None)
    strong = float(sparse_percentile(ink, 99.99))  # the strokes, even when they are a sliver of a photo
    if strong < MIN_CONTRAST:
        raise NoDigitError("no digit found")
    return np.clip(ink / strong, 0, 1)


def paper_level(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """The paper's brightness under each pixel, and its grain (noise) as a standard deviation.

    A smooth surface (quadratic in x and y: a lighting gradient or a lens's vignetting) is fitted to a low
    percentile of each block of a coarse grid. A low percentile is paper unless ink covers nearly all of the
    block, so a digit that fills its crop, or a thick marker across several blocks, cannot lift the level
    under itself and hollow its own strokes; blocks that ink does cover stand above the fit and are dropped."""
    height, width = grey.shape
    blocks, terms, rows, columns = surface_grid(height, width)
    low = percentile(block_pixels(grey, blocks), PAPER_PERCENTILE, axis=1)
    coefficients, *_ = np.linalg.lstsq(terms, low, rcond=None)
    residual = low - terms @ coefficients
    # Ink only ever lifts a block, so the lower half of the residuals is paper even when ink pulled the first
    # fit up; from there, blocks within the paper's own spread of the refitted surface join back.
    paper = residual <= median(residual)
    for _ in range(PAPER_FIT_ROUNDS):
        coefficients, *_ = np.linalg.lstsq(terms[paper], low[paper], rcond=None)
        residual = low - terms @ coefficients
        spread = max(float(median(np.abs(residual[paper]))) / 0.6745, PAPER_TOLERANCE)
        keep = residual < 3 * spread
        if keep.sum() < terms.shape[1] or np.array_equal(keep, paper):
            break
        paper = keep
    terms = surface_terms(rows, columns, blocks)  # broadcast to (height, width) term by term, never stacked
    level = np.broadcast_to(
        sum(np.float32(c) * term for c, term in zip(coefficients, terms, strict=True)), (height, width)
    )
    # The grain, from the paper blocks' pixels less the fitted surface (so the lighting is not counted as noise),
    # as the gap between two low percentiles measured in standard deviations of normal noise.
    low_value, quartile = percentile(block_pixels(grey - level, blocks)[paper], (PAPER_PERCENTILE, 25))
    low_z, quartile_z = NormalDist().inv_cdf(PAPER_PERCENTILE / 100), NormalDist().inv_cdf(0.25)
    grain = max(float(quartile - low_value) / (quartile_z - low_z), 0.0)
    offset = low_value - low_z * grain  # from the low percentile up to the paper's mean
    return (level + offset).astype(np.float32), grain


@functools.lru_cache(maxsize=256)
def surface_grid(height: int, width: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray]:
    """What the paper fit of every image of one size shares, made once per size: its grid of blocks, the
    surface's terms at their centres (blocks, terms), and each pixel's row and column coordinates (height, 1)
    and (1, width) (the full-size terms are not kept: for a photo they are megabytes)."""
    blocks = (max(1, min(BACKGROUND_BLOCKS, height // MIN_BLOCK)), max(1, min(BACKGROUND_BLOCKS, width // MIN_BLOCK)))
    block_height, block_width = height // blocks[0], width // blocks[1]
    row_centres = (np.arange(blocks[0]) + 0.5) * block_height / height - 0.5
    column_centres = (np.arange(blocks[1]) + 0.5) * block_width / width - 0.5
    block_rows, block_columns = np.meshgrid(row_centres, column_centres, indexing="ij")
    terms = np.stack(surface_terms(block_rows.ravel(), block_columns.ravel(), blocks), axis=1)
    rows = ((np.arange(height, dtype=np.float32) + 0.5) / height - 0.5)[:, None]
    columns = ((np.arange(width, dtype=np.float32) + 0.5) / width - 0.5)[None, :]
    for shared in (terms, rows, columns):
        shared.flags.writeable = False  # one copy serves every image of this size
    return blocks, terms, rows, columns


def block_pixels(image: np.ndarray, blocks: tuple[int, int]) -> np.ndarray:
    """(blocks, pixels): each row one block of an equal grid, in row-major block order, so one numpy call
    covers them all; the few rows and columns left over at the edges are not needed."""
    block_height, block_width = image.shape[0] // blocks[0], image.shape[1] // blocks[1]
    tiles = image[: blocks[0] * block_height, : blocks[1] * block_width]
    tiles = tiles.reshape(blocks[0], block_height, blocks[1], block_width).transpose(0, 2, 1, 3)
    return tiles.reshape(blocks[0] * blocks[1], -1)


def surface_terms(rows: np.ndarray, columns: np.ndarray, blocks: tuple[int, int]) -> list[np.ndarray]:
    """The terms of the paper surface: quadratic where the grid has room for it, else flatter."""
    terms = [np.ones_like(rows)]
    if min(blocks) >= 2:
        terms += [rows, columns]
    if min(blocks) >= 4:
        terms += [rows * rows, columns * columns, rows * columns]
    return terms


def locate_digit(ink: np.ndarray) -> tuple[slice, slice]:
    """The bounding box, at full resolution, of the digit: the main connected ink component (larger and away
    from the frame's edge) with the pieces near it, ignoring specks and page-edge shadows."""
    height, width = ink.shape
    # Each analysis pixel is the strongest ink of its block, so a fine pen's stroke survives the shrinking.
    factor = max(1, int(np.ceil(max(height, width) / ANALYSIS_SIDE)))
    padded = np.pad(ink, ((0, -height % factor), (0, -width % factor)))
    small = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).max(axis=(1, 3))
    mask = small > max(otsu_threshold(small), MIN_CONTRAST)
    if mask.mean() < MIN_INK_FRACTION:
        raise NoDigitError("no digit found")
    labels, count = connected_components(mask)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    boxes = [np.argwhere(labels == index + 1) for index in range(count)]
    edge = [
        bool(
            (b[:, 0].min() == 0)
            | (b[:, 1].min() == 0)
            | (b[:, 0].max() == mask.shape[0] - 1)
            | (b[:, 1].max() == mask.shape[1] - 1)
        )
        for b in boxes
    ]
    scores = areas * np.where(edge, BORDER_PENALTY, 1.0)
    main = int(np.argmax(scores))
    top, left = boxes[main].min(axis=0)
    bottom, right = boxes[main].max(axis=0)
    # Pieces near the digit join it (a 5's flag, a broken fine-pen stroke), and the box grows as they do, but
    # a piece farther than a third of the box away is another mark on the page.
    merged, growing = {main}, True
    while growing:
        growing = False
        reach = max(bottom - top, right - left) / 3 + 2
        for index, points in enumerate(boxes):
            if index in merged or areas[index] < SPECK_FRACTION * areas[main]:
                continue
            (near_top, near_left), (near_bottom, near_right) = points.min(axis=0), points.max(axis=0)
            if (
                near_top <= bottom + reach
                and near_bottom >= top - reach
                and near_left <= right + reach
                and near_right >= left - reach
            ):
                top, left = min(top, near_top), min(left, near_left)
                bottom, right = max(bottom, near_bottom), max(right, near_right)
                merged.add(index)
                growing = True
    # Back to full resolution with a one-cell margin, then tightened to the ink actually there.
    rows = slice(max(0, int((top - 1) * factor)), min(height, int(np.ceil((bottom + 2) * factor))))
    columns = slice(max(0, int((left - 1) * factor)), min(width, int(np.ceil((right + 2) * factor))))
    region = ink[rows, columns] > 0.5 * max(otsu_threshold(ink[rows, columns]), MIN_CONTRAST)
    if not region.any():
        raise NoDigitError("no digit found")
    found = np.argwhere(region)
    (r0, c0), (r1, c1) = found.min(axis=0), found.max(axis=0) + 1
    return slice(rows.start + r0, rows.start + r1), slice(columns.start + c0, columns.start + c1)


def otsu_threshold(values: np.ndarray) -> float:
    """The grey level that best splits ink from paper (Otsu, 1979), on a 256-bin histogram of [0, 1] (values
    outside it are left out, as np.histogram leaves them; bincount makes the same bins in half its time)."""
    values = np.asarray(values)
    count = values.size
    if count and (values.min() < 0 or values.max() > 1):
        values = values[(values >= 0) & (values <= 1)]
    # An ink map is mostly 0: its zeros are counted into the first bin, not binned one by one.
    nonzero = values[values != 0]
    histogram = np.bincount(np.minimum((nonzero * 256).astype(np.intp), 255), minlength=256)
    histogram[0] += values.size - nonzero.size
    weights = histogram.astype(np.float64) / max(count, 1)
    centres = (np.arange(256) + 0.5) / 256
    below = np.cumsum(weights)
    mean_below = np.cumsum(weights * centres)
    total_mean = mean_below[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * below - mean_below) ** 2 / (below * (1 - below))
    between = np.nan_to_num(between)
    return float(centres[int(np.argmax(between))])


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels 1..count by union-find over runs of each row: fast enough for 128x128 in numpy."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    parent = [0]

    def find(label: int) -> int:
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = parent[label]
        return label

    # Every row's runs of ink at once: where the padded row steps up (a start) and down (a stop).
    steps = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    starts, stops = np.argwhere(steps == 1), np.argwhere(steps == -1)[:, 1]
    runs_by_row: dict[int, list[tuple[int, int]]] = {}
    for (row, start), stop in zip(starts.tolist(), stops.tolist(), strict=True):
        runs_by_row.setdefault(row, []).append((start, stop))
    previous_runs: list[tuple[int, int, int]] = []
    for row in range(mask.shape[0]):
        runs = []
        for start, stop in runs_by_row.get(row, ()):
            label = 0
            for other_start, other_stop, other_label in previous_runs:
                if other_start <= stop and other_stop >= start:  # touching, diagonals included
                    root = find(other_label)
                    if label == 0:
                        label = root
                    elif root != label:
                        parent[root] = label
            if label == 0:
                label = len(parent)
                parent.append(label)
            labels[row, start:stop] = label
            runs.append((start, stop, label))
        previous_runs = runs
    roots = np.array([find(label) for label in range(len(parent))])
    _, compact = np.unique(roots, return_inverse=True)  # root 0 (the ground) stays 0
    return compact[labels].astype(np.int32), int(compact.max())


def stroke_width(ink: np.ndarray) -> float:
    """2 * area / boundary of the ink mask: for a stroke of width w and length L, 2wL / 2L = w."""
    mask = ink > 0.5
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    boundary = np.count_nonzero(mask & ~inner)
    return 2 * float(np.count_nonzero(mask)) / max(boundary, 1)


def normalize_strokes(digit: np.ndarray) -> np.ndarray:
    """Scales the cropped digit so its longer side is BOX * WORK_SCALE and, only when its strokes are far
    thinner or thicker than MNIST's, dilates or erodes them toward TARGET_STROKE (at MNIST's scale)."""
    height, width = digit.shape
    longer = BOX * WORK_SCALE
    size = (max(1, round(width * longer / max(height, width))), max(1, round(height * longer / max(height, width))))
    image = Image.fromarray(digit.astype(np.float32), "F").resize(size, Image.Resampling.LANCZOS)
    width_now = stroke_width(np.asarray(image)) / WORK_SCALE
    if THIN <= width_now <= THICK:
        return np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    # Each step moves each edge by one work pixel. Thinning is capped at one MNIST pixel: blotchy digits read
    # as "thick" and eroding them further breaks their thin parts; thickening, at two.
    steps = round((TARGET_STROKE - width_now) * WORK_SCALE / 2)
    steps = int(np.clip(steps, -MAX_THINNING * WORK_SCALE // 2, MAX_THICKENING * WORK_SCALE // 2))
    adjusted = morphology(np.pad(np.asarray(image, dtype=np.float32), abs(steps) + 1), steps)
    found = np.argwhere(adjusted > 0.5)
    if len(found) == 0:  # eroded away: keep the thin original instead
        return np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    (r0, c0), (r1, c1) = found.min(axis=0), found.max(axis=0) + 1
    return np.clip(normalize_box(adjusted[r0:r1, c0:c1]), 0, 1)


def morphology(image: np.ndarray, steps: int) -> np.ndarray:
    """Grey dilation (steps > 0) or erosion (< 0) by |steps| pixels with a near-round pen: square and cross
    neighbourhoods alternate, growing an octagon. Squares alone turn a fine pen's curves into blocks."""
    combine = np.maximum if steps > 0 else np.minimum
    for step in range(abs(steps)):
        padded = np.pad(image, 1, mode="edge")
        shifted = [
            padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
            if step % 2 == 0 or dr == 0 or dc == 0
        ]
        image = combine.reduce(shifted)
    return image


def normalize_box(digit: np.ndarray) -> np.ndarray:
    height, width = digit.shape
    longer = BOX * WORK_SCALE
    size = (max(1, round(width * longer / max(height, width))), max(1, round(height * longer / max(height, width))))
    return np.asarray(Image.fromarray(digit, "F").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def place_in_frame(digit: np.ndarray) -> np.ndarray:
    """Anti-aliased down to the 20x20 box, then into 28x28 with the centre of mass at MNIST's centre."""
    height, width = digit.shape
    size = (max(1, round(width / WORK_SCALE)), max(1, round(height / WORK_SCALE)))
    small = np.asarray(Image.fromarray(digit, "F").resize(size, Image.Resampling.BOX), dtype=np.float32)
    small = np.clip(small / max(float(small.max()), 1e-6), 0, 1)
    total = float(small.sum())
    centre_row = float((small.sum(axis=1) * np.arange(small.shape[0])).sum()) / total
    centre_column = float((small.sum(axis=0) * np.arange(small.shape[1])).sum()) / total
    top, left = round(CENTRE - centre_row), round(CENTRE - centre_column)
    frame = np.zeros((SIDE + 2 * BOX, SIDE + 2 * BOX), dtype=np.float32)  # room for any shift; cropped below
    frame[BOX + top : BOX + top + small.shape[0], BOX + left : BOX + left + small.shape[1]] = small
    return np.ascontiguousarray(frame[BOX : BOX + SIDE, BOX : BOX + SIDE])
