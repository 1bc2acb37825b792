"""Reading image files safely: any PNG, JPEG, BMP, GIF, WebP or TIFF -> a decoded PIL image, refused by size
before a pixel is decoded, with a one-line ImageError for anything broken or foreign."""

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, ImageTooLargeError, UnsupportedImageError

# A 40-megapixel image is a large phone photo; decoded it takes up to 160 MB. Anything bigger is refused from
# its header, before a single pixel is decoded, so a decompression bomb costs nothing.
MAX_PIXELS = 40_000_000
# Encoded images larger than this are refused before they are parsed (a 40 MP JPEG is ~15 MB).
MAX_BYTES = 25 * 1024 * 1024
SUPPORTED_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP", "TIFF"}
# First bytes of the supported formats: a file that starts like one but will not open is broken, not foreign.
SIGNATURES = {
    "PNG": b"\x89PNG",
    "JPEG": b"\xff\xd8",
    "GIF": b"GIF8",
    "BMP": b"BM",
    "WEBP": b"RIFF",
    "TIFF": b"II*\x00",
    "big-endian TIFF": b"MM\x00*",
}


def load_image(source, max_side: int | None = None) -> Image.Image:
    """A path, bytes or binary file -> a decoded PIL image ("L", "RGB" or "RGBA"), EXIF orientation applied.
    With max_side, a JPEG larger than that is decoded at 1/2, 1/4 or 1/8 scale (in the DCT, several times
    faster than in full), still at least max_side on its longer side; `info["full_size"]` keeps its size.

    Raises ImageTooLargeError over the byte or pixel cap (checked before decoding), UnsupportedImageError for
    data that is not an image or is one of a format we do not read, ImageError otherwise."""
    if isinstance(source, str | os.PathLike):
        try:
            size = os.path.getsize(source)
        except OSError:
            raise ImageError("no such file") from None
        if size > MAX_BYTES:
            raise ImageTooLargeError(f"file of {size:,} bytes is over the {MAX_BYTES:,}-byte cap")
        with open(source, "rb") as handle:
            data = handle.read()
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = source.read(MAX_BYTES + 1)
    if not data:
        raise ImageError("empty file (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageTooLargeError(f"image of over {MAX_BYTES:,} bytes is over the cap")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageTooLargeError(f"{width}x{height} pixels is over the {MAX_PIXELS:,}-pixel cap")
            if image.format not in SUPPORTED_FORMATS:
                raise UnsupportedImageError(f"unsupported image format {image.format}")
            image.seek(0)  # an animated GIF or multi-page TIFF: the first frame
            if max_side and image.format in ("JPEG", "MPO") and max(width, height) > max_side:
                shrink = max_side / max(width, height)
                image.draft(image.mode, (int(np.ceil(width * shrink)), int(np.ceil(height * shrink))))
            image.load()
            drafted = image.size != (width, height)
            image = ImageOps.exif_transpose(image)
            if drafted:  # the full size, turned as EXIF turned the decoded one
                same_way = (image.size[0] >= image.size[1]) == (width >= height)
                image.info["full_size"] = (width, height) if same_way else (height, width)
        except UnidentifiedImageError:
            kind = next((name for name, magic in SIGNATURES.items() if data.startswith(magic)), None)
            if kind:
                raise ImageError(f"truncated or corrupt {kind} image") from None
            raise UnsupportedImageError("not an image, or a format that cannot be read") from None
        except SyntaxError as problem:  # PIL's word for a broken header
            raise ImageError(f"truncated or corrupt image ({problem})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageTooLargeError(f"image is over the {MAX_PIXELS:,}-pixel cap") from None
        except (OSError, ValueError, EOFError) as problem:
            raise ImageError(f"truncated or corrupt image ({str(problem).splitlines()[0]})") from None
    return normalize_mode(image)


def normalize_mode(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        return image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit scans: keep the range, not just 0-255
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8), "L")
    return image.convert("L" if image.mode in ("1", "L", "P") else "RGB")
