import { cpuInfo, matmul, matmulSync, QTensor, rng, setCpuPath, setThreads, Tensor } from '../lib';
import type { MatmulPerturb } from '../lib';
import { dirSrAt, dirSrThreshold, fmaf, normalAt, prng, rademacherAt, srWordIndex } from './helpers/reference';
import { cpuPaths } from './helpers/paths';
import { decodeE4M3, decodeE5M2, decodeQ, quantize, QSpec } from './helpers/qref';

const f = Math.fround;
type F32 = Float32Array<ArrayBuffer>;
const hasAvx2 = cpuInfo().avx2;
// avx512 adds a 6x32 AVX-512 tile to the blocked fp32 GEMM
const paths = cpuPaths('gemm');

afterAll(() => {
  setCpuPath('auto');
  setThreads(cpuInfo().threads);
});

function gauss(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}
function randn(n: number, seed: number, scale = 1): F32 {
  const r = prng(seed);
  return Float32Array.from({ length: n }, () => gauss(r) * scale);
}

/** Float64 reference of out = (accumulate ? c0 : 0) + x·wᵀ + bias, and Σ|x·w| per output (error scale). */
function refGemm(x: Float32Array, w: Float32Array, M: number, N: number, K: number, bias?: Float32Array, c0?: Float32Array) {
  const out = new Float64Array(M * N), mag = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0, a = 0;
      for (let k = 0; k < K; k++) { const p = x[m * K + k] * w[n * K + k]; s += p; a += Math.abs(p); }
      out[m * N + n] = s + (c0 ? c0[m * N + n] : 0) + (bias ? bias[n] : 0);
      mag[m * N + n] = a + (c0 ? Math.abs(c0[m * N + n]) : 0) + (bias ? Math.abs(bias[n]) : 0);
    }
  return { out, mag };
}

/**
 * The documented bound (native/cpu/gemm.h): |c − exact| <= (K + 64)·2^-23·Σ|x·w| per element,
 * with Σ|x·w| taken over the unscaled codes for int4 (its zero-point correction cancels) — here
 * scaled by `slack` for int4 (|u| <= 15 against |u − zp| >= 1). Returns the NMSE for the record.
 */
function expectClose(got: Float32Array, ref: { out: Float64Array; mag: Float64Array }, K: number, slack = 1): number {
  let e2 = 0, r2 = 0, worst = 0;
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - ref.out[i]);
    const bound = (K + 64) * 2 ** -23 * ref.mag[i] * slack + 1e-30;
    worst = Math.max(worst, err / bound);
    e2 += err * err; r2 += ref.out[i] * ref.out[i];
  }
  expect(worst).toBeLessThanOrEqual(1);
  return r2 > 0 ? e2 / r2 : e2;
}

const bitsEqual = (a: Float32Array, b: Float32Array) =>
  a.length === b.length && a.every((v, i) => Object.is(v, b[i]) || (Number.isNaN(v) && Number.isNaN(b[i])));

function run(x: F32, M: number, K: number, w: Tensor | QTensor, N: number, opts: { bias?: F32; c0?: F32; perturb?: MatmulPerturb } = {}): F32 {
  const out = new Float32Array(M * N).fill(NaN); // poison: every element must be written
  if (opts.c0) out.set(opts.c0);
  matmulSync(Tensor.from(x, [M, K]), w, { out: Tensor.from(out, [M, N]), bias: opts.bias ? Tensor.from(opts.bias) : undefined, accumulate: !!opts.c0, perturb: opts.perturb });
  return out;
}

// M = 1..4 take the streaming GEMV, 5..16 the skinny GEMM (8 or 16 lanes), larger M the packed
// GEMM; K around the 64-chunk and 256-block edges, N around the 6- and 16-wide tiles.
const SHAPES: [number, number, number][] = [
  [1, 1, 1], [1, 17, 64], [2, 33, 130], [3, 8, 200], [4, 70, 257], [5, 16, 63], [6, 16, 256], [8, 13, 513], [9, 7, 300],
  [16, 30, 100], [17, 19, 513], [37, 51, 97],
];

describe.each(paths)('fp32 GEMM on the %s path', (path) => {
  beforeAll(() => setCpuPath(path));

  test.each(SHAPES)('M=%i N=%i K=%i against float64 (bias, poisoned output)', (M, N, K) => {
    const x = randn(M * K, M * 1000 + K), w = randn(N * K, N * 7 + K, 0.1), bias = randn(N, N);
    const got = run(x, M, K, Tensor.from(w, [N, K]), N, { bias });
    expectClose(got, refGemm(x, w, M, N, K, bias), K);
  });

  test('random shapes against float64', () => {
    const rand = prng(path === 'scalar' ? 101 : 202);
    for (let trial = 0; trial < 12; trial++) {
      const M = 1 + Math.floor(rand() * 40), N = 1 + Math.floor(rand() * 70), K = 1 + Math.floor(rand() * 600);
      const x = randn(M * K, trial), w = randn(N * K, trial + 50);
      expectClose(run(x, M, K, Tensor.from(w, [N, K]), N), refGemm(x, w, M, N, K), K);
    }
  });

  test('accumulate adds to the output (C += x·Wᵀ + bias), GEMV and GEMM', () => {
    for (const M of [2, 9]) {
      const N = 21, K = 75;
      const x = randn(M * K, 5), w = randn(N * K, 6), c0 = randn(M * N, 7), bias = randn(N, 8);
      expectClose(run(x, M, K, Tensor.from(w, [N, K]), N, { c0, bias }), refGemm(x, w, M, N, K, bias, c0), K);
    }
  });

  test('K = 0 gives the bias (or keeps C when accumulating); M = 0 and N = 0 are no-ops', () => {
    const bias = Float32Array.from([1, 2, 3]);
    expect(Array.from(run(new Float32Array(0), 2, 0, Tensor.from(new Float32Array(0), [3, 0]), 3, { bias }))).toEqual([1, 2, 3, 1, 2, 3]);
    const c0 = Float32Array.from([5, 6, 7, 8, 9, 10]);
    expect(Array.from(run(new Float32Array(0), 2, 0, Tensor.from(new Float32Array(0), [3, 0]), 3, { c0 }))).toEqual([5, 6, 7, 8, 9, 10]);
    expect(matmulSync(Tensor.from(new Float32Array(0), [0, 4]), Tensor.from(new Float32Array(12), [3, 4])).shape).toEqual([0, 3]);
  });
});

// Every format, granularity and path: against float64 over the exactly decoded weights.
const QSPECS: QSpec[] = [
  { format: 'int8', granularity: 'channel' }, { format: 'int8', granularity: 32 }, { format: 'int8', granularity: 'tensor' },
  { format: 'int4', granularity: 32 }, { format: 'int4', granularity: 64, asym: true }, { format: 'int4', granularity: 128 },
  { format: 'int4', granularity: 'channel', asym: true }, { format: 'nf4', granularity: 64 }, { format: 'nf4', granularity: 32 },
  { format: 'fp8-e4m3', granularity: 'channel' }, { format: 'fp8-e4m3', granularity: 32 }, { format: 'fp8-e5m2', granularity: 'tensor' },
  { format: 'bf16', granularity: 'tensor' }, { format: 'fp16', granularity: 'tensor' },
];
const specName = (s: QSpec) => `${s.format}/${s.granularity}${s.asym ? '/asym' : ''}`;

describe.each(paths)('quantized weights on the %s path', (path) => {
  beforeAll(() => setCpuPath(path));

  test.each(QSPECS.map((s) => [specName(s), s] as const))('%s: GEMV and GEMM against float64, odd shapes', (_name, spec) => {
    for (const [M, N, K] of [[1, 9, 200], [3, 5, 129], [4, 3, 64], [7, 20, 333], [12, 17, 96]] as const) {
      const x = randn(M * K, M + K), wf = randn(N * K, N * K);
      const { q, w } = quantize(wf, N, K, spec);
      const bias = randn(N, 3);
      const got = run(x, M, K, q, N, { bias });
      // int4 computes Σx·u − zp·Σx with unsigned u <= 15: its rounding scales with 15 + zp, not |u − zp|
      const slack = spec.format === 'int4' ? 24 : 1;
      expectClose(got, refGemm(x, w, M, N, K, bias), K, slack);
    }
  });
});

(hasAvx2 ? describe : describe.skip)('every path (scalar, AVX2, AVX-512 where present) agrees bit for bit', () => {
  const variants: [string, QSpec | null][] = [['fp32', null], ...QSPECS.map((s) => [specName(s), s] as [string, QSpec])];
  test.each(variants)('%s over GEMV and GEMM shapes', (_name, spec) => {
    for (const [M, N, K] of [[1, 33, 700], [1, 6, 256], [1, 9, 200], [2, 16, 64], [2, 5, 448], [3, 9, 384], [4, 7, 131], [5, 23, 260], [16, 13, 300], [30, 40, 515], [37, 100, 300]] as const) {
      const x = randn(M * K, 11 + K), wf = randn(N * K, 12 + N, 0.5), bias = randn(N, 13);
      const w = spec ? quantize(wf, N, K, spec).q : Tensor.from(wf, [N, K]);
      const c0 = randn(M * N, 14);
      const res = paths.map((p) => { setCpuPath(p); return run(x, M, K, w, N, { bias, c0 }); });
      for (let i = 1; i < res.length; i++) expect([paths[i], bitsEqual(res[0], res[i])]).toEqual([paths[i], true]);
    }
  });
});

// The int4 GEMV reads nibbles as subnormal floats against activations prescaled by 2^(149 − E − 4j')
// with E from the row's largest |x| (native/cpu/gemm.h): scaling x by a power of two must scale the
// result by exactly that power (no bits lost to the prescale), on both paths, for tiny and huge rows.
describe('int4 GEMV activation prescale', () => {
  test.each(paths)('x·2^k gives exactly 2^k times the result, |k| <= 90, M = 1..4 (%s)', (path) => {
    setCpuPath(path);
    for (const spec of [{ format: 'int4', granularity: 32 }, { format: 'int4', granularity: 128, asym: true }] as QSpec[]) {
      const N = 11, K = 389;
      const { q, w } = quantize(randn(N * K, 21), N, K, spec);
      for (const M of [1, 4]) {
        const x = randn(M * K, 22 + M);
        const base = run(x, M, K, q, N);
        expectClose(base, refGemm(x, w, M, N, K), K, 24);
        for (const k of [-90, -40, -7, 13, 60, 90]) {
          const got = run(x.map((v) => v * 2 ** k) as F32, M, K, q, N);
          expect(bitsEqual(got, base.map((v) => v * 2 ** k) as F32)).toBe(true);
        }
      }
    }
  });

  test('the subnormal and the converting int4 decode give the same bits, on both paths (ZOTUNE_INT4_SUBNORMAL)', () => {
    const saved = process.env.ZOTUNE_INT4_SUBNORMAL;
    try {
      for (const spec of [{ format: 'int4', granularity: 32 }, { format: 'int4', granularity: 64, asym: true }] as QSpec[]) {
        const N = 13, K = 517, M = 3;
        const { q } = quantize(randn(N * K, 41), N, K, spec);
        const x = randn(M * K, 42), bias = randn(N, 43);
        const res: F32[] = [];
        for (const mode of ['1', '0'])
          for (const p of paths) {
            process.env.ZOTUNE_INT4_SUBNORMAL = mode;
            setCpuPath(p);
            res.push(run(x, M, K, q, N, { bias }));
          }
        for (const r of res.slice(1)) expect(bitsEqual(r, res[0])).toBe(true);
      }
    } finally {
      if (saved === undefined) delete process.env.ZOTUNE_INT4_SUBNORMAL;
      else process.env.ZOTUNE_INT4_SUBNORMAL = saved;
    }
  });

  test.each(paths)('rows of very different magnitude and zero rows stay within the bound (%s)', (path) => {
    setCpuPath(path);
    const N = 7, K = 256, M = 4;
    const { q, w } = quantize(randn(N * K, 31), N, K, { format: 'int4', granularity: 64 });
    const x = randn(M * K, 32);
    for (let k = 0; k < K; k++) { x[k] *= 1e-30; x[2 * K + k] = 0; x[3 * K + k] *= 1e25; }
    const got = run(x, M, K, q, N);
    expectClose(got, refGemm(x, w, M, N, K), K, 24);
    for (let n = 0; n < N; n++) expect(got[2 * N + n]).toBe(0);
  });
});

describe('special weight codes', () => {
  test.each(paths)('fp8 e4m3 NaN codes make their output rows NaN; e5m2 Inf propagates (%s)', (path) => {
    setCpuPath(path);
    for (const M of [1, 6]) {
      const N = 4, K = 70;
      for (const [format, special] of [['fp8-e4m3', 0x7f], ['fp8-e5m2', 0x7c]] as const) {
        const codes = new Uint8Array(N * K).map((_, i) => (i * 37) & 0x3b);
        codes[2 * K + 5] = special; // row 2 (main part of a GEMV chunk)
        const q = new QTensor(format, [N, K], 'tensor', Tensor.from(codes), Tensor.from(Float32Array.of(0.5)));
        const x = new Float32Array(M * K).fill(0.25);
        const out = run(x, M, K, q, N);
        const ref = refGemm(x, decodeQ(q), M, N, K);
        for (let m = 0; m < M; m++)
          for (let n = 0; n < N; n++) {
            const i = m * N + n;
            if (n === 2) expect(format === 'fp8-e4m3' ? Number.isNaN(out[i]) : out[i] === Infinity).toBe(true);
            else expect(Math.abs(out[i] - ref.out[i])).toBeLessThanOrEqual((K + 64) * 2 ** -23 * ref.mag[i]);
          }
      }
    }
  });

  test('every finite fp8 code decodes exactly on the GEMV and GEMM paths', () => {
    for (const path of paths) {
      setCpuPath(path);
      for (const format of ['fp8-e4m3', 'fp8-e5m2'] as const) {
        const finite = Array.from({ length: 256 }, (_, c) => c).filter((c) => Number.isFinite(format === 'fp8-e4m3' ? decodeE4M3(c) : decodeE5M2(c)));
        const K = finite.length, N = K;
        const codes = new Uint8Array(N * K).map((_, i) => finite[(Math.floor(i / K) + (i % K)) % K]); // row n: codes rotated by n
        const q = new QTensor(format, [N, K], 'tensor', Tensor.from(codes), Tensor.from(Float32Array.of(1)));
        const w = decodeQ(q);
        // GEMV: x = e_0 reads column 0, i.e. code finite[n] of every row n
        const x1 = new Float32Array(K); x1[0] = 1;
        const gemv = run(x1, 1, K, q, N);
        for (let n = 0; n < N; n++) expect(gemv[n] === w[n * K]).toBe(true);
        // GEMM: x = identity reads every weight of the first 8 rows back
        const q8 = new QTensor(format, [8, K], 'tensor', Tensor.from(codes.slice(0, 8 * K)), Tensor.from(Float32Array.of(1)));
        const eye = new Float32Array(K * K).map((_, i) => (i % (K + 1) === 0 ? 1 : 0));
        const gemm = run(eye, K, K, q8, 8);
        for (let m = 0; m < K; m++) for (let n = 0; n < 8; n++) expect(gemm[m * 8 + n] === w[n * K + m]).toBe(true);
      }
    }
  });
});

// --- perturb-on-load ------------------------------------------------------------------------------

interface Dir { seed: bigint; stream: number; dist: 'gaussian' | 'rademacher'; bits: number; srPurpose: number }

/** z(i) of native/common/direction.h, from the JS Philox/Box-Muller references. */
function dirAt(d: Dir, i: number): number {
  if (d.dist === 'rademacher') return rademacherAt({ seed: d.seed, stream: d.stream, purpose: 1 }, i);
  const z = normalAt({ seed: d.seed, stream: d.stream, purpose: 0 }, i);
  if (!d.bits) return z;
  const qmax = (1 << (d.bits - 1)) - 1, nmax = f(4.85459);
  const step = f(nmax / qmax), inv = f(qmax / nmax);
  const v = f(z * inv), fl = Math.floor(v);
  const up = dirSrAt({ seed: d.seed, stream: d.stream, purpose: d.srPurpose }, i) < f(v - fl);
  return f((up ? fl + 1 : fl) * step);
}

/** z(first .. first + n - 1) from the engine's random streams (checked against dirAt below). */
function zVector(d: Dir, first: number, n: number): F32 {
  const t = Tensor.from(new Float32Array(n));
  rng.fillSync(t, d.dist === 'gaussian' ? 'normal' : 'rademacher', { seed: d.seed, stream: d.stream }, { first });
  const z = t.data() as F32;
  if (d.dist === 'gaussian' && d.bits) {
    // the SR halves of elements first .. first + n - 1 live in word-stream elements srWordIndex(e)
    const w0 = srWordIndex(first - (first % 64)), words = Tensor.from(new Uint32Array((Math.floor((first + n - 1) / 64) + 1) * 32 - w0));
    rng.wordsSync(words, { seed: d.seed, stream: d.stream, purpose: d.srPurpose }, w0);
    const wd = words.data(), qmax = (1 << (d.bits - 1)) - 1, nmax = f(4.85459);
    const step = f(nmax / qmax), inv = f(qmax / nmax);
    for (let i = 0; i < n; i++) {
      const v = f(z[i] * inv), fl = Math.floor(v);
      z[i] = f((dirSrThreshold(wd[srWordIndex(first + i) - w0], first + i) < f(v - fl) ? fl + 1 : fl) * step);
    }
  }
  return z;
}

/** W' = fma(alpha, z, W) on the listed elements (all when indices is undefined). */
function perturbRef(w: F32, d: Dir, alpha: number, first: number, indices?: Uint32Array): F32 {
  const out = Float32Array.from(w), z = zVector(d, first, w.length);
  const a = f(alpha);
  for (const i of indices ?? out.keys()) out[i] = fmaf(a, z[i], out[i]);
  return out;
}

describe.each(paths)('perturb-on-load on the %s path', (path) => {
  beforeAll(() => setCpuPath(path));

  const dirs: Dir[] = [
    { seed: 0x1234567890abn, stream: 3, dist: 'gaussian', bits: 0, srPurpose: 4 },
    { seed: 77n, stream: 1, dist: 'rademacher', bits: 0, srPurpose: 4 },
    { seed: 5n, stream: 9, dist: 'gaussian', bits: 4, srPurpose: 5 },
  ];

  test('the direction helper reproduces direction_at (independent JS Philox/Box-Muller)', () => {
    for (const d of dirs) {
      const z = zVector(d, 999_990, 80);
      for (let i = 0; i < 80; i += 7) expect(z[i]).toBe(dirAt(d, 999_990 + i));
    }
  });

  // GEMV, skinny (8 and 16 lanes) and packed paths; bias, and accumulate on the last shape
  // K = 1100 and 2100: rows cross 1024-element Rademacher blocks, in K slices of a task's sign table
  test.each([[2, 45, 131], [7, 20, 70], [9, 37, 300], [20, 37, 300], [13, 14, 2100], [20, 70, 1100]])('equals the GEMM with explicitly perturbed fp32 weights, bit for bit (M=%i N=%i K=%i)', (M, N, K) => {
    const x = randn(M * K, 1), wf = randn(N * K, 2, 0.05), bias = randn(N, 3);
    const c0 = M === 20 && K === 300 ? randn(M * N, 4) : undefined;
    for (const d of dirs) {
      for (const first of [0, 1000003]) {
        const alpha = 1e-3;
        const got = run(x, M, K, Tensor.from(wf, [N, K]), N, { bias, c0, perturb: { ...d, alpha, first } });
        const want = run(x, M, K, Tensor.from(perturbRef(wf, d, alpha, first), [N, K]), N, { bias, c0 });
        expect(bitsEqual(got, want)).toBe(true);
      }
    }
  });

  test.each([[1, 20, 200], [8, 33, 130], [18, 21, 100]])('quantized weights: equals decode → perturb → fp32 GEMM (M=%i N=%i K=%i)', (M, N, K) => {
    const x = randn(M * K, 4), wf = randn(N * K, 5);
    for (const spec of [QSPECS[0], QSPECS[4], QSPECS[7], QSPECS[10], QSPECS[12]]) {
      const { q, w } = quantize(wf, N, K, spec);
      for (const [d, first] of [[dirs[0], 0], [dirs[1], 0], [dirs[1], 777]] as const) {
        const alpha = -0.01;
        const got = run(x, M, K, q, N, { perturb: { ...d, alpha, first } });
        const want = run(x, M, K, Tensor.from(perturbRef(w, d, alpha, first), [N, K]), N);
        expect(bitsEqual(got, want)).toBe(true);
      }
    }
  });

  test('sparse subset: only listed elements move; equals the dense perturbation masked', () => {
    const M = 7, N = 30, K = 300, x = randn(M * K, 6), wf = randn(N * K, 7);
    const rand = prng(3);
    for (const density of [0.01, 0.3]) {
      const idx = Uint32Array.from(Array.from({ length: N * K }, (_, i) => i).filter(() => rand() < density));
      for (const Mx of [2, M, 24]) {
        const xx = Mx <= M ? x.subarray(0, Mx * K) : randn(Mx * K, 60);
        const got = run(xx, Mx, K, Tensor.from(wf, [N, K]), N, { perturb: { ...dirs[0], alpha: 0.02, indices: idx } });
        const want = run(xx, Mx, K, Tensor.from(perturbRef(wf, dirs[0], 0.02, 0, idx), [N, K]), N);
        expect(bitsEqual(got, want)).toBe(true);
      }
    }
    // tasks of several rows and K slices (a task draws its rows' listed directions once), every
    // direction kind, an offset first; quantized weights too
    const N2 = 70, K2 = 600, x2 = randn(24 * K2, 61), w2 = randn(N2 * K2, 62);
    const idx2 = Uint32Array.from(Array.from({ length: N2 * K2 }, (_, i) => i).filter(() => rand() < 0.02));
    const { q: q2, w: w2q } = quantize(w2, N2, K2, QSPECS[4]);
    for (const d of dirs)
      for (const Mx of [3, 9, 24]) {
        const xx = x2.subarray(0, Mx * K2), p = { ...d, alpha: -0.03, first: 4099, indices: idx2 };
        expect(bitsEqual(run(xx, Mx, K2, Tensor.from(w2, [N2, K2]), N2, { perturb: p }), run(xx, Mx, K2, Tensor.from(perturbRef(w2, d, -0.03, 4099, idx2), [N2, K2]), N2))).toBe(true);
        expect(bitsEqual(run(xx, Mx, K2, q2, N2, { perturb: p }), run(xx, Mx, K2, Tensor.from(perturbRef(w2q, d, -0.03, 4099, idx2), [N2, K2]), N2))).toBe(true);
      }
    // an empty list perturbs nothing
    const none = run(x, M, K, Tensor.from(wf, [N, K]), N, { perturb: { ...dirs[1], alpha: 1, indices: new Uint32Array(0) } });
    expect(bitsEqual(none, run(x, M, K, Tensor.from(wf, [N, K]), N))).toBe(true);
  });

  test('weights are never written: +eps then -eps probes use the original W', () => {
    const M = 8, N = 24, K = 100, x = randn(M * K, 8), wf = randn(N * K, 9);
    const { q } = quantize(wf, N, K, QSPECS[3]);
    const codes = Uint8Array.from(q.data.data() as Uint8Array), wcopy = Float32Array.from(wf);
    const base = run(x, M, K, Tensor.from(wf, [N, K]), N);
    for (const alpha of [1e-3, -1e-3]) {
      run(x, M, K, Tensor.from(wf, [N, K]), N, { perturb: { ...dirs[0], alpha } });
      run(x, M, K, q, N, { perturb: { ...dirs[0], alpha } });
    }
    expect(bitsEqual(wf, wcopy)).toBe(true);
    expect(Buffer.from(q.data.data() as Uint8Array).equals(Buffer.from(codes))).toBe(true);
    expect(bitsEqual(run(x, M, K, Tensor.from(wf, [N, K]), N), base)).toBe(true);
  });
});

describe('determinism', () => {
  test('results do not depend on the thread count (GEMV, GEMM, perturbed)', async () => {
    const cases: [number, number, number][] = [[1, 300, 333], [3, 130, 200], [64, 300, 300]];
    for (const path of paths) {
      setCpuPath(path);
      for (const [M, N, K] of cases) {
        const x = randn(M * K, 1), wf = randn(N * K, 2);
        const { q } = quantize(wf, N, K, { format: 'int4', granularity: 32 });
        for (const w of [Tensor.from(wf, [N, K]), q]) {
          const runs: Float32Array[] = [];
          for (const t of [1, 2, 3]) {
            setThreads(t);
            const out = await matmul(Tensor.from(x, [M, K]), w, { perturb: { seed: 9, alpha: 1e-3 } });
            runs.push(Float32Array.from(out.data() as Float32Array));
            out.dispose();
          }
          expect(bitsEqual(runs[0], runs[1]) && bitsEqual(runs[0], runs[2])).toBe(true);
        }
      }
    }
    setThreads(cpuInfo().threads);
  });
});

describe('API and errors', () => {
  beforeAll(() => setCpuPath('auto'));
  const code = (fn: () => unknown) => { try { fn(); } catch (e) { return (e as { code?: string }).code; } return 'no error'; };

  test('async matmul allocates [..., N] outputs and agrees with the sync call', async () => {
    const x = randn(2 * 3 * 40, 1), w = randn(5 * 40, 2);
    const xt = Tensor.from(x, [2, 3, 40]), wt = Tensor.from(w, [5, 40]);
    const a = await matmul(xt, wt), b = matmulSync(xt, wt);
    expect(a.shape).toEqual([2, 3, 5]);
    expect(bitsEqual(a.data() as Float32Array, b.data() as Float32Array)).toBe(true);
    a.dispose(); b.dispose();
  });

  test('shape and dtype errors carry codes', () => {
    const x = Tensor.from(new Float32Array(12), [3, 4]), w = Tensor.from(new Float32Array(20), [5, 4]);
    expect(code(() => matmulSync(Tensor.from(new Float64Array(12), [3, 4]), w))).toBe('ZOTUNE_DTYPE');
    expect(code(() => matmulSync(x, Tensor.from(new Int32Array(20), [5, 4])))).toBe('ZOTUNE_DTYPE');
    expect(code(() => matmulSync(x, Tensor.from(new Float32Array(15), [5, 3])))).toBe('ZOTUNE_SHAPE_MISMATCH');
    expect(code(() => matmulSync(x, w, { bias: Tensor.from(new Float32Array(4)) }))).toBe('ZOTUNE_SHAPE_MISMATCH');
    expect(code(() => matmulSync(x, w, { out: Tensor.from(new Float32Array(14)) }))).toBe('ZOTUNE_SHAPE_MISMATCH');
    expect(code(() => matmulSync(x, w, { accumulate: true }))).toBe('ZOTUNE_INVALID_ARGUMENT');
    const { q } = quantize(new Float32Array(15).fill(1), 5, 3, { format: 'int8', granularity: 'channel' });
    expect(code(() => matmulSync(x, q))).toBe('ZOTUNE_SHAPE_MISMATCH');
    const disposed = Tensor.zeros([5, 4]);
    disposed.dispose();
    expect(code(() => matmulSync(x, disposed))).toBe('ZOTUNE_DISPOSED');
  });

  test('perturbation arguments are validated before anything runs', () => {
    const x = Tensor.from(new Float32Array(24), [6, 4]), wf = new Float32Array(20).fill(1), w = Tensor.from(wf, [5, 4]);
    const out = Tensor.from(new Float32Array(30).fill(7), [6, 5]);
    const p = (extra: Partial<MatmulPerturb>) => () => matmulSync(x, w, { out, perturb: { seed: 1, alpha: 0.1, ...extra } });
    expect(code(p({ alpha: NaN }))).toBe('ZOTUNE_NONFINITE');
    expect(code(p({ alpha: 1e39 }))).toBe('ZOTUNE_NONFINITE');
    expect(code(p({ dist: 'cauchy' as 'gaussian' }))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(code(p({ bits: 1 }))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(code(p({ bits: 4, srPurpose: 0 }))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(code(p({ indices: Uint32Array.of(3, 2) }))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(code(p({ indices: Uint32Array.of(2, 2) }))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(code(p({ indices: Uint32Array.of(1, 20) }))).toBe('ZOTUNE_OUT_OF_RANGE');
    expect(code(p({ indices: Int32Array.of(1) as unknown as Uint32Array }))).toBe('ZOTUNE_DTYPE');
    expect(Array.from(out.data())).toEqual(new Array(30).fill(7)); // untouched
  });

  test('async errors reject with codes; the raw op checks regions and overlap', async () => {
    const x = Tensor.from(new Float32Array(12), [3, 4]);
    await expect(matmul(x, Tensor.from(new Float32Array(20), [5, 4]), { perturb: { seed: 1, alpha: 0.1, indices: Uint32Array.of(99) } })).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    const { native } = await import('../lib/native/load');
    const buf = new Float32Array(64);
    expect(code(() => native().gemm(buf, 0, 4, 4, buf, 200, 4, new Float32Array(16), 0, null, 0, false))).toBe('ZOTUNE_OUT_OF_RANGE');
    expect(code(() => native().gemm(buf, 2, 2, 2, new Float32Array(4), 0, 2, new Float32Array(4), 0, null, 0, false))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(code(() => native().gemm(buf, 0, 2, 2, new Float32Array(4), 0, 2, buf, 0, null, 0, false))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(code(() => native().gemm(new Float64Array(4), 0, 2, 2, new Float32Array(4), 0, 2, new Float32Array(4), 0, null, 0, false))).toBe('ZOTUNE_DTYPE');
  });

  test('QTensor descriptors are validated natively', () => {
    const { native } = require('../lib/native/load');
    const { q } = quantize(new Float32Array(64).fill(0.5), 4, 16, { format: 'int4', granularity: 'channel' });
    const d = q.desc();
    const call = (desc: object) => () => native().gemm(new Float32Array(16), 0, 1, 16, desc, 0, 4, new Float32Array(4), 0, null, 0, false);
    expect(code(call(d))).toBe('no error');
    expect(code(call({ ...d, rows: 2 }))).toBe('ZOTUNE_SHAPE_MISMATCH');
    expect(code(call({ ...d, data: new Uint8Array(3) }))).toBe('ZOTUNE_OUT_OF_RANGE');
    expect(code(call({ ...d, group: 48 }))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(code(call({ ...d, format: 42 }))).toBe('ZOTUNE_INVALID_ARGUMENT');
  });
});
