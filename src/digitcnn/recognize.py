"""From image files to answers: preprocess each, predict in one batch, and say when not to trust the answer.
The CLI's `predict`, the HTTP API and the web page all answer with `Reading.as_dict()`."""

import dataclasses
import glob
import os
from pathlib import Path

import numpy as np

from .errors import ImageError, NoDigitError
from .inference import predict
from .preprocess import load_image, preprocess
from .rejection import NOT_A_DIGIT, digit_probabilities, rejects

# Below this top-class probability the answer is flagged unsure. A calibrated model that says 0.7 is right
# about 70% of the time; we would rather say "not sure" than be wrong that often.
UNSURE_BELOW = 0.7
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
    not_a_digit: float | None = None  # the probability behind "not a digit"; None for a model without that output
    input: np.ndarray | None = dataclasses.field(default=None, repr=False)  # the 28x28 the model saw
    original: object | None = dataclasses.field(default=None, repr=False)  # the decoded image, for --show
    failure: Exception | None = dataclasses.field(default=None, repr=False)  # what `error` says, for the server

    def as_dict(self) -> dict:
        fields = ("file", "label", "class_name", "confidence", "probabilities", "top3", "unsure", "error",
                  "not_a_digit")  # fmt: skip
        return {name: getattr(self, name) for name in fields}


def read_images(model, sources: list, names: list[str] | None = None, keep_originals: bool = False) -> list[Reading]:
    """One Reading per source (a path, bytes or a file object), in order. A source that fails gets its
    `error` and the others go on."""
    names = names or [str(source) if isinstance(source, str | os.PathLike) else None for source in sources]
    readings, inputs = [], []
    for source, name in zip(sources, names, strict=True):
        reading = Reading(file=name)
        try:
            image = load_image(source)
            reading.original = image if keep_originals else None
            reading.input = preprocess(image)
            inputs.append(reading.input)
        except NoDigitError as error:
            reading.error, reading.failure = "no digit found", error
        except ImageError as error:
            reading.error, reading.failure = str(error), error
        readings.append(reading)
    if inputs:
        probabilities = predict(model, np.stack(inputs))
        answered = (reading for reading in readings if reading.input is not None)
        for reading, row in zip(answered, probabilities, strict=True):
            fill(reading, row, model.config)
    return readings


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
    reading.top3 = [{"label": int(index), "probability": round(float(probabilities[index]), 6)} for index in order[:3]]
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
    (empty for a model without that output)."""
    digits = config.num_classes - (1 if rejects(config) else 0)
    rows = [["file", "label", "confidence", "unsure", "error"] + [f"p{i}" for i in range(digits)] + ["not_a_digit"]]
    for reading in readings:
        rows.append(
            [reading.file, reading.label, reading.confidence, reading.unsure, reading.error or ""]
            + (reading.probabilities or [""] * digits)
            + ["" if reading.not_a_digit is None else reading.not_a_digit]
        )
    return rows


def describe(reading: Reading) -> str:
    """`predict`'s plain line for one reading."""
    if reading.error == NOT_A_DIGIT:
        return f"{reading.file}: {NOT_A_DIGIT} (probability {reading.not_a_digit:.3f})"
    if reading.error:
        return f"{reading.file}: {reading.error}"
    top = ", ".join(f"{entry['label']} {entry['probability']:.3f}" for entry in reading.top3)
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
