"""Every plot writes one legible PNG of the expected size, atomically, without touching pyplot."""

import ast
import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from digitcnn import plots
from digitcnn.errors import DataError
from digitcnn.metrics import expected_calibration_error, reliability_bins, softmax
from digitcnn.runs import read_history


def digit_images(count: int) -> np.ndarray:
    """MNIST-like uint8 digits (white on black, 28×28) rendered from a font, so the figures can be judged."""
    font = ImageFont.load_default(size=22)
    images = []
    for index in range(count):
        canvas = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(canvas).text((14, 14), str(index % 10), fill=255, font=font, anchor="mm")
        images.append(np.asarray(canvas))
    return np.stack(images)


def history_rows(validation: bool = True) -> list[dict]:
    rows = []
    for epoch in range(1, 6):
        row = {"epoch": epoch, "loss": 0.5 / epoch, "accuracy": 1 - 0.1 / epoch}
        if validation:
            row |= {"val_loss": 0.6 / epoch, "val_accuracy": 1 - 0.12 / epoch}
        rows.append(row)
    return rows


def reliability_arguments(path):
    generator = np.random.default_rng(0)
    logits = generator.normal(scale=3, size=(2000, 10))
    labels = (softmax(logits).cumsum(axis=1) < generator.random((2000, 1))).sum(axis=1).clip(max=9)
    before, after = softmax(3 * logits), softmax(logits)
    return (
        reliability_bins(before, labels),
        reliability_bins(after, labels),
        expected_calibration_error(before, labels),
        expected_calibration_error(after, labels),
        path,
    )


DIGITS = digit_images(12)
PREDICTED = np.array([0, 1, 2, 8, 4, 5, 6, 1, 8, 9, 0, 1])
GENERATOR = np.random.default_rng(1)

# Each case: a call that draws into `path`, and the PNG size it must have (figure inches × plots.DPI).
CASES = {
    "predictions": (lambda path: plots.plot_predictions(DIGITS[:10], np.arange(10), PREDICTED[:10], path), (1200, 550)),
    "predictions_float_three": (
        lambda path: plots.plot_predictions(DIGITS[:3] / 255.0, [0, 1, 2], [0, 1, 2], path, class_names=list("abc")),
        (720, 300),
    ),
    "confusion_matrix": (
        lambda path: plots.plot_confusion_matrix(
            np.diag(np.full(10, 980)) + GENERATOR.poisson(1.0, (10, 10)), [str(i) for i in range(10)], path
        ),
        (970, 850),
    ),
    "mistakes": (
        lambda path: plots.plot_mistakes(
            DIGITS[:8], np.arange(8), (np.arange(8) + 1) % 10, np.linspace(0.999, 0.6, 8), None, path
        ),
        (1320, 550),
    ),
    "no_mistakes": (lambda path: plots.plot_mistakes(np.zeros((0, 28, 28)), [], [], [], None, path), (500, 200)),
    "history": (lambda path: plots.plot_history(history_rows(), path), (1100, 420)),
    "history_without_validation": (lambda path: plots.plot_history(history_rows(False)[:1], path), (1100, 420)),
    "reliability": (lambda path: plots.plot_reliability(*reliability_arguments(path), temperature=3.0), (1100, 550)),
    "saliency": (
        lambda path: plots.plot_saliency(DIGITS[7] / 255.0, GENERATOR.normal(size=(28, 28)), path, title="IG"),
        (800, 420),
    ),
    "preprocessed": (
        lambda path: plots.plot_preprocessed(
            [Image.new("RGB", (640, 480), (230, 225, 215)), Image.new("L", (300, 200), 255), DIGITS[3], None],
            [DIGITS[7] / 255.0, None, DIGITS[3], None],
            [7, None, 3, None],
            [0.973, None, 0.9996, None],
            path,
            messages=[None, "no digit found: the image is blank", None, "cannot read scan.heic"],
            names=["photo.jpg", None, None, "scan.heic"],
        ),
        (1500, 580),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_writes_one_png_of_the_expected_size(case, tmp_path):
    draw, size = CASES[case]
    target = tmp_path / f"{case}.png"
    assert draw(target) == target
    with Image.open(target) as written:
        assert written.format == "PNG"
        assert written.size == size
        ink = np.asarray(written.convert("L")) < 128
    assert ink.mean() > 0.002, "the figure is (nearly) blank"
    assert [entry.name for entry in tmp_path.iterdir()] == [target.name]  # no temporary file left behind


def red_pixels(path: Path) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(np.sum((pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)))


def test_only_wrong_predictions_are_marked_red(tmp_path):
    plots.plot_predictions(DIGITS[:10], np.arange(10), np.arange(10), tmp_path / "right.png")
    plots.plot_predictions(DIGITS[:10], np.arange(10), PREDICTED[:10], tmp_path / "wrong.png")
    assert red_pixels(tmp_path / "right.png") == 0
    assert red_pixels(tmp_path / "wrong.png") > 500


def test_read_history_round_trips_a_run_folder_history(tmp_path):
    path = tmp_path / "history.csv"
    columns = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([[1, 0.31, 0.91, "", "", 0.01, 4.2], [2, 0.12, 0.965, "", "", 0.005, 8.1]])
    rows = read_history(tmp_path)
    assert rows[1] == {
        "epoch": 2.0,
        "loss": 0.12,
        "accuracy": 0.965,
        "val_loss": None,
        "val_accuracy": None,
        "learning_rate": 0.005,
        "seconds": 8.1,
    }
    plots.plot_history(rows, tmp_path / "history.png")
    with Image.open(tmp_path / "history.png") as written:
        assert written.size == (1100, 420)


def test_read_history_reports_bad_files_as_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_history(tmp_path / "missing")
    assert read_history(tmp_path) == []  # a run folder before its first epoch ends
    (tmp_path / "history.csv").write_text("epoch,loss\n1,0.3\n2,lots\n")
    with pytest.raises(DataError, match="line 3"):
        read_history(tmp_path)


def test_bad_arguments_raise_before_any_file_is_written(tmp_path):
    with pytest.raises(ValueError):
        plots.plot_predictions(DIGITS[:3], [0, 1, 2], [0, 1], tmp_path / "a.png")
    with pytest.raises(ValueError):
        plots.plot_predictions(DIGITS[:3], [0, 1], [0, 1], tmp_path / "a.png")
    with pytest.raises(ValueError, match="class names"):
        plots.plot_confusion_matrix(np.eye(10, dtype=int), ["0", "1"], tmp_path / "a.png")
    with pytest.raises(ValueError):
        plots.plot_history([], tmp_path / "a.png")
    with pytest.raises(ValueError):
        plots.plot_saliency(np.zeros((28, 28)), np.zeros((14, 14)), tmp_path / "a.png")
    with pytest.raises(ValueError):
        plots.plot_preprocessed([None], [], [None], [None], tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_keeps_the_old_figure_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "history.png"
    target.write_bytes(b"the previous figure")

    def half_written_then_crash(self, filename, **kwargs):
        Path(filename).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_written_then_crash)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_history(history_rows(), target)
    assert target.read_bytes() == b"the previous figure"
    assert [entry.name for entry in tmp_path.iterdir()] == [target.name]


def test_the_module_never_imports_pyplot(tmp_path):
    tree = ast.parse(Path(plots.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any("pyplot" in name or "pylab" in name for name in imported)
    # And at run time, in a fresh interpreter where no other test can have imported pyplot first.
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from digitcnn import plots
        plots.plot_predictions(np.zeros((2, 28, 28)), [0, 1], [0, 2], {str(tmp_path / "a.png")!r})
        plots.plot_confusion_matrix(np.eye(3, dtype=int), None, {str(tmp_path / "b.png")!r})
        plots.plot_history([{{"epoch": 1, "loss": 0.3, "accuracy": 0.9}}], {str(tmp_path / "c.png")!r})
        plots.plot_saliency(np.zeros((28, 28)), np.zeros((28, 28)), {str(tmp_path / "d.png")!r})
        print("matplotlib.pyplot" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]
