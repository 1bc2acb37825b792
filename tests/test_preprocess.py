"""preprocess and load_image: invariants over generated images (hypothesis) built from real MNIST digits the
way people's images arrive, and every kind of bad file."""

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitcnn.errors import ImageError, ImageTooLargeError, NoDigitError
from digitcnn.images import MAX_PIXELS, load_image
from digitcnn.preprocess import preprocess

ROWS = np.arange(28)


def ink_box_side(image: np.ndarray) -> int:
    found = np.argwhere(image > 0.2)
    return int((found.max(axis=0) - found.min(axis=0) + 1).max())


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    total = image.sum()
    return float((image.sum(axis=1) * ROWS).sum() / total), float((image.sum(axis=0) * ROWS).sum() / total)


def distance(first: np.ndarray, second: np.ndarray) -> float:
    """Mean absolute difference at the best alignment within one pixel: centring rounds its shift to whole
    pixels, as MNIST's did, so the same digit may land one pixel apart."""
    padded = np.pad(second, 1)
    return min(
        float(np.abs(first - padded[1 + dy : 29 + dy, 1 + dx : 29 + dx]).mean())
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def encode(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=75)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def render_on_page(
    digit: np.ndarray,
    scale: int,
    offset: tuple[float, float],
    dark_ink: bool,
    gradient: float,
    noise: float,
    mode: str,
    seed: int,
) -> Image.Image:
    """An MNIST digit as a user's photo or scan: scaled up, off-centre on a larger page, lit unevenly, noisy."""
    rng = np.random.default_rng(seed)
    side = 28 * scale
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    height, width = side * 3, side * 4
    columns = np.linspace(0, 1, width)[None, :]
    paper = 0.85 - gradient * columns + rng.normal(0, noise, (height, width))
    page = np.clip(paper, 0, 1) if dark_ink else np.clip(1 - paper, 0, 1)
    top, left = int(offset[0] * (height - side)), int(offset[1] * (width - side))
    window = page[top : top + side, left : left + side]
    page[top : top + side, left : left + side] = window * (1 - ink) if dark_ink else window + (1 - window) * ink
    image = Image.fromarray((page * 255).astype(np.uint8), "L")
    if mode == "RGB":
        return Image.merge("RGB", [image, image.point(lambda v: v * 0.95), image])
    return image.convert(mode)


page_renderings = st.fixed_dictionaries(
    {
        "index": st.integers(0, 499),
        "scale": st.integers(2, 6),
        "offset": st.tuples(st.floats(0, 1), st.floats(0, 1)),
        "dark_ink": st.booleans(),
        "gradient": st.floats(0, 0.3),
        "noise": st.floats(0, 0.04),
        "mode": st.sampled_from(["L", "RGB", "P"]),
        "kind": st.sampled_from(["png", "jpeg"]),
        "seed": st.integers(0, 2**16),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rendering=page_renderings)
def test_a_digit_on_a_page_comes_out_mnist_shaped(mnist, rendering):
    _, (x_test, _) = mnist
    index, kind = rendering.pop("index"), rendering.pop("kind")
    page = render_on_page(x_test[index], **rendering)
    result = preprocess(load_image(encode(page, kind)))
    assert result.shape == (28, 28) and result.dtype == np.float32
    assert result.min() >= 0 and result.max() <= 1 and result.max() > 0.9
    assert 18 <= ink_box_side(result) <= 21
    row, column = centre_of_mass(result)
    assert abs(row - 14) <= 1 and abs(column - 14) <= 1
    # And it resembles the digit it came from, as MNIST would have it.
    reference = preprocess(x_test[index])
    assert distance(result, reference) < 0.1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 9999), gradient=st.floats(0, 0.25))
def test_polarity_does_not_matter(mnist, index, gradient):
    _, (x_test, _) = mnist
    light_on_dark = render_on_page(x_test[index], 3, (0.5, 0.5), False, gradient, 0.0, "L", 0)
    dark_on_light = render_on_page(x_test[index], 3, (0.5, 0.5), True, gradient, 0.0, "L", 0)
    assert distance(preprocess(light_on_dark), preprocess(dark_on_light)) < 0.04  # inverted would be ~0.3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 9999))
def test_mnist_digits_are_nearly_fixed_points(mnist, index):
    _, (x_test, _) = mnist
    once = preprocess(x_test[index])
    assert np.abs(once - x_test[index] / 255).mean() < 0.15
    assert ink_box_side(once) == 20
    assert np.abs(preprocess(once) - once).mean() < 0.15
    row, column = centre_of_mass(once)
    assert abs(row - 14) <= 0.5 and abs(column - 14) <= 0.5


def test_preprocessed_test_digits_keep_the_shipped_models_accuracy(mnist):
    from digitcnn import load_model, predict

    _, (x_test, y_test) = mnist
    model = load_model()
    inputs = np.stack([preprocess(image) for image in x_test[:1000]])
    raw = (predict(model, x_test[:1000]).argmax(1) == y_test[:1000]).mean()
    assert (predict(model, inputs).argmax(1) == y_test[:1000]).mean() >= raw - 0.01


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 9999), ink_colour=st.sampled_from([(0, 0, 0), (255, 255, 255), (20, 60, 200)]))
def test_a_canvas_drawing_with_transparency_reads_like_the_digit(mnist, index, ink_colour):
    """A browser canvas: coloured strokes on a transparent background, the alpha channel being the ink."""
    _, (x_test, _) = mnist
    alpha = Image.fromarray(x_test[index]).resize((280, 280), Image.Resampling.BICUBIC)
    canvas = Image.new("RGBA", (280, 280), (*ink_colour, 0))
    canvas.putalpha(alpha)
    result = preprocess(load_image(encode(canvas, "png")))
    assert distance(result, preprocess(x_test[index])) < 0.08


@pytest.mark.parametrize("side", [84, 140, 280])
@pytest.mark.parametrize("dark_ink", [True, False])
def test_digits_filling_their_whole_frame_read_like_the_digits(mnist, side, dark_ink):
    """A tight crop or a canvas export: the ink covers much of the image, so most blocks of any background grid
    hold ink, and the paper must not be estimated from them. The first 150 test digits, every one."""
    _, (x_test, _) = mnist
    for index in range(150):
        pixels = 255 - x_test[index] if dark_ink else x_test[index]
        image = Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)
        assert distance(preprocess(load_image(encode(image, "png"))), preprocess(x_test[index])) < 0.08, index


def test_blank_and_noise_only_images_have_no_digit():
    rng = np.random.default_rng(0)
    for image in (
        Image.new("L", (200, 200), 230),
        Image.new("RGB", (64, 48), (10, 10, 10)),
        Image.fromarray((200 + rng.normal(0, 4, (300, 300))).clip(0, 255).astype(np.uint8)),
        Image.new("RGBA", (280, 280), (0, 0, 0, 0)),
    ):
        with pytest.raises(NoDigitError):
            preprocess(load_image(encode(image, "png")))


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_supported_format_reads_the_same_digit(mnist, tmp_path, image_format):
    _, (x_test, _) = mnist
    path = tmp_path / f"digit.{image_format.lower()}"
    Image.fromarray(255 - x_test[0]).resize((84, 84)).convert("RGB").save(path, image_format)
    result = preprocess(load_image(path))
    assert distance(result, preprocess(x_test[0])) < 0.06


def test_exif_orientation_is_applied(mnist, tmp_path):
    _, (x_test, _) = mnist
    upright = Image.fromarray(255 - x_test[0]).resize((112, 112))
    # A camera stores the sensor's pixels rotated and says so in EXIF (6: rotate 90 degrees clockwise to view).
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.jpg"
    stored.convert("RGB").save(path, "JPEG", exif=exif.tobytes(), quality=95)
    assert distance(preprocess(load_image(path)), preprocess(upright)) < 0.06


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: a decompression bomb's header, with no pixels behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_before_decoding():
    bomb = png_header_only(30_000, 30_000)
    assert MAX_PIXELS < 30_000 * 30_000
    tracemalloc.start()
    with pytest.raises(ImageTooLargeError, match="pixel cap"):
        load_image(bomb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 10 * 1024 * 1024  # decoding it would take 900 MB


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello, I am text", "not an image"),
        (png_header_only(64, 64)[:40], "truncated"),
        (b"P5\n4 4\n255\n" + bytes(16), "unsupported image format PPM"),
    ],
)
def test_bad_files_raise_one_line_image_errors(content, message):
    with pytest.raises(ImageError, match=message) as caught:
        load_image(content)
    assert "\n" not in str(caught.value)


def test_a_truncated_real_png_is_an_error_not_a_crash(mnist, tmp_path):
    _, (x_test, _) = mnist
    whole = encode(Image.fromarray(x_test[0]).resize((200, 200)), "png")
    with pytest.raises(ImageError):
        preprocess(load_image(whole[: len(whole) // 2]))
