#!/usr/bin/env bash
# Multi-host GPU training with SLURM: one process per node, all of the node's GPUs per process.
#
#   sbatch --nodes=8 --gpus-per-node=8 launch/slurm_gpu.sh configs/wvd_2b.py /shared/runs/wvd_2b \
#       --config.mesh.fsdp=8 --config.autoencoder.weights=/shared/weights/sd-vae
#
# jax.distributed.initialize() reads the coordinator address, process count and id from SLURM's
# environment (SLURM_NTASKS > 1 turns it on in wvd_jax.main). The workdir must be on storage every
# node sees: orbax writes one checkpoint cooperatively from all processes.
#SBATCH --job-name=wvd_jax
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --signal=TERM@120
set -euo pipefail
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
# NVLink multicast (NVLS) off: it can take shared GPUs out of service on some hosts.
export NCCL_NVLS_ENABLE=0
# Let XLA overlap collectives with compute; keep memory preallocation at 90%.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
# --signal=TERM@120 above: SLURM sends SIGTERM two minutes before the time limit; the train loop
# saves a checkpoint and exits, and a resubmitted job resumes from it.
srun --kill-on-bad-exit=1 python -m wvd_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --mode=train "$@"
