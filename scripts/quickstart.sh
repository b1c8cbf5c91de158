#!/usr/bin/env bash
# The whole BIFIT pipeline on a fresh machine, offline, on CPU (about 10-15 minutes on 2 cores):
# synthetic data and a tiny text encoder, 2-process distributed training of a small BIFIT on Ref-Shapes,
# held-out evaluation, Ref-YouTube-VOS-style inference (submission zip), Ref-DAVIS17 inference and J&F,
# and a demo overlay. Everything goes to $QUICKSTART_DIR (default: quickstart/).
set -euo pipefail
cd "$(dirname "$0")/.."

QS=${QUICKSTART_DIR:-quickstart}
EPOCHS=${EPOCHS:-2}
export OMP_NUM_THREADS=1
step() { printf '\n=== %s ===\n' "$*"; }

step "1/8 install the requirements"
python -m pip install --quiet --disable-pip-version-check -r requirements.txt

step "2/8 synthetic datasets (Ref-Shapes, Ref-DAVIS17 layout) and a tiny text encoder"
python tools/make_synthetic_data.py --out "$QS/data" --benchmarks refshapes davis --refshapes_train 48
python tools/make_tiny_text_encoder.py --out "$QS/tiny_roberta" --datasets "$QS/data/ref-shapes" "$QS/data/ref-davis"

MODEL=(--backbone resnet18 --backbone_pretrained none --text_encoder "$QS/tiny_roberta"
       --hidden_dim 64 --mask_dim 64 --dim_feedforward 128 --enc_layers 1 --dec_layers 2 --num_queries 3
       --with_box_refine --binary --freeze_text_encoder --device cpu)
SHAPES=(--dataset_file ytvos --ytvos_path "$QS/data/ref-shapes" --num_frames 3 --max_size 160)
CHECKPOINT="$QS/train/checkpoint.pth"

step "3/8 train a small BIFIT on Ref-Shapes with 2 processes (torch.distributed, gloo)"
python -m torch.distributed.run --standalone --nproc_per_node=2 main.py "${MODEL[@]}" "${SHAPES[@]}" \
    --lr 3e-4 --lr_backbone 3e-4 --batch_size 2 --epochs "$EPOCHS" --lr_drop 100 --num_workers 1 \
    --print_freq 50 --output_dir "$QS/train"

step "4/8 held-out mask IoU, untrained vs trained"
python main.py "${MODEL[@]}" "${SHAPES[@]}" --eval --num_workers 1 --output_dir "$QS/eval_untrained" \
    | tee "$QS/eval_untrained.log" | grep 'held-out' || true
python main.py "${MODEL[@]}" "${SHAPES[@]}" --eval --resume "$CHECKPOINT" --num_workers 1 \
    --output_dir "$QS/eval" | tee "$QS/eval.log" | grep 'held-out'

step "5/8 Ref-YouTube-VOS-style inference on the held-out videos (2 worker processes)"
python inference_ytvos.py "${MODEL[@]}" --ytvos_path "$QS/data/ref-shapes" --resume "$CHECKPOINT" \
    --output_dir "$QS/ytvos" --ngpu 2 --short_side 120 --visualize

step "6/8 Ref-DAVIS17 inference (4 annotators)"
python inference_davis.py "${MODEL[@]}" --davis_path "$QS/data/ref-davis" --resume "$CHECKPOINT" \
    --output_dir "$QS/davis" --ngpu 2 --short_side 120

step "7/8 DAVIS-2017 J&F of annotator 0"
python eval_davis.py --results_path "$QS/davis/valid/anno_0" --davis_path "$QS/data/ref-davis/DAVIS"

step "8/8 demo: a held-out video and its first sentence"
read -r VIDEO TEXT < <(python - "$QS/data/ref-shapes" <<'EOF'
import json, sys
videos = json.load(open(f'{sys.argv[1]}/meta_expressions/valid/meta_expressions.json'))['videos']
video = sorted(videos)[0]
print(video, videos[video]['expressions']['0']['exp'])
EOF
)
python demo.py "${MODEL[@]}" --video "$QS/data/ref-shapes/valid/JPEGImages/$VIDEO" --text "$TEXT" \
    --resume "$CHECKPOINT" --output "$QS/demo.gif" --short_side 120

cat <<EOF

=== results ===
trained model:            $CHECKPOINT (training log: $QS/train/log.txt)
held-out mask IoU:        $(grep -h 'held-out' "$QS/eval_untrained.log" | sed 's/.*IoU: /untrained /') -> $(grep -h 'held-out' "$QS/eval.log" | sed 's/.*IoU: /trained /')
Ref-YouTube-VOS masks:    $QS/ytvos/valid/   overlays: $QS/ytvos/valid_images/
server submission zip:    $QS/ytvos/submission.zip
Ref-DAVIS17 palette PNGs: $QS/davis/valid/anno_0..3/
DAVIS J&F (annotator 0):  $QS/davis/valid/anno_0/global_results-val.csv
demo overlay:             $QS/demo.gif  ("$TEXT")
EOF
