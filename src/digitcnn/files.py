"""Atomic file writes: a crash or Ctrl-C leaves either the old file or the new one, never half of one. And a
file's sha256, by which an ONNX twin names the weights it was exported from."""

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; when the block ends cleanly it is fsynced and renamed over `path`.

    Use it for writers that want a filename (numpy, safetensors, matplotlib)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the final rename never crosses file systems; the suffix keeps writers that
    # dispatch on it (savefig, np.savez) happy.
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        with open(temporary_path, "rb+") as written:
            os.fsync(written.fileno())
            # mkstemp makes the file owner-only; give it the mode any other new file would get.
            os.fchmod(written.fileno(), 0o666 & ~current_umask())
        os.replace(temporary_path, target)
    finally:
        temporary_path.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Writes bytes, or text as UTF-8, to `path` atomically."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload)


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
