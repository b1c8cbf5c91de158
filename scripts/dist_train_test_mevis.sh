#!/usr/bin/env bash
# MeViS: finetune a RefCOCO-pretrained model; segment valid_u and score it with eval_mevis.py (the organisers'
# J&F, OUTPUT_DIR/valid_u/global_results-valid_u.csv); segment valid and write OUTPUT_DIR/submission.zip for the
# MeViS server.
#   GPUS=8 ./scripts/dist_train_test_mevis.sh OUTPUT_DIR PRETRAINED_WEIGHTS [more flags]
# The flags go to training and inference; --mevis_path also to the evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/launch.sh
OUTPUT_DIR=$1
PRETRAINED_WEIGHTS=$2
PY_ARGS=("${@:3}")
MEVIS_PATH=$(option_value --mevis_path data/mevis "${PY_ARGS[@]}")

echo "Load pretrained weights from: ${PRETRAINED_WEIGHTS}"
launch main.py --config configs/mevis_r50.args \
    --output_dir="${OUTPUT_DIR}" --pretrained_weights="${PRETRAINED_WEIGHTS}" "${PY_ARGS[@]}"

for SPLIT in valid_u valid; do
    python3 inference_mevis.py --config configs/mevis_r50.args --ngpu="${GPUS}" --split="${SPLIT}" \
        --output_dir="${OUTPUT_DIR}" --resume="${OUTPUT_DIR}/checkpoint.pth" "${PY_ARGS[@]}"
done
python3 eval_mevis.py --pred_path="${OUTPUT_DIR}/valid_u" --mevis_path="${MEVIS_PATH}"
echo "Working path is: ${OUTPUT_DIR}"
