"""Teaching from the page in a real browser (Debian's headless Chromium, Playwright): a wrong answer corrected,
kept in the browser and on the server (`serve --samples DIR`), downloaded as a zip that `digitcnn finetune` reads."""

import zipfile

from digitcnn.config import read_run_config
from tests.conftest import BROWSER_MARKS, run_cli, serving
from tests.test_browser import draw, wait_for_label

pytestmark = BROWSER_MARKS


def test_teaching_a_digit_keeps_it_and_the_downloaded_zip_fine_tunes(browser, tmp_path):
    kept = tmp_path / "server-samples"
    with serving("--samples", kept) as url:
        context = browser.new_context(viewport={"width": 1000, "height": 800}, accept_downloads=True)
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#teach-labels button[data-label='7']", state="attached")
        draw(page, [[(0.5, 0.15), (0.5, 0.85)]])  # a one, which the person says is their 7
        wait_for_label(page, "1")
        assert page.locator("#teach-correct").is_visible()
        page.click("#teach-labels button[data-label='7']")
        page.wait_for_function("document.getElementById('teach-count').textContent.startsWith('1 sample taught')")
        assert "also kept on the server" in page.locator("#teach-count").text_content()
        assert page.locator("#teach-correct").is_hidden()  # one answer, one correction

        page.click("#clear")
        draw(page, [[(0.3, 0.3), (0.5, 0.15), (0.7, 0.3), (0.3, 0.85), (0.75, 0.85)]])  # a two, kept as a 2
        page.wait_for_function("document.body.dataset.state !== 'blank'", timeout=15_000)
        page.click("#teach-labels button[data-label='2']")
        page.wait_for_function("document.getElementById('teach-count').textContent.startsWith('2 samples taught')")
        page.reload()  # kept in the browser, not in the page
        page.wait_for_function("document.getElementById('teach-count').textContent.startsWith('2 samples taught')")
        with page.expect_download() as waiting:
            page.click("#teach-download")
        archive = tmp_path / "samples.zip"
        waiting.value.save_as(archive)
        context.close()

    with zipfile.ZipFile(archive) as opened:
        assert opened.testzip() is None  # every entry's CRC checks out
        names = opened.namelist()
        assert sorted(name.split("/")[0] for name in names) == ["2", "7"] and all(n.endswith(".png") for n in names)
        opened.extractall(tmp_path / "downloaded")
        drawn = opened.read(next(name for name in names if name.startswith("7/")))
    assert sorted(path.parent.name for path in kept.rglob("*.png")) == ["2", "7"]
    assert drawn in {path.read_bytes() for path in kept.rglob("*.png")}  # the same canvas PNG, full size
    out = tmp_path / "mine"
    arguments = ["--steps", 2, "--strip-steps", 2, "--holdout", 0]
    result = run_cli("finetune", "--data", tmp_path / "downloaded", "--out", out, *arguments, check=True)
    assert "skipped" not in result.stderr
    assert read_run_config(out).results["samples_used"] == 2
