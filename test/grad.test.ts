import fs from 'node:fs';
import { LlamaModel, Tensor, perturbSync, setThreads, cpuInfo, setCpuPath } from '../lib';
import { lossAndGrad, lossAndGradF64 } from '../lib/model/grad';
import { llamaTensorNames } from '../lib/model/llama';
import { native } from '../lib/native/load';
import { modelDir } from './helpers/models';
import { writeRandomLlama } from './helpers/random-llama';
import { checkFiniteDifferences, f64Weights, normRel } from './helpers/grad-check';

const code = (c: string) => expect.objectContaining({ code: c });

// Two sequences, one with a left-padding token (attentionMask 0) and a loss mask.
const batch = [[3, 7, 1, 12, 5, 9], [4, 4, 11, 2]];
const opts = { attentionMask: [[1, 1, 1, 1, 1, 1], [0, 1, 1, 1]], lossMask: [[1, 1, 0, 1, 1, 1], [1, 1, 1, 1]] };

describe.each([
  ['untied, GQA 4/2', { hidden: 16, layers: 2, heads: 4, kvHeads: 2, inter: 24, vocab: 19 }],
  ['tied, MHA', { hidden: 8, layers: 1, heads: 2, kvHeads: 2, inter: 12, vocab: 13, tied: true }],
])('llama backward on a tiny random model (%s)', (_label, shape) => {
  let model: LlamaModel, w32: Map<string, Float32Array>, dir: string;
  beforeAll(async () => {
    ({ dir, weights: w32 } = writeRandomLlama(shape, 7));
    model = await LlamaModel.load(dir);
  });
  afterAll(() => {
    model.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('float64 gradients match central finite differences (rel err <= 1e-6, every parameter kind)', () => {
    checkFiniteDifferences(model, f64Weights(w32), batch, opts, 3);
  });

  test('fp32 fast path: loss equals forward(), gradients within the fp32 bound of float64', async () => {
    const ref = lossAndGradF64(model, f64Weights(w32), batch, opts);
    const fwd = await model.forward(batch, { ...opts, logits: 'none' });
    const r = await lossAndGrad(model, batch, opts);
    expect(r.count).toBe(fwd.count);
    expect(r.loss).toBe(fwd.loss);
    expect(Math.abs(r.loss - ref.loss)).toBeLessThan(1e-5 * Math.abs(ref.loss));
    // fp32 bound: normwise relative error <= 2e-5 per tensor (observed <= 5e-7: the fp32 GEMM
    // chains (K <= 24) and fp32-rounded activations cost a few units of 2^-24 per layer, amplified
    // by the conditioning of softmax/RMSNorm; a wrong term would be O(1))
    for (const [name, g] of r.grads) {
      const e = normRel(g.data() as Float32Array, ref.grads.get(name)!);
      if (!(e <= 2e-5)) throw new Error(`${name}: fp32 vs float64 relative error ${e}`);
    }
    r.grads.forEach((t) => t.dispose());
  });

  test('deterministic: same bits on 1, 2 and 3 threads, with and without recomputation, for a subset', async () => {
    const before = cpuInfo().threads;
    const runs: Map<string, Float32Array>[] = [];
    try {
      for (const [threads, recompute] of [[1, false], [2, false], [3, true]] as const) {
        setThreads(threads);
        const r = await lossAndGrad(model, batch, { ...opts, recompute });
        runs.push(new Map([...r.grads].map(([k, t]) => [k, Float32Array.from(t.data() as Float32Array)])));
        r.grads.forEach((t) => t.dispose());
      }
    } finally {
      setThreads(before);
    }
    for (const run of runs.slice(1))
      for (const [k, v] of run) expect(Buffer.from(v.buffer).equals(Buffer.from(runs[0].get(k)!.buffer))).toBe(true);
    const sub = ['model.layers.0.self_attn.k_proj.weight', 'model.norm.weight'];
    const r = await lossAndGrad(model, batch, { ...opts, params: sub });
    expect([...r.grads.keys()].sort()).toEqual([...sub].sort());
    for (const k of sub) expect(Buffer.from((r.grads.get(k)!.data() as Float32Array).buffer).equals(Buffer.from(runs[0].get(k)!.buffer))).toBe(true);
    r.grads.forEach((t) => t.dispose());
  });

  test('accumulation: two half-batches with scale 1/total equal the whole batch', async () => {
    const whole = await lossAndGrad(model, batch, { targets: 'next' });
    const total = whole.count;
    const into = new Map<string, Tensor>();
    await lossAndGrad(model, [batch[0]], { scale: 1 / total, into });
    await lossAndGrad(model, [batch[1]], { scale: 1 / total, into });
    for (const [k, t] of whole.grads) expect(normRel(into.get(k)!.data(), t.data())).toBeLessThan(1e-5);
    whole.grads.forEach((t) => t.dispose());
    into.forEach((t) => t.dispose());
  });

  test('bad input: coded errors, nothing computed', async () => {
    await expect(lossAndGrad(model, batch, { params: ['nope'] })).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    await expect(lossAndGrad(model, [[1, 99]])).rejects.toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    await expect(lossAndGrad(model, batch, { targets: 'none' })).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const c = (model as unknown as { cfgArg: Float64Array }).cfgArg;
    const names = llamaTensorNames(model.config);
    if (model.config.tieWordEmbeddings) names.push('model.embed_tokens.weight');
    const ws = names.map((n) => model.tensor(n).mem);
    const gs = names.map((n, i) => (i === 1 ? new Float32Array(1) : null)); // too short
    const call = () => native().llamaGrad(c, Float64Array.from([0, 1]), Int32Array.from([1, 2]), Int32Array.from([0, 2]), Int32Array.from([0, 1]), null, Int32Array.from([2, -1]), ...ws, ...gs);
    expect(call).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => native().llamaGrad(c, Float64Array.from([0, 1]), Int32Array.from([1, 2]), Int32Array.from([0, 2]), Int32Array.from([0, 1]), null, Int32Array.from([2, -1]), ...ws)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  });
});

const micro = modelDir('micro-llama');
(micro ? describe : describe.skip)('llama backward on micro-llama', () => {
  test('<grad L, z> matches the ZO directional derivative (L(θ+εz) − L(θ−εz)) / 2ε', async () => {
    const model = await LlamaModel.load(micro!);
    try {
      const b = [[5, 100, 2000, 31, 7, 4000, 12, 9, 300], [44, 45, 46, 47, 48]];
      const g = await lossAndGrad(model, b);
      const ids = LlamaModel.tensorIds(model.config);
      // eps·||z|| ~ 0.08 here: truncation O(eps²) (observed 7e-5 relative; 7.6e-3 at eps 1e-3, 6.5e-4 at 3e-4)
      const seed = 1234, eps = 1e-4;
      let dot = 0;
      for (const [name, t] of g.grads) {
        const z = perturbSync(Tensor.zeros(t.shape), 1, { seed, stream: ids.get(name)!, dist: 'gaussian' });
        const zd = z.data() as Float32Array, gd = t.data() as Float32Array;
        for (let i = 0; i < zd.length; i++) dot += zd[i] * gd[i];
        z.dispose();
      }
      const shift = (alpha: number) => {
        for (const name of ids.keys()) perturbSync(model.tensor(name), alpha, { seed, stream: ids.get(name)!, dist: 'gaussian' });
      };
      shift(eps);
      const lp = (await model.forward(b, { logits: 'none' })).loss;
      shift(-2 * eps);
      const lm = (await model.forward(b, { logits: 'none' })).loss;
      shift(eps);
      const zo = (lp - lm) / (2 * eps);
      expect(Math.abs(zo - dot)).toBeLessThan(1e-3 * Math.abs(dot));
      g.grads.forEach((t) => t.dispose());
    } finally {
      model.dispose();
    }
  });

  test('the scalar CPU path gives the same gradient bits as AVX2', async () => {
    const model = await LlamaModel.load(micro!);
    const b = [[5, 100, 2000, 31, 7, 4000, 12, 9, 300]];
    try {
      const fast = await lossAndGrad(model, b);
      setCpuPath('scalar');
      let slow;
      try {
        slow = await lossAndGrad(model, b);
      } finally {
        setCpuPath('auto');
      }
      // every kernel on the way has a bit-identical scalar reference (gemm.h, nn.h), the backward's
      // own element-wise kernels are shared: the same bits
      expect(slow.loss).toBe(fast.loss);
      for (const [k, t] of fast.grads) expect(Buffer.from((slow.grads.get(k)!.data() as Float32Array).buffer).equals(Buffer.from((t.data() as Float32Array).buffer))).toBe(true);
      fast.grads.forEach((t) => t.dispose());
      slow.grads.forEach((t) => t.dispose());
    } finally {
      model.dispose();
    }
  });
});
