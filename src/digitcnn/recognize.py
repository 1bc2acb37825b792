"""From image files to answers: find the digits in each, predict them all in one batch, and say when not to
trust the answer. The CLI's `predict`, the HTTP API, the web page and `digitcnn.read` all answer with
`Reading.as_dict()`."""

import dataclasses
import functools
import glob
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ImageError, ModelError, NoDigitError, TooManyDigitsError
from .files import file_sha256
from .images import load_image, normalize_mode
from .inference import load_model, predict_logits
from .metrics import softmax
from .preprocess import frame_digit, preprocess
from .rejection import NOT_A_DIGIT, REJECT, RejectConfig, digit_probabilities, rejects
from .search import DIGITS, best_digits
from .segment import DEFAULTS, Layout, SegmentConfig, cut_unsure, lay_out
from .strips import OnnxStripReader, reread_blobs
from .writer import Writer, writer_of

# Reads blobs of touching digits whole (strips.py); `python -m digitcnn.strip_training` reproduces it.
STRIP_READER = Path(__file__).parent / "weights" / "strips.safetensors"

# Below this top-class probability the answer is flagged unsure. A calibrated model that says 0.7 is right
# about 70% of the time; we would rather say "not sure" than be wrong that often.
UNSURE_BELOW = 0.7
# Images laid out at once: their candidates share one forward pass, and their ink maps (a few MB each for a
# photo) are freed before the next ones are read, so a folder of 10,000 photos never holds them all.
READ_AT_ONCE = 64
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclasses.dataclass
class Reading:
    file: str | None
    label: int | None = None
    class_name: str | None = None
    confidence: float | None = None
    probabilities: list[float] | None = None
    top3: list[dict] | None = None
    unsure: bool = True
    error: str | None = None
    input: np.ndarray | None = dataclasses.field(default=None, repr=False)  # the 28x28 the model saw
    original: object | None = dataclasses.field(default=None, repr=False)  # the decoded image, for --show
    failure: Exception | None = dataclasses.field(default=None, repr=False)  # what `error` says, for the server
    not_a_digit: float | None = None  # the probability behind "not a digit"; None for a model without that output
    # --- numbers (issue 17): every digit of the image, left to right, lines top to bottom ---
    text: str = ""  # the digits read, lines joined by "\n"
    digits: list[dict] = dataclasses.field(default_factory=list)  # {label, confidence, unsure, box} each
    layout: Layout | None = dataclasses.field(default=None, repr=False)  # the candidates, until they are scored

    def as_dict(self) -> dict:
        fields = (
            "file",
            "text",
            "digits",
            "label",
            "class_name",
            "confidence",
            "probabilities",
            "top3",
            "unsure",
            "error",
            "not_a_digit",
        )
        return {name: getattr(self, name) for name in fields}


def read_images(
    model, sources: list, names: list[str] | None = None, keep_originals: bool = False, config: SegmentConfig = DEFAULTS
) -> list[Reading]:
    """One Reading per source (a path, bytes, a file object, a PIL image or an array), in order, with every
    digit it holds. A source that fails gets its `error` and the others go on. A model whose classes are not
    the ten digits reads each image as one item, as it was trained to."""
    names = names or [str(source) if isinstance(source, str | os.PathLike) else None for source in sources]
    readings = []
    for start in range(0, len(sources), READ_AT_ONCE):
        chunk = slice(start, start + READ_AT_ONCE)
        readings.extend(read_chunk(model, sources[chunk], names[chunk], keep_originals, config))
    return readings


def reads_numbers(model_config) -> bool:
    """Whether a model's first ten classes are the ten digits: only then are its images read as numbers (the search
    and the strip reader, which knows the digits alone); a model of letters reads each image as one character."""
    return [str(digit) for digit in range(DIGITS)] == list(model_config.class_names[:DIGITS])


def read_chunk(model, sources: list, names: list, keep_originals: bool, config: SegmentConfig) -> list[Reading]:
    as_numbers = reads_numbers(model.config)
    writer = writer_of(model.config)  # a hand the model was fine-tuned to have undone
    readings, inputs = [], []
    wholes: dict[int, np.ndarray] = {}  # reading index -> the image framed whole as one digit (reject models)
    for source, name in zip(sources, names, strict=True):
        reading = Reading(file=name)
        try:
            image = opened(source, config.working_side)
            reading.original = image if keep_originals else None
            if as_numbers:
                reading.layout = lay_out(image, config, writer)
                inputs.extend(reading.layout.inputs)
                if rejects(model.config):
                    wholes[len(readings)] = whole_image(reading.layout.ink, writer)
            else:
                reading.input = preprocess(image, writer)
                inputs.append(reading.input)
        except NoDigitError as error:
            reading.error, reading.failure = "no digit found", error
        except ImageError as error:
            reading.error, reading.failure = str(error), error
        readings.append(reading)
    wholes = {index: image for index, image in wholes.items() if image is not None}
    # The crops and the whole images in one pass of the model: for a few images, a pass costs mostly its overhead.
    batch = inputs + list(wholes.values())
    logits = predict_logits(model, np.stack(batch)) if batch else np.zeros((0, model.config.num_classes))
    logits, whole_logits = logits[: len(inputs)], logits[len(inputs) :]
    whole_scores = dict(zip(wholes, calibrated(whole_logits, model)[:, -1].tolist(), strict=True))
    start = 0
    for index, reading in enumerate(readings):
        if reading.layout is not None:
            count = len(reading.layout.inputs)
            own = logits[start : start + count]
            # Components that may hold two digits are cut; the new candidates (if any are new) are scored.
            if cut_unsure(reading.layout, own, config) and len(reading.layout.inputs) > count:
                own = np.concatenate([own, predict_logits(model, np.stack(reading.layout.inputs[count:]))])
            take_digits(reading, own, model, config, whole_scores.get(index))
            start += count
        elif reading.input is not None:
            probabilities = calibrated(logits[start], model)
            fill(reading, probabilities, model.config)
            reading.text, reading.digits = reading.class_name or "", [digit_entry(probabilities, None)]
            start += 1
    return readings


def calibrated(logits: np.ndarray, model) -> np.ndarray:
    """Probabilities from logits as `predict` makes them: at the model's fitted temperature."""
    return softmax(logits, model.config.temperature).astype(np.float32)


def opened(source, max_side: int):
    """What read_images takes -> a PIL image or an array, as `lay_out` and `preprocess` take it."""
    if isinstance(source, Image.Image):
        return normalize_mode(source)
    if isinstance(source, np.ndarray):
        return source
    return load_image(source, max_side=max_side)


def whole_image(layout_ink: np.ndarray, writer: Writer | None = None) -> np.ndarray | None:
    """The image framed as one digit, as `preprocess` frames a lone digit, from the layout's ink map (even of a
    shrunk working copy: a 28x28 frame needs no more than its 1,024 pixels a side, and making the ink map of a
    12-megapixel photo again more than doubled its reading time); None when no digit stands out."""
    try:
        return frame_digit(layout_ink, writer)
    except NoDigitError:
        return None


def take_digits(
    reading: Reading, logits: np.ndarray, model, config: SegmentConfig, whole_score: float | None = None
) -> None:
    """The reading of a number from its layout's scored candidates: a lone digit fills every field as it
    always has; several leave `label` (and the fields of one digit) empty, `confidence` the least sure digit's.
    With the "not a digit" output, `whole_score` is its probability for the whole image read as one digit."""
    layout, reading.layout = reading.layout, None
    probabilities = calibrated(logits, model)
    threshold = getattr(model.config, "not_a_digit_threshold", None)  # a model with the "not a digit" output
    not_a_digit = probabilities[:, -1] if threshold is not None else None
    searched = lines = best_digits(layout, logits, config, not_a_digit)
    if config.read_blobs and (read_strips := strip_reader(strip_weights(model))) is not None:

        def classify(crops: list[np.ndarray]) -> np.ndarray:
            return calibrated(predict_logits(model, np.stack(crops)), model)

        lines, probabilities = reread_blobs(layout, lines, probabilities, read_strips, classify, config)
    chosen = [index for line in lines for index in line]
    # An image is digits when either reading of it reads as digits: the search's cuts of a touching number look
    # like the cut digits the "not a digit" output flags, while the strip reader's crops of it are digits with a
    # neighbour's edge, which it learns to accept (nondigits.blob_digits). A non-digit is answered with the
    # search's reading and its score (the reread only adds rows: the search's digits keep theirs).
    score, is_a_digit = None, True
    searched_digits = [index for line in searched for index in line]
    if threshold is not None and searched_digits and chosen:
        score = image_score(probabilities[searched_digits, -1], whole_score)
        is_a_digit = min(score, image_score(probabilities[chosen, -1], whole_score)) < threshold
        if not is_a_digit:
            lines, chosen = searched, searched_digits
    if not chosen:
        reading.error, reading.failure = "no digit found", NoDigitError("no digit found")
        return
    if len(chosen) > config.max_digits:
        reading.error, reading.failure = "too many digits", TooManyDigitsError("too many digits")
        return
    reading.digits = [digit_entry(probabilities[index], layout.boxes[index], threshold) for index in chosen]
    numbers = iter(reading.digits)
    lines_read = (
        "".join(str(digit["label"]) for digit in (next(numbers) for _ in line) if digit["label"] is not None)
        for line in lines
    )
    reading.text = "\n".join(line for line in lines_read if line)
    reading.input = np.hstack([layout.inputs[index] for index in chosen])
    if len(chosen) == 1:
        fill(reading, probabilities[chosen[0]], model.config)
    else:
        reading.confidence = min(digit["confidence"] for digit in reading.digits)
        reading.unsure = any(digit["unsure"] for digit in reading.digits)
    if not is_a_digit:
        say_not_a_digit(reading, score)


def image_score(scores: np.ndarray, whole_score: float | None, reject: RejectConfig = REJECT) -> float:
    """The "not a digit" score of a whole image, on the scale of the model's threshold, from the probabilities
    of the digits one reading of it chose. One digit: its own, or the image's read whole as one digit if higher
    (the search may have kept one digit-like stroke of a scribble and left the rest out). Several: their mean,
    over the share of the threshold it must reach (`RejectConfig.several_digits_share`: a scribble cut in pieces
    reads as digits each somewhat unlike one; each digit of a number is clearly one), at most 1. Chosen on the
    generator's own non-digits and validation digits and numbers (benchmarks/README.md), never on the held-out
    families."""
    if len(scores) == 1:
        return max(float(scores[0]), whole_score if whole_score is not None else 0.0)
    return min(1.0, float(np.mean(scores)) / reject.several_digits_share)


def say_not_a_digit(reading: Reading, score: float) -> None:
    """The whole image is not a digit, nor a number: no label and no text, its digits none either."""
    reading.label = reading.class_name = reading.confidence = None
    reading.unsure, reading.error, reading.not_a_digit, reading.text = True, NOT_A_DIGIT, round(score, 6), ""
    for digit in reading.digits:
        digit["label"], digit["unsure"] = None, True


def digit_entry(probabilities: np.ndarray, box: list[int] | None, not_a_digit_threshold: float | None = None) -> dict:
    """One digit of a number. With the "not a digit" output, its probability too; above the model's threshold,
    no label, unsure, and the number's text leaves it out."""
    label = int(np.argmax(probabilities[:DIGITS]))
    confidence = round(float(probabilities[label]), 6)
    entry = {"label": label, "confidence": confidence, "unsure": confidence < UNSURE_BELOW, "box": box}
    if not_a_digit_threshold is not None:
        entry["not_a_digit"] = round(float(probabilities[-1]), 6)
        if entry["not_a_digit"] >= not_a_digit_threshold:
            entry["label"], entry["unsure"] = None, True
    return entry


def strip_weights(model) -> Path:
    """The strip reader `model` reads touching digits with: its run's own (`finetune` writes one), else the shipped
    one. A model loaded otherwise than by `load_model` (one still training, an ensemble's member) has no run's."""
    return getattr(model, "strip_weights", None) or STRIP_READER


@functools.cache
def strip_reader(weights: Path = STRIP_READER):
    """The shipped strip reader (or the one at `weights`) as a function of strips, or None in an install without it:
    its ONNX twin when onnxruntime is installed and the twin was exported from these weights, else the weights in
    PyTorch. `weights` may be an exported run's reader, an .onnx file alone."""
    if not weights.exists():
        return None
    if weights.suffix == ".onnx":  # an exported run's own reader: nothing beside it to check it against
        return OnnxStripReader(weights)
    twin = weights.with_suffix(".onnx")
    try:
        if twin.is_file() and (reader := OnnxStripReader(twin)).source_sha256 == file_sha256(weights):
            return reader
    except ModelError:
        pass  # no onnxruntime (the export extra), or a twin it cannot open: the weights themselves still read
    from .strip_training import load_strip_reader, torch_reader

    return torch_reader(load_strip_reader(weights))


@functools.cache
def shipped_model():
    return load_model(None, onnx_twin=True)


def read(image, model=None) -> dict:
    """Every digit in one image (a path, bytes, a PIL image or an array) with the shipped model or `model`:
    the same dict `digitcnn predict --json` prints, with `text` the number read."""
    return read_images(model if model is not None else shipped_model(), [image])[0].as_dict()


def fill(reading: Reading, probabilities: np.ndarray, config) -> None:
    """The answer from one row of predict's probabilities: the ten digits' (the "not a digit" class apart), the
    top digit, and whether to trust it."""
    class_names = config.class_names
    probabilities, not_a_digit = digit_probabilities(probabilities, config)
    order = np.argsort(probabilities)[::-1]
    reading.label = int(order[0])
    reading.class_name = class_names[reading.label]
    reading.confidence = round(float(probabilities[order[0]]), 6)
    reading.probabilities = [round(float(value), 6) for value in probabilities]
    reading.top3 = [
        {"label": int(index), "class_name": class_names[index], "probability": round(float(probabilities[index]), 6)}
        for index in order[:3]
    ]
    reading.unsure = reading.confidence < UNSURE_BELOW
    if not_a_digit is not None:
        reading.not_a_digit = round(float(not_a_digit), 6)
        if not_a_digit >= config.not_a_digit_threshold:
            reading.label = reading.class_name = reading.confidence = None
            reading.unsure, reading.error = True, NOT_A_DIGIT


def is_failure(reading: Reading) -> bool:
    """Whether the image could not be read: "no digit found" and "not a digit" are answers about the image."""
    return reading.error is not None and reading.error not in ("no digit found", NOT_A_DIGIT)


def csv_rows(readings: list[Reading], config) -> list[list]:
    """`predict --csv`: a header, then one row per reading; the ten digits' probabilities, then "not a digit"'s
    (empty for a model without that output), and last the number read, so the columns older readers know keep
    their places."""
    digits = config.num_classes - (1 if rejects(config) else 0)
    rows = [
        ["file", "label", "confidence", "unsure", "error"] + [f"p{i}" for i in range(digits)] + ["not_a_digit", "text"]
    ]
    for reading in readings:
        rows.append(
            [reading.file, reading.label, reading.confidence, reading.unsure, reading.error or ""]
            + (reading.probabilities or [""] * digits)
            + ["" if reading.not_a_digit is None else reading.not_a_digit, reading.text]
        )
    return rows


def describe(reading: Reading) -> str:
    """`predict`'s plain line for one reading."""
    if reading.error == NOT_A_DIGIT:
        return f"{reading.file}: {NOT_A_DIGIT} (probability {reading.not_a_digit:.3f})"
    if reading.error:
        return f"{reading.file}: {reading.error}"
    if len(reading.digits) > 1:  # a number: its text on one line, then how sure its least sure digit is
        flag = "  (unsure)" if reading.unsure else ""
        text = reading.text.replace("\n", " ")
        return f"{reading.file}: {text} ({len(reading.digits)} digits; least confidence {reading.confidence:.3f}){flag}"
    top = ", ".join(f"{entry['class_name']} {entry['probability']:.3f}" for entry in reading.top3)
    flag = "  (unsure)" if reading.unsure else ""
    return f"{reading.file}: {reading.class_name} (confidence {reading.confidence:.3f}; top-3 {top}){flag}"


def expand_paths(arguments: list[str]) -> list[str]:
    """FILE, DIR (its image files, sorted) or GLOB arguments -> file paths. A name matching nothing stays as
    it is, so the reader reports it as that file's error instead of dropping it silently."""
    paths: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = sorted(p for p in Path(argument).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            paths.extend(str(path) for path in found)
        elif not os.path.exists(argument) and glob.has_magic(argument):
            paths.extend(sorted(glob.glob(argument)) or [argument])
        else:
            paths.append(argument)
    return paths
