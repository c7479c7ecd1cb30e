import { cpuInfo, gemmS8S8S32, gemmS8S8S32Sync, matmulInt8, matmulInt8Sync, QTensor, setCpuPath, setThreads, Tensor } from '../lib';
import type { Granularity } from '../lib/qtensor';
import { native } from '../lib/native/load';
import { prng } from './helpers/reference';
import { cpuPaths } from './helpers/paths';
import {
  Dir, IntWeights, dequantActs, directionTable, gridProbeOnInt, nmse, quantizeActs, randn, randomWeights, ref64, refGridProbeGemm, refIntGemm, refPerturbedGemm,
  refSparseGemm, toQTensor,
} from './helpers/int-gemm';

const { avx2 } = cpuInfo();
// the integer GEMM also has an AVX-512 VNNI path (its packed micro-kernel)
const paths = cpuPaths('gemm-int8');

afterAll(() => {
  setCpuPath('auto');
  setThreads(cpuInfo().threads);
});

const bits = (a: Float32Array | Int32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const copy = (t: Tensor) => Float32Array.from(t.data() as Float32Array);

function expectSameBits(got: Float32Array, want: Float32Array, what: string) {
  if (bits(got).equals(bits(want))) return;
  let i = 0;
  while (Object.is(got[i], want[i]) || got[i] === want[i]) i++;
  throw new Error(`${what}: element ${i} is ${got[i]}, reference ${want[i]}`);
}

// M = 1..4 take the streaming GEMV (on the avx512 path up to 8 for int4, 12 for int8), larger M the
// packed GEMM; odd N and K exercise every edge.
const SHAPES: [number, number, number][] = [
  [1, 1, 1], [1, 33, 100], [2, 17, 63], [3, 5, 64], [4, 20, 129], [5, 16, 64], [7, 31, 257], [8, 3, 200], [9, 21, 131],
  [12, 18, 320], [13, 7, 65], [17, 19, 130], [37, 40, 96],
];

describe.each(paths)('exact int8 x int8 -> int32 on the %s path', (path) => {
  beforeAll(() => setCpuPath(path));

  test.each(SHAPES.concat([[9, 3, 0], [6, 50, 1000]]))('M=%i N=%i K=%i, full-range data', (M, N, K) => {
    const rand = prng(M * 1000 + N * 10 + K);
    const A = Int8Array.from({ length: M * K }, () => -127 + Math.floor(rand() * 255));
    const B = Int8Array.from({ length: N * K }, () => -128 + Math.floor(rand() * 256));
    const c = gemmS8S8S32Sync(Tensor.from(A, [M, K]), Tensor.from(B, [N, K]));
    const got = c.data() as Int32Array;
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += A[m * K + k] * B[n * K + k];
        if (got[m * N + n] !== s) throw new Error(`c[${m}, ${n}] = ${got[m * N + n]}, want ${s}`);
      }
    c.dispose();
  });

  test('extreme values never saturate vpmaddubsw pair sums', () => {
    // a = ±127 against b = -128 / 127: every pair sum is ±32512 or ±32258, the largest possible.
    for (const [M, N, K] of [[1, 8, 512], [8, 16, 512]]) {
      const A = Int8Array.from({ length: M * K }, (_, i) => (i % 3 === 0 ? -127 : 127));
      const B = Int8Array.from({ length: N * K }, (_, i) => (i % 5 < 2 ? -128 : 127));
      const got = gemmS8S8S32Sync(Tensor.from(A, [M, K]), Tensor.from(B, [N, K])).data();
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += A[m * K + k] * B[n * K + k];
          expect(got[m * N + n]).toBe(s);
        }
    }
  });
});

const W8_GRAN: Granularity[] = ['channel', 'tensor', 32, 64, 128];
const W4_CASES: [Granularity, boolean][] = [[32, false], [64, true], [128, false], [32, true], ['channel', false], ['tensor', true]];

describe.each(paths)('int8 matmul on the %s path equals the canonical reference bit for bit', (path) => {
  beforeAll(() => setCpuPath(path));

  const run = (w: IntWeights, M: number, seed: number, epi: boolean) => {
    const rand = prng(seed);
    const x = randn(rand, M * w.K, 2);
    const bias = epi ? randn(rand, w.N) : undefined, residual = epi ? randn(rand, M * w.N) : undefined;
    const out = Tensor.fromArray(new Float32Array(M * w.N).fill(NaN), [M, w.N]); // poison: every element must be written
    const qw = toQTensor(w);
    matmulInt8Sync(Tensor.from(x, [M, w.K]), qw, {
      out, bias: bias && Tensor.from(bias), residual: residual && Tensor.from(residual, [M, w.N]),
    });
    expectSameBits(copy(out), refIntGemm(x, M, w, { bias, residual }), `${w.format} ${w.granularity} M=${M} N=${w.N} K=${w.K}`);
    out.dispose();
    qw.dispose();
  };

  test.each(W8_GRAN)('W8A8, %s scales, every shape', (gran) => {
    SHAPES.forEach(([M, N, K], i) => {
      if (typeof gran === 'number' && K === 0) return;
      const w = randomWeights(prng(i + 7), 'int8', N, K, gran, { lo: -128 });
      run(w, M, i * 31 + 1, i % 2 === 0);
    });
  });

  test.each(W4_CASES)('W4A8, %s scales, asymmetric=%s, every shape', (gran, asym) => {
    SHAPES.forEach(([M, N, K], i) => {
      const w = randomWeights(prng(i + 11), 'int4', N, K, gran, { asym });
      run(w, M, i * 17 + 3, i % 2 === 1);
    });
  });

  // The streaming GEMV (M <= 4) works in 64-element steps, 8 (int4) or 4 (int8) weight rows per pass,
  // scales flushed in blocks of 64 groups (4 or 8 at a time) and the next pass's rows prefetched:
  // K past several flush blocks with a partial last step, N leaving a partial row set.
  test.each([[32, false], [32, true], [64, false], [64, true], [128, false], [128, true], ['channel', false]] as [Granularity, boolean][])(
    'W4A8 GEMV, long rows: group %s, asymmetric=%s', (gran, asym) => {
      const shapes: [number, number, number][] = [[1, 21, 4096 + 32 * 5 + 17], [2, 13, 2048 + 64 * 3 + 5], [4, 9, 4096 + 63], [6, 5, 2048 + 64 + 9], [8, 4, 1024 + 31]];
      shapes.forEach(([M, N, K], i) => {
        const w = randomWeights(prng(100 + i), 'int4', N, K, gran, { asym });
        run(w, M, 300 + i, i === 1);
      });
    });

  // The AVX-512 GEMV takes 16 / M weight rows per block (M <= 12) and one vpdpbusd per
  // 64-element chunk, the last chunk a masked load; per-channel int8 sums run in kAccChunk groups (two here).
  test.each([[64], [128], ['channel']] as [Granularity][])('W8A8 GEMV, long rows: group %s', (gran) => {
    const shapes: [number, number, number][] = [[1, 37, 4096 + 64 * 3 + 17], [3, 11, 2048 + 5], [4, 6, gran === 'channel' ? 65536 + 100 : 4096 + 63], [7, 5, 2048 + 64 + 3], [11, 3, 4096 + 1], [12, 4, 1024 + 64]];
    shapes.forEach(([M, N, K], i) => {
      const w = randomWeights(prng(200 + i), 'int8', N, K, gran, { lo: -128 });
      run(w, M, 400 + i, i === 0);
    });
  });

  test('W4A8 GEMV: extreme codes and activations stay exact (int16 sums of the reduction tree)', () => {
    // nibbles 15 (a few 0) against activations all +127 (row 0) or all -127 (row 1): the int16 lanes
    // of the reduction tree reach their largest sums (4 lanes of 7620); unit scales and absmax 127
    // make the result the integer itself
    for (const gran of [32, 64, 128, 'channel'] as Granularity[]) {
      const M = 2, N = 11, K = 1024 + 64, rand = prng(9);
      const w = randomWeights(rand, 'int4', N, K, gran, { unitScales: true });
      for (let i = 0; i < N * K; i++) {
        w.raw[i] = i % 7 === 3 ? 0 : 15;
        w.codes[i] = w.raw[i] - 8;
      }
      const x = new Float32Array(M * K).map((_, i) => (i < K ? 127 : -127));
      const y = matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w)).data();
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += x[m * K + k] * w.codes[n * K + k];
          expect(y[m * N + n]).toBe(s);
        }
      expectSameBits(copy(matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w))), refIntGemm(x, M, w), `extreme ${gran}`);
    }
  });

  test('per-row scales with K beyond one accumulation chunk (65536): chunks are scaled in order', () => {
    for (const [fmt, M] of [['int8', 1], ['int4', 5]] as const) {
      const K = 65536 + 77, N = 2, rand = prng(M);
      const w = randomWeights(rand, fmt, N, K, 'channel');
      const x = new Float32Array(M * K).map(() => rand() * 4 - 2);
      const y = copy(matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w)));
      expectSameBits(y, refIntGemm(x, M, w), `${fmt} M=${M} K=${K}`);
    }
  });

  test('K = 0: the output is the bias (every path)', () => {
    const w: IntWeights = { format: 'int8', N: 3, K: 0, granularity: 'tensor', codes: new Int32Array(0), raw: new Int32Array(0), scales: new Float32Array([2]), group: 0 };
    const bias = Float32Array.from([0.5, -1, 2]);
    for (const M of [1, 9]) {
      for (const perturb of [undefined, { alpha: 1, seed: 3 }]) {
        const out = Tensor.fromArray(new Float32Array(M * 3).fill(NaN), [M, 3]);
        matmulInt8Sync(Tensor.zeros([M, 0]), toQTensor(w), { out, bias: Tensor.from(bias), perturb });
        expect(Array.from(out.data())).toEqual(Array.from({ length: M * 3 }, (_, i) => bias[i % 3]));
      }
    }
  });

  test('exact integers through the float API (unit scales, integer activations with absmax 127)', () => {
    for (const [M, N, K, fmt] of [[1, 9, 300, 'int8'], [3, 7, 77, 'int4'], [11, 21, 300, 'int8'], [6, 18, 200, 'int4']] as const) {
      const rand = prng(M + N + K);
      const w = randomWeights(rand, fmt, N, K, 'channel', { unitScales: true });
      const x = new Float32Array(M * K).map(() => -127 + Math.floor(rand() * 255));
      for (let m = 0; m < M; m++) x[m * K + (m % K)] = 127; // row absmax 127 -> activation scale exactly 1
      const y = matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w)).data();
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += x[m * K + k] * w.codes[n * K + k];
          expect(Math.abs(s)).toBeLessThan(2 ** 24); // so the float result is the integer itself
          expect(y[m * N + n]).toBe(s);
        }
    }
  });
});

describe('accuracy against float64', () => {
  // Documented bounds (README): vs the float64 product of the *dequantized* operands the only error
  // is float32 rounding of the group sums (NMSE <= 1e-12); vs the unquantized activations the
  // int8 activation rounding dominates: NMSE ~ s_x^2 / (12 E[x^2]), below 3e-4 for Gaussian rows.
  test.each([['int8', 'channel'], ['int8', 32], ['int4', 32], ['int4', 128]] as const)('%s weights, %s scales', (fmt, gran) => {
    const M = 9, N = 37, K = 512, rand = prng(5);
    const w = randomWeights(rand, fmt, N, K, gran, { asym: fmt === 'int4' });
    const x = randn(rand, M * K);
    const y = matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w)).data();
    expect(nmse(y, ref64(dequantActs(quantizeActs(x, M, K), M, K), M, w))).toBeLessThan(1e-12);
    expect(nmse(y, ref64(x, M, w))).toBeLessThan(3e-4);
  });
});

describe('invariance', () => {
  test('GEMV sizes with groups of 32 (two groups per 64-element chunk of the VNNI GEMV): every path agrees', () => {
    if (!avx2) return;
    const rand = prng(32);
    for (const [fmt, asym] of [['int8', false], ['int4', false], ['int4', true]] as const)
      for (const K of [32, 96, 200, 1000])
        for (const M of [1, 2, 5, 8, 12]) {
          const N = 37, w = toQTensor(randomWeights(rand, fmt, N, K, 32, { asym }));
          const x = Tensor.from(randn(rand, M * K), [M, K]);
          const outs = paths.map((p) => {
            setCpuPath(p);
            return copy(matmulInt8Sync(x, w));
          });
          for (let i = 1; i < paths.length; i++) expectSameBits(outs[i], outs[0], `${paths[i]} vs scalar (${fmt}${asym ? ' asym' : ''} g32, M = ${M}, K = ${K})`);
        }
    setCpuPath('auto');
  });

  test('activation codes at exact halves, odd row lengths and tiny rows: every path rounds to nearest even like the reference', () => {
    // identity int8 weights (scale 1) make y[m][n] = s_x[m] * q_x[m][n]: the codes themselves
    for (const K of [37, 69, 256 + 15]) {
      const rows: number[][] = [];
      const halves = (sign: number, off: number) => Array.from({ length: K }, (_, k) => (k === 0 ? 127 : sign * (((k + off) % 127) + 0.5)));
      rows.push(halves(1, 0), halves(-1, 3), new Array(K).fill(0));
      rows.push(Array.from({ length: K }, (_, k) => (k === K - 1 ? -254 : (k % 7) - 3)));  // amax in the tail lanes, s = 2: odd codes at halves
      rows.push(Array.from({ length: K }, (_, k) => (k % 5 === 0 ? 1e-40 : 3e-41 * k)));  // subnormal row: the minimum scale
      for (let m = rows.length; m < 14; m++) rows.push(Array.from({ length: K }, (_, k) => Math.sin(7 * m + k) * 10 ** (m - 7)));
      const M = rows.length, x = Float32Array.from(rows.flat());
      const codes = Tensor.empty([K * K], 'i8', 'weights');
      const c = codes.data() as Int8Array;
      c.fill(0);
      for (let n = 0; n < K; n++) c[n * K + n] = 1;
      const w = new QTensor('int8', [K, K], 'channel', codes, Tensor.fromArray(new Float32Array(K).fill(1), [K], 'f32', 'weights'));
      const ref = quantizeActs(x, M, K);
      for (const rowsUsed of [M, 12, 3]) {  // the packed GEMM and the GEMVs
        const xs = Tensor.from(x.subarray(0, rowsUsed * K), [rowsUsed, K]);
        const outs = paths.map((p) => {
          setCpuPath(p);
          return copy(matmulInt8Sync(xs, w));
        });
        for (let i = 1; i < paths.length; i++) expectSameBits(outs[i], outs[0], `${paths[i]} vs scalar (K = ${K}, M = ${rowsUsed})`);
        for (let m = 0; m < Math.min(rowsUsed, 4); m++)  // rows with normal scales: the float64 reference's codes
          for (let n = 0; n < K; n++) expect(outs[0][m * K + n]).toBe(Math.fround(ref.q[m * K + n] * ref.s[m]));
      }
      setCpuPath('auto');
    }
  });

  test('every path (scalar, AVX2, AVX-512 VNNI where present) agrees on a larger problem, every mode', () => {
    if (!avx2) return;
    const rand = prng(77);
    const M = 45, N = 70, K = 300;
    const x = Tensor.from(randn(rand, M * K), [M, K]);
    const cases: [IntWeights, Dir | undefined][] = [
      [randomWeights(rand, 'int8', N, K, 'channel'), undefined],
      [randomWeights(rand, 'int4', N, K, 64, { asym: true }), undefined],
      [randomWeights(rand, 'int8', N, K, 32), { seed: 3n, stream: 4, dist: 'gaussian', bits: 0, srPurpose: 4 }],
      [randomWeights(rand, 'int4', N, K, 128), { seed: 5n, stream: 1, dist: 'rademacher', bits: 0, srPurpose: 4 }],
      [randomWeights(rand, 'int4', N, K, 32, { asym: true }), { seed: 6n, stream: 2, dist: 'gaussian', bits: 4, srPurpose: 4 }],
      [randomWeights(rand, 'int8', N, K, 'channel'), { seed: 8n, stream: 3, dist: 'gaussian', bits: 8, srPurpose: 5 }],
      [randomWeights(rand, 'int8', N, K, 32), { seed: 9n, stream: 5, dist: 'gaussian', bits: 4, srPurpose: 4 }],
    ];
    for (const [w, d] of cases) {
      const qw = toQTensor(w);
      const outs = paths.map((p) => {
        setCpuPath(p);
        const perturb = d && { alpha: 1e-3, seed: d.seed, stream: d.stream, dist: d.dist, bits: d.bits, srPurpose: d.srPurpose === 4 ? ('probe' as const) : ('update' as const) };
        return copy(matmulInt8Sync(x, qw, { perturb }));
      });
      for (let i = 1; i < paths.length; i++) expectSameBits(outs[i], outs[0], `${paths[i]} vs scalar`);
    }
    // int8 QuZO probes on the integer path beyond the GEMV sizes
    const w8 = toQTensor(randomWeights(rand, 'int8', N, K, 'channel'));
    for (const M of [12, 70]) {
      const xs = Tensor.from(randn(rand, M * K), [M, K]);
      const outs = paths.map((p) => {
        setCpuPath(p);
        return copy(matmulInt8Sync(xs, w8, { perturb: { alpha: 1e-3, seed: 10n, stream: 6, dist: 'gaussian', bits: 3 } }));
      });
      for (let i = 1; i < paths.length; i++) expectSameBits(outs[i], outs[0], `${paths[i]} vs scalar (int8 QuZO probe, M = ${M})`);
    }
    setCpuPath('auto');
  });

  test('results do not depend on the thread count (GEMV, GEMM, perturbed, sparse, QuZO integer probe)', async () => {
    const rand = prng(99);
    const w = randomWeights(rand, 'int8', 100, 200, 64);
    const qw = toQTensor(w);
    const idx = Tensor.fromArray(Uint32Array.from({ length: 300 }, (_, i) => i * 61 + (i % 7)), [300], 'u32');
    for (const M of [1, 3, 70]) {
      const x = Tensor.from(randn(rand, M * 200), [M, 200]);
      const variants = [{}, { perturb: { alpha: 0.01, seed: 1 } }, { perturb: { alpha: 0.01, seed: 1, indices: idx } }, { perturb: { alpha: 0.01, seed: 1, bits: 4 } }];
      for (const opts of variants) {
        const runs: Float32Array[] = [];
        for (const t of [1, 2, 3]) {
          setThreads(t);
          runs.push(copy(await matmulInt8(x, qw, opts)));
        }
        expectSameBits(runs[1], runs[0], `M=${M} 2 threads`);
        expectSameBits(runs[2], runs[0], `M=${M} 3 threads`);
      }
    }
    setThreads(cpuInfo().threads);
  });
});

describe.each(paths)('perturb-on-load on the %s path', (path) => {
  beforeAll(() => setCpuPath(path));

  const dirs: Dir[] = [
    { seed: 0x1234567890abn, stream: 3, dist: 'gaussian', bits: 0, srPurpose: 4 },
    { seed: 7n, stream: 0, dist: 'rademacher', bits: 0, srPurpose: 4 },
    { seed: 99n, stream: 12, dist: 'gaussian', bits: 4, srPurpose: 5 },
  ];
  const perturbOf = (d: Dir, alpha: number) => ({
    alpha, seed: d.seed, stream: d.stream, dist: d.dist, bits: d.bits, srPurpose: d.srPurpose === 4 ? ('probe' as const) : ('update' as const),
  });

  test.each(dirs.map((d) => [d.dist, d.bits, d] as const))('dense %s bits=%i equals the explicit perturbed product', (_dist, _b, d) => {
    // K = 1100: rows cross 1024-element Rademacher blocks (a task's sign table read in K blocks)
    for (const [M, N, K, fmt, gran] of [[1, 9, 200, 'int8', 'channel'], [8, 17, 70, 'int4', 32], [13, 16, 130, 'int8', 64], [20, 70, 1100, 'int4', 'channel']] as const) {
      const rand = prng(M * N + K);
      const w = randomWeights(rand, fmt, N, K, gran, { asym: fmt === 'int4' });
      const x = randn(rand, M * K), bias = randn(rand, N);
      const alpha = 1e-2;
      const out = Tensor.fromArray(new Float32Array(M * N).fill(NaN), [M, N]); // poison
      const y = copy(matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w), { out, bias: Tensor.from(bias), perturb: perturbOf(d, alpha) }));
      const z = directionTable(d, N * K);
      // QuZO (grid) probes of <= 4 bits take the integer path (step 2'), the others the f32 path
      const onInt = gridProbeOnInt(d);
      const canonical = onInt ? refGridProbeGemm(x, M, w, z, alpha, d, { bias }) : refPerturbedGemm(x, M, w, z, alpha, { bias });
      expectSameBits(y, canonical, `perturbed ${fmt} M=${M}`);
      // and within the documented bound of the float64 explicit perturb-then-GEMM (same activations)
      const xq = dequantActs(quantizeActs(x, M, K), M, K);
      const y64 = ref64(xq, M, w, (i) => z[i], alpha).map((v, i) => v + bias[i % N]);
      expect(nmse(y, y64)).toBeLessThan(1e-11);
      if (onInt) expect(nmse(y, refPerturbedGemm(x, M, w, z, alpha, { bias }))).toBeLessThan(1e-11); // the f32 path's result
    }
  });

  test('QuZO grid probes: the integer path at every M for <= 4 bits (GEMV sizes too, K over one chunk), the f32 path beyond', () => {
    const cases = [
      [1, 5, 33, 'int8', 'channel', 4], [3, 16, 64, 'int4', 32, 4], [4, 33, 100, 'int4', 64, 2], [16, 17, 257, 'int8', 32, 3],
      [29, 18, 130, 'int4', 128, 3], [48, 7, 64, 'int4', 'channel', 4], [2, 1, 65600, 'int8', 'channel', 4],
      [17, 9, 64, 'int8', 'channel', 4], [49, 6, 96, 'int4', 32, 4], [70, 21, 200, 'int8', 64, 2], [100, 19, 300, 'int4', 32, 4],
      // f32 path: more than 4 bits
      [6, 10, 70, 'int8', 32, 8], [60, 10, 70, 'int4', 32, 5],
    ] as const;
    for (const [M, N, K, fmt, gran, b] of cases) {
      const rand = prng(M * 1000 + N + K);
      const w = randomWeights(rand, fmt, N, K, gran, { asym: fmt === 'int4' && M % 2 === 1 });
      const x = randn(rand, M * K), residual = randn(rand, M * N);
      const d: Dir = { seed: BigInt(M + 7), stream: N, dist: 'gaussian', bits: b, srPurpose: 4 };
      const alpha = 3e-3;
      const out = Tensor.fromArray(new Float32Array(M * N).fill(NaN), [M, N]); // poison
      const y = copy(matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w), { out, residual: Tensor.from(residual, [M, N]), perturb: perturbOf(d, alpha) }));
      const z = directionTable(d, N * K);
      const onInt = gridProbeOnInt(d);
      const want = onInt ? refGridProbeGemm(x, M, w, z, alpha, d, { residual }) : refPerturbedGemm(x, M, w, z, alpha, { residual });
      expectSameBits(y, want, `${fmt} M=${M} K=${K} bits=${b}`);
      // documented bounds: float64 x_q·(W + alpha·Z)ᵀ (NMSE 1e-11, float32 rounding only); float64
      // with the unquantized activations (1e-3: the int8 activation rounding, ~s_x^2 / (12 E[x^2])
      // per element, for few short rows); the f32 path (1e-11)
      const xq = dequantActs(quantizeActs(x, M, K), M, K);
      expect(nmse(y, ref64(xq, M, w, (i) => z[i], alpha).map((v, i) => v + residual[i]))).toBeLessThan(1e-11);
      expect(nmse(y, ref64(x, M, w, (i) => z[i], alpha).map((v, i) => v + residual[i]))).toBeLessThan(1e-3);
      if (onInt && K < 1000) expect(nmse(y, refPerturbedGemm(x, M, w, z, alpha, { residual }))).toBeLessThan(1e-11);
    }
  });

  test('index subsets: small (integer path + correction) and dense (masked f32 path)', () => {
    const M = 6, N = 24, K = 130, rand = prng(3);
    const w = randomWeights(rand, 'int8', N, K, 32);
    const x = randn(rand, M * K);
    const d = dirs[0], alpha = 0.05;
    const sparse = [5, 131, 132, 1000, 2000, 2599, N * K - 1];
    const dense = Array.from({ length: N * K }, (_, i) => i).filter((i) => i % 3 !== 1);
    for (const [subset, small] of [[sparse, true], [dense, false]] as const) {
      const indices = Tensor.fromArray(Uint32Array.from(subset), [subset.length], 'u32');
      const out = Tensor.fromArray(new Float32Array(M * N).fill(NaN), [M, N]); // poison
      const bias = randn(rand, N), residual = randn(rand, M * N);
      const y = copy(matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w), {
        out, bias: Tensor.from(bias), residual: Tensor.from(residual, [M, N]), perturb: { ...perturbOf(d, alpha), indices },
      }));
      const set = new Set<number>(subset), z = directionTable(d, N * K);
      const zm = z.slice(0, N * K).map((v, i) => (set.has(i) ? v : 0));
      const epi = { bias, residual };
      const want = small ? refSparseGemm(x, M, w, z, alpha, subset, epi) : refPerturbedGemm(x, M, w, z, alpha, epi, set);
      expectSameBits(y, want, small ? 'small subset' : 'dense subset');
      const xq = dequantActs(quantizeActs(x, M, K), M, K);
      const y64 = ref64(xq, M, w, (i) => zm[i], alpha).map((v, i) => v + bias[i % N] + residual[i]);
      expect(nmse(y, y64)).toBeLessThan(1e-11);
    }
  });

  test('first offsets the direction index; indices may be a Uint32Array; srPurpose may be a Purpose code', () => {
    const M = 7, N = 9, K = 40, rand = prng(21);
    const w = randomWeights(rand, 'int8', N, K, 'channel');
    const x = randn(rand, M * K);
    const d = dirs[2], alpha = 0.02, first = 1000;
    const z = directionTable(d, first + N * K).slice(first);
    const y = copy(matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w), { perturb: { ...perturbOf(d, alpha), srPurpose: 5, first } }));
    expectSameBits(y, refGridProbeGemm(x, M, w, z, alpha, d), 'first offset (integer path, M = 7)');
    const subset = [3, 77, 200, 359];
    const ys = copy(matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w), { perturb: { ...perturbOf(d, alpha), first, indices: Uint32Array.from(subset) } }));
    expectSameBits(ys, refSparseGemm(x, M, w, z, alpha, subset), 'first offset, Uint32Array subset');
    // Rademacher on the integer path: a first that is not a multiple of 8 (the sign table's byte groups)
    const r = dirs[1], rfirst = 1029;
    const zr = directionTable(r, rfirst + N * K).slice(rfirst);
    const yr = copy(matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w), { perturb: { ...perturbOf(r, alpha), first: rfirst } }));
    expectSameBits(yr, refGridProbeGemm(x, M, w, zr, alpha, r), 'first offset, Rademacher (integer path)');
    // and with a subset, the f32 path: each row's signs drawn from an unaligned element
    const rsub = Array.from({ length: 180 }, (_, i) => 2 * i);  // dense enough for the masked f32 path
    const yrs = copy(matmulInt8Sync(Tensor.from(x, [M, K]), toQTensor(w), { perturb: { ...perturbOf(r, alpha), first: rfirst, indices: Uint32Array.from(rsub) } }));
    expectSameBits(yrs, refPerturbedGemm(x, M, w, zr, alpha, {}, new Set(rsub)), 'first offset, Rademacher subset (f32 path)');
  });

  test('probes never write the weights: +alpha then -alpha leaves W bit-identical and brackets y', () => {
    const M = 20, N = 32, K = 96, rand = prng(8);
    const w = randomWeights(rand, 'int4', N, K, 32, { asym: true });
    const qw = toQTensor(w);
    const snap = (t: Tensor) => {
      const d = t.data();
      return Buffer.from(new Uint8Array(d.buffer, d.byteOffset, d.byteLength).slice());
    };
    const before = [qw.data, qw.scales!, qw.zeros!].map(snap);
    const x = Tensor.from(randn(rand, M * K), [M, K]);
    const y0 = copy(matmulInt8Sync(x, qw));
    const p = { alpha: 1e-3, seed: 42 };
    const yp = copy(matmulInt8Sync(x, qw, { perturb: p }));
    const ym = copy(matmulInt8Sync(x, qw, { perturb: { ...p, alpha: -1e-3 } }));
    const after = [qw.data, qw.scales!, qw.zeros!].map(snap);
    after.forEach((b, i) => expect(b.equals(before[i])).toBe(true));
    expect(bits(copy(matmulInt8Sync(x, qw))).equals(bits(y0))).toBe(true);
    // (y+ + y-) / 2 is the unperturbed product up to float32 rounding of the f32 path
    const mid = yp.map((v, i) => (v + ym[i]) / 2);
    expect(nmse(mid, y0)).toBeLessThan(1e-10);
    expect(nmse(yp, y0)).toBeGreaterThan(1e-10); // the probe did move y
  });

  test('accumulate adds into out, perturbed or not', async () => {
    const M = 5, N = 16, K = 64, rand = prng(12);
    const w = randomWeights(rand, 'int8', N, K, 'channel');
    const x = randn(rand, M * K), r0 = randn(rand, M * N);
    for (const perturb of [undefined, { alpha: 0.1, seed: 9 }]) {
      const out = Tensor.fromArray(r0, [M, N]);
      await matmulInt8(Tensor.from(x, [M, K]), toQTensor(w), { out, accumulate: true, perturb });
      const want = perturb
        ? refPerturbedGemm(x, M, w, directionTable({ seed: 9n, stream: 0, dist: 'gaussian', bits: 0, srPurpose: 4 }, N * K), 0.1, { residual: r0 })
        : refIntGemm(x, M, w, { residual: r0 });
      expectSameBits(copy(out), want, 'accumulate');
    }
  });
});

describe('bad input gets a coded error', () => {
  const w8 = () => toQTensor(randomWeights(prng(1), 'int8', 4, 8, 'channel'));
  const code = (c: string) => expect.objectContaining({ code: c });

  test('dtypes and shapes', () => {
    const w = w8();
    expect(() => matmulInt8Sync(Tensor.zeros([2, 8], 'i32'), w)).toThrow(code('ZOTUNE_DTYPE'));
    expect(() => matmulInt8Sync(Tensor.zeros([2, 7]), w)).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    expect(() => matmulInt8Sync(Tensor.zeros([2, 8]), w, { bias: Tensor.zeros([3]) })).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    expect(() => matmulInt8Sync(Tensor.zeros([2, 8]), w, { out: Tensor.zeros([2, 5]) })).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    expect(() => matmulInt8Sync(Tensor.zeros([2, 8]), w, { accumulate: true })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const nf4 = new QTensor('nf4', [4, 8], 'channel', Tensor.zeros([16], 'u8'), Tensor.zeros([4]));
    expect(() => matmulInt8Sync(Tensor.zeros([2, 8]), nf4)).toThrow(code('ZOTUNE_DTYPE'));
    expect(() => gemmS8S8S32Sync(Tensor.zeros([2, 3], 'i8'), Tensor.zeros([2, 4], 'i8'))).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
  });

  test('values: NaN activations, NaN alpha, bad direction, -128 in a, zero-points > 15', async () => {
    const w = w8();
    const x = Tensor.zeros([2, 8]);
    (x.data() as Float32Array)[5] = NaN;
    expect(() => matmulInt8Sync(x, w)).toThrow(code('ZOTUNE_NONFINITE'));
    await expect(matmulInt8(x, w)).rejects.toMatchObject({ code: 'ZOTUNE_NONFINITE' });
    (x.data() as Float32Array)[5] = Infinity;
    expect(() => matmulInt8Sync(x, w)).toThrow(code('ZOTUNE_NONFINITE'));
    const ok = Tensor.zeros([2, 8]);
    expect(() => matmulInt8Sync(ok, w, { perturb: { alpha: NaN, seed: 1 } })).toThrow(code('ZOTUNE_NONFINITE'));
    expect(() => matmulInt8Sync(ok, w, { perturb: { alpha: 1, seed: 1, bits: 1 } })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => matmulInt8Sync(ok, w, { perturb: { alpha: 1, seed: 1, dist: 'cauchy' as never } })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => matmulInt8Sync(ok, w, { perturb: { alpha: 1, seed: -1 } })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const a = Tensor.fromArray([1, -128, 3], [1, 3], 'i8');
    expect(() => gemmS8S8S32Sync(a, Tensor.zeros([2, 3], 'i8'))).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    await expect(gemmS8S8S32(a, Tensor.zeros([2, 3], 'i8'))).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    const w4 = randomWeights(prng(2), 'int4', 4, 64, 32, { asym: true });
    const q4 = toQTensor(w4);
    (q4.zeros!.data() as Uint8Array)[3] = 16;
    expect(() => matmulInt8Sync(Tensor.zeros([1, 64]), q4)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
  });

  test('index subsets: out of range, not increasing, wrong dtype; y untouched', () => {
    const w = w8();
    const out = Tensor.fromArray(new Float32Array(8).fill(7), [2, 4]);
    const run = (indices: Tensor) => () => matmulInt8Sync(Tensor.zeros([2, 8]), w, { out, perturb: { alpha: 1, seed: 1, indices } });
    expect(run(Tensor.fromArray([1, 32], [2], 'u32'))).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(run(Tensor.fromArray([3, 3], [2], 'u32'))).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(run(Tensor.fromArray([5, 2], [2], 'u32'))).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(run(Tensor.fromArray([1, 2], [2], 'i32'))).toThrow(code('ZOTUNE_DTYPE'));
    expect(Array.from(out.data())).toEqual(new Array(8).fill(7));
  });

  test('native checks: short buffers, overlaps, disposed tensors', async () => {
    const w = w8();
    const op = native();
    const x = new Float32Array(20), y = new Float32Array(8);
    const call = (...args: unknown[]) => () => (op.gemmInt8 as (...a: unknown[]) => void)(...args);
    expect(call(x, 0, 3, w.desc(), y, 0, null, 0, null, 0, null, null, 0, 0)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(call(x, 20, 2, w.desc(), y, 0, null, 0, null, 0, null, null, 0, 0)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(call(x, 0, 2, w.desc(), y, 4, null, 0, null, 0, null, null, 0, 0)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(call(x, 2, 2, w.desc(), y, 0, null, 0, null, 0, null, null, 0, 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const desc = w.desc();
    expect(call(x, 0, 2, desc, desc.scales, 0, null, 0, null, 0, null, null, 0, 0)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    const big = new Float32Array(64);
    const shared = { ...desc, scales: big };
    expect(call(x, 0, 2, shared, big, 0, null, 0, null, 0, null, null, 0, 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(call(x, 0, 2, w.desc(), big, 0, null, 0, big, 4, null, null, 0, 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(call(x, 0, 2, w.desc(), y, 0, null, 0, y, 4, null, null, 0, 0)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    const xt = Tensor.zeros([2, 8]);
    xt.dispose();
    expect(() => matmulInt8Sync(xt, w)).toThrow(code('ZOTUNE_DISPOSED'));
    await expect(matmulInt8(xt, w)).rejects.toMatchObject({ code: 'ZOTUNE_DISPOSED' });
  });
});
