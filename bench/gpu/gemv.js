#!/usr/bin/env node
// GPU weight-streaming GEMV benchmark (cuda/kernels/gemv.h), plain Node for a GPU host:
//
//   node bench/gpu/gemv.js --cuda path/to/zotune_cuda.node --out DIR [--python python3] [--iters 50]
//
// LLaMA-7B linear shapes (N x K = 4096x4096 q/k/v/o, 11008x4096 gate/up, 4096x11008 down) at M = 1,
// 4 and 16 for int4-g128, int8 (per row), bf16 and fp32 weights, plain and perturb-on-load (Gaussian
// z regenerated per weight); plain rows at M <= 4 also through the staged kernel (activations in
// shared memory, the same bits), timed beside the fast one. In the same run: the device read ceiling (a read kernel with the
// GEMV's 16-byte loads over 2 GiB, and cudaMemcpy device to device) and the PyTorch peer
// (gemv_torch.py: torch.matmul bf16 at the same shapes). Writes DIR/gemv.md and DIR/gemv.json.
// Each time is per launch inside a CUDA graph rotating over enough weight copies to exceed L2.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

function parseArgs(argv) {
  const o = { python: 'python3', iters: 50 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--cuda') o.cuda = path.resolve(argv[++i]);
    else if (a === '--out') o.out = path.resolve(argv[++i]);
    else if (a === '--python') o.python = argv[++i];
    else if (a === '--iters') o.iters = Number(argv[++i]);
    else throw new Error(`unknown argument '${a}'`);
  }
  if (!o.cuda || !o.out) throw new Error('usage: gemv.js --cuda zotune_cuda.node --out DIR [--python python3] [--iters 50]');
  return o;
}

const SHAPES = [[4096, 4096, 'q/k/v/o'], [11008, 4096, 'gate/up'], [4096, 11008, 'down']];
const FORMATS = [
  { name: 'int4-g128', format: 'int4', group: () => 128, goal: true },
  { name: 'int8', format: 'int8', group: (k) => k, goal: true },
  { name: 'bf16', format: 'bf16', group: () => 0, goal: false },
  { name: 'fp32', format: 'f32', group: () => 0, goal: false },
];
const MS = [1, 4, 16];
const GOAL = 0.75; // of the measured read ceiling, W4A16 / W8A16 at M <= 16 (issue 7)

function torchPeer(python, iters) {
  const script = path.join(__dirname, 'gemv_torch.py');
  const shapes = SHAPES.flatMap(([n, k]) => MS.map((m) => `${m},${n},${k}`));
  const r = spawnSync(python, [script, '--iters', String(iters), '--shapes', ...shapes], { encoding: 'utf8', timeout: 600_000 });
  if (r.error) return { error: `${python}: ${r.error.message}` };
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop());
  } catch {
    return { error: `gemv_torch.py exited ${r.status}: ${(r.stderr || r.stdout).trim().slice(-300)}` };
  }
}

function main() {
  const o = parseArgs(process.argv.slice(2));
  const gpu = require(o.cuda);
  const probe = gpu.probe();
  if (!probe.usable) {
    console.error(`gemv.js: no usable GPU: ${probe.error.name}: ${probe.error.reason}`);
    return 3;
  }
  const dev = probe.devices.find((d) => d.usable);
  console.log(`${dev.name}, cc ${dev.computeCapability}, ${dev.multiprocessors} SMs`);

  const ceil = gpu.hbmReadBench(2 ** 31, 20);
  const readGBs = ceil.bytes / ceil.readBestMs / 1e6, copyGBs = ceil.bytes / ceil.copyBestMs / 1e6; // copy: bytes/2 read + bytes/2 written
  console.log(`read ceiling ${readGBs.toFixed(0)} GB/s (read kernel, 2 GiB), copy ${copyGBs.toFixed(0)} GB/s (read + write, cudaMemcpy D2D)`);

  const torch = torchPeer(o.python, o.iters);
  console.log(torch.error ? `torch peer: ${torch.error}` : `torch ${torch.torch} on ${torch.device}`);
  const torchMs = (m, n, k) => (torch.cases || []).find((c) => c.m === m && c.n === n && c.k === k);

  const rows = [];
  for (const [n, k, layer] of SHAPES)
    for (const m of MS)
      for (const f of FORMATS)
        for (const perturbed of [false, true]) {
          const r = gpu.gemvBench(f.format, m, n, k, f.group(k), perturbed, o.iters);
          const gbs = r.weightBytes / r.bestMs / 1e6, pct = gbs / readGBs;
          const t = torchMs(m, n, k);
          const row = { layer, n, k, m, format: f.name, perturbed, ...r, gbPerS: gbs, ofRead: pct, torchBf16Ms: t ? t.bestMs : null };
          if (m <= 4 && !perturbed) {
            const st = gpu.gemvBench(f.format, m, n, k, f.group(k), perturbed, o.iters, 'staged');
            row.staged = { bestMs: st.bestMs, medianMs: st.medianMs, ofRead: r.weightBytes / st.bestMs / 1e6 / readGBs };
          }
          const best = Math.max(pct, row.staged ? row.staged.ofRead : 0);
          row.verdict = f.goal && !perturbed ? (best >= GOAL ? 'meets 75 %' : 'below 75 %') : '—';
          rows.push(row);
          console.log(`${layer.padEnd(8)} M=${String(m).padEnd(2)} ${f.name.padEnd(9)} ${perturbed ? 'perturbed' : 'plain    '} ${r.bestMs.toFixed(4)} ms (median ${r.medianMs.toFixed(4)}), ${gbs.toFixed(0)} GB/s, ${(100 * pct).toFixed(0)} % of read, splits ${r.splits}${row.staged ? `; staged ${row.staged.bestMs.toFixed(4)} ms, ${(100 * row.staged.ofRead).toFixed(0)} % of read` : ''}`);
        }

  fs.mkdirSync(o.out, { recursive: true });
  const out = { device: dev, archs: probe.archs, iters: o.iters, ceiling: { ...ceil, readGBs, copyGBs }, torch, rows };
  fs.writeFileSync(path.join(o.out, 'gemv.json'), JSON.stringify(out, null, 2) + '\n');
  const md = [
    '# GPU weight-streaming GEMV (cuda/kernels/gemv.h)',
    '',
    `Device: ${dev.name} (cc ${dev.computeCapability}, ${dev.multiprocessors} SMs), addon built for ${probe.archs}. ` +
      `Written by \`node bench/gpu/gemv.js\` (${new Date().toISOString()}).`,
    '',
    `Read ceiling measured in this run: **${readGBs.toFixed(0)} GB/s** (read kernel with the GEMV's 16-byte loads over 2 GiB, best of 20); ` +
      `cudaMemcpy device to device ${copyGBs.toFixed(0)} GB/s (read + write counted).`,
    `PyTorch peer: ${torch.error ? `not run (${torch.error})` : `torch ${torch.torch}, torch.matmul bf16 (M x K activations, N x K weights), same timing method`}.`,
    '',
    'Times are per launch, best of the graph replays (median in brackets), activations fp32 [M, K], weights in',
    'enough copies to exceed L2. GB/s counts weight bytes (codes + scales) only. "vs torch" = torch bf16 time /',
    'this time (> 1: faster than torch at the same shape, which reads 2 bytes per weight). Goal (issue 7): int4 and',
    `int8 weight streaming at M <= 16 at >= ${100 * GOAL} % of the measured read ceiling. Perturbed rows regenerate a`,
    'Gaussian z per weight (Philox + Box-Muller): compute-bound by design, no bandwidth goal. "staged": the same',
    'call through the staged kernel (M <= 4; activations copied to shared memory per group of chunks, same bits);',
    '"staged ÷ fast" = fast time / staged time. The verdict takes the faster of the two.',
    '',
    '| layer | N x K | M | weights | perturbed | ms | GB/s | % of read | staged ms | staged % of read | staged ÷ fast | vs torch bf16 | K splits | verdict |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) =>
      `| ${r.layer} | ${r.n}x${r.k} | ${r.m} | ${r.format} | ${r.perturbed ? 'yes' : 'no'} | ${r.bestMs.toFixed(4)} (${r.medianMs.toFixed(4)}) | ` +
        `${r.gbPerS.toFixed(0)} | ${(100 * r.ofRead).toFixed(0)} | ` +
        (r.staged ? `${r.staged.bestMs.toFixed(4)} (${r.staged.medianMs.toFixed(4)}) | ${(100 * r.staged.ofRead).toFixed(0)} | ${(r.bestMs / r.staged.bestMs).toFixed(2)} | ` : '— | — | — | ') +
        `${r.torchBf16Ms ? (r.torchBf16Ms / r.bestMs).toFixed(2) : '—'} | ${r.splits} | ${r.verdict} |`),
    '',
  ];
  if (!torch.error) {
    md.push('| torch bf16 | M | ms | GB/s of weights |', '|---|---|---|---|');
    for (const c of torch.cases) md.push(`| ${c.n}x${c.k} | ${c.m} | ${c.bestMs.toFixed(4)} (${c.medianMs.toFixed(4)}) | ${((c.n * c.k * 2) / c.bestMs / 1e6).toFixed(0)} |`);
    md.push('');
  }
  fs.writeFileSync(path.join(o.out, 'gemv.md'), md.join('\n'));
  console.log(`wrote ${path.join(o.out, 'gemv.md')}`);
  return 0;
}

try {
  process.exitCode = main();
} catch (err) {
  console.error(`gemv.js: ${err.code ? err.code + ': ' : ''}${err.message}`);
  process.exitCode = 1;
}
