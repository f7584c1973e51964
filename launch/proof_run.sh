#!/usr/bin/env bash
# The proof run: configs/small.py trained twice on the synthetic world, WVD (RGB + XYZ) and the
# paper's RGB-only ablation (diffusion.modalities=rgb), each on its own GPU for
# train.max_minutes, then both evaluated on the held-out test split and compared.
#
#   launch/proof_run.sh all RUN_DIR              # everything, waits (one or two GPUs)
#   launch/proof_run.sh start RUN_DIR            # render the data, start both trainings detached
#   launch/proof_run.sh watch RUN_DIR SECONDS    # progress until both end or SECONDS pass;
#                                                # exits 1 as soon as a training has failed
#   launch/proof_run.sh finish RUN_DIR [OUT]     # wait for them, export, evaluate, compare
#
# With two or more GPUs the runs train side by side (CUDA_VISIBLE_DEVICES 0 and 1); with one
# they run one after the other. Extra config overrides for both runs: PROOF_OVERRIDES (e.g. a
# tiny CPU rehearsal). Results: RUN_DIR/{wvd,rgb_only}/eval/ (report.md, plots, gallery) and
# RUN_DIR/comparison.md; with OUT, archives of those and of the training logs are copied there.
set -uo pipefail
PHASE=${1:?phase: all, start or finish}; RUN=${2:?run directory}; OUT_DIR=${3:-}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$RUN"
COMMON=(--config=configs/small.py "--config.data.data_dir=$RUN/data" ${PROOF_OVERRIDES:-})
NAMES=(wvd rgb_only)
declare -A EXTRA=([wvd]="" [rgb_only]="--config.diffusion.modalities=rgb")
GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU')

gpu_of() {  # run name -> CUDA_VISIBLE_DEVICES value ('' = all / CPU)
  if [ "$GPUS" -ge 2 ]; then [ "$1" = wvd ] && echo 0 || echo 1; elif [ "$GPUS" = 1 ]; then echo 0; fi
}

render() {  # every split once, before the runs read them (the builder locks, but why wait twice)
  # CPU only: the render pool's workers must not initialize the GPUs.
  JAX_PLATFORMS=cpu "$PY" -m wvd_jax.data.build "${COMMON[@]}" 2>&1 | grep -v 'Generating\|Shuffling'
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "rendering the dataset failed"; return 1; }
}

train() {  # name [wait]
  local name=$1 cmd
  cmd=("$PY" -m wvd_jax.main "${COMMON[@]}" ${EXTRA[$name]} "--workdir=$RUN/$name" --mode=train)
  echo "train $name on GPU '$(gpu_of "$name")': ${cmd[*]}"
  if [ "${2:-}" = wait ]; then
    CUDA_VISIBLE_DEVICES=$(gpu_of "$name") "${cmd[@]}" > "$RUN/$name.train.log" 2>&1
    echo $? > "$RUN/$name.train.rc"
  else  # detached: survives the calling shell
    CUDA_VISIBLE_DEVICES=$(gpu_of "$name") setsid bash -c \
      '"$@" > "$0.train.log" 2>&1; echo $? > "$0.train.rc"' "$RUN/$name" "${cmd[@]}" &
  fi
}

wait_training() {
  for name in "${NAMES[@]}"; do
    while [ ! -f "$RUN/$name.train.rc" ]; do sleep 5; done
    echo "train $name: exit $(cat "$RUN/$name.train.rc"); $(grep -c '"train/loss"' \
      "$RUN/$name/metrics.jsonl" 2>/dev/null) log lines"
    tail -n 3 "$RUN/$name.train.log"
  done
}

watch() {  # seconds: print progress; fail fast when a run has died
  local until=$(( $(date +%s) + ${1:?seconds} )) name done
  while [ "$(date +%s)" -lt "$until" ]; do
    done=0
    for name in "${NAMES[@]}"; do
      if [ -f "$RUN/$name.train.rc" ]; then
        done=$((done + 1))
        if [ "$(cat "$RUN/$name.train.rc")" != 0 ]; then
          echo "train $name FAILED:"; tail -n 30 "$RUN/$name.train.log"; return 1
        fi
      elif [ ! -f "$RUN/$name.train.log" ]; then
        echo "train $name never started"; return 1
      fi
      echo "$name: $(tail -n 1 "$RUN/$name/metrics.jsonl" 2>/dev/null | cut -c1-200)"
    done
    [ "$done" = "${#NAMES[@]}" ] && return 0
    sleep 30
  done
}

evaluate() {  # name
  local name=$1
  CUDA_VISIBLE_DEVICES=$(gpu_of "$name") "$PY" -m wvd_jax.main "${COMMON[@]}" ${EXTRA[$name]} \
    "--workdir=$RUN/$name" --mode=eval > "$RUN/$name.eval.log" 2>&1
  echo "eval $name: exit $?"
  tail -n 2 "$RUN/$name.eval.log"
}

finish() {
  wait_training
  if [ "$GPUS" -ge 2 ]; then
    for name in "${NAMES[@]}"; do evaluate "$name" & done
    wait
  else
    for name in "${NAMES[@]}"; do evaluate "$name"; done
  fi
  "$PY" -m wvd_jax.evaluation.compare "wvd=$RUN/wvd/eval/results.json" \
    "rgb_only=$RUN/rgb_only/eval/results.json" "--output=$RUN/comparison.md"
  cat "$RUN/comparison.md" "$RUN/wvd/eval/report.md"
  if [ -n "$OUT_DIR" ]; then
    mkdir -p "$OUT_DIR"
    for name in "${NAMES[@]}"; do tar czf "$OUT_DIR/eval_$name.tgz" -C "$RUN/$name" eval; done
    tar czf "$OUT_DIR/train_logs.tgz" -C "$RUN" wvd.train.log rgb_only.train.log \
      wvd.eval.log rgb_only.eval.log wvd/metrics.jsonl rgb_only/metrics.jsonl
    cp "$RUN/comparison.md" "$OUT_DIR/"
  fi
}

case "$PHASE" in
  start) render || exit 1; for name in "${NAMES[@]}"; do train "$name"; done ;;
  watch) watch "${3:-60}" ;;
  finish) finish ;;
  all)
    render || exit 1
    if [ "$GPUS" -ge 2 ]; then
      for name in "${NAMES[@]}"; do train "$name"; done
    else
      for name in "${NAMES[@]}"; do train "$name" wait; done
    fi
    finish ;;
  *) echo "unknown phase $PHASE (all, start, finish)"; exit 2 ;;
esac
