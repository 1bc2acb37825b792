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
    input: np.ndarray | None = dataclasses.field(default=None, repr=False)  # the 28x28 the model saw
    original: object | None = dataclasses.field(default=None, repr=False)  # the decoded image, for --show
    failure: Exception | None = dataclasses.field(default=None, repr=False)  # what `error` says, for the server

    def as_dict(self) -> dict:
        fields = ("file", "label", "class_name", "confidence", "probabilities", "top3", "unsure", "error")
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
            fill(reading, row, model.config.class_names)
    return readings


def fill(reading: Reading, probabilities: np.ndarray, class_names: list[str]) -> None:
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
