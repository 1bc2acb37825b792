#!/usr/bin/env bash
# Reproduces the model shipped in src/digitcnn/weights/default.safetensors (bash scripts/ship_model.sh [RUN_DIR]):
# on the first 54,000 training images (the last 6,000 are its validation split), calibrated on that split, then
# copied into the package with its config, temperature and one test-set result in the file's metadata, and
# exported beside it as its ONNX twin.
# About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run=${1:-runs/best-0}
[ -f "$run/config.json" ] && grep -q '"results"' "$run/config.json" || .venv/bin/digitcnn train --arch best --seed 0 --out "$run"
# Fits the softmax temperature on the run's validation split and stores it with the run (so `unsure` means it).
.venv/bin/digitcnn evaluate --model "$run" --report "$run/report"
.venv/bin/python - "$run" <<'PYTHON'
import sys

from digitcnn.inference import SHIPPED_MODEL
from digitcnn.runs import load_run_model, model_results, save_model_file

run = sys.argv[1]
results = {**model_results(run), "command": f"digitcnn train --arch best --seed 0 --out {run}"}
save_model_file(load_run_model(run), SHIPPED_MODEL, results)
print(f"wrote {SHIPPED_MODEL}: test accuracy {results['test_accuracy']:.4f}")
PYTHON
# Its ONNX twin, checked against it on 1,000 test digits: `predict` reads with it without importing PyTorch.
.venv/bin/digitcnn export --out src/digitcnn/weights/default.onnx
