"""Benchmarks run end to end in tiny mode: the scripts work; their figures come from full runs, never from tests."""

import json
import subprocess
import sys

from tests.conftest import REPO


def test_onnx_vs_torch_benchmark_measures_both_runtimes(tmp_path):
    out = tmp_path / "onnx_vs_torch.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.onnx_vs_torch", "--tiny", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "onnx_vs_torch.tiny.json").read_text())
    for side in ("pytorch", "onnxruntime"):
        figures = report[side]
        assert figures["images_per_second"] > 0 and 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]
    assert report["export_check"]["labels_identical"] and report["export_check"]["max_abs_difference"] <= 1e-4
    assert report["images_per_round"] == 256 and report["cores"] >= 1
    assert "onnxruntime" in result.stdout and "images/s" in result.stdout
