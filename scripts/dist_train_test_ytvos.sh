#!/usr/bin/env bash
# Ref-YouTube-VOS: finetune a RefCOCO-pretrained model, then write the server submission.
#   GPUS=8 ./scripts/dist_train_test_ytvos.sh OUTPUT_DIR PRETRAINED_WEIGHTS [more flags]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
OUTPUT_DIR=$1
PRETRAINED_WEIGHTS=$2
PY_ARGS=("${@:3}")

echo "Load pretrained weights from: ${PRETRAINED_WEIGHTS}"
launch main.py --config configs/ytvos_r50.args \
    --output_dir="${OUTPUT_DIR}" --pretrained_weights="${PRETRAINED_WEIGHTS}" "${PY_ARGS[@]}"

if first_node; then
    python3 inference_ytvos.py --config configs/ytvos_r50.args --ngpu="${GPUS}" \
        --output_dir="${OUTPUT_DIR}" --resume="${OUTPUT_DIR}/checkpoint.pth" "${PY_ARGS[@]}"
fi
echo "Working path is: ${OUTPUT_DIR}"
