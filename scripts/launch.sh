#!/usr/bin/env bash
# Shared by the dist_*.sh scripts: `torchrun` with GPUS processes on this machine, PORT for rendezvous.
GPUS=${GPUS:-8}
PORT=${PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

launch() {
    torchrun --nproc_per_node="${GPUS}" --master_port="${PORT}" "$@"
}
