import json
import re

import numpy as np
import pytest
from PIL import Image

from digitcnn.runs import read_config, read_history
from tests.conftest import run_cli


def test_train_through_the_cli_writes_a_complete_run_folder(small_run):
    out, result = small_run
    match = re.search(r"^test accuracy: (0\.\d{4})$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    assert float(match.group(1)) > 0.9
    assert {"config.json", "history.csv", "model.safetensors", "predictions.png", "checkpoint.safetensors"} <= {
        path.name for path in out.iterdir()
    }
    config = read_config(out)
    assert config["model"]["arch"] == "fast" and config["train"]["epochs"] == 2
    assert config["data"] == {
        "dataset": "mnist",
        "path": None,
        "limit": 8000,
        "train_examples": 8000,
        "test_examples": 8000,
    }
    assert config["results"]["test_accuracy"] == pytest.approx(float(match.group(1)), abs=5e-5)
    assert len(read_history(out)) == 2
    assert "epoch 1/1" in result.stderr  # one line per epoch when not on a terminal
    assert Image.open(out / "predictions.png").size[0] > 400


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
