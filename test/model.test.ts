import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LlamaModel, KVCache, memory, nn, setCpuPath, setThreads, cpuInfo, Tensor, writeSafetensors, resetMemoryPeaks } from '../lib';
import { native } from '../lib/native/load';
import { modelDir } from './helpers/models';
import { settledLive } from './helpers/memory';

const code = (c: string) => expect.objectContaining({ code: c });
const V = 4096;

interface Golden {
  prompts: {
    text: string;
    input_ids: number[];
    logits: { positions: number[]; values: number[][] };
    mean_cross_entropy: number;
    greedy: { new_ids: number[] };
  }[];
}

/** Bitwise equality of two typed arrays (fast for large arrays, unlike toEqual). */
function sameBits(a: Float32Array | Float64Array, b: Float32Array | Float64Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function golden(dir: string): Golden {
  return JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
}

/** Max |a - b| over a row divided by max |b| (the reference's largest logit). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, m = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

afterAll(() => {
  setCpuPath('auto');
  setThreads(cpuInfo().threads);
});

const micro = modelDir('micro-llama'), tiny = modelDir('tiny-llama');

// Golden checks: float64 PyTorch reference logits. Relative error of a position = max_i |ours_i - ref_i| / max_i |ref_i|.
describe.each([
  ['micro-llama', micro, ['avx2', 'scalar']],
  ['tiny-llama', tiny, ['avx2']], // the scalar GEMM reference is ~50x slower; micro-llama covers that path
] as const)('%s matches golden.json', (name, dir, paths) => {
  const maybe = dir ? test : test.skip;
  let model: LlamaModel;
  beforeAll(async () => {
    if (dir) model = await LlamaModel.load(dir);
  });
  afterAll(() => model?.dispose());

  for (const p of paths)
    maybe(`fp32 logits within 1e-4 relative, mean loss within 1e-5 (${p} path)`, async () => {
      if (p === 'avx2' && !cpuInfo().avx2) return;
      setCpuPath(p);
      try {
        for (const g of golden(dir!).prompts) {
          const r = await model.forward([g.input_ids], { logits: 'all' });
          g.logits.positions.forEach((pos, j) => {
            expect(relErr(r.logits[0].subarray(pos * V, (pos + 1) * V), g.logits.values[j])).toBeLessThan(1e-4);
          });
          expect(Math.abs(r.loss - g.mean_cross_entropy)).toBeLessThan(1e-5);
          expect(r.count).toBe(g.input_ids.length - 1);
          // the loss is the mean of the per-token log-probabilities of the next tokens
          const lp = r.logprobs[0];
          expect(Number.isNaN(lp[lp.length - 1])).toBe(true);
          expect(-lp.subarray(0, -1).reduce((a, b) => a + b, 0) / (lp.length - 1)).toBeCloseTo(r.loss, 12);
        }
      } finally {
        setCpuPath('auto');
      }
    });

  maybe('greedy generation with the KV cache reproduces the golden continuations token for token', async () => {
    for (const g of golden(dir!).prompts) {
      const ids: number[] = [];
      for await (const t of model.generate(g.input_ids, { maxNewTokens: g.greedy.new_ids.length, stopTokens: [] })) ids.push(t);
      expect(ids).toEqual(g.greedy.new_ids);
    }
  });

  maybe('a batch of all prompts gives each prompt exactly its single-sequence result', async () => {
    const gs = golden(dir!).prompts;
    const batch = await model.forward(gs.map((g) => g.input_ids), { logits: 'all' });
    let loss = 0, count = 0;
    for (const [b, g] of gs.entries()) {
      const one = await model.forward([g.input_ids], { logits: 'all' });
      expect(sameBits(batch.logits[b], one.logits[0])).toBe(true);
      expect(sameBits(batch.logprobs[b], one.logprobs[0])).toBe(true);
      loss += one.loss * one.count;
      count += one.count;
    }
    expect(batch.count).toBe(count);
    expect(batch.loss).toBeCloseTo(loss / count, 12);
  });
});

describe('tiny-llama: padding, KV cache, sampling, determinism', () => {
  const maybe = tiny ? test : test.skip;
  let model: LlamaModel;
  let prompts: number[][];
  beforeAll(async () => {
    if (!tiny) return;
    model = await LlamaModel.load(tiny);
    prompts = golden(tiny).prompts.map((g) => g.input_ids);
  });
  afterAll(() => model?.dispose());

  maybe('left- and right-padded batches with attention masks equal the unpadded sequences', async () => {
    const single = await Promise.all(prompts.map((p) => model.forward([p], { logits: 'all' })));
    const T = Math.max(...prompts.map((p) => p.length)), PAD = 4095;
    for (const side of ['left', 'right'] as const) {
      const padded = prompts.map((p) => (side === 'left' ? [...new Array(T - p.length).fill(PAD), ...p] : [...p, ...new Array(T - p.length).fill(PAD)]));
      const masks = prompts.map((p) => (side === 'left' ? [...new Array(T - p.length).fill(0), ...new Array(p.length).fill(1)] : [...new Array(p.length).fill(1), ...new Array(T - p.length).fill(0)]));
      const r = await model.forward(padded, { attentionMask: masks, logits: 'all' });
      expect(r.count).toBe(single.reduce((a, s) => a + s.count, 0));
      expect(Math.abs(r.loss - single.reduce((a, s) => a + s.loss * s.count, 0) / r.count)).toBeLessThan(1e-6);
      prompts.forEach((p, b) => {
        const off = side === 'left' ? T - p.length : 0;
        for (let i = 0; i < p.length; i++) {
          expect(relErr(r.logits[b].subarray((off + i) * V, (off + i + 1) * V), single[b].logits[0].subarray(i * V, (i + 1) * V))).toBeLessThan(1e-5);
          if (i < p.length - 1) expect(Math.abs(r.logprobs[b][off + i] - single[b].logprobs[0][i])).toBeLessThan(1e-5);
        }
        for (let i = 0; i < T - p.length; i++) expect(Number.isNaN(r.logprobs[b][side === 'left' ? i : p.length + i])).toBe(true);
      });
      const last = await model.forward(padded, { attentionMask: masks });
      prompts.forEach((p, b) => expect(relErr(last.logits[b], single[b].logits[0].subarray((p.length - 1) * V))).toBeLessThan(1e-5));
    }
  });

  maybe('KV-cache decoding and chunked prefill equal a full recompute', async () => {
    const p = prompts[0];
    const full = await model.forward([p], { logits: 'all' });
    const cache = model.createCache(1, p.length);
    try {
      const first = await model.forward([p.slice(0, 10)], { cache, logits: 'all' });
      for (let i = 0; i < 10; i++) expect(relErr(first.logits[0].subarray(i * V, (i + 1) * V), full.logits[0].subarray(i * V, (i + 1) * V))).toBeLessThan(1e-6);
      const chunk = await model.forward([p.slice(10, 20)], { cache, logits: 'all' });
      for (let i = 0; i < 10; i++) expect(relErr(chunk.logits[0].subarray(i * V, (i + 1) * V), full.logits[0].subarray((10 + i) * V, (11 + i) * V))).toBeLessThan(1e-5);
      for (let i = 20; i < p.length; i++) {
        const step = await model.forward([[p[i]]], { cache });
        expect(relErr(step.logits[0], full.logits[0].subarray(i * V, (i + 1) * V))).toBeLessThan(1e-5);
        if (i + 1 < p.length) expect(step.count).toBe(0);
      }
      expect(cache.length[0]).toBe(p.length);
      await expect(model.forward([[1]], { cache })).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    } finally {
      cache.dispose();
    }
  });

  maybe('batched generation equals generating each prompt alone (greedy), sequences stop independently', async () => {
    const steps: (number | undefined)[][] = [];
    for await (const s of model.generateBatch(prompts, { maxNewTokens: 12 })) steps.push(s);
    for (const [b, p] of prompts.entries()) {
      const alone: number[] = [];
      for await (const t of model.generate(p, { maxNewTokens: 12 })) alone.push(t);
      const fromBatch = steps.map((s) => s[b]).filter((t): t is number => t !== undefined);
      expect(fromBatch).toEqual(alone);
    }
    // prompt 1 (Genesis) greedily emits <|end_of_text|> first: with the default eos stop it stops at once
    expect(steps.map((s) => s[1]).filter((t) => t !== undefined)).toEqual([4094]);
  });

  maybe('the native decode loop: a slow consumer gets every step, break and abort end it, the model stays usable', async () => {
    const opts = { maxNewTokens: 10, stopTokens: [] as number[] };
    const before = (await settledLive()).activations;
    const fast: number[] = [];
    for await (const t of model.generate(prompts[2], opts)) fast.push(t);
    expect(fast).toHaveLength(10);
    const slow: number[] = [];
    for await (const t of model.generate(prompts[2], opts)) {
      await new Promise((r) => setTimeout(r, 5));  // the loop runs ahead: steps queue up in order
      slow.push(t);
    }
    expect(slow).toEqual(fast);
    const cut: number[] = [];
    for await (const t of model.generate(prompts[2], { ...opts, maxNewTokens: 200 })) if (cut.push(t) === 3) break;
    expect(cut).toEqual(fast.slice(0, 3));
    const ac = new AbortController();
    const seen: number[] = [];
    const aborted = (async () => {
      for await (const t of model.generate(prompts[2], { ...opts, maxNewTokens: 200, signal: ac.signal })) if (seen.push(t) === 2) ac.abort();
    })();
    await expect(aborted).rejects.toMatchObject({ name: 'AbortError' });
    expect(seen).toEqual(fast.slice(0, 2));
    const pre = new AbortController();
    pre.abort();
    await expect(model.generate(prompts[2], { signal: pre.signal }).next()).rejects.toMatchObject({ name: 'AbortError' });
    // every cache was freed and the weight lock released: a write goes through at once
    expect((await settledLive()).activations).toBe(before);
    await model.zoUpdate({ seed: 1, scale: 0 });  // fp32: w - 0 * z = w
    expect((await model.forward([prompts[0]])).count).toBe(prompts[0].length - 1);
  });

  maybe('llamaGenerate streams every step once, in order, a few steps per call when they come fast', async () => {
    const a = (model as unknown as { cfgArg: Float64Array; idArg: Uint32Array; weightArgs: unknown[] });
    const prompts2 = [prompts[2].slice(0, 5), prompts[0].slice(0, 3)];
    const B = prompts2.length, N = 20;
    const cache = model.createCache(B, 5 + N);
    try {
      const p = model.pack(prompts2, { cache, targets: 'none' }, true);
      const calls: [number, number[]][] = [];
      const steps = await native().llamaGenerateAsync(a.cfgArg, a.idArg, p.tokens, p.offsets, p.positions, p.keyMask, cache.k.mem, cache.v.mem, cache.mask,
        cache.length, cache.nextPosition, cache.capacity, null, 0, N, null, (t: Int32Array, first: number) => (calls.push([first, Array.from(t)]), true), ...(a.weightArgs as never[]));
      await new Promise((r) => setImmediate(r));
      expect(steps).toBe(N);
      let next = 0;
      for (const [first, t] of calls) {
        expect(first).toBe(next);
        expect(t.length % B).toBe(0);
        next += t.length / B;
      }
      expect(next).toBe(N);
      expect(Array.from(cache.length)).toEqual([5 + N - 1, 3 + N - 1]);  // the last step's tokens are not fed back
      const flat = calls.flatMap(([, t]) => t);
      const viaLib: number[][] = [];
      for await (const s of model.generateBatch(prompts2, { maxNewTokens: N, stopTokens: [] })) viaLib.push(s as number[]);
      expect(flat).toEqual(viaLib.flat());
    } finally {
      cache.dispose();
    }
  });

  maybe('llamaGenerate validates its own arguments', () => {
    const a = (model as unknown as { cfgArg: Float64Array; idArg: Uint32Array; weightArgs: unknown[] });
    const cache = model.createCache(1, 8);
    try {
      const call = (over: { maxNew?: number; length?: Int32Array; next?: Int32Array; onStep?: unknown; cap?: number; tokens?: number[] }) =>
        native().llamaGenerate(a.cfgArg, a.idArg, Int32Array.from(over.tokens ?? [1, 2]), Int32Array.from([0, (over.tokens ?? [1, 2]).length]), Int32Array.from([0, 1]),
          null, cache.k.mem, cache.v.mem, cache.mask, over.length ?? cache.length, over.next ?? cache.nextPosition, over.cap ?? 8, null, 0,
          over.maxNew ?? 2, null, (over.onStep ?? null) as never, ...(a.weightArgs as never[]));
      expect(() => call({ maxNew: -1 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
      expect(() => call({ onStep: 5 })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
      expect(() => call({ next: cache.length })).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
      expect(() => call({ length: new Int32Array(0) })).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
      expect(() => call({ cap: 9 })).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
      expect(() => call({ tokens: [1, 99999] })).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
      // more steps than the cache holds: the loop stops with the step that would overflow it
      cache.length.fill(0);
      cache.nextPosition.fill(0);
      expect(() => call({ maxNew: 8 })).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
      expect(cache.length[0]).toBe(8);
    } finally {
      cache.dispose();
    }
  });

  maybe('seeded sampling is reproducible, seed-dependent, and draws exactly what nn.sample draws', async () => {
    const opts = { maxNewTokens: 16, sample: true, temperature: 0.8, topK: 40, topP: 0.95, stopTokens: [] as number[] };
    const run = async (seed: number) => {
      const out: number[] = [];
      for await (const t of model.generate(prompts[2], { ...opts, seed })) out.push(t);
      return out;
    };
    const a = await run(7), b = await run(7), c = await run(8);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    // replay: full forward, then the sampling op on the last logits at the same stream position
    const seq = [...prompts[2]];
    for (const t of a) {
      const r = await model.forward([seq], { targets: 'none' });
      const logits = Tensor.from(Float32Array.from(r.logits[0]), [1, V]);
      expect(nn.sampleSync(logits, { temperature: 0.8, topK: 40, topP: 0.95, seed: 7, positions: [seq.length] })[0]).toBe(t);
      seq.push(t);
    }
  });

  maybe('loss masks and explicit targets select what counts', async () => {
    const p = prompts[2];
    const all = await model.forward([p]);
    const mask = p.map((_, i) => (i >= 10 ? 1 : 0));
    const masked = await model.forward([p], { lossMask: [mask] });
    expect(masked.count).toBe(p.length - 1 - 10);
    const want = -all.logprobs[0].subarray(10, p.length - 1).reduce((s, x) => s + x, 0) / masked.count;
    expect(masked.loss).toBeCloseTo(want, 12);
    const explicit = await model.forward([p], { targets: [p.map((_, i) => (i === 3 ? 17 : -1))] });
    expect(explicit.count).toBe(1);
    expect(Number.isFinite(explicit.logprobs[0][3])).toBe(true);
    const none = await model.forward([p], { targets: 'none' });
    expect(none.count).toBe(0);
    expect(Number.isNaN(none.loss)).toBe(true);
  });

  // The last layer finishes only each sequence's span of LM-head rows, grown until it takes the GEMM
  // path of the whole batch (5+ rows); 'all' logits make every row a head row (nothing skipped).
  maybe('last-position logits, span targets and probes equal those of the full last layer, bit for bit', async () => {
    const six = [...prompts, ...prompts.map((p) => p.slice(0, Math.max(2, p.length - 3)))];
    expect(six.length).toBeGreaterThan(4);
    const batches = [six];
    for (const weights of ['fp32', 'int4', 'w8a8'] as const) {
      const m = weights === 'fp32' ? model : await LlamaModel.load(tiny!, { weights });
      try {
        m.setTrainable();
        for (const seqs of batches) {
          const T = Math.max(...seqs.map((p) => p.length)), PAD = 4095;
          const padded = seqs.map((p, b) => (b % 2 ? [...new Array(T - p.length).fill(PAD), ...p] : p));
          const masks = seqs.map((p, b) => (b % 2 ? [...new Array(T - p.length).fill(0), ...new Array(p.length).fill(1)] : new Array(p.length).fill(1)));
          const spans = padded.map((p) => p.map((t, i) => (i >= p.length - 3 && i < p.length - 1 ? p[i + 1] : -1)));
          const full = await m.forward(padded, { attentionMask: masks, logits: 'all', targets: 'none' });
          const last = await m.forward(padded, { attentionMask: masks, targets: 'none' });
          padded.forEach((p, b) => expect(sameBits(last.logits[b], full.logits[b].subarray((p.length - 1) * V))).toBe(true));
          const subset = await m.forward(padded, { attentionMask: masks, targets: 'none', logitTokens: [17, 4000] });
          padded.forEach((p, b) => {
            const row = full.logits[b].subarray((p.length - 1) * V);
            expect(Array.from(subset.logits[b])).toEqual([row[17], row[4000]]);
          });
          // targets on a span of 2 rows per sequence: the last layer finishes those spans (grown)
          const spanLoss = await m.forward(padded, { attentionMask: masks, targets: spans, logits: 'none' });
          const spanFull = await m.forward(padded, { attentionMask: masks, targets: spans, logits: 'all' });
          expect(spanLoss.count).toBe(2 * seqs.length);
          expect(spanLoss.loss).toBe(spanFull.loss);
          padded.forEach((_, b) => expect(sameBits(spanLoss.logprobs[b], spanFull.logprobs[b])).toBe(true));
          const probe = await m.zoProbe(padded, { seed: 5, eps: 1e-2, attentionMask: masks, targets: 'none' });
          const probeFull = await m.zoProbe(padded, { seed: 5, eps: 1e-2, attentionMask: masks, targets: 'none', logits: 'all' });
          for (const side of ['plus', 'minus'] as const)
            padded.forEach((p, b) => expect(sameBits(probe[side].logits[b], probeFull[side].logits[b].subarray((p.length - 1) * V))).toBe(true));
        }
        // 1 and 2 sequences (1 and 2 head rows, spans grown to 5 rows) with an integer-activation LM
        // head, whose bits do not depend on its row count: 'last' equals 'all' only if the grown
        // spans kept the last layer on the GEMM path
        // a prompt that only fills a cache (no head row) skips the last layer after its keys and values
        const p0 = prompts[0], caches = [m.createCache(1, p0.length), m.createCache(1, p0.length)];
        try {
          await m.forward([p0.slice(0, 20)], { cache: caches[0], targets: 'none', logits: 'none' });
          await m.forward([p0.slice(0, 20)], { cache: caches[1], targets: 'none', logits: 'all' });
          const [a, b] = await Promise.all(caches.map((cache) => m.forward([p0.slice(20)], { cache, logits: 'all' })));
          expect(sameBits(a.logits[0], b.logits[0])).toBe(true);
        } finally {
          caches.forEach((c) => c.dispose());
        }
        if (weights !== 'w8a8') {
          const exactHead = await LlamaModel.load(tiny!, { weights, overrides: { lm_head: 'w8a8' } });
          try {
            for (const seqs of [[prompts[0]], [prompts[1], prompts[2]]]) {
              const last = await exactHead.forward(seqs, { targets: 'none' });
              const full = await exactHead.forward(seqs, { targets: 'none', logits: 'all' });
              seqs.forEach((p, b) => expect(sameBits(last.logits[b], full.logits[b].subarray((p.length - 1) * V))).toBe(true));
            }
          } finally {
            exactHead.dispose();
          }
        }
      } finally {
        if (m !== model) m.dispose();
      }
    }
  });

  maybe('results do not depend on the thread count', async () => {
    const runs: Float32Array[] = [];
    for (const t of [1, 2, 3]) {
      setThreads(t);
      runs.push(Float32Array.from((await model.forward(prompts, { logits: 'all' })).logits.flatMap((x) => Array.from(x))));
    }
    setThreads(cpuInfo().threads);
    expect(Buffer.from(runs[1].buffer).equals(Buffer.from(runs[0].buffer))).toBe(true);
    expect(Buffer.from(runs[2].buffer).equals(Buffer.from(runs[0].buffer))).toBe(true);
  });

  maybe('a forward allocates its activations once (category "activations") and frees them; the event loop stays free', async () => {
    const batch = [0, 1, 2, 3].map((s) => Array.from({ length: 200 }, (_, i) => (i * 37 + s * 11) % 4000));
    const before = (await settledLive()).activations;
    resetMemoryPeaks();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const r = await model.forward(batch, { logits: 'none' });
    clearInterval(timer);
    expect(r.count).toBe(4 * 199);
    const m = memory().engine;
    expect((await settledLive()).activations).toBe(before);
    const c = model.config, N = 800;
    const atLeast = 4 * N * (2 * c.hiddenSize + c.numHeads * c.headDim + 2 * c.numKvHeads * c.headDim + 2 * c.intermediateSize);
    expect(m.peak.activations - before).toBeGreaterThanOrEqual(atLeast);
    expect(ticks).toBeGreaterThan(0);
    const cache = model.createCache(2, 64);
    expect((await settledLive()).activations - before).toBe(2 * 4 * c.numLayers * 2 * c.numKvHeads * 64 * c.headDim);
    cache.dispose();
    expect((await settledLive()).activations).toBe(before);
  });

  maybe('bad inputs give coded errors and leave the model usable', async () => {
    await expect(model.forward([])).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    await expect(model.forward([[]])).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    await expect(model.forward([[1, 4096]])).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    await expect(model.forward([[1, -1]])).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    await expect(model.forward([[1, 2.5]])).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    await expect(model.forward([new Array(513).fill(5)])).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    await expect(model.forward([[1, 2]], { attentionMask: [[1]] })).rejects.toMatchObject({ code: 'ZOTUNE_SHAPE_MISMATCH' });
    await expect(model.forward([[1, 2]], { targets: [[5000, -1]] })).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    await expect(model.forward([[1, 2]], { logits: 'some' as never })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    const gen = model.generate([1, 2], { sample: true, topP: 1.5 });
    await expect(gen.next()).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    const long = model.generate(new Array(512).fill(3));
    await expect(long.next()).rejects.toMatchObject({ code: 'ZOTUNE_OUT_OF_RANGE' });
    expect(() => model.createCache(1, 513)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    const foreign = new KVCache({ ...model.config, numLayers: 2 }, 1, 8);
    await expect(model.forward([[1]], { cache: foreign })).rejects.toMatchObject({ code: 'ZOTUNE_SHAPE_MISMATCH' });
    foreign.dispose();
    // the native entry validates on its own (JS checks bypassed)
    const a = (model as unknown as { cfgArg: Float64Array; idArg: Uint32Array; weightArgs: unknown[] });
    const call = (tokens: number[], offsets: number[], positions: number[]) =>
      native().llamaForward(a.cfgArg, a.idArg, Int32Array.from(tokens), Int32Array.from(offsets), Int32Array.from(positions), null, null, null, null, null, null, null, null, null, null, 0, null, null, 0, ...(a.weightArgs as never[]));
    expect(() => call([1, 99999], [0, 2], [0, 1])).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => call([1, 2], [0, 2], [0, 512])).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => call([1, 2], [0, 3], [0, 1])).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => call([], [0], [])).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => call([1, 2], [0, 2], [0, 1].slice(0, 1))).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => native().llamaForward(a.cfgArg, a.idArg, Int32Array.from([1]), Int32Array.from([0, 1]), Int32Array.from([0]), null, null, null, null, null, null, null, null, null, null, 0, null, null, 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    // still fine afterwards
    expect((await model.forward([prompts[0]])).count).toBe(prompts[0].length - 1);
  });
});

describe('loading', () => {
  const maybe = micro ? test : test.skip;
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-model-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const copy = (files: string[]) => files.forEach((f) => fs.copyFileSync(path.join(micro!, f), path.join(tmp, f)));

  maybe('unsupported architectures, missing and misshapen weights are refused with codes', async () => {
    const weightsBefore = (await settledLive()).weights;
    copy(['model.safetensors', 'generation_config.json']);
    const cfg = JSON.parse(fs.readFileSync(path.join(micro!, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify({ ...cfg, model_type: 'mixtral', architectures: ['MixtralForCausalLM'] }));
    await expect(LlamaModel.load(tmp)).rejects.toMatchObject({ code: 'ZOTUNE_UNSUPPORTED' });
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 100 }));
    await expect(LlamaModel.load(tmp)).rejects.toMatchObject({ code: 'ZOTUNE_SHAPE_MISMATCH' });
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 3 }));
    await expect(LlamaModel.load(tmp)).rejects.toMatchObject({ code: 'ZOTUNE_BAD_FILE' });
    await expect(LlamaModel.load(micro!, { weights: 'int3' as never })).rejects.toMatchObject({ code: 'ZOTUNE_UNSUPPORTED' });
    expect((await settledLive()).weights).toBe(weightsBefore); // nothing leaked by the failed loads
  });

  maybe('tied embeddings use the embedding matrix as LM head; BF16 checkpoints load widened to fp32', async () => {
    const m = await LlamaModel.load(micro!);
    const entries = [];
    let embBf16: Uint16Array | undefined;
    for (const [name] of LlamaModel.tensorIds(m.config)) {
      if (name === 'lm_head.weight') continue;
      const f = m.tensor(name).data() as Float32Array;
      const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
      const bf = Uint16Array.from(u, (x) => x >>> 16); // truncated: exact after widening
      if (name === 'model.embed_tokens.weight') embBf16 = bf;
      entries.push({ name, dtype: 'BF16' as const, shape: [...m.tensor(name).shape], data: bf });
    }
    const cfg = JSON.parse(fs.readFileSync(path.join(micro!, 'config.json'), 'utf8'));
    const tiedDir = path.join(tmp, 'tied'), untiedDir = path.join(tmp, 'untied');
    fs.mkdirSync(tiedDir);
    fs.mkdirSync(untiedDir);
    writeSafetensors(path.join(tiedDir, 'model.safetensors'), entries);
    fs.writeFileSync(path.join(tiedDir, 'config.json'), JSON.stringify({ ...cfg, tie_word_embeddings: true }));
    writeSafetensors(path.join(untiedDir, 'model.safetensors'), [...entries, { name: 'lm_head.weight', dtype: 'BF16', shape: [4096, 64], data: embBf16! }]);
    fs.writeFileSync(path.join(untiedDir, 'config.json'), JSON.stringify(cfg));
    const tied = await LlamaModel.load(tiedDir), untied = await LlamaModel.load(untiedDir);
    expect(LlamaModel.tensorIds(tied.config).has('lm_head.weight')).toBe(false);
    const w = tied.tensor('model.layers.1.mlp.up_proj.weight').data() as Float32Array;
    const src = m.tensor('model.layers.1.mlp.up_proj.weight').data() as Float32Array;
    const srcBits = new Uint32Array(src.buffer, src.byteOffset, src.length), wBits = new Uint32Array(w.buffer, w.byteOffset, w.length);
    for (let i = 0; i < w.length; i += 97) expect(wBits[i]).toBe(((srcBits[i] >>> 16) << 16) >>> 0);
    const p = [4093, 400, 500, 600];
    const a = await tied.forward([p], { logits: 'all' }), b = await untied.forward([p], { logits: 'all' });
    expect(sameBits(a.logits[0], b.logits[0])).toBe(true);
    expect(a.loss).toBe(b.loss);
    [tied, untied, m].forEach((x) => x.dispose());
  });

  maybe('a disposed model refuses calls', async () => {
    const m = await LlamaModel.load(micro!);
    m.dispose();
    await expect(m.forward([[1, 2]])).rejects.toMatchObject({ code: 'ZOTUNE_DISPOSED' });
  });

  maybe('an error inside the native decode loop reaches the generator as a coded error, and the cache is freed', async () => {
    const m = await LlamaModel.load(micro!);
    const before = (await settledLive()).activations;
    const norm = m.tensor('model.norm.weight').data() as Float32Array;
    const keep = Float32Array.from(norm);
    norm.fill(NaN);  // every logit NaN: nothing to sample
    await expect(m.generate([1, 2, 3], { maxNewTokens: 5 }).next()).rejects.toMatchObject({ code: 'ZOTUNE_NONFINITE' });
    expect((await settledLive()).activations).toBe(before);
    norm.set(keep);
    let n = 0;
    for await (const t of m.generate([1, 2, 3], { maxNewTokens: 5, stopTokens: [] })) n += Number.isInteger(t) ? 1 : 0;
    expect(n).toBe(5);
    m.dispose();
  });

  maybe('disposing a model ends its generations in flight: their generators throw ZOTUNE_DISPOSED', async () => {
    const m = await LlamaModel.load(micro!);
    const before = (await settledLive()).activations;
    const gen = m.generate([1, 2, 3], { maxNewTokens: 400, stopTokens: [] });
    expect(typeof (await gen.next()).value).toBe('number');
    m.dispose();
    await expect(gen.next()).rejects.toMatchObject({ code: 'ZOTUNE_DISPOSED' });
    expect((await gen.next()).done).toBe(true);
    expect((await settledLive()).activations).toBe(before);  // its KV cache was freed
  });
});
