import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitcnn.runs import read_history
from tests.conftest import run_cli


def test_train_through_the_cli_writes_a_complete_run_folder(small_run):
    out, result = small_run
    match = re.search(r"^test accuracy: (0\.\d{4})$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    assert float(match.group(1)) > 0.9
    assert {"config.json", "history.csv", "model.safetensors", "predictions.png", "checkpoint.safetensors"} <= {
        path.name for path in out.iterdir()
    }
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["arch"] == "lean" and config["train"]["epochs"] == 2  # the default network for digits
    assert config["data"] == {
        "dataset": "mnist",
        "path": None,
        "limit": 8000,
        "validation_split": 0.1,
        "test_split": 0.2,
        "split_seed": 0,
        "train_examples": 8000,
        "test_examples": 8000,
    }
    assert config["results"]["test_accuracy"] == pytest.approx(float(match.group(1)), abs=5e-5)
    assert len(read_history(out)) == 2
    assert "epoch 2/2" in result.stderr  # one line per epoch when not on a terminal
    assert Image.open(out / "predictions.png").size[0] > 400


def test_fashion_mnist_trains_its_own_default_network_and_recipe(tmp_path):
    out = tmp_path / "clothes"
    run_cli("train", "--dataset", "fashion-mnist", "--limit", 1000, "--epochs", 1, "--quiet", "--out", out, check=True)
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["arch"] == "fast" and config["data"]["dataset"] == "fashion-mnist"
    assert config["model"]["class_names"][0] == "T-shirt/top"


def test_evaluate_reports_the_full_test_set(small_run):
    out, _ = small_run
    result = run_cli("evaluate", "--model", out, "--json", check=True)
    report = json.loads(result.stdout)
    assert report["examples"] == 10000 and report["test_accuracy"] > 0.9 and report["test_loss"] > 0
    plain = run_cli("evaluate", "--model", out, check=True)
    assert f"test accuracy: {report['test_accuracy']:.4f}" in plain.stdout


def test_predict_reads_digit_files_and_reports_a_bad_one_without_stopping(small_run, mnist, tmp_path):
    out, _ = small_run
    _, (x_test, y_test) = mnist
    paths = []
    for index in range(10):
        path = tmp_path / f"digit{index}.png"
        Image.fromarray(x_test[index]).save(path)
        paths.append(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    result = run_cli("predict", "--model", out, "--json", *paths[:5], broken, *paths[5:])
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(p) for p in paths[:5] + [broken] + paths[5:]]
    assert lines[5]["label"] is None and lines[5]["error"]
    good = lines[:5] + lines[6:]
    assert all(len(line["probabilities"]) == 10 and line["error"] is None for line in good)
    correct = sum(line["label"] == int(label) for line, label in zip(good, y_test[:10], strict=True))
    assert correct >= 8
    assert "Traceback" not in result.stderr


def test_show_draws_ten_test_digits(small_run, tmp_path):
    out, _ = small_run
    figure = tmp_path / "figure.png"
    run_cli("show", "--model", out, "--out", figure, check=True)
    width, height = Image.open(figure).size
    assert width > 400 and height > 200
    assert np.asarray(Image.open(figure).convert("L")).std() > 10  # not a blank canvas


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["evaluate", "--model", "/nonexistent/run"], "does not exist"),
        (["train", "--data", "/nonexistent/data.npz", "--out", "{tmp}/run"], "/nonexistent/data.npz"),
        (["train", "--resume", "--out", "{tmp}/empty"], "resume"),
        (["predict", "--model", "{tmp}", "x.png"], "not a digitcnn run folder"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, arguments, message):
    (tmp_path / "empty").mkdir()
    result = run_cli(*[argument.format(tmp=tmp_path) for argument in arguments])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitcnn: error:") and message in lines[0], lines


def test_bad_option_values_are_refused_by_the_parser():
    result = run_cli("train", "--epochs", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr and "Traceback" not in result.stderr
    assert "--validation-split" in run_cli("train", "--help", check=True).stdout


def test_predict_works_with_the_shipped_model_and_reports_every_bad_file(mnist, tmp_path):
    """No --model: the model inside the package. A blank page is "no digit found" (not a failure); a text file,
    an empty file, a truncated PNG, an unsupported format and a pixel bomb each get their own error while
    the good files are still read, and the exit code is 1."""
    from tests.test_preprocess import png_header_only

    _, (x_test, y_test) = mnist
    good = []
    for index in range(3):
        path = tmp_path / f"digit{index}.jpg"
        Image.fromarray(255 - x_test[index]).resize((120, 120)).convert("RGB").save(path, quality=85)
        good.append(path)
    files = {
        "blank.png": None,
        "text.png": b"not an image at all",
        "empty.png": b"",
        "truncated.png": (tmp_path / "digit0.jpg").read_bytes()[:300],
        "image.ppm": b"P5\n4 4\n255\n" + bytes(16),
        "bomb.png": png_header_only(30_000, 30_000),
    }
    Image.new("L", (100, 100), 240).save(tmp_path / "blank.png")
    for name, content in files.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    bad = [tmp_path / name for name in files]
    result = run_cli("predict", "--json", good[0], *bad, *good[1:])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = {Path(line["file"]).name: line for line in map(json.loads, result.stdout.splitlines())}
    assert set(lines) == {path.name for path in good + bad}
    for key in ("file", "label", "confidence", "probabilities", "unsure", "error"):
        assert all(key in line for line in lines.values())
    for index, path in enumerate(good):
        assert lines[path.name]["label"] == int(y_test[index]) and lines[path.name]["error"] is None
        assert len(lines[path.name]["probabilities"]) == 10
    assert lines["blank.png"] == {**lines["blank.png"], "label": None, "unsure": True, "error": "no digit found"}
    assert "not an image" in lines["text.png"]["error"] and "empty" in lines["empty.png"]["error"]
    assert "truncated" in lines["truncated.png"]["error"] and "PPM" in lines["image.ppm"]["error"]
    assert "pixel cap" in lines["bomb.png"]["error"]
    assert all(lines[name]["label"] is None for name in files)


def test_predict_takes_folders_and_globs_and_writes_csv_and_a_figure(mnist, tmp_path):
    _, (x_test, y_test) = mnist
    folder = tmp_path / "digits"
    folder.mkdir()
    for index in range(4):
        Image.fromarray(x_test[index]).resize((56, 56)).save(folder / f"{index}.png")
    figure = tmp_path / "seen.png"
    result = run_cli("predict", "--csv", folder, str(tmp_path / "digits" / "[01].png"), "--show", figure)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.strip().splitlines()
    assert rows[0].startswith("file,label,confidence,unsure,error,p0") and len(rows) == 1 + 4 + 2
    assert [int(row.split(",")[1]) for row in rows[1:5]] == [int(label) for label in y_test[:4]]
    assert Image.open(figure).size[0] > 200
    plain = run_cli("predict", folder / "0.png", check=True)
    assert f": {y_test[0]} (confidence" in plain.stdout and "top-3" in plain.stdout
