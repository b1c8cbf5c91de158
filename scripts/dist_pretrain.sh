#!/usr/bin/env bash
# Pretraining on RefCOCO, RefCOCO+ and RefCOCOg.
#   GPUS=8 ./scripts/dist_pretrain.sh OUTPUT_DIR [more flags]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
OUTPUT_DIR=$1
PY_ARGS=("${@:2}")

launch main.py --config configs/pretrain_refcoco_r50.args --output_dir="${OUTPUT_DIR}" "${PY_ARGS[@]}"
echo "Working path is: ${OUTPUT_DIR}"
