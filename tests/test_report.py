"""The evaluation report end to end from a small real run, through the real CLI; `digitcnn explain` too."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from digitcnn import load_model, predict
from digitcnn.inference import predict_logits
from digitcnn.metrics import softmax
from digitcnn.onnx_model import OnnxModel
from digitcnn.report import build_report, validation_slice
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def reported_run(small_run, tmp_path_factory):
    """A copy of the small run (the report stores a temperature in it) and its report folder."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(small_run[0], run)
    before = load_model(run)
    result = run_cli("evaluate", "--model", run, "--report", run / "report", check=True)
    return run, run / "report", before, result


def test_the_report_folder_holds_every_part_at_its_size(reported_run):
    _, report, _, result = reported_run
    expected = {
        "confusion_matrix.png": (970, 850),
        "reliability.png": (1100, 550),
        "history.png": (1100, 420),
        "mistakes.png": (1320, 1050),
    }
    for name, size in expected.items():
        with Image.open(report / name) as image:
            assert image.size == size, name
    markdown = (report / "report.md").read_text()
    for name in expected:
        assert f"]({name})" in markdown
    assert "| macro mean" in markdown and "test accuracy:" in markdown
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "http" not in page.replace("<!doctype html>", "")
    assert "test accuracy:" in result.stdout and "| macro mean" in result.stdout


def test_the_metrics_agree_with_an_independent_computation(reported_run, mnist):
    run, report, before, _ = reported_run
    metrics = json.loads((report / "metrics.json").read_text())
    _, (x_test, y_test) = mnist
    predicted = predict_logits(before, x_test).argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y_test, predicted, zero_division=0)
    np.testing.assert_allclose(metrics["per_class"]["precision"], precision, atol=1e-12)
    np.testing.assert_allclose(metrics["per_class"]["recall"], recall, atol=1e-12)
    np.testing.assert_allclose(metrics["per_class"]["f1"], f1, atol=1e-12)
    assert metrics["per_class"]["support"] == support.tolist()
    assert np.asarray(metrics["confusion_matrix"]).sum() == 10000
    assert metrics["test_accuracy"] == pytest.approx(float((predicted == y_test).mean()))
    assert len(metrics["history"]) == 2 and 0 < len(metrics["most_confident_mistakes"]) <= 24
    confidences = [mistake["confidence"] for mistake in metrics["most_confident_mistakes"]]
    assert confidences == sorted(confidences, reverse=True)


def test_the_fitted_temperature_lowers_validation_ece_and_predict_uses_it(reported_run, mnist):
    run, report, before, _ = reported_run
    calibration = json.loads((report / "metrics.json").read_text())["calibration"]
    assert calibration["validation_examples"] == 800  # the last 10% of the run's 8,000 training images
    assert calibration["validation_ece_after"] < calibration["validation_ece_before"]
    calibrated = load_model(run)
    assert calibrated.config.temperature == pytest.approx(calibration["temperature"])
    json_config = json.loads((run / "config.json").read_text())
    assert json_config["model"]["temperature"] == pytest.approx(calibration["temperature"])
    _, (x_test, _) = mnist
    logits = predict_logits(before, x_test[:50])
    np.testing.assert_allclose(predict(calibrated, x_test[:50]), softmax(logits, calibration["temperature"]), atol=1e-5)
    assert not np.allclose(predict(calibrated, x_test[:50]), predict(before, x_test[:50]), atol=1e-3)
    # The run's ONNX twin is written again with the temperature, so `digitcnn predict` keeps reading through it.
    twin = load_model(run, onnx_twin=True)
    assert isinstance(twin, OnnxModel) and twin.config.temperature == pytest.approx(calibration["temperature"])
    np.testing.assert_allclose(predict(twin, x_test[:50]), predict(calibrated, x_test[:50]), atol=1e-5)


def test_a_fashion_mnist_report_names_its_classes(tmp_path):
    run_cli(
        "train",
        "--dataset",
        "fashion-mnist",
        "--limit",
        2000,
        "--epochs",
        1,
        "--out",
        tmp_path / "run",
        "--quiet",
        check=True,
    )
    run_cli("evaluate", "--model", tmp_path / "run", "--report", tmp_path / "report", check=True)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Ankle boot" in markdown and "fashion-mnist" in markdown
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["test_examples"] == 10000 and metrics["class_names"][9] == "Ankle boot"


def test_user_data_without_its_validation_split_gets_no_temperature(small_run, mnist, tmp_path):
    model = load_model(small_run[0])
    _, (x_test, y_test) = mnist
    metrics = build_report(model, (x_test[:500], y_test[:500]), None, tmp_path)
    assert "temperature" not in metrics["calibration"] and "history" not in metrics["figures"]
    assert (tmp_path / "mistakes.png").exists() and not (tmp_path / "history.png").exists()


def test_the_validation_slice_is_the_end_of_the_training_set():
    x, y = np.arange(100), np.arange(100) % 10
    x_validation, y_validation = validation_slice(x, y, 0.1)
    assert x_validation.tolist() == list(range(90, 100)) and len(y_validation) == 10


def test_explain_draws_the_attribution_of_a_real_digit(mnist, tmp_path):
    _, (x_test, y_test) = mnist
    image = tmp_path / "digit.png"
    Image.fromarray(255 - x_test[0]).resize((112, 112)).save(image)
    out = tmp_path / "explain.png"
    result = run_cli("explain", image, "--out", out, check=True)
    assert result.stdout.startswith(f"{y_test[0]} (")
    with Image.open(out) as figure:
        assert figure.size == (800, 420)


def test_explain_reports_bad_input_in_one_line(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    for arguments in ([broken, "--out", tmp_path / "a.png"], [broken, "--out", tmp_path / "a.png", "--label", "12"]):
        result = run_cli("explain", *arguments)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
    blank = io.BytesIO()
    Image.new("L", (64, 64), 255).save(blank, "PNG")
    (tmp_path / "blank.png").write_bytes(blank.getvalue())
    result = run_cli("explain", tmp_path / "blank.png", "--out", tmp_path / "b.png")
    assert result.returncode == 2 and "no digit found" in result.stderr


def test_a_run_on_the_users_data_is_reported_on_that_data_with_its_own_validation_split(mnist, tmp_path):
    (x_train, y_train), (x_test, y_test) = mnist
    data = tmp_path / "mine.npz"
    np.savez(data, x_train=x_train[:2000], y_train=y_train[:2000], x_test=x_test[:300], y_test=y_test[:300])
    run_cli("train", "--data", data, "--epochs", 1, "--out", tmp_path / "run", "--quiet", check=True)
    run_cli("evaluate", "--model", tmp_path / "run", "--report", tmp_path / "report", check=True)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["test_examples"] == 300 and metrics["calibration"]["validation_examples"] == 200
    run_cli("evaluate", "--model", tmp_path / "run", "--dataset", "mnist", "--report", tmp_path / "other", check=True)
    metrics = json.loads((tmp_path / "other" / "metrics.json").read_text())
    assert metrics["test_examples"] == 10000 and "temperature" not in metrics["calibration"]
