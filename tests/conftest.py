"""Shared fixtures: real MNIST (the cache is built once per CI run) and one small real training run."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI replays the same examples every run (a red build means a change broke something, not a new draw); a
# developer's run draws new ones and keeps any it breaks in .hypothesis/ for the next run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
# The fields of every answer, from `predict --json` and POST /api/predict alike: the contract users code against,
# written out here rather than taken from Reading.as_dict, so a change to it fails a test.
ANSWER_FIELDS = {
    "file",
    "text",
    "digits",
    "label",
    "class_name",
    "confidence",
    "probabilities",
    "top3",
    "unsure",
    "error",
    "not_a_digit",
}

# The browser tests: Debian's headless Chromium, driven by Playwright, against `digitcnn serve`.
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
# As the machine's probe found: without these, Chromium's background connections stall on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Each browser test module's `pytestmark`.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"), reason="needs Debian's chromium"),
]


def run_cli(*arguments, check=False, timeout=600, env=None, **kwargs) -> subprocess.CompletedProcess:
    """Runs the real `digitcnn` command in a fresh process, as a user would."""
    environment = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
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


def run_benchmark(name: str, *arguments, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `python -m benchmarks.NAME ARGUMENTS` from the repository root, as the benchmarks' docstrings say to."""
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *map(str, arguments)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def tiny_benchmark(name: str, tmp_path, *arguments) -> tuple[dict, subprocess.CompletedProcess]:
    """A benchmark's --tiny smoke run: (the JSON it wrote beside --out, as NAME.tiny.json; the finished process)."""
    result = run_benchmark(name, "--tiny", "--out", tmp_path / f"{name}.json", *arguments)
    return json.loads((tmp_path / f"{name}.tiny.json").read_text()), result


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


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(*arguments):
    """The real `digitcnn serve ARGUMENTS` in its own process on a free loopback port: its base URL."""
    import time
    import urllib.request

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "digitcnn", "serve", "--port", str(port), *map(str, arguments)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/health", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"digitcnn serve exited: {process.stderr.read()}") from None
            time.sleep(0.2)
    else:
        process.kill()
        raise AssertionError("digitcnn serve did not answer within 60 s")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def live_server():
    """The real `digitcnn serve` with the shipped model."""
    with serving() as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
