"""A run is a folder: config.json, history.csv, model.safetensors, checkpoint.safetensors and figures.
Everything here is safetensors + JSON: nothing is ever unpickled."""

import csv
import dataclasses
import io
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import WEIGHTS_FILE, read_run_config, update_run_config
from .errors import DataError, ModelError
from .files import atomic_path, atomic_write
from .model_config import model_config_from_dict
from .models import Classifier, build_model

HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.safetensors"
MEMBERS_FOLDER = "members"  # an ensemble trained together: members/0, members/1, ... each a run folder
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


def save_model(model: Classifier, run_dir: str | Path) -> Path:
    """Writes model.safetensors (the model config also in its metadata, so the file alone rebuilds the
    model) and the "model" section of config.json."""
    run_dir = Path(run_dir)
    path = save_model_file(model, run_dir / WEIGHTS_FILE)
    update_run_config(run_dir, model=model.config)
    return path


def save_model_file(
    model: Classifier, path: str | Path, results: dict | None = None, dtype: torch.dtype | None = None
) -> Path:
    """One self-describing .safetensors: weights, the model config, and optionally the run's results (the
    shipped model carries its test accuracy this way). With `dtype` (torch.float16: half the size), floating-point
    tensors are stored in it; loading copies them back into the model's float32 parameters."""
    metadata = {"digitcnn_model": json.dumps(dataclasses.asdict(model.config))}
    if results is not None:
        metadata["digitcnn_results"] = json.dumps(results)
    with atomic_path(path) as temporary:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        if dtype is not None:
            state = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor for name, tensor in state.items()}
        save_file(state, temporary, metadata=metadata)
    return Path(path)


def model_results(source: str | Path) -> dict | None:
    """The results (test accuracy, ...) recorded for a run folder or a self-describing model file."""
    source = Path(source)
    if source.is_dir():
        return read_run_config(source).results
    if source.suffix != ".safetensors":
        return None
    _, metadata = load_weights_file(source)
    return json.loads(metadata["digitcnn_results"]) if "digitcnn_results" in metadata else None


def load_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reads a safetensors file: (tensors, metadata). Corrupt or missing files raise ModelError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(str(path)), metadata
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{path} is not a valid safetensors file: {error}") from None


def model_from_weights(state: dict[str, torch.Tensor], model_config: dict, source: str) -> Classifier:
    config = model_config_from_dict(model_config)
    try:
        model = build_model(**dataclasses.asdict(config))
        model.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelError(f"{source} does not match its config ({config.arch}): {first_line}") from None
    return model.eval()


def load_run_model(run_dir: str | Path) -> Classifier:
    run_dir = Path(run_dir)
    run = read_run_config(run_dir)
    if run.model is None or not (run_dir / WEIGHTS_FILE).exists():
        raise ModelError(f"{run_dir} holds no model yet: the run has not finished an epoch")
    state, _ = load_weights_file(run_dir / WEIGHTS_FILE)
    return model_from_weights(state, dataclasses.asdict(run.model), str(run_dir))


def load_model_file(path: str | Path) -> Classifier:
    """A lone model.safetensors that carries its config in its metadata (the shipped model is one)."""
    state, metadata = load_weights_file(path)
    if "digitcnn_model" not in metadata:
        raise ModelError(f"{path} carries no digitcnn model config; pass its run folder instead")
    return model_from_weights(state, json.loads(metadata["digitcnn_model"]), str(path))


def write_history(run_dir: str | Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row[key]) for key in HISTORY_COLUMNS})
    atomic_write(Path(run_dir) / HISTORY_FILE, buffer.getvalue())


def read_history(run_dir: str | Path) -> list[dict]:
    """A run's history.csv as a list of dicts of floats (empty cells None); [] before its first epoch ends."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} does not exist; is this a run folder?")
    path = run_dir / HISTORY_FILE
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                rows.append({key: float(value) if value not in ("", None) else None for key, value in row.items()})
            except ValueError as error:
                raise DataError(f"{path}, line {line}: {error}") from None
    return rows


def save_checkpoint(run_dir: str | Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    save_checkpoint_file(Path(run_dir) / CHECKPOINT_FILE, tensors, state)


def save_checkpoint_file(path: str | Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    """One file, written atomically: tensors (weights, optimizer moments, RNG states) plus the JSON `state`
    in the metadata, so a crash can never pair new weights with an old epoch count."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, temporary, metadata={"digitcnn_checkpoint": json.dumps(state)})


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        raise ModelError(f"nothing to resume in {run_dir}: {CHECKPOINT_FILE} is missing")
    return load_checkpoint_file(path)


def load_checkpoint_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A checkpoint's tensors and its JSON state; a missing, corrupt or foreign file raises ModelError."""
    tensors, metadata = load_weights_file(path)
    if "digitcnn_checkpoint" not in metadata:
        raise ModelError(f"{path} is not a digitcnn checkpoint")
    return tensors, json.loads(metadata["digitcnn_checkpoint"])
