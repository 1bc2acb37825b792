"""torchrun with 2 CPU processes (gloo): the same command as one process, each rank a distinct shard."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from digitcnn.inference import evaluate, load_model
from digitcnn.runs import read_history

WORKER = Path(__file__).with_name("distributed_worker.py")


def test_two_processes_train_one_model_on_disjoint_shards(tmp_path, mnist):
    out = tmp_path / "run"
    limit, epochs, validation_split = 3000, 2, 0.1
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(WORKER),
        "train",
        "--limit",
        str(limit),
        "--epochs",
        str(epochs),
        "--batch-size",
        "64",
        "--quiet",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test accuracy:") == 1  # rank 0 alone reports and writes

    first, second = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    for name, value in first.items():
        assert torch.equal(value, second[name]), name

    training_examples = limit - int(limit * validation_split)
    shards = [json.loads((tmp_path / f"rank{rank}-shards.json").read_text()) for rank in (0, 1)]
    for epoch in range(epochs):
        seen = shards[0][epoch] + shards[1][epoch]
        assert sorted(seen) == list(range(training_examples))  # every example exactly once
    assert shards[0][0] != shards[0][1]  # and a new order each epoch

    config = json.loads((out / "config.json").read_text())
    assert config["distributed"]["world_size"] == 2
    assert config["distributed"]["effective_batch_size"] == 64
    assert config["distributed"]["batch_size_per_process"] == 32
    assert len(read_history(out)) == epochs
    model = load_model(out)
    for name, value in model.state_dict().items():
        assert torch.equal(value, first[name]), name
    _, (x_test, y_test) = mnist
    assert evaluate(model, x_test[:limit], y_test[:limit]).accuracy > 0.8
