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
#   launch/proof_run.sh ship RUN_DIR OUT         # copy WVD's packed model to OUT/wvd_small as
#                                                # soon as it exists (before the evaluations end;
#                                                # the first wvd* model of PROOF_MODELS)
#
# One sequence of steps, each over ALL GPUs of the machine (data parallel: config.mesh.data = -1
# spans every visible device): train and export WVD, train and export RGB-only, then evaluate
# WVD and RGB-only (eval samples are spread over the GPUs too). `start` detaches the sequence so that it outlives the
# calling shell (a device call of limited length); `watch` and `finish` can then be called as
# often as needed. Extra config overrides for every step: PROOF_OVERRIDES (e.g. a tiny CPU
# rehearsal, or --config.train.max_minutes=...). Extra evaluations: PROOF_LANGEVIN="0 1 2"
# evaluates each model again with that many Langevin corrector steps per level
# (--config.sample.langevin_steps=K) into RUN_DIR/NAME/eval_langevinK/, next to the default
# evaluation RUN_DIR/NAME/eval/. PROOF_MODELS="wvd" trains and evaluates WVD alone;
# "wvd_hd128" is WVD with 3 heads of 128 instead of 6 of 64 (9% faster a step on an H200; trained
# worse in 12 minutes: benchmarks/proof_run_2026-12-01_12min_hd128/);
# "wvd_xyz_shift2" is WVD with XYZ noised at a shifted level (diffusion.xyz_schedule_shift=2);
# "wvd_w512" is WVD wider and shallower at about the same FLOPs (width 512, depth 5, 4 heads of
# 128: 57.5 ms a step against 72.1 on an H200, 1.25x the steps in the same minutes); "wvd_fast" is
# that shape with a bfloat16 residual stream and no QK RMSNorm (model.qk_norm=False: 3.4 ms of a
# 55.4 ms step), the fastest measured (benchmarks/RESULTS.md); "wvd_lean" is the configured shape
# (its 6 heads of 64 kept) with those two switches: 65.1 ms a step against 71.4; it diverged
# at step 4,400 of its 12 minutes (benchmarks/proof_run_2026-12-01_12min_lean/).
# PROOF_PARALLEL=1 runs each model's whole sequence at the same time on its own GPU
# (CUDA_VISIBLE_DEVICES=i, one GPU per model, refused with fewer GPUs than models): on a 2-GPU
# machine WVD and RGB-only get the same budget each in half the wall time.
# Every evaluation is of the packed model that would ship (RUN_DIR/NAME/shipped, bfloat16, made
# from the export); PROOF_FORMAT_CLIPS=N adds WVD evaluations of the float32 export, the bf16
# and an int8 pack on the first N test clips (eval_fp32, eval_bf16, eval_int8): what the
# shipped format costs. Results: RUN_DIR/{wvd,rgb_only}/eval*/ (report.md, plots,
# gallery) and RUN_DIR/comparison.md (every evaluation side by side, then WVD against RGB-only
# clip by clip: KPM's difference with a paired bootstrap interval); with OUT, archives of those
# and of the logs are written there, also when a run is unfinished or failed (then `finish`
# exits 1), and WVD's packed model as the repository's shipped model, OUT/wvd_small
# (python -m wvd_jax.models.shipped pack: at most 60 MB in parts of <= 16 MiB).
set -uo pipefail
PHASE=${1:?phase: all, start, watch, finish or ship}; RUN=${2:?run directory}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)
COMMON=(--config=configs/small.py "--config.data.data_dir=$RUN/data" ${PROOF_OVERRIDES:-})
NAMES=(${PROOF_MODELS:-wvd rgb_only})
declare -A EXTRA=([wvd]="" [rgb_only]="--config.diffusion.modalities=rgb"
                 [wvd_hd128]="--config.model.num_heads=3"
                 [wvd_xyz_shift2]="--config.diffusion.xyz_schedule_shift=2.0"
                 [wvd_w512]="--config.model.width=512 --config.model.depth=5 --config.model.num_heads=4"
                 [wvd_fast]="--config.model.width=512 --config.model.depth=5 --config.model.num_heads=4 --config.model.residual_dtype=bfloat16 --config.model.qk_norm=False"
                 [wvd_lean]="--config.model.residual_dtype=bfloat16 --config.model.qk_norm=False")
for name in "${NAMES[@]}"; do
  [ -n "${EXTRA[$name]+set}" ] || { echo "unknown model $name in PROOF_MODELS (${!EXTRA[*]})"; exit 2; }
done
# The model whose packed weights `ship` and `finish` copy out: the first WVD variant (not
# rgb_only) of PROOF_MODELS.
SHIP=$(for name in "${NAMES[@]}"; do [[ $name == wvd* ]] && { echo "$name"; break; }; done)
FORMAT_CLIPS=${PROOF_FORMAT_CLIPS:-0}
GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU')

evals() {  # name -> its evaluation steps: the default one, then the variants
  local out=(eval)
  if [ "$1" = wvd ] && [ "$FORMAT_CLIPS" -gt 0 ]; then out+=(eval_fp32 eval_bf16 eval_int8); fi
  for k in ${PROOF_LANGEVIN:-}; do out+=("eval_langevin$k"); done
  echo "${out[@]}"
}

preflight() {  # the packages the sequence imports, checked before minutes of GPU time (an
              # evaluation once ended without its report: trimesh was not on the lent machine)
  "$PY" -c 'import importlib.util, sys
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
if missing:
  sys.exit("missing Python packages: " + " ".join(missing) + " (pip install -r requirements.txt;"
           " on the lent GPU add their wheels to .whl: WORKSPACE.md)")' \
    grain tensorflow_datasets array_record ml_collections tensorboardX einops tqdm trimesh cv2 \
    skimage imageio safetensors
}

render() {  # every split once, before the runs read them
  # CPU only: the render pool's workers must not initialize the GPUs.
  JAX_PLATFORMS=cpu "$PY" -m wvd_jax.data.build "${COMMON[@]}" 2>&1 | grep -v 'Generating\|Shuffling'
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "rendering the dataset failed"; return 1; }
}

step() {  # name mode: one step of a run; its exit status goes to RUN/name.mode.rc
  # mode: train, export, ship (pack the export: bf16, and int8 for the format comparison),
  # eval, eval_langevinK (eval with K corrector steps), eval_fp32 / eval_bf16 / eval_int8 (the
  # export and the packs on the first FORMAT_CLIPS clips); each eval its own output directory.
  local name=$1 mode=$2 rc args=(--mode=train) shipped=$RUN/$1/shipped
  local evaluate=(--mode=eval "--checkpoint=$shipped" "--config.eval.output_dir=$RUN/$name/$mode")
  [ "$mode" = eval ] || evaluate+=(--config.eval.gallery_clips=0)  # One gallery is enough.
  local few=("--config.eval.num_clips=$FORMAT_CLIPS" "--config.eval.output_dir=$RUN/$name/$mode"
             --config.eval.gallery_clips=0)
  case $mode in
    export) args=(--mode=export) ;;
    eval) args=("${evaluate[@]}") ;;
    eval_langevin*) args=("${evaluate[@]}" "--config.sample.langevin_steps=${mode#eval_langevin}") ;;
    eval_fp32) args=(--mode=eval "--checkpoint=$RUN/$name/export" "${few[@]}") ;;
    eval_bf16) args=(--mode=eval "--checkpoint=$shipped" "${few[@]}") ;;
    eval_int8) args=(--mode=eval "--checkpoint=${shipped}_int8" "${few[@]}") ;;
  esac
  if [ "$mode" = ship ]; then
    rm -rf "$shipped" "${shipped}_int8"
    "$PY" -m wvd_jax.models.shipped pack "--export=$RUN/$name/export" "--output=$shipped" \
      --dtype=bfloat16 > "$RUN/$name.$mode.log" 2>&1 && { [ "$FORMAT_CLIPS" = 0 ] || \
      "$PY" -m wvd_jax.models.shipped pack "--export=$RUN/$name/export" \
        "--output=${shipped}_int8" --dtype=int8 >> "$RUN/$name.$mode.log" 2>&1; }
  else
    "$PY" -m wvd_jax.main "${COMMON[@]}" ${EXTRA[$name]} "--workdir=$RUN/$name" "${args[@]}" \
      > "$RUN/$name.$mode.log" 2>&1
  fi
  rc=$?
  echo $rc > "$RUN/$name.$mode.rc"
  return $rc
}

sequence() {  # every model's training, then every model's evaluations; stops at a failure
  local name mode
  for name in "${NAMES[@]}"; do
    step "$name" train && step "$name" export && step "$name" ship || return 1
  done
  for name in "${NAMES[@]}"; do
    for mode in $(evals "$name"); do step "$name" "$mode" || return 1; done
  done
}

detach() {  # log name...: the sequence of the named models, detached (setsid: it survives the
           # calling shell); CUDA_VISIBLE_DEVICES as the caller set it
  local log=$1; shift
  local NAMES=("$@")
  setsid bash -c "$(declare -f evals step sequence); \
    $(declare -p COMMON EXTRA NAMES RUN PY FORMAT_CLIPS); export PROOF_LANGEVIN='${PROOF_LANGEVIN:-}'; \
    sequence" > "$RUN/$log" 2>&1 < /dev/null &
}

steps() {  # [detach]: the sequence on all GPUs, or (PROOF_PARALLEL=1) one sequence per model
  rm -f "$RUN"/*.rc  # An earlier start's exit statuses would read as this one's.
  if [ "${PROOF_PARALLEL:-0}" = 1 ]; then
    if [ "$GPUS" -gt 0 ] && [ "$GPUS" -lt "${#NAMES[@]}" ]; then
      echo "PROOF_PARALLEL=1 needs a GPU per model: ${#NAMES[@]} models, $GPUS GPU(s)"; return 2
    fi
    echo "training and evaluating ${NAMES[*]} at the same time, one GPU each"
    local i=0 name
    for name in "${NAMES[@]}"; do
      # Without GPUs (a CPU rehearsal) the setting is inert and the runs share the cores.
      CUDA_VISIBLE_DEVICES=$i detach "sequence_$name.log" "$name"
      i=$((i + 1))
    done
    [ "${1:-}" = detach ] || watch 1000000
    return
  fi
  echo "training and evaluating ${NAMES[*]} in turn, each on all $GPUS GPU(s) (data parallel)"
  if [ "${1:-}" = detach ]; then
    detach sequence.log "${NAMES[@]}"
  else
    sequence
  fi
}

state() {  # name -> done | failed | running | waiting (rc files of its steps)
  local name=$1 mode
  for mode in train export ship $(evals "$name"); do
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

paired() {  # WVD against RGB-only clip by clip (KPM, paired bootstrap), when both were evaluated
  local mode a b titled=0
  for mode in $(evals rgb_only); do
    a=$RUN/wvd/$mode/per_clip.jsonl; b=$RUN/rgb_only/$mode/per_clip.jsonl
    [ -f "$a" ] && [ -f "$b" ] || continue
    [ $titled = 1 ] || { titled=1; printf '\nWVD - RGB-only, paired by clip (benchmarks/paired_compare.py):\n\n'; }
    printf -- '- %s: ' "$mode"
    "$PY" benchmarks/paired_compare.py "$a" "$b" --metric kpm | tail -n 1 || return 1
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
      for mode in $(evals "$name"); do
        runs+=("$name${mode#eval}=$RUN/$name/$mode/results.json")
      done
    done
    "$PY" -m wvd_jax.evaluation.compare "${runs[@]}" "--output=$RUN/comparison.md" || ok=1
    paired >> "$RUN/comparison.md" || ok=1
    cat "$RUN/comparison.md" "$RUN/${NAMES[0]}/eval/report.md"
  fi
  if [ -n "$out" ]; then
    mkdir -p "$out"
    for name in "${NAMES[@]}"; do
      local done_evals=($(cd "$RUN/$name" 2>/dev/null && ls -d eval eval_* 2>/dev/null))
      [ ${#done_evals[@]} -gt 0 ] && tar czf "$out/eval_$name.tgz" -C "$RUN/$name" "${done_evals[@]}"
      logs+=("$RUN/$name".*.log "$RUN/$name/metrics.jsonl")
    done
    logs=($(ls "${logs[@]}" "$RUN"/sequence*.log 2>/dev/null | sed "s|^$RUN/||"))
    [ ${#logs[@]} -gt 0 ] && tar czf "$out/logs.tgz" -C "$RUN" "${logs[@]}"
    [ -f "$RUN/comparison.md" ] && cp "$RUN/comparison.md" "$out/"
    [ -n "$SHIP" ] && { ship "$out" || ok=1; }
  fi
  return $ok
}

ship() {  # OUT: the WVD model's packed weights ($SHIP's) as OUT/wvd_small (once; fails while
         # they do not exist yet)
  local out=${1:?output directory}
  [ -n "$SHIP" ] || { echo "no WVD model in PROOF_MODELS"; return 1; }
  [ -d "$out/wvd_small" ] && return 0
  [ -f "$RUN/$SHIP/shipped/manifest.json" ] || { echo "no packed WVD model yet ($SHIP)"; return 1; }
  mkdir -p "$out" && cp -r "$RUN/$SHIP/shipped" "$out/wvd_small" &&
    echo "copied $SHIP's to $out/wvd_small"
}

case "$PHASE" in
  start) preflight && render && steps detach ;;
  watch) watch "${3:-60}" ;;
  finish) finish "${3:-}" ;;
  ship) ship "${3:-}" ;;
  all) preflight && render && steps; finish "${3:-}" ;;
  *) echo "unknown phase $PHASE (all, start, watch, finish, ship)"; exit 2 ;;
esac
