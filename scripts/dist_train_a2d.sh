#!/usr/bin/env bash
# A2D-Sentences: train (optionally from a pretrained model), evaluating after every epoch.
#   GPUS=8 ./scripts/dist_train_a2d.sh OUTPUT_DIR [PRETRAINED_WEIGHTS] [more flags]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
OUTPUT_DIR=$1
PRETRAINED=()
if [[ $# -ge 2 && "$2" != --* ]]; then
    PRETRAINED=(--pretrained_weights="$2")
    shift
fi
PY_ARGS=("${@:2}")

launch main.py --config configs/a2d_r50.args --output_dir="${OUTPUT_DIR}" "${PRETRAINED[@]}" "${PY_ARGS[@]}"
echo "Working path is: ${OUTPUT_DIR}"
