import { cpuInfo, QTensor, quant, rng, setCpuPath, setThreads, Tensor } from '../lib';
import type { Granularity, QFormat } from '../lib';
import { bitsF32, Dir, directionAt, f32bits, prng, wordAt } from './helpers/reference';
import { cpuPaths } from './helpers/paths';
import * as F from './helpers/formats';

const FORMATS: QFormat[] = ['int8', 'int4', 'nf4', 'fp8-e4m3', 'fp8-e5m2', 'bf16', 'fp16'];
const SCALED: QFormat[] = ['int8', 'int4', 'nf4', 'fp8-e4m3', 'fp8-e5m2'];
const FLOATS = ['bf16', 'fp16', 'fp8-e4m3', 'fp8-e5m2'] as const;
const GRANS: Granularity[] = ['tensor', 'channel', 32, 64, 128];
const hasAvx2 = cpuInfo().avx2;
const PATHS = cpuPaths('quant');
const SR_QUANTIZE = F.Purpose.srQuantize;

afterAll(() => {
  setCpuPath('auto');
  setThreads(cpuInfo().threads);
});

// --- helpers ---------------------------------------------------------------------------------------

// Global lookups (Math.x) are slow inside jest's vm context: hot loops use these aliases.
const { floor } = Math;

/** Random f32 data with a wide dynamic range, exact zeros, repeated values and outliers. */
function randomData(rand: () => number, n: number): Float32Array<ArrayBuffer> {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = rand();
    if (u < 0.03) x[i] = 0;
    else if (u < 0.05) x[i] = x[floor(rand() * i)];
    else if (u < 0.06) x[i] = (rand() - 0.5) * 2000;
    else x[i] = (rand() - 0.5) * 2 ** (floor(rand() * 12) - 6);
  }
  return x;
}

/** Large test data from the native generator (normal values spread over 2^-6 .. 2^5, zeros, outliers). */
function bigData(n: number, seed: number): Float32Array<ArrayBuffer> {
  const t = Tensor.zeros([n]);
  rng.fillSync(t, 'normal', { seed, stream: 77 });
  const x = Float32Array.from(t.data() as Float32Array);
  t.dispose();
  for (let i = 0; i < n; i++) x[i] = i % 37 === 0 ? 0 : i % 101 === 0 ? x[i] * 1000 : x[i] * 2 ** ((i % 12) - 6);
  return x;
}

function bytesOf(t: Tensor): Uint8Array {
  const d = t.data();
  return new Uint8Array(d.buffer, d.byteOffset, t.byteLength).slice();
}

function codesOf(q: QTensor): Int32Array {
  const d = q.data.data();
  return F.unpackCodes(q.format, q.rows, q.cols, q.format === 'int4' || q.format === 'nf4' ? bytesOf(q.data) : d);
}

function f32Bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function expectSameBits(got: Float32Array, want: Float32Array, what: string): void {
  expect(got.length).toBe(want.length);
  const g = f32Bits(got), w = f32Bits(want);
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== w[i]) throw new Error(`${what}: element ${i}: got ${got[i]} (0x${g[i].toString(16)}), want ${want[i]} (0x${w[i].toString(16)})`);
  }
}

function expectSameCodes(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) throw new Error(`${what}: code ${i}: got ${got[i]}, want ${want[i]}`);
  }
}

function qFromRef(r: F.RefQ, gran: Granularity): QTensor {
  const bytes = F.packCodes(r);
  const fmt = r.format as QFormat;
  let data: Tensor;
  if (fmt === 'int8') data = Tensor.from(Int8Array.from(bytes, (v) => (v << 24) >> 24), [bytes.length], 'i8');
  else if (fmt === 'bf16' || fmt === 'fp16') data = Tensor.from(new Uint16Array(bytes.buffer.slice(0) as ArrayBuffer), [bytes.length / 2], fmt === 'bf16' ? 'bf16' : 'f16');
  else data = Tensor.from(Uint8Array.from(bytes), [bytes.length], 'u8');
  const scaled = SCALED.includes(fmt);
  return new QTensor(fmt, [r.rows, r.cols], gran, data, scaled ? Tensor.from(Float32Array.from(r.scales)) : undefined, r.zeros ? Tensor.from(Uint8Array.from(r.zeros)) : undefined);
}

function srWords(seed: number, stream: number, n: number, purpose: number = SR_QUANTIZE): Uint32Array {
  return F.wordsFast({ seed: BigInt(seed), stream, purpose }, 0, n);
}

const code = (c: string) => expect.objectContaining({ code: c });

test('the fast Philox words and directions of the helpers match the BigInt reference', () => {
  const key = { seed: 0x1234_5678_9abc_defn, stream: 3, purpose: 7 };
  const w = F.wordsFast(key, 1000, 100);
  for (let j = 0; j < 100; j += 7) expect(w[j]).toBe(wordAt(key, 1000 + j));
  for (const d of [
    { seed: 5n, stream: 3, dist: 'gaussian', bits: 0, srPurpose: 5 },
    { seed: 6n, stream: 1, dist: 'gaussian', bits: 3, srPurpose: 4 },
    { seed: 7n, stream: 9, dist: 'rademacher', bits: 0, srPurpose: 5 },
  ] as Dir[]) {
    const z = F.directions(d, 3000);
    for (let i = 0; i < 3000; i += 97) expect(z[i]).toBe(directionAt(d, i));
  }
});

describe.each(PATHS)('on the %s path', (path) => {
  beforeAll(() => setCpuPath(path));

  // --- float formats, elementwise ------------------------------------------------------------------

  test.each(FLOATS)('%s: every code decodes to the exhaustive table and round-trips through RTNE', (fmt) => {
    const g = F.GRIDS[fmt]!;
    const n = 2 ** g.bits;
    const codes = fmt === 'fp8-e4m3' || fmt === 'fp8-e5m2' ? Uint8Array.from({ length: n }, (_, i) => i) : Uint16Array.from({ length: n }, (_, i) => i);
    const ct = Tensor.from(codes, [n], fmt === 'bf16' ? 'bf16' : fmt === 'fp16' ? 'f16' : 'u8');
    const y = quant.fromFormatSync(ct, fmt).data() as Float32Array;
    const want = new Uint32Array(n).map((_, c) => g.decodeBits(c));
    expectSameCodes(f32Bits(y), want, `${fmt} decode`);
    const back = quant.toFormatSync(Tensor.from(Float32Array.from(y)), fmt).data();
    for (let c = 0; c < n; c++) {
      const isNan = Number.isNaN(y[c]);
      const expected = isNan ? g.nanCode | (c & g.signBit) : Number.isFinite(y[c]) ? c : g.maxCode | (c & g.signBit);
      if (back[c] !== expected) throw new Error(`${fmt}: code ${c} -> ${y[c]} -> ${back[c]}, want ${expected}`);
    }
  });

  test.each(FLOATS)('%s: RTNE (ties to even), SR and saturation/NaN policy match the grid reference', (fmt) => {
    const g = F.GRIDS[fmt]!;
    const rand = prng(7 + fmt.length);
    const n = 20011;
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const u = rand();
      if (u < 0.2) {
        // exact midpoints between neighbouring grid values (ties) and the grid values themselves
        const k = Math.floor(rand() * (g.values.length - 1));
        x[i] = (u < 0.1 ? (g.values[k] + g.values[k + 1]) / 2 : g.values[k]) * (rand() < 0.5 ? -1 : 1);
      } else if (u < 0.23) {
        x[i] = [Infinity, -Infinity, NaN, g.max * 1.5, -g.max * 1.01, 3e38, -0, bitsF32(0x7fa00001), bitsF32(0xffc00123)][Math.floor(rand() * 9)];
      } else {
        x[i] = (rand() - 0.5) * g.max * 2 ** -Math.floor(rand() * 40);
      }
    }
    const xt = Tensor.from(x);
    const near = quant.toFormatSync(xt, fmt).data();
    const words = srWords(99, 5, n);
    const sr = quant.toFormatSync(xt, fmt, { rounding: 'stochastic', seed: 99, stream: 5 }).data();
    for (let i = 0; i < n; i++) {
      const a = F.gridRtne(g, x[i]), b = F.gridSr(g, x[i], words[i]);
      if (near[i] !== a) throw new Error(`${fmt} RTNE of ${x[i]} (0x${f32bits(x[i]).toString(16)}): got ${near[i]}, want ${a}`);
      if (sr[i] !== b) throw new Error(`${fmt} SR of ${x[i]}: got ${sr[i]}, want ${b}`);
    }
  });

  // --- quantize / dequantize -----------------------------------------------------------------------

  test('quantize + dequantize match the reference for every format, granularity and rounding (odd cols, zero-size)', () => {
    const rand = prng(1234);
    const shapes: [number, number][] = [[3, 7], [5, 64], [2, 129], [1, 1], [4, 300], [0, 5], [5, 0], [17, 33]];
    let cases = 0;
    for (const [rows, cols] of shapes) {
      const x = randomData(rand, rows * cols);
      const xt = Tensor.from(x, [rows, cols]);
      for (const fmt of FORMATS) {
        const grans: Granularity[] = SCALED.includes(fmt) ? GRANS : ['tensor'];
        for (const gran of grans)
          for (const sr of [false, true])
            for (const variant of fmt === 'int4' ? ['sym', 'asym'] : fmt.startsWith('fp8') && gran === 'tensor' ? ['scaled', 'free'] : ['']) {
              const asym = variant === 'asym', scaleFree = variant === 'free';
              const seed = cases + 1;
              const q = quant.quantizeSync(xt, fmt, { granularity: gran, asymmetric: asym, scaleFree, rounding: sr ? 'stochastic' : 'nearest', seed, stream: 2 });
              const ref = F.refQuantize(x, rows, cols, fmt, F.groupOf(gran, cols), { asym, scaleFree, sr, words: sr ? srWords(seed, 2, rows * cols) : undefined });
              const what = `${fmt} ${gran} ${variant} sr=${sr} [${rows}, ${cols}]`;
              expectSameCodes(bytesOf(q.data), F.packCodes(ref), `${what} codes`);
              if (q.scales) expectSameBits(q.scales.data() as Float32Array, ref.scales, `${what} scales`);
              if (asym) expectSameCodes(q.zeros!.data(), ref.zeros!, `${what} zero-points`);
              const y = quant.dequantizeSync(q);
              expectSameBits(y.data() as Float32Array, F.refDequantize(ref), `${what} dequantize`);
              const fq = quant.fakeQuantizeSync(xt, fmt, { granularity: gran, asymmetric: asym, scaleFree, rounding: sr ? 'stochastic' : 'nearest', seed, stream: 2 });
              expectSameBits(fq.data() as Float32Array, y.data() as Float32Array, `${what} fakeQuantize`);
              [q, y, fq].forEach((t) => t.dispose());
              cases++;
            }
      }
    }
    expect(cases).toBeGreaterThan(400);
  });

  test('quantizeInto keeps the grid; saturation at the grid ends; async forms agree', async () => {
    const rows = 6, cols = 45;
    const rand = prng(77);
    const x = randomData(rand, rows * cols);
    for (const fmt of SCALED) {
      for (const asym of fmt === 'int4' ? [false, true] : [false]) {
        const base = F.refQuantize(x, rows, cols, fmt, 32, { asym });
        // a fixed grid that is too narrow for part of the data: values beyond it saturate
        const scales = base.scales.map((s) => Math.fround(s * 0.25));
        const y = x.map((v) => v * (1 + rand()));
        for (const sr of [false, true]) {
          const q = qFromRef({ ...base, scales }, 32);
          await quant.quantizeInto(Tensor.from(y, [rows, cols]), q, { rounding: sr ? 'stochastic' : 'nearest', seed: 3, stream: 1 });
          const ref = F.refQuantize(y, rows, cols, fmt, 32, { asym, sr, words: srWords(3, 1, rows * cols), scales, zeros: base.zeros });
          expectSameCodes(bytesOf(q.data), F.packCodes(ref), `${fmt} asym=${asym} sr=${sr} quantizeInto`);
          expectSameBits(q.scales!.data() as Float32Array, scales, `${fmt} scales kept`);
          const yd = await quant.dequantize(q);
          expectSameBits(yd.data() as Float32Array, F.refDequantize(ref), `${fmt} async dequantize`);
        }
      }
    }
    // int8 saturation: |x| beyond 127 steps clamps to +-127
    const q8 = qFromRef({ format: 'int8', rows: 1, cols: 4, group: 0, codes: new Int32Array(4), scales: Float32Array.of(0.5) }, 'tensor');
    quant.quantizeIntoSync(Tensor.from(Float32Array.of(1e30, -1e30, 63.75, -64.25)), q8);
    expect(Array.from(q8.data.data())).toEqual([127, -127, 127, -127]);
    // fp8 with a fixed grid keeps NaN (canonical code) and saturates Inf
    const q8f = qFromRef({ format: 'fp8-e4m3', rows: 1, cols: 4, group: 0, codes: new Int32Array(4), scales: Float32Array.of(2) }, 'tensor');
    quant.quantizeIntoSync(Tensor.from(Float32Array.of(NaN, Infinity, -Infinity, -1e9)), q8f);
    expect(Array.from(q8f.data.data())).toEqual([0x7f, 0x7e, 0xfe, 0xfe]);
  });

  test('a tensor of 1M+ elements (odd cols, several segments) matches the reference', async () => {
    const rows = 1031, cols = 1029;
    const x = bigData(rows * cols, 5);
    const xt = Tensor.from(x, [rows, cols]);
    const words = srWords(11, 4, rows * cols);
    const cases: [QFormat, Granularity, boolean, boolean][] = [
      ['int8', 32, true, false],
      ['int4', 128, false, true],
      ['fp8-e4m3', 'channel', true, false],
      ['nf4', 64, true, false],
    ];
    for (const [fmt, gran, sr, asym] of cases) {
      const q = await quant.quantize(xt, fmt, { granularity: gran, rounding: sr ? 'stochastic' : 'nearest', seed: 11, stream: 4, asymmetric: asym });
      const ref = F.refQuantize(x, rows, cols, fmt, F.groupOf(gran, cols), { sr, asym, words });
      expectSameCodes(bytesOf(q.data), F.packCodes(ref), `${fmt} 1M codes`);
      expectSameBits(q.scales!.data() as Float32Array, ref.scales, `${fmt} 1M scales`);
      const y = await quant.dequantize(q);
      expectSameBits(y.data() as Float32Array, F.refDequantize(ref), `${fmt} 1M dequantize`);
      q.dispose();
      y.dispose();
    }
  });

  // --- stochastic rounding statistics ------------------------------------------------------------

  test.each(FORMATS)('%s: SR is unbiased: the mean of 400 seeds is within 5 sigma of the input', (fmt) => {
    const m = 64, seeds = 400;
    const rand = prng(31 + fmt.length);
    const scaled = SCALED.includes(fmt);
    const scale = fmt === 'int8' ? 0.01 : fmt === 'int4' ? 0.1 : fmt === 'nf4' ? 1.5 : 1;
    // points strictly between two grid values, away from the ends (fractions 0.05 .. 0.95)
    const x = new Float32Array(m), lo = new Float64Array(m), hi = new Float64Array(m);
    const sf = Math.fround(scale);
    const grid = fmt === 'int8' ? Array.from({ length: 255 }, (_, k) => Math.fround(sf * (k - 127)))
      : fmt === 'int4' ? Array.from({ length: 15 }, (_, k) => Math.fround(sf * (k - 7)))
      : fmt === 'nf4' ? F.NF4.map((v) => Math.fround(sf * v))
      : Array.from(F.GRIDS[fmt]!.values).filter((v) => v < 2 ** 14);
    for (let i = 0; i < m; i++) {
      const k = Math.floor(rand() * (grid.length - 2));
      lo[i] = grid[k];
      hi[i] = grid[k + 1];
      x[i] = Math.fround(lo[i] + (hi[i] - lo[i]) * (0.05 + 0.9 * rand()));
    }
    const q = scaled ? qFromRef(F.refQuantize(x, 1, m, fmt, 0, { scales: Float32Array.of(scale) }), 'tensor') : undefined;
    const sum = new Float64Array(m);
    const xt = Tensor.from(x);
    for (let s = 0; s < seeds; s++) {
      const opts = { rounding: 'stochastic' as const, seed: 1000 + s, stream: 0 };
      let y: Float32Array;
      if (q) {
        quant.quantizeIntoSync(xt, q, opts);
        y = quant.dequantizeSync(q).data() as Float32Array;
      } else {
        y = quant.fromFormatSync(quant.toFormatSync(xt, fmt as (typeof FLOATS)[number], opts), fmt as (typeof FLOATS)[number]).data() as Float32Array;
      }
      for (let i = 0; i < m; i++) {
        if (y[i] !== lo[i] && y[i] !== hi[i]) throw new Error(`${fmt}: SR of ${x[i]} gave ${y[i]}, not a neighbour (${lo[i]}, ${hi[i]})`);
        sum[i] += y[i];
      }
    }
    let worst = 0;
    for (let i = 0; i < m; i++) {
      const sigma = Math.sqrt((x[i] - lo[i]) * (hi[i] - x[i]));
      worst = Math.max(worst, Math.abs(sum[i] / seeds - x[i]) / (sigma / Math.sqrt(seeds)));
    }
    expect(worst).toBeLessThan(5);
  });

  test('SR draws are independent across streams and purposes (correlation of round-up decisions)', () => {
    const n = 1 << 16;
    // int8 on a unit grid, every value halfway: each rounding is a fair coin
    const x = new Float32Array(n).map((_, i) => (i % 200) - 100 + 0.5);
    const q = qFromRef({ format: 'int8', rows: 1, cols: n, group: 0, codes: new Int32Array(n), scales: Float32Array.of(1) }, 'tensor');
    const ups = (stream: number) => {
      quant.quantizeIntoSync(Tensor.from(x), q, { rounding: 'stochastic', seed: 42, stream });
      const c = q.data.data();
      return Float64Array.from({ length: n }, (_, i) => (c[i] > x[i] ? 1 : 0));
    };
    const a = ups(0), b = ups(1);
    // update SR (purpose srWeight) with the same seed and stream as the quantize SR: codes 0 moved
    // by alpha * z = +-0.5 steps (Rademacher) round up or down
    const u = qFromRef({ format: 'int8', rows: 1, cols: n, group: 0, codes: new Int32Array(n), scales: Float32Array.of(1) }, 'tensor');
    quant.updateSync(u, 0.5, { seed: 42, stream: 0, dist: 'rademacher' });
    const uc = u.data.data();
    const z = F.directions({ seed: 42n, stream: 0, dist: 'rademacher', bits: 0, srPurpose: 5 }, n);
    const c = Float64Array.from({ length: n }, (_, i) => (uc[i] > z[i] * 0.5 ? 1 : 0));
    const corr = (p: Float64Array, r: Float64Array) => {
      let sp = 0, sr = 0, spr = 0, spp = 0, srr = 0;
      for (let i = 0; i < n; i++) { sp += p[i]; sr += r[i]; spr += p[i] * r[i]; spp += p[i] * p[i]; srr += r[i] * r[i]; }
      const cov = spr / n - (sp / n) * (sr / n);
      return cov / Math.sqrt((spp / n - (sp / n) ** 2) * (srr / n - (sr / n) ** 2));
    };
    const bound = 5 / Math.sqrt(n);
    expect(Math.abs(corr(a, b))).toBeLessThan(bound);
    expect(Math.abs(corr(a, c))).toBeLessThan(bound);
    // sanity: the same stream is perfectly correlated
    expect(corr(a, ups(0))).toBeCloseTo(1, 10);
  });

  // --- quantized ZO update -------------------------------------------------------------------------

  const DIRS: Dir[] = [
    { seed: 5n, stream: 3, dist: 'gaussian', bits: 0, srPurpose: 5 },
    { seed: 6n, stream: 1, dist: 'gaussian', bits: 4, srPurpose: 5 },
    { seed: 7n, stream: 9, dist: 'rademacher', bits: 0, srPurpose: 5 },
  ];
  const apiDir = (d: Dir) => ({ seed: d.seed, stream: d.stream, dist: d.dist, bits: d.bits, srPurpose: (d.srPurpose === 4 ? 'probe' : 'update') as 'probe' | 'update' });

  test('quantized update matches the reference for every format and direction', async () => {
    const rand = prng(8);
    let k = 0;
    for (const fmt of FORMATS) {
      for (const [rows, cols, gran] of [[3, 37, 32], [2, 70, 'channel'], [2, 33, 'tensor']] as [number, number, Granularity][]) {
        const g: Granularity = SCALED.includes(fmt) ? gran : 'tensor';
        for (const asym of fmt === 'int4' ? [false, true] : [false]) {
          const x = randomData(rand, rows * cols);
          const start = F.refQuantize(x, rows, cols, fmt, F.groupOf(g, cols), { asym });
          for (const d of DIRS) {
            for (const alpha of [0.003, -0.4]) {
              const ref = F.cloneRef(start);
              F.refUpdate(ref, alpha, d);
              const q = qFromRef(start, g);
              if (k++ % 2) quant.updateSync(q, alpha, apiDir(d));
              else await quant.update(q, alpha, apiDir(d));
              expectSameCodes(bytesOf(q.data), F.packCodes(ref), `${fmt} ${g} asym=${asym} ${d.dist}/${d.bits} alpha=${alpha} update`);
            }
          }
        }
      }
    }
  });

  test.each(FORMATS)('%s: the update is unbiased: E[value_new] = value + alpha * z within 5 sigma (Rademacher z)', (fmt) => {
    const m = 48, seeds = 300;
    const scaled = SCALED.includes(fmt);
    const rand = prng(64 + fmt.length);
    // start inside the grid, away from its ends; alpha a fraction of a grid step
    const x = new Float32Array(m).map(() => (rand() - 0.5) * (fmt.startsWith('fp8') || !scaled ? 8 : 1));
    // a grid twice as wide as the data, so no code sits at the clamp
    const scale = scaled ? Math.fround(2 * F.refScales(x, 1, m, fmt, 0, false, false).scales[0]) : 1;
    const start = F.refQuantize(x, 1, m, fmt, 0, { scales: Float32Array.of(scale) });
    const v0 = F.refDequantize(start);
    const sum = new Float64Array(m), want = new Float64Array(m), varSum = new Float64Array(m);
    const alpha = Math.fround((fmt === 'int8' || fmt === 'int4' ? 0.37 : 0.011) * scale);
    const q = qFromRef(start, 'tensor');
    const initial = bytesOf(q.data);
    for (let s = 0; s < seeds; s++) {
      q.data.data().set(fmt === 'bf16' || fmt === 'fp16' ? new Uint16Array(initial.buffer) : fmt === 'int8' ? new Int8Array(initial.buffer) : initial);
      const d: Dir = { seed: BigInt(500 + s), stream: 2, dist: 'rademacher', bits: 0, srPurpose: 5 };
      quant.updateSync(q, alpha, apiDir(d));
      const y = quant.dequantizeSync(q).data() as Float32Array;
      const ref = F.cloneRef(start);
      const vs = F.refUpdate(ref, alpha, d);
      const zs = F.directions(d, m);
      for (let i = 0; i < m; i++) {
        const z = zs[i];
        sum[i] += (y[i] - v0[i]) * z;
        // the exact value being rounded, in value units, and the Bernoulli variance around it
        const target = fmt === 'int8' ? scale * vs[i] : fmt === 'int4' ? scale * (vs[i] - 8) : fmt === 'nf4' ? scale * vs[i] : scale * vs[i];
        want[i] += (target - v0[i]) * z;
        const lo = Math.min(...neighbours(fmt, vs[i]).map((t) => t * scale)), hi = Math.max(...neighbours(fmt, vs[i]).map((t) => t * scale));
        varSum[i] += (target - lo) * (hi - target);
      }
    }
    let worst = 0;
    for (let i = 0; i < m; i++) {
      const sigma = Math.sqrt(varSum[i]) / seeds;
      const dev = Math.abs(sum[i] / seeds - want[i] / seeds);
      worst = Math.max(worst, sigma > 0 ? dev / sigma : dev === 0 ? 0 : Infinity);
      // and E[value_new - value] * z = alpha up to the f32 rounding of value + step
      expect(Math.abs(want[i] / seeds - alpha)).toBeLessThan(4e-6 * (Math.abs(v0[i]) + Math.abs(alpha)));
    }
    expect(worst).toBeLessThan(5);
  });

  function neighbours(fmt: QFormat, v: number): [number, number] {
    if (fmt === 'int8') return [Math.floor(v), Math.ceil(v)];
    if (fmt === 'int4') return [Math.floor(v) - 8, Math.ceil(v) - 8];
    if (fmt === 'nf4') {
      let lo = 0;
      while (lo < 14 && F.NF4[lo + 1] <= v) lo++;
      return v === F.NF4[lo] ? [v, v] : [F.NF4[lo], F.NF4[lo + 1]];
    }
    return F.gridNeighbours(F.GRIDS[fmt]!, v);
  }

  test('sparse update equals the dense update masked to the indices (sorted or not), 4-bit neighbours included', () => {
    const rand = prng(21);
    for (const fmt of FORMATS) {
      const rows = 5, cols = 4097;
      const g: Granularity = SCALED.includes(fmt) ? 64 : 'tensor';
      const start = F.refQuantize(randomData(rand, rows * cols), rows, cols, fmt, F.groupOf(g, cols), {});
      const d = DIRS[1];
      const dense = qFromRef(start, g);
      quant.updateSync(dense, 0.2, apiDir(d));
      const denseCodes = codesOf(dense);
      // every 7th element plus runs of adjacent ones (same byte in 4-bit formats), shuffled
      const set = new Set<number>();
      for (let i = 0; i < rows * cols; i += 7) set.add(i);
      for (let i = 100; i < 140; i++) set.add(i);
      set.add(rows * cols - 1);
      const idx = Uint32Array.from([...set]);
      for (let i = idx.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [idx[i], idx[j]] = [idx[j], idx[i]];
      }
      for (const order of ['shuffled', 'sorted']) {
        const ix = order === 'sorted' ? Uint32Array.from(idx).sort() : idx;
        const sparse = qFromRef(start, g);
        quant.updateIndicesSync(sparse, ix, 0.2, apiDir(d));
        const got = codesOf(sparse);
        const want = Int32Array.from(start.codes);
        for (const i of set) want[i] = denseCodes[i];
        expectSameCodes(got, want, `${fmt} sparse (${order})`);
      }
    }
  });

  test.each([[3, 70001], [300, 257]])('values do not depend on the thread count (%i x %i: long rows split into tasks, short rows batched)', async (rows, cols) => {
    const x = bigData(rows * cols, 3);
    const runs: Uint8Array[][] = [];
    for (const threads of [1, 2, 3]) {
      setThreads(threads);
      const out: Uint8Array[] = [];
      for (const [fmt, gran] of [['int4', 32], ['int8', 'channel'], ['fp8-e5m2', 'tensor'], ['nf4', 128]] as [QFormat, Granularity][]) {
        const q = await quant.quantize(Tensor.from(x, [rows, cols]), fmt, { granularity: gran, rounding: 'stochastic', seed: 9 });
        out.push(bytesOf(q.data), bytesOf(q.scales!));
        await quant.update(q, 0.05, { seed: 1, stream: 2, dist: 'gaussian', bits: 3 });
        out.push(bytesOf(q.data));
        out.push(bytesOf(await quant.dequantize(q)));
        q.dispose();
      }
      runs.push(out);
    }
    for (const r of [runs[1], runs[2]]) r.forEach((b, i) => expect(Buffer.from(b).equals(Buffer.from(runs[0][i]))).toBe(true));
    setThreads(cpuInfo().threads);
  });
});

// --- scalar vs AVX2 ----------------------------------------------------------------------------------

/** Byte equality of results (typed arrays, or arrays of them): jest's toEqual walks 32 MiB outputs element by element. */
function sameBytes(x: unknown, y: unknown): boolean {
  if (ArrayBuffer.isView(x) && ArrayBuffer.isView(y)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  if (Array.isArray(x) && Array.isArray(y)) return x.length === y.length && x.every((v, i) => sameBytes(v, y[i]));
  return Object.is(x, y);
}

(hasAvx2 ? describe : describe.skip)('scalar and AVX2 (and AVX-512 where present) paths agree bit for bit (skipped: no AVX2 on this CPU)', () => {
  // [scalar, avx2]; the avx512 result (Philox words and normals 16 lanes, 32 counters at a time) must equal avx2's
  const both = async <T>(fn: () => Promise<T> | T): Promise<[T, T]> => {
    setCpuPath('scalar');
    const a = await fn();
    setCpuPath('avx2');
    const b = await fn();
    if (PATHS.includes('avx512')) {
      setCpuPath('avx512');
      expect(sameBytes(await fn(), b)).toBe(true);
    }
    setCpuPath('auto');
    return [a, b];
  };
  const rand = prng(4242);
  const shapes: [number, number][] = [[37, 1000], [3, 4097], [64, 256], [1, 100003]];

  test('quantize, dequantize and fake quantization for every format, granularity and rounding', async () => {
    for (const [rows, cols] of shapes) {
      const x = bigData(rows * cols, rows + cols);
      const xt = Tensor.from(x, [rows, cols]);
      for (const fmt of FORMATS)
        for (const gran of SCALED.includes(fmt) ? GRANS : (['tensor'] as Granularity[]))
          for (const sr of [false, true])
            for (const asym of fmt === 'int4' ? [false, true] : [false]) {
              const opts = { granularity: gran, rounding: sr ? ('stochastic' as const) : ('nearest' as const), seed: 77, stream: 3, asymmetric: asym };
              const [a, b] = await both(() => {
                const q = quant.quantizeSync(xt, fmt, opts);
                const res = [bytesOf(q.data), q.scales ? bytesOf(q.scales) : new Uint8Array(), bytesOf(quant.dequantizeSync(q)), bytesOf(quant.fakeQuantizeSync(xt, fmt, opts))];
                q.dispose();
                return res;
              });
              a.forEach((buf, i) => {
                if (!Buffer.from(buf).equals(Buffer.from(b[i]))) throw new Error(`${fmt} ${gran} sr=${sr} asym=${asym} [${rows}, ${cols}] output ${i} differs`);
              });
            }
    }
  });

  test('dequantize of outputs beyond the caches (non-temporal stores; aligned and unaligned rows)', async () => {
    const rows = 2048, cols = 4097; // 32 MiB of f32 output; odd cols: every other row starts unaligned
    const x = Tensor.from(bigData(rows * cols, 9), [rows, cols]);
    for (const fmt of ['int8', 'nf4', 'fp8-e5m2', 'bf16'] as QFormat[]) {
      const q = quant.quantizeSync(x, fmt, { granularity: fmt === 'bf16' ? 'tensor' : 64 });
      const [a, b] = await both(() => {
        const y = quant.dequantizeSync(q);
        const bytes = bytesOf(y);
        y.dispose();
        return bytes;
      });
      expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
      q.dispose();
    }
  });

  test('extreme values saturate identically (x * inv overflowing to Inf, huge update steps)', async () => {
    const cols = 96;
    const special = [1e30, -1e30, 2e38, -2e38, 1e9, -1e9, 0.5, -0.5, 2 ** 31, -(2 ** 31), 1e-30, 0];
    const x = Float32Array.from({ length: 2 * cols }, (_, i) => special[i % special.length] * (1 + (i % 5) / 8));
    for (const fmt of SCALED)
      for (const scale of [2 ** -126, 1e-20, 1, 1e30])
        for (const asym of fmt === 'int4' ? [false, true] : [false]) {
          const base: F.RefQ = { format: fmt, rows: 2, cols, group: 0, codes: new Int32Array(2 * cols).fill(fmt === 'int4' ? 8 : 0), scales: Float32Array.of(scale), zeros: asym ? Uint8Array.of(3) : undefined };
          const [a, b] = await both(() => {
            const q = qFromRef(base, 'tensor');
            quant.quantizeIntoSync(Tensor.from(x, [2, cols]), q, { rounding: 'stochastic', seed: 5 });
            const sr = bytesOf(q.data);
            quant.quantizeIntoSync(Tensor.from(x, [2, cols]), q);
            const rtne = bytesOf(q.data);
            quant.updateSync(q, scale >= 1 ? 1e30 : 1e-10, { seed: 6, stream: 0, dist: 'gaussian' });
            return [sr, rtne, bytesOf(q.data)];
          });
          const ref = F.refQuantize(x, 2, cols, fmt, 0, { scales: Float32Array.of(scale), zeros: asym ? Uint8Array.of(3) : undefined, asym });
          expectSameCodes(a[1], F.packCodes(ref), `${fmt} scale ${scale} RTNE vs reference`);
          a.forEach((buf, i) => {
            if (!Buffer.from(buf).equals(Buffer.from(b[i]))) throw new Error(`${fmt} scale ${scale} asym=${asym}: output ${i} differs`);
          });
        }
  });

  test('elementwise float conversions on special values (NaN payloads, Inf, subnormals, saturation)', async () => {
    const n = 50003;
    const bits = new Uint32Array(n).map(() => Math.floor(rand() * 2 ** 32));
    const x = new Float32Array(bits.buffer);
    for (const fmt of FLOATS) {
      for (const rounding of ['nearest', 'stochastic'] as const) {
        const [a, b] = await both(() => bytesOf(quant.toFormatSync(Tensor.from(x), fmt, { rounding, seed: 1 })));
        expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
      }
      const codes = fmt === 'bf16' || fmt === 'fp16' ? new Uint16Array(bits.buffer, 0, n) : new Uint8Array(bits.buffer, 0, n);
      const [a, b] = await both(() => bytesOf(quant.fromFormatSync(Tensor.from(codes, [n], fmt === 'bf16' ? 'bf16' : fmt === 'fp16' ? 'f16' : 'u8'), fmt)));
      expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    }
  });

  test('quantized update (dense and sparse) for every format and direction', async () => {
    for (const [rows, cols] of [[37, 1000], [3, 4097], [2, 70001]] as [number, number][]) {
      const x = bigData(rows * cols, rows + cols);
      for (const fmt of FORMATS)
        for (const gran of SCALED.includes(fmt) ? (['channel', 32, 128] as Granularity[]) : (['tensor'] as Granularity[]))
          for (const d of [{ seed: 3, stream: 1, dist: 'gaussian' as const }, { seed: 4, stream: 2, dist: 'gaussian' as const, bits: 5, srPurpose: 'probe' as const }, { seed: 5, stream: 0, dist: 'rademacher' as const }]) {
            const [a, b] = await both(async () => {
              const q = quant.quantizeSync(Tensor.from(x, [rows, cols]), fmt, { granularity: gran, asymmetric: fmt === 'int4' && gran === 32 });
              await quant.update(q, 0.01, d);
              const dense = bytesOf(q.data);
              quant.updateIndicesSync(q, Uint32Array.from({ length: Math.floor(rows * cols / 8) }, (_, i) => i * 7 + (i & 1)), -0.02, d);
              const res = [dense, bytesOf(q.data)];
              q.dispose();
              return res;
            });
            a.forEach((buf, i) => {
              if (!Buffer.from(buf).equals(Buffer.from(b[i]))) throw new Error(`${fmt} ${gran} ${d.dist} [${rows}, ${cols}] update output ${i} differs`);
            });
          }
    }
  });
});

// --- errors ------------------------------------------------------------------------------------------

describe('bad input gets a coded error and changes nothing', () => {
  const x = Tensor.from(Float32Array.from({ length: 24 }, (_, i) => i - 11.5), [4, 6]);

  test('non-finite input to integer / scaled formats', async () => {
    for (const fmt of SCALED)
      for (const gran of GRANS)
        for (const bad of [NaN, Infinity, -Infinity]) {
          const d = Float32Array.from(x.data() as Float32Array);
          d[13] = bad;
          expect(() => quant.quantizeSync(Tensor.from(d, [4, 6]), fmt, { granularity: gran })).toThrow(code('ZOTUNE_NONFINITE'));
          expect(() => quant.fakeQuantizeSync(Tensor.from(d, [4, 6]), fmt, { granularity: gran })).toThrow(code('ZOTUNE_NONFINITE'));
        }
    await expect(quant.quantize(Tensor.from(Float32Array.of(1, NaN)), 'int8')).rejects.toMatchObject({ code: 'ZOTUNE_NONFINITE' });
    // fake quantization into a caller's output leaves it untouched
    const bad = Float32Array.from({ length: 256 }, (_, i) => (i === 200 ? NaN : i));
    const out = Tensor.from(new Float32Array(256).fill(7));
    for (const gran of GRANS) expect(() => quant.fakeQuantizeSync(Tensor.from(bad, [2, 128]), 'int4', { granularity: gran }, out)).toThrow(code('ZOTUNE_NONFINITE'));
    expect((out.data() as Float32Array).every((v) => v === 7)).toBe(true);
    // fixed grid: checked before any code is written
    for (const fmt of ['int8', 'int4', 'nf4'] as QFormat[]) {
      const q = quant.quantizeSync(x, fmt, { granularity: 'channel' });
      const before = bytesOf(q.data);
      const d = Float32Array.from(x.data() as Float32Array);
      d[23] = NaN;
      expect(() => quant.quantizeIntoSync(Tensor.from(d, [4, 6]), q)).toThrow(code('ZOTUNE_NONFINITE'));
      expect(Buffer.from(bytesOf(q.data)).equals(Buffer.from(before))).toBe(true);
    }
  });

  test('wrong dtypes, shapes, formats, options', () => {
    expect(() => quant.quantizeSync(Tensor.zeros([4], 'i32'), 'int8')).toThrow(code('ZOTUNE_DTYPE'));
    expect(() => quant.quantizeSync(Tensor.zeros([2, 2, 2]), 'int8')).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    expect(() => quant.quantizeSync(x, 'int3' as QFormat)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.quantizeSync(x, 'int8', { granularity: 16 as Granularity })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.quantizeSync(x, 'bf16', { granularity: 'channel' })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.quantizeSync(x, 'int8', { scaleFree: true })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.quantizeSync(x, 'fp8-e4m3', { scaleFree: true, granularity: 32 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.quantizeSync(x, 'nf4', { asymmetric: true })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.quantizeSync(x, 'int8', { rounding: 'stochastic' })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.quantizeSync(x, 'int8', { rounding: 'up' as never, seed: 1 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const q = quant.quantizeSync(x, 'int8');
    expect(() => quant.quantizeIntoSync(Tensor.zeros([6, 4]), q)).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    expect(() => quant.dequantizeSync(q, Tensor.zeros([23]))).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    expect(() => quant.dequantizeSync(q, Tensor.zeros([24], 'i32'))).toThrow(code('ZOTUNE_DTYPE'));
    expect(() => quant.toFormatSync(x, 'int8' as never)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.toFormatSync(x, 'bf16', {}, Tensor.zeros([24], 'u8'))).toThrow(code('ZOTUNE_DTYPE'));
    expect(() => quant.fromFormatSync(Tensor.zeros([3], 'u16'), 'fp16')).toThrow(code('ZOTUNE_DTYPE'));
  });

  test('invalid scales and zero-points of a QTensor', () => {
    const mk = (scales: number[], zeros?: number[]) =>
      new QTensor('int4', [2, 4], 'channel', Tensor.from(new Uint8Array(4)), Tensor.from(Float32Array.from(scales)), zeros ? Tensor.from(Uint8Array.from(zeros)) : undefined);
    const y = Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]), [2, 4]);
    const cases: [QTensor, string][] = [
      [mk([1, NaN]), 'ZOTUNE_NONFINITE'],
      [mk([Infinity, 1]), 'ZOTUNE_NONFINITE'],
      [mk([1, -1]), 'ZOTUNE_INVALID_ARGUMENT'],
      [mk([1, 1e-40]), 'ZOTUNE_INVALID_ARGUMENT'],
      [mk([1, 1], [3, 16]), 'ZOTUNE_INVALID_ARGUMENT'],
    ];
    for (const [q, c] of cases) {
      const before = bytesOf(q.data);
      expect(() => quant.quantizeIntoSync(y, q)).toThrow(code(c));
      expect(() => quant.dequantizeSync(q)).toThrow(code(c));
      expect(() => quant.updateSync(q, 0.1, { seed: 1, stream: 0, dist: 'gaussian' })).toThrow(code(c));
      expect(Buffer.from(bytesOf(q.data)).equals(Buffer.from(before))).toBe(true);
    }
  });

  test('update: bad alpha, direction and indices leave the tensor unchanged', async () => {
    const q = quant.quantizeSync(x, 'int4', { granularity: 32 });
    const before = bytesOf(q.data);
    const dir = { seed: 1, stream: 0, dist: 'gaussian' as const };
    expect(() => quant.updateSync(q, NaN, dir)).toThrow(code('ZOTUNE_NONFINITE'));
    expect(() => quant.updateSync(q, 1e39, dir)).toThrow(code('ZOTUNE_NONFINITE')); // beyond f32
    const tiny = qFromRef({ format: 'int8', rows: 1, cols: 2, group: 0, codes: new Int32Array(2), scales: Float32Array.of(2 ** -126) }, 'tensor');
    expect(() => quant.updateSync(tiny, 1e30, dir)).toThrow(code('ZOTUNE_INVALID_ARGUMENT')); // alpha / scale overflows
    expect(() => quant.updateSync(q, 0.1, { ...dir, dist: 'cauchy' as never })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.updateSync(q, 0.1, { ...dir, bits: 1 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.updateSync(q, 0.1, { ...dir, bits: 9 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.updateSync(q, 0.1, { ...dir, srPurpose: 'x' as never })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.updateSync(q, 0.1, { ...dir, seed: -1 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.updateIndicesSync(q, Uint32Array.of(0, 5, 24), 0.1, dir)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => quant.updateIndicesSync(q, Uint32Array.of(3, 5, 3), 0.1, dir)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => quant.updateIndicesSync(q, Int32Array.of(1) as never, 0.1, dir)).toThrow(code('ZOTUNE_DTYPE'));
    expect(() => quant.updateIndicesSync(q, Tensor.zeros([2], 'i32'), 0.1, dir)).toThrow(code('ZOTUNE_DTYPE'));
    await expect(quant.updateIndices(q, Uint32Array.of(7, 7), 0.1, dir)).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    expect(Buffer.from(bytesOf(q.data)).equals(Buffer.from(before))).toBe(true);
    // an empty index list is a no-op
    quant.updateIndicesSync(q, new Uint32Array(0), 0.1, dir);
    expect(Buffer.from(bytesOf(q.data)).equals(Buffer.from(before))).toBe(true);
  });

  test('zero-size tensors are fine everywhere', async () => {
    for (const shape of [[0, 7], [3, 0]] as [number, number][]) {
      const x0 = Tensor.zeros(shape);
      for (const fmt of FORMATS) {
        const q = await quant.quantize(x0, fmt, { rounding: 'stochastic', seed: 1 });
        expect((await quant.dequantize(q)).size).toBe(0);
        await quant.update(q, 0.1, { seed: 1, stream: 0, dist: 'gaussian' });
        quant.updateIndicesSync(q, new Uint32Array(0), 0.1, { seed: 1, stream: 0, dist: 'rademacher' });
        expect(quant.fakeQuantizeSync(x0, fmt).size).toBe(0);
      }
    }
    expect(quant.toFormatSync(Tensor.zeros([0]), 'fp8-e4m3').size).toBe(0);
    expect(quant.fromFormatSync(Tensor.zeros([0], 'bf16'), 'bf16').size).toBe(0);
  });

  test('disposed tensors are refused, async too', async () => {
    const q = quant.quantizeSync(x, 'int8');
    q.dispose();
    expect(() => quant.dequantizeSync(q)).toThrow(code('ZOTUNE_DISPOSED'));
    await expect(quant.update(q, 0.1, { seed: 1, stream: 0, dist: 'gaussian' })).rejects.toMatchObject({ code: 'ZOTUNE_DISPOSED' });
  });
});
