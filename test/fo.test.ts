import { LlamaModel, Tensor, memory, setCpuPath } from '../lib';
import { AdamW, SGD, FoTrainer, gradNorm, clipScale } from '../lib/fo';
import { makeSchedule } from '../lib/schedule';
import { native } from '../lib/native/load';
import { modelDir } from './helpers/models';
import { uniforms } from './helpers/random-llama';

const code = (c: string) => expect.objectContaining({ code: c });
const u2 = 2 ** -24;

function rand(n: number, seed: number, scale = 1, offset = 0): Float32Array<ArrayBuffer> {
  const u = uniforms(seed), a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = offset + scale * u();
  return a;
}

describe('optimiser kernels', () => {
  const n = 1003; // a tail of 3 after the 8-lane body

  test('AdamW equals a float64 reference within fp32 rounding, several steps, decay on/off', async () => {
    for (const wd of [0, 0.1]) {
      const w = Tensor.from(rand(n, 1)), g = rand(n, 2, 0.5);
      const params = new Map([['p', w]]), grads = new Map([['p', Tensor.from(g)]]);
      const opt = new AdamW(params, { lr: 1e-2, weightDecay: wd, noDecay: () => false });
      const m = new Float64Array(n), v = new Float64Array(n);
      let worst = 0;
      for (let t = 1; t <= 4; t++) {
        const w0 = Float64Array.from(w.data());
        for (let i = 0; i < n; i++) g[i] = Math.fround(g[i] * 0.9 + 0.01 * i / n); // a new gradient each step
        await opt.step(grads, { gradScale: 0.5 });
        const [mt, vt] = (opt as unknown as { state: Map<string, Tensor[]> }).state.get('p')!.map((x) => x.data());
        for (let i = 0; i < n; i++) {
          const gi = g[i] * 0.5;
          const mi = 0.9 * m[i] + 0.1 * gi, vi = 0.999 * v[i] + 0.001 * gi * gi;
          const upd = ((1e-2 / (1 - 0.9 ** t)) * mi) / (Math.sqrt(vi / (1 - 0.999 ** t)) + 1e-8);
          const wr = w0[i] * (1 - 1e-2 * wd) - upd;
          // per-element bounds (units of 2^-24): m 3 roundings, v 4, w: 2 on w*decay and ~12 on the
          // update (constants, m, v, sqrt, eps add, multiply, divide)
          worst = Math.max(worst,
            Math.abs(mt[i] - mi) / (3 * u2 * Math.abs(mi) + 2 * u2 * Math.abs(m[i]) + 1e-30),
            Math.abs(vt[i] - vi) / (4 * u2 * Math.abs(vi) + 2 * u2 * Math.abs(v[i]) + 1e-30),
            Math.abs(w.data()[i] - wr) / (2 * u2 * Math.abs(w0[i]) + 12 * u2 * Math.abs(upd) + 1e-30));
          m[i] = mt[i];
          v[i] = vt[i];
        }
      }
      expect(worst).toBeLessThanOrEqual(1);
      opt.dispose();
    }
  });

  test('SGD with momentum and Nesterov equals a float64 reference', async () => {
    for (const nesterov of [false, true]) {
      const w = Tensor.from(rand(n, 3)), g = Tensor.from(rand(n, 4));
      const opt = new SGD(new Map([['p', w]]), { lr: 0.1, momentum: 0.9, nesterov, weightDecay: 0.01 });
      const buf = new Float64Array(n);
      for (let t = 0; t < 3; t++) {
        const w0 = Float64Array.from(w.data());
        await opt.step(new Map([['p', g]]), { gradScale: 2 });
        for (let i = 0; i < n; i++) {
          const gi = g.data()[i] * 2 + 0.01 * w0[i];
          const b = t === 0 ? gi : 0.9 * buf[i] + gi;
          const d = nesterov ? gi + 0.9 * b : b;
          expect(Math.abs(w.data()[i] - (w0[i] - 0.1 * d))).toBeLessThanOrEqual(8 * u2 * (Math.abs(w0[i]) + Math.abs(0.1 * d)));
          buf[i] = b;
        }
        // next step continues from the kernel's own buffer
        const st = (opt as unknown as { state: Map<string, Tensor[]> }).state.get('p')![0].data();
        for (let i = 0; i < n; i++) buf[i] = st[i];
      }
      opt.dispose();
    }
  });

  test('scalar and AVX2 paths give the same bits; sums of squares exact to double rounding', () => {
    const run = () => {
      const w = rand(n, 5), g = rand(n, 6), m = rand(n, 7, 0.1), v = rand(n, 8, 0.1, 0.2), acc = rand(n, 9, 1, 2);
      native().adamwUpdate(w, g, m, v, n, Float64Array.from([1e-3, 0.9, 0.95, 1e-8, 0.1, 0.7, 3]));
      const w2 = rand(n, 10), b2 = rand(n, 11);
      native().sgdUpdate(w2, g, b2, n, Float64Array.from([0.1, 0.9, 0.01, 1, 1, 0]));
      native().accumulateSquares(acc, g, n, 0.25);
      return [w, m, v, w2, b2, acc, Float64Array.of(native().sumSquares(g, n))];
    };
    const fast = run();
    setCpuPath('scalar');
    let slow;
    try {
      slow = run();
    } finally {
      setCpuPath('auto');
    }
    fast.forEach((a, i) => expect(Buffer.from(a.buffer).equals(Buffer.from(slow[i].buffer))).toBe(true));
    const g = rand(n, 6);
    let s = 0;
    for (const x of g) s += x * x;
    expect(Math.abs(fast[6][0] - s)).toBeLessThan(1e-13 * s);
  });

  test('gradNorm, clipScale and bad input', async () => {
    const a = Tensor.from(Float32Array.of(3, 0)), b = Tensor.from(Float32Array.of(4));
    expect(await gradNorm([a, b], 0.5)).toBeCloseTo(2.5, 12);
    expect(clipScale(10, 1)).toBeCloseTo(0.1, 6);
    expect(clipScale(0.5, 1)).toBe(1);
    expect(() => clipScale(NaN, 1)).toThrow(code('ZOTUNE_NONFINITE'));
    const x = new Float32Array(4);
    expect(() => native().adamwUpdate(x, x, new Float32Array(4), new Float32Array(4), 4, Float64Array.from([1, 0.9, 0.9, 1e-8, 0, 1, 1]))).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const shared = new Float32Array(8); // partially overlapping views: the update would read what it wrote
    expect(() => native().adamwUpdate(shared.subarray(0, 4), shared.subarray(2, 6), new Float32Array(4), new Float32Array(4), 4, Float64Array.from([1, 0.9, 0.9, 1e-8, 0, 1, 1]))).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => native().adamwUpdate(x, new Float32Array(4), new Float32Array(4), new Float32Array(3), 4, Float64Array.from([1, 0.9, 0.9, 1e-8, 0, 1, 1]))).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => native().adamwUpdate(x, new Float32Array(4), new Float32Array(4), new Float32Array(4), 4, Float64Array.from([1, 1, 0.9, 1e-8, 0, 1, 1]))).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => native().sgdUpdate(x, new Float32Array(4), null, 4, Float64Array.from([1, 0.9, 0, 1, 0, 1]))).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    await expect(new AdamW(new Map([['p', a]]), { lr: 1 }).step(new Map())).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  });
});

const micro = modelDir('micro-llama');
(micro ? describe : describe.skip)('first-order training on micro-llama', () => {
  test('a few AdamW steps (accumulation over 2 micro-batches, clipping, cosine schedule) lower the loss on a fixed batch', async () => {
    const model = await LlamaModel.load(micro!);
    const trainer = new FoTrainer(model, {
      optimizer: { kind: 'adamw', lr: makeSchedule({ lr: 3e-3, kind: 'cosine', warmupSteps: 1, totalSteps: 8 }) },
      maxGradNorm: 1,
    });
    try {
      const a = [[5, 100, 2000, 31, 7, 4000, 12, 9, 300, 17]], b = [[44, 45, 46, 47, 48, 49, 50]];
      const losses: number[] = [];
      for (let s = 0; s < 6; s++) losses.push((await trainer.step([{ batch: a }, { batch: b }])).loss);
      const after = await model.forward([...a, ...b], { logits: 'none' });
      expect(after.loss).toBeLessThan(losses[0] - 0.5);
      for (let i = 1; i < losses.length; i++) expect(losses[i]).toBeLessThan(losses[i - 1]);
      const mem = memory().engine.live;
      let params = 0;
      for (const n of trainer.grads.keys()) params += model.tensor(n).byteLength;
      expect(mem.optimizer).toBeGreaterThanOrEqual(2 * params);
      expect(trainer.optimizer.stateBytes()).toBe(2 * params);
      expect(mem.gradients).toBeGreaterThanOrEqual(params);
    } finally {
      trainer.dispose();
      model.dispose();
    }
  });

  test('SGD on a subset of parameters leaves the others untouched', async () => {
    const model = await LlamaModel.load(micro!);
    const name = 'model.layers.1.mlp.down_proj.weight';
    const trainer = new FoTrainer(model, { optimizer: { kind: 'sgd', lr: 0.5, momentum: 0.9 }, params: [name] });
    try {
      const other = Float32Array.from(model.tensor('model.layers.0.mlp.down_proj.weight').data() as Float32Array);
      const batch = [[5, 100, 2000, 31, 7, 4000, 12, 9, 300, 17]];
      const l0 = (await trainer.step([{ batch }])).loss;
      await trainer.step([{ batch }]);
      const l2 = (await trainer.step([{ batch }])).loss;
      expect(l2).toBeLessThan(l0);
      expect(Buffer.from(other.buffer).equals(Buffer.from((model.tensor('model.layers.0.mlp.down_proj.weight').data() as Float32Array).slice().buffer))).toBe(true);
    } finally {
      trainer.dispose();
      model.dispose();
    }
  });
});

(micro ? describe : describe.skip)('diagonal Fisher on micro-llama', () => {
  test('equals the mean of squared per-batch gradients; unseen embedding rows stay zero', async () => {
    const { lossAndGrad } = await import('../lib/model/grad');
    const { fisher } = await import('../lib/fo');
    const model = await LlamaModel.load(micro!);
    const batches = [[[5, 100, 2000, 31, 7]], [[44, 45, 46, 47]], { batch: [[9, 8, 7, 6, 5, 4]], opts: { lossMask: [[0, 0, 1, 1, 1, 1]] } }];
    const names = ['model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'model.norm.weight', 'lm_head.weight'];
    try {
      const F = await fisher(model, batches, { params: names });
      expect([...F.keys()]).toEqual(names);
      const ref = new Map(names.map((n) => [n, new Float64Array(model.tensor(n).size)]));
      for (const b of batches) {
        const r = Array.isArray(b) ? await lossAndGrad(model, b, { params: names }) : await lossAndGrad(model, b.batch, { ...b.opts, params: names });
        for (const n of names) {
          const g = r.grads.get(n)!.data(), acc = ref.get(n)!;
          for (let i = 0; i < acc.length; i++) acc[i] += (g[i] * g[i]) / batches.length;
        }
        r.grads.forEach((t) => t.dispose());
      }
      for (const n of names) {
        const f = F.get(n)!.data(), r = ref.get(n)!;
        let worst = 0, total = 0, negative = 0;
        for (let i = 0; i < r.length; i++) {
          if (!(f[i] >= 0)) negative++;
          worst = Math.max(worst, Math.abs(f[i] - r[i]) / (r[i] + 1e-38));
          total += f[i];
        }
        expect(negative).toBe(0);
        expect(worst).toBeLessThan(1e-6);
        expect(total).toBeGreaterThan(0);
      }
      const emb = F.get('model.embed_tokens.weight')!.data(), D = model.config.hiddenSize;
      for (const row of [0, 3000]) expect(emb.slice(row * D, (row + 1) * D).every((x) => x === 0)).toBe(true);
      expect(emb[100 * D] + emb[100 * D + 1]).toBeGreaterThan(0);
      F.forEach((t) => t.dispose());
    } finally {
      model.dispose();
    }
  });
});

(micro ? describe : describe.skip)('quantization-aware training on micro-llama', () => {
  const batch = [[5, 100, 2000, 31, 7, 4000, 12, 9, 300, 17]];

  test('QAT = the exact backward of the fake-quantized model, applied to the fp32 masters (STE)', async () => {
    const { lossAndGrad, isLinearWeight } = await import('../lib/model/grad');
    const { fakeQuantize } = await import('../lib/quant');
    const { llamaTensorNames } = await import('../lib/model/llama');
    const master = await LlamaModel.load(micro!), fakeModel = await LlamaModel.load(micro!);
    try {
      for (const [format, granularity] of [['int8', undefined], ['int4', 32], ['fp8-e4m3', undefined]] as const) {
        for (const n of llamaTensorNames(master.config))
          if (isLinearWeight(n)) await fakeQuantize(master.tensor(n), format, { granularity }, fakeModel.tensor(n));
        const before = Float32Array.from(master.tensor('model.layers.0.mlp.up_proj.weight').data() as Float32Array);
        const qat = await lossAndGrad(master, batch, { qat: { format, granularity } });
        const ref = await lossAndGrad(fakeModel, batch);
        const plain = await lossAndGrad(master, batch);
        expect(qat.loss).toBe(ref.loss);
        expect(qat.loss).not.toBe(plain.loss);
        for (const [k, t] of ref.grads) expect(Buffer.from((qat.grads.get(k)!.data() as Float32Array).buffer).equals(Buffer.from((t.data() as Float32Array).buffer))).toBe(true);
        // masters untouched by the forward
        expect(Buffer.from(before.buffer).equals(Buffer.from((master.tensor('model.layers.0.mlp.up_proj.weight').data() as Float32Array).slice().buffer))).toBe(true);
        [qat, ref, plain].forEach((r) => r.grads.forEach((t) => t.dispose()));
      }
    } finally {
      master.dispose();
      fakeModel.dispose();
    }
  });

  test('QAT int4 AdamW steps lower the fake-quantized loss', async () => {
    const model = await LlamaModel.load(micro!);
    const trainer = new FoTrainer(model, { optimizer: { kind: 'adamw', lr: 3e-3 }, qat: { format: 'int4', granularity: 32 } });
    try {
      const losses: number[] = [];
      for (let s = 0; s < 5; s++) losses.push((await trainer.step([{ batch }])).loss);
      expect(losses[4]).toBeLessThan(losses[0] - 0.5);
    } finally {
      trainer.dispose();
      model.dispose();
    }
  });
});
