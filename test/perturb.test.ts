import { cpuInfo, perturb, perturbIndices, perturbIndicesSync, perturbSync, setCpuPath, setThreads, Tensor } from '../lib';
import type { DirectionOptions } from '../lib';
import { native } from '../lib/native/load';
import { Dir, directionAt, fmaf, gridStep, prng, ulp32 } from './helpers/reference';
import { cpuPaths } from './helpers/paths';

const f = Math.fround;
const { abs, round, max, floor } = Math; // Math.* lookups are slow inside jest's sandbox
const SR = { probe: 4, update: 5 } as const;
const hasAvx2 = cpuInfo().avx2;
// avx512 generates the Gaussian directions 32 Philox counters at a time (16 for an odd last block pair)
const CPU_PATHS = cpuPaths('perturb');

afterAll(() => {
  setCpuPath('auto');
  setThreads(cpuInfo().threads);
});

function dir(o: DirectionOptions): Dir {
  return { seed: BigInt(o.seed), stream: o.stream, dist: o.dist, bits: o.bits ?? 0, srPurpose: SR[o.srPurpose ?? 'probe'] };
}

/** Deterministic weights of the size of LLM parameters (~N(0, 0.02)), some exact zeros and large values. */
function weights(n: number, seed: number): Float32Array<ArrayBuffer> {
  const r = prng(seed), w = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = r();
    w[i] = u < 0.01 ? 0 : u > 0.99 ? (r() - 0.5) * 8 : (r() + r() + r() - 1.5) * 0.04;
  }
  return w;
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const copy = (t: Tensor) => Float32Array.from(t.data() as Float32Array);

const DIRECTIONS: DirectionOptions[] = [
  { seed: 0x0123456789abcdefn, stream: 3, dist: 'gaussian' },
  { seed: 7, stream: 0, dist: 'rademacher' },
  { seed: 2n ** 64n - 1n, stream: 2 ** 32 - 1, dist: 'gaussian', bits: 4 },
  { seed: 99, stream: 12, dist: 'gaussian', bits: 2, srPurpose: 'update' },
  { seed: 99, stream: 12, dist: 'gaussian', bits: 8 },
];
const label = (o: DirectionOptions) => `${o.dist}${o.bits ? ` ${o.bits}-bit ${o.srPurpose ?? 'probe'}` : ''}`;

describe.each(CPU_PATHS)('dense perturbation on the %s path', (path) => {
  const run = path === 'scalar' || hasAvx2 ? test : test.skip;
  beforeEach(() => {
    if (path === 'scalar' || hasAvx2) setCpuPath(path);
  });

  // sizes: empty, shorter than a block, odd, around the 32- and 1024-element RNG blocks; starts unaligned
  const SHAPES: [number, number][] = [[0, 5], [1, 0], [7, 1021], [31, 33], [33, 31], [1000, 1], [1025, 1023], [4099, 2 ** 40 + 17], [70_001, 123_456_789]];
  describe.each(DIRECTIONS.map((o) => [label(o), o] as const))('%s', (_name, o) => {
    run.each(SHAPES)('n=%i first=%i equals fma(alpha, z, w) bit for bit', (n, first) => {
      const w0 = weights(n, n + 1), alpha = f(-3.7e-3);
      const t = Tensor.from(Float32Array.from(w0));
      perturbSync(t, alpha, { ...o, first });
      const got = t.data(), d = dir(o);
      // every element of small tensors; a strided sample plus both ends of the large one
      const step = n > 5000 ? 61 : 1;
      for (let j = 0; j < n; j += j < 40 || j > n - 40 ? 1 : step) {
        const want = fmaf(alpha, directionAt(d, first + j), w0[j]);
        if (got[j] !== want) throw new Error(`element ${j}: got ${got[j]}, want ${want}`);
      }
    });
  });

  run('QuZO directions lie on the symmetric b-bit grid within one step of the Gaussian', () => {
    const n = 20_000;
    for (const b of [2, 3, 4, 8]) {
      const g = Tensor.zeros([n]), q = Tensor.zeros([n]);
      perturbSync(g, 1, { seed: 5, stream: 1, dist: 'gaussian' });
      perturbSync(q, 1, { seed: 5, stream: 1, dist: 'gaussian', bits: b });
      const [gd, qd] = [g.data(), q.data()], step = gridStep(b), top = 2 ** (b - 1) - 1;
      let below = 0, above = 0;
      for (let j = 0; j < n; j++) {
        const k = round(qd[j] / step);
        if (f(k * step) !== qd[j] || abs(k) > top || !(abs(qd[j] - gd[j]) < step))
          throw new Error(`${b} bits, element ${j}: ${qd[j]} is not a grid point within one step of ${gd[j]}`);
        if (qd[j] < gd[j]) below++;
        if (qd[j] > gd[j]) above++;
      }
      expect(below).toBeGreaterThan(n / 4); // rounds both ways
      expect(above).toBeGreaterThan(n / 4);
      g.dispose();
      q.dispose();
    }
  });

  run('QuZO rounding (16-bit thresholds) is unbiased: mean of Q(z) - z over 2^20 elements, per fraction bin', () => {
    const n = 1 << 20, b = 4;
    const g = Tensor.zeros([n]), q = Tensor.zeros([n]);
    perturbSync(g, 1, { seed: 31, stream: 4, dist: 'gaussian' });
    perturbSync(q, 1, { seed: 31, stream: 4, dist: 'gaussian', bits: b, srPurpose: 'update' });
    const [gd, qd] = [g.data(), q.data()], step = gridStep(b);
    // E[Q(z) - z | z] = 0: per decile of the fraction frac(z / step), and overall
    const sum = new Float64Array(10), sq = new Float64Array(10), cnt = new Float64Array(10);
    for (let j = 0; j < n; j++) {
      const v = gd[j] / step, bin = Math.min(9, floor((v - floor(v)) * 10)), d = (qd[j] - gd[j]) / step;
      sum[bin] += d;
      sq[bin] += d * d;
      cnt[bin]++;
    }
    let all = 0, allSq = 0;
    for (let k = 0; k < 10; k++) {
      const mean = sum[k] / cnt[k], sd = Math.sqrt(sq[k] / cnt[k] - mean * mean);
      expect(Math.abs(mean)).toBeLessThan(5 * sd / Math.sqrt(cnt[k]) + 2 ** -17);
      all += sum[k];
      allSq += sq[k];
    }
    expect(Math.abs(all / n)).toBeLessThan(5 * Math.sqrt(allSq / n) / Math.sqrt(n));
    g.dispose();
    q.dispose();
  });

  run('probe and update rounding streams are different roundings of the same z', () => {
    const n = 4096, a = Tensor.zeros([n]), b = Tensor.zeros([n]);
    perturbSync(a, 1, { seed: 8, stream: 2, dist: 'gaussian', bits: 3, srPurpose: 'probe' });
    perturbSync(b, 1, { seed: 8, stream: 2, dist: 'gaussian', bits: 3, srPurpose: 'update' });
    const [ad, bd] = [a.data(), b.data()];
    let differ = 0;
    for (let j = 0; j < n; j++) {
      if (ad[j] !== bd[j]) differ++;
      if (!(abs(ad[j] - bd[j]) < gridStep(3) * 1.0001)) throw new Error(`element ${j}: ${ad[j]} and ${bd[j]} are not neighbouring grid points`);
    }
    expect(differ).toBeGreaterThan(n / 10);
    expect(differ).toBeLessThan(n * 0.9);
  });

  // Restore bound: w1 = fl(w + az) = w + az + e1 with |e1| <= ulp(w1)/2; w2 = fl(w1 - az) = fl(w + e1)
  // is the float nearest w + e1, and w is a float, so |w2 - w| <= 2|e1| <= ulp(w1): one ulp of the
  // perturbed value (<= 2 ulp of w when |az| <= |w|). MeZO's +a, -2a, +a likewise ends within
  // ulp(w1) + ulp(w2) of w.
  run.each(DIRECTIONS.map((o) => [label(o), o] as const))('+a then -a restores within 1 ulp of the perturbed value (%s, 1M elements)', (_name, o) => {
    const n = (1 << 20) + 37, w = weights(n, 17), a = f(1e-3);
    const t = Tensor.from(Float32Array.from(w));
    perturbSync(t, a, { ...o, first: 3 });
    const w1 = copy(t);
    perturbSync(t, -a, { ...o, first: 3 });
    const w2 = t.data();
    let exact = 0, worstUlps = 0;
    for (let j = 0; j < n; j++) {
      const err = abs(w2[j] - w[j]);
      if (err > ulp32(w1[j])) throw new Error(`element ${j}: |${w2[j]} - ${w[j]}| > ulp(${w1[j]})`);
      if (err === 0) exact++;
      if (abs(o.dist === 'rademacher' ? a : a * 5.8) <= abs(w[j])) worstUlps = max(worstUlps, err / ulp32(w[j]));
    }
    expect(worstUlps).toBeLessThanOrEqual(2);
    expect(exact / n).toBeGreaterThan(0.5); // most elements come back exactly
  });

  run.each(DIRECTIONS.map((o) => [label(o), o] as const))('MeZO +a, -2a, +a follows the exact fp32 sequence and ends within ulp(w1) + ulp(w2) (%s)', async (_name, o) => {
    const n = 300_007, w = weights(n, 23), a = f(2.5e-3), first = 1_000_003;
    const t = Tensor.from(Float32Array.from(w));
    await perturb(t, a, { ...o, first });
    const w1 = copy(t);
    await perturb(t, -2 * a, { ...o, first });
    const w2 = copy(t);
    await perturb(t, a, { ...o, first });
    const w3 = t.data(), d = dir(o);
    for (let j = 0; j < n; j++) {
      if (abs(w3[j] - w[j]) > ulp32(w1[j]) + ulp32(w2[j])) throw new Error(`element ${j}: ${w3[j]} vs ${w[j]}`);
    }
    for (let j = 0; j < n; j += 977) {
      const z = directionAt(d, first + j);
      const r1 = fmaf(a, z, w[j]), r2 = fmaf(f(-2 * a), z, r1), r3 = fmaf(a, z, r2);
      expect([w1[j], w2[j], w3[j]]).toEqual([r1, r2, r3]);
    }
  });

  run('results do not depend on the thread count, sync or async', async () => {
    const n = (1 << 20) + 4321, w = weights(n, 5);
    for (const o of DIRECTIONS) {
      const runs: Buffer[] = [];
      for (const threads of [1, 2, 3]) {
        setThreads(threads);
        const t = Tensor.fromArray(w);
        if (threads === 2) await perturb(t, 0.01, { ...o, first: 777 });
        else perturbSync(t, 0.01, { ...o, first: 777 });
        runs.push(Buffer.from(copy(t).buffer));
        t.dispose();
      }
      expect(runs[1].equals(runs[0])).toBe(true);
      expect(runs[2].equals(runs[0])).toBe(true);
    }
    setThreads(cpuInfo().threads);
  });

  run('a slice perturbed on its own (first = offset) equals the same elements of the whole', () => {
    const n = 50_000, w = weights(n, 9), o = DIRECTIONS[0];
    const whole = Tensor.from(Float32Array.from(w));
    perturbSync(whole, 0.5, { ...o, first: 1000 });
    const part = Tensor.from(w.slice(12_345, 40_000));
    perturbSync(part, 0.5, { ...o, first: 1000 + 12_345 });
    expect(bits(part.data() as Float32Array).equals(bits((whole.data() as Float32Array).subarray(12_345, 40_000)))).toBe(true);
  });
});

describe('every path (scalar, AVX2, AVX-512 where present) agrees bit for bit', () => {
  (hasAvx2 ? test : test.skip)('on random sizes, starts and directions (skipped: no AVX2 on this CPU)', () => {
    const rand = prng(31);
    for (let trial = 0; trial < 24; trial++) {
      const o = { ...DIRECTIONS[trial % DIRECTIONS.length], seed: BigInt(trial) * 0x9e3779b97f4a7c15n % 2n ** 64n };
      const n = trial === 0 ? 1 << 20 : floor(rand() * 20_000), first = floor(rand() * 2 ** 45);
      const w = weights(n, trial), alpha = f(rand() - 0.5), out: Buffer[] = [];
      for (const path of CPU_PATHS) {
        setCpuPath(path);
        const t = Tensor.from(Float32Array.from(w));
        perturbSync(t, alpha, { ...o, first });
        out.push(bits(t.data() as Float32Array));
      }
      for (let i = 1; i < out.length; i++) expect([CPU_PATHS[i], out[i].equals(out[0])]).toEqual([CPU_PATHS[i], true]);
    }
    setCpuPath('auto');
  });
});

describe.each(CPU_PATHS)('index-subset perturbation on the %s path', (path) => {
  const run = path === 'scalar' || hasAvx2 ? test : test.skip;
  beforeEach(() => {
    if (path === 'scalar' || hasAvx2) setCpuPath(path);
  });

  function shuffled(idx: Uint32Array, seed: number): Uint32Array {
    const r = prng(seed), a = Uint32Array.from(idx);
    for (let i = a.length - 1; i > 0; i--) {
      const j = floor(r() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }

  // starts: small, crossing 2^32 inside the tensor (64-bit element indices carry), beyond 2^45
  const FIRSTS = [4093, 2 ** 32 - 100_000, 2 ** 45 + 3];
  run.each(DIRECTIONS.map((o, k) => [label(o), FIRSTS[k % FIRSTS.length], o] as const))('equals the dense perturbation masked to the indices (%s, first %i)', (_name, first, o) => {
    const n = 200_003, w = weights(n, 3), rand = prng(77);
    const dense = Tensor.from(Float32Array.from(w));
    perturbSync(dense, -0.25, { ...o, first });
    const dd = dense.data();
    for (const density of [0.0001, 0.03, 0.6]) {
      const list: number[] = [];
      for (let i = 0; i < n; i++) if (rand() < density) list.push(i);
      if (list[list.length - 1] !== n - 1) list.push(n - 1);
      const sorted = Uint32Array.from(list);
      for (const idx of [sorted, shuffled(sorted, list.length)]) {
        const t = Tensor.from(Float32Array.from(w));
        perturbIndicesSync(t, idx, -0.25, { ...o, first });
        const got = t.data(), member = new Uint8Array(n);
        for (const i of idx) member[i] = 1;
        for (let i = 0; i < n; i++) {
          const want = member[i] ? dd[i] : w[i];
          if (!Object.is(got[i], want)) throw new Error(`element ${i} (${member[i] ? 'listed' : 'not listed'}): got ${got[i]}, want ${want}`);
        }
      }
    }
  });

  run('a u32 tensor of indices, async, and thread counts give the same bits', async () => {
    const n = 100_000, w = weights(n, 4), idx = Tensor.fromArray(Array.from({ length: 30_000 }, (_, k) => (k * 7919) % n), [30_000], 'u32');
    const o: DirectionOptions = { seed: 11, stream: 4, dist: 'gaussian', bits: 5 };
    const runs: Buffer[] = [];
    for (const threads of [1, 2, 3]) {
      setThreads(threads);
      const t = Tensor.from(Float32Array.from(w));
      await perturbIndices(t, idx, 0.1, o);
      runs.push(Buffer.from(copy(t).buffer));
    }
    setThreads(cpuInfo().threads);
    const t = Tensor.from(Float32Array.from(w));
    perturbIndicesSync(t, idx.data() as Uint32Array, 0.1, o);
    expect(runs[1].equals(runs[0]) && runs[2].equals(runs[0])).toBe(true);
    expect(bits(t.data() as Float32Array).equals(runs[0])).toBe(true);
    idx.dispose();
  });

  run('an empty index list changes nothing', () => {
    const w = weights(100, 1), t = Tensor.from(Float32Array.from(w));
    perturbIndicesSync(t, new Uint32Array(0), 1, DIRECTIONS[0]);
    expect(bits(t.data() as Float32Array).equals(bits(w))).toBe(true);
  });

  // Bad lists are rejected before anything is written: the offending entry is last, after many
  // valid ones that a scatter would already have applied.
  const BAD: [string, (n: number) => Uint32Array, string][] = [
    ['an index = size', (n) => Uint32Array.from([...Array(50_000).keys(), n]), 'ZOTUNE_OUT_OF_RANGE'],
    ['an index far out of range (unsorted list)', (n) => Uint32Array.from([...Array(50_000).keys()].reverse().concat([2 ** 32 - 1])), 'ZOTUNE_OUT_OF_RANGE'],
    ['a repeated index (sorted list)', () => Uint32Array.from([...Array(50_000).keys(), 49_999]), 'ZOTUNE_INVALID_ARGUMENT'],
    ['a repeated index (unsorted list)', () => Uint32Array.from([...Array(50_000).keys()].reverse().concat([12_345])), 'ZOTUNE_INVALID_ARGUMENT'],
  ];
  run.each(BAD)('%s is refused with the tensor unchanged', async (_what, make, code) => {
    const n = 60_000, w = weights(n, 8), t = Tensor.from(Float32Array.from(w)), idx = make(n);
    expect(() => perturbIndicesSync(t, idx, 1, DIRECTIONS[0])).toThrow(expect.objectContaining({ code }));
    await expect(perturbIndices(t, idx, 1, DIRECTIONS[1])).rejects.toMatchObject({ code });
    expect(bits(t.data() as Float32Array).equals(bits(w))).toBe(true);
  });
});

describe('bad input gets a coded error and changes nothing', () => {
  const o = DIRECTIONS[0];
  const fresh = () => Tensor.from(weights(64, 2));

  test('wrong dtypes', () => {
    expect(() => perturbSync(Tensor.zeros([4], 'i32'), 1, o)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => perturbSync(Tensor.zeros([4], 'f64'), 1, o)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    const t = fresh(), before = copy(t);
    expect(() => perturbIndicesSync(t, new Int32Array([1, 2]) as unknown as Uint32Array, 1, o)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => perturbIndicesSync(t, Tensor.zeros([2], 'i32'), 1, o)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    // the addon checks too, whatever the caller
    const w = new Float32Array(8);
    expect(() => native().perturbIndices(w, 0, 8, new Int32Array([1]), 0, 1, 1, 1, 0, 0, 0, 4, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(bits(t.data() as Float32Array).equals(bits(before))).toBe(true);
  });

  test.each([NaN, Infinity, -Infinity, 1e39])('alpha %p is ZOTUNE_NONFINITE', async (alpha) => {
    const t = fresh(), before = copy(t);
    expect(() => perturbSync(t, alpha, o)).toThrow(expect.objectContaining({ code: 'ZOTUNE_NONFINITE' }));
    expect(() => perturbIndicesSync(t, new Uint32Array([1]), alpha, o)).toThrow(expect.objectContaining({ code: 'ZOTUNE_NONFINITE' }));
    await expect(perturb(t, alpha, o)).rejects.toMatchObject({ code: 'ZOTUNE_NONFINITE' });
    expect(bits(t.data() as Float32Array).equals(bits(before))).toBe(true);
  });

  test.each([
    ['unknown dist', { ...o, dist: 'cauchy' as never }],
    ['bits = 1', { ...o, bits: 1 }],
    ['bits = 9', { ...o, bits: 9 }],
    ['fractional bits', { ...o, bits: 2.5 }],
    ['unknown srPurpose', { ...o, bits: 4, srPurpose: 'weight' as never }],
    ['negative seed', { ...o, seed: -1 }],
    ['seed beyond 64 bits', { ...o, seed: 2n ** 64n }],
    ['stream beyond 32 bits', { ...o, stream: 2 ** 32 }],
    ['missing stream', { seed: 1, dist: 'gaussian' } as never],
    ['negative first', { ...o, first: -1 }],
  ])('%s is ZOTUNE_INVALID_ARGUMENT', (_what, opts) => {
    const t = fresh(), before = copy(t);
    expect(() => perturbSync(t, 1, opts as DirectionOptions)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => perturbIndicesSync(t, new Uint32Array([0]), 1, opts as DirectionOptions)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(bits(t.data() as Float32Array).equals(bits(before))).toBe(true);
  });

  test('a region beyond the buffer is ZOTUNE_OUT_OF_RANGE', () => {
    const w = new Float32Array(8);
    expect(() => native().perturb(w, 4, 8, 1, 1, 0, 0, 0, 4, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    expect(() => native().perturbIndices(w, 0, 8, new Uint32Array(2), 4, 2, 1, 1, 0, 0, 0, 4, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    expect(() => native().perturb(w, 2, 1, 1, 1, 0, 0, 0, 4, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' })); // misaligned
  });

  test('disposed tensors and index tensors are refused, async too', async () => {
    const t = Tensor.zeros([16]);
    t.dispose();
    expect(() => perturbSync(t, 1, o)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DISPOSED' }));
    await expect(perturb(t, 1, o)).rejects.toMatchObject({ code: 'ZOTUNE_DISPOSED' });
    const live = Tensor.zeros([16]), idx = Tensor.zeros([4], 'u32');
    idx.dispose();
    expect(() => perturbIndicesSync(live, idx, 1, o)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DISPOSED' }));
    await expect(perturbIndices(live, idx, 1, o)).rejects.toMatchObject({ code: 'ZOTUNE_DISPOSED' });
    live.dispose();
  });

  test('indices that alias the weights are read before anything is written', () => {
    // the index list [3, 2, 1, 0] is stored in w[0..3] itself: perturbing w[3] first rewrites idx[3]
    // (to float bits far beyond the tensor), so the scatter must work from indices read beforehand
    const buf = new ArrayBuffer(64 * 4), w = new Float32Array(buf), idx = new Uint32Array(buf, 0, 4);
    idx.set([3, 2, 1, 0]);
    const before = Float32Array.from(w), d: Dir = { seed: 1n, stream: 0, dist: 'rademacher', bits: 0, srPurpose: 4 };
    native().perturbIndices(w, 0, 64, idx, 0, 4, 0.5, 1, 0, 1, 0, 4, 0);
    for (let i = 0; i < 64; i++) expect(w[i]).toBe(i < 4 ? fmaf(0.5, directionAt(d, i), before[i]) : 0);
  });
});
