#!/usr/bin/env node
// Tensor-core GEMM benchmark for a GPU host, in plain Node (no node_modules): our kernels
// (gemmTcBench of the CUDA addon: device-resident random operands, CUDA events per launch) and
// PyTorch's (gemm_tc_torch.py, same shapes, same process run) side by side.
//
//   node bench/gpu/gemm_tc.js --cuda build-cuda/Release/cuda/zotune_cuda.node --out DIR [--python python3] [--iters 50]
//
// Writes DIR/gemm_tc.md (and DIR/gemm_tc.json). Shapes: 4096 x 4096 x 4096 and the LLaMA-7B
// linear layers (N x K = 4096 x 4096, 11008 x 4096, 4096 x 11008) at M = 1, 16, 128, 2048; kinds
// W8A8 int8 (vs torch._int_mm), W4A8 (int4 weights in groups of 128, dequantised in the tile; PyTorch
// has no W4A8 GEMM, so its peer is torch._int_mm on int8 weights of the same shape, which moves
// twice the weight bytes), W4A16 (the same int4 weights, bf16 activations; peer torch.matmul on
// bf16 weights), FP8 e4m3 (vs torch._scaled_mm), bf16 (vs torch.matmul). Ours
// times the GEMM kernel alone with f32 output and scales applied; the activation quantization
// (a separate kernel) is not included, nor is it in torch's rows.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

// H100 SXM dense datasheet peaks (kernels.md §3), in T(FL)OP/s.
const PEAK = { w8a8: 1979, w4a8: 1979, e4m3: 1979, bf16: 989, w4a16: 989 };
const TORCH_OP = { w8a8: 'torch._int_mm', w4a8: 'torch._int_mm (int8 weights)', w4a16: 'torch.matmul (bf16 weights)', e4m3: 'torch._scaled_mm', bf16: 'torch.matmul' };
const TORCH_KIND = { w4a8: 'w8a8', w4a16: 'bf16' };  // the torch row a kind is compared with
const GOAL = 0.9;

function args(argv) {
  const a = { python: 'python3', iters: 50 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--cuda') a.cuda = path.resolve(argv[++i]);
    else if (k === '--out') a.out = path.resolve(argv[++i]);
    else if (k === '--python') a.python = argv[++i];
    else if (k === '--iters') a.iters = Number(argv[++i]);
    else throw new Error(`unknown argument '${k}'`);
  }
  if (!a.cuda || !a.out) throw new Error('usage: gemm_tc.js --cuda addon.node --out DIR [--python python3] [--iters 50]');
  return a;
}

function shapes() {
  const list = [];
  for (const kind of ['w8a8', 'w4a8', 'e4m3', 'bf16', 'w4a16']) {
    list.push([kind, 4096, 4096, 4096]);
    for (const [N, K] of [[4096, 4096], [11008, 4096], [4096, 11008]])
      for (const M of [1, 16, 128, 2048]) list.push([kind, M, N, K]);
  }
  return list;
}

// Compute-bound when the arithmetic intensity exceeds the machine balance (~266 FLOP/B bf16 and
// ~530 OP/B int8 at 3 TB/s): the goal applies there; below it both sides stream the weights.
function computeBound(kind, M, N, K) {
  const bytes = (kind === 'bf16' || kind === 'w4a16' ? 2 : 1) * M * K + (kind === 'bf16' ? 2 : kind.startsWith('w4') ? 0.5 : 1) * N * K + 4 * M * N;
  const balance = (PEAK[kind] * 1e12) / 3.0e12;
  return (2 * M * N * K) / bytes > balance;
}

function main() {
  const a = args(process.argv.slice(2));
  const gpu = require(a.cuda);
  const probe = gpu.probe();
  if (!probe.usable) throw new Error(`no usable GPU: ${probe.error && probe.error.reason}`);
  const dev = probe.devices.find((d) => d.usable);
  const list = shapes();

  const ours = [];
  for (const [kind, M, N, K] of list) {
    let r;
    try {
      r = gpu.gemmTcBench(kind, M, N, K, a.iters);
    } catch (e) {
      r = { error: `${e.code}: ${e.message}` };
    }
    ours.push({ kind, M, N, K, ...r });
    console.error(`ours  ${kind} ${M}x${N}x${K}: ${r.error || r.bestMs.toFixed(4) + ' ms'}`);
  }

  let torch;
  try {
    const out = execFileSync(a.python, [path.join(__dirname, 'gemm_tc_torch.py'), '--shapes', JSON.stringify(list.filter(([kind]) => !TORCH_KIND[kind])), '--iters', String(a.iters)], {
      encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'inherit'],
    });
    torch = JSON.parse(out.trim().split('\n').pop());
  } catch (e) {
    torch = { error: `${a.python} gemm_tc_torch.py failed: ${e.message.split('\n')[0]}` };
  }
  if (torch.error) console.error(`torch: ${torch.error}`);

  const rows = [];
  for (const o of ours) {
    const t = (torch.results || []).find((x) => x.kind === (TORCH_KIND[o.kind] || o.kind) && x.M === o.M && x.N === o.N && x.K === o.K) || {};
    const ops = 2 * o.M * o.N * o.K;
    const rate = o.bestMs ? ops / (o.bestMs * 1e-3) / 1e12 : NaN;
    const ratio = o.bestMs && t.best_ms ? t.best_ms / o.bestMs : NaN;  // > 1: ours faster
    const cb = computeBound(o.kind, o.M, o.N, o.K);
    let verdict;
    if (o.error) verdict = 'ours failed';
    else if (!t.best_ms) verdict = 'no torch number';
    else if (!cb) verdict = `memory-bound (goal n/a), ${ratio >= GOAL ? 'at or above' : 'below'} ${GOAL}x`;
    else verdict = ratio >= GOAL ? `meets ${GOAL}x goal` : `below ${GOAL}x goal`;
    rows.push({ ...o, torchBestMs: t.best_ms, torchMedianMs: t.median_ms, torchNote: t.note || t.error || '', rate, ratio, pctPeak: (100 * rate) / PEAK[o.kind], computeBound: cb, verdict });
  }

  const f = (v, d) => (Number.isFinite(v) ? v.toFixed(d) : '—');
  const lines = [
    '# Tensor-core GEMMs vs PyTorch',
    '',
    `Device: ${dev.name} (cc ${dev.computeCapability}, ${dev.multiprocessors} SMs), CUDA addon built for ${probe.archs}; ` +
      (torch.error ? `PyTorch: **${torch.error}** (only our numbers below).` : `PyTorch ${torch.torch} on ${torch.device}.`),
    `${a.iters} timed launches per case after one warm-up, CUDA events around each launch; best (median) ms. Operands are`,
    'device-resident random data reused by every launch (weights up to 45 MB sit partly in the 50 MB L2 for both sides).',
    `Ours: cuda/kernels/gemm_tc.cu, mma.sync (not Hopper wgmma), f32 output with scales applied, activation quantization`,
    `not timed. Torch: ${Object.entries(TORCH_OP).map(([k, v]) => `${k} ${v}`).join(', ')} (int32 / bf16 / bf16 output).`,
    `% of peak: H100 SXM dense datasheet (int8 / fp8 ${PEAK.w8a8}, bf16 ${PEAK.bf16} T/s). Goal: >= ${GOAL}x PyTorch's speed on`,
    'compute-bound shapes (ratio = torch ms / ours ms).',
    '',
    '| kind | M | N | K | ours ms | ours T(FL)OP/s | % peak | torch ms | ours / torch speed | verdict | torch note |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows)
    lines.push(`| ${r.kind} | ${r.M} | ${r.N} | ${r.K} | ${r.error ? r.error : `${f(r.bestMs, 4)} (${f(r.medianMs, 4)})`} | ${f(r.rate, 1)} | ${f(r.pctPeak, 1)} | ` +
      `${r.torchBestMs ? `${f(r.torchBestMs, 4)} (${f(r.torchMedianMs, 4)})` : '—'} | ${f(r.ratio, 2)} | ${r.verdict} | ${r.torchNote} |`);
  fs.mkdirSync(a.out, { recursive: true });
  fs.writeFileSync(path.join(a.out, 'gemm_tc.md'), lines.join('\n') + '\n');
  fs.writeFileSync(path.join(a.out, 'gemm_tc.json'), JSON.stringify({ device: dev, archs: probe.archs, torch, rows }, null, 2));
  console.log(lines.join('\n'));
}

try {
  main();
} catch (e) {
  console.error(`gemm_tc.js: ${e.message}`);
  process.exitCode = 1;
}
