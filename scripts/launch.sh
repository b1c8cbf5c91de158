#!/usr/bin/env bash
# Shared by the dist_*.sh scripts: `torchrun` with GPUS processes on this machine, PORT for rendezvous.
GPUS=${GPUS:-8}
PORT=${PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

launch() {
    torchrun --nproc_per_node="${GPUS}" --master_port="${PORT}" "$@"
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
