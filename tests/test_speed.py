"""The speed issue's CI checks: an accuracy gate for the quick recipe, and its benchmarks run end to end
in tiny mode (the figures themselves come from the full benchmark runs, never from tests)."""

import pytest
import torch

from digitcnn import build_model, evaluate, fit
from tests.conftest import tiny_benchmark

# Each recipe on the first 10,000 training images, seeds 0-2 when written: fast (3 epochs) 98.52-98.85%, lean (the
# default network, 2 epochs of 128) 98.03-98.43%; the test trains seed 0.
QUICK_ON_10000_FLOOR = 0.980


@pytest.mark.parametrize("arch", ["fast", "lean"])
def test_the_quick_recipe_on_ten_thousand_images_passes_its_accuracy_gate(arch, mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    torch.manual_seed(0)
    model = build_model(arch)
    fit(model, x_train[:10000], y_train[:10000], batch_size=128, validation_split=0.0, seed=0, verbose=False)
    assert evaluate(model, x_test, y_test).accuracy >= QUICK_ON_10000_FLOOR


def test_time_to_accuracy_benchmark_runs_end_to_end(tmp_path):
    result, _ = tiny_benchmark("time_to_accuracy", tmp_path, "--epochs", "1")
    (budget,) = result["budgets"]
    assert budget["epochs"] == 1 and len(budget["runs"]) == 1 and 0.0 <= budget["median_test_accuracy"] <= 1.0
    assert result["cores"] >= 1 and result["train_examples"] == 2000


def test_time_to_accuracy_times_the_train_command_itself(tmp_path):
    result, _ = tiny_benchmark("time_to_accuracy", tmp_path, "--command", "--epochs", "1")
    ((run,),) = [budget["runs"] for budget in result["budgets"]]
    # A whole process: PyTorch's import alone takes a second. (Seven steps of training: no accuracy to speak of.)
    assert run["seconds"] > 1.0 and 0.0 <= run["test_accuracy"] <= 1.0 and run["seed"] == 0
    assert result["measured"].startswith("digitcnn train") and result["validation_split"] == 0.1


def test_throughput_benchmark_runs_both_sides(tmp_path):
    result, _ = tiny_benchmark("throughput", tmp_path)
    assert result["digitcnn_images_per_second"] > 0 and result["keras_images_per_second"] > 0
    assert result["keras"].endswith("(torch backend)")


def test_levers_benchmark_measures_every_lever(tmp_path):
    result, _ = tiny_benchmark("levers", tmp_path)
    native = result["lean_precision"]  # what `auto` trains in on this CPU
    assert native == ("bfloat16" if result["native_bfloat16"] else "float32")
    assert set(result["training_images_per_second"]) == {
        "fast channels_last",
        "fast contiguous",
        "seed channels_last",
        "seed contiguous",
        "fast bfloat16",
        f"lean {native}",
        "best bfloat16",
        "best float32",
        f"lean {native}, freed memory returned",
        f"lean {native}, freed memory kept",
    }
    assert result["keep_freed_memory_speedup"] > 0
    # Counted on the layers' real shapes, two per multiply-add: the figures models.py's docstrings give.
    assert result["forward_mflops_per_image"] == {"fast": 7.46, "lean": 4.75, "best": 43.83, "seed": 96.96}
    assert result["lean_speedup"] > 0
    assert result["bfloat16_speedup"]["fast"] > 0 and result["bfloat16_speedup"]["best"] > 0
    assert all(value > 0 for value in result["dropout_mask_milliseconds"].values())


def test_user_style_benchmark_reads_every_style_through_the_real_path(tmp_path):
    result, _ = tiny_benchmark("user_style", tmp_path)
    assert len(result["styles"]) == 7 and result["digits_per_style"] == 50
    # Not a target, a sanity floor: these renderings are legible, so a working pipeline reads nearly all of them;
    # the eroded style deletes thin strokes on purpose, and a quarter of its digits are gone.
    for name, style in result["styles"].items():
        assert style["accuracy"] >= (0.6 if "eroded" in name else 0.9), name


def test_load_benchmark_serves_real_requests_without_errors(tmp_path):
    result, _ = tiny_benchmark("load", tmp_path)
    assert result["requests"] == 200 and result["errors"] == 0 and result["wrong_labels"] <= 10
    assert set(result["server_rss_mb"]) == {"start", "middle", "end"}


def test_startup_benchmark_times_help_and_both_predict_paths(tmp_path):
    result, _ = tiny_benchmark("startup", tmp_path)
    assert result["runs"] == 2 and result["cores"] >= 1
    for case in ("help", "predict, ONNX twin", "predict, PyTorch"):
        assert 0 < result[case]["min_seconds"] <= result[case]["median_seconds"] <= result[case]["max_seconds"]
