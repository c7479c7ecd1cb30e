#!/usr/bin/env bash
# Packs what a GPU host session needs into .gpu/ (git-ignored): an xz-compressed
# node, the CPU addon, the CUDA addon built here for the GPU's architecture, micro- and tiny-llama,
# and the CLI's runtime (dist/, its two dependencies, the sentiment data package) for gpu-run.sh cli.
# The GPU host has nvcc but no Node.js, npm or network, so the addons travel prebuilt.
#
#   ZOTUNE_CUDA_ARCHS=90 bash scripts/gpu-pack.sh      # then: device run, carry [".gpu"],
#                                                      # command: bash scripts/gpu-run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
models="${ZOTUNE_MODELS:-$(cd .. && pwd)/shared/models}"
npm run build >/dev/null
rm -rf build-cuda
PATH="/usr/local/cuda/bin:/usr/local/cuda-13.0/bin:$PATH" ZOTUNE_CUDA_ARCHS="${ZOTUNE_CUDA_ARCHS:-90}" npm run build:cuda >/dev/null
rm -rf .gpu && mkdir -p .gpu/models
# xz, not gzip: node (24 vs 38 MB) and tiny-llama's weights (24 vs 28 MB) then fit the 64 MiB carry
# together; gpu-run.sh unpacks every *.xz with Python's lzma (the host may lack the xz tool).
xz -9 -T2 -c "$(command -v node)" >.gpu/node.xz
cp build/Release/zotune.node .gpu/
xz -9 -c build-cuda/Release/cuda/zotune_cuda.node >.gpu/zotune_cuda.node.xz
npm run build:ts >/dev/null
tar -cJf .gpu/cli.tar.xz package.json dist node_modules/@huggingface/tokenizers node_modules/node-gyp-build node_modules/sentiment
for m in micro-llama tiny-llama; do
  mkdir -p ".gpu/models/$m"
  for f in "$models/$m"/*; do
    case "$f" in *.safetensors) xz -6 -T2 -c "$f" >".gpu/models/$m/$(basename "$f").xz" ;; *) cp "$f" ".gpu/models/$m/" ;; esac
  done
done
du -sh .gpu
