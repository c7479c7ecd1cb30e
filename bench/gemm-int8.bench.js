'use strict';
// Integer GEMM suite: W8A8, W4A8, GEMV and perturb-on-load on 2 threads, each row a ratio to a
// ceiling measured in the same run (int8 vpmaddubsw peak for GEMMs, streaming read bandwidth for
// GEMVs) and to the onnxruntime-node peer (2 intra-op threads).
//   npm run bench -- gemm-int8 [--full]     (or node bench/gemm-int8.bench.js [--full])
// Default: 1024^3 W8A8 and 4096x4096 at M = 1, 8, 16, 512 (W8A8 and W4A8, perturbed at M = 16, 512);
// --full (or ZOTUNE_BENCH_FULL=1) adds 11008x4096 and 4096x11008 and W4A8 at 1024^3.
const harness = require('./harness');
const { dynamicModel, nbitsModel, session } = require('./onnx');

const THREADS = 2;
const full = process.argv.includes('--full') || process.env.ZOTUNE_BENCH_FULL === '1';

function rand(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random weights [N, K]: int8 with per-channel scales, or int4 symmetric with a scale per `group` weights. */
function weights(z, fmt, N, K, seed, group = 32) {
  const r = rand(seed);
  const data = z.Tensor.empty([N * (fmt === 'int8' ? K : Math.ceil(K / 2))], fmt === 'int8' ? 'i8' : 'u8', 'weights');
  const d = data.data();
  for (let i = 0; i < d.length; i++) d[i] = fmt === 'int8' ? -127 + Math.floor(r() * 255) : Math.floor(r() * 256);
  const ns = fmt === 'int8' ? N : N * Math.ceil(K / group);
  const scales = z.Tensor.fromArray(Float32Array.from({ length: ns }, () => 0.001 + r() * 0.01), [ns], 'f32', 'weights');
  const w = new z.QTensor(fmt, [N, K], fmt === 'int8' ? 'channel' : group, data, scales);
  return { w, codes: d, scales: scales.data(), bytes: data.byteLength + scales.byteLength };
}

function cases() {
  const out = [];
  const add = (N, K, M, fmt, perturb = null, group = 32) => out.push({ N, K, M, fmt, perturb, group });
  add(1024, 1024, 1024, 'int8');
  if (full) add(1024, 1024, 1024, 'int4');
  for (const [N, K] of full ? [[4096, 4096], [11008, 4096], [4096, 11008]] : [[4096, 4096]])
    for (const M of [1, 8, 16, 512])
      for (const fmt of ['int8', 'int4']) {
        add(N, K, M, fmt);
        // the GEMV also with the model's default int4 group (128: a quarter of g32's scale bytes and flushes)
        if (M === 1 && fmt === 'int4') add(N, K, M, fmt, null, 128);
        // quzo4: QuZO 4-bit Gaussian probe directions (the integer path at every M)
        if (M === 512) for (const dist of ['gaussian', 'rademacher', 'quzo4']) add(N, K, M, fmt, dist);
        if (M === 16) for (const dist of ['gaussian', 'rademacher', 'quzo4']) add(N, K, M, fmt, dist);
      }
  return out;
}

const faster = (a, b) => (b.best < a.best ? b : a);

/**
 * The ceiling a case is judged against: the larger of the harness's run-start measurement and one
 * taken right before the case (the machine is shared; a ceiling measured in a busy moment would
 * flatter the kernels measured later).
 */
async function ceilingNow(h, z, start, kind, buf) {
  let m;
  if (kind === 'int8') {
    const tasks = 32, iters = 100_000;
    m = await h.measure('int8 peak', () => z.ceilings.int8Peak(tasks, iters), { threads: THREADS, work: tasks * iters * z.ceilings.OPS_PER_INT8_ITER, time: 150 });
  } else if (kind === 'vnni') {
    const tasks = 32, iters = 50_000;
    m = await h.measure('vnni peak', () => z.ceilings.vnniPeak(tasks, iters), { threads: THREADS, work: tasks * iters * z.ceilings.OPS_PER_VNNI_ITER, time: 150 });
  } else {
    m = await h.measure('read', () => z.ceilings.readSum(buf), { threads: THREADS, work: buf.size * 4, time: 300 });
  }
  const r = h.rate(m);
  return { best: Math.max(r.best, start.best), median: Math.max(r.median, start.median) };
}

const suite = {
  name: 'gemm-int8',
  title: 'Integer GEMM: W8A8, W4A8, GEMV and perturb-on-load',
  async run(h) {
    const z = h.zotune();
    const ort = require('onnxruntime-node');
    const c = await h.measureCeilings(THREADS);
    // GEMMs are judged against the int8 unit their kernels run on: VNNI on the avx512 path
    const peak = c.vnni ? 'vnni' : 'int8';
    const peakName = c.vnni ? 'VNNI int8 peak (vpdpbusd zmm)' : 'int8 peak (vpmaddubsw + vpmaddwd + vpaddd)';
    const readBuf = z.Tensor.zeros([64 * 1024 * 1024], 'f32', 'workspace');
    const rows = [];
    const plain = new Map();
    const seen = { [peak]: { best: 0, median: 0 }, read: { best: 0, median: 0 } };
    for (const cs of cases()) {
      const { N, K, M, fmt, perturb, group } = cs;
      const gemv = M === 1;
      const wbytes = N * (fmt === 'int8' ? K : K / 2);
      // GEMV weights rotate through copies that together exceed the L3 several times over
      const copies = gemv ? Math.max(2, Math.ceil((4 * h.LLC_BYTES) / wbytes)) : 1;
      const sets = Array.from({ length: copies }, (_, i) => weights(z, fmt, N, K, 11 + i, group));
      const r = rand(5);
      const x = z.Tensor.fromArray(Float32Array.from({ length: M * K }, () => r() * 2 - 1), [M, K], 'f32', 'activations');
      const out = z.Tensor.empty([M, N], 'f32', 'activations');
      const p = !perturb ? undefined : perturb === 'quzo4'
        ? { alpha: 1e-3, seed: 1, stream: 0, dist: 'gaussian', bits: 4, srPurpose: 'probe' }
        : { alpha: 1e-3, seed: 1, stream: 0, dist: perturb };
      const ops = 2 * M * N * K;
      let i = 0, j = 0;
      try {
        const mine = () => h.measure('zotune', () => z.matmulInt8(x, sets[i++ % copies].w, { out, perturb: p }), { threads: THREADS, work: ops });
        let ours = await mine();
        let peer = null;
        if (!perturb) {
          const sessions = [];
          for (const s of sets)
            sessions.push(await session(fmt === 'int8' ? dynamicModel(s.codes, s.scales, N, K) : nbitsModel(s.codes, s.scales, N, K, group), THREADS));
          const feeds = { x: new ort.Tensor('float32', x.data(), [M, K]) };
          // onnxruntime's intra-op threads spin for a while after a run (its default): pause before
          // timing zotune again so that spinning does not eat into zotune's cores.
          const theirs = async () => {
            const m = await h.measure('onnxruntime', () => sessions[j++ % copies].run(feeds), { threads: THREADS, work: ops });
            await new Promise((res) => setTimeout(res, 200));
            return m;
          };
          // a new session's first ~150 ms of calls run at a third of its speed here (gemm.bench.js)
          const t0 = Date.now();
          do await sessions[j++ % copies].run(feeds);
          while (Date.now() - t0 < 500);
          // alternate twice (the machine is shared): each side keeps its better measurement
          peer = await theirs();
          ours = faster(ours, await mine());
          peer = faster(peer, await theirs());
          for (const s of sessions) await s.release();
        } else {
          ours = faster(ours, await mine());
        }
        const rt = h.rate(ours);
        const ceil = await ceilingNow(h, z, gemv ? c.read : c[peak], gemv ? 'read' : peak, readBuf);
        const kindSeen = seen[gemv ? 'read' : peak];
        kindSeen.best = Math.max(kindSeen.best, ceil.best);
        kindSeen.median = Math.max(kindSeen.median, ceil.median);
        const key = `${fmt} ${group} ${N} ${K} ${M}`;
        if (!perturb) plain.set(key, ours);
        const base = plain.get(key);
        const ceiling = gemv
          ? `${h.pct((rt.best * sets[0].bytes) / ops / ceil.best)} / ${h.pct((rt.median * sets[0].bytes) / ops / ceil.median)} of read BW`
          : `${h.pct(rt.best / ceil.best)} / ${h.pct(rt.median / ceil.median)} of ${peak === 'vnni' ? 'VNNI' : 'int8'} peak`;
        rows.push([
          `${fmt === 'int8' ? 'W8A8' : `W4A8 g${group}`} ${N}x${K}, M=${M}${perturb ? `, perturbed (${perturb})` : ''}`,
          `${(ours.best * 1e3).toFixed(2)} / ${(ours.median * 1e3).toFixed(2)}`,
          h.pair(rt, (v) => h.giga(v, 1)),
          gemv ? h.pair({ best: (rt.best * sets[0].bytes) / ops, median: (rt.median * sets[0].bytes) / ops }, (v) => h.giga(v, 1)) : '-',
          ceiling,
          peer ? h.pair(h.ratio(rt, h.rate(peer)), (v) => h.times(v)) : '-',
          perturb ? `+${h.pct(ours.best / base.best - 1, 1)} / +${h.pct(ours.median / base.median - 1, 1)}` : '-',
        ]);
        console.log(rows[rows.length - 1].join(' | '));
      } finally {
        x.dispose();
        out.dispose();
        for (const s of sets) s.w.dispose();
      }
    }
    readBuf.dispose();
    h.report({
      title: suite.title,
      threads: THREADS,
      method: [
        `y = int8(x) · Wᵀ with x f32 [M, K] quantized per row in the call (matmulInt8), W [N, K] int8 per-channel (W8A8) or int4 symmetric group 32 (W4A8; the GEMV also with group 128, the model's int4 default); ${THREADS} threads for zotune and onnxruntime (intra-op).`,
        `GEMM rows: GOPS = 2·M·N·K / time, against the ${peakName} on ${THREADS} threads, the unit the integer GEMM runs on (${z.cpuInfo().path} path), measured in this run: at its start (${h.pair(c[peak], (v) => h.giga(v, 1))} GOPS best / median) and again right before each case; each row uses the larger (highest seen: ${h.pair(seen[peak], (v) => h.giga(v, 1))}).${c.vnni ? ` For scale, the AVX2 int8 peak of the issue's target (vpmaddubsw + vpmaddwd + vpaddd) measured ${h.pair(c.int8, (v) => h.giga(v, 1))} GOPS at the start.` : ''}`,
        `GEMV rows (M = 1): GB/s of weight bytes (codes + scales) against the streaming read bandwidth (sum over 256 MiB, ${THREADS} threads), measured the same way (start: ${h.pair(c.read, (v) => h.giga(v, 1))} GB/s, highest seen: ${h.pair(seen.read, (v) => h.giga(v, 1))}); weights rotate through enough copies to exceed the ${h.LLC_BYTES / 2 ** 20} MiB last-level cache 4x.`,
        'Peer W8A8: onnxruntime DynamicQuantizeLinear + MatMulInteger + Cast + Mul (ONNX bytes built in bench/onnx.js): the same work as matmulInt8, per-call activation quantization included (onnxruntime fuses it into its dynamic-quantization kernel). Peer W4A8: onnxruntime MatMulNBits (com.microsoft, 4-bit, block 32, accuracy_level 4 = int8 activations). "vs onnxruntime" = onnxruntime time / zotune time.',
        'Perturbed rows: x·(W + 1e-3·z)ᵀ with z(n·K + k) regenerated inside the kernel (perturb-on-load), slowdown against the unperturbed row of the same shape. gaussian: exact directions, f32 micro-kernel on decoded + perturbed tiles. rademacher (codes +-1) and quzo4 (QuZO 4-bit Gaussian directions, probe rounding): the integer path at every M (gemm_int8.h step 2\', the direction codes through the nibble micro-kernel: a second integer GEMM, so +100 % is its floor at large M).',
      ],
      columns: ['case', 'ms best / median', 'GOPS best / median', 'GB/s of weights', 'vs ceiling (best / median)', 'vs onnxruntime', 'vs unperturbed'],
      rows,
      notes: [
        'Targets (issue, 2 threads): W8A8 1024³ >= 65 % of the int8 ceiling and >= 1.2x onnxruntime; GEMV W8 and W4 at 4096x4096 >= 70 % of read bandwidth; perturb-on-load at M = 512 <= 15 % slower.',
        'On a CPU with AVX-512 VNNI (avx512 path) the packed GEMMs and the streaming GEMV run on vpdpbusd, the GEMV up to M = 12 (W8A8) / 8 (W4A8 and groups of 32) there (M <= 4 on the other paths, and for W4A8 g32 at M = 1 the AVX2 GEMV; measured against the packed GEMM, which packs its weight panels first: W8A8 4096x4096 1.4-2x faster at M = 8..12), and the f32 micro-kernel of perturbed tiles on zmm. A packed-GEMM task takes every row of its column block unless the column blocks are fewer than 4 per thread (each row block packed the panels again: 4x at 1024^3, 7 % of the call). Every path gives the same bits (test/gemm-int8.test.ts). onnxruntime picks its own AVX-512 VNNI kernels on such a CPU.',
        'Perturbed rows on a VNNI CPU: an exact Gaussian direction puts the weight off the integer grid, so those tiles run on f32 FMAs, ~1/4 of the vpdpbusd rate, plus a Gaussian per weight; Rademacher and QuZO directions stay on integers but need the second integer GEMM of their codes (until 2026-11-25 Rademacher took the f32 path: +320 % at M = 512, 4096²). The 15 % target (set on Zen 1, whose f32 FMA and int8 maddubs rates are equal) is out of reach there by construction.',
        'GEMV rows: until 2026-11-24 the weights rotated through copies adding up to 4x an 8 MiB L3 (Zen 1); on a 32 MiB L3 part of them stayed cached, which inflated those rows (W8A8 82 %, W4A8 g128 76 % then; this run, from DRAM: see the table). The same GEMV on one thread in cache streams ~1.8x as many W8A8 weights per second as the AVX2 one; from DRAM on 2 cores both are bound by the memory system: runs of 2026-11-24/25 read W8A8 60-71 % and W4A8 g128 47-76 % of the same-run read ceiling (best of each run), the higher figures on a quiet host.',
        'onnxruntime sessions run 500 ms before they are measured, yet its calls on this 2-vCPU VM still switch between fast windows and windows ~3x slower (gemm.md notes), so a W8A8 1024³ ratio far above ~1.5x means the peer was caught in a slow window: the --full run of 2026-11-25 read 3.94x best, the run before it 1.45x (the committed verdict then).',
        "onnxruntime's AVX2 u8s8 kernel saturates vpmaddubsw pair sums with full-range int8 weights (its outputs then differ from the exact product); zotune's sign trick keeps every pair sum exact. Timings are unaffected.",
      ],
    });
  },
};

module.exports = suite;
if (require.main === module) harness.main(suite);
