#!/usr/bin/env node
// GPU benchmark of the seeded in-place perturbation (issue 7: "7B parameters in place <= 20 ms"),
// dependency-free Node for a GPU host: weights live in device memory (allocated through the pool,
// never copied), times are CUDA events (best and mean of --iters launches after a warm-up), and each
// case's bandwidth (weights read + written once, scales read) is set against a device-to-device
// cudaMemcpy of the same weight bytes in the same run.
//
//   node bench/gpu/perturb.js --cuda build-cuda/Release/cuda/zotune_cuda.node --out DIR [--n 7e9] [--iters 5]
//
// Writes DIR/perturb.md (case, ms, GB/s, % of the copy ceiling, target) and DIR/perturb.json.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const args = { cuda: null, out: null, n: 7e9, iters: 5 };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === '--cuda') args.cuda = path.resolve(process.argv[++i]);
  else if (a === '--out') args.out = path.resolve(process.argv[++i]);
  else if (a === '--n') args.n = Number(process.argv[++i]);
  else if (a === '--iters') args.iters = Number(process.argv[++i]);
  else {
    console.error(`perturb.js: unknown argument '${a}'`);
    process.exit(2);
  }
}
if (!args.cuda || !args.out) {
  console.error('usage: node bench/gpu/perturb.js --cuda zotune_cuda.node --out DIR [--n 7e9] [--iters 5]');
  process.exit(2);
}
const gpu = require(args.cuda);
const probe = gpu.probe();
if (!probe.usable) {
  console.error(`perturb.js: no usable GPU: ${probe.error.name}: ${probe.error.reason}`);
  process.exit(3);
}
const dev = probe.devices.find((d) => d.usable);
const n = Math.round(args.n);

// [name, kind (0 f32, 1 bf16, 2 int8 g128, 3 int4 g128), dist (0 Gaussian, 1 Rademacher), QuZO bits, target]
const CASES = [
  ['fp32 Gaussian', 0, 0, 0, '<= 20 ms (issue 7)'],
  ['fp32 Rademacher', 0, 1, 0, 'copy ceiling'],
  ['fp32 Gaussian QuZO 4-bit direction', 0, 0, 4, 'copy ceiling'],
  ['bf16 Gaussian, SR onto bf16', 1, 0, 0, '<= 20 ms; floor ~9 ms'],
  ['int8 g128 Gaussian, SR update', 2, 0, 0, 'copy ceiling'],
  ['int4 g128 Gaussian, SR update', 3, 0, 0, 'copy ceiling'],
];

const rows = [];
for (const [name, kind, dist, bits, target] of CASES) {
  let r;
  try {
    r = gpu.perturbDeviceBench(n, kind, dist, bits, args.iters);
  } catch (e) {
    console.log(`${name}: skipped (${e.code}: ${e.message})`);
    rows.push({ name, target, skipped: `${e.code}: ${e.message}` });
    continue;
  }
  const gbs = r.bytes / r.bestMs / 1e6;
  const copyGbs = (2 * r.copyBytes) / r.copyMs / 1e6;  // a copy reads and writes its bytes
  const row = { name, target, ...r, gbPerS: gbs, copyGbPerS: copyGbs, pctOfCopy: (100 * gbs) / copyGbs };
  rows.push(row);
  console.log(`${name.padEnd(36)} n ${r.n}: ${r.bestMs.toFixed(2)} ms best (${r.meanMs.toFixed(2)} mean), ${gbs.toFixed(0)} GB/s, copy ${copyGbs.toFixed(0)} GB/s -> ${row.pctOfCopy.toFixed(0)} % (target ${target})`);
}

fs.mkdirSync(args.out, { recursive: true });
const md = [
  `# Seeded in-place perturbation on the GPU`,
  ``,
  `${dev.name} (cc ${dev.computeCapability}, ${dev.multiprocessors} SMs), CUDA runtime ${probe.runtimeVersion}, driver ${probe.driverVersion}, built for ${probe.archs}.`,
  `${n} parameters in device memory; best of ${args.iters} launches (CUDA events) after one warm-up. GB/s counts the weights read and written once (plus scales read);`,
  `the copy ceiling is a device-to-device cudaMemcpy of the same weight bytes in the same run (read + write counted).`,
  ``,
  `| case | ms (best / mean) | GB/s | copy GB/s | % of copy ceiling | target |`,
  `|---|---|---|---|---|---|`,
  ...rows.map((r) => (r.skipped ? `| ${r.name} | skipped: ${r.skipped} | | | | ${r.target} |` :
    `| ${r.name} | ${r.bestMs.toFixed(2)} / ${r.meanMs.toFixed(2)} | ${r.gbPerS.toFixed(0)} | ${r.copyGbPerS.toFixed(0)} | ${r.pctOfCopy.toFixed(0)} % | ${r.target} |`)),
  ``,
].join('\n');
fs.writeFileSync(path.join(args.out, 'perturb.md'), md);
fs.writeFileSync(path.join(args.out, 'perturb.json'), JSON.stringify({ device: dev, n, iters: args.iters, rows }, null, 2));
console.log(`wrote ${path.join(args.out, 'perturb.md')}`);
