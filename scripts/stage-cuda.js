#!/usr/bin/env node
// Stages the CUDA addon for publishing: copies a cmake-js build (default
// build-cuda/Release/cuda/zotune_cuda.node) to prebuilds/<platform>-<arch>/cuda/ and strips it.
// The cuda/ subfolder keeps node-gyp-build from ever picking it as the CPU addon.
//
//   node scripts/stage-cuda.js [path/to/zotune_cuda.node]
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const from = path.resolve(process.argv[2] || path.join(root, 'build-cuda', 'Release', 'cuda', 'zotune_cuda.node'));
if (!fs.existsSync(from)) {
  console.error(`stage-cuda: ${from} does not exist: build it with npm run build:cuda`);
  process.exit(2);
}
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'cuda');
const to = path.join(dir, 'zotune_cuda.node');
fs.mkdirSync(dir, { recursive: true });
fs.copyFileSync(from, to);
execFileSync('strip', ['--strip-unneeded', to]);
console.log(`staged ${path.relative(root, to)} (${(fs.statSync(to).size / 2 ** 20).toFixed(2)} MiB)`);
