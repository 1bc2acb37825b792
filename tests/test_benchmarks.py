"""Benchmarks run end to end in tiny mode: the scripts work; their figures come from full runs, never from tests."""

import json

import numpy as np
import pytest

from tests.conftest import run_benchmark, run_cli, tiny_benchmark


def test_onnx_vs_torch_benchmark_measures_both_runtimes(tmp_path):
    report, result = tiny_benchmark("onnx_vs_torch", tmp_path)
    for side in ("pytorch", "onnxruntime", "twin"):  # the shipped model has its twin
        figures = report[side]
        assert figures["images_per_second"] > 0 and 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]
    assert report["export_check"]["labels_identical"] and report["export_check"]["max_abs_difference"] <= 1e-4
    assert report["images_per_round"] == 256 and report["cores"] >= 1 and report["throughput_ratio_twin_over_onnx"] > 0
    assert "onnxruntime" in result.stdout and "images/s" in result.stdout


def test_read_cpu_benchmark_measures_a_read(tmp_path):
    report, result = tiny_benchmark("read_cpu", tmp_path)
    assert report["images"] == 20 and report["passes"] == 2
    assert 0 < report["cpu_ms_per_read"]["best"] <= report["cpu_ms_per_read"]["median"]
    assert "CPU ms per read" in result.stdout


def test_ensemble_summary_counts_the_validation_mistakes_its_members_share(small_run, tmp_path):
    from digitcnn.data import load_data
    from digitcnn.inference import evaluate, load_model, predict_logits
    from digitcnn.metrics import softmax

    run = tmp_path / "ensemble"
    run_cli(
        "train", "--ensemble", 2, "--arch", "fast", "--limit", 4000, "--epochs", 1, "--out", run, "--quiet", check=True
    )
    out = tmp_path / "summary.json"
    result = run_benchmark("ensemble", run, "--out", out)
    summary = json.loads(out.read_text())
    (x_train, y_train), _ = load_data()
    # Both members held out the last 400 of the first 4,000 training digits.
    images, labels = x_train[3600:4000], y_train[3600:4000]
    validation = evaluate(load_model(run), images, labels).accuracy
    assert summary["validation_examples"] == 400
    assert summary["validation_accuracy"] == pytest.approx(validation)
    assert summary["validation_errors"] == round((1 - validation) * 400)
    assert summary["member_seeds"] == [0, 1] and summary["member_archs"] == ["fast", "fast"]
    assert summary["validation_errors_all_members_make"] <= min(summary["member_validation_errors"])
    assert summary["validation_errors_any_member_makes"] >= max(summary["member_validation_errors"])
    first_members = summary["validation_errors_of_first_members"]
    assert first_members == [summary["member_validation_errors"][0], summary["validation_errors"]]
    assert summary["test_accuracy"] == json.loads((run / "config.json").read_text())["results"]["test_accuracy"]

    # A model trained apart on the same digits, judged as a third member against the members' own predictions.
    candidate = tmp_path / "candidate"
    run_cli(
        "train",
        "--arch",
        "fast",
        "--limit",
        4000,
        "--epochs",
        1,
        "--seed",
        7,
        "--out",
        candidate,
        "--quiet",
        check=True,
    )
    result = run_benchmark("ensemble", run, "--candidate", candidate, "--out", out)
    figures = json.loads(out.read_text())["candidates"][0]
    models = [load_model(run / "members" / "0"), load_model(run / "members" / "1"), load_model(candidate)]
    probabilities = [softmax(predict_logits(model, images)) for model in models]  # temperature 1, as averaged
    wrong = [probability.argmax(axis=1) != labels for probability in probabilities]
    assert figures["arch"] == "fast" and figures["validation_errors"] == wrong[2].sum()
    assert figures["right_where_all_members_are_wrong"] == (wrong[0] & wrong[1] & ~wrong[2]).sum()
    assert figures["validation_errors_of_ensemble_with_it"] == (np.mean(probabilities, 0).argmax(1) != labels).sum()
    assert "candidate" in result.stderr and "right on" in result.stderr

    # One that held out other digits (the last 800 of the first 8,000) cannot be judged on these.
    result = run_benchmark("ensemble", run, "--candidate", small_run[0], "--out", out, check=False)
    assert result.returncode != 0 and "did not hold out the validation digits" in result.stderr
    assert "Traceback" not in result.stderr


def test_ensemble_summary_of_members_trained_on_the_whole_training_set(tmp_path):
    run = tmp_path / "ensemble"
    run_cli(
        "train",
        "--ensemble",
        2,
        "--arch",
        "fast",
        "--limit",
        2000,
        "--epochs",
        1,
        "--validation-split",
        0,
        "--out",
        run,
        "--quiet",
        check=True,
    )
    out = tmp_path / "summary.json"
    result = run_benchmark("ensemble", run, "--out", out)
    summary = json.loads(out.read_text())
    # No digit was held out from both members, so there is no validation figure to report, and none is made up.
    assert summary["validation_examples"] == 0 and "validation_accuracy" not in summary
    assert "no validation split" in result.stderr
    recorded = json.loads((run / "config.json").read_text())["results"]
    assert summary["member_test_accuracies"] == recorded["member_test_accuracies"]
    assert summary["test_accuracy"] == recorded["test_accuracy"] and summary["member_seeds"] == [0, 1]
