"""Image folders as data, `digitcnn train --data DIR` with any class names, and `digitcnn finetune` on a writer's
own samples: real images on disk through the real CLI."""

import io
import json

import numpy as np
import pytest
from benchmarks.finetune import drawn, ink, slashed, squeezed
from benchmarks.numbers import encoded
from PIL import Image, ImageDraw

from digitcnn.cli import main
from digitcnn.config import read_run_config
from digitcnn.errors import DataError
from digitcnn.folders import read_samples, split_per_class
from tests.conftest import tiny_benchmark

NARROW = 0.35  # of a digit's own width: a hand the shipped model reads badly (benchmarks/finetune.py)


def narrow_png(digit: np.ndarray) -> bytes:
    """An MNIST digit written very narrow, dark on white, as benchmarks/finetune.py's "very narrow" style."""
    return encoded(Image.fromarray(255 - np.asarray(squeezed(ink(digit), NARROW))), "PNG")


def letter_png(strokes, rng) -> bytes:
    image = Image.new("L", (96, 96), 255)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        points = [(96 * (x + rng.normal(0, 0.04)), 96 * (y + rng.normal(0, 0.04))) for x, y in stroke]
        draw.line(points, fill=0, width=int(rng.integers(6, 11)), joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


LETTERS = {
    "A": [[(0.2, 0.9), (0.5, 0.1), (0.8, 0.9)], [(0.33, 0.6), (0.67, 0.6)]],
    "L": [[(0.3, 0.1), (0.3, 0.9), (0.75, 0.9)]],
    "T": [[(0.2, 0.15), (0.8, 0.15)], [(0.5, 0.15), (0.5, 0.9)]],
    "X": [[(0.2, 0.1), (0.8, 0.9)], [(0.8, 0.1), (0.2, 0.9)]],
}


def write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def narrow_writer(mnist, tmp_path_factory):
    """8 samples per digit of one narrow hand (MNIST validation digits) in 0/ ... 9/, plus bad files of every kind."""
    (x_train, y_train), _ = mnist
    folder = tmp_path_factory.mktemp("writer") / "samples"
    for digit in range(10):
        for index in np.flatnonzero(y_train[-6000:] == digit)[:8]:
            write(folder / str(digit) / f"{index}.png", narrow_png(x_train[-6000 + index]))
    write(folder / "3" / "notes.txt", b"not an image")
    write(folder / "5" / "broken.png", b"\x89PNG\r\n\x1a\n truncated")
    blank = io.BytesIO()
    Image.new("L", (60, 60), 255).save(blank, "PNG")
    write(folder / "8" / "blank.png", blank.getvalue())
    write(folder / "seven" / "x.png", narrow_png(x_train[0]))
    return folder


def test_a_folder_with_bad_files_lists_each_and_keeps_the_rest(narrow_writer):
    reported = []
    samples = read_samples(narrow_writer, class_names=[str(digit) for digit in range(10)], report=reported.append)
    assert len(samples.labels) == 80 and np.bincount(samples.labels).tolist() == [8] * 10
    assert samples.images.dtype == np.uint8 and samples.images.shape == (80, 28, 28)
    assert reported == samples.problems and len(reported) == 4
    assert any("seven" in line and "not a class of the model" in line for line in reported)
    assert any("notes.txt" in line and "not an image" in line for line in reported)
    assert any("broken.png" in line for line in reported)
    assert any("blank.png: no digit found" in line for line in reported)


def test_the_held_out_part_is_seeded_per_class_and_never_a_class_s_last_sample():
    labels = np.array([0] * 10 + [1] * 3 + [2])
    kept, held = split_per_class(labels, 0.2, seed=0)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(14))
    assert np.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]
    again = split_per_class(labels, 0.2, seed=0)
    assert kept.tolist() == again[0].tolist() and held.tolist() == again[1].tolist()


def test_finetune_moves_the_answers_on_the_writer_s_held_out_samples(narrow_writer, tmp_path, capsys):
    from digitcnn.inference import load_model
    from digitcnn.recognize import read_images

    out = tmp_path / "mine"
    # The strip reader's lesson (most of a short fine-tune's time) is test_the_strip_reader_learns_the_hand_too's.
    arguments = ["--holdout", "0.5", "--steps", "40", "--strip-steps", "0"]
    assert main(["finetune", "--data", str(narrow_writer), "--out", str(out), *arguments]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("skipped ") == 4  # the bad files, one line each, and it went on
    results = read_run_config(out).results
    assert results["held_out_samples"] == 40 and results["samples_used"] == 40
    assert results["held_out_accuracy_after"] >= results["held_out_accuracy_before"] + 0.15
    assert f"accuracy {results['held_out_accuracy_before']:.4f} before" in captured.out
    assert results["test_accuracy"] > 0.98  # it still reads MNIST
    # The hand was measured on the samples learned from and is undone in every reading of the tuned model.
    assert results["writer_slant"] == 0.0 and results["writer_width"] > 2.0 and "your hand: " in captured.err
    run = read_run_config(out)
    assert run.finetune.samples == str(narrow_writer) and run.finetune.base is None and run.data.dataset == "mnist"
    # An ordinary run folder: predict reads with it.
    tuned = load_model(out)
    assert tuned.config.class_names == [str(digit) for digit in range(10)]
    assert tuned.config.writer_width == results["writer_width"]
    files = sorted((narrow_writer / "1").glob("*.png"))
    assert all(reading.class_name == "1" for reading in read_images(tuned, files[:2]))


def test_as_written_keeps_the_hand_for_the_fine_tune_alone_to_learn(narrow_writer, tmp_path, capsys):
    out = tmp_path / "as-written"
    arguments = ["--steps", "5", "--strip-steps", "0", "--as-written"]
    assert main(["finetune", "--data", str(narrow_writer), "--out", str(out), *arguments]) == 0
    results = read_run_config(out).results
    assert (results["writer_slant"], results["writer_width"]) == (0.0, 1.0)
    assert "your hand" not in capsys.readouterr().err
    assert read_run_config(out).model.writer_width == 1.0 and read_run_config(out).finetune.as_written


def test_the_strip_reader_learns_the_hand_too(mnist, tmp_path, capsys):
    """A programmer's slashed 0 is wider than tall, so it is also read whole by the strip reader, which, never
    taught it, reads it as 10, 8 or 18; the run's own reader, taught 10 of them, reads more of the others as 0."""
    from digitcnn.inference import exported_strip_reader, load_model
    from digitcnn.recognize import STRIP_READER, strip_reader
    from digitcnn.strips import decode

    (x_train, y_train), _ = mnist
    x, y = x_train[-6000:], y_train[-6000:]
    folder, style = tmp_path / "samples", "slashed 0 (as programmers write it)"
    for digit in range(10):
        for index in np.flatnonzero(y == digit)[:10]:
            write(folder / str(digit) / f"{index}.png", drawn(x[index], digit, style))
    out = tmp_path / "mine"
    assert main(["finetune", "--data", str(folder), "--out", str(out), "--holdout", "0", "--steps", "20"]) == 0
    assert "strip reader: 60 steps" in capsys.readouterr().err and read_run_config(out).results["strip_reader_taught"]
    tuned = load_model(out)
    assert tuned.strip_weights == out / "strips.safetensors" and (out / "strips.onnx").is_file()
    assert load_model(None).strip_weights is None  # the shipped model reads with the shipped reader

    def read_as_zero(weights) -> float:
        strips = [slashed_zero_strip(digit) for digit in x[y == 0][10:70]]
        readings = strip_reader(weights)(strips)
        return np.mean(["".join(str(digit.argmax()) for digit, _ in decode(row)) == "0" for row in readings])

    # 0.22 against 0.05 at seed 0 (0.45 against 0.10 with the 6,000-step shipped reader, stop 30)
    assert read_as_zero(tuned.strip_weights) >= read_as_zero(STRIP_READER) + 0.12

    # Exported, the run takes its reader along; an export of a model without one leaves none behind.
    exported = tmp_path / "mine.onnx"
    assert main(["export", "--model", str(out), "--out", str(exported)]) == 0
    assert "the run's own strip reader" in capsys.readouterr().out
    assert load_model(exported).strip_weights == exported_strip_reader(exported) == tmp_path / "mine.strips.onnx"
    assert read_as_zero(exported_strip_reader(exported)) == read_as_zero(tuned.strip_weights)
    assert main(["export", "--out", str(exported)]) == 0
    assert not exported_strip_reader(exported).exists() and load_model(exported).strip_weights is None


def slashed_zero_strip(digit: np.ndarray) -> np.ndarray:
    """An MNIST 0 slashed as benchmarks.finetune draws it, cut to its ink, as the strip reader takes a blob."""
    from digitcnn.strips import strip_input

    image = np.asarray(slashed(ink(digit)), np.float32)
    rows, columns = np.nonzero(image > 25)
    return strip_input(image[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1])


def test_a_class_given_only_bad_files_is_a_one_line_error(tmp_path, capsys):
    write(tmp_path / "samples" / "1" / "a.png", letter_png([[(0.5, 0.1), (0.5, 0.9)]], np.random.default_rng(0)))
    write(tmp_path / "samples" / "3" / "a.png", b"nope")
    assert main(["finetune", "--data", str(tmp_path / "samples"), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("digitcnn: error:") and "no usable image" in error
    with pytest.raises(DataError, match="class 3 has no usable image"):
        read_samples(tmp_path / "samples", class_names=[str(digit) for digit in range(10)])


def test_labels_csv_rows_may_not_reach_outside_the_folder(tmp_path):
    rng = np.random.default_rng(0)
    write(tmp_path / "data" / "a.png", letter_png(LETTERS["L"], rng))
    write(tmp_path / "secret.png", letter_png(LETTERS["T"], rng))
    (tmp_path / "data" / "labels.csv").write_text("file,label\na.png,L\n../secret.png,T\n")
    samples = read_samples(tmp_path / "data")
    assert samples.class_names == ["L"] and samples.files == [str(tmp_path / "data" / "a.png")]
    assert len(samples.problems) == 1 and "outside" in samples.problems[0]


def test_train_on_letter_folders_answers_with_letter_names(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name, strokes in LETTERS.items():
        for index in range(30):
            write(tmp_path / "letters" / name / f"{index}.png", letter_png(strokes, rng))
    out = tmp_path / "run"
    arguments = [
        "train",
        "--data",
        str(tmp_path / "letters"),
        "--out",
        str(out),
        "--epochs",
        "12",
        "--batch-size",
        "16",
        "--learning-rate",
        "0.05",
        "--quiet",
    ]
    assert main(arguments) == 0
    captured = capsys.readouterr()
    assert "24 of them (20% of each class, seed 0) held out as the test set" in captured.err
    run = read_run_config(out)
    assert run.model.class_names == ["A", "L", "T", "X"] and run.model.num_classes == 4
    assert run.results["test_accuracy"] >= 0.75  # chance is 0.25
    assert main(["predict", "--model", str(out), "--json", str(tmp_path / "letters" / "T" / "0.png")]) in (0, 1)
    answer = json.loads(capsys.readouterr().out.strip())
    assert answer["class_name"] in LETTERS and len(answer["probabilities"]) == 4
    assert {entry["class_name"] for entry in answer["top3"]} <= set(LETTERS)


def test_the_finetune_benchmark_runs_end_to_end(tmp_path):
    report, _ = tiny_benchmark("finetune", tmp_path)
    ((style, row),) = report["styles"].items()
    assert row["samples_taught"] == 30 and row["samples_read"] == 50 and 0 <= row["read_after"] <= 1
    assert row["mnist_test_after"] > 0.98 and row["seconds"] > 0 and report["cpu"]
