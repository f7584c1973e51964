#!/usr/bin/env bash
# Several JAX processes on one CPU machine (gloo collectives): a rehearsal of a multi-host job
# (GPU cluster, TPU pod) in any mode.
#
#   launch/local_multiprocess.sh CONFIG WORKDIR [--mode=MODE] [flags and --config.* overrides]
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=2 launch/local_multiprocess.sh configs/demo.py /tmp/mp \
#       --config.mesh.fsdp=4 --config.mesh.data=1 --config.train.num_steps=20
#   launch/local_multiprocess.sh configs/demo.py /tmp/mp --mode=export
#   launch/local_multiprocess.sh configs/demo.py /tmp/mp --mode=depth --input=photo.png
#
# Each process sees DEVICES_PER_PROCESS simulated CPU devices; the mode defaults to train (a
# later --mode wins). The script prints "process <i> pid <pid>" for each process, exits with the
# first non-zero status, and then stops the others (they would wait forever in a collective).
# PYTHON picks the interpreter (default: python); PORT the coordinator port (default 12355).
set -euo pipefail
CONFIG=${1:?usage: local_multiprocess.sh CONFIG WORKDIR [--mode=MODE] [overrides...]}
WORKDIR=${2:?usage: local_multiprocess.sh CONFIG WORKDIR [--mode=MODE] [overrides...]}
shift 2
NUM_PROCESSES=${NUM_PROCESSES:-2}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-2}
PORT=${PORT:-12355}
PYTHON=${PYTHON:-python}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
export JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap 'stop_all; exit 143' TERM INT
for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=$NUM_PROCESSES JAX_PROCESS_ID=$i \
    "$PYTHON" -m wvd_jax.main --config="$CONFIG" --workdir="$WORKDIR" --mode=train "$@" &
  pids+=($!)
  echo "process $i pid $!" >&2
done
status=0
for ((left = NUM_PROCESSES; left > 0; left--)); do
  wait -n && continue
  code=$?
  if ((status == 0)); then status=$code; fi
  stop_all
done
exit $status
