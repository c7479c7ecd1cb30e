#!/usr/bin/env node
// Device ZO step benchmark (cuda/kernels/llama.h), plain Node for a GPU host:
//
//   node bench/gpu/zo-step.js --cuda zotune_cuda.node --out DIR [--python python3] [--layers 32]
//        [--batch 1] [--seq 256] [--iters 3] [--schemes int8,int4-g128[,w8a8,w4a8]] [--kernels fast,exact]
//        [--queries 8] [--emulate]
//
// A LLaMA-7B-shaped model (hidden 4096, intermediate 11008, 32 heads, vocab 32000, --layers
// layers) with random weights generated here (int8 per-row or int4 group-128 codes, fp32
// embedding and norms; w8a8 / w4a8: the same codes with int8 activations), uploaded once; then per iteration one ZO probe (two forwards, +eps and
// -eps, perturb-on-load, every tensor trainable) and one ZO update, each one native call timed by
// CUDA events (kernelMs) and by the wall clock; the device pool's peak memory. In the same run the
// PyTorch peer (zo_step_torch.py: bf16 MeZO step with in-place perturbation, and a first-order
// AdamW bf16 step's peak memory) at the same shapes. Writes DIR/zo-step.md and DIR/zo-step.json.
//
// Multi-query probes (fast kernels; --queries 0 skips them): with the upper half of the layers, the
// final norm and the LM head trainable, one call of Q seeds (the lower half runs once for every
// query and sign, llama.h llama_device_probe) against Q calls of one seed, CUDA event times.
//
// Each scheme runs with both kernel sets of the device model (llama.h LlamaKernels): 'fast' (fast
// gemv for <= 16 rows, bf16 tensor-core tiles on W' = decode(W) + eps z rounded to bf16 once per
// call: the path to compare with torch's bf16 step) and 'exact' (the CPU's order: fp32 SIMT tiles
// on W' in fp32; correct, not fast). The default batch (1 x 256 tokens) keeps a probe within the
// session's time limits; torch runs the same shapes.
//
// --emulate: a tiny shape (hidden 128, 2 layers, vocab 256, 2 x 8 tokens) on the host through the
// kernels' per-thread code, no GPU and no torch: checks this script's plumbing.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

function parseArgs(argv) {
  const o = { python: 'python3', layers: 32, batch: 1, seq: 256, iters: 3, schemes: ['int8', 'int4-g128'], kernels: ['fast', 'exact'], queries: 8, emulate: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--cuda') o.cuda = path.resolve(argv[++i]);
    else if (a === '--out') o.out = path.resolve(argv[++i]);
    else if (a === '--python') o.python = argv[++i];
    else if (a === '--layers') o.layers = Number(argv[++i]);
    else if (a === '--batch') o.batch = Number(argv[++i]);
    else if (a === '--seq') o.seq = Number(argv[++i]);
    else if (a === '--iters') o.iters = Number(argv[++i]);
    else if (a === '--schemes') o.schemes = argv[++i].split(',');
    else if (a === '--kernels') o.kernels = argv[++i].split(',');
    else if (a === '--queries') o.queries = Number(argv[++i]);
    else if (a === '--emulate') o.emulate = true;
    else throw new Error(`unknown argument '${a}'`);
  }
  if (!o.cuda || !o.out) throw new Error('usage: zo-step.js --cuda zotune_cuda.node --out DIR [--layers 32] [--batch 1] [--seq 256] [--iters 3] [--emulate]');
  for (const s of o.schemes) if (!['int8', 'int4-g128', 'w8a8', 'w4a8'].includes(s)) throw new Error(`scheme '${s}': int8, int4-g128, w8a8 or w4a8`);
  for (const k of o.kernels) if (k !== 'fast' && k !== 'exact') throw new Error(`kernels '${k}': fast or exact`);
  if (!Number.isInteger(o.queries) || o.queries < 0) throw new Error(`--queries ${o.queries}: a count >= 0`);
  if (o.emulate) Object.assign(o, { layers: 2, batch: 2, seq: 12, iters: 1 }); // 24 tokens: the fast set's bf16 tiles too
  return o;
}

function shape(o) {
  return o.emulate
    ? { hidden: 128, inter: 256, heads: 4, kvHeads: 4, vocab: 256, layers: o.layers }
    : { hidden: 4096, inter: 11008, heads: 32, kvHeads: 32, vocab: 32000, layers: o.layers };
}

// Seeded xorshift filling bytes (codes) and small uniform floats (embedding).
function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), x >>> 0);
}
function randomBytes(n, next) {
  const b = new Uint8Array(n), w = new Uint32Array(b.buffer, 0, n >>> 2);
  for (let i = 0; i < w.length; i++) w[i] = next();
  for (let i = w.length * 4; i < n; i++) b[i] = next() & 255;
  return b;
}

// Weight arguments in the native order: embed, 9 per layer, norm, lmHead (ids = argument index).
// Codes uniform, scales chosen for a weight std of about 0.02 (int8 codes: std 74; int4: 4.6).
function buildModel(s, scheme, next) {
  const D = s.hidden, hd = D / s.heads;
  const intAct = scheme === 'w8a8' || scheme === 'w4a8';
  const linear = (rows, cols) => {
    if (scheme === 'int8' || scheme === 'w8a8') return { format: 0, rows, cols, group: cols, data: randomBytes(rows * cols, next), scales: new Float32Array(rows).fill(0.02 / 74), intAct };
    return { format: 1, rows, cols, group: 128, data: randomBytes((rows * cols) / 2, next), scales: new Float32Array((rows * cols) / 128).fill(0.02 / 4.6), intAct };
  };
  const embed = new Float32Array(s.vocab * D);
  for (let i = 0; i < embed.length; i++) embed[i] = (next() / 4294967296 - 0.5) * 0.07;
  const ones = () => new Float32Array(D).fill(1);
  const weights = [embed];
  for (let l = 0; l < s.layers; l++)
    weights.push(ones(), linear(D, D), linear(s.kvHeads * hd, D), linear(s.kvHeads * hd, D), linear(D, D), ones(), linear(s.inter, D), linear(s.inter, D), linear(D, s.inter));
  weights.push(ones(), linear(s.vocab, D));
  const cfg = Float64Array.from([D, s.layers, s.heads, s.kvHeads, hd, s.inter, s.vocab, 4096, 1e-5, 10000, 0, 1, 1, 4, 8192]);
  const ids = Uint32Array.from(weights, (_, i) => i);
  const bytes = weights.reduce((a, w) => a + (w.format === undefined ? w.byteLength : w.data.byteLength + w.scales.byteLength), 0);
  return { cfg, ids, weights, bytes };
}

function batchOf(s, o, next) {
  const N = o.batch * o.seq;
  const tokens = Int32Array.from({ length: N }, () => next() % s.vocab);
  const offsets = Int32Array.from({ length: o.batch + 1 }, (_, b) => b * o.seq);
  const positions = Int32Array.from({ length: N }, (_, i) => i % o.seq);
  const targets = Int32Array.from({ length: N }, (_, i) => ((i + 1) % o.seq ? tokens[i + 1] : -1));
  return { N, tokens, offsets, positions, targets };
}

function torchPeer(o, s) {
  const script = path.join(__dirname, 'zo_step_torch.py');
  const args = [script, '--layers', String(s.layers), '--batch', String(o.batch), '--seq', String(o.seq), '--iters', String(o.iters)];
  const r = spawnSync(o.python, args, { encoding: 'utf8', timeout: 900_000 });
  if (r.error) return { error: `${o.python}: ${r.error.message}` };
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop());
  } catch {
    return { error: `zo_step_torch.py exited ${r.status}: ${(r.stderr || r.stdout).trim().slice(-300)}` };
  }
}

// One probe call of o.queries seeds vs that many calls of one seed, the upper half trainable.
function manyQueries(gpu, h, m, s, b, o) {
  const Q = o.queries, upper = new Uint8Array(m.ids.length);
  for (let i = 1 + 9 * Math.floor(s.layers / 2); i < m.ids.length; i++) upper[i] = 1;
  const seeds = BigUint64Array.from({ length: Q }, (_, q) => BigInt(200 + q));
  const lpP = new Float64Array(Q * b.N), lpM = new Float64Array(Q * b.N);
  const call = (seed, n) => gpu.llamaDeviceZoProbe(h, b.tokens, b.offsets, b.positions, null, b.targets, lpP.subarray(0, n * b.N), lpM.subarray(0, n * b.N),
    null, null, null, null, seed, 0, 0, 1e-3, upper).kernelMs;
  const one = () => call(seeds, Q), each = () => Array.from(seeds).reduce((t, seed) => t + call(seed, 1), 0);
  one();
  const oneMs = [], eachMs = [];
  for (let i = 0; i < o.iters; i++) oneMs.push(one()), eachMs.push(each());
  return { queries: Q, manyMs: best(oneMs), singlesMs: best(eachMs) };
}

const mib = (b) => (b / 2 ** 20).toFixed(0);
const best = (a) => Math.min(...a);

function main() {
  const o = parseArgs(process.argv.slice(2));
  const gpu = require(o.cuda);
  const probe = gpu.probe();
  if (!probe.usable && !o.emulate) {
    console.error(`zo-step.js: no usable GPU: ${probe.error.name}: ${probe.error.reason}`);
    return 3;
  }
  const dev = o.emulate ? { name: 'host emulation', computeCapability: '-', multiprocessors: 0 } : probe.devices.find((d) => d.usable);
  const s = shape(o);
  console.log(`${dev.name}: ${s.layers} layers, hidden ${s.hidden}, batch ${o.batch} x ${o.seq} tokens`);
  const rows = [];
  for (const scheme of o.schemes) {
    const next = rng(7);
    const m = buildModel(s, scheme, next), b = batchOf(s, o, next);
    for (const kernels of o.kernels) {
      gpu.deviceResetPeaks();
      let h;
      try {
        h = gpu.llamaDeviceCreate(m.cfg, m.ids, o.emulate, kernels, ...m.weights);
      } catch (err) {
        rows.push({ scheme, kernels, error: `${err.code}: ${err.message}` });
        console.log(`${scheme} ${kernels}: upload failed: ${err.code}: ${err.message}`);
        continue;
      }
      try {
        const weightsLive = gpu.deviceMemory().live.weights;
        const flags = new Uint8Array(m.ids.length).fill(1), upd = m.ids;
        const lpP = new Float64Array(b.N), lpM = new Float64Array(b.N);
        const probeOnce = (seed) => {
          const t0 = process.hrtime.bigint();
          const r = gpu.llamaDeviceZoProbe(h, b.tokens, b.offsets, b.positions, null, b.targets, lpP, lpM, null, null, null, null, seed, 0, 0, 1e-3, flags);
          return { ms: r.kernelMs, wall: Number(process.hrtime.bigint() - t0) / 1e6, g: (r.minus.logprobSum / r.minus.count - r.plus.logprobSum / r.plus.count) / 2e-3 };
        };
        const updateOnce = (seed) => {
          const t0 = process.hrtime.bigint();
          const r = gpu.llamaDeviceZoUpdate(h, seed, 0, 0, 1e-6, 0, upd);
          return { ms: r.kernelMs, wall: Number(process.hrtime.bigint() - t0) / 1e6 };
        };
        probeOnce(1); // warm-up (module load, pool)
        const probes = [], updates = [];
        let g = NaN;
        for (let i = 0; i < o.iters; i++) {
          const p = probeOnce(100 + i);
          probes.push(p);
          g = p.g;
          updates.push(updateOnce(100 + i));
        }
        const mem = gpu.deviceMemory();
        const row = {
          scheme, kernels, weightBytes: m.bytes, weightsLive, peak: mem.totalPeak, activationsPeak: mem.peak.activations,
          probeMs: best(probes.map((p) => p.ms)), probeWallMs: best(probes.map((p) => p.wall)),
          updateMs: best(updates.map((u) => u.ms)), updateWallMs: best(updates.map((u) => u.wall)), lastG: g,
        };
        row.stepMs = row.probeMs + row.updateMs;
        if (o.queries > 0 && kernels === 'fast') Object.assign(row, manyQueries(gpu, h, m, s, b, o));
        rows.push(row);
        console.log(`${scheme} ${kernels}: probe ${row.probeMs.toFixed(1)} ms (wall ${row.probeWallMs.toFixed(1)}), update ${row.updateMs.toFixed(2)} ms, weights ${mib(weightsLive)} MiB, peak ${mib(row.peak)} MiB, g ${g.toPrecision(4)}`);
      } finally {
        gpu.llamaDeviceFree(h);
      }
    }
  }
  const torch = o.emulate ? { error: 'not run with --emulate' } : torchPeer(o, s);
  console.log(torch.error ? `torch peer: ${torch.error}` : `torch ${torch.torch}: MeZO step ${torch.mezo.stepMs.toFixed(1)} ms`);

  fs.mkdirSync(o.out, { recursive: true });
  fs.writeFileSync(path.join(o.out, 'zo-step.json'), JSON.stringify({ device: dev, archs: probe.archs, options: o, shape: s, rows, torch }, null, 2) + '\n');
  const t = torch.error ? null : torch;
  const ratio = (ours) => (t && ours ? (ours / t.mezo.stepMs).toFixed(2) : '—');
  const md = [
    '# Device ZO step (cuda/kernels/llama.h) vs PyTorch MeZO',
    '',
    `Device: ${dev.name}${o.emulate ? ' (host emulation of the kernels: plumbing only, times are 0)' : ` (cc ${dev.computeCapability}, ${dev.multiprocessors} SMs), addon built for ${probe.archs}`}. ` +
      `Written by \`node bench/gpu/zo-step.js\` (${new Date().toISOString()}).`,
    '',
    `Model: LLaMA-shaped, hidden ${s.hidden}, intermediate ${s.inter}, ${s.heads} heads, ${s.layers} layers, vocab ${s.vocab}, random weights; ` +
      `batch ${o.batch} x ${o.seq} tokens, loss on next tokens. Step = one probe (+eps and -eps forwards, every tensor perturbed on load) + one update ` +
      `(every tensor). Times: CUDA events, best of ${o.iters}. Kernels "fast": linears of <= 16 rows on the fast gemv kernel, larger ones on bf16 tensor-core tiles over W' = decode(W) + eps z ` +
      'rounded to bf16 once per call (torch\'s precision); "exact": the CPU\'s order (fp32 SIMT tiles on W\' in fp32), a correctness-first path. "x torch" = our step time / torch bf16 MeZO step time (> 1: slower).',
    '',
    '| weights | kernels | weight MiB | probe ms | update ms | step ms | x torch step | device peak MiB | activations peak MiB |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => (r.error ? `| ${r.scheme} | ${r.kernels} | failed: ${r.error} |||||||` :
      `| ${r.scheme} | ${r.kernels} | ${mib(r.weightsLive)} | ${r.probeMs.toFixed(1)} | ${r.updateMs.toFixed(2)} | ${r.stepMs.toFixed(1)} | ${ratio(r.stepMs)} | ${mib(r.peak)} | ${mib(r.activationsPeak)} |`)),
    '',
    ...(rows.some((r) => r.queries)
      ? [
        `Multi-query probes, kernels "fast": the upper ${s.layers - Math.floor(s.layers / 2)} of ${s.layers} layers, the final norm and the LM head trainable; one call of Q seeds (the lower layers run once for every query and sign) vs Q calls of one seed (each runs them once for its two signs). CUDA events, best of ${o.iters}.`,
        '',
        '| weights | Q | one call ms | Q calls ms | one call ÷ Q calls |',
        '|---|---|---|---|---|',
        ...rows.filter((r) => r.queries).map((r) => `| ${r.scheme} | ${r.queries} | ${r.manyMs.toFixed(1)} | ${r.singlesMs.toFixed(1)} | ${r.singlesMs ? (r.manyMs / r.singlesMs).toFixed(2) : '—'} |`),
        '',
      ]
      : []),
    t
      ? [
        `PyTorch ${t.torch} on ${t.device}, bf16, same shapes (${t.params} parameters): MeZO step (perturb in place with torch.normal from a seeded generator, forward, -2 eps, forward, restore, regenerate z, update) ` +
          `**${t.mezo.stepMs.toFixed(1)} ms** (forwards ${t.mezo.forwardMs.toFixed(1)} ms each, perturbation passes ${t.mezo.perturbMs.toFixed(1)} ms each), ` +
          `peak ${mib(t.mezo.peakBytes)} MiB; first-order AdamW bf16 step ${t.adamw.error ? `not measured (${t.adamw.error})` : `${t.adamw.stepMs.toFixed(1)} ms, peak ${mib(t.adamw.peakBytes)} MiB`}.`,
      ].join('')
      : `PyTorch peer: not run (${torch.error}).`,
    '',
  ];
  fs.writeFileSync(path.join(o.out, 'zo-step.md'), md.join('\n'));
  console.log(`wrote ${path.join(o.out, 'zo-step.md')}`);
  return rows.some((r) => r.error) ? 1 : 0;
}

try {
  process.exitCode = main();
} catch (err) {
  console.error(`zo-step.js: ${err.code ? err.code + ': ' : ''}${err.message}`);
  process.exitCode = 1;
}
