#!/usr/bin/env bash
# A multi-host job on a Cloud TPU VM pod slice, any mode: the same command on every worker.
#
#   launch/tpu_pod.sh my-tpu us-central2-b configs/wvd_2b.py gs://bucket/runs/wvd_2b \
#       --config.mesh.fsdp=-1 --config.mesh.data=1
#   launch/tpu_pod.sh my-tpu us-central2-b configs/wvd_2b.py gs://bucket/runs/wvd_2b --mode=export
#
# Arguments after the zone as launch/local_multiprocess.sh (CONFIG WORKDIR [--mode=MODE]
# [overrides]; the mode defaults to train). Several slices (multislice): set
# --config.mesh.dcn_data=<slices> so only the data axis crosses the data-centre network.
# On TPU VMs jax.distributed.initialize() discovers the pod from the TPU metadata
# (TPU_WORKER_HOSTNAMES lists several workers, which turns it on in wvd_jax.main). Use a gs://
# workdir (passed to orbax and TensorBoard as is, through etils.epath) so every worker reads
# and writes the same checkpoints (gcsfs or tensorflow must be installed for gs:// paths). Set
# up the workers first with the repository checked out at $REPO_DIR and
# `pip install -r requirements.txt "jax[tpu]"`.
set -euo pipefail
TPU_NAME=${1:?tpu name}; ZONE=${2:?zone}; CONFIG=${3:?config}; WORKDIR=${4:?workdir}; shift 4
REPO_DIR=${REPO_DIR:-~/wvd_jax}
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command \
  "cd $REPO_DIR && python3 -m wvd_jax.main --config=$CONFIG --workdir=$WORKDIR --mode=train $ARGS"
