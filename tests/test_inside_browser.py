"""The page's "look inside" view in a real browser (headless Chromium, as test_browser.py drives it): drawing fills
it with one labelled row per layer, whose tile pixels are the model's own layer outputs for the drawing."""

import base64

import numpy as np
import pytest
import torch

from digitcnn.images import load_image
from digitcnn.inference import load_model
from digitcnn.inside import TUTORIAL_MODEL
from digitcnn.preprocess import preprocess
from tests.conftest import ARTIFACTS, BROWSER_MARKS
from tests.test_browser import draw
from tests.test_inside import BEST_LABELS, SEED_LABELS, body_outputs

pytestmark = BROWSER_MARKS

SEVEN = [[(0.4, 0.2), (0.6, 0.2), (0.47, 0.85)]]  # as tall as it is wide on the 3:1 pad: one digit
ROWS_SHOWN = "Number(document.getElementById('inside').dataset.layers || 0)"


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    opened = context.new_page()
    opened.goto(live_server + "/")
    yield opened
    context.close()


def open_view(page) -> None:
    page.click("#inside summary")
    page.wait_for_function("document.getElementById('inside-model').options.length > 0", timeout=15_000)


def tile_pixels(page, row: int) -> tuple[list[int], np.ndarray]:
    """The channels a row shows and its tiles' grey values as the page drew them: (count, height, width)."""
    channels, tiles = page.evaluate(
        """(row) => {
            const canvases = [...document.querySelectorAll('.inside-row')[row].querySelectorAll('canvas')];
            const grey = (canvas) => Array.from(canvas.getContext('2d').getImageData(0, 0, canvas.width,
                canvas.height).data).filter((_, index) => index % 4 === 0);
            return [canvases.map((canvas) => Number(canvas.dataset.channel)),
                    canvases.map((canvas) => [canvas.height, canvas.width, grey(canvas)])];
        }""",
        row,
    )
    return channels, np.stack([np.array(values).reshape(height, width) for height, width, values in tiles])


def test_drawing_fills_the_view_with_the_models_own_layer_outputs(page):
    open_view(page)
    assert page.evaluate(ROWS_SHOWN) == 0
    draw(page, SEVEN)
    page.wait_for_function(f"{ROWS_SHOWN} === {len(BEST_LABELS)}", timeout=20_000)
    assert page.locator(".inside-row h3").all_text_contents() == BEST_LABELS
    notes = page.locator(".inside-row small").all_text_contents()
    assert notes[0] == "Conv2d → BatchNorm2d → ReLU; all 32 channels"
    assert notes[-1] == "MaxPool2d; the 32 most active of 128 channels"
    assert page.locator("#inside-scores li").count() == 10
    assert page.locator("#inside-scores li.top span").first.text_content() == "7"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "look-inside.png"), full_page=True)

    # The same drawing, read here as the server reads it, through the model one body module at a time.
    drawing = base64.b64decode(page.evaluate("document.getElementById('pad').toDataURL('image/png')").split(",")[1])
    model = load_model()
    with torch.inference_mode():
        outputs = body_outputs(model, preprocess(load_image(drawing)))
    for row, output_name in ((0, "2"), (len(BEST_LABELS) - 1, "17")):  # the first block (after its ReLU), the last pool
        channels, drawn = tile_pixels(page, row)
        activations = outputs[output_name].float().numpy()
        if len(activations) > len(channels):
            means = activations.mean(axis=(1, 2))
            assert sorted(channels) == channels and set(channels) == set(np.argsort(-means)[: len(channels)].tolist())
        shown = activations[channels]
        low, high = min(0.0, shown.min()), shown.max()
        expected = np.round((shown - low) * 255 / (high - low))
        assert np.abs(drawn - expected).max() <= 1  # one grey level for rounding between the two processes
        assert drawn.max() == 255

    # Hovering a tile enlarges it; so does tapping (a click), and a second tap shrinks it again.
    tile = page.locator(".inside-row .tile").nth(5)
    before = tile.bounding_box()["width"]
    # The enlargement is a 0.1 s transition: wait until none runs, rather than a fixed time a busy CPU outlasts.
    settled = "tile => tile.getAnimations().length === 0"
    tile.hover()
    page.wait_for_function(settled, arg=tile.element_handle(), timeout=5_000)
    assert tile.bounding_box()["width"] >= 3.5 * before
    page.mouse.move(0, 0)
    tile.click()
    page.mouse.move(0, 0)
    page.wait_for_function(settled, arg=tile.element_handle(), timeout=5_000)
    assert "enlarged" in tile.get_attribute("class") and tile.bounding_box()["width"] >= 3.5 * before
    tile.click()
    assert "enlarged" not in tile.get_attribute("class")

    page.click("#clear")
    page.wait_for_function(f"{ROWS_SHOWN} === 0", timeout=15_000)
    assert page.locator(".inside-row").count() == 0


@pytest.mark.skipif(not TUTORIAL_MODEL.exists(), reason="this install does not ship the tutorial's network")
def test_the_view_switches_to_the_tutorials_network(page):
    open_view(page)
    assert page.locator("#inside-model option").all_text_contents()[1].startswith("the tutorial's network")
    draw(page, SEVEN)
    page.wait_for_function(f"{ROWS_SHOWN} === {len(BEST_LABELS)}", timeout=20_000)
    page.select_option("#inside-model", "seed")
    page.wait_for_function(f"{ROWS_SHOWN} === {len(SEED_LABELS)}", timeout=20_000)
    assert page.locator(".inside-row h3").all_text_contents() == SEED_LABELS
    assert page.locator("#inside-status").text_content().startswith("seed: 4 layers")
