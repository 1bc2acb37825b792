"""Shared fixtures: real MNIST (the cache is built once per CI run) and one small real training run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(*arguments, check=False, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Runs the real `digitcnn` command in a fresh process, as a user would."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "digitcnn", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"digitcnn {' '.join(map(str, arguments))} exited {result.returncode}:\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def mnist():
    from digitcnn.data import load_data

    return load_data("mnist")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """Two epochs of the default architecture on the first 8,000 training images, through the real CLI."""
    out = tmp_path_factory.mktemp("runs") / "small"
    result = run_cli("train", "--limit", 8000, "--epochs", 2, "--batch-size", 128, "--out", out, check=True)
    return out, result
