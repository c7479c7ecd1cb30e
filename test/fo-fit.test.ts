/**
 * First-order methods through the ZO trainer and run folders: the candidate-restricted
 * cross-entropy of the native backward (finite differences in float64, equality with the ZO task
 * loss), FoOptimizer in fit() (loss, accumulation, divergence guard, abort), QAT's deployed view,
 * and `zotune finetune --method fo-*|qat-*|lowprec-*` run folders (checkpoint resume to the same
 * bytes, replay refused with a coded error, CLI usage errors).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LlamaModel, LlamaTokenizer, Tensor, memory, perturbSync } from '../lib';
import { lossAndGrad, lossAndGradF64 } from '../lib/model/grad';
import { FoOptimizer, FO_METHODS } from '../lib/fo/fit';
import { ZoOptimizer, querySeed } from '../lib/zo/optimizer';
import { fit, taskData, type TrainEvent } from '../lib/zo/trainer';
import { finetune, replayRun, type RunConfig } from '../lib/zo/run';
import { PromptTask, candidateCrossEntropy } from '../lib/tasks/task';
import { modelDir } from './helpers/models';
import { writeRandomLlama } from './helpers/random-llama';
import { checkFiniteDifferences, f64Weights, normRel } from './helpers/grad-check';
import { root, run, cleanEnv } from './helpers/spawn';

const code = (c: string) => expect.objectContaining({ code: c });
const micro = modelDir('micro-llama');
const d = micro ? describe : describe.skip;
const cli = path.join(root, 'dist', 'cli', 'main.js');

// every optimiser, gradient and model of these tests is freed; compared with the counts at the
// start because other suites share the process and may leave tensors awaiting garbage collection
const held = () => {
  const live = memory().engine.live as Record<string, number | undefined>;
  return { optimizer: live.optimizer ?? 0, gradients: live.gradients ?? 0, weights: live.weights ?? 0 };
};
let heldBefore: ReturnType<typeof held>;
beforeAll(() => {
  heldBefore = held();
});
afterAll(() => {
  const now = held();
  // garbage of earlier suites may be collected meanwhile, so nothing may have grown
  expect({ optimizer: now.optimizer > heldBefore.optimizer, gradients: now.gradients > heldBefore.gradients, weights: now.weights > heldBefore.weights })
    .toEqual({ optimizer: false, gradients: false, weights: false });
});

describe('candidate-restricted cross-entropy in the backward (tiny random model)', () => {
  let model: LlamaModel, w32: Map<string, Float32Array>, dir: string;
  // label-word style: a target only at each sequence's last position, softmax over 3 candidates
  const batch = [[3, 7, 1, 12, 5, 9], [4, 4, 11, 2]];
  const cands = [2, 5, 9];
  const targets = [[-1, -1, -1, -1, -1, 9], [-1, -1, -1, 2]];
  beforeAll(async () => {
    ({ dir, weights: w32 } = writeRandomLlama({ hidden: 16, layers: 2, heads: 4, kvHeads: 2, inter: 24, vocab: 19 }, 11));
    model = await LlamaModel.load(dir);
  });
  afterAll(() => {
    model.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('float64 gradients match central finite differences (rel err <= 1e-6, every parameter kind)', () => {
    const grads = checkFiniteDifferences(model, f64Weights(w32), batch, { targets, candidates: cands }, 5);
    // only the candidates' rows of the LM head get a gradient
    const head = grads.get('lm_head.weight')!, D = model.config.hiddenSize;
    for (let v = 0; v < model.config.vocabSize; v++) {
      const row = head.subarray(v * D, (v + 1) * D);
      expect(row.some((x) => x !== 0)).toBe(cands.includes(v));
    }
  });

  test('the loss is the cross-entropy over the candidate logits of the forward (the ZO task loss); fp32 gradients within the fp32 bound', async () => {
    const fwd = await model.forward(batch, { targets: 'none', logits: 'last' });
    const want = (candidateCrossEntropy(cands.map((t) => fwd.logits[0][t]), 2) + candidateCrossEntropy(cands.map((t) => fwd.logits[1][t]), 0)) / 2;
    const r = await lossAndGrad(model, batch, { targets, candidates: cands });
    expect(r.count).toBe(2);
    expect(Math.abs(r.loss - want)).toBeLessThan(1e-6 * want);
    const ref = lossAndGradF64(model, f64Weights(w32), batch, { targets, candidates: cands });
    for (const [name, g] of r.grads) {
      const e = normRel(g.data() as Float32Array, ref.grads.get(name)!);
      if (!(e <= 2e-5)) throw new Error(`${name}: fp32 vs float64 relative error ${e}`);
    }
    r.grads.forEach((t) => t.dispose());
  });

  test('bad candidates: coded errors', async () => {
    await expect(lossAndGrad(model, batch, { targets, candidates: [2, 5] })).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT')); // target 9 not a candidate
    await expect(lossAndGrad(model, batch, { targets, candidates: [2, 5, 9, 5] })).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    await expect(lossAndGrad(model, batch, { targets, candidates: [2, 5, 9, 19] })).rejects.toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    await expect(lossAndGrad(model, batch, { targets: [[-1, -1, -1, -1, -1, 9], [-1, -1, -1, -1]], candidates: [9] })).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    await expect(lossAndGrad(model, batch, { targets, candidates: [2.5, 9] as number[] })).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  });
});

const sentences = ['good fun and great times', 'sad and awful, a waste', 'a lovely film', 'boring and bad', 'great acting', 'terrible plot'];
const examples = (n: number) => Array.from({ length: n }, (_, i) => ({ text: `${sentences[i % 6]} ${i}`, label: i % 6 === 1 || i % 6 === 3 || i % 6 === 5 ? 0 : 1 }));

d('first-order methods in fit() on micro-llama (sentiment-style task)', () => {
  let model: LlamaModel, task: PromptTask;
  beforeAll(async () => {
    model = await LlamaModel.load(micro!);
    task = new PromptTask({ kind: 'classification', template: '{text} It was', labelWords: [' bad', ' great'] }, LlamaTokenizer.load(micro!));
  });
  afterAll(() => model.dispose());

  test("the FO loss equals the ZO probe's task loss at ε → 0, and ⟨∇L, z⟩ matches ZO's projected gradient", async () => {
    const lb = { ...task.lossBatch(examples(8)), weight: 8 };
    expect(lb.grad?.candidates).toEqual(task.labelTokens);
    const fo = new FoOptimizer({ method: 'fo-adam' });
    try {
      const est = await fo.estimate(model, [lb], []);
      // ε → 0: the mean probe loss converges to the loss of the weights, O(ε²) down to the fp32
      // floor (observed relative differences: 4e-6 at ε = 1e-4 here; 5e-5 / 5e-7 / 1.5e-7 at
      // ε = 1e-3 / 1e-4 / 1e-6 on another batch)
      for (const eps of [1e-4, 1e-6]) {
        const { plus, minus } = await model.zoProbe(lb.sequences, { ...lb.forward, seed: 5n, eps });
        expect(Math.abs((lb.loss(plus) + lb.loss(minus)) / 2 - est.loss)).toBeLessThan(2e-5 * est.loss);
      }
      expect(est.loss).toBeCloseTo(lb.loss(await model.forward(lb.sequences, lb.forward)), 6);
      // the directional derivative: MeZO's g = (L(θ+εz) − L(θ−εz)) / 2ε against the backward's gradient · z
      const r = await lossAndGrad(model, lb.sequences, lb.grad!);
      const ids = LlamaModel.tensorIds(model.config);
      const seed = querySeed(3, 0, 0);
      let dot = 0;
      for (const [name, g] of r.grads) {
        const z = perturbSync(Tensor.zeros(g.shape), 1, { seed, stream: ids.get(name)!, dist: 'gaussian', srPurpose: 'update' });
        const zd = z.data() as Float32Array, gd = g.data() as Float32Array;
        for (let i = 0; i < zd.length; i++) dot += zd[i] * gd[i];
        z.dispose();
      }
      r.grads.forEach((t) => t.dispose());
      const zo = await new ZoOptimizer({ method: 'mezo', eps: 1e-4 }).estimate(model, [lb], [seed]);
      expect(Math.abs(zo.queries[0].g - dot)).toBeLessThan(2e-3 * Math.abs(dot)); // observed 1.8e-4 (4.9e-3 at ε = 1e-3: O(ε²))
    } finally {
      fo.dispose();
    }
  });

  test('accumulation: two micro-batches of 4 give the loss and gradient of one batch of 8', async () => {
    const ex = examples(8);
    const whole = new FoOptimizer({ method: 'fo-sgd' }), parts = new FoOptimizer({ method: 'fo-sgd' });
    try {
      const a = await whole.estimate(model, [{ ...task.lossBatch(ex), weight: 8 }], []);
      const b = await parts.estimate(model, [{ ...task.lossBatch(ex.slice(0, 4)), weight: 4 }, { ...task.lossBatch(ex.slice(4)), weight: 4 }], []);
      expect(b.loss).toBeCloseTo(a.loss, 6);
      expect(Math.abs(b.gradNorm! - a.gradNorm!)).toBeLessThan(1e-5 * a.gradNorm!);
    } finally {
      whole.dispose();
      parts.dispose();
    }
  });

  test.each(['fo-adam', 'fo-sgd', 'qat-int4'] as const)('%s: fit lowers the training loss; step events carry the gradient norm; eval keeps the best', async (method) => {
    const m = await LlamaModel.load(micro!);
    try {
      const train = examples(24);
      const before = (await task.evaluate(m, train)).loss;
      const fo = new FoOptimizer({ method, maxGradNorm: 1 });
      const events: TrainEvent[] = [];
      const it = fit(m, fo, taskData(task, train, { batchSize: 8, seed: 1 }), {
        steps: 12, lr: method === 'fo-sgd' ? 0.05 : 1e-3, seed: 1, evalEvery: 6, evaluate: async () => ({ ...(await task.evaluate(m, train.slice(0, 12))) }),
      });
      for await (const e of it) events.push(e);
      fo.dispose();
      const steps = events.filter((e): e is TrainEvent & { type: 'step' } => e.type === 'step');
      expect(steps).toHaveLength(12);
      for (const e of steps) {
        expect(e.gradNorm).toBeGreaterThan(0);
        expect(e.g).toBeUndefined();
        expect(e.skipped).toBeUndefined();
      }
      expect(events.filter((e) => e.type === 'eval').map((e) => (e as { after: number }).after)).toEqual([6, 12]);
      expect((await task.evaluate(m, train)).loss).toBeLessThan(before);
    } finally {
      m.dispose();
    }
  });

  test('the divergence guard skips an exploding step without touching the weights; abort stops fit', async () => {
    const m = await LlamaModel.load(micro!);
    const fo = new FoOptimizer({ method: 'fo-adam' });
    try {
      const data = taskData(task, examples(16), { batchSize: 1, seed: 2 });
      const name = 'model.norm.weight';
      let snapshot = Float32Array.from(m.tensor(name).data() as Float32Array);
      // after 10 accepted steps every loss above 1.0000001 × the running mean is skipped (single
      // examples: their losses spread widely around the mean)
      const seen: TrainEvent[] = [];
      for await (const e of fit(m, fo, data, { steps: 30, lr: 1e-4, seed: 2, explodeFactor: 1.0000001 })) {
        seen.push(e);
        const now = m.tensor(name).data() as Float32Array;
        if (e.type === 'step' && e.skipped) expect(Buffer.from(now.buffer, now.byteOffset, now.byteLength).equals(Buffer.from(snapshot.buffer))).toBe(true);
        snapshot = Float32Array.from(now);
      }
      expect(seen.some((e) => e.type === 'step' && e.skipped)).toBe(true);
      const ac = new AbortController();
      const it = fit(m, fo, data, { steps: 10, lr: 1e-4, seed: 2, signal: ac.signal });
      await it.next();
      ac.abort(new Error('stop'));
      await expect(it.next()).rejects.toThrow('stop');
      // a first-order optimiser has no seed log
      await expect(fit(m, fo, data, { steps: 1, lr: 1, seed: 0, log: {} as never }).next()).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    } finally {
      fo.dispose();
      m.dispose();
    }
  });

  test('QAT evaluates the deployed (fake-quantized) weights and restores the fp32 masters bit for bit', async () => {
    const fo = new FoOptimizer({ method: 'qat-int4' });
    try {
      const w = model.tensor('model.layers.0.mlp.up_proj.weight'), before = Buffer.from(Float32Array.from(w.data() as Float32Array).buffer);
      const inside = await fo.withDeployedWeights(model, async () => Float32Array.from(w.data() as Float32Array));
      expect(Buffer.from(inside.buffer).equals(before)).toBe(false);
      // int4-g128 (a group never spans rows): at most 16 distinct values per group
      expect(new Set(inside.subarray(0, Math.min(128, w.shape[1]))).size).toBeLessThanOrEqual(16);
      expect(Buffer.from(Float32Array.from(w.data() as Float32Array).buffer).equals(before)).toBe(true);
    } finally {
      fo.dispose();
    }
  });

  test('bad uses: coded errors', async () => {
    expect(() => new FoOptimizer({ method: 'adam' as never })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => new FoOptimizer({ method: 'fo-adam', maxGradNorm: 0 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const q = await LlamaModel.load(micro!, { weights: 'int8' });
    try {
      const lb = { ...task.lossBatch(examples(2)), weight: 2 };
      await expect(new FoOptimizer({ method: 'fo-adam' }).estimate(q, [lb], [])).rejects.toThrow(code('ZOTUNE_UNSUPPORTED'));
      await expect(new FoOptimizer({ method: 'lowprec-int4' }).estimate(q, [lb], [])).rejects.toThrow(code('ZOTUNE_UNSUPPORTED'));
    } finally {
      q.dispose();
    }
    // multi-token label words have no first-order loss
    const multi = new PromptTask({ kind: 'classification', template: '{text} It was', labelWords: [' terrible', ' great'] }, LlamaTokenizer.load(micro!));
    if (!multi.labelTokens) await expect(new FoOptimizer({ method: 'fo-adam' }).estimate(model, [{ ...multi.lossBatch(examples(2)), weight: 2 }], [])).rejects.toThrow(code('ZOTUNE_UNSUPPORTED'));
  });
});

d('first-order run folders (finetune(), zotune finetune / replay)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-fo-run-'));
  const taskFile = path.join(tmp, 'toy.jsonl');
  beforeAll(() => fs.writeFileSync(taskFile, examples(60).map((e) => JSON.stringify(e)).join('\n') + '\n'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const config = (method: RunConfig['method'], weights: RunConfig['weights']): RunConfig => ({
    model: micro!, weights, method, task: taskFile, steps: 8, lr: method.startsWith('lowprec') ? 0.05 : 1e-3, schedule: 'cosine', warmup: 2, eps: 1e-3,
    batch: 4, accumulate: 2, seed: 3, queries: 1, dist: 'gaussian', weightDecay: 0.01, maxGradNorm: 1, evalEvery: 3, evalBatch: 16, evalExamples: 0, test: false,
  });
  const weightsOf = (dir: string) => fs.readFileSync(path.join(dir, 'model', 'model.safetensors'));

  test.each([['fo-adam', 'fp32'], ['lowprec-int8', 'int8']] as const)('%s: interrupted after a checkpoint, resumed: the same final weights as the uninterrupted run', async (method, weights) => {
    const full = path.join(tmp, `full-${method}`), cut = path.join(tmp, `cut-${method}`);
    const s = await finetune(config(method, weights), full, false);
    expect(s).toMatchObject({ steps: 8, forwardPasses: 16, backwardPasses: 16, skipped: 0 });
    const m = await LlamaModel.load(micro!);
    const params = m.trainable().reduce((a, t) => a + t.numel, 0);
    m.dispose();
    expect(s.optimizerStateBytes).toBe(method === 'fo-adam' ? 2 * 4 * params : 0); // AdamW: m and v in fp32
    for (const f of ['config.json', 'checkpoint.safetensors', 'metrics.jsonl', 'curve.svg', 'summary.json', 'model/model.safetensors']) expect(fs.existsSync(path.join(full, f))).toBe(true);
    expect(fs.existsSync(path.join(full, 'zo.log'))).toBe(false);
    // stop after the checkpoint at step 6 (evaluations at 0, 3, 6), mid-way to the next one
    const ac = new AbortController();
    await expect(finetune(config(method, weights), cut, false, { signal: ac.signal, onEvent: (e) => e.type === 'step' && e.step === 6 && ac.abort(new Error('killed')) })).rejects.toThrow('killed');
    const r = await finetune(undefined, cut, true);
    expect(r.resumedFrom).toBe(6);
    expect(weightsOf(cut).equals(weightsOf(full))).toBe(true);
    const metrics = fs.readFileSync(path.join(cut, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.filter((m) => m.type === 'step').map((m) => m.step)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    // replay is refused with a coded error: the steps are gradients, not seeds
    await expect(replayRun(full, path.join(tmp, 'replayed'))).rejects.toThrow(code('ZOTUNE_UNSUPPORTED'));
  });

  test('zotune finetune --method qat-int4 / fo-sgd through the CLI; usage errors; replay refused', () => {
    const out = path.join(tmp, 'cli-qat');
    const r = run(process.execPath, [cli, 'finetune', '--model', micro!, '--task', taskFile, '--method', 'qat-int4', '--steps', '4', '--lr', '1e-3', '--batch', '4', '--eval-every', '2', '--max-grad-norm', '1', '--out', out, '--json'], { env: cleanEnv() });
    expect(r.stderr).toContain('4/4');
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ steps: 4, forwardPasses: 4, backwardPasses: 4, config: { method: 'qat-int4', weights: 'fp32', maxGradNorm: 1 } });
    expect(s.test.n).toBe(12);
    const text = run(process.execPath, [cli, 'finetune', '--model', micro!, '--task', taskFile, '--method', 'fo-sgd', '--steps', '2', '--lr', '0.01', '--batch', '4', '--out', path.join(tmp, 'cli-sgd')], { env: cleanEnv() });
    expect(text.status).toBe(0);
    expect(text.stdout).toContain('fo-sgd (first-order)');
    expect(text.stdout).toContain('2 forward passes + 2 backward passes');
    const rp = run(process.execPath, [cli, 'replay', out], { env: cleanEnv() });
    expect(rp.status).toBe(1);
    expect(rp.stderr).toContain('ZOTUNE_UNSUPPORTED');
    expect(rp.stderr).toContain('first-order run');
    const base = ['finetune', '--model', micro!, '--task', taskFile, '--out', path.join(tmp, 'bad')];
    expect(run(process.execPath, [cli, ...base, '--method', 'fo-adam', '--eps', '1e-3'], { env: cleanEnv() }).status).toBe(2);
    expect(run(process.execPath, [cli, ...base, '--method', 'mezo', '--max-grad-norm', '1'], { env: cleanEnv() }).status).toBe(2);
    expect(run(process.execPath, [cli, ...base, '--method', 'fo-adamw'], { env: cleanEnv() }).status).toBe(2);
    expect(FO_METHODS).toEqual(['fo-adam', 'fo-sgd', 'qat-int8', 'qat-int4', 'qat-fp8', 'lowprec-int8', 'lowprec-int4']);
    // QAT trains on the grid of the scheme it is compared with (fp8: per-channel scales, as --weights fp8-e4m3)
    const grids = (['qat-int8', 'qat-int4', 'qat-fp8'] as const).map((method) => new FoOptimizer({ method }).qat);
    expect(grids).toEqual([{ format: 'int8', granularity: 'channel' }, { format: 'int4', granularity: 128 }, { format: 'fp8-e4m3', granularity: 'channel' }]);
  });
});
