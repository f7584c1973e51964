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
# One sequence of steps, each over ALL GPUs of the machine (data parallel: config.mesh.data = -1
# spans every visible device): train and export WVD, train and export RGB-only, then evaluate
# WVD and RGB-only (eval samples are spread over the GPUs too). `start` detaches the sequence so that it outlives the
# calling shell (a device call of limited length); `watch` and `finish` can then be called as
# often as needed. Extra config overrides for every step: PROOF_OVERRIDES (e.g. a tiny CPU
# rehearsal, or --config.train.max_minutes=...). Extra evaluations: PROOF_LANGEVIN="0 1 2"
# evaluates each model again with that many Langevin corrector steps per level
# (--config.sample.langevin_steps=K) into RUN_DIR/NAME/eval_langevinK/, next to the default
# evaluation RUN_DIR/NAME/eval/. Results: RUN_DIR/{wvd,rgb_only}/eval*/ (report.md, plots,
# gallery) and RUN_DIR/comparison.md (every evaluation side by side); with OUT, archives of those
# and of the logs are written there, also when a run is unfinished or failed (then `finish`
# exits 1), and WVD's export packed as the repository's shipped model, OUT/wvd_small
# (python -m wvd_jax.models.shipped pack: at most 60 MB in parts of <= 16 MiB).
set -uo pipefail
PHASE=${1:?phase: all, start, watch or finish}; RUN=${2:?run directory}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)
COMMON=(--config=configs/small.py "--config.data.data_dir=$RUN/data" ${PROOF_OVERRIDES:-})
NAMES=(wvd rgb_only)
declare -A EXTRA=([wvd]="" [rgb_only]="--config.diffusion.modalities=rgb")
EVALS=(eval)  # The evaluation steps of each model: the default one, then the variants.
for k in ${PROOF_LANGEVIN:-}; do EVALS+=("eval_langevin$k"); done
GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU')

render() {  # every split once, before the runs read them
  # CPU only: the render pool's workers must not initialize the GPUs.
  JAX_PLATFORMS=cpu "$PY" -m wvd_jax.data.build "${COMMON[@]}" 2>&1 | grep -v 'Generating\|Shuffling'
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "rendering the dataset failed"; return 1; }
}

step() {  # name mode: one step of a run; its exit status goes to RUN/name.mode.rc
  # mode: train, export, eval, or eval_langevinK (eval with K corrector steps, its own output
  # directory).
  local name=$1 mode=$2 rc args=(--mode=train)
  case $mode in
    export) args=(--mode=export) ;;
    eval) args=(--mode=eval) ;;
    eval_langevin*) args=(--mode=eval "--config.sample.langevin_steps=${mode#eval_langevin}"
                          "--config.eval.output_dir=$RUN/$name/$mode") ;;
  esac
  "$PY" -m wvd_jax.main "${COMMON[@]}" ${EXTRA[$name]} "--workdir=$RUN/$name" "${args[@]}" \
    > "$RUN/$name.$mode.log" 2>&1
  rc=$?
  echo $rc > "$RUN/$name.$mode.rc"
  return $rc
}

sequence() {  # every model's training, then every model's evaluations; stops at a failure
  local name mode
  for name in "${NAMES[@]}"; do step "$name" train && step "$name" export || return 1; done
  for name in "${NAMES[@]}"; do
    for mode in "${EVALS[@]}"; do step "$name" "$mode" || return 1; done
  done
}

steps() {  # [detach]: the sequence on all GPUs
  rm -f "$RUN"/*.rc  # An earlier start's exit statuses would read as this one's.
  echo "training and evaluating ${NAMES[*]} in turn, each on all $GPUS GPU(s) (data parallel)"
  if [ "${1:-}" = detach ]; then  # setsid: survives the calling shell
    setsid bash -c "$(declare -f step sequence); $(declare -p COMMON EXTRA EVALS NAMES RUN PY); \
      sequence" > "$RUN/sequence.log" 2>&1 < /dev/null &
  else
    sequence
  fi
}

state() {  # name -> done | failed | running | waiting (rc files of its steps)
  local name=$1 mode
  for mode in train export "${EVALS[@]}"; do
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
    local runs=() mode
    for name in "${NAMES[@]}"; do
      for mode in "${EVALS[@]}"; do
        runs+=("$name${mode#eval}=$RUN/$name/$mode/results.json")
      done
    done
    "$PY" -m wvd_jax.evaluation.compare "${runs[@]}" "--output=$RUN/comparison.md" || ok=1
    cat "$RUN/comparison.md" "$RUN/wvd/eval/report.md"
  fi
  if [ -n "$out" ]; then
    mkdir -p "$out"
    for name in "${NAMES[@]}"; do
      local evals=($(cd "$RUN/$name" 2>/dev/null && ls -d eval eval_langevin* 2>/dev/null))
      [ ${#evals[@]} -gt 0 ] && tar czf "$out/eval_$name.tgz" -C "$RUN/$name" "${evals[@]}"
      logs+=("$RUN/$name".*.log "$RUN/$name/metrics.jsonl")
    done
    logs=($(ls "${logs[@]}" "$RUN"/sequence.log 2>/dev/null | sed "s|^$RUN/||"))
    [ ${#logs[@]} -gt 0 ] && tar czf "$out/logs.tgz" -C "$RUN" "${logs[@]}"
    [ -f "$RUN/comparison.md" ] && cp "$RUN/comparison.md" "$out/"
    if [ -d "$RUN/wvd/export" ] && [ ! -d "$out/wvd_small" ]; then
      "$PY" -m wvd_jax.models.shipped pack "--export=$RUN/wvd/export" "--output=$out/wvd_small" \
        || ok=1
    fi
  fi
  return $ok
}

case "$PHASE" in
  start) render && steps detach ;;
  watch) watch "${3:-60}" ;;
  finish) finish "${3:-}" ;;
  all) render && steps; finish "${3:-}" ;;
  *) echo "unknown phase $PHASE (all, start, watch, finish)"; exit 2 ;;
esac
