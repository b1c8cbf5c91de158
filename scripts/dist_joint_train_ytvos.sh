#!/usr/bin/env bash
# Joint training on RefCOCO/+/g and Ref-YouTube-VOS, then the Ref-YouTube-VOS submission.
#   GPUS=8 ./scripts/dist_joint_train_ytvos.sh OUTPUT_DIR [more flags]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
OUTPUT_DIR=$1
PY_ARGS=("${@:2}")

launch main.py --config configs/joint_r50.args --output_dir="${OUTPUT_DIR}" "${PY_ARGS[@]}"

if first_node; then
    python3 inference_ytvos.py --config configs/ytvos_r50.args --ngpu="${GPUS}" \
        --output_dir="${OUTPUT_DIR}" --resume="${OUTPUT_DIR}/checkpoint.pth" "${PY_ARGS[@]}"
fi
echo "Working path is: ${OUTPUT_DIR}"
