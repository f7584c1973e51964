#!/usr/bin/env bash
# A multi-host GPU job with SLURM, any mode: one process per node, all of the node's GPUs per
# process.
#
#   sbatch --nodes=8 --gpus-per-node=8 launch/slurm_gpu.sh configs/wvd_2b.py /shared/runs/wvd_2b \
#       --config.mesh.data=1 --config.mesh.fsdp=-1 --config.mesh.dcn_fsdp=8 \
#       --config.autoencoder.weights=/shared/weights/sd-vae
#   sbatch --nodes=8 --gpus-per-node=8 launch/slurm_gpu.sh configs/wvd_2b.py /shared/runs/wvd_2b \
#       --mode=eval [same overrides]
#
# Arguments as launch/local_multiprocess.sh (CONFIG WORKDIR [--mode=MODE] [overrides]; the mode
# defaults to train). mesh.dcn_fsdp=<nodes> keeps each node's share of the fsdp axis on NVLink.
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
# --signal=TERM@120 above: SLURM sends SIGTERM two minutes before the time limit; within
# train.stop_check_every steps all processes agree, save the same step and exit 0, and a
# resubmitted job resumes from it (on any number of nodes).
srun --kill-on-bad-exit=1 python -m wvd_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --mode=train "$@"
