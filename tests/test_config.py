"""The run config: recipes and their checks, --help's defaults, and config.json read back, including the layout
runs wrote before DataConfig (the validation split in "train", an ensemble's data among its members' options)."""

import dataclasses
import json
import shutil

import pytest

from digitcnn import cli
from digitcnn.config import (
    CONFIG_FILE,
    RECIPES,
    DataConfig,
    TrainConfig,
    choices,
    read_run_config,
    recipe,
    write_run_config,
)
from digitcnn.inference import load_model
from digitcnn.jobs import trained_on
from tests.conftest import run_cli


def test_recipes_are_train_configs_and_one_check_refuses_bad_values_for_the_api_and_the_command_line():
    assert all(isinstance(values, TrainConfig) for values in RECIPES.values())
    assert recipe("best").epochs == 15 and recipe("best", epochs=2).epochs == 2 and recipe("seed") == TrainConfig()
    assert choices(TrainConfig, "optimizer") == ("adam", "sgd") and choices(TrainConfig, "epochs") is None
    with pytest.raises(ValueError, match=r"epochs must be at least 1, not 0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match=r"validation_split must be in \[0, 1\), not 1.0"):
        DataConfig(validation_split=1.0)
    with pytest.raises(ValueError, match="unknown dataset 'emnist'; choose one of mnist, fashion-mnist"):
        DataConfig(dataset="emnist")
    with pytest.raises(ValueError, match="unknown training option 'epoch'"):
        recipe("fast", epoch=3)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        dataclasses.replace(DataConfig(), limit=0)
    # The API takes values as given: a whole-number knob refuses a float rather than failing inside training.
    with pytest.raises(ValueError, match=r"batch_size must be a whole number, not 128.0"):
        recipe("fast", batch_size=128.0)
    with pytest.raises(ValueError, match=r"learning_rate must be a number, not '0.1'"):
        recipe("fast", learning_rate="0.1")
    assert recipe("fast", learning_rate=1).learning_rate == 1  # a whole number is a fine float
    refused = {
        "--validation-split": ("1.5", "[0, 1)"),
        "--limit": ("0", "at least 1"),
        "--batch-size": ("many", "an int"),
    }
    for option, (value, message) in refused.items():
        result = run_cli("train", option, value)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_help_shows_each_architectures_own_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "passes over the training set (plateau: at most) "
        "(default: 3 for fast, strided; 2 for lean; 20 for seed; 15 for best, deep, unpooled; "
        "12 for fast on fashion-mnist)" in text
    )
    assert "peak learning rate (default: 0.2 for fast, strided, lean, best, deep, unpooled; 0.001 for seed)" in text
    assert "SGD momentum (default: 0.9)" in text and "(default: 0.1)" in text and "recipe default" not in text


# config.json as digitcnn wrote it before DataConfig, one of each kind of run folder.
TRAIN = {
    "epochs": 2,
    "batch_size": 128,
    "validation_split": 0.2,
    "optimizer": "sgd",
    "learning_rate": 0.2,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "schedule": "onecycle",
    "warmup_fraction": 0.2,
    "label_smoothing": 0.1,
    "translate": 1.0,
    "rotate": 0.0,
    "scale": 0.0,
    "stroke": 0.0,
    "ema_decay": 0.0,
    "precision": "float32",
    "seed": 0,
}
MODEL = {
    "arch": "fast",
    "activation": "relu",
    "num_classes": 10,
    "class_names": list("0123456789"),
    "dataset": "fashion-mnist",
    "input_mean": 0.286,
    "input_std": 0.353,
    "temperature": 1.0,
    "members": None,
}
OLD_LAYOUTS = {
    "train": {
        "data": {"dataset": "mnist", "path": None, "limit": 8000, "train_examples": 8000, "test_examples": 8000},
        "train": TRAIN,
        "model": MODEL,
        "device": "cpu",
        "distributed": {
            "world_size": 1,
            "batch_size_per_process": 128,
            "effective_batch_size": 128,
            "peak_learning_rate": 0.2,
        },
        "results": {"test_accuracy": 0.97},
    },
    "fit": {"train": TRAIN, "model": MODEL},
    "trained ensemble": {
        "ensemble": {
            "members": 2,
            "archs": ["fast"],
            "seed": 0,
            "options": {
                "activation": "relu",
                "dataset": "fashion-mnist",
                "limit": 3000,
                "epochs": 1,
                "validation_split": 0.2,
            },
        }
    },
    "combined, same split": {
        "data": {"dataset": "mnist", "path": "/data/mine.npz", "limit": None, "validation_split": 0.2},
        "ensemble": {"sources": ["a", "b"], "members": 2},
    },
    "combined, other splits": {
        "data": {"dataset": "mnist", "path": None, "limit": 3000},
        "ensemble": {"sources": ["a", "b"], "members": 2},
    },
}
EXPECTED_DATA = {
    "train": DataConfig("mnist", None, 8000, 0.2),
    "fit": DataConfig("fashion-mnist", None, None, 0.2),
    "trained ensemble": DataConfig("fashion-mnist", None, 3000, 0.2),
    "combined, same split": DataConfig("mnist", "/data/mine.npz", None, 0.2),
    "combined, other splits": DataConfig("mnist", None, 3000, 0.0),
}


@pytest.mark.parametrize("kind", OLD_LAYOUTS)
def test_an_old_config_reads_as_todays_and_writes_back_unchanged(tmp_path, kind):
    (tmp_path / CONFIG_FILE).write_text(json.dumps(OLD_LAYOUTS[kind]))
    run = read_run_config(tmp_path)
    assert run.data == EXPECTED_DATA[kind] and trained_on(tmp_path) == EXPECTED_DATA[kind]
    if run.train is not None:
        assert run.train == TrainConfig(**{key: value for key, value in TRAIN.items() if key != "validation_split"})
    if kind == "trained ensemble":  # what every member is trained with, the data now apart
        assert run.ensemble.options == {"activation": "relu", "epochs": 1}
    write_run_config(tmp_path, run)
    assert read_run_config(tmp_path) == run
    assert "validation_split" in json.loads((tmp_path / CONFIG_FILE).read_text())["data"]


def test_a_lone_model_file_was_trained_on_its_own_data_set_with_the_default_split():
    model = load_model()  # the shipped model: its config lives in its safetensors metadata
    assert trained_on(None, model.config) == DataConfig(dataset=model.config.dataset) == DataConfig()


def test_a_run_folder_in_the_old_layout_resumes_and_reports_as_before(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run[0], run)
    config = json.loads((run / CONFIG_FILE).read_text())
    config["train"]["validation_split"] = config["data"].pop("validation_split")
    (run / CONFIG_FILE).write_text(json.dumps(config))
    # Resuming a finished run trains nothing more: its checkpoint's settings must match the old config's.
    resumed = run_cli("train", "--out", run, "--resume", "--quiet", check=True)
    assert "test accuracy:" in resumed.stdout
    assert read_run_config(run).data == DataConfig("mnist", None, 8000, 0.1)
    run_cli("evaluate", "--model", run, "--report", tmp_path / "report", check=True)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["calibration"]["validation_examples"] == 800


def test_a_built_in_data_set_with_a_recipe_of_its_own_trains_by_it_unless_told_otherwise(capsys):
    assert recipe("fast", "mnist").epochs == recipe("fast").epochs == 3
    assert recipe("fast", "fashion-mnist").epochs == 12 and recipe("fast", "fashion-mnist", epochs=5).epochs == 5
    assert recipe("best", "fashion-mnist") == recipe("best")
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "12 for fast on fashion-mnist" in " ".join(capsys.readouterr().out.split())
