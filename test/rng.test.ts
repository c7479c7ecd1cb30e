import { rng, setCpuPath, setThreads, Tensor, cpuInfo } from '../lib';
import { boxMuller, CPU_PATHS, Key, NORMAL_MAX, normalAt, normalAt64, philox4x32, prng, rademacherAt, uniformOpen, wordAt } from './helpers/reference';
import { cpuPaths } from './helpers/paths';

// Standard normal CDF via erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7: far below the KS bound).
function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2, t = 1 / (1 + 0.3275911 * z);
  const erf = 1 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) * Math.exp(-z * z);
  return x >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

const hex = (a: ArrayLike<number>) => Array.from(a, (x) => (x >>> 0).toString(16).padStart(8, '0'));

afterAll(() => {
  setCpuPath('auto');
  setThreads(cpuInfo().threads);
});

describe('Philox4x32-10 known answers (Salmon et al. 2011, Random123 kat_vectors)', () => {
  const cases: [number[], number[], string[]][] = [
    [[0, 0, 0, 0], [0, 0], ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']],
    [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], ['408f276d', '41c83b0e', 'a20bc7c6', '6d5451fd']],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], ['d16cfe09', '94fdcceb', '5001e420', '24126ea1']],
  ];
  test.each(cases)('counter %j key %j', (ctr, key, want) => {
    expect(hex(rng.philox4x32(ctr, key))).toEqual(want);
    expect(hex(philox4x32(ctr, key))).toEqual(want);
  });
});

describe.each(CPU_PATHS)('random streams on the %s path', (path) => {
  beforeAll(() => {
    if (path === 'avx2' && !cpuInfo().avx2) return;
    setCpuPath(path);
  });

  const key: Key = { seed: 0x123456789abcdefn, stream: 7, purpose: 0 };

  test('raw words follow the documented element map', () => {
    const t = Tensor.zeros([1000], 'u32');
    rng.wordsSync(t, { seed: key.seed, stream: 7, purpose: 3 }, 12345);
    const got = t.data();
    for (let j = 0; j < 1000; j += 37) expect(got[j]).toBe(wordAt({ ...key, purpose: 3 }, 12345 + j));
    t.dispose();
  });

  test.each([0, 1, 31, 33, 1023, 4097])('normals are bit-identical to the JS reference (n=%i, unaligned start)', (n) => {
    const first = 5 + n * 3;
    const t = Tensor.zeros([n]);
    rng.fillSync(t, 'normal', { seed: key.seed, stream: 7 }, { first });
    const got = t.data();
    for (let j = 0; j < n; j++) expect(got[j]).toBe(normalAt(key, first + j));
    t.dispose();
  });

  test('normals match float64 libm Box-Muller within 3e-6', () => {
    const n = 4096;
    const t = Tensor.zeros([n]);
    rng.fillSync(t, 'normal', { seed: 99n, stream: 1 });
    const got = t.data();
    let maxErr = 0;
    for (let j = 0; j < n; j++) maxErr = Math.max(maxErr, Math.abs(got[j] - normalAt64({ seed: 99n, stream: 1, purpose: 0 }, j)));
    expect(maxErr).toBeLessThan(3e-6);
    t.dispose();
  });

  test('uniform, Rademacher and Bernoulli follow the reference', () => {
    const n = 3000, first = 2047;
    const u = Tensor.zeros([n]), r = Tensor.zeros([n]), b = Tensor.zeros([n]);
    rng.fillSync(u, 'uniform', { seed: 5, stream: 2 }, { first });
    rng.fillSync(r, 'rademacher', { seed: 5, stream: 2 }, { first });
    rng.fillSync(b, 'bernoulli', { seed: 5, stream: 2 }, { first, p: 0.3 });
    const [ud, rd, bd] = [u.data(), r.data(), b.data()];
    const kU = { seed: 5n, stream: 2, purpose: 2 }, kR = { seed: 5n, stream: 2, purpose: 1 }, kB = { seed: 5n, stream: 2, purpose: 3 };
    const thr = Math.round(0.3 * 2 ** 32);
    for (let j = 0; j < n; j++) {
      expect(ud[j]).toBe(uniformOpen(wordAt(kU, first + j)));
      expect(rd[j]).toBe(rademacherAt(kR, first + j));
      expect(bd[j]).toBe(wordAt(kB, first + j) < thr ? 1 : 0);
    }
    [u, r, b].forEach((t) => t.dispose());
  });

  test('values do not depend on thread count or on how the range is split', async () => {
    const n = 300_001;
    const runs: Float32Array[] = [];
    for (const threads of [1, 2, 3]) {
      setThreads(threads);
      const t = Tensor.zeros([n]);
      await rng.fill(t, 'normal', { seed: 42, stream: 9 });
      runs.push(Float32Array.from(t.data() as Float32Array));
      t.dispose();
    }
    expect(Buffer.from(runs[1].buffer).equals(Buffer.from(runs[0].buffer))).toBe(true);
    expect(Buffer.from(runs[2].buffer).equals(Buffer.from(runs[0].buffer))).toBe(true);
    // a slice of the stream filled on its own equals the same elements of the whole fill
    const part = Tensor.zeros([777]);
    rng.fillSync(part, 'normal', { seed: 42, stream: 9 }, { first: 123_457 });
    expect(Buffer.from((part.data() as Float32Array).buffer, 0, 777 * 4).equals(Buffer.from(runs[0].buffer, 123_457 * 4, 777 * 4))).toBe(true);
    part.dispose();
  });

  test('moments: normal mean 0, variance 1, kurtosis 3; Bernoulli rate p', () => {
    const n = 1 << 20;
    const t = Tensor.zeros([n]);
    rng.fillSync(t, 'normal', { seed: 2024, stream: 0 });
    const d = t.data();
    let s1 = 0, s2 = 0, s4 = 0;
    for (let j = 0; j < n; j++) { const x = d[j]; s1 += x; s2 += x * x; s4 += x * x * x * x; }
    const mean = s1 / n, v = s2 / n - mean * mean;
    expect(Math.abs(mean)).toBeLessThan(5 / Math.sqrt(n)); // 5 sigma
    expect(Math.abs(v - 1)).toBeLessThan(5 * Math.sqrt(2 / n));
    expect(Math.abs(s4 / n - 3)).toBeLessThan(5 * Math.sqrt(96 / n));
    rng.fillSync(t, 'bernoulli', { seed: 2024, stream: 0 }, { p: 0.1 });
    let ones = 0;
    for (let j = 0; j < n; j++) ones += d[j];
    expect(Math.abs(ones / n - 0.1)).toBeLessThan(5 * Math.sqrt((0.1 * 0.9) / n));
    t.dispose();
  });
});

describe('the one-word Box-Muller normal (16-bit radius, 16-bit angle)', () => {
  test('Kolmogorov-Smirnov against N(0, 1) on 2^20 samples, and a two-sided 4-sigma tail rate', () => {
    const n = 1 << 20;
    const t = Tensor.zeros([n]);
    rng.fillSync(t, 'normal', { seed: 77, stream: 3 });
    const x = Float64Array.from(t.data() as Float32Array).sort();
    t.dispose();
    let d = 0;
    for (let j = 0; j < n; j++) {
      const c = normalCdf(x[j]);
      d = Math.max(d, Math.abs(c - j / n), Math.abs((j + 1) / n - c));
    }
    expect(d).toBeLessThan(1.63 / Math.sqrt(n)); // KS critical value at the 1 % level
    const tail = x.filter((v) => Math.abs(v) > 3).length / n; // P(|z| > 3) = 2.6998e-3
    expect(Math.abs(tail - 2.6998e-3)).toBeLessThan(5 * Math.sqrt(2.6998e-3 / n));
  });

  test('|z| never exceeds NORMAL_MAX (direction.h kNormalMax, the QuZO grid span) and reaches it', () => {
    let max = 0;
    for (let q = 0; q < 4; q++)
      for (let j = 0; j < 0x4000; j++) {
        const [a, b] = boxMuller(((q << 30) | (j << 16)) >>> 0); // radius word 0: the largest radius
        max = Math.max(max, Math.abs(a), Math.abs(b));
      }
    expect(max).toBeLessThanOrEqual(NORMAL_MAX);
    expect(max).toBeGreaterThan(NORMAL_MAX * (1 - 1e-5));
  });

  test('a Philox word gives both outputs of one pair: elements 64b + 8w + l and 64b + 32 + 8w + l', () => {
    const key: Key = { seed: 5n, stream: 1, purpose: 0 };
    for (const i of [0, 7, 8, 31, 64 * 1000 + 13]) {
      const base = i - (i % 64) + (i % 32);
      const [n0, n1] = boxMuller(wordAt(key, (i >> 6) * 32 + (i % 32)));
      expect([normalAt(key, base), normalAt(key, base + 32)]).toEqual([n0, n1]);
    }
  });
});

describe('every path (scalar, AVX2, AVX-512 where present) agrees bit for bit', () => {
  const avx2 = cpuInfo().avx2;
  const paths = cpuPaths('rng'); // avx512: normals 32 Philox counters at a time (16 at an odd end)
  (avx2 ? test : test.skip)('on every distribution (skipped: no AVX2 on this CPU)', () => {
    const rand = prng(11);
    for (const dist of ['uniform', 'normal', 'rademacher', 'bernoulli'] as const) {
      for (let trial = 0; trial < 8; trial++) {
        const n = trial === 0 ? 100_000 : Math.floor(rand() * 5000), first = Math.floor(rand() * 1e9);
        const out: Buffer[] = [];
        for (const path of paths) {
          setCpuPath(path);
          const t = Tensor.zeros([n]);
          rng.fillSync(t, dist, { seed: BigInt(trial) << 40n, stream: trial }, { first, p: 0.7 });
          out.push(Buffer.from(Float32Array.from(t.data() as Float32Array).buffer));
          t.dispose();
        }
        for (let i = 1; i < out.length; i++) expect([paths[i], out[i].equals(out[0])]).toEqual([paths[i], true]);
      }
    }
    setCpuPath('auto');
  });
});

describe('bad input gets a coded error', () => {
  test('wrong dtype', () => {
    const t = Tensor.zeros([4], 'i32');
    expect(() => rng.fillSync(t, 'normal', { seed: 1 })).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
  });
  test('unknown distribution and bad probability', () => {
    const t = Tensor.zeros([4]);
    expect(() => rng.fillSync(t, 'cauchy' as never, { seed: 1 })).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => rng.fillSync(t, 'bernoulli', { seed: 1 }, { p: 1.5 })).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => rng.fillSync(t, 'normal', { seed: -1 })).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => rng.fillSync(t, 'normal', { seed: 1, stream: 2 ** 32 })).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
  });
  test('disposed tensors are refused, async too', async () => {
    const t = Tensor.zeros([4]);
    t.dispose();
    expect(() => rng.fillSync(t, 'normal', { seed: 1 })).toThrow(expect.objectContaining({ code: 'ZOTUNE_DISPOSED' }));
    await expect(rng.fill(t, 'normal', { seed: 1 })).rejects.toMatchObject({ code: 'ZOTUNE_DISPOSED' });
  });
});
