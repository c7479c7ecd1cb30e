/** Low-precision first-order training (lib/fo/lowprec.ts): quantized weights, no fp32 master. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LlamaModel, LlamaTokenizer, QTensor, lossAndGrad, memory } from '../lib';
import { LowPrecisionTrainer } from '../lib/fo/lowprec';
import { builtinText } from '../lib/cli/pretrain';
import { modelDir } from './helpers/models';
import { settledLive } from './helpers/memory';

const micro = modelDir('micro-llama');
const maybe = micro ? test : test.skip;
const Q = 'model.layers.0.self_attn.q_proj.weight';

let tmp: string;
let rows: Int32Array[];
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-lowprec-'));
  if (!micro) return;
  const ids = Int32Array.from(LlamaTokenizer.load(micro).encode(builtinText('moby-dick').slice(20_000, 24_000), { addSpecialTokens: false }));
  rows = [0, 1, 2, 3].map((i) => ids.subarray(i * 65, i * 65 + 65));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const codes = (m: LlamaModel, n: string) => Array.from((m.weight(n) as QTensor).data.data() as Int8Array);

maybe('gradients of a quantized model are those of its dequantized weights', async () => {
  const q = await LlamaModel.load(micro!, { weights: 'int8' });
  await q.save(path.join(tmp, 'deq'));
  const f = await LlamaModel.load(path.join(tmp, 'deq'));
  try {
    const a = await lossAndGrad(q, rows), b = await lossAndGrad(f, rows);
    expect(a.loss).toBe(b.loss);
    for (const n of [Q, 'model.layers.1.mlp.down_proj.weight', 'lm_head.weight', 'model.norm.weight', 'model.embed_tokens.weight'])
      expect(a.grads.get(n)!.data()).toEqual(b.grads.get(n)!.data());
    a.grads.forEach((t) => t.dispose());
    b.grads.forEach((t) => t.dispose());
  } finally {
    q.dispose();
    f.dispose();
  }
});

maybe.each(['int8', 'int4'] as const)('%s weights: SGD with stochastic rounding onto the grid lowers the loss, keeps the scales, is reproducible, holds no fp32 master', async (scheme) => {
  const run = async (steps: number) => {
    // Counted as deltas: engine counters are per process, and earlier test files in this jest
    // worker may still hold tensors that await garbage collection.
    const base = await settledLive();
    const m = await LlamaModel.load(micro!, { weights: scheme });
    const scales = Array.from((m.weight(Q) as QTensor).scales!.data() as Float32Array);
    const before = codes(m, Q);
    const t = new LowPrecisionTrainer(m, { lr: 0.05, seed: 11, maxGradNorm: 1 });
    const losses: number[] = [];
    for (let s = 0; s < steps; s++) losses.push((await t.step([{ batch: rows }])).loss);
    const live = await settledLive();
    const grown = (k: string) => (live[k] ?? 0) - (base[k] ?? 0);
    const optimizerBytes = grown('optimizer') + Math.max(0, grown('weights') - m.weightBytes); // no state, no fp32 weight copy
    t.dispose();
    const after = { codes: codes(m, Q), scales: Array.from((m.weight(Q) as QTensor).scales!.data() as Float32Array), loss: (await m.forward(rows, { logits: 'none' })).loss };
    m.dispose();
    return { losses, before, scales, after, optimizerBytes };
  };
  const a = await run(12), b = await run(12);
  expect(a.after.codes).toEqual(b.after.codes); // same seed, same SR words
  expect(a.after.codes).not.toEqual(a.before);
  expect(a.after.scales).toEqual(a.scales); // fixed grid: only codes move
  expect(a.optimizerBytes).toBe(0);
  expect(a.after.loss).toBeLessThan(a.losses[0] - 1); // 12 steps on one batch: ~4.87 -> ~3.48 (int8, int4)
});
