#!/usr/bin/env bash
# Ref-DAVIS17: inference with a Ref-YouTube-VOS model, then the DAVIS-2017 J&F of each annotator and
# their mean, the published number (printed, and written to OUTPUT_DIR/valid/global_results-val-mean.csv).
#   ./scripts/dist_test_davis.sh OUTPUT_DIR CHECKPOINT [more inference_davis.py flags]
# GPUS (default 2) worker processes; --device cpu works too. --davis_path is passed to both steps.
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${GPUS:-2}
source scripts/launch.sh
OUTPUT_DIR=$1
CHECKPOINT=$2
PY_ARGS=("${@:3}")

DAVIS_PATH=$(option_value --davis_path data/ref-davis "${PY_ARGS[@]}")

echo "Load model weights from: ${CHECKPOINT}"
python3 inference_davis.py --with_box_refine --binary --freeze_text_encoder \
    --output_dir="${OUTPUT_DIR}" --resume="${CHECKPOINT}" --ngpu="${GPUS}" "${PY_ARGS[@]}"

python3 eval_davis.py --davis_path="${DAVIS_PATH}/DAVIS" --mean_csv="${OUTPUT_DIR}/valid/global_results-val-mean.csv" \
    --results_path "${OUTPUT_DIR}"/valid/anno_{0,1,2,3}
echo "Working path is: ${OUTPUT_DIR}"
