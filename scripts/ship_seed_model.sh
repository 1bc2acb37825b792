#!/usr/bin/env bash
# Reproduces src/digitcnn/weights/seed.safetensors, the tutorial's network that the page's "look inside" view can
# switch to (bash scripts/ship_seed_model.sh [RUN_DIR]): trained by the tutorial's recipe (`--arch seed`: 20 epochs
# of Adam at 1e-3, batches of 128, no augmentation) at seed 0, its softmax temperature fitted on its validation
# split, then stored in float16 (half of float32's 8 MB; loading gives float32 back) with its config and test
# accuracy, in float32 and as stored, in the file's metadata. About 30 minutes on 2 idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run=${1:-runs/seed-0}
[ -f "$run/config.json" ] && grep -q '"results"' "$run/config.json" || .venv/bin/digitcnn train --arch seed --epochs 20 --seed 0 --out "$run"
# Fits the softmax temperature on the run's validation split and stores it with the run (so `unsure` means it).
.venv/bin/digitcnn evaluate --model "$run" --report "$run/report"
.venv/bin/python - "$run" <<'PYTHON'
import sys

import torch

from digitcnn import evaluate, load_data
from digitcnn.inside import TUTORIAL_MODEL
from digitcnn.runs import load_model_file, load_run_model, model_results, save_model_file

run = sys.argv[1]
results = {**model_results(run), "command": f"digitcnn train --arch seed --epochs 20 --seed 0 --out {run}"}
model = load_run_model(run)
save_model_file(model, TUTORIAL_MODEL, results, dtype=torch.float16)
# The stored file's own figure: its weights rounded to float16 and read back as float32.
_, (x_test, y_test) = load_data("mnist")
results["test_accuracy_float16"] = evaluate(load_model_file(TUTORIAL_MODEL), x_test, y_test).accuracy
save_model_file(model, TUTORIAL_MODEL, results, dtype=torch.float16)
print(f"wrote {TUTORIAL_MODEL}: test accuracy {results['test_accuracy']:.4f} "
      f"(stored in float16: {results['test_accuracy_float16']:.4f})")
PYTHON
