/**
 * ZO optimisers, estimator statistics, the trainer and log replay, on a quadratic with the model's
 * ZO contract (test/helpers/zo-quadratic.ts; the directions come from the real perturbation
 * kernels). Statistical checks use fixed seeds, so they cannot flake; each states its bound.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setCpuPath, setThreads, cpuInfo, Tensor, memory } from '../lib';
import { ZoOptimizer, querySeed, type MicroBatch } from '../lib/zo/optimizer';
import { fit, type TrainData, type TrainEvent } from '../lib/zo/trainer';
import { ZoLog } from '../lib/zo/log';
import { replay, optimizerFromHeader, optimizerHeader } from '../lib/zo/replay';
import { QuadraticModel } from './helpers/zo-quadratic';

const code = (c: string) => expect.objectContaining({ code: c });
const mb: MicroBatch = { sequences: [[0]], forward: {}, loss: (r) => r.loss };
const quadData: TrainData = { batch: () => mb };
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-zo-'));

async function drain(it: AsyncGenerator<TrainEvent, unknown>): Promise<TrainEvent[]> {
  const out: TrainEvent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

test('query seeds are a pure 64-bit function of (run seed, step, query)', () => {
  const s = querySeed(1, 2, 0);
  expect(querySeed(1, 2, 0)).toBe(s);
  expect(s).toBeLessThan(1n << 64n);
  const all = new Set<bigint>();
  for (let step = 0; step < 100; step++) for (let q = 0; q < 4; q++) all.add(querySeed(1, step, q));
  expect(all.size).toBe(400);
  expect(querySeed(2, 2, 0)).not.toBe(s);
});

test('optimiser options are validated', () => {
  expect(() => new ZoOptimizer({ method: 'sgd' as never })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  expect(() => new ZoOptimizer({ method: 'mezo', eps: 0 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  expect(() => new ZoOptimizer({ method: 'mezo', queries: 0 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  expect(() => new ZoOptimizer({ method: 'quzo', directionBits: 9 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  expect(() => new ZoOptimizer({ method: 'mezo', directionBits: 4 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  expect(() => new ZoOptimizer({ method: 'zo-adam', beta2: 1 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  expect(new ZoOptimizer({ method: 'quzo' }).direction).toEqual({ dist: 'gaussian', bits: 4 });
});

describe('estimator statistics on a quadratic (d = 256)', () => {
  // For a quadratic the central difference is exact: g = ∇L·z_probe. With K samples:
  //  s = mean_k g_k (z_update,k · ∇L) / ‖∇L‖² has mean 1 when E[z_probe z_updateᵀ] = I, and
  //  standard deviation ≤ sqrt(3/K) (the product of two correlated N(0, ‖∇L‖²) variables has
  //  variance ≤ 3‖∇L‖⁴, with rounding noise included); bound used: |s − 1| < 5·sqrt(3/K).
  //  The mean of g_k z_k misses ∇L by E‖·‖² = (d + 1)‖∇L‖²/K (Gaussian z); bound: ratio in [0.6, 1.5].
  const K = 6000;
  const model = new QuadraticModel([200, 56], 0.3);
  const grad = model.gradient(), g2 = dot(grad, grad), d = grad.length;
  afterAll(() => model.dispose());

  async function samples(opt: ZoOptimizer, seedBase: number, probeAsUpdate = false) {
    let s = 0;
    const mean = new Float64Array(d);
    for (let k = 0; k < K; k++) {
      const seed = querySeed(seedBase, k, 0);
      const est = await opt.estimate(model, [mb], [seed]);
      const z = model.direction(seed, opt.direction, probeAsUpdate ? 'probe' : 'update');
      const g = est.queries[0].g;
      s += (g * dot(z, grad)) / g2;
      for (let i = 0; i < d; i++) mean[i] += (g * z[i]) / K;
    }
    let err = 0;
    for (let i = 0; i < d; i++) err += (mean[i] - grad[i]) ** 2;
    return { s: s / K, mseRatio: (err * K) / ((d + 1) * g2) };
  }

  test('MeZO (Gaussian): E[g z] = ∇L', async () => {
    const r = await samples(new ZoOptimizer({ method: 'mezo', eps: 1e-2 }), 11);
    expect(Math.abs(r.s - 1)).toBeLessThan(5 * Math.sqrt(3 / K));
    expect(r.mseRatio).toBeGreaterThan(0.6);
    expect(r.mseRatio).toBeLessThan(1.5);
  });

  test('MeZO (Rademacher): E[g z] = ∇L', async () => {
    const r = await samples(new ZoOptimizer({ method: 'mezo', eps: 1e-2, dist: 'rademacher' }), 12);
    expect(Math.abs(r.s - 1)).toBeLessThan(5 * Math.sqrt(3 / K));
  });

  test('QuZO: independent probe/update roundings give an unbiased estimate; one rounding reused is biased', async () => {
    const quzo = new ZoOptimizer({ method: 'quzo', eps: 1e-2, directionBits: 3 });
    const indep = await samples(quzo, 13);
    expect(Math.abs(indep.s - 1)).toBeLessThan(5 * Math.sqrt(3 / K));
    // The released code's Q1 = Q2: E[Q(z)Q(z)ᵀ] = I + diag(rounding variance); at 3 bits (grid step
    // 1.92) the variance averages ≈ step²/6 ≈ 0.6, so s ≈ 1.6: the test above would catch it.
    const same = await samples(quzo, 13, true);
    expect(same.s - 1).toBeGreaterThan(10 * Math.sqrt(3 / K));
  });

  test('QuZO roundings: unbiased given z, and the two independent of each other', () => {
    const dir = { dist: 'gaussian' as const, bits: 4 };
    const exact = { dist: 'gaussian' as const, bits: 0 };
    let n = 0, e1sum = 0, e2sum = 0, e12 = 0, e11 = 0, e22 = 0, differ = 0;
    for (let k = 0; k < 200; k++) {
      const seed = querySeed(99, k, 0);
      const z = model.direction(seed, exact, 'probe'), q1 = model.direction(seed, dir, 'probe'), q2 = model.direction(seed, dir, 'update');
      for (let i = 0; i < d; i++) {
        const a = q1[i] - z[i], b = q2[i] - z[i];
        e1sum += a;
        e2sum += b;
        e12 += a * b;
        e11 += a * a;
        e22 += b * b;
        if (q1[i] !== q2[i]) differ++;
        n++;
      }
    }
    // rounding errors: mean 0 (|mean| < 5 sd/sqrt(n)), correlation 0 (|corr| < 5/sqrt(n))
    const sd1 = Math.sqrt(e11 / n), sd2 = Math.sqrt(e22 / n);
    expect(Math.abs(e1sum / n)).toBeLessThan((5 * sd1) / Math.sqrt(n));
    expect(Math.abs(e2sum / n)).toBeLessThan((5 * sd2) / Math.sqrt(n));
    expect(Math.abs(e12 / n / (sd1 * sd2))).toBeLessThan(5 / Math.sqrt(n));
    expect(differ / n).toBeGreaterThan(0.2);
  });
});

describe('trainer on the quadratic', () => {
  test('MeZO lowers the loss; the log replays to the same bits; skipped steps leave weights alone', async () => {
    const dir = tmp();
    const model = new QuadraticModel();
    const opt = new ZoOptimizer({ method: 'mezo', eps: 1e-3, queries: 2, weightDecay: 0.01 });
    const log = ZoLog.create(path.join(dir, 'log'), { optimizer: optimizerHeader(opt) });
    const l0 = model.loss();
    const events = await drain(fit(model, opt, quadData, { steps: 300, lr: { kind: 'cosine', lr: 2e-3, totalSteps: 300, warmupSteps: 10 }, seed: 5, log }));
    expect(events.filter((e) => e.type === 'step')).toHaveLength(300);
    expect(model.loss()).toBeLessThan(0.6 * l0);
    log.close();
    const again = ZoLog.open(path.join(dir, 'log'));
    expect(again.records()).toHaveLength(300);
    const fresh = new QuadraticModel();
    expect(await replay(fresh, optimizerFromHeader(again.header), again)).toBe(300);
    expect(fresh.bytes().equals(model.bytes())).toBe(true);
    // a prefix replays to a different point
    const prefix = new QuadraticModel();
    await replay(prefix, optimizerFromHeader(again.header), again, { upTo: 100 });
    expect(prefix.bytes().equals(model.bytes())).toBe(false);
    again.close();
    [model, fresh, prefix].forEach((m) => m.dispose());
    fs.rmSync(dir, { recursive: true });
  });

  test('a resumed run (replay + fit from the log) equals the uninterrupted run bit for bit', async () => {
    for (const method of ['mezo', 'quzo', 'zo-sgd-momentum', 'zo-adam'] as const) {
      const dir = tmp();
      const lr = method === 'zo-adam' ? 1e-3 : 1e-3;
      const full = new QuadraticModel();
      const o1 = new ZoOptimizer({ method, eps: 1e-3 });
      await drain(fit(full, o1, quadData, { steps: 40, lr, seed: 3 }));
      // first part, then a "crash"
      const a = new QuadraticModel();
      const oa = new ZoOptimizer({ method, eps: 1e-3 });
      const logA = ZoLog.create(path.join(dir, 'log'), { optimizer: optimizerHeader(oa) });
      await drain(fit(a, oa, quadData, { steps: 40, lr, seed: 3, log: logA, signal: AbortSignal.timeout(60_000), onStep: (e) => { if (e.step === 16) throw new Error('crash'); } })).catch((e) => expect(String(e)).toContain('crash'));
      logA.close();
      const logB = ZoLog.open(path.join(dir, 'log'));
      expect(logB.nextStep).toBe(17);
      const b = new QuadraticModel();
      const ob = optimizerFromHeader(logB.header);
      await replay(b, ob, logB);
      await drain(fit(b, ob, quadData, { steps: 40, lr, seed: 3, log: logB }));
      expect(logB.records().map((r) => r.step)).toEqual(Array.from({ length: 40 }, (_, i) => i));
      expect(b.bytes().equals(full.bytes())).toBe(true);
      logB.close();
      [full, a, b].forEach((m) => m.dispose());
      [o1, oa, ob].forEach((o) => o.dispose());
      fs.rmSync(dir, { recursive: true });
    }
  });

  test('divergence guard: non-finite and exploding losses skip the update and are logged as skipped', async () => {
    const dir = tmp();
    const model = new QuadraticModel();
    const opt = new ZoOptimizer({ method: 'mezo' });
    const bad = new Set([3, 15]);
    const data: TrainData = {
      batch: (step) => ({ ...mb, loss: (r) => (step === 3 ? NaN : step === 15 ? r.loss * 100 : r.loss) }),
    };
    const log = ZoLog.create(path.join(dir, 'log'), {});
    const snapshots: Buffer[] = [];
    const events = await drain(fit(model, opt, data, { steps: 20, lr: 1e-3, seed: 1, log, onStep: () => void snapshots.push(model.bytes()) }));
    const steps = events.filter((e) => e.type === 'step');
    expect(steps.filter((e) => e.skipped).map((e) => e.step)).toEqual([...bad]);
    expect(steps[3].skipped).toBe('non-finite loss');
    expect(steps[15].skipped).toMatch(/> 5 × running mean/);
    expect(snapshots[3].equals(snapshots[2])).toBe(true);
    expect(snapshots[15].equals(snapshots[14])).toBe(true);
    expect(snapshots[4].equals(snapshots[3])).toBe(false);
    expect(log.records()[3]).toMatchObject({ step: 3, queries: [], skipped: 'non-finite loss' });
    log.close();
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  });

  test('a logged run refuses, before its first step, in-place probes (unreplayable drift) and a decay factor lr·λ > 1', async () => {
    const dir = tmp();
    const model = new QuadraticModel();
    const log = ZoLog.create(path.join(dir, 'log'), {});
    const inPlace = new ZoOptimizer({ method: 'mezo', probeMode: 'in-place' }), decay = new ZoOptimizer({ method: 'mezo', weightDecay: 10 });
    await expect(drain(fit(model, inPlace, quadData, { steps: 3, lr: 1e-3, seed: 1, log }))).rejects.toMatchObject({ code: 'ZOTUNE_UNSUPPORTED' });
    await expect(drain(fit(model, decay, quadData, { steps: 3, lr: { kind: 'linear', lr: 0.2, totalSteps: 3, warmupSteps: 1 }, seed: 1, log }))).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    await expect(drain(fit(model, decay, quadData, { steps: 3, lr: () => NaN, seed: 1, log }))).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    expect(log.records()).toHaveLength(0);
    expect((await drain(fit(model, inPlace, quadData, { steps: 2, lr: 1e-3, seed: 1 }))).length).toBe(2); // unlogged: allowed
    log.close();
    [inPlace, decay].forEach((o) => o.dispose());
    model.dispose();
    fs.rmSync(dir, { recursive: true });
  });

  test('gradient accumulation probes every micro-batch with the same directions; abort stops between steps', async () => {
    const model = new QuadraticModel();
    const seen: { seed: string; micro: number }[] = [];
    const probe = model.zoProbe.bind(model);
    model.zoProbe = async (batch, opts) => {
      seen.push({ seed: String(opts.seed), micro: (batch as number[][])[0][0] });
      return probe(batch, opts);
    };
    const data: TrainData = { batch: (_s, m) => ({ ...mb, sequences: [[m]] }) };
    const opt = new ZoOptimizer({ method: 'mezo', queries: 2 });
    const ac = new AbortController();
    const events: TrainEvent[] = [];
    await expect(
      (async () => {
        for await (const e of fit(model, opt, data, { steps: 10, lr: 1e-3, seed: 1, microBatches: 3, signal: ac.signal })) {
          events.push(e);
          if (e.step === 1) ac.abort();
        }
      })(),
    ).rejects.toThrow();
    expect(events).toHaveLength(2);
    // step 0: query 0 on micro 0,1,2 then query 1 on micro 0,1,2
    expect(seen.slice(0, 6).map((s) => s.micro)).toEqual([0, 1, 2, 0, 1, 2]);
    expect(new Set(seen.slice(0, 3).map((s) => s.seed)).size).toBe(1);
    expect(seen[3].seed).not.toBe(seen[0].seed);
    expect(seen).toHaveLength(12);
    model.dispose();
  });

  test('evaluation every N steps keeps the best', async () => {
    const model = new QuadraticModel();
    const opt = new ZoOptimizer({ method: 'mezo' });
    const accs = [0.5, 0.7, 0.6, 0.7];
    let k = 0;
    const it = fit(model, opt, quadData, { steps: 9, lr: 1e-3, seed: 1, evalEvery: 3, evalAtStart: true, evaluate: async () => ({ accuracy: accs[k], loss: 1 - 0.01 * k++ }) });
    const events: TrainEvent[] = [];
    let r = await it.next();
    while (!r.done) {
      events.push(r.value);
      r = await it.next();
    }
    const evals = events.filter((e) => e.type === 'eval');
    expect(evals.map((e) => e.after)).toEqual([0, 3, 6, 9]);
    expect(evals.map((e) => e.best)).toEqual([true, true, false, true]);
    expect(r.value).toEqual({ after: 9, metrics: { accuracy: 0.7, loss: 0.97 } });
    model.dispose();
  });
});

describe('ZO momentum and Adam state kernels', () => {
  afterEach(() => {
    setCpuPath('auto');
    setThreads(cpuInfo().threads);
  });

  function run(method: 'zo-sgd-momentum' | 'zo-adam', path: 'scalar' | 'avx2', threads: number) {
    setCpuPath(path);
    setThreads(threads);
    const model = new QuadraticModel([70001, 333], 0.2);
    const opt = new ZoOptimizer({ method, eps: 1e-3, queries: 3, weightDecay: 0.1 });
    return { model, opt };
  }

  test.each(['zo-sgd-momentum', 'zo-adam'] as const)('%s: bit-identical on scalar/AVX2 paths and any thread count, matches a float reference', async (method) => {
    const rec = (k: number) => ({ lr: 1e-2, queries: [0, 1, 2].map((q) => ({ seed: String(querySeed(4, k, q)), g: 0.5 - q * 0.7 + k })) });
    const results: Buffer[] = [];
    const paths: ['scalar' | 'avx2', number][] = [['scalar', 1], ['scalar', 2]];
    if (cpuInfo().avx2) paths.push(['avx2', 1], ['avx2', 2]);
    for (const [p, t] of paths) {
      const { model, opt } = run(method, p, t);
      for (let k = 0; k < 3; k++) await opt.apply(model, rec(k));
      expect(opt.stateBytes).toBe((70001 + 333) * 4 * opt.stateBuffers);
      results.push(model.bytes());
      model.dispose();
      opt.dispose();
    }
    for (const r of results) expect(r.equals(results[0])).toBe(true);
    // float64 reference of the update rules (tolerance: float32 rounding of a few operations)
    const model = new QuadraticModel([70001, 333], 0.2);
    const ref = model.params.map((p) => Float64Array.from(p.tensor.data() as Float32Array));
    const m = ref.map((w) => new Float64Array(w.length)), v = ref.map((w) => new Float64Array(w.length));
    for (let k = 0; k < 3; k++) {
      const r = rec(k);
      const zs = r.queries.map((q) => model.direction(BigInt(q.seed), { dist: 'gaussian', bits: 0 }, 'update'));
      let off = 0;
      model.params.forEach((p, j) => {
        for (let i = 0; i < ref[j].length; i++) {
          let g = 0;
          r.queries.forEach((q, n) => (g += (q.g / 3) * zs[n][off + i]));
          const keep = p.decay ? 1 - r.lr * 0.1 : 1;
          if (method === 'zo-sgd-momentum') {
            m[j][i] = 0.9 * m[j][i] + g;
            ref[j][i] = ref[j][i] * keep - r.lr * m[j][i];
          } else {
            m[j][i] = 0.9 * m[j][i] + 0.1 * g;
            v[j][i] = 0.999 * v[j][i] + 0.001 * g * g;
            const mh = m[j][i] / (1 - 0.9 ** (k + 1)), vh = v[j][i] / (1 - 0.999 ** (k + 1));
            ref[j][i] = ref[j][i] * keep - (r.lr * mh) / (Math.sqrt(vh) + 1e-8);
          }
        }
        off += ref[j].length;
      });
    }
    const got = new Float32Array(new Uint8Array(results[0]).buffer);
    let maxErr = 0, at = 0;
    ref.forEach((w) => w.forEach((x) => (maxErr = Math.max(maxErr, Math.abs(got[at++] - x)))));
    expect(maxErr).toBeLessThan(1e-5);
    model.dispose();
  });

  test('state is counted under "optimizer" and freed by dispose; quantized weights are refused', async () => {
    const live = () => memory().engine.live.optimizer ?? 0;
    const before = live();
    const model = new QuadraticModel([1000], 0);
    const opt = new ZoOptimizer({ method: 'zo-adam' });
    await opt.apply(model, { lr: 1e-3, queries: [{ seed: '1', g: 1 }] });
    expect(opt.stateBytes).toBe(8000);
    expect(live() - before).toBe(8000);
    opt.dispose();
    expect(opt.stateBytes).toBe(0);
    expect(live()).toBe(before);
    const fake = { ...model, trainable: model.trainable.bind(model), trainableTensors: () => [{ name: 'w0.weight', id: 0, tensor: { codes: 1 } }] };
    const o2 = new ZoOptimizer({ method: 'zo-sgd-momentum' });
    await expect(o2.apply(fake as never, { lr: 1e-3, queries: [{ seed: '1', g: 1 }] })).rejects.toThrow(code('ZOTUNE_UNSUPPORTED'));
    await expect(o2.apply(model, { lr: 1e-3, queries: [{ seed: '1', g: NaN }] })).rejects.toThrow(code('ZOTUNE_NONFINITE'));
    model.dispose();
  });

  test('momentum and Adam lower the quadratic loss', async () => {
    for (const [method, lr] of [['zo-sgd-momentum', 2e-4], ['zo-adam', 2e-2]] as const) {
      const model = new QuadraticModel();
      const l0 = model.loss();
      const opt = new ZoOptimizer({ method });
      await drain(fit(model, opt, quadData, { steps: 200, lr, seed: 2 }));
      expect(model.loss()).toBeLessThan(0.7 * l0);
      model.dispose();
      opt.dispose(); // its state would otherwise stay live for later suites in this worker
    }
  });
});
