"""`digitcnn ensemble`: models trained apart, combined into one through the real CLI."""

import json

import numpy as np
import pytest

from digitcnn.data import load_data
from digitcnn.inference import evaluate, load_model, predict
from digitcnn.models import Ensemble
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    """Another architecture and seed on the same 8,000 images and split as `small_run`."""
    out = tmp_path_factory.mktemp("runs") / "second"
    run_cli("train", "--arch", "fast", "--limit", 8000, "--epochs", 1, "--seed", 1, "--out", out, "--quiet", check=True)
    return out


def test_runs_trained_apart_answer_as_the_mean_of_their_probabilities(small_run, second_run, tmp_path):
    out = tmp_path / "combined"
    result = run_cli("ensemble", small_run[0], second_run, "--out", out, check=True)
    ensemble, members = load_model(out), [load_model(small_run[0]), load_model(second_run)]
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 2
    (x_train, y_train), (x_test, y_test) = load_data()
    digits = x_test[:500]
    expected = np.mean([predict(member, digits) for member in members], axis=0)  # both at temperature 1
    np.testing.assert_allclose(predict(ensemble, digits), expected, atol=1e-5)

    # The validation split both runs held out (the last 800 of the first 8,000) is measured; the test set too.
    validation = evaluate(ensemble, x_train[7200:8000], y_train[7200:8000]).accuracy
    test = evaluate(ensemble, x_test[:8000], y_test[:8000]).accuracy
    assert f"validation accuracy: {validation:.4f}" in result.stdout
    assert f"test accuracy: {test:.4f}" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["results"]["validation_accuracy"] == pytest.approx(validation)
    assert config["ensemble"]["sources"] == [str(small_run[0]), str(second_run)]

    # `evaluate` takes it like any run (all 10,000 test digits of the data it was made from, by default).
    evaluated = json.loads(run_cli("evaluate", "--model", out, "--json", check=True).stdout)
    assert evaluated["test_accuracy"] == pytest.approx(evaluate(ensemble, x_test, y_test).accuracy)


def test_ensembles_given_as_sources_count_as_their_members(small_run, second_run, tmp_path):
    pair, trained = tmp_path / "pair", tmp_path / "trained"
    run_cli("ensemble", small_run[0], second_run, "--out", pair, check=True)
    run_cli(
        "train",
        "--ensemble",
        2,
        "--arch",
        "fast",
        "--limit",
        8000,
        "--epochs",
        1,
        "--out",
        trained,
        "--quiet",
        check=True,
    )
    result = run_cli("ensemble", pair, trained, small_run[0], "--out", tmp_path / "five", check=True)
    assert len(load_model(tmp_path / "five").members) == 5
    # All three held out the same 800 digits, however they were made: the validation accuracy is measured.
    assert "validation accuracy: " in result.stdout


def test_runs_that_held_out_different_digits_give_no_validation_split_to_calibrate_on(small_run, tmp_path):
    other_split = tmp_path / "other-split"
    run_cli(
        "train",
        "--arch",
        "fast",
        "--limit",
        8000,
        "--epochs",
        1,
        "--validation-split",
        0.2,
        "--out",
        other_split,
        "--quiet",
        check=True,
    )
    out = tmp_path / "combined"
    result = run_cli("ensemble", small_run[0], other_split, "--out", out, check=True)
    assert "validation accuracy" not in result.stdout
    # Every digit of either split was trained on by one member: fitting a temperature there would be dishonest.
    run_cli("evaluate", "--model", out, "--report", tmp_path / "report", check=True)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert "temperature" not in metrics["calibration"]
    assert load_model(out).config.temperature == 1.0


def test_bad_sources_and_a_taken_folder_are_one_line_errors(small_run, tmp_path):
    missing = run_cli("ensemble", small_run[0], tmp_path / "nowhere", "--out", tmp_path / "new")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().count("\n") == 0 and "nowhere" in missing.stderr
    taken = run_cli("ensemble", small_run[0], "--out", small_run[0])
    assert taken.returncode == 2 and "already holds a model" in taken.stderr
    assert not (tmp_path / "new").exists()
