#!/usr/bin/env bash
# The proof run: configs/small.py trained twice on the synthetic world, WVD (RGB + XYZ) and the
# paper's RGB-only ablation (diffusion.modalities=rgb), each for train.max_minutes, then both
# evaluated on the held-out test split and compared.
#
#   launch/proof_run.sh all RUN_DIR [OUT]        # everything, in the foreground
#   launch/proof_run.sh start RUN_DIR            # render the data, then train + evaluate detached
#   launch/proof_run.sh watch RUN_DIR SECONDS    # progress until both runs are evaluated or
#                                                # SECONDS pass; exits 1 as soon as a step failed
#   launch/proof_run.sh finish RUN_DIR [OUT]     # compare the reports; pack them into OUT
#
# Each run is a lane: train, then evaluate. With two or more GPUs the lanes run side by side
# (CUDA_VISIBLE_DEVICES 0 and 1); with one GPU or none, one lane runs both models in turn.
# `start` detaches the lanes so that they outlive the calling shell (a device call of limited
# length); `watch` and `finish` can then be called as often as needed. Extra config overrides for
# both runs: PROOF_OVERRIDES (e.g. a tiny CPU rehearsal). Results: RUN_DIR/{wvd,rgb_only}/eval/
# (report.md, plots, gallery) and RUN_DIR/comparison.md; with OUT, archives of those and of the
# logs are written there, also when a run is unfinished or failed (then `finish` exits 1).
set -uo pipefail
PHASE=${1:?phase: all, start, watch or finish}; RUN=${2:?run directory}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)
COMMON=(--config=configs/small.py "--config.data.data_dir=$RUN/data" ${PROOF_OVERRIDES:-})
NAMES=(wvd rgb_only)
declare -A EXTRA=([wvd]="" [rgb_only]="--config.diffusion.modalities=rgb")
GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU')

gpu_of() {  # run name -> CUDA_VISIBLE_DEVICES value ('' = all / CPU)
  if [ "$GPUS" -ge 2 ]; then [ "$1" = wvd ] && echo 0 || echo 1; elif [ "$GPUS" = 1 ]; then echo 0; fi
}

render() {  # every split once, before the runs read them
  # CPU only: the render pool's workers must not initialize the GPUs.
  JAX_PLATFORMS=cpu "$PY" -m wvd_jax.data.build "${COMMON[@]}" 2>&1 | grep -v 'Generating\|Shuffling'
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "rendering the dataset failed"; return 1; }
}

step() {  # name mode: one step of a run; its exit status goes to RUN/name.mode.rc
  local name=$1 mode=$2 rc
  CUDA_VISIBLE_DEVICES=$(gpu_of "$name") "$PY" -m wvd_jax.main "${COMMON[@]}" ${EXTRA[$name]} \
    "--workdir=$RUN/$name" "--mode=$mode" > "$RUN/$name.$mode.log" 2>&1
  rc=$?
  echo $rc > "$RUN/$name.$mode.rc"
  return $rc
}

lane() {  # names...: train and evaluate each in turn
  local name
  for name in "$@"; do step "$name" train && step "$name" eval || return 1; done
}

lanes() {  # [detach]: one lane per GPU (two GPUs), else one lane for both models
  local groups=("${NAMES[@]}") group
  rm -f "$RUN"/*.rc  # An earlier start's exit statuses would read as this one's.
  [ "$GPUS" -ge 2 ] || groups=("${NAMES[*]}")
  for group in "${groups[@]}"; do
    echo "lane '$group' on GPU '$(gpu_of "${group%% *}")'"
    if [ "${1:-}" = detach ]; then  # setsid: survives the calling shell
      setsid bash -c "$(declare -f gpu_of step lane); $(declare -p COMMON EXTRA GPUS RUN PY); \
        lane $group" > "$RUN/lane.${group// /_}.log" 2>&1 < /dev/null &
    else
      lane $group &
    fi
  done
  [ "${1:-}" = detach ] || wait
}

state() {  # name -> done | failed | running | waiting (rc files of its two steps)
  local name=$1 mode
  for mode in train eval; do
    if [ ! -f "$RUN/$name.$mode.rc" ]; then
      [ -f "$RUN/$name.$mode.log" ] && echo running || echo waiting; return
    fi
    [ "$(cat "$RUN/$name.$mode.rc")" = 0 ] || { echo failed; return; }
  done
  echo done
}

watch() {  # seconds: print progress until both runs are done; fail fast when one has failed
  local until=$(( $(date +%s) + ${1:?seconds} )) name done
  while :; do
    done=0
    for name in "${NAMES[@]}"; do
      case $(state "$name") in
        done) done=$((done + 1)); echo "$name: done" ;;
        failed) echo "$name FAILED:"; tail -n 30 "$RUN/$name".*.log; return 1 ;;
        running) echo "$name: $(tail -n 1 "$RUN/$name/metrics.jsonl" 2>/dev/null | cut -c1-160)" ;;
        waiting) echo "$name: waiting" ;;
      esac
    done
    [ "$done" = "${#NAMES[@]}" ] && return 0
    [ "$(date +%s)" -lt "$until" ] || { echo "watch: time is up, runs go on"; return 0; }
    sleep 30
  done
}

finish() {  # [OUT]: compare and pack what there is
  local out=${1:-} name now ok=0 logs=()
  for name in "${NAMES[@]}"; do
    now=$(state "$name"); echo "$name: $now"; [ "$now" = done ] || ok=1
  done
  if [ $ok = 0 ]; then
    "$PY" -m wvd_jax.evaluation.compare "wvd=$RUN/wvd/eval/results.json" \
      "rgb_only=$RUN/rgb_only/eval/results.json" "--output=$RUN/comparison.md" || ok=1
    cat "$RUN/comparison.md" "$RUN/wvd/eval/report.md"
  fi
  if [ -n "$out" ]; then
    mkdir -p "$out"
    for name in "${NAMES[@]}"; do
      [ -d "$RUN/$name/eval" ] && tar czf "$out/eval_$name.tgz" -C "$RUN/$name" eval
      logs+=("$RUN/$name".*.log "$RUN/$name/metrics.jsonl")
    done
    logs=($(ls "${logs[@]}" "$RUN"/lane.*.log 2>/dev/null | sed "s|^$RUN/||"))
    [ ${#logs[@]} -gt 0 ] && tar czf "$out/logs.tgz" -C "$RUN" "${logs[@]}"
    [ -f "$RUN/comparison.md" ] && cp "$RUN/comparison.md" "$out/"
  fi
  return $ok
}

case "$PHASE" in
  start) render && lanes detach ;;
  watch) watch "${3:-60}" ;;
  finish) finish "${3:-}" ;;
  all) render && lanes; finish "${3:-}" ;;
  *) echo "unknown phase $PHASE (all, start, watch, finish)"; exit 2 ;;
esac
