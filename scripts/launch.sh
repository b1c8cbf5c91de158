#!/usr/bin/env bash
# Shared by the dist_*.sh scripts: `launch SCRIPT [ARGS]` runs SCRIPT with `torchrun`, GPUS processes on this
# machine. Several machines (torchrun's static rendezvous): run the same command on every node with
#   NNODES      number of nodes (default 1)
#   NODE_RANK   this node's rank, 0 .. NNODES-1 (default 0); node 0 hosts the rendezvous
#   MASTER_ADDR address of node 0 that the other nodes reach (default 127.0.0.1)
#   MASTER_PORT a free port there (default PORT, default 29500)
# e.g. on two nodes: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=node0 GPUS=8 ./scripts/dist_pretrain.sh OUTPUT_DIR
# (scripts/slurm_train.sh sets them under SLURM).
GPUS=${GPUS:-8}
PORT=${PORT:-29500}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-${PORT}}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

launch() {
    torchrun --nnodes="${NNODES}" --node_rank="${NODE_RANK}" --master_addr="${MASTER_ADDR}" \
        --master_port="${MASTER_PORT}" --nproc_per_node="${GPUS}" "$@"
}

# After training, the scripts that also segment a benchmark do it on the first node only.
first_node() {
    [[ "${NODE_RANK}" == 0 ]]
}

# The value of option NAME in the remaining arguments (`NAME VALUE` or `NAME=VALUE`, the last one wins), else
# DEFAULT:  DAVIS_PATH=$(option_value --davis_path data/ref-davis "${PY_ARGS[@]}")
option_value() {
    local name=$1 value=$2 args=("${@:3}") i
    for ((i = 0; i < ${#args[@]}; i++)); do
        case "${args[$i]}" in
            "$name"=*) value="${args[$i]#"$name"=}" ;;
            "$name") value="${args[$((i + 1))]:-$value}" ;;
        esac
    done
    echo "$value"
}
