#!/usr/bin/env bash
# Packs what a GPU host session needs into .gpu/ (git-ignored through .git/info/exclude): a gzipped
# node, the CPU addon, the CUDA addon built here for the GPU's architecture, and the micro model.
# The GPU host has nvcc but no Node.js, npm or network, so the addons travel prebuilt.
#
#   ZOTUNE_CUDA_ARCHS=90 bash scripts/gpu-pack.sh      # then: device run, carry [".gpu"],
#                                                      # command: bash scripts/gpu-run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
models="${ZOTUNE_MODELS:-$(cd .. && pwd)/shared/models}"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
npm run build >/dev/null
rm -rf build-cuda
PATH="/usr/local/cuda/bin:/usr/local/cuda-13.0/bin:$PATH" ZOTUNE_CUDA_ARCHS="${ZOTUNE_CUDA_ARCHS:-90}" npm run build:cuda >/dev/null
rm -rf .gpu && mkdir -p .gpu/models
gzip -1 -c "$(command -v node)" >.gpu/node.gz
cp build/Release/zotune.node .gpu/
cp build-cuda/Release/cuda/zotune_cuda.node .gpu/
cp -r "$models/micro-llama" .gpu/models/  # tiny-llama (28 MiB) does not fit the 64 MiB carry beside node
du -sh .gpu
