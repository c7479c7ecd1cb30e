import { nn, setCpuPath, setThreads, Tensor, cpuInfo } from '../lib';
import { prng, uniformOpen, wordAt } from './helpers/reference';
import { cpuPaths } from './helpers/paths';
import { attentionRef, invFreq, logSoftmaxRef, rmsNormRef, ropeRef, sampleRef, siluRef } from './helpers/nnref';

const U = 2 ** -24;
const PATHS = cpuPaths('nn');

afterAll(() => {
  setCpuPath('auto');
  setThreads(cpuInfo().threads);
});

function randTensor(shape: number[], rnd: () => number, scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = Tensor.empty(shape);
  const d = t.data() as Float32Array;
  for (let i = 0; i < n; i++) d[i] = (rnd() * 2 - 1) * scale;
  return t;
}

function f32Of(t: Tensor): Float32Array {
  return Float32Array.from(t.data() as Float32Array);
}

const code = (c: string) => expect.objectContaining({ code: c });

interface AttnCase {
  lens: number[];
  starts: number[];
  cap: number;
  Hq: number;
  Hkv: number;
  hd: number;
  masked?: number[]; // [b, slot] pairs flattened
}

function attnCase(c: AttnCase, seed: number) {
  const rnd = prng(seed);
  const B = c.lens.length;
  const off = [0];
  for (const l of c.lens) off.push(off[off.length - 1] + l);
  const q = randTensor([off[B], c.Hq, c.hd], rnd, 2);
  const k = randTensor([B, c.Hkv, c.hd, c.cap], rnd, 2);
  const v = randTensor([B, c.Hkv, c.cap, c.hd], rnd);
  const mask = new Uint8Array(B * c.cap).fill(1);
  for (let i = 0; i < (c.masked ?? []).length; i += 2) mask[c.masked![i] * c.cap + c.masked![i + 1]] = 0;
  return { q, k, v, off, mask };
}

const ATTN_CASES: AttnCase[] = [
  { lens: [5, 1, 40], starts: [0, 7, 3], cap: 48, Hq: 4, Hkv: 2, hd: 16, masked: [0, 2, 2, 0, 2, 33, 2, 34] },
  { lens: [3, 17], starts: [0, 0], cap: 20, Hq: 3, Hkv: 1, hd: 13 },
  { lens: [70], starts: [0], cap: 70, Hq: 2, Hkv: 2, hd: 32, masked: [0, 0, 0, 1, 0, 40] },
  // many whole key blocks per query (rows paired on them), head dims past one 32-column pass
  { lens: [150, 37], starts: [0, 20], cap: 160, Hq: 4, Hkv: 2, hd: 40, masked: [1, 3, 1, 100] },
];

describe.each(PATHS)('transformer ops on the %s path', (path) => {
  beforeAll(() => setCpuPath(path));

  test.each([
    [1, 1],
    [3, 7],
    [2, 8],
    [4, 64],
    [3, 100],
    [2, 257],
  ])('rmsNorm [%i, %i] matches float64 within 4u per element', (rows, dim) => {
    const rnd = prng(rows * 1000 + dim);
    const x = randTensor([rows, dim], rnd, 3), w = randTensor([dim], rnd);
    const y = nn.rmsNormSync(x, w, 1e-5);
    const ref = rmsNormRef(x.data(), w.data(), rows, dim, 1e-5);
    const got = y.data();
    for (let i = 0; i < ref.length; i++) expect(Math.abs(got[i] - ref[i])).toBeLessThanOrEqual(4 * U * Math.abs(ref[i]) + 1e-37);
    // in place gives the same bits
    const x2 = Tensor.fromArray(x.data(), [rows, dim]);
    nn.rmsNormSync(x2, w, 1e-5, x2);
    expect(Array.from(x2.data())).toEqual(Array.from(got));
    [x, w, y, x2].forEach((t) => t.dispose());
  });

  test.each([2, 6, 16, 32, 64])('rope, headDim %i, with and without llama3 scaling, matches float64', async (hd) => {
    const rnd = prng(hd);
    const rows = 7, heads = 3;
    const pos = Array.from({ length: rows }, () => Math.floor(rnd() * 5000));
    pos[0] = 0;
    for (const rope of [{ theta: 10000 }, { theta: 500000, scaling: { type: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } }]) {
      const x = randTensor([rows, heads, hd], rnd);
      const ref = ropeRef(x.data(), rows, heads, hd, pos, rope);
      const src = Float64Array.from(x.data());
      await nn.rope(x, pos, rope);
      const got = x.data();
      for (let t = 0; t < rows; t++)
        for (let h = 0; h < heads; h++)
          for (let i = 0; i < hd / 2; i++) {
            const b = (t * heads + h) * hd;
            const bound = 4 * U * (Math.abs(src[b + i]) + Math.abs(src[b + i + hd / 2]));
            expect(Math.abs(got[b + i] - ref[b + i])).toBeLessThanOrEqual(bound);
            expect(Math.abs(got[b + i + hd / 2] - ref[b + i + hd / 2])).toBeLessThanOrEqual(bound);
          }
      x.dispose();
    }
  });

  test('llama3 inverse frequencies follow the three wavelength bands', () => {
    const s = { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    const plain = invFreq(128, { theta: 500000 }), scaled = invFreq(128, { theta: 500000, scaling: s });
    let high = 0, low = 0, mid = 0;
    plain.forEach((f, i) => {
      const wl = (2 * Math.PI) / f;
      if (wl < 8192 / 4) expect(scaled[i]).toBe(f), high++;
      else if (wl > 8192) expect(scaled[i]).toBeCloseTo(f / 8, 15), low++;
      else expect(scaled[i] > f / 8 && scaled[i] < f).toBe(true), mid++;
    });
    expect(high && low && mid).toBeTruthy();
  });

  test.each(ATTN_CASES.map((c, i) => [i, c] as const))('attention case %i (GQA, causal, padding mask, KV offsets) matches float64', (i, c) => {
    const { q, k, v, off, mask } = attnCase(c, 100 + i);
    const scale = 1 / Math.sqrt(c.hd);
    const out = nn.attentionSync(q, k, v, { seqOffsets: off, seqStart: c.starts, keyMask: mask });
    const ref = attentionRef({ q: q.data(), k: k.data(), v: v.data(), seqOffsets: off, seqStart: c.starts, keyMask: mask, Hq: c.Hq, Hkv: c.Hkv, hd: c.hd, cap: c.cap, scale });
    const got = out.data();
    let maxErr = 0;
    for (let j = 0; j < ref.length; j++) maxErr = Math.max(maxErr, Math.abs(got[j] - ref[j]));
    expect(maxErr).toBeLessThan(2e-6); // |v| <= 1
    [q, k, v, out].forEach((t) => t.dispose());
  });

  test('a query that sees only masked keys outputs zeros', () => {
    const q = Tensor.fromArray([1, 2, 3, 4, 5, 6, 7, 8], [2, 1, 4]);
    const k = Tensor.fromArray(new Array(8).fill(1), [1, 1, 4, 2]), v = Tensor.fromArray(new Array(8).fill(3), [1, 1, 2, 4]);
    const out = nn.attentionSync(q, k, v, { seqOffsets: [0, 2], keyMask: Uint8Array.from([0, 1]) });
    expect(Array.from(out.data())).toEqual([0, 0, 0, 0, 3, 3, 3, 3]);
    [q, k, v, out].forEach((t) => t.dispose());
  });

  test('swiglu matches float64 within 4 ulp (or 1e-38 below the normal range), exp range ends and non-finite inputs included', () => {
    const vals = [0, -0, 1e-30, -1e-30, 0.5, -0.5, 3, -3, 20, -20, 87, -87, 87.5, -87.5, 88.5, -88.5, 88.7, -88.7, 100, -100, 103.9, -103.9, 105, -105, 1e30, -1e30, Infinity, -Infinity];
    const rnd = prng(5);
    for (let i = 0; i < 3000; i++) vals.push((rnd() * 2 - 1) * 30);
    const g = Tensor.fromArray(vals), up = Tensor.fromArray(vals.map((_, i) => (i % 3) - 1 + 0.25));
    const out = nn.swigluSync(g, up);
    const got = out.data(), gd = g.data(), ud = up.data();
    for (let i = 0; i < vals.length; i++) {
      const ref = siluRef(gd[i]) * ud[i];
      if (gd[i] === -Infinity) expect(Number.isNaN(got[i]) || got[i] === 0).toBe(true);
      else if (!Number.isFinite(ref)) expect(got[i]).toBe(ref);
      else expect(Math.abs(got[i] - ref)).toBeLessThanOrEqual(4 * U * Math.abs(ref) + 1e-38);
    }
    const nan = nn.swigluSync(Tensor.fromArray([NaN]), Tensor.fromArray([1]));
    expect(Number.isNaN(nan.data()[0])).toBe(true);
    [g, up, out, nan].forEach((t) => t.dispose());
  });

  test('embedding gathers rows exactly', async () => {
    const rnd = prng(9);
    const table = randTensor([50, 12], rnd);
    const ids = [3, 0, 49, 3, 17];
    const out = await nn.embedding(table, ids);
    const t = table.data(), o = out.data();
    ids.forEach((id, r) => expect(Array.from(o.subarray(r * 12, r * 12 + 12))).toEqual(Array.from(t.subarray(id * 12, id * 12 + 12))));
    [table, out].forEach((x) => x.dispose());
  });

  test.each([1, 7, 1000, 4096])('logProbs over %i classes matches float64 log-softmax within 1e-6', async (n) => {
    const rnd = prng(n);
    const rows = 6;
    const logits = randTensor([rows, n], rnd, 10);
    const targets = [0, n - 1, -1, Math.floor(n / 2), -1, Math.floor(rnd() * n)];
    const r = await nn.logProbs(logits, targets);
    const x = logits.data();
    let sum = 0, count = 0;
    for (let i = 0; i < rows; i++) {
      if (targets[i] < 0) {
        expect(Number.isNaN(r.logprobs[i])).toBe(true);
        continue;
      }
      const ref = x[i * n + targets[i]] - logSoftmaxRef(x, i * n, n).lse;
      expect(Math.abs(r.logprobs[i] - ref)).toBeLessThan(1e-6);
      sum -= ref;
      count++;
    }
    expect(r.count).toBe(count);
    expect(Math.abs(r.loss - sum / count)).toBeLessThan(1e-6);
    logits.dispose();
  });

  test('argmax takes the lowest id on ties and ignores NaN', () => {
    const x = Tensor.fromArray([1, 5, NaN, 5, -Infinity, 2, 5, 0, 0, 0, NaN, -1, 0, 0, 0, 0, 0, 9, 9, 3], [2, 10]);
    expect(Array.from(nn.argmaxSync(x))).toEqual([1, 7]);
    const big = Tensor.fromArray(Array.from({ length: 1003 }, (_, i) => (i === 517 || i === 1001 ? 7 : i % 5)));
    expect(Array.from(nn.argmaxSync(big))).toEqual([517]);
    expect(() => nn.argmaxSync(Tensor.fromArray([NaN, NaN]))).toThrow(code('ZOTUNE_NONFINITE'));
    [x, big].forEach((t) => t.dispose());
  });

  test.each([
    [0, 0, 1],
    [1, 0, 1],
    [0.7, 5, 1],
    [1.3, 0, 0.9],
    [0.8, 40, 0.95],
  ])('sample (temperature %f, topK %i, topP %f) follows the reference rule and the Philox stream', (temperature, topK, topP) => {
    const rnd = prng(Math.round(temperature * 100 + topK + topP * 10));
    const rows = 4, n = 60;
    const logits = randTensor([rows, n], rnd, 4);
    const positions = [0, 5, 17, 123456];
    const seed = 0xfeedbeefn;
    const got = nn.sampleSync(logits, { temperature, topK, topP, seed, positions });
    const x = logits.data();
    for (let r = 0; r < rows; r++) {
      const u = uniformOpen(wordAt({ seed, stream: r, purpose: 2 }, positions[r]));
      expect(got[r]).toBe(sampleRef(x.subarray(r * n, (r + 1) * n), temperature, topK, topP, u));
    }
    logits.dispose();
  });

  test('sampled frequencies follow softmax(logits / T) restricted to top-k', () => {
    const rows = 2000;
    const base = [2, 1, 0.5, 0, -1];
    const logits = Tensor.fromArray(Array.from({ length: rows * 5 }, (_, i) => base[i % 5]), [rows, 5]);
    const counts = new Array(5).fill(0);
    const ids = nn.sampleSync(logits, { temperature: 0.9, topK: 3, seed: 7, positions: Array.from({ length: rows }, (_, i) => i) });
    ids.forEach((id) => counts[id]++);
    const w = base.slice(0, 3).map((l) => Math.exp(l / 0.9));
    const tot = w.reduce((a, b) => a + b);
    expect(counts[3] + counts[4]).toBe(0);
    w.forEach((wi, i) => {
      const p = wi / tot, sd = Math.sqrt((rows * p * (1 - p)));
      expect(Math.abs(counts[i] - rows * p)).toBeLessThan(4 * sd);
    });
    logits.dispose();
  });
});

describe('the scalar, AVX2 and AVX-512 paths give identical bits; thread count does not matter', () => {
  const runAll = () => {
    const rnd = prng(77);
    const res: Float32Array[] = [];
    const x = randTensor([5, 259], rnd, 3), w = randTensor([259], rnd);
    res.push(f32Of(nn.rmsNormSync(x, w, 1e-6)));
    const r = randTensor([9, 3, 36], rnd);
    nn.ropeSync(r, [0, 1, 2, 3, 100, 511, 7, 8, 9], { theta: 10000 });
    res.push(f32Of(r));
    for (const [i, c] of ATTN_CASES.entries()) {
      const { q, k, v, off, mask } = attnCase(c, 300 + i);
      res.push(f32Of(nn.attentionSync(q, k, v, { seqOffsets: off, seqStart: c.starts, keyMask: mask })));
    }
    const g = randTensor([20011], rnd, 12), u = randTensor([20011], rnd);
    res.push(f32Of(nn.swigluSync(g, u)));
    const logits = randTensor([3, 4099], rnd, 8);
    res.push(Float32Array.from(nn.logProbsSync(logits, [5, 4098, 0]).logprobs));
    // every bit of the double log-probabilities (their sums of exp in double follow the 8-lane order)
    const wide = randTensor([48, 4099], rnd, 40); // sums of exps spanning many binades
    res.push(new Float32Array(Float64Array.from(nn.logProbsSync(wide, Array.from({ length: 48 }, (_, i) => (i * 97) % 4099)).logprobs).buffer));
    res.push(Float32Array.from(nn.argmaxSync(logits)));
    res.push(Float32Array.from(nn.sampleSync(logits, { temperature: 0.9, topK: 50, topP: 0.9, seed: 3, positions: [1, 2, 3] })));
    return res;
  };
  const bits = (a: Float32Array[]) => a.map((x) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length)));

  test('every op, every path, 1 and 3 threads', () => {
    const runs: number[][][] = [];
    for (const p of PATHS)
      for (const threads of [1, 3]) {
        setCpuPath(p);
        setThreads(threads);
        runs.push(bits(runAll()));
      }
    for (const r of runs.slice(1)) expect(r).toEqual(runs[0]);
  });
});

describe('bad input gets a coded error', () => {
  test('dtype, shape and range checks', () => {
    const x = Tensor.zeros([2, 4]), w = Tensor.zeros([3]);
    expect(() => nn.rmsNormSync(x, w, 1e-5)).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    expect(() => nn.rmsNormSync(Tensor.zeros([2, 4], 'i32'), Tensor.zeros([4]), 1e-5)).toThrow(code('ZOTUNE_DTYPE'));
    expect(() => nn.rmsNormSync(x, Tensor.zeros([4]), -1)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => nn.ropeSync(Tensor.zeros([2, 1, 5]), [0, 1], { theta: 10000 })).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    expect(() => nn.ropeSync(Tensor.zeros([2, 1, 4]), [0, -1], { theta: 10000 })).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => nn.ropeSync(Tensor.zeros([2, 1, 4]), [0, 1], { theta: 0.5 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const q = Tensor.zeros([3, 2, 4]), k = Tensor.zeros([1, 1, 4, 4]);
    expect(() => nn.attentionSync(q, k, k, { seqOffsets: [0, 3], seqStart: [2] })).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => nn.attentionSync(q, k, k, { seqOffsets: [0, 2] })).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    expect(() => nn.attentionSync(q, Tensor.zeros([1, 3, 4, 4]), Tensor.zeros([1, 3, 4, 4]), { seqOffsets: [0, 3] })).toThrow(code('ZOTUNE_SHAPE_MISMATCH'));
    const table = Tensor.zeros([10, 4]);
    expect(() => nn.embeddingSync(table, [1, 10])).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => nn.embeddingSync(table, [-1])).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => nn.logProbsSync(table, [0, 0, 0, 0, 0, 0, 0, 0, 0, 4])).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => nn.sampleSync(table, { seed: 1, topP: 0 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => nn.sampleSync(table, { seed: 1, temperature: -1 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    [x, w, q, k, table].forEach((t) => t.dispose());
  });

  test('async ops reject with the same codes, disposed tensors included', async () => {
    const table = Tensor.zeros([10, 4]);
    await expect(nn.embedding(table, [11])).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    table.dispose();
    await expect(nn.embedding(table, [1])).rejects.toMatchObject({ code: 'ZOTUNE_DISPOSED' });
  });
});
