#!/usr/bin/env bash
# Runs benchmarks on the lent accelerator and writes one JSON line per run to $OUT/results.jsonl
# (logs beside it). Usage on the device machine, from the repository root, with .whl carried:
#   bash benchmarks/run_gpu.sh train      # train step (1 GPU, parts) + DiT fwd/bwd
#   bash benchmarks/run_gpu.sh infer      # sampler latency, VAE, geometry
#   bash benchmarks/run_gpu.sh multi      # train step on 1 and 2 GPUs (FSDP)
#   bash benchmarks/run_gpu.sh stop_check # multi-host stop check, 2 processes x 1 GPU
#   bash benchmarks/run_gpu.sh latents    # train step from latents vs pixels, encode throughput
#   bash benchmarks/run_gpu.sh learned    # FID / FC / LoFTR networks of the eval
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl >/dev/null 2>&1 || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
run() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" | tee -a "$OUT/log.txt"
  local start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.out" 2>> "$OUT/log.txt"
  local rc=$?
  echo "== $name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$OUT/log.txt"
  grep -h '^{' "$OUT/$name.out" | sed "s/^{/{\"run\": \"$name\", /" >> "$OUT/results.jsonl"
  tail -c 600 "$OUT/$name.out"
}
case "${1:-}" in
  train)
    run train_step 240 python3 benchmarks/train_step.py --batch 4
    run dit_bench 300 python3 benchmarks/dit_bench.py
    ;;
  ablate)  # each change of the wvd_2b step against the plain one, same machine
    B="python3 benchmarks/train_step.py --batch 4 --parts 0"
    run step_plain 150 $B --mu_dtype float32 --ema_every 1
    run step_wvd2b 150 $B
    run step_wvd2b_cublaslt 150 env XLA_FLAGS=--xla_gpu_enable_cublaslt=true $B
    if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then run step_wvd2b_2gpu 200 $B --devices 2; fi
    ;;
  infer)
    run sampler 240 python3 benchmarks/sampler_bench.py
    run vae 120 python3 benchmarks/vae_bench.py --batch 16
    run geometry 120 python3 benchmarks/geometry_bench.py
    ;;
  final)  # the wvd_2b defaults on 1 and 2 GPUs, then inference benchmarks
    B="python3 benchmarks/train_step.py --batch 4 --parts 0"
    run step_wvd2b 100 $B
    if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then run step_wvd2b_2gpu 100 $B --devices 2; fi
    run sampler 180 python3 benchmarks/sampler_bench.py
    run vae 90 python3 benchmarks/vae_bench.py --batch 16
    run geometry 90 python3 benchmarks/geometry_bench.py
    ;;
  data)  # the small model's consumption (its train step) beside the mixed grain pipeline on the
         # host's cores (issue 15's headroom goal: >= 3x)
    run small_step 150 python3 benchmarks/train_step.py --config small --batch 32 --parts 0
    run mixture 300 env JAX_PLATFORMS=cpu python3 benchmarks/data_bench.py \
      --skip=render,build,pipeline --workers="$(nproc)"
    ;;
  learned)  # the learned eval metrics' networks (FID Inception, CLIP B/32 and L/14, LoFTR)
    run learned_metrics 300 python3 benchmarks/learned_metrics_bench.py
    ;;
  geometry)  # post-optimization (16 views at 256 px, centre and shared principal point),
             # the principal-point modes on noisy XYZ, many views at 50/100/200
    run geometry 90 python3 benchmarks/geometry_bench.py
    run geometry_pp_shared 90 python3 benchmarks/geometry_bench.py --principal_point 1
    run principal_point 200 python3 benchmarks/principal_point_bench.py
    run many_views 240 python3 benchmarks/many_views_bench.py
    ;;
  optim)  # the optimizer-traffic options, A/B on one machine
    B="python3 benchmarks/train_step.py --batch 4 --parts 0"
    run step_plain 100 $B --mu_dtype float32 --ema_every 1
    run step_mu_bf16 100 $B --mu_dtype bfloat16 --ema_every 1
    run step_ema4 100 $B --mu_dtype float32 --ema_every 4
    run step_both 100 $B --mu_dtype bfloat16 --ema_every 4
    run step_plain_again 100 $B --mu_dtype float32 --ema_every 1
    ;;
  sampling_multi)  # sampling spread over GPUs by batch (per-GPU batch 2)
    run sampler_1gpu 150 python3 benchmarks/sampler_bench.py --langevin 0 --batch 2
    if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
      run sampler_2gpu 150 python3 benchmarks/sampler_bench.py --langevin 0 --batch 2 --devices 2
    fi
    ;;
  multi)
    run train_step_1gpu 200 python3 benchmarks/train_step.py --batch 4 --parts 0
    run train_step_2gpu 240 python3 benchmarks/train_step.py --batch 4 --parts 0 --devices 2
    ;;
  stop_check)  # the multi-host stop check: 2 processes, one GPU each (needs 2 GPUs)
    run stop_check 200 python3 benchmarks/stop_check.py --processes 2
    ;;
  speed)  # issue 19, training: the PyTorch peer (make peer; carry .peer), our wvd_2b step from
          # latents (with the kernel profile), with FP8 + the fused update, from pixels, the
          # peer again, all on one GPU; then the small config's step (profile; FP8 + fused)
    B="python3 benchmarks/train_step.py --batch 4 --parts 0 --steps 6"
    run peer_1 200 python3 benchmarks/vs_peer.py --peer_only
    run step_latents 200 $B --data latents --profile /tmp/prof_step
    run step_fp8_fused 150 $B --data latents --set model.fp8=True --set optim.fused_update=True
    run step_pixels 150 $B --data pixels
    run peer_2 200 python3 benchmarks/vs_peer.py --peer_only
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    run small_b64 100 $T --profile /tmp/prof_small
    run small_b64_fp8_fused 100 $T --set model.fp8=True --set optim.fused_update=True
    ;;
  speed2)  # issue 19, the items left open: FP8 and the fused update apart (peer before and
           # after), the small config with head dim 128 and at batch 128, sampling with the
           # while loop in a CUDA graph (command buffers), wvd_2b with remat at batch 8
    B="python3 benchmarks/train_step.py --batch 4 --parts 0 --steps 6 --data latents"
    run peer_1 150 python3 benchmarks/vs_peer.py --peer_only
    run step_fp8 90 $B --set model.fp8=True
    run step_fused 90 $B --set optim.fused_update=True
    run peer_2 80 python3 benchmarks/vs_peer.py --peer_only
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20"
    run small_b64_hd128 60 $T --batch 64 --set model.num_heads=3
    run small_b128 60 $T --batch 128
    S="python3 benchmarks/sampler_bench.py --langevin 0 --repeats 2"
    run sampler 90 $S
    run sampler_cmdbuf 90 env XLA_FLAGS=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE $S
    run step_remat_b8 90 python3 benchmarks/train_step.py --batch 8 --parts 0 --steps 6 \
      --data latents --set model.remat=dots_saveable
    ;;
  fused)  # issue 19: the fused RMSNorm + modulation kernel (model.norm_kernel=pallas): its GPU
          # parity and time alone, then the whole wvd_2b step (peer before and after) and the
          # small config's step with and without it
    run norm_kernel 120 python3 benchmarks/norm_kernel_bench.py
    B="python3 benchmarks/train_step.py --batch 4 --parts 0 --steps 6 --data latents"
    run peer_1 150 python3 benchmarks/vs_peer.py --peer_only
    run step_plain 90 $B
    run step_norm_kernel 90 $B --set model.norm_kernel=pallas
    run step_fp8_norm_kernel 90 $B --set model.fp8=True --set model.norm_kernel=pallas
    run peer_2 80 python3 benchmarks/vs_peer.py --peer_only
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    run small_plain 60 $T
    run small_norm_kernel 60 $T --set model.norm_kernel=pallas
    run small_hd128_norm_kernel 60 $T --set model.num_heads=3 --set model.norm_kernel=pallas
    ;;
  attrib)  # issue 19: sampling with the static step count (the loop's trip count known to XLA),
           # plain and FP8; then where the time goes by source line (each profile attributes
           # its kernels to our code through the compiled HLO: benchmarks/profile_attribution.py)
    S="python3 benchmarks/sampler_bench.py --langevin 0 --repeats 2"
    run sampler_static 120 $S
    run sampler_static_fp8 120 $S --fp8
    B="python3 benchmarks/train_step.py --batch 4 --parts 0 --steps 4 --data latents"
    run prof_wvd2b_fp8_norm 150 $B --set model.fp8=True --set model.norm_kernel=pallas \
      --profile /tmp/prof_a
    run prof_wvd2b_plain 120 $B --profile /tmp/prof_b
    run prof_small 90 python3 benchmarks/train_step.py --config small --parts 0 --steps 10 \
      --batch 64 --profile /tmp/prof_c
    run prof_sampler 150 python3 benchmarks/sampler_bench.py --langevin 0 --repeats 1 \
      --profile /tmp/prof_d
    ;;
  split)  # issue 19: the blocks' layers taken apart by one unstack (dit.split_layers: the stack's
          # gradient is one concatenate, no longer depth padded copies added up) and, for
          # sampling, once before the loop (builder.split_for_loop); the wvd_2b step (FP8 + norm
          # kernels, profiled, then plain) with the peer in the same call; sampling FP8 and plain,
          # then FP8 slicing the stack inside the loop (before and after in one call)
    B="python3 benchmarks/train_step.py --batch 4 --parts 0 --steps 6 --data latents"
    run step_fp8_norm 110 $B --set model.fp8=True --set model.norm_kernel=pallas \
      --profile /tmp/prof_a
    run peer 150 python3 benchmarks/vs_peer.py --peer_only
    S="python3 benchmarks/sampler_bench.py --langevin 0 --repeats 2"
    run sampler_fp8 90 $S --fp8
    run sampler 90 $S
    run step_plain 80 $B
    run sampler_fp8_stacked 90 $S --fp8 --stacked_in_loop  # the old way, same call
    ;;
  sampler_norm)  # issue 19 point 3: sampling with FP8 and the fused norm kernels (1.35x the
                 # floor with FP8 alone), then the old in-loop slicing in the same call
    S="python3 benchmarks/sampler_bench.py --langevin 0 --repeats 2 --fp8"
    run sampler_fp8_norm 100 $S --norm_kernel pallas --profile /tmp/prof_s
    run sampler_fp8 90 $S
    run sampler_fp8_stacked 90 $S --stacked_in_loop
    ;;
  rows_ahead)  # issue 19 point 3: sampling with the adaLN modulation rows of all 50 levels
               # computed before the loop (builder.LoopModel), FP8 with and without the norm
               # kernels, then the rows computed in the loop (the old way) in the same call;
               # point 4: cuDNN against Mosaic GPU attention at the DiT's shapes, and the small
               # config's step after the q/k/v and RoPE splits (profiled), with norm kernels
    S="python3 benchmarks/sampler_bench.py --langevin 0 --repeats 2 --fp8"
    run sampler_fp8_norm 100 $S --norm_kernel pallas --profile /tmp/prof_s
    run sampler_fp8 80 $S
    run sampler_fp8_rows_in_loop 80 $S --time_rows_in_loop
    run attention 120 python3 benchmarks/attention_bench.py
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    run small_plain 60 $T --profile /tmp/prof_small
    run small_norm_kernel 50 $T --set model.norm_kernel=pallas
    ;;
  fp8_once)  # issue 19: sampling with the FP8 kernels quantized once before the loop
             # (builder.inference_params; the profile of rows_ahead showed 221 ms of a 0.62 s
             # call quantizing every weight at every evaluation), profiled; quantized in the loop
             # (the old way) and bf16 in the same call; then the wvd_2b step as configured (FP8 +
             # norm kernels) with the peer in the same call, a second reading of point 2
    S="python3 benchmarks/sampler_bench.py --langevin 0 --repeats 2"
    run sampler_fp8 100 $S --fp8 --profile /tmp/prof_s
    run sampler_fp8_quantize_in_loop 80 $S --fp8 --fp8_quantize_in_loop
    run sampler_bf16 80 $S
    run step_fp8_norm 100 python3 benchmarks/train_step.py --batch 4 --parts 0 --steps 6 \
      --data latents --set model.fp8=True --set model.norm_kernel=pallas
    run peer 150 python3 benchmarks/vs_peer.py --peer_only
    ;;
  small_shapes)  # issue 19 point 4: the small config's MFU against its shape (same call):
                 # as configured, 3 heads of 128, that with a bfloat16 residual stream, and wider,
                 # shallower models of about the same FLOPs; then sampling as the tasks run it
                 # with guidance and one Langevin step (FP8)
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    run small_plain 60 $T
    run small_hd128 60 $T --set model.num_heads=3
    run small_hd128_res_bf16 60 $T --set model.num_heads=3 --set model.residual_dtype=bfloat16
    run small_w512_d5_hd128 60 $T --set model.width=512 --set model.depth=5 --set model.num_heads=4
    run small_w640_d4_hd128 60 $T --set model.width=640 --set model.depth=4 --set model.num_heads=5
    run sampler_fp8_guided_langevin1 120 python3 benchmarks/sampler_bench.py --langevin 1 \
      --guidance 2.0 --repeats 2 --fp8
    ;;
  scales_once)  # issue 19: sampling with the FP8 forward scales computed once too
                # (layers.inference_form), before/after in one call; the attention kernels with
                # Mosaic GPU's taking float16 operands (bfloat16 did not build)
    S="python3 benchmarks/sampler_bench.py --langevin 0 --repeats 2 --fp8"
    run sampler_fp8 90 $S --profile /tmp/prof_s
    run sampler_fp8_quantize_in_loop 80 $S --fp8_quantize_in_loop
    run attention 150 python3 benchmarks/attention_bench.py
    ;;
  kmajor)  # issue 19: sampling with the FP8 inference kernels stored (out, in), K-major for the
           # FP8 GEMM (no per-call transposes), profiled; the small config's best shape so far
           # with a bfloat16 residual stream
    run sampler_fp8 100 python3 benchmarks/sampler_bench.py --langevin 0 --repeats 2 --fp8 \
      --profile /tmp/prof_s
    run small_w512_d5_hd128_res_bf16 60 python3 benchmarks/train_step.py --config small \
      --parts 0 --steps 20 --batch 64 --set model.width=512 --set model.depth=5 \
      --set model.num_heads=4 --set model.residual_dtype=bfloat16
    ;;
  small_epilogue)  # issue 19 point 4: the small config's step with cuBLASLt, whose GEMM epilogues
                   # can take the bias and GELU that XLA otherwise runs as separate fusions
                   # (memory bound at 131k tokens a step), against the default in the same call
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    W="--set model.width=512 --set model.depth=5 --set model.num_heads=4"
    run small_plain 50 $T
    run small_cublaslt 50 env XLA_FLAGS=--xla_gpu_enable_cublaslt=true $T
    run small_w512_d5_cublaslt 50 env XLA_FLAGS=--xla_gpu_enable_cublaslt=true $T $W
    ;;
  small_fusion)  # issue 19 point 4: the best small shape so far (width 512, depth 5, 4 heads of
                 # 128, bfloat16 residual stream) with the architecture switches that remove
                 # memory-bound passes (model.mlp_bias, model.qk_norm) and XLA's fusion options
                 # that put elementwise work into GEMM kernels (Triton, cuDNN), same call
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    W="--set model.width=512 --set model.depth=5 --set model.num_heads=4 --set model.residual_dtype=bfloat16"
    run w512 50 $T $W
    run w512_nobias_noqknorm 50 $T $W --set model.mlp_bias=False --set model.qk_norm=False
    run w512_triton_gemm_any 90 env XLA_FLAGS=--xla_gpu_triton_gemm_any=true $T $W
    run w512_cudnn_gemm_fusion2 90 env XLA_FLAGS=--xla_gpu_cudnn_gemm_fusion_level=2 $T $W
    run w512_prof 80 $T $W --steps 10 --profile /tmp/prof_w512
    run w512_nobias 50 $T $W --set model.mlp_bias=False
    run w512_noqknorm 50 $T $W --set model.qk_norm=False
    run w768_d3 50 $T --set model.width=768 --set model.depth=3 --set model.num_heads=6 \
      --set model.residual_dtype=bfloat16
    run w512_fp8 60 $T $W --set model.fp8=True
    run w512_heroless 60 env XLA_FLAGS=--xla_gpu_experimental_enable_triton_heroless_priority_fusion=true $T $W
    run w512_all_triton 90 env XLA_FLAGS=--xla_gpu_experimental_all_fusions_with_triton=true $T $W
    ;;
  small_loop)  # issue 19 point 4, before the proof run in the same call: the small config as
               # configured and the wvd_fast shape (width 512, depth 5, 4 heads of 128, bfloat16
               # residual, no QK norm), each timed synced and pipelined (as the trainer runs)
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    run small_plain 60 $T
    run small_fast 80 $T --set model.width=512 --set model.depth=5 --set model.num_heads=4 \
      --set model.residual_dtype=bfloat16 --set model.qk_norm=False --profile /tmp/prof_fast
    ;;
  small_cmdbuf)  # issue 19 point 4: the wvd_fast step runs 53.2 ms where a cold profile's
                 # kernels take 46.8 (read then as device idle; small_clock found the clock: a
                 # cold burst runs at boost clock): XLA's CUDA graphs (command buffers) off, and
                 # on for every kernel type, same call
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    F="--set model.width=512 --set model.depth=5 --set model.num_heads=4 --set model.residual_dtype=bfloat16 --set model.qk_norm=False"
    run fast 60 $T $F
    run fast_no_cmdbuf 60 env XLA_FLAGS=--xla_gpu_enable_command_buffer= $T $F
    run fast_cmdbuf_all 60 env XLA_FLAGS=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN $T $F
    run fast_cmdbuf_all_min1 60 env "XLA_FLAGS=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN --xla_gpu_graph_min_graph_size=1" $T $F
    ;;
  small_idle)  # issue 19 point 4: where the GPU waits inside the small steps (the profile's
               # idle_ms_per_call, idle_gap_sizes and largest_idle_gaps: common.device_timeline),
               # configured, wvd_fast and 3-heads-of-128 shapes (found: 0.2-0.4 ms a step)
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 10 --batch 64"
    run idle_small 70 $T --profile /tmp/prof_idle_small
    run idle_fast 70 $T --set model.width=512 --set model.depth=5 --set model.num_heads=4 \
      --set model.residual_dtype=bfloat16 --set model.qk_norm=False --profile /tmp/prof_idle_fast
    run idle_hd128 70 $T --set model.num_heads=3 --set model.residual_dtype=bfloat16 \
      --profile /tmp/prof_idle_hd128
    ;;
  small_clock)  # issue 19 point 4: the steps and the matmul rate sustained for 20 s with the GPU's
                # clock and power sampled, then profiled while warm (a 3-step profile at boost
                # clock ran the fast shape's kernels in 46.8 ms where 20 steps took 51.3 each)
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64 --sustain_s 20"
    run clock_small 150 $T --profile /tmp/prof_clock_small
    run clock_fast 150 $T --set model.width=512 --set model.depth=5 --set model.num_heads=4 \
      --set model.residual_dtype=bfloat16 --set model.qk_norm=False --profile /tmp/prof_clock_fast
    ;;
  small_switches)  # issue 19 point 4: the configured shape (6 heads of 64, which the proof runs
                   # keep: 3 or 4 heads of 128 trained worse) with the switches that leave the
                   # heads alone: no QK RMSNorm, a bfloat16 residual stream, both
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    run sw_plain 60 $T
    run sw_no_qk_norm 60 $T --set model.qk_norm=False
    run sw_bf16_residual 60 $T --set model.residual_dtype=bfloat16
    run sw_both 60 $T --set model.qk_norm=False --set model.residual_dtype=bfloat16 \
      --profile /tmp/prof_sw_both
    ;;
  small_qkv)  # issue 19 point 4: q, k and v as three matmuls with slices of the one kernel
              # (model.qkv_matmuls=separate: no split of the qkv activations, no stack of their
              # gradients: 2.7 ms of the configured step's profile), same call as the fused
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    L="--set model.qk_norm=False --set model.residual_dtype=bfloat16"
    run qkv_fused 60 $T
    run qkv_separate 60 $T --set model.qkv_matmuls=separate --profile /tmp/prof_qkv_separate
    run qkv_fused_lean 60 $T $L
    run qkv_separate_lean 60 $T $L --set model.qkv_matmuls=separate
    ;;
  small_flags)  # issue 19 point 4, after wvd_lean (no QK norm) diverged: what is left that keeps
                # the configured model and its function: the Pallas norm kernels now that q and k
                # come from their own matmuls (contiguous), and XLA's fusion options not tried yet
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    run flags_base 75 $T --profile /tmp/prof_flags_base
    run flags_norm_kernel 75 $T --set model.norm_kernel=pallas --profile /tmp/prof_flags_norm_kernel
    for f in xla_gpu_experimental_enable_fusion_block_level_rewriter \
             xla_gpu_unsupported_enable_triton_multi_output_fusion \
             xla_gpu_enable_cudnn_layer_norm xla_gpu_experimental_enable_fusion_autotuner; do
      run "flag_${f#xla_gpu_}" 75 env XLA_FLAGS=--$f=true $T
    done
    run flags_base_again 75 $T
    ;;
  tokamax)  # issue 19 point 4: tokamax's Hopper flash attention (Mosaic GPU, with a Mosaic
            # backward; and its Triton one) against cuDNN at the small config's head dim 64,
            # heuristic and autotuned. Carry a .whl holding the tokamax wheels (tokamax einshape
            # pydantic pydantic-core annotated-types typing-inspection qwix); the device's
            # 64 MiB carry then leaves out tensorflow-datasets and array-record, which only this
            # case may. tokamax imports xprof's kernel-stats tool for its own benchmarking only;
            # xprof (22 MB) does not fit the carry, so an empty stand-in module takes its name.
    mkdir -p /tmp/site/xprof/cli && touch /tmp/site/xprof/__init__.py /tmp/site/xprof/cli/__init__.py
    echo 'get_kernel_stats_tool = None' > /tmp/site/xprof/cli/tools.py
    run tokamax_attention 330 python3 benchmarks/attention_bench.py --shapes small,small_hd128 \
      --impls cudnn,tokamax_mosaic,tokamax_triton --tune
    ;;
  small)  # issue 19 point 4: the small config's step after q/k/v and RoPE's halves became one
          # unstack/split (their gradients one concatenate, no padded copies added up: 4.2 ms of
          # the 73.2 ms step went to assembling the qkv gradient), plain, norm kernels, hd 128
    T="python3 benchmarks/train_step.py --config small --parts 0 --steps 20 --batch 64"
    run small_plain 60 $T --profile /tmp/prof_small
    run small_norm_kernel 60 $T --set model.norm_kernel=pallas
    run small_hd128_norm_kernel 60 $T --set model.num_heads=3 --set model.norm_kernel=pallas
    ;;
  speed_infer)  # issue 19, sampling (profile of the batch-1 forward; FP8), FP8 loss parity
    S="python3 benchmarks/sampler_bench.py --langevin 0 --repeats 2"
    run sampler 150 $S --profile /tmp/prof_sampler
    run sampler_fp8 150 $S --fp8
    run fp8_parity 200 python3 benchmarks/fp8_parity.py --workdir /tmp/fp8 --steps 300 \
      --config.data.num_train_scenes=128
    ;;
  latents)  # the wvd_2b step from cached latents and from pixels (VAE inside), and the encode rate
    B="python3 benchmarks/train_step.py --batch 4"
    run step_latents 200 $B --data latents
    run step_pixels 240 $B --data pixels
    run encode_4 120 python3 benchmarks/encode_bench.py --batch_per_device 4
    run encode_16 150 python3 benchmarks/encode_bench.py --batch_per_device 16
    ;;
  *) echo "usage: $0 train|ablate|infer|final|data|learned|geometry|optim|sampling_multi|multi|stop_check|speed|speed2|fused|attrib|split|sampler_norm|rows_ahead|fp8_once|small_shapes|scales_once|kmajor|small_epilogue|small_fusion|small_loop|small_cmdbuf|small_idle|small_clock|small_switches|small_qkv|small_flags|tokamax|small|speed_infer|latents"; exit 2 ;;
esac
