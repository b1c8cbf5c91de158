#!/usr/bin/env bash
# The whole BIFIT pipeline on a fresh machine, offline, on CPU (about 6 minutes on 2 cores, installation
# included): synthetic data and a tiny text encoder, 2-process distributed training of a small BIFIT on
# Ref-Shapes, Ref-YouTube-VOS-style inference on held-out videos scored by eval_rvos.py (J&F and referring
# accuracy, untrained and trained), Ref-DAVIS17 inference and J&F, and a demo of two sentences on one
# held-out video. Everything goes to $QUICKSTART_DIR (default: quickstart/).
set -euo pipefail
cd "$(dirname "$0")/.."

QS=${QUICKSTART_DIR:-quickstart}
EPOCHS=${EPOCHS:-1}
SEED=${SEED:-42}
export OMP_NUM_THREADS=1
STAGES=()
STAGE_START=$SECONDS
step() {
    STAGES+=("$(( SECONDS - STAGE_START ))")
    STAGE_START=$SECONDS
    printf '\n=== %s ===\n' "$*"
}

step "1/8 install the requirements"
PIP_ROOT_USER_ACTION=ignore python -m pip install --quiet --disable-pip-version-check -r requirements.txt

step "2/8 synthetic datasets (Ref-Shapes, Ref-DAVIS17 layout) and a tiny text encoder"
python tools/make_synthetic_data.py --out "$QS/data" --benchmarks refshapes davis --refshapes_train 84
python tools/make_tiny_text_encoder.py --out "$QS/tiny_roberta" --datasets "$QS/data/ref-shapes" "$QS/data/ref-davis"

# Quick-start settings, chosen so that 2 CPU cores learn referring in a few minutes (see README): small
# frames, 2-frame clips, one query per frame, a trainable tiny text encoder and colour-preserving augmentation.
# Training records them (and the inference frame size, --short_side) in the checkpoint, where app.py finds them.
MODEL=(--backbone resnet18 --backbone_pretrained none --text_encoder "$QS/tiny_roberta"
       --hidden_dim 64 --mask_dim 64 --dim_feedforward 128 --enc_layers 1 --dec_layers 2 --num_queries 1
       --with_box_refine --binary --short_side 96 --device cpu)
SHAPES=(--dataset_file ytvos --ytvos_path "$QS/data/ref-shapes" --num_frames 2 --max_size 128)
HELD_OUT=(--ytvos_path "$QS/data/ref-shapes" --ngpu 2 --no_zip)
CHECKPOINT="$QS/train/checkpoint.pth"

step "3/8 the untrained model on the held-out Ref-Shapes videos: inference_ytvos.py, then eval_rvos.py"
python - "$QS/untrained.pth" "$SEED" "${MODEL[@]}" <<'EOF'
import sys
import torch
import opts
from main import get_parser, seed_everything
from models import build_model
seed_everything(int(sys.argv[2]))
model, _, _ = build_model(opts.parse_args(get_parser(), sys.argv[3:]))
torch.save({'model': model.state_dict()}, sys.argv[1])
EOF
python inference_ytvos.py "${MODEL[@]}" "${HELD_OUT[@]}" --resume "$QS/untrained.pth" --output_dir "$QS/ytvos_untrained"
python eval_rvos.py --pred_path "$QS/ytvos_untrained/valid" --gt_path "$QS/data/ref-shapes" \
    | tee "$QS/eval_untrained.log"

step "4/8 train a small BIFIT on Ref-Shapes with 2 processes (torch.distributed, gloo), plot its curves"
python -m torch.distributed.run --standalone --nproc_per_node=2 main.py "${MODEL[@]}" "${SHAPES[@]}" \
    --photometric brightness_contrast --lr 3e-4 --lr_backbone 0 --lr_text_encoder 3e-4 --lr_text_fusion 3e-4 \
    --batch_size 2 --epochs "$EPOCHS" --lr_drop 100 --num_workers 1 --print_freq 50 --seed "$SEED" \
    --output_dir "$QS/train"
python tools/plot_log.py "$QS/train/log.txt" --out "$QS/curves.png"

step "5/8 the trained model on the held-out videos (2 worker processes, with overlays), scored by eval_rvos.py"
python inference_ytvos.py "${MODEL[@]}" "${HELD_OUT[@]}" --resume "$CHECKPOINT" --output_dir "$QS/ytvos" --visualize
python eval_rvos.py --pred_path "$QS/ytvos/valid" --gt_path "$QS/data/ref-shapes" | tee "$QS/eval.log"

step "6/8 Ref-DAVIS17 inference (4 annotators)"
python inference_davis.py "${MODEL[@]}" --davis_path "$QS/data/ref-davis" --resume "$CHECKPOINT" \
    --output_dir "$QS/davis" --ngpu 2

step "7/8 DAVIS-2017 J&F of annotator 0"
python eval_davis.py --results_path "$QS/davis/valid/anno_0" --davis_path "$QS/data/ref-davis/DAVIS"

step "8/8 demo: two sentences naming different objects of one held-out video"
mapfile -t DEMO < <(python - "$QS/data/ref-shapes" <<'EOF'
import json, sys
videos = json.load(open(f'{sys.argv[1]}/meta_expressions/valid/meta_expressions.json'))['videos']
video = sorted(videos)[0]
first_sentence = {}
for expression in videos[video]['expressions'].values():
    first_sentence.setdefault(expression['obj_id'], expression['exp'])
print(video, *list(first_sentence.values())[:2], sep='\n')
EOF
)
python demo.py "${MODEL[@]}" --video "$QS/data/ref-shapes/valid/JPEGImages/${DEMO[0]}" \
    --text "${DEMO[1]}" "${DEMO[2]}" --resume "$CHECKPOINT" --output "$QS/demo.gif"
step "done"

NAMES=(install data untrained train trained davis eval_davis demo)
TIMES=""
for i in "${!NAMES[@]}"; do TIMES+="${NAMES[$i]} ${STAGES[$((i + 1))]}s, "; done
score() { grep -h '^valid:' "$1" | sed 's/^valid: //'; }
cat <<EOF

=== results ===
held-out Ref-Shapes, inference_ytvos.py masks scored by eval_rvos.py (referring accuracy: the share of
expressions whose masks cover the named object more than any other object):
  untrained: $(score "$QS/eval_untrained.log")
  trained:   $(score "$QS/eval.log")
per expression:           $QS/ytvos/valid/per-expression_results-valid.csv
trained model:            $CHECKPOINT (training log: $QS/train/log.txt)
training curves:          $QS/curves.png  (or: tensorboard --logdir $QS/train)
Ref-YouTube-VOS masks:    $QS/ytvos/valid/   overlays: $QS/ytvos/valid_images/
Ref-DAVIS17 palette PNGs: $QS/davis/valid/anno_0..3/
DAVIS J&F (annotator 0):  $QS/davis/valid/anno_0/global_results-val.csv
demo overlay:             $QS/demo.gif  (video ${DEMO[0]}: "${DEMO[1]}" | "${DEMO[2]}")
web demo with this model: pip install -r requirements-app.txt; QUICKSTART_DIR=$QS python app.py
stage times:              ${TIMES%, }; total $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s
EOF
