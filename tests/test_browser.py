"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, against `digitcnn serve`."""

import io

import pytest
from PIL import Image

from tests.conftest import ARTIFACTS, BROWSER_MARKS

pytestmark = BROWSER_MARKS


@pytest.fixture(params=[{"width": 1000, "height": 700}, {"width": 390, "height": 844}], ids=["desktop", "phone"])
def page(browser, live_server, request):
    context = browser.new_context(viewport=request.param, has_touch=request.param["width"] < 500)
    opened = context.new_page()
    outside = []
    opened.on("request", lambda req: None if req.url.startswith(live_server) else outside.append(req.url))
    opened.goto(live_server + "/")
    yield opened
    assert outside == [], f"the page fetched from outside the server: {outside}"
    context.close()


def draw(page, strokes):
    """Mouse strokes on the canvas; points are fractions of its width and height. The pad is scrolled into view
    first, as a person would: opening the look-inside view below it scrolls it off a short screen."""
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def wait_for_label(page, label: str) -> None:
    page.wait_for_function(f"document.getElementById('label').textContent === {label!r}", timeout=15_000)


def test_drawing_a_digit_shows_its_label_and_clear_resets(page):
    assert page.locator("#label").text_content() == "?"
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])  # a one
    wait_for_label(page, "1")
    assert len(page.locator("#bars li").all()) == 10
    assert page.locator("#bars li.top span").first.text_content() == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"drawn-one-{page.viewport_size['width']}.png"))

    page.click("#clear")
    wait_for_label(page, "?")
    assert page.evaluate("document.body.dataset.state") == "blank"

    draw(page, [[(0.4, 0.2), (0.6, 0.2), (0.47, 0.85)]])  # a seven
    wait_for_label(page, "7")
    page.click("#undo")
    wait_for_label(page, "?")


def test_writing_a_number_shows_its_text_and_a_box_around_each_digit(page):
    def one(x):
        return [(x, 0.2), (x, 0.8)]

    def seven(x):
        return [(x - 0.06, 0.22), (x + 0.06, 0.22), (x - 0.02, 0.8)]

    draw(page, [one(0.25), seven(0.5), one(0.75)])
    wait_for_label(page, "171")
    boxes = page.locator("#marks .box")
    assert boxes.count() == 3
    lefts = [boxes.nth(index).bounding_box()["x"] for index in range(3)]
    assert lefts == sorted(lefts)
    assert [boxes.nth(index).locator("span").text_content().split()[0] for index in range(3)] == ["1", "7", "1"]
    pad = page.locator("#pad").bounding_box()
    for index in range(3):  # each box lies on the pad, around its own stroke
        box = boxes.nth(index).bounding_box()
        assert pad["x"] <= box["x"] and box["x"] + box["width"] <= pad["x"] + pad["width"]
        assert box["x"] - 4 <= pad["x"] + [0.25, 0.5, 0.75][index] * pad["width"] <= box["x"] + box["width"] + 4
    assert page.locator("#digits li").count() == 3
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"written-number-{page.viewport_size['width']}.png"))
    page.click("#clear")
    wait_for_label(page, "?")
    assert page.locator("#marks .box").count() == 0


def test_uploading_a_file_reads_it_through_the_same_api(page, mnist, tmp_path):
    _, (x_test, y_test) = mnist
    path = tmp_path / "photo.png"
    buffer = io.BytesIO()
    Image.fromarray(255 - x_test[2]).resize((200, 200)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    page.set_input_files("#upload", str(path))
    wait_for_label(page, str(y_test[2]))
    bright_pixels = (
        "Array.from(document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data)"
        ".filter((value, index) => index % 4 === 0 && value > 128).length"
    )
    seen = page.evaluate(bright_pixels)
    assert seen > 20  # the 28x28 the model saw is drawn
