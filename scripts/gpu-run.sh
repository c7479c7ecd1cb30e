#!/usr/bin/env bash
# Runs on the GPU host (after scripts/gpu-pack.sh here, with .gpu/ carried): the GPU conformance
# checks, the same under compute-sanitizer, and every bench/gpu/*.js benchmark (each runs its
# PyTorch peers in the same process tree). Everything lands in $OUT/gpu-results.tgz plus the two
# logs read first (at most 8 files come back from $OUT). One device command may run 10 minutes:
#   bash scripts/gpu-run.sh check   # conformance + compute-sanitizer
#   bash scripts/gpu-run.sh bench   # benchmarks
#   bash scripts/gpu-run.sh zo      # only bench/gpu/zo-step.js (LLaMA-7B-shaped device ZO step vs torch)
#   bash scripts/gpu-run.sh cli     # zotune doctor; finetune --device cuda on tiny-llama, replayed on the CPU
#   bash scripts/gpu-run.sh profile # Nsight Compute: the ZO step's kernels (update, W' rows, bf16 tiles),
#                                   # sections and SASS opcode histograms (scripts/ncu-summary.py)
#   bash scripts/gpu-run.sh         # all of them but profile
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
OUT="${OUT:-/tmp/gpu-out}"
res="$OUT/results"
mkdir -p "$res"
# gpu-pack.sh xz-compressed the large files: unpack a copy of .gpu/ outside the checkout
gpu=/tmp/zotune-gpu
rm -rf "$gpu" && cp -r .gpu "$gpu"
python3 - "$gpu" <<'PY'
import lzma, pathlib, shutil, sys
for f in pathlib.Path(sys.argv[1]).rglob('*.xz'):
    with lzma.open(f) as src, open(f.with_suffix(''), 'wb') as dst:
        shutil.copyfileobj(src, dst)
    f.unlink()
PY
node="$gpu/node"
chmod +x "$node"
cpu="$gpu/zotune.node"
cuda="$gpu/zotune_cuda.node"
export ZOTUNE_CUDA_BINARY="$cuda" ZOTUNE_MODELS="$gpu/models"
{ nvidia-smi; nvcc --version; python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'; } >"$res/env.txt" 2>&1

if [[ "$what" == all || "$what" == check ]]; then
  "$node" scripts/gpu-check.js --cpu "$cpu" --cuda "$cuda" >"$OUT/gpu-check.log" 2>&1
  echo "gpu-check exit $?" >>"$OUT/gpu-check.log"
  if command -v compute-sanitizer >/dev/null; then
    timeout 200 compute-sanitizer --tool memcheck --leak-check full "$node" scripts/gpu-check.js --cpu "$cpu" --cuda "$cuda" --sanitizer \
      >"$res/sanitizer.log" 2>&1
    echo "compute-sanitizer exit $?" >>"$res/sanitizer.log"
    tail -n 5 "$res/sanitizer.log" >>"$OUT/gpu-check.log"
  fi
fi
if [[ "$what" == all || "$what" == cli ]]; then
  # The CLI as a user runs it: the package's dist/ with its runtime dependencies and the CPU addon
  # where the loader looks (build/Release); the run's weights must equal their replay on the CPU.
  cli=/tmp/zotune-cli
  rm -rf "$cli" && mkdir -p "$cli/build/Release" && cp "$cpu" "$cli/build/Release/"
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$gpu/cli.tar" "$cli"  # unpacked from cli.tar.xz above
  (
    cd "$cli"
    z() { "$node" dist/cli/main.js "$@"; }
    z doctor >"$res/doctor.txt" 2>&1
    echo "doctor exit $?" >>"$res/doctor.txt"
    for k in exact fast; do
      z finetune --model "$gpu/models/tiny-llama" --task sentiment --method quzo --weights int4 --trainable model.norm \
        --steps 30 --lr 0.5 --eps 1e-3 --batch 16 --eval-every 15 --seed 0 --device cuda --kernels $k --out runs/$k \
        >"$res/finetune-cuda-$k.txt" 2>&1
      echo "finetune exit $?" >>"$res/finetune-cuda-$k.txt"
      z replay runs/$k --out runs/$k-replay >>"$res/finetune-cuda-$k.txt" 2>&1
      cmp runs/$k/model/model.safetensors runs/$k-replay/model.safetensors >>"$res/finetune-cuda-$k.txt" 2>&1 &&
        echo "replay on the CPU: model.safetensors identical" >>"$res/finetune-cuda-$k.txt"
      cp runs/$k/metrics.jsonl "$res/finetune-cuda-$k.metrics.jsonl" 2>/dev/null
    done
  )
  { tail -n 3 "$res/doctor.txt"; tail -n 4 "$res"/finetune-cuda-*.txt; } >>"$OUT/gpu-check.log"
fi
if [[ "$what" == all || "$what" == bench || "$what" == zo ]]; then
  for b in bench/gpu/*.js; do
    [[ -e "$b" ]] || continue
    [[ "$what" == zo && "$b" != *zo-step.js ]] && continue
    echo "== $b" >>"$OUT/bench.log"
    # zo-step.js generates two 7B-shaped models, uploads each twice (fast and exact kernels) and runs its torch peer: more time
    timeout "$([[ "$b" == *zo-step.js ]] && { [[ "$what" == zo ]] && echo 540 || echo 400; } || echo 150)" "$node" "$b" --cuda "$cuda" --out "$res" >>"$OUT/bench.log" 2>&1
    echo "exit $?" >>"$OUT/bench.log"
  done
fi
if [[ "$what" == profile ]]; then
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  sections="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section InstructionStats --section SourceCounters --import-source no"
  # The quantized update of 2e8 int8 weights, and one layer's W' rows and bf16 tiles inside a 1-layer ZO step.
  "$ncu" $sections -k regex:update_kernel --launch-count 1 -o "$res/update" \
    "$node" -e 'require(process.argv[1]).perturbDeviceBench(2e8, 2, 0, 0, 1)' "$cuda" >"$res/profile.log" 2>&1
  "$ncu" $sections -k regex:"weight_rows_tile|tc_gemm" --launch-skip 2 --launch-count 4 -o "$res/probe" \
    "$node" bench/gpu/zo-step.js --cuda "$cuda" --out /tmp/zo-profile --layers 1 --schemes int8 --kernels fast --iters 1 --python /bin/false \
    >>"$res/profile.log" 2>&1
  for r in update probe; do
    "$ncu" --import "$res/$r.ncu-rep" --page details >"$res/$r-details.txt" 2>&1
    python3 scripts/ncu-summary.py "$res/$r.ncu-rep" >"$res/$r-opcodes.txt" 2>&1
  done
  cat "$res"/*-opcodes.txt >>"$OUT/gpu-check.log"
fi
tar -czf "$OUT/gpu-results.tgz" -C "$OUT" results
