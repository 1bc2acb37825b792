"""Generated non-digits, the examples the model's "not a digit" output learns from: pen scribbles, dashes and
doodles, shapes, letters and symbols in DejaVu fonts, training digits and non-digits cut in pieces, two or three
training digits side by side or overlapping, ink blobs, and paper texture. Each is drawn large and framed as
`preprocess` frames a clean image (cropped to its ink, strokes brought to MNIST's width, scaled into the 20-px
box, centred by mass), so it looks like what the model sees at inference. Beside them, training digits drawn as
pictures and read back by `preprocess`, and cropped out of touching numbers as the strip reader crops them, stay
digits. Pools are made once per training seed and cached."""

import hashlib
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .errors import NoDigitError
from .files import atomic_path
from .preprocess import frame_crop, preprocess

CANVAS = 128  # pixels each non-digit is drawn on: large enough that a 1-MNIST-pixel pen is several pixels wide
GENERATOR_VERSION = 5  # part of the cache's file name: bump it whenever a drawing below or their mix changes
RENDER_VERSION = 7  # the same for the rendered digits, so a change to them does not remake the non-digits
BLOB_VERSION = 2  # the same for the digits cropped out of touching numbers
# Characters that are, or are often written like, a digit: O o Q D and 0, I l i j | ! and 1, Z z and 2, S s and 5,
# b G and 6, B and 8, g q and 9, plus brackets and strokes that frame as a lone bar. They are neither taught as
# non-digits nor counted in the benchmark's letter families: a model that flags them would flag digits too.
DIGIT_LIKE = set("0123456789OoQDIlij|!ZzSsbGBgq()[]{}/\\'`,.:;\"§ßθσδρζοι")
LATIN = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in DIGIT_LIKE]
SYMBOLS = [c for c in "#$%&*+=?@<>~^-_€£¥¶©®µæÆøπλΓΔΛΞΠΣΦΨΩαβγεημξτφχψω" if c not in DIGIT_LIKE]
FONT_FOLDER = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
# matplotlib's copy of DejaVu, so every install draws the same letters. matplotlib's other fonts (STIX, Computer
# Modern) are held out: the benchmark reads letters in them, never the training.
# (Its two Display fonts hold only a few glyphs and draw most letters blank.)
TRAINING_FONTS = sorted(str(path) for path in FONT_FOLDER.glob("DejaVu*.ttf") if "Display" not in path.name)
TEXTURE_SIDE = 64  # paper is read by the whole `preprocess`, 4x cheaper on 64x64 than on the canvas
FONT_SIZE = 80  # points; a glyph's ink is then 40-100 px on the canvas

# Share of each family in a pool, chosen on the validation split (benchmarks/not_a_digit.py reads each).
FAMILY_WEIGHTS = {
    "scribble": 0.18,
    "dash": 0.05,
    "shape": 0.10,
    "outline": 0.06,
    "letter": 0.18,
    "cut digit": 0.14,
    "digits side by side": 0.17,
    "blob": 0.04,
    "texture": 0.04,
    "doodle": 0.20,
    "cut non-digit": 0.12,
}


def framed(ink: np.ndarray) -> np.ndarray | None:
    """A clean drawing (float, ink 1 on 0) -> the 28x28 `preprocess` makes of it; None when there is no ink."""
    rows, columns = np.flatnonzero(ink.max(axis=1) > 0.1), np.flatnonzero(ink.max(axis=0) > 0.1)
    if len(rows) == 0:
        return None
    crop = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    return frame_crop(crop)


def canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (CANVAS, CANVAS), 0)
    return image, ImageDraw.Draw(image)


def as_ink(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255


def pen(rng: np.random.Generator) -> int:
    return int(rng.integers(3, 14))  # 0.5-2.2 MNIST pixels at a 90-px drawing; normalize_strokes evens them out


def random_walk(rng: np.random.Generator, points: int, step: tuple[float, float] = (12, 40)) -> list[tuple]:
    """A pen path that turns a little at every point: scribbles, loops and zigzags."""
    position = rng.uniform(30, CANVAS - 30, 2)
    heading = rng.uniform(0, 2 * np.pi)
    path = [tuple(position)]
    for _ in range(points - 1):
        heading += rng.normal(0, 1.3)
        position = np.clip(position + rng.uniform(*step) * np.array([np.cos(heading), np.sin(heading)]), 8, CANVAS - 8)
        path.append(tuple(position))
    return path


def scribble(rng, digits, labels) -> np.ndarray:
    """One to three strokes of four or more points: never a single line (a slanted line is a 1)."""
    image, draw = canvas()
    for _ in range(int(rng.integers(1, 4))):
        draw.line(random_walk(rng, int(rng.integers(4, 12))), fill=255, width=pen(rng), joint="curve")
    return as_ink(image)


def dash(rng, digits, labels) -> np.ndarray:
    """A dash, an equals sign, a tilde or a dot: marks that frame as a bar or a blob, never as an upright 1."""
    image, draw = canvas()
    kind = rng.integers(4)
    angle = rng.uniform(-0.5, 0.5)  # within ~30 degrees of horizontal
    length = rng.uniform(40, 110)
    centre = rng.uniform(40, CANVAS - 40, 2)
    direction = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    width = pen(rng)
    if kind == 0:
        draw.line([tuple(centre - direction), tuple(centre + direction)], fill=255, width=width)
    elif kind == 1:
        for offset in (-1, 1):
            shift = np.array([0, offset * rng.uniform(8, 20)])
            draw.line([tuple(centre - direction + shift), tuple(centre + direction + shift)], fill=255, width=width)
    elif kind == 2:
        x = np.linspace(-1, 1, 24)
        points = np.stack([centre[0] + x * length / 2, centre[1] + np.sin(x * np.pi * rng.uniform(1, 2.5)) * 10], 1)
        draw.line([tuple(point) for point in points], fill=255, width=width, joint="curve")
    else:
        radius = rng.uniform(4, 14)
        draw.ellipse([*(centre - radius), *(centre + radius)], fill=255)
    return as_ink(image)


def shape(rng, digits, labels) -> np.ndarray:
    """Triangles, irregular polygons, wide boxes, crosses, grids, outlined or filled. No ellipse or tall box:
    those are how people write 0."""
    image, draw = canvas()
    kind = rng.integers(5)
    width, filled = pen(rng), rng.random() < 0.25
    centre = rng.uniform(50, CANVAS - 50, 2)
    if kind <= 1:  # a triangle or an irregular quadrilateral or pentagon
        sides = 3 if kind == 0 else int(rng.integers(4, 6))
        angles = np.sort(rng.uniform(0, 2 * np.pi, sides))
        radii = rng.uniform(25, 55, sides)
        points = [tuple(centre + r * np.array([np.cos(a), np.sin(a)])) for a, r in zip(angles, radii, strict=True)]
        draw.polygon(points, fill=255 if filled else None, outline=255, width=width)
    elif kind == 2:  # a box wider than tall
        half_width, half_height = rng.uniform(30, 55), rng.uniform(12, 30)
        box = [centre[0] - half_width, centre[1] - half_height, centre[0] + half_width, centre[1] + half_height]
        draw.rectangle(box, fill=255 if filled else None, outline=255, width=width)
    elif kind == 3:  # a plus or a cross
        angle = rng.choice([0.0, np.pi / 4]) + rng.normal(0, 0.15)
        for turn in (0, np.pi / 2):
            direction = np.array([np.cos(angle + turn), np.sin(angle + turn)]) * rng.uniform(25, 50)
            draw.line([tuple(centre - direction), tuple(centre + direction)], fill=255, width=width)
    else:  # a grid of two or three lines each way
        count, spread = int(rng.integers(2, 4)), rng.uniform(40, 90)
        for offset in np.linspace(-spread / 2, spread / 2, count):
            draw.line(
                [(centre[0] + offset, 15), (centre[0] + offset + rng.normal(0, 6), CANVAS - 15)], fill=255, width=width
            )
            draw.line(
                [(15, centre[1] + offset), (CANVAS - 15, centre[1] + offset + rng.normal(0, 6))], fill=255, width=width
            )
    return as_ink(image)


def outline(rng, digits, labels) -> np.ndarray:
    """A closed curve that is not a 0: dented (a cloud, a flower, a leaf) or a ring with a mark inside it (a dot,
    a plus, a cross). A 0 is a plain oval, empty inside; an 8 is a pinched one, so no curve here has two lobes."""
    image, draw = canvas()
    width = pen(rng)
    centre, radius = rng.uniform(55, CANVAS - 55, 2), rng.uniform(30, 48)
    angles = np.linspace(0, 2 * np.pi, 90)
    if rng.random() < 0.6:
        lobes = int(rng.integers(3, 7))
        bumps = 1 + rng.uniform(0.15, 0.35) * np.cos(lobes * angles + rng.uniform(0, 2 * np.pi))
        bumps = bumps + rng.uniform(0, 0.1) * np.cos((lobes + 1) * angles + rng.uniform(0, 2 * np.pi))
        stretch = rng.uniform(0.8, 1.25)
        points = np.stack(
            [centre[0] + radius * bumps * np.cos(angles) * stretch, centre[1] + radius * bumps * np.sin(angles)], 1
        )
        draw.line([tuple(point) for point in points], fill=255, width=width, joint="curve")
        return as_ink(image)
    stretch = rng.uniform(0.85, 1.2)
    box = [centre[0] - radius * stretch, centre[1] - radius, centre[0] + radius * stretch, centre[1] + radius]
    draw.ellipse(box, outline=255, width=width)
    mark = rng.integers(3)
    if mark == 0:
        dot = rng.uniform(4, 10)
        draw.ellipse([*(centre - dot), *(centre + dot)], fill=255)
    else:
        reach = radius * rng.uniform(0.5, 1.0)
        angle = (0.0 if mark == 1 else np.pi / 4) + rng.normal(0, 0.1)
        for turn in (0, np.pi / 2):
            direction = np.array([np.cos(angle + turn), np.sin(angle + turn)]) * reach
            draw.line([tuple(centre - direction), tuple(centre + direction)], fill=255, width=width)
    return as_ink(image)


_fonts: dict[str, ImageFont.FreeTypeFont] = {}


def glyph(character: str, font_path: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """`character` in the font, ink 1 on 0, optionally turned up to 15 degrees and slanted."""
    if font_path not in _fonts:
        _fonts[font_path] = ImageFont.truetype(font_path, FONT_SIZE)
    image, draw = canvas()
    draw.text((CANVAS / 2, CANVAS / 2), character, fill=255, font=_fonts[font_path], anchor="mm")
    if rng is not None:
        shear = rng.uniform(-0.25, 0.25)
        image = image.transform(
            image.size,
            Image.Transform.AFFINE,
            (1, shear, -shear * CANVAS / 2, 0, 1, 0),
            resample=Image.Resampling.BILINEAR,
        )
        image = image.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)
    return as_ink(image)


def letter(rng, digits, labels) -> np.ndarray:
    characters = LATIN if rng.random() < 0.7 else SYMBOLS
    return glyph(characters[rng.integers(len(characters))], TRAINING_FONTS[rng.integers(len(TRAINING_FONTS))], rng)


def enlarged(digit: np.ndarray, factor: float = 4.0) -> np.ndarray:
    """A 28x28 uint8 digit cropped to its ink and scaled up, as float ink."""
    rows, columns = np.flatnonzero(digit.max(axis=1) > 0), np.flatnonzero(digit.max(axis=0) > 0)
    crop = np.ascontiguousarray(digit[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1])
    size = (max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
    return as_ink(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))


def has_hole(ink: np.ndarray) -> bool:
    """Whether the ink encloses a hole (a loop frames like a 0), found by flooding the background from outside."""
    mask = Image.fromarray(np.pad((ink > 0.3).astype(np.uint8) * 255, 2)).copy()  # its own pixels, not the array's
    ImageDraw.floodfill(mask, (0, 0), 128)
    return (np.asarray(mask) == 0).sum() > 0.02 * ink.size


def piece(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """The part of a drawing (float ink) on one side of a cut that holds 25-50% of its ink: cut down the middle
    (what a segmentation search does) or across. A piece that is a bar (a 4's stem frames as a 1) or that
    encloses a loop (the top of a 9 frames as a 0) is refused: None."""
    axis = 0 if rng.random() < 0.7 else 1  # the axis the ink is summed along: 0 gives a column profile
    profile = np.cumsum(ink.astype(np.float64).sum(axis=axis))
    share = rng.uniform(0.25, 0.5)
    from_start = rng.random() < 0.5
    position = int(np.searchsorted(profile, share * profile[-1] if from_start else (1 - share) * profile[-1]))
    kept = np.arange(len(profile)) <= position if from_start else np.arange(len(profile)) >= position
    cut = ink * (kept[None, :] if axis == 0 else kept[:, None])
    if (cut > 0.3).sum() < 12 * (ink.shape[0] / 28) ** 2 or is_bar(cut) or has_hole(cut):
        return None
    return cut


def cut_digit(rng, digits, labels) -> np.ndarray | None:
    """A training digit cut (`piece`): what the search sees when it cuts a digit where no two digits meet."""
    cut = piece(digits[rng.integers(len(digits))].astype(np.float32) / 255, rng)
    return None if cut is None else enlarged((cut * 255).astype(np.uint8))


def cut_nondigit(rng, digits, labels) -> np.ndarray | None:
    """A scribble, shape, outline, doodle or letter cut (`piece`): the search cuts a wide non-digit into pieces
    and reads each, so a piece must read as no digit either."""
    family = ("scribble", "shape", "outline", "doodle", "letter")[rng.integers(5)]
    return piece(FAMILIES[family](rng, digits, labels), rng)


def side_by_side(rng, digits, labels) -> np.ndarray:
    """Two or three training digits in a row: apart, touching or overlapping by up to half a digit."""
    count = 2 if rng.random() < 0.75 else 3
    picks = rng.integers(len(digits), size=count)
    pieces = [enlarged(digits[index], 4.0 * rng.uniform(0.8, 1.15)) for index in picks]
    has_one = bool((labels[picks] == 1).any())
    height = max(piece.shape[0] for piece in pieces) + 40
    width = sum(piece.shape[1] for piece in pieces) + 80 * count
    page = np.zeros((height, width), dtype=np.float32)
    x = 20
    for piece in pieces:
        y = int(np.clip((height - piece.shape[0]) / 2 + rng.normal(0, 6), 0, height - piece.shape[0]))
        page[y : y + piece.shape[0], x : x + piece.shape[1]] = np.maximum(
            page[y : y + piece.shape[0], x : x + piece.shape[1]], piece
        )
        # A 1 overlapping another digit reads as that digit's stroke: ones keep a gap.
        gap = rng.uniform(0.05, 0.3) if has_one else rng.uniform(-0.5, 0.3)
        x = max(0, x + piece.shape[1] + int(gap * piece.shape[1]))
    return page


def doodle(rng, digits, labels) -> np.ndarray:
    """A pen drawing of three to five simple parts, each starting where the last ended or crossing it: bent
    lines with sharp corners, arcs, small loops, zigzags. Arrows, ticks, stars, faces and houses are drawn so;
    three or more such parts joined at random rarely make a digit."""
    image, draw = canvas()
    width = pen(rng)
    point = rng.uniform(40, CANVAS - 40, 2)
    for _ in range(int(rng.integers(3, 6))):
        kind = rng.integers(4)
        if rng.random() < 0.3:  # a part that starts apart: an eye, an arrow's head, a roof over a box
            point = np.clip(point + rng.normal(0, 25, 2), 15, CANVAS - 15)
        if kind == 0:  # a bent line: each corner turns 60-150 degrees
            heading, path = rng.uniform(0, 2 * np.pi), [point]
            for _ in range(int(rng.integers(2, 4))):
                step = rng.uniform(20, 45) * np.array([np.cos(heading), np.sin(heading)])
                path.append(np.clip(path[-1] + step, 8, CANVAS - 8))
                heading += rng.choice([-1, 1]) * rng.uniform(np.pi / 3, 5 * np.pi / 6)
            draw.line([tuple(p) for p in path], fill=255, width=width, joint="curve")
            point = path[-1]
        elif kind == 1:  # an arc of a quarter to three quarters of a circle
            radius, start = rng.uniform(12, 35), rng.uniform(0, 360)
            box = [*(point - radius), *(point + radius)]
            draw.arc(box, start, start + rng.uniform(90, 270), fill=255, width=width)
            point = point + radius * np.array([np.cos(np.radians(start)), np.sin(np.radians(start))])
        elif kind == 2:  # a small loop, filled or not: an eye, a dot, a knot
            radius = rng.uniform(4, 14)
            fill = 255 if rng.random() < 0.4 else None
            draw.ellipse([*(point - radius), *(point + radius)], fill=fill, outline=255, width=width)
        else:  # a zigzag of three to six teeth
            heading = rng.uniform(0, 2 * np.pi)
            along, across = np.array([np.cos(heading), np.sin(heading)]), np.array([-np.sin(heading), np.cos(heading)])
            step, depth = rng.uniform(8, 16), rng.uniform(8, 20)
            path = [point + along * step * k + across * depth * (k % 2) for k in range(int(rng.integers(4, 8)))]
            draw.line([tuple(np.clip(p, 8, CANVAS - 8)) for p in path], fill=255, width=width, joint="curve")
            point = np.clip(path[-1], 15, CANVAS - 15)
    return as_ink(image)


def blob(rng, digits, labels) -> np.ndarray:
    """Ink blots: overlapping filled ellipses, with or without droplets."""
    image, draw = canvas()
    centre = rng.uniform(45, CANVAS - 45, 2)
    for _ in range(int(rng.integers(1, 5))):
        offset, radii = rng.normal(0, 12, 2), rng.uniform(8, 30, 2)
        draw.ellipse([*(centre + offset - radii), *(centre + offset + radii)], fill=255)
    for _ in range(int(rng.integers(0, 6))):
        spot, radius = centre + rng.normal(0, 35, 2), rng.uniform(2, 7)
        draw.ellipse([*(spot - radius), *(spot + radius)], fill=255)
    return as_ink(image)


def texture(rng, digits, labels) -> np.ndarray | None:
    """Paper with grain, smudges, ruled lines or cross-hatching, read by the whole `preprocess` (which finds no
    digit in most of them: those come back None)."""
    side = TEXTURE_SIDE
    grey = 0.85 + rng.normal(0, rng.uniform(0.01, 0.08), (side, side))
    smudge = Image.fromarray((rng.random((side // 8, side // 8)) * 255).astype(np.uint8))
    smudge = as_ink(smudge.resize((side, side), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(3)))
    grey -= rng.uniform(0, 0.6) * np.clip(smudge - rng.uniform(0.4, 0.7), 0, None)
    if rng.random() < 0.5:
        spacing, thickness = int(rng.integers(10, 30)), int(rng.integers(1, 4))
        for start in range(int(rng.integers(0, spacing)), side, spacing):
            grey[start : start + thickness] -= 0.35
            if rng.random() < 0.3:
                grey[:, start : start + thickness] -= 0.35
    try:
        return preprocess(np.clip(grey, 0, 1).astype(np.float32))
    except NoDigitError:
        return None


def is_bar(ink: np.ndarray) -> bool:
    """Ink over twice as tall as wide: it frames as a 1."""
    rows, columns = np.flatnonzero(ink.max(axis=1) > 0.3), np.flatnonzero(ink.max(axis=0) > 0.3)
    return len(rows) > 0 and len(rows) > 2 * len(columns)


FAMILIES = {
    "scribble": scribble,
    "dash": dash,
    "shape": shape,
    "outline": outline,
    "letter": letter,
    "cut digit": cut_digit,
    "digits side by side": side_by_side,
    "blob": blob,
    "texture": texture,
    "doodle": doodle,
    "cut non-digit": cut_nondigit,
}


def draw_family(family: str, rng, digits, labels, attempts: int = 20) -> np.ndarray:
    """One framed 28x28 float non-digit of `family`; families that refuse a drawing are asked again."""
    for _ in range(attempts):
        drawing = FAMILIES[family](rng, digits, labels)
        if drawing is None:
            continue
        if family in ("scribble", "shape", "doodle") and is_bar(drawing):  # cut digits refuse their own bars
            continue
        image = drawing if drawing.shape == (28, 28) else framed(drawing)
        if image is not None:
            return image
    return framed(scribble(rng, digits, labels))


def generate(count: int, digits: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """`count` non-digits (uint8, N x 28 x 28, ink bright), families mixed by FAMILY_WEIGHTS; the cut and paired
    digits come from `digits` only (pass the training part, never validation or test digits)."""
    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    names = list(FAMILY_WEIGHTS)
    weights = np.array([FAMILY_WEIGHTS[name] for name in names])
    chosen = rng.choice(len(names), size=count, p=weights / weights.sum())
    labels = np.asarray(labels)
    images = [draw_family(names[index], rng, digits, labels) for index in chosen]
    return (np.stack(images) * 255).round().astype(np.uint8) if images else np.zeros((0, 28, 28), np.uint8)


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning (1984): the one-pixel centre line of a binary shape, keeping it connected."""
    image = np.pad(mask.astype(np.uint8), 1)
    changed = True
    while changed:
        changed = False
        for first_pass in (True, False):
            p = image
            # Neighbours P2..P9, clockwise from north, as in the paper.
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            count = sum(n)
            transitions = sum(((n[i] == 0) & (n[(i + 1) % 8] == 1)).astype(np.uint8) for i in range(8))
            if first_pass:
                side_a, side_b = n[0] * n[2] * n[4], n[2] * n[4] * n[6]
            else:
                side_a, side_b = n[0] * n[2] * n[6], n[0] * n[4] * n[6]
            remove = (
                (p[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & (side_a == 0) & (side_b == 0)
            )
            if remove.any():
                image = image.copy()
                image[1:-1, 1:-1][remove] = 0
                changed = True
    return image[1:-1, 1:-1].astype(np.float64)


def rendered_digit(rng, digit: np.ndarray) -> np.ndarray | None:
    """A training digit as `preprocess` makes it from a picture of it: written at 60-160 px with MNIST's pen, one
    finer (worn down by up to 1.2 MNIST pixels a side, its thinnest parts broken, as faint ink photographs) or
    broader, or its centre line redrawn with an even pen of 0.4-1.6 MNIST pixels, on paper with noise and uneven
    light. MNIST's own framing is not quite what `preprocess` makes of people's images, and the
    "not a digit" output must not learn that difference as its own; these stay digits (their own labels). None
    when `preprocess` finds no digit."""
    side = int(rng.integers(60, 161))
    ink = as_ink(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    pixel = side / 28  # one MNIST pixel at this size
    # A quarter worn down, to 1.2 pixels: eroded-stroke photos lost 1.05 points on validation rather than 1.60.
    change = rng.choice(["none", "finer", "broader", "pen"], p=[0.3, 0.25, 0.2, 0.25])
    if change == "pen":  # its centre line written again with a pen of even width, ballpoint to felt tip
        line = Image.fromarray((skeleton(ink > 0.5) * 255).astype(np.uint8))
        width = 2 * round(rng.uniform(0.2, 0.8) * pixel) + 1
        ink = as_ink(line.filter(ImageFilter.MaxFilter(width)).filter(ImageFilter.GaussianBlur(pixel / 2)))
        ink = ink / max(float(ink.max()), 1e-6)
    elif change != "none":
        size = 2 * round(rng.uniform(0.2, 1.2 if change == "finer" else 1.3) * pixel) + 1
        kind = ImageFilter.MinFilter(size) if change == "finer" else ImageFilter.MaxFilter(size)
        ink = as_ink(Image.fromarray((ink * 255).astype(np.uint8)).filter(kind))
    page = np.ones((side * 2, side * 2), dtype=np.float32) * rng.uniform(0.75, 0.95)
    rows, columns = np.mgrid[0 : side * 2, 0 : side * 2] / (side * 2)
    page -= rng.uniform(0, 0.2) * (rows if rng.random() < 0.5 else columns)  # light from one side
    top, left = rng.integers(0, side, 2)
    page[top : top + side, left : left + side] *= 1 - rng.uniform(0.7, 0.9) * ink
    page += rng.normal(0, rng.uniform(0.005, 0.04), page.shape)
    try:
        return preprocess(np.clip(page, 0, 1))
    except NoDigitError:
        return None


def rendered_digits(count: int, digits: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` training digits drawn at random, each as `rendered_digit` makes it, and their labels."""
    rng = np.random.default_rng([seed, RENDER_VERSION, 1])
    images, kept = [], []
    for index in rng.integers(len(digits), size=count):
        image = rendered_digit(rng, digits[index])
        if image is not None:
            images.append(image)
            kept.append(labels[index])
    stacked = (np.stack(images) * 255).round().astype(np.uint8) if images else np.zeros((0, 28, 28), np.uint8)
    return stacked, np.asarray(kept, dtype=np.int64)


def touching_number(rng, digits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two or three training digits touching or overlapping by up to 3 px (at MNIST's scale), 2-5x MNIST's size,
    dark on light paper with noise, as a uint8 picture; and their labels, left to right."""
    from .strip_training import digits_in_a_row, scaled_digit  # as the strip reader's training numbers are made

    chosen = rng.integers(len(digits), size=int(rng.integers(2, 4)))
    placed = [(scaled_digit(digits[index], rng.uniform(0.85, 1.05)), 7 + int(rng.integers(-2, 3))) for index in chosen]
    row = digits_in_a_row(placed, [int(rng.integers(-3, 1)) for _ in placed[1:]])
    strip = np.pad(row, ((0, 40 - row.shape[0]), (4, 4)))  # 40 rows: the tallest digit (29) from row 9 fits
    factor = rng.uniform(2, 5)
    size = (round(strip.shape[1] * factor), round(strip.shape[0] * factor))
    ink = np.asarray(Image.fromarray(strip, "F").resize(size, Image.Resampling.BICUBIC))
    paper = rng.uniform(0.8, 0.95) - rng.uniform(0.6, 0.8) * np.clip(ink, 0, 1) + rng.normal(0, 0.02, ink.shape)
    return (np.clip(paper, 0, 1) * 255).astype(np.uint8), labels[chosen]


def blob_digits(count: int, digits: np.ndarray, labels: np.ndarray, seed: int, read) -> tuple[np.ndarray, np.ndarray]:
    """About `count` training digits as the strip reader `read` (strips -> log-probabilities, as
    `recognize.strip_reader()` gives the shipped one) crops them out of touching numbers (`touching_number`), each
    with a neighbour's edge: read as a number, such crops are digits, and the "not a digit" output must not take
    them for the halves and pairs it is trained to flag. Only numbers the strip reader reads right are kept: where
    it misplaces a digit, the crops' labels would be wrong."""
    from .segment import lay_out
    from .strips import blob_region, decode, split_region

    rng = np.random.default_rng([seed, BLOB_VERSION, 2])
    images, kept = [], []
    for _ in range(count * 4):  # about a third of the numbers give their crops; never loops forever
        if len(images) >= count:
            break
        picture, truth = touching_number(rng, digits, labels)
        try:
            layout = lay_out(Image.fromarray(picture))
        except NoDigitError:
            continue
        region = blob_region(layout, set(range(1, len(layout.component_boxes) + 1)))
        found = decode(read([region[0]])[0]) if region is not None else []
        if [int(probabilities.argmax()) for probabilities, _ in found] == list(truth):
            for (_, _, crop), label in zip(split_region(layout, region, found), truth, strict=True):
                images.append(crop)
                kept.append(label)
    stacked = (np.stack(images[:count]) * 255).round().astype(np.uint8) if images else np.zeros((0, 28, 28), np.uint8)
    return stacked, np.asarray(kept[:count], dtype=np.int64)


def cached_pool(count: int, digits: np.ndarray, labels: np.ndarray, seed: int, folder: Path) -> np.ndarray:
    """`generate`, kept in `folder` under a name made of its arguments, so a second run with the same seed and
    digits costs a file read."""
    kind = f"nondigits-v{GENERATOR_VERSION}"
    images, _ = cached(folder, kind, count, digits, seed, lambda: (generate(count, digits, labels, seed), None))
    return images


def cached_renders(count: int, digits: np.ndarray, labels: np.ndarray, seed: int, folder: Path):
    """`rendered_digits`, cached as `cached_pool` caches non-digits: (images, labels)."""
    kind = f"rendered-v{RENDER_VERSION}"
    return cached(folder, kind, count, digits, seed, lambda: rendered_digits(count, digits, labels, seed))


def cached_blob_digits(count: int, digits: np.ndarray, labels: np.ndarray, seed: int, folder: Path, read):
    """`blob_digits`, cached as `cached_pool` caches non-digits: (images, labels). The file's name does not name the
    strip reader, which is the shipped one: bump BLOB_VERSION when that is retrained."""
    kind = f"blob-digits-v{BLOB_VERSION}"
    return cached(folder, kind, count, digits, seed, lambda: blob_digits(count, digits, labels, seed, read))


def cached(folder: Path, kind: str, count: int, digits: np.ndarray, seed: int, make) -> tuple:
    """(images, labels or None) from `make()`, or from the file an earlier call with these arguments wrote; `kind`
    names the pool and its drawings' version. A pool with labels may hold fewer than `count` (drawings `preprocess`
    found no digit in are left out)."""
    digest = hashlib.sha256(np.ascontiguousarray(digits).tobytes()).hexdigest()[:16]
    path = Path(folder) / f"{kind}-{count}-{seed}-{digest}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as archive:
                images, labels = archive["images"], archive.get("labels")
            whole = len(images) == count if labels is None else len(labels) == len(images) <= count
            if whole and images.shape[1:] == (28, 28) and images.dtype == np.uint8:
                return images, labels
        except (OSError, ValueError, KeyError):
            pass  # unreadable: made again below
    images, labels = make()
    with atomic_path(path) as temporary:
        np.savez_compressed(temporary, images=images, **({} if labels is None else {"labels": labels}))
    return images, labels
