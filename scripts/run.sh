#!/usr/bin/env bash
# Sets everything up, then runs the main job: get MNIST, train the default model, print test accuracy,
# save the model and the figure to runs/. Extra arguments go to `digitcnn train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/digitcnn train "$@"
