'use strict';
// CPU GEMM, float-accumulate family: fp32 GEMM/GEMV against the FMA ceiling and onnxruntime-node's
// MatMul (the peer, same shapes, same thread count), weight-only GEMV against the read bandwidth,
// and perturb-on-load against the same GEMM without perturbation. Ceilings come from the same run.
// `node bench/gemm.bench.js` (short) or `node bench/gemm.bench.js --full` (every shape and format).
const harness = require('./harness');
const { ortMatmul } = require('./onnx-matmul');

const FULL = process.argv.includes('--full') || process.env.ZOTUNE_BENCH_FULL === '1';
const THREADS = 2;

// LLaMA-7B linears [N = out, K = in]: attention projections, MLP up/gate, MLP down.
const LLAMA = FULL ? [[4096, 4096], [11008, 4096], [4096, 11008]] : [[4096, 4096]];
const MS = [1, 16, 512];

// Deterministic test data without a JS loop per element: engine RNG into native tensors.
function randomTensor(z, shape, seed, scale = 1) {
  const t = z.Tensor.empty(shape, 'f32', 'workspace');
  z.rng.fillSync(t, 'uniform', { seed, stream: 1 });
  const d = t.data();
  for (let i = 0; i < d.length; i++) d[i] = (d[i] - 0.5) * scale; // uniform in (-scale/2, scale/2)
  return t;
}

// Quantized weights from random codes (the kernels' speed does not depend on how codes were made).
function randomQ(z, format, N, K, granularity, seed) {
  const rowBytes = format === 'int4' || format === 'nf4' ? Math.ceil(K / 2) : format === 'bf16' || format === 'fp16' ? 2 * K : K;
  const bytes = new Uint8Array(N * rowBytes);
  let s = seed >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    bytes[i] = s >>> 24;
  }
  if (format === 'int8') for (let i = 0; i < bytes.length; i++) if (bytes[i] === 0x80) bytes[i] = 0; // keep -127..127
  if (format === 'fp8-e4m3') for (let i = 0; i < bytes.length; i++) if ((bytes[i] & 0x7f) === 0x7f) bytes[i] ^= 1; // no NaN codes
  if (format === 'bf16' || format === 'fp16') for (let i = 1; i < bytes.length; i += 2) bytes[i] = (bytes[i] & 0x83) | 0x38; // moderate exponents
  const dtype = format === 'int8' ? 'i8' : format === 'bf16' || format === 'fp16' ? 'u16' : 'u8';
  const data = dtype === 'i8' ? z.Tensor.from(new Int8Array(bytes.buffer), [bytes.length], 'i8') : dtype === 'u16' ? z.Tensor.from(new Uint16Array(bytes.buffer), [bytes.length / 2], 'u16') : z.Tensor.from(bytes, [bytes.length], 'u8');
  const scaled = format !== 'bf16' && format !== 'fp16';
  const g = granularity === 'tensor' ? 0 : granularity === 'channel' ? K : granularity;
  const nScales = g === 0 ? 1 : N * Math.ceil(K / g);
  const scales = scaled ? z.Tensor.from(new Float32Array(nScales).fill(0.01)) : undefined;
  return new z.QTensor(format, [N, K], granularity, data, scales);
}

const suite = {
  name: 'gemm',
  title: `CPU GEMM, fp32 activations: fp32 and weight-only formats, perturb-on-load (${FULL ? 'full' : 'default'} run)`,
  async run(h) {
    const z = h.zotune();
    const c = await h.measureCeilings(THREADS);
    const rows = [];
    const m = (name, fn, work) => h.measure(name, fn, { threads: THREADS, work });
    // A and B measured twice in alternation (A B A B), the better round kept per side: on a shared
    // machine the ratio then compares neighbours in time.
    const duel = async (a, fa, b, fb, work) => {
      const best = (x, y) => ({ best: Math.max(x.best, y.best), median: Math.max(x.median, y.median) });
      let ra, rb;
      for (let round = 0; round < 2; round++) {
        const xa = h.rate(await m(a, fa, work)), xb = h.rate(await m(b, fb, work));
        ra = ra ? best(ra, xa) : xa;
        rb = rb ? best(rb, xb) : xb;
      }
      return [ra, rb];
    };
    const G = (r) => h.pair(r, (x) => h.giga(x, 1));
    const ofFma = (r) => h.pct(r.best / c.fma.best);
    const ofRead = (r) => h.pct(r.best / c.read.best);
    const ratio = (a, b) => `${h.times(a.best / b.best)} / ${h.times(a.median / b.median)}`;
    const tensors = [];
    const keep = (t) => (tensors.push(t), t);

    try {
      // 1. fp32 GEMM and GEMV against the FMA ceiling and onnxruntime MatMul
      const shapes = [[1024, 1024, 1024], ...LLAMA.flatMap(([N, K]) => MS.map((M) => [M, N, K]))];
      const perturbBase = new Map();
      const weights = new Map();
      for (const [M, N, K] of shapes) {
        const key = `${N}x${K}`;
        if (!weights.has(key)) weights.set(key, keep(randomTensor(z, [N, K], N + K, 0.1)));
        const w = weights.get(key);
        const x = keep(randomTensor(z, [M, K], M)), out = keep(z.Tensor.empty([M, N]));
        const flop = 2 * M * N * K;
        const ort = await ortMatmul(w.data(), N, K, THREADS);
        const xd = x.data();
        let ours, peer;
        try {
          [ours, peer] = await duel(`fp32 ${M}x${N}x${K}`, () => z.matmulSync(x, w, { out }), `onnxruntime ${M}x${N}x${K}`, () => ort.run(xd, M), flop);
        } finally {
          await ort.release();
        }
        if (M === 512 && N === 4096 && K === 4096) perturbBase.set('fp32', { ours, x, out, w });
        rows.push([`fp32 ${M === 1 ? 'GEMV' : 'GEMM'}`, `${M}x${N}x${K}`, G(ours), ofFma(ours), M === 1 ? `${h.giga(ours.best * 2, 1)} GB/s, ${ofRead({ best: ours.best * 2 })} of read` : '-', G(peer), ratio(ours, peer)]);
      }

      // 2. Weight-only GEMV (M = 1) against the read bandwidth, weights streamed from DRAM: calls
      // rotate over enough copies to exceed the last-level cache.
      const gemvFormats = FULL
        ? [['int8', 'channel'], ['int4', 128], ['int4', 32], ['nf4', 64], ['fp8-e4m3', 'channel'], ['fp8-e5m2', 'channel'], ['bf16', 'tensor'], ['fp16', 'tensor']]
        : [['int8', 'channel'], ['int4', 128]];
      const N = 4096, K = 4096;
      const x1 = keep(randomTensor(z, [1, K], 7)), out1 = keep(z.Tensor.empty([1, N]));
      for (const [format, gran] of gemvFormats) {
        const copies = Array.from({ length: 4 }, (_, i) => randomQ(z, format, N, K, gran, 100 + i));
        const bytes = copies[0].byteLength;
        let i = 0;
        const r = h.rate(await m(`${format} GEMV`, () => z.matmulSync(x1, copies[i++ % copies.length], { out: out1 }), bytes));
        const flops = { best: (r.best / bytes) * 2 * N * K, median: (r.median / bytes) * 2 * N * K };
        rows.push([`${format}/${gran} GEMV (weights from DRAM, 4 copies)`, `1x${N}x${K}`, G(flops), ofFma(flops), `${G(r)} GB/s, **${ofRead(r)}** of read`, '-', '-']);
        copies.forEach((q) => q.dispose());
      }

      // 3. Quantized GEMM (full run): decode while packing, at M = 16 and 512.
      if (FULL) {
        for (const [format, gran] of [['int8', 'channel'], ['int4', 128], ['nf4', 64], ['fp8-e4m3', 'channel'], ['bf16', 'tensor'], ['fp16', 'tensor']]) {
          const q = randomQ(z, format, N, K, gran, 5);
          for (const M of [16, 512]) {
            const x = keep(randomTensor(z, [M, K], M)), out = keep(z.Tensor.empty([M, N]));
            const r = h.rate(await m(`${format} GEMM M=${M}`, () => z.matmulSync(x, q, { out }), 2 * M * N * K));
            rows.push([`${format}/${gran} GEMM`, `${M}x${N}x${K}`, G(r), ofFma(r), '-', '-', '-']);
          }
          q.dispose();
        }
      }

      // 4. Perturb-on-load at M = 512 against the same GEMM without perturbation.
      const base = perturbBase.get('fp32');
      const dir = { seed: 0x5eedn, stream: 3, alpha: 1e-3 };
      const variants = [
        ['Gaussian', { ...dir, dist: 'gaussian' }],
        ['Rademacher', { ...dir, dist: 'rademacher' }],
        ...(FULL ? [['Gaussian, QuZO 4-bit', { ...dir, dist: 'gaussian', bits: 4 }]] : []),
      ];
      if (FULL) {
        const idx = new Uint32Array(Math.floor((N * K) / 100));
        for (let k = 0; k < idx.length; k++) idx[k] = k * 100 + (k % 7);
        variants.push(['Gaussian, 1 % indices', { ...dir, dist: 'gaussian', indices: idx }]);
      }
      const flop = 2 * 512 * N * K;
      for (const [name, p] of variants) {
        // the plain GEMM alternates with each perturbed one: the slowdown compares neighbours in time
        const [plain, r] = await duel('fp32 M=512 plain', () => z.matmulSync(base.x, base.w, { out: base.out }), `perturb ${name}`, () => z.matmulSync(base.x, base.w, { out: base.out, perturb: p }), flop);
        const slow = { best: plain.best / r.best - 1, median: plain.median / r.median - 1 };
        rows.push([`fp32 GEMM, perturb-on-load ${name}`, `512x${N}x${K}`, G(r), ofFma(r), '-', `plain: ${G(plain)}`, `**${h.pct(slow.best, 1)}** / ${h.pct(slow.median, 1)} slower than plain`]);
      }
    } finally {
      tensors.forEach((t) => t.dispose());
    }

    h.report({
      title: suite.title,
      threads: THREADS,
      method: [
        `Ceilings measured in this run on ${THREADS} threads (bench/harness.js): fp32 FMA peak ${h.pair(c.fma, (x) => h.giga(x, 1))} GFLOP/s, streaming read ${h.pair(c.read, (x) => h.giga(x, 1))} GB/s (best / median).`,
        'GFLOP/s = 2·M·N·K / time of one call (matmulSync into a preallocated output). "% FMA" and "% of read" use the best rates.',
        'Peer: onnxruntime-node CPU MatMul (MLAS), a one-node ONNX model written as protobuf bytes by bench/onnx-matmul.js, weights as a constant initializer (so ORT may prepack them), intra-op threads = 2, timed through session.run (includes its JS call overhead, ~tens of µs).',
        'Weight-only GEMV: GB/s counts the bytes of codes + scales per call; calls rotate over 4 copies (32-64 MiB) so the weights come from DRAM, not the last-level cache.',
        'Perturb-on-load: W + alpha·z regenerated while packing; the same GEMM without perturbation is measured in alternation with each perturbed case (its rate is in the onnxruntime column of those rows).',
        'Ours and the peer (or plain and perturbed) are measured twice in alternation, A B A B, and the better round is kept per side, so each ratio compares measurements taken next to each other on this shared machine.',
        ...(FULL ? [] : ['Default run: 1024³ and 4096x4096 only; `node bench/gemm.bench.js --full` adds 11008x4096, 4096x11008, every format and the sparse/QuZO perturbations.']),
      ],
      columns: ['case', 'MxNxK', 'GFLOP/s best / median', '% FMA ceiling', 'weight bandwidth', 'onnxruntime GFLOP/s best / median', 'vs onnxruntime (time ratio) / note'],
      rows,
      notes: [
        'Targets (issue, 2 threads): fp32 1024³ >= 80 % of the FMA ceiling and >= 1.0x onnxruntime; GEMV W8/W4 at 4096² >= 70 % of read bandwidth; perturb-on-load at M = 512 <= 15 % slower.',
        'This machine is a Zen 1 EPYC: vcvtdq2ps, vcvtph2ps, vpmovsxbd and vpsrld on ymm each take 2 cycles and vpermps 4 (measured), so exact int/fp8/fp16 -> fp32 decode with fp32 FMAs tops out near 2.7 weights/cycle/core: W8 GEMV is compute-bound below the bus, W4 GEMV (half the bytes per weight) reaches about half the fraction W8 does. Integer-activation kernels (W8A8/W4A8, branch gemm-int) are the route past that.',
        'Gaussian perturb-on-load costs one Philox + Box-Muller normal (~9 cycles/element on Zen 1) per weight per call, amortised over M rows: ~13 % at M = 512 in single-thread tuning; Rademacher costs a bit per weight.',
      ],
    });
  },
};

module.exports = suite;
if (require.main === module) harness.main(suite);
