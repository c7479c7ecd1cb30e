/**
 * ZO probe / update of the LLaMA engine (lib/model/llama.ts zoProbe, zoUpdate, setTrainable, save).
 * References are built from the public pieces: perturb a copy of the weights with lib/perturb.ts,
 * then run an ordinary forward.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LlamaModel, memory, resetMemoryPeaks, Tensor, perturbSync, setCpuPath, setThreads, cpuInfo } from '../lib';
import type { ForwardResult, ZoDirection } from '../lib';
import { ZoOptimizer, type MicroBatch, type ZoModel } from '../lib/zo/optimizer';
import { native } from '../lib/native/load';
import { modelDir } from './helpers/models';
import { settledLive } from './helpers/memory';

const micro = modelDir('micro-llama');
const maybe = micro ? test : test.skip;

/** Bitwise equality of two typed arrays. */
function sameBits(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function expectSameResult(a: ForwardResult, b: ForwardResult): void {
  expect(a.count).toBe(b.count);
  expect(a.loss).toBe(b.loss);
  a.logprobs.forEach((lp, i) => expect(sameBits(lp, b.logprobs[i])).toBe(true));
  a.logits.forEach((lg, i) => expect(sameBits(lg, b.logits[i])).toBe(true));
}

// Sequences long enough for the packed GEMM (M > 16) and a short one for the GEMV path.
const batch = [
  Array.from({ length: 23 }, (_, i) => (i * 131 + 7) % 4000),
  Array.from({ length: 9 }, (_, i) => (i * 17 + 300) % 4000),
];
const short = [[5, 900, 12]];

/** Every weight tensor of a model as a JS copy (name -> f32 values). */
function snapshot(m: LlamaModel): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const t of m.trainableTensors()) out.set(t.name, Float32Array.from((t.tensor as Tensor).data() as Float32Array));
  return out;
}

/** Writes values back into the model's fp32 tensors. */
function restore(m: LlamaModel, values: Map<string, Float32Array>): void {
  for (const [name, v] of values) (m.tensor(name).data() as Float32Array).set(v);
}

const dirOpts = (d: ZoDirection) => ({ dist: d.dist ?? 'gaussian', bits: d.bits ?? 0 }) as const;

describe('zoProbe', () => {
  let model: LlamaModel, ref: LlamaModel, original: Map<string, Float32Array>;
  beforeAll(async () => {
    if (!micro) return;
    model = await LlamaModel.load(micro);
    ref = await LlamaModel.load(micro);
    original = snapshot(ref);
  });
  afterAll(() => {
    model?.dispose();
    ref?.dispose();
  });

  /** Forward of `ref` with its trainable tensors (those of `model`) at original + alpha * z. */
  async function explicitForward(seqs: number[][], alpha: number, seed: number, d: ZoDirection, logits: 'all' | 'last' = 'all') {
    restore(ref, original);
    for (const t of model.trainable()) perturbSync(ref.tensor(t.name), alpha, { seed, stream: t.id, ...dirOpts(d), srPurpose: 'probe' });
    const r = await ref.forward(seqs, { logits });
    restore(ref, original);
    return r;
  }

  for (const d of [{}, { dist: 'rademacher' }, { bits: 4 }] as ZoDirection[])
    maybe(`on-load probe = forwards on explicitly perturbed weights, bit for bit (${JSON.stringify(d)})`, async () => {
      model.setTrainable();
      const eps = 1e-3, seed = 1234;
      for (const seqs of [batch, short]) {
        const r = await model.zoProbe(seqs, { seed, eps, direction: d, logits: 'all' });
        expectSameResult(r.plus, await explicitForward(seqs, eps, seed, d));
        expectSameResult(r.minus, await explicitForward(seqs, -eps, seed, d));
        expect(r.plus.loss).not.toBe(r.minus.loss);
      }
      // no weight was written
      for (const [name, v] of original) expect(sameBits(model.tensor(name).data(), v)).toBe(true);
    });

  // The layers before the first trainable tensor run once for both signs (llama_probe), the rest per sign.
  for (const set of [['model.norm'], ['lm_head'], ['model.layers.1.mlp.*', 'model.norm'], ['*.layers.1.input_layernorm']])
    maybe(`a probe of ${set.join(' + ')} shares the layers below = forwards on explicitly perturbed weights, bit for bit; in place too`, async () => {
      model.setTrainable(set);
      const eps = 1e-3, seed = 4321;
      try {
        for (const seqs of [batch, short])
          for (const logits of ['all', 'last'] as const) {
            const r = await model.zoProbe(seqs, { seed, eps, logits });
            expectSameResult(r.plus, await explicitForward(seqs, eps, seed, {}, logits));
            expectSameResult(r.minus, await explicitForward(seqs, -eps, seed, {}, logits));
            expect(r.plus.loss).not.toBe(r.minus.loss);
            const inPlace = await model.zoProbe(seqs, { seed, eps, logits, mode: 'in-place' });
            expectSameResult(inPlace.plus, r.plus);
            expect(Math.abs(inPlace.minus.loss - r.minus.loss)).toBeLessThan(1e-5);
            restore(model, original);
          }
      } finally {
        restore(model, original);
      }
    });

  // Several queries in one call: the same bits as one zoProbe per seed (shared layers run once).
  for (const set of [undefined, ['model.norm'], ['model.layers.1.mlp.*', 'model.norm'], ['lm_head']])
    maybe(`zoProbeMany of ${set ? set.join(' + ') : 'every tensor'} = one zoProbe per seed, bit for bit; in place too`, async () => {
      model.setTrainable(set);
      const eps = 1e-3, seeds = [11, 12n, 2n ** 64n - 1n];
      try {
        for (const seqs of [batch, short])
          for (const logits of ['all', 'last'] as const) {
            const many = await model.zoProbeMany(seqs, { seeds, eps, logits, direction: { bits: 4 } });
            expect(many.length).toBe(3);
            for (let q = 0; q < 3; q++) {
              const one = await model.zoProbe(seqs, { seed: seeds[q], eps, logits, direction: { bits: 4 } });
              expectSameResult(many[q].plus, one.plus);
              expectSameResult(many[q].minus, one.minus);
            }
            expect(many[0].plus.loss).not.toBe(many[1].plus.loss);
            // in place: the weights move +eps, -2 eps, +eps per query, as consecutive in-place zoProbes move them
            const inPlace = await model.zoProbeMany(seqs, { seeds, eps, logits, mode: 'in-place' });
            const drifted = snapshot(model);
            restore(model, original);
            for (let q = 0; q < 3; q++) {
              const one = await model.zoProbe(seqs, { seed: seeds[q], eps, logits, mode: 'in-place' });
              expectSameResult(inPlace[q].plus, one.plus);
              expectSameResult(inPlace[q].minus, one.minus);
            }
            for (const [name, v] of drifted) expect(sameBits(model.tensor(name).data(), v)).toBe(true);
            restore(model, original);
          }
      } finally {
        restore(model, original);
      }
    });

  maybe('zoProbeMany on quantized weights (int4, w8a8) = one zoProbe per seed; bad seeds are refused', async () => {
    for (const weights of ['int4', 'w8a8'] as const) {
      const q = await LlamaModel.load(micro!, { weights });
      try {
        for (const set of [undefined, ['model.layers.1.*', 'model.norm']]) {
          q.setTrainable(set);
          const many = await q.zoProbeMany(batch, { seeds: [5, 6], eps: 1e-2, logits: 'last' });
          for (let k = 0; k < 2; k++) {
            const one = await q.zoProbe(batch, { seed: 5 + k, eps: 1e-2, logits: 'last' });
            expectSameResult(many[k].plus, one.plus);
            expectSameResult(many[k].minus, one.minus);
          }
        }
      } finally {
        q.dispose();
      }
    }
    await expect(model.zoProbeMany(batch, { seeds: [], eps: 1e-3 })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    await expect(model.zoProbeMany(batch, { seeds: [1, -2], eps: 1e-3 })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    await expect(model.zoProbeMany(batch, { seeds: 3 as never, eps: 1e-3 })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    // outputs JS cannot hold (2^32 logits and more) are refused with a coded error before any work
    const seeds = Array.from({ length: 40000 }, (_, i) => i);
    await expect(model.zoProbeMany(batch, { seeds, eps: 1e-3, logits: 'all' })).rejects.toMatchObject({ code: 'ZOTUNE_OOM' });
  });

  maybe('the optimiser estimates several queries through zoProbeMany with the same projected gradients', async () => {
    model.setTrainable(['model.layers.1.*', 'model.norm']);
    const opt = new ZoOptimizer({ method: 'quzo', eps: 1e-3, queries: 3, directionBits: 4 });
    const micro2: MicroBatch[] = [
      { sequences: batch, forward: { logits: 'last' }, loss: (r) => r.loss, weight: 2 },
      { sequences: short, forward: { logits: 'last' }, loss: (r) => r.loss },
    ];
    const seeds = [7n, 8n, 9n];
    let manyCalls = 0;
    const counting: ZoModel = {
      zoProbe: (b, o) => model.zoProbe(b, o),
      zoProbeMany: (b, o) => (manyCalls++, model.zoProbeMany(b, o)),
      zoUpdate: (o) => model.zoUpdate(o),
      trainable: () => model.trainable(),
      trainableTensors: () => model.trainableTensors(),
    };
    const { zoProbeMany: _, ...oneByOne } = counting;
    const shared = await opt.estimate(counting, micro2, seeds);
    expect(manyCalls).toBe(2);
    const separate = await opt.estimate(oneByOne, micro2, seeds);
    expect(shared).toEqual(separate);
    expect(new Set(shared.queries.map((q) => q.g)).size).toBe(3);
  });

  maybe('a trainable subset perturbs only its tensors (norms and embeddings included)', async () => {
    model.setTrainable(['model.embed_tokens', '*.layers.1.*_layernorm', /mlp\.(gate|down)_proj/, 'lm_head']);
    const names = model.trainable().map((t) => t.name);
    expect(names).toEqual([
      'model.embed_tokens.weight', 'model.layers.0.mlp.gate_proj.weight', 'model.layers.0.mlp.down_proj.weight',
      'model.layers.1.input_layernorm.weight', 'model.layers.1.post_attention_layernorm.weight',
      'model.layers.1.mlp.gate_proj.weight', 'model.layers.1.mlp.down_proj.weight', 'lm_head.weight',
    ]);
    expect(model.trainable().filter((t) => !t.decay).map((t) => t.name)).toEqual(names.filter((n) => n.includes('layernorm')));
    const r = await model.zoProbe(batch, { seed: 77, eps: 1e-2, logits: 'last' });
    expectSameResult(r.plus, await explicitForward(batch, 1e-2, 77, {}, 'last'));
    expectSameResult(r.minus, await explicitForward(batch, -1e-2, 77, {}, 'last'));
    model.setTrainable('model.layers.**');
    expect(model.trainable().length).toBe(18);
    expect(() => model.setTrainable('nothing.here')).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    model.setTrainable();
    expect(model.trainable().length).toBe(2 * 9 + 3);
  });

  maybe('in-place probe: plus equals on-load, minus within rounding, weights restored within 3 roundings', async () => {
    model.setTrainable();
    const eps = 1e-3, seed = 99;
    const onLoad = await model.zoProbe(batch, { seed, eps, logits: 'all' });
    const inPlace = await model.zoProbe(batch, { seed, eps, logits: 'all', mode: 'in-place' });
    expectSameResult(inPlace.plus, onLoad.plus);
    // minus runs at fl(fl(w + eps z) - 2 eps z), one rounding away from w - eps z per element
    expect(Math.abs(inPlace.minus.loss - onLoad.minus.loss)).toBeLessThan(1e-5);
    // +eps z, -2 eps z, +eps z: three roundings of values below |w| + 2 eps |z| (half an ulp each)
    let worst = 0, exact = 0, total = 0;
    try {
      for (const t of model.trainable()) {
        const now = model.tensor(t.name).data() as Float32Array, w = original.get(t.name)!;
        const z = perturbSync(Tensor.from(new Float32Array(w.length)), 1, { seed, stream: t.id, dist: 'gaussian' }).data() as Float32Array;
        for (let i = 0; i < w.length; i++) {
          const err = Math.abs(now[i] - w[i]) / ((Math.abs(w[i]) + 2 * eps * Math.abs(z[i])) * 2 ** -24);
          worst = Math.max(worst, err);
          if (now[i] === w[i]) exact++;
        }
        total += w.length;
      }
      expect(worst).toBeLessThanOrEqual(3);
      expect(exact / total).toBeGreaterThan(0.5);
    } finally {
      restore(model, original);
    }
  });

  maybe('forwards issued during an in-place probe or an update see the weights before or after it, never perturbed', async () => {
    model.setTrainable();
    const plain = await model.forward(batch, { logits: 'all' });
    const probe = model.zoProbe(batch, { seed: 3, eps: 0.5, mode: 'in-place', logits: 'all' });
    const during = model.forward(batch, { logits: 'all' });
    const [r, f] = await Promise.all([probe, during]);
    expect(Math.abs(f.loss - plain.loss)).toBeLessThan(1e-6); // restored within rounding, not at +-eps
    expect(Math.abs(r.plus.loss - plain.loss)).toBeGreaterThan(1e-3);
    restore(model, original);
    const upd = model.zoUpdate({ seed: 3, scale: 0.5 });
    const before = model.forward(batch, { logits: 'all' }); // queued after the update: sees the new weights
    await upd;
    const after = await before;
    expect(after.loss).not.toBe(plain.loss);
    restore(model, original);
  });

  maybe('a probe allocates one forward’s activations (plus the perturbed norm vectors) and no weights', async () => {
    model.setTrainable();
    const big = [0, 1, 2].map((s) => Array.from({ length: 120 }, (_, i) => (i * 37 + s * 11) % 4000));
    await settledLive();
    const before = memory().engine;
    resetMemoryPeaks();
    await model.forward(big, { logits: 'none' });
    const fwd = memory().engine.peak.activations - before.live.activations;
    resetMemoryPeaks();
    await model.zoProbe(big, { seed: 5, eps: 1e-3, logits: 'none' });
    await settledLive();
    const after = memory().engine;
    const probe = after.peak.activations - before.live.activations;
    const c = model.config;
    const norms = (2 * c.numLayers + 1) * c.hiddenSize * 4;
    expect(probe).toBeGreaterThanOrEqual(fwd);
    expect(probe).toBeLessThanOrEqual(fwd + norms + 64 * (2 * c.numLayers + 2));
    expect(after.live.activations).toBe(before.live.activations);
    expect(after.peak.weights).toBe(before.live.weights);
    expect(after.live.weights).toBe(before.live.weights);
  });

  maybe('probe results do not depend on the CPU path or the thread count', async () => {
    model.setTrainable();
    const opts = { seed: 21, eps: 1e-3, logits: 'all' as const, direction: { bits: 4 } };
    const want = await model.zoProbe(batch, opts);
    const threads = cpuInfo().threads;
    try {
      for (const [p, t] of [['scalar', threads], ['auto', 1]] as const) {
        setCpuPath(p);
        setThreads(t);
        const got = await model.zoProbe(batch, opts);
        expectSameResult(got.plus, want.plus);
        expectSameResult(got.minus, want.minus);
      }
    } finally {
      setCpuPath('auto');
      setThreads(threads);
    }
  });

  maybe('bad options give coded errors', async () => {
    await expect(model.zoProbe(batch, { seed: 1, eps: NaN })).rejects.toMatchObject({ code: 'ZOTUNE_NONFINITE' });
    await expect(model.zoProbe(batch, { seed: -1, eps: 1 })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    await expect(model.zoProbe(batch, { seed: 1, eps: 1, direction: { bits: 1 } })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    await expect(model.zoProbe(batch, { seed: 1, eps: 1, mode: 'x' as never })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    await expect(model.zoProbe([[1, 5000]], { seed: 1, eps: 1 })).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    // the native call's seed list: a BigUint64Array of at least one seed, outputs with a block per seed
    const a = model.nativeArgs(), t = Int32Array.of(1, 2, 3), off = Int32Array.of(0, 3), pos = Int32Array.of(0, 1, 2), tg = Int32Array.of(2, 3, -1);
    const probe = (seeds: unknown, lp = 6) =>
      native().llamaZoProbe(a.cfg, a.ids, t, off, pos, null, tg, new Float64Array(lp), new Float64Array(lp), null, null, null, null, seeds as bigint, 0, 0, 1e-3, 0, a.flags, ...a.weights);
    expect(probe(BigUint64Array.of(1n, 2n))).toHaveLength(2);
    expect(() => probe(BigInt64Array.of(1n))).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => probe(new BigUint64Array(0))).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => probe(BigUint64Array.of(1n, 2n, 3n))).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    await expect(model.zoUpdate({ seed: 1, scale: Infinity })).rejects.toMatchObject({ code: 'ZOTUNE_NONFINITE' });
    await expect(model.zoUpdate({ seed: 1, scale: 1, decay: 2 })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    for (const [name, v] of original) expect(sameBits(model.tensor(name).data(), v)).toBe(true);
  });
});

describe('zoUpdate', () => {
  let model: LlamaModel;
  beforeEach(async () => {
    if (micro) model = await LlamaModel.load(micro);
  });
  afterEach(() => model?.dispose());

  for (const d of [{}, { dist: 'rademacher' }, { bits: 3 }] as ZoDirection[])
    maybe(`fp32 update = the perturbation kernel with -scale (z_update), decay skipping norms (${JSON.stringify(d)})`, async () => {
      const before = snapshot(model);
      model.setTrainable(['model.layers.0.**', 'lm_head']);
      const trainable = new Set(model.trainable().map((t) => t.name));
      const seed = 4242n, scale = 0.37, decay = d.dist ? 0 : 0.01;
      await model.zoUpdate({ seed, scale, direction: d, decay });
      for (const t of model.trainableTensors()) expect(trainable.has(t.name)).toBe(true);
      for (const [name, v] of before) {
        const now = model.tensor(name).data() as Float32Array;
        if (!trainable.has(name)) {
          expect(sameBits(now, v)).toBe(true); // untouched tensors byte-equal
          continue;
        }
        const info = model.trainable().find((t) => t.name === name)!;
        const keep = Math.fround(1 - (info.decay ? decay : 0));
        const want = Tensor.from(v.map((x) => Math.fround(x * keep)));
        perturbSync(want, -scale, { seed, stream: info.id, ...dirOpts(d), srPurpose: 'update' });
        expect(sameBits(now, want.data())).toBe(true);
      }
    });

  maybe('QuZO: the probe and the update round z independently', async () => {
    const id = model.trainable().find((t) => t.name === 'lm_head.weight')!.id;
    const w = Float32Array.from(model.tensor('lm_head.weight').data() as Float32Array);
    model.setTrainable('lm_head');
    await model.zoUpdate({ seed: 3, scale: 1, direction: { bits: 2 } });
    const probeZ = perturbSync(Tensor.from(new Float32Array(w.length)), 1, { seed: 3, stream: id, dist: 'gaussian', bits: 2, srPurpose: 'probe' }).data();
    const updZ = perturbSync(Tensor.from(new Float32Array(w.length)), 1, { seed: 3, stream: id, dist: 'gaussian', bits: 2, srPurpose: 'update' }).data();
    let differ = 0;
    for (let i = 0; i < w.length; i++) if (probeZ[i] !== updZ[i]) differ++;
    expect(differ).toBeGreaterThan(w.length / 10);
    const now = model.tensor('lm_head.weight').data() as Float32Array;
    for (let i = 0; i < 1000; i++) expect(now[i]).toBe(Math.fround(w[i] - updZ[i]));
  });
});

describe('save', () => {
  maybe('round trip: f32 reloads bit-identical, bf16 holds the rounded values', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-save-'));
    const m = await LlamaModel.load(micro!);
    try {
      m.setTrainable('lm_head');
      await m.zoUpdate({ seed: 8, scale: 0.5 });
      const out = path.join(tmp, 'ckpt');
      await m.save(out);
      for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'])
        expect(fs.existsSync(path.join(out, f))).toBe(true);
      const back = await LlamaModel.load(out);
      try {
        for (const t of m.trainableTensors()) expect(sameBits(back.tensor(t.name).data(), (t.tensor as Tensor).data())).toBe(true);
        expectSameResult(await back.forward(batch), await m.forward(batch));
      } finally {
        back.dispose();
      }
      await m.save(out, { dtype: 'bf16' }); // replaces the folder
      expect(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).torch_dtype).toBe('bfloat16');
      const b16 = await LlamaModel.load(out);
      try {
        const a = m.tensor('lm_head.weight').data() as Float32Array, b = b16.tensor('lm_head.weight').data() as Float32Array;
        for (let i = 0; i < 2000; i++) expect(Math.abs(b[i] - a[i])).toBeLessThanOrEqual(Math.abs(a[i]) * 2 ** -8);
      } finally {
        b16.dispose();
      }
      expect(fs.readdirSync(tmp)).toEqual(['ckpt']); // no temporary folders left
    } finally {
      m.dispose();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('logitTokens (a vocabulary subset of the logits)', () => {
  const cands = [4011, 17, 2500];
  const pick = (full: Float32Array) => Float32Array.from(cands, (t) => full[t]);
  const many = Array.from({ length: 6 }, (_, b) => Array.from({ length: 5 + 3 * b }, (_, i) => (i * 97 + 31 * b + 5) % 4000)); // 6 last rows: the skinny GEMM

  maybe.each(['fp32', 'int8', 'int4-g32', 'w4a8'] as const)('%s: forward and probe give the same bits as those columns of the full logits', async (weights) => {
    const m = await LlamaModel.load(micro!, { weights });
    try {
      for (const b of [batch, short, many]) {
        const full = await m.forward(b, { targets: 'none' });
        const sub = await m.forward(b, { targets: 'none', logitTokens: cands });
        sub.logits.forEach((row, i) => expect(sameBits(row, pick(full.logits[i]))).toBe(true));
        const dir: ZoDirection = weights === 'fp32' ? {} : { bits: 4 };
        const pf = await m.zoProbe(b, { targets: 'none', seed: 9n, eps: 1e-2, direction: dir });
        const ps = await m.zoProbe(b, { targets: 'none', seed: 9n, eps: 1e-2, direction: dir, logitTokens: Int32Array.from(cands) });
        for (const k of ['plus', 'minus'] as const) ps[k].logits.forEach((row, i) => expect(sameBits(row, pick(pf[k].logits[i]))).toBe(true));
        expect(sameBits(ps.plus.logits[0], sub.logits[0])).toBe(false); // the subset rows are perturbed
      }
    } finally {
      m.dispose();
    }
  });

  maybe('bad subsets are refused with coded errors', async () => {
    const m = await LlamaModel.load(micro!);
    try {
      await expect(m.forward(batch, { targets: 'none', logitTokens: [] })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
      await expect(m.forward(batch, { targets: 'none', logitTokens: [4096] })).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
      await expect(m.forward(batch, { logitTokens: [1] })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' }); // targets 'next'
      await expect(m.forward(batch, { targets: 'none', logits: 'none', logitTokens: [1] })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
      await expect(m.zoProbe(batch, { seed: 1, eps: 1e-3, logitTokens: [1] })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    } finally {
      m.dispose();
    }
  });
});
