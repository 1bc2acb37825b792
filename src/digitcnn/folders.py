"""Folders of image files as labelled data: one folder per class (the layout of Keras' image_dataset_from_directory
and torchvision's ImageFolder), or a labels.csv of `file,label` rows. Every image goes through the same
`load_image` + `preprocess` as `digitcnn predict`; a file or folder that cannot be used is listed, one line each,
and skipped."""

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np

from .errors import DataError, ImageError, NoDigitError
from .images import load_image
from .preprocess import preprocess
from .writer import Writer

LABELS_FILE = "labels.csv"
IDX_PREFIXES = ("train-images", "train-labels", "t10k-images", "t10k-labels")  # a folder of these is data.py's


@dataclasses.dataclass
class Samples:
    """The usable images of a folder, as MNIST holds its own, and what was skipped."""

    images: np.ndarray  # (N, 28, 28) uint8, ink bright on black
    labels: np.ndarray  # (N,) int64: indices into class_names
    class_names: list[str]
    files: list[str]  # where each image came from
    problems: list[str]  # one line per file or folder skipped

    def take(self, indices) -> "Samples":
        files = [self.files[index] for index in indices]
        return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices], files=files)


def is_image_folder(path) -> bool:
    """A folder with a labels.csv or with subfolders, and no IDX files (those are read by data.py)."""
    path = Path(path)
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    if any(entry.name.startswith(IDX_PREFIXES) for entry in entries):
        return False
    return (path / LABELS_FILE).is_file() or any(entry.is_dir() and not hidden(entry) for entry in entries)


def hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name == "__MACOSX"  # .DS_Store, editor files, macOS zip debris


def natural_key(name: str) -> list:
    """ "2" before "10", and letters alphabetically: the order people expect class folders in."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def listed_files(folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(file, class name) pairs in a stable order, and the problems met listing them."""
    if (folder / LABELS_FILE).is_file():
        return labels_csv_files(folder)
    pairs, problems = [], []
    for entry in sorted(folder.iterdir(), key=lambda entry: natural_key(entry.name)):
        if hidden(entry) or entry.name == LABELS_FILE:
            continue
        if not entry.is_dir():
            problems.append(f"{entry}: not in a class folder")
            continue
        files = sorted((path for path in entry.rglob("*") if path.is_file() and not hidden(path)), key=str)
        if not files:
            problems.append(f"{entry}/: an empty class folder")
        pairs += [(path, entry.name) for path in files]
    return pairs, problems


def labels_csv_files(folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    pairs, problems = [], []
    root = folder.resolve()
    try:
        with open(folder / LABELS_FILE, newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{folder / LABELS_FILE}: cannot read it ({error})") from None
    if rows and [cell.strip().lower() for cell in rows[0]] == ["file", "label"]:
        rows = rows[1:]
    for line, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            problems.append(f"{folder / LABELS_FILE}, row {line}: expected file,label, not {len(row)} cells")
            continue
        name, label = row[0].strip(), row[1].strip()
        path = (folder / name).resolve()
        if not path.is_relative_to(root):  # a row may not read files outside the data folder
            problems.append(f"{folder / LABELS_FILE}, row {line}: {name} is outside {folder}")
        else:
            pairs.append((folder / name, label))
    return pairs, problems


def read_samples(folder, class_names: list[str] | None = None, report=None, writer: Writer | None = None) -> Samples:
    """Every usable image under `folder`, labelled by its class folder (or labels.csv), framed by `preprocess`
    (with `writer`'s hand undone). With `class_names` (a model's), a class not among them is skipped as a problem;
    without, the classes are the names found. Each problem is also handed to `report` (e.g. print) as it is met,
    so the list is seen even if an error follows."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    problems: list[str] = []

    def skip(problem: str) -> None:
        problems.append(problem)
        if report is not None:
            report(problem)

    pairs, listing_problems = listed_files(folder)
    for problem in listing_problems:
        skip(problem)
    if class_names is not None:
        for name in sorted({name for _, name in pairs} - set(class_names), key=natural_key):
            skip(f"{folder / name}: not a class of the model ({', '.join(class_names)})")
        pairs = [(path, name) for path, name in pairs if name in class_names]
    names = list(class_names) if class_names is not None else sorted({name for _, name in pairs}, key=natural_key)
    images, labels, files = [], [], []
    for path, name in pairs:
        try:
            pixels = preprocess(load_image(path), writer)
        except NoDigitError:
            skip(f"{path}: no digit found")
            continue
        except ImageError as error:
            skip(f"{path}: {error}")
            continue
        images.append(np.rint(pixels * 255).astype(np.uint8))  # uint8, as MNIST and the training loop hold images
        labels.append(names.index(name))
        files.append(str(path))
    if not images:
        raise DataError(f"{folder}: no usable image" + (f" ({len(problems)} skipped)" if problems else ""))
    empty = sorted({name for _, name in pairs} - {names[label] for label in labels}, key=natural_key)
    if empty:  # a class given only bad files: training would learn it from nothing
        raise DataError(
            f"{folder}: class {', '.join(empty)} has no usable image (its files were skipped); every "
            "class given needs at least 1"
        )
    return Samples(np.stack(images), np.asarray(labels, dtype=np.int64), names, files, problems)


def split_per_class(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) indices: `fraction` of each class, drawn with `seed`, held out, but never a class's last
    example. Both come shuffled, so a validation split cut from the end of the kept part holds every class."""
    generator = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        count = min(round(fraction * len(members)), len(members) - 1)
        held.append(members[:count])
        kept.append(members[count:])
    return generator.permutation(np.concatenate(kept)), generator.permutation(np.concatenate(held))
