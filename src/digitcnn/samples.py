"""Samples taught on the page, also kept on the server (`digitcnn serve --samples DIR`, off by default): each a PNG
in DIR/<class>/, ready for `digitcnn finetune --data DIR`. The server names every file, a class must be one of the
model's, and the folder is capped in files and bytes."""

import threading
import uuid
from pathlib import Path

from .errors import DigitcnnError, ImageError
from .files import atomic_write
from .images import load_image

MAX_SAMPLES = 2000  # files the folder may hold: 200 per digit is far more than a fine-tune needs
MAX_SAMPLE_BYTES = 512 * 1024  # one sample; the page's 280x280 canvas PNG is 5-20 kB
MAX_FOLDER_BYTES = 64 * 1024 * 1024  # all samples together
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class SampleRefusedError(DigitcnnError):
    """A sample the store will not keep: not a PNG, unreadable, too large, or a label that is not a class."""


class SamplesFullError(DigitcnnError):
    """The samples folder holds as many files or bytes as it may."""


class SampleStore:
    """DIR/<class name>/<server-made name>.png, counted once at start and then as samples arrive."""

    def __init__(self, folder, class_names: list[str], max_samples: int | None = None, max_bytes: int | None = None):
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.class_names = list(class_names)
        self.max_samples = MAX_SAMPLES if max_samples is None else max_samples
        self.max_bytes = MAX_FOLDER_BYTES if max_bytes is None else max_bytes
        files = [path for path in self.folder.rglob("*") if path.is_file()]
        self.count, self.bytes = len(files), sum(path.stat().st_size for path in files)
        self.lock = threading.Lock()

    def save(self, label: str, data: bytes) -> str:
        """Keeps one sample; returns its path relative to the folder."""
        if label not in self.class_names:
            raise SampleRefusedError(f"label {label!r} is not a class of the model ({', '.join(self.class_names)})")
        target = (self.folder / label).resolve()
        if target.parent != self.folder:  # a class name such as "." or ".." never makes a folder outside
            raise SampleRefusedError(f"label {label!r} does not name a folder inside the samples folder")
        if len(data) > MAX_SAMPLE_BYTES:
            raise SampleRefusedError(f"a sample of {len(data):,} bytes is over the {MAX_SAMPLE_BYTES:,}-byte cap")
        if not data.startswith(PNG_SIGNATURE):
            raise SampleRefusedError("a sample must be a PNG image (the page sends its canvas as one)")
        try:
            load_image(data)
        except ImageError as error:
            raise SampleRefusedError(f"not a readable PNG: {error}") from None
        with self.lock:
            if self.count + 1 > self.max_samples or self.bytes + len(data) > self.max_bytes:
                raise SamplesFullError(
                    f"the samples folder is full ({self.count:,} files, {self.bytes:,} bytes; caps "
                    f"{self.max_samples:,} and {self.max_bytes:,})"
                )
            name = f"{uuid.uuid4().hex}.png"
            atomic_write(target / name, data)
            self.count, self.bytes = self.count + 1, self.bytes + len(data)
        return f"{label}/{name}"
