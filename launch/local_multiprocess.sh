#!/usr/bin/env bash
# Two JAX processes on one CPU machine (gloo collectives): a rehearsal of multi-host training.
#
#   launch/local_multiprocess.sh configs/demo.py /tmp/wvd_mp --config.train.num_steps=20
set -euo pipefail
CONFIG=${1:?config}; WORKDIR=${2:?workdir}; shift 2
PORT=${PORT:-12355}
export XLA_FLAGS="--xla_force_host_platform_device_count=2"
export JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
pids=()
for i in 0 1; do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i \
    python -m wvd_jax.main --config="$CONFIG" --workdir="$WORKDIR" --mode=train "$@" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
