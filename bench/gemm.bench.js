'use strict';
// CPU GEMM, float-accumulate family: fp32 GEMM/GEMV against the FMA ceiling and onnxruntime-node's
// MatMul (the peer, same shapes, same thread count), weight-only GEMV against the read bandwidth,
// and perturb-on-load against the same GEMM without perturbation. Ceilings come from the same run.
// `node bench/gemm.bench.js` (short) or `node bench/gemm.bench.js --full` (every shape and format).
const harness = require('./harness');
const { ortMatmul } = require('./onnx');

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
    // The cases of one row (ours, the peer, the ceiling it is judged against) are measured
    // interleaved (harness measureInterleaved), so every ratio compares measurements taken next to
    // each other on this shared machine. The sleep before each case lets onnxruntime's intra-op
    // threads, which spin after every run (its default, kept: its best case), go idle first.
    const SETTLE_MS = 250;
    const alternate = async (...cases) =>
      (await h.measureInterleaved(cases.map(([name, fn, work]) => ({ name, fn, work })), { threads: THREADS, settleMs: SETTLE_MS })).map((r) => h.rate(r));
    const FMA_TASKS = 32, FMA_ITERS = 20000;
    // the blocked GEMM's full tiles run on zmm on the avx512 path: judged against that unit there
    const zmm = z.cpuInfo().path === 'avx512';
    const fmaCase = zmm
      ? ['ceiling: fp32 FMA (zmm)', () => z.ceilings.fma512Peak(FMA_TASKS, FMA_ITERS / 2), (FMA_TASKS * FMA_ITERS * z.ceilings.FLOP_PER_FMA512_ITER) / 2]
      : ['ceiling: fp32 FMA', () => z.ceilings.fmaPeak(FMA_TASKS, FMA_ITERS), FMA_TASKS * FMA_ITERS * z.ceilings.FLOP_PER_FMA_ITER];
    const readBuf = z.Tensor.zeros([64 * 1024 * 1024], 'f32', 'workspace'); // 256 MiB
    const readCase = ['ceiling: read', () => z.ceilings.readSum(readBuf), readBuf.byteLength];
    const G = (r) => h.pair(r, (x) => h.giga(x, 1));
    const ratio = (a, b) => `${h.times(a.best / b.best)} / ${h.times(a.median / b.median)}`;
    const tensors = [readBuf];
    const keep = (t) => (tensors.push(t), t);

    try {
      // 1. fp32 GEMM and GEMV against the FMA (or read) ceiling and onnxruntime MatMul
      const shapes = [[1024, 1024, 1024], ...LLAMA.flatMap(([N, K]) => MS.map((M) => [M, N, K]))];
      const weights = new Map();
      let base;
      for (const [M, N, K] of shapes) {
        const key = `${N}x${K}`;
        if (!weights.has(key)) weights.set(key, keep(randomTensor(z, [N, K], N + K, 0.1)));
        const w = weights.get(key);
        const x = keep(randomTensor(z, [M, K], M)), out = keep(z.Tensor.empty([M, N]));
        const flop = 2 * M * N * K;
        const ort = await ortMatmul(w.data(), N, K, THREADS);
        const xd = x.data();
        await ort.warm(xd, M);
        let ours, peer, ceil;
        try {
          [ours, peer, ceil] = await alternate([`fp32 ${M}x${N}x${K}`, () => z.matmulSync(x, w, { out }), flop], [`onnxruntime ${M}x${N}x${K}`, () => ort.run(xd, M), flop], M === 1 ? readCase : fmaCase);
        } finally {
          await ort.release();
        }
        if (M === 512 && N === 4096 && K === 4096) base = { x, out, w };
        const bytes = { best: ours.best * 2, median: ours.median * 2 }; // 4 B per 2 FLOP
        rows.push([
          `fp32 ${M === 1 ? 'GEMV' : 'GEMM'}`, `${M}x${N}x${K}`, G(ours),
          M === 1 ? '-' : `**${h.pct(ours.best / ceil.best)}** of ${h.giga(ceil.best, 1)}`,
          M === 1 ? `${G(bytes)} GB/s, **${h.pct(bytes.best / ceil.best)}** of ${h.giga(ceil.best, 1)}` : '-',
          G(peer), ratio(ours, peer),
        ]);
      }

      // 2. Weight-only GEMV (M = 1) against the read bandwidth, weights streamed from DRAM: calls
      // rotate over copies adding up to 4x the last-level cache.
      const gemvFormats = FULL
        ? [['int8', 'channel'], ['int8', 32], ['int4', 128], ['int4', 32], ['nf4', 64], ['fp8-e4m3', 'channel'], ['fp8-e5m2', 'channel'], ['bf16', 'tensor'], ['fp16', 'tensor']]
        : [['int8', 'channel'], ['int4', 128]];
      const N = 4096, K = 4096;
      const x1 = keep(randomTensor(z, [1, K], 7)), out1 = keep(z.Tensor.empty([1, N]));
      for (const [format, gran] of gemvFormats) {
        const first = randomQ(z, format, N, K, gran, 100);
        const count = Math.max(2, Math.ceil((4 * h.LLC_BYTES) / first.byteLength));
        const copies = [first, ...Array.from({ length: count - 1 }, (_, i) => randomQ(z, format, N, K, gran, 101 + i))];
        const bytes = first.byteLength;
        let i = 0;
        const [r, ceil] = await alternate([`${format} GEMV`, () => z.matmulSync(x1, copies[i++ % copies.length], { out: out1 }), bytes], readCase);
        const flops = { best: (r.best / bytes) * 2 * N * K, median: (r.median / bytes) * 2 * N * K };
        rows.push([`${format}/${gran} GEMV, weights from DRAM`, `1x${N}x${K}`, G(flops), '-', `${G(r)} GB/s, **${h.pct(r.best / ceil.best)}** of ${h.giga(ceil.best, 1)}`, '-', '-']);
        copies.forEach((q) => q.dispose());
      }

      // 3. Quantized GEMM (full run): decode while packing, at M = 16 and 512.
      if (FULL) {
        for (const [format, gran] of [['int8', 'channel'], ['int4', 128], ['nf4', 64], ['fp8-e4m3', 'channel'], ['bf16', 'tensor'], ['fp16', 'tensor']]) {
          const q = randomQ(z, format, N, K, gran, 5);
          for (const M of [16, 512]) {
            const x = keep(randomTensor(z, [M, K], M)), out = keep(z.Tensor.empty([M, N]));
            const [r, ceil] = await alternate([`${format} GEMM M=${M}`, () => z.matmulSync(x, q, { out }), 2 * M * N * K], fmaCase);
            rows.push([`${format}/${gran} GEMM`, `${M}x${N}x${K}`, G(r), `${h.pct(r.best / ceil.best)} of ${h.giga(ceil.best, 1)}`, '-', '-', '-']);
          }
          q.dispose();
        }
      }

      // 4. Perturb-on-load at M = 512 against the same GEMM without perturbation.
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
        const [plain, r] = await alternate(['fp32 M=512 plain', () => z.matmulSync(base.x, base.w, { out: base.out }), flop], [`perturb ${name}`, () => z.matmulSync(base.x, base.w, { out: base.out, perturb: p }), flop]);
        const slow = { best: plain.best / r.best - 1, median: plain.median / r.median - 1 };
        rows.push([`fp32 GEMM, perturb-on-load ${name}`, `512x${N}x${K}`, G(r), '-', '-', `plain: ${G(plain)}`, `**${h.pct(slow.best, 1)}** / ${h.pct(slow.median, 1)} slower than plain`]);
      }
    } finally {
      tensors.forEach((t) => t.dispose());
    }

    h.report({
      title: suite.title,
      threads: THREADS,
      method: [
        `Ceilings (bench/harness.js ops, ${THREADS} threads): the fp32 FMA peak${zmm ? ' on zmm (avx512 path: the GEMM\'s full 6x32 tiles are AVX-512; its AVX2 ymm peak was ' + h.pair(c.fma, (x) => h.giga(x, 1)) + ' GFLOP/s)' : ''} and the streaming read of 256 MiB are measured in alternation with the cases they judge (the value each row used is printed beside it); at the start of the run they were ${h.pair(zmm ? c.fma512 : c.fma, (x) => h.giga(x, 1))} GFLOP/s and ${h.pair(c.read, (x) => h.giga(x, 1))} GB/s (best / median).`,
        'GFLOP/s = 2·M·N·K / time of one call (matmulSync into a preallocated output). Percentages use the best rates.',
        'Peer: onnxruntime-node CPU MatMul (MLAS), a one-node ONNX model written as protobuf bytes by bench/onnx.js, weights as a constant initializer (so ORT may prepack them), intra-op threads = 2, timed through session.run (includes its JS call overhead, ~tens of µs).',
        `Weight-only GEMV: GB/s counts the bytes of codes + scales per call; calls rotate over copies adding up to 4x the ${h.LLC_BYTES / 2 ** 20} MiB last-level cache (ZOTUNE_BENCH_LLC_MB), so the weights come from DRAM. The fp32 GEMV row reuses one 64 MiB matrix (part of it may stay in the cache).`,
        'Perturb-on-load: W + alpha·z regenerated while packing; the same GEMM without perturbation is measured in alternation with each perturbed case (its rate is in the onnxruntime column of those rows).',
        'The cases of a row (ours, the peer, the ceiling; or plain and perturbed) are measured interleaved (harness measureInterleaved), so each ratio compares measurements taken next to each other on this shared machine.',
        'onnxruntime keeps its default intra-op spinning (its fastest setting); the process sleeps 250 ms before every case so that its spinning threads are idle when the next case starts (measured: without the pause they take a core from the case that follows, 0.7x instead of 1.0x at 1024³).',
        'onnxruntime runs each session for 500 ms before it is measured: its first ~150 ms of calls run at a third of its speed. On this 2-vCPU VM its 1024³ MatMul also switches between ~6.3 ms and ~19-20 ms per call in windows of ~150 ms (seen on 2026-11-25 with and without intra-op spinning, also in a process without zotune loaded, while zotune\'s GEMM stayed at 6.1-6.9 ms in the same minutes): its rate is the fastest call of the rounds, and a run whose rounds all fall in slow windows shows it ~3x slower than it is.',
        ...(FULL ? [] : ['Default run: 1024³ and 4096x4096 only; `node bench/gemm.bench.js --full` adds 11008x4096, 4096x11008, every format and the sparse/QuZO perturbations.']),
      ],
      columns: ['case', 'MxNxK', 'GFLOP/s best / median', 'of FMA ceiling (GFLOP/s)', 'weight bytes: GB/s best / median, of read ceiling (GB/s)', 'onnxruntime GFLOP/s best / median', 'vs onnxruntime (speed ratio) / note'],
      rows,
      notes: [
        'Targets (issue, 2 threads): fp32 1024³ >= 80 % of the FMA ceiling and >= 1.0x onnxruntime; GEMV W8/W4 at 4096² >= 70 % of read bandwidth; perturb-on-load at M = 512 <= 15 % slower.',
        'fp32 GEMM since 2026-11-25: the micro-kernels broadcast A from its rows in place instead of a copy packed into 6-row slivers (a separate parallel job reading and writing all of A per call). Alternating builds, 1024³ on 2 threads: 6.20-6.42 -> 5.75-5.95 ms best, 6.63-6.74 -> 6.09-6.16 ms median (+7-9 %); 512x4096x4096 +2-9 %; the AVX2 path +4 %; one thread within ±4 % (noise). Runs of 2026-11-25 (session 21, then 22 with the host quiet): 85 % and 85 % of the zmm FMA ceiling (1.07-1.12x onnxruntime); three runs with the host loaded by other tenants (read ceiling 42-63 GB/s) 78 / 70 / 73 % (1.16-1.23x onnxruntime) and the int4/128 GEMV 70 / 70 / 63 %; the committed --full run of session 22, on a quiet host, 89 % (1.05x) with every GEMV row above 70 %: on this shared VM single runs of these rows spread by +-10 points. Before: 77 % (the committed run before the change).',
        'Weight-only GEMV on the AVX2 path (measured on Zen 1) is decode-bound, not bus-bound: its loop sustains about one 256-bit vector op per cycle (standalone probes during development, not kept in the repo) and every 8 weights need one fp32 FMA plus their decode. int8 takes two decode ops (vpmovsxbd + vcvtdq2ps; magic-number, vpshufb and 128-bit variants measured no faster): ~3 weights/cycle/core, ~15 G weights/s on 2 cores, about 60-65 % of the bus at 1 B/weight. int4 takes one (nibbles read in place as subnormal floats, native/cpu/gemm.h): ~3.5-4 weights/cycle/core, still under half the bus at 0.5 B/weight. Integer-activation kernels (W8A8/W4A8, lib/gemm-int8.ts) are the route past it.',
        'Weight-only GEMV on the avx512 path (Zen 5, 2026-11-25): int8/channel streams 70-109 % and int4/128 56-88 % of the read ceiling across seven runs of 2026-11-25 (88 % with 47.9 GB/s best, the highest absolute rate seen, in the committed --full run of session 22) (int4 after the 8-row block below; 69 % before it). Their absolute rates move less than the ceiling between undisturbed runs (int8 50-63 GB/s, int4 40-44 GB/s best) while the same-run read ceiling they are judged against read 57-77 GB/s (in runs disturbed by other tenants both dropped: ceiling 39-44, int4 28-31), so the percentages follow the host: when the ceiling reads high, int4 is compute-bound well below it. Tasks hold ~512 KiB of weights (native/cpu/threadpool.h stream_rows_per_task): the 32-row tasks before (64 KiB of int4) restarted the hardware prefetchers often enough to cost 15-30 % from DRAM. A standalone copy of the int4 M = 1 loop (gemm_avx512.cc gemv_int4_rows; not kept in the repo; 16 copies of the 8.4 MB matrix so that none stays in the 32 MiB L3, one pass over all rows per call): 62 G weights/s per core in cache and 37-40 GB/s from DRAM on 2 threads, against 79-81 G weights/s and 42-46 GB/s with the per-group flush left out (the half fold, zero-point and scale FMA: ~20 vector ops per 4 rows x 128 weights against ~80 in the chunk loop) — the flush costs 25-30 % and is fixed by the bit-exact reduction order (gemm.h). No faster in that loop: two rows per register (no half swaps; an insert per chunk instead), a second offset load instead of the shift for nibbles 6-7, prefetch 1-4 blocks ahead, T1 / NTA hints. With 8 copies (67 MB) a part stays cached and the rate reads ~20 % higher, so copies fill 4x the LLC here. Since 2026-11-25 the int4 M = 1 block takes 8 rows where a row is at most 4 KiB (K <= 8192), so each activation vector feeds 8 rows: 4096x4096 from DRAM, 16 copies, 6 alternating rounds against 4 rows: 35.3-41.5 GB/s median per round against 33.2-36.4 (+8-10 %), best 39.4-44.4 against 36.1-40.0; 11008x4096 +3-7 %; on 5.5 KB rows (K = 11008) 8 rows measured ~10 % slower, so they keep 4. The bench rows above move with the machine\'s bandwidth (the same-run read ceiling read 57-64 GB/s), which hides a gain of this size between runs.',
        'Gaussian perturb-on-load costs one normal per weight per call (half a Philox word and half a Box-Muller pair since the one-word Box-Muller; it was ~9 cycles on Zen 1 with two words per pair), amortised over M rows: 11-13 % at M = 512 in single-thread CPU-time measurements before that change; Rademacher costs one bit per weight. Until 2026-11-25 the Rademacher rows read 9-15 % (slower than the Gaussian ones), which was not noise: each 256-wide K slice of a row drew a whole 1024-element Philox block (4 words per lane) to use one word of it. Since then each task draws its rows\' signs once into a table (perturb.h avx2::rademacher_signs, 1 bit per weight) that every K slice reads; 512x4096x4096 fp32 in alternating A/B runs: 9.2-13.7 % -> 5.7-6.2 %, int4 4.7-4.9 % -> 3.7 %, 512x256x688 6.0 -> 3.7 %. What stays in the fp32 rows is mostly the copy: unperturbed fp32 weights are packed straight from W, densely perturbed ones through a row buffer.',
        'Sparse perturb-on-load (index lists with fewer than one listed element in 16 of a task\'s rows) since 2026-11-25: each task draws the directions of its rows\' listed elements once, 8 at a time (perturb.h avx2::gather_directions, the kernel of perturbIndices), packs the weights as if unperturbed (fp32 straight from W) and patches the listed elements in the packed panel, walking each row\'s list with a cursor. Before, every (row, 256-wide K slice) ran two binary searches over the list, drew each listed direction alone (scalar Philox + Box-Muller) and copied fp32 rows through a buffer: 512x4096x4096 with 1 % indices in alternating A/B runs, fp32 17.5 % -> 4.3 %, int4/128 10.5 % -> 1.4 % (the committed row read 14.6-18.6 % before).',
      ],
    });
  },
};

module.exports = suite;
if (require.main === module) harness.main(suite);
