#!/usr/bin/env bash
# Multi-node training under SLURM: one task per node, each running a dist_*.sh script (torchrun with GPUS
# processes) with the rendezvous of scripts/launch.sh set from the allocation. OUTPUT_DIR must be on a
# filesystem every node sees (checkpoints, automatic resumption).
#   sbatch --nodes=2 scripts/slurm_train.sh scripts/dist_train_test_ytvos.sh ytvos_dirs/r50 pretrain.pth [flags]
#   sbatch --nodes=4 scripts/slurm_train.sh scripts/dist_joint_train_ytvos.sh joint_dirs/video_swin_b \
#       --backbone video_swin_b_p4w7 --backbone_pretrained video_swin_base.pth --use_checkpoint
# Adapt the #SBATCH lines to your cluster (partition, account, GPUs per node, time).
#SBATCH --job-name=bifit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: sbatch [--nodes N] scripts/slurm_train.sh scripts/dist_SCRIPT.sh ARGS..." >&2
    exit 2
fi

export NNODES=${SLURM_JOB_NUM_NODES:?run this script with sbatch (or inside an salloc allocation)}
export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)}
export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
export GPUS=${GPUS:-${SLURM_GPUS_ON_NODE:-8}}
echo "${NNODES} nodes x ${GPUS} processes, rendezvous at ${MASTER_ADDR}:${MASTER_PORT}: $*"

# Each task learns its node's rank from SLURM_NODEID, in its own environment.
srun --ntasks="${NNODES}" --ntasks-per-node=1 --kill-on-bad-exit=1 \
    bash -c 'NODE_RANK=${SLURM_NODEID} exec bash "$@"' slurm_task "$@"
