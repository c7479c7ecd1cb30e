/**
 * LLaMA-family causal LM: loading a Hugging Face folder, batched forward passes (per-token
 * log-probabilities, mean loss, logits) and KV-cache generation (greedy or seeded sampling,
 * streamed through an async iterator).
 *
 * A whole forward is ONE async native call (native/cpu/llama.cc): the layers run in C++ off the
 * event loop, activations are allocated once per call (memory category "activations").
 * Sequences of a batch are packed back to back, so different lengths cost no padding compute.
 *
 * Every weight tensor has a stable id (tensorIds(): its index in the HF parameter order,
 * independent of the storage scheme): the Philox stream its ZO perturbation direction is drawn
 * from. Every linear layer reaches the engine as (id, weights) through one entry, linear() in
 * llama.cc, where quantized formats and perturb-on-load plug in.
 */
import path from 'node:path';
import { ZotuneError, fail } from '../errors';
import { Tensor } from '../tensor';
import { native } from '../native/load';
import type { Mem } from '../native/binding';
import { ModelWeights } from '../io/safetensors';
import { GenerationConfig, LlamaConfig, loadGenerationConfig, loadLlamaConfig } from './config';

export type WeightScheme = 'fp32';

export interface LoadOptions {
  /** Storage of the weights. Only 'fp32' (F32/F16/BF16 checkpoints widened to float32) so far. */
  weights?: WeightScheme;
}

/** HF parameter names in the canonical order that defines tensor ids. */
export function llamaTensorNames(c: LlamaConfig): string[] {
  const names = ['model.embed_tokens.weight'];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    names.push(
      `${p}input_layernorm.weight`,
      `${p}self_attn.q_proj.weight`,
      `${p}self_attn.k_proj.weight`,
      `${p}self_attn.v_proj.weight`,
      `${p}self_attn.o_proj.weight`,
      `${p}post_attention_layernorm.weight`,
      `${p}mlp.gate_proj.weight`,
      `${p}mlp.up_proj.weight`,
      `${p}mlp.down_proj.weight`,
    );
  }
  names.push('model.norm.weight');
  if (!c.tieWordEmbeddings) names.push('lm_head.weight');
  return names;
}

/** The shape config.json implies for a weight (HF name). */
export function expectedShape(c: LlamaConfig, name: string): number[] {
  const D = c.hiddenSize, Q = c.numHeads * c.headDim, KV = c.numKvHeads * c.headDim, I = c.intermediateSize;
  if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') return [c.vocabSize, D];
  if (name.endsWith('layernorm.weight') || name === 'model.norm.weight') return [D];
  const m = /\.(q|k|v|o|gate|up|down)_proj\.weight$/.exec(name);
  const shapes: Record<string, number[]> = { q: [Q, D], k: [KV, D], v: [KV, D], o: [D, Q], gate: [I, D], up: [I, D], down: [D, I] };
  return shapes[m![1]];
}

/** One sequence of token ids (or of per-token flags / targets, aligned with it). */
export type Sequence = ArrayLike<number>;

export interface ForwardOptions {
  /**
   * What each token's log-probability is taken of: 'next' (default) the following token of its
   * sequence (causal LM loss), 'none', or explicit per-sequence target ids (-1 = no target).
   */
  targets?: 'next' | 'none' | Sequence[];
  /** Per-sequence 0/1 flags choosing which targets count (e.g. answer tokens only). */
  lossMask?: Sequence[];
  /**
   * HF attention_mask per sequence: 0 marks padding, which no token attends to and which gets no
   * target; rotary positions count real tokens only (left and right padding both work).
   */
  attentionMask?: Sequence[];
  /** Logits to return: 'last' (default: each sequence's last real token), 'all' or 'none'. */
  logits?: 'last' | 'all' | 'none';
  /** Continue the sequences held in a KV cache (batch sizes must match). */
  cache?: KVCache;
}

export interface ForwardResult {
  /** Mean of -log p(target) over the selected targets (NaN if none was selected). */
  loss: number;
  /** Number of selected targets. */
  count: number;
  /** Per sequence, per token: log p(target | prefix) in float64, NaN where no target is selected. */
  logprobs: Float64Array[];
  /** Per sequence: [vocab] ('last') or [tokens * vocab] ('all'); empty arrays for 'none'. */
  logits: Float32Array[];
}

export interface GenerateOptions {
  /** New tokens at most (default: generation_config max_new_tokens, else up to max_length / the context). */
  maxNewTokens?: number;
  /** Sample instead of taking the argmax (default: generation_config do_sample). */
  sample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seed of the sampling streams (sequence b uses Philox stream b). Default 0. */
  seed?: number | bigint;
  /** Stop a sequence after it emits one of these ids (default: the eos ids). [] never stops. */
  stopTokens?: number[];
  signal?: AbortSignal;
}

/**
 * Keys and values of every layer for `batch` sequences of up to `capacity` tokens, in engine
 * memory (category "activations"). One call at a time may use it.
 */
export class KVCache {
  readonly batch: number;
  readonly capacity: number;
  readonly k: Tensor;
  readonly v: Tensor;
  /** Per slot: 1 where a real (non-padding) token is cached. */
  readonly mask: Uint8Array;
  /** Slots filled per sequence. */
  readonly length: Int32Array;
  /** Next rotary position per sequence (real tokens seen). */
  readonly nextPosition: Int32Array;
  /** @internal */ busy = false;
  /** @internal [layers, kvHeads, headDim]: the models this cache fits. */
  readonly layout: string;

  constructor(c: LlamaConfig, batch: number, capacity: number) {
    if (!Number.isSafeInteger(batch) || batch < 1) fail('ZOTUNE_INVALID_ARGUMENT', `cache batch must be a positive integer, got ${batch}`);
    if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > c.maxPositionEmbeddings)
      fail('ZOTUNE_OUT_OF_RANGE', `cache capacity must be in [1, max_position_embeddings ${c.maxPositionEmbeddings}], got ${capacity}`);
    this.batch = batch;
    this.capacity = capacity;
    this.layout = [c.numLayers, c.numKvHeads, c.headDim].join();
    // keys transposed ([headDim][capacity] per head) so attention scores 8 slots per vector
    this.k = Tensor.empty([c.numLayers, batch, c.numKvHeads, c.headDim, capacity], 'f32', 'activations');
    try {
      this.v = Tensor.empty([c.numLayers, batch, c.numKvHeads, capacity, c.headDim], 'f32', 'activations');
    } catch (err) {
      this.k.dispose();
      throw err;
    }
    this.mask = new Uint8Array(batch * capacity);
    this.length = new Int32Array(batch);
    this.nextPosition = new Int32Array(batch);
  }

  /** Forgets every cached token (the memory is kept). */
  reset(): void {
    this.length.fill(0);
    this.nextPosition.fill(0);
    this.mask.fill(0);
  }

  dispose(): void {
    this.k.dispose();
    this.v.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

interface Packed {
  tokens: Int32Array;
  offsets: Int32Array;
  positions: Int32Array;
  keyMask: Uint8Array | null;
  targets: Int32Array | null;
  /** Row of each sequence's last real token, -1 if none. */
  lastRow: Int32Array;
}

function checkIds(seq: Sequence, vocab: number, what: string): void {
  for (let i = 0; i < seq.length; i++) {
    const t = seq[i];
    if (!Number.isInteger(t) || t < 0 || t >= vocab) fail('ZOTUNE_OUT_OF_RANGE', `${what}: token id ${t} at ${i} is outside [0, ${vocab})`);
  }
}

export class LlamaModel {
  readonly dir: string;
  readonly config: LlamaConfig;
  readonly generationConfig: GenerationConfig;
  readonly weightScheme: WeightScheme;
  private readonly weights: Map<string, Tensor>;
  private readonly cfgArg: Float64Array;
  private readonly idArg: Uint32Array;
  private readonly weightArgs: Mem[];
  private disposed = false;

  private constructor(dir: string, config: LlamaConfig, gen: GenerationConfig, scheme: WeightScheme, weights: Map<string, Tensor>) {
    this.dir = dir;
    this.config = config;
    this.generationConfig = gen;
    this.weightScheme = scheme;
    this.weights = weights;
    const c = config, s = c.ropeScaling;
    this.cfgArg = Float64Array.from([
      c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.intermediateSize, c.vocabSize, c.maxPositionEmbeddings, c.rmsNormEps,
      c.ropeTheta, s ? 1 : 0, s?.factor ?? 1, s?.lowFreqFactor ?? 1, s?.highFreqFactor ?? 4, s?.originalMaxPositionEmbeddings ?? 8192,
    ]);
    const ids = LlamaModel.tensorIds(c);
    const linear = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
    const idList: number[] = [];
    for (let i = 0; i < c.numLayers; i++)
      linear.forEach((p) => idList.push(ids.get(`model.layers.${i}.${p.startsWith('gate') || p.startsWith('up') || p.startsWith('down') ? 'mlp' : 'self_attn'}.${p}.weight`)!));
    idList.push(ids.get(c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight')!);
    this.idArg = Uint32Array.from(idList);
    const w = (n: string) => weights.get(n)!.mem;
    this.weightArgs = [w('model.embed_tokens.weight')];
    for (let i = 0; i < c.numLayers; i++) {
      const p = `model.layers.${i}.`;
      for (const n of ['input_layernorm', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'post_attention_layernorm', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'])
        this.weightArgs.push(w(`${p}${n}.weight`));
    }
    this.weightArgs.push(w('model.norm.weight'), w(c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight'));
  }

  /** Stable id of every weight tensor (the HF name -> its index in the canonical order). */
  static tensorIds(c: LlamaConfig): Map<string, number> {
    return new Map(llamaTensorNames(c).map((n, i) => [n, i]));
  }

  /** Loads config.json, generation_config.json and the safetensors weights of a HF folder. */
  static async load(dir: string, opts: LoadOptions = {}): Promise<LlamaModel> {
    const scheme = opts.weights ?? 'fp32';
    if (scheme !== 'fp32') fail('ZOTUNE_UNSUPPORTED', `weight scheme '${scheme}' is not supported (fp32)`);
    const config = loadLlamaConfig(dir);
    const gen = loadGenerationConfig(dir, config);
    const files = ModelWeights.open(dir);
    const weights = new Map<string, Tensor>();
    try {
      for (const name of llamaTensorNames(config)) {
        if (!files.has(name)) throw new ZotuneError('ZOTUNE_BAD_FILE', `${dir}: weight '${name}' is missing`);
        const want = expectedShape(config, name), got = files.info(name).shape;
        if (want.join() !== got.join())
          throw new ZotuneError('ZOTUNE_SHAPE_MISMATCH', `${dir}: weight '${name}' is [${got.join(', ')}], config.json implies [${want.join(', ')}]`);
        weights.set(name, files.readF32(name, 'weights'));
      }
    } catch (err) {
      weights.forEach((t) => t.dispose());
      throw err;
    } finally {
      files.close();
    }
    return new LlamaModel(path.resolve(dir), config, gen, scheme, weights);
  }

  /** The weight tensors by HF name (read-only views; the model owns them). */
  tensor(name: string): Tensor {
    const t = this.weights.get(name);
    if (!t) fail('ZOTUNE_INVALID_ARGUMENT', `no weight named '${name}'`);
    return t;
  }

  /** A KV cache for `batch` sequences of up to `capacity` tokens (default: max_position_embeddings). */
  createCache(batch = 1, capacity = this.config.maxPositionEmbeddings): KVCache {
    return new KVCache(this.config, batch, capacity);
  }

  private check(): void {
    if (this.disposed) fail('ZOTUNE_DISPOSED', 'the model was disposed');
  }

  private pack(seqs: readonly Sequence[], opts: ForwardOptions, forNext: boolean): Packed {
    const c = this.config, B = seqs.length, cache = opts.cache;
    if (!Array.isArray(seqs) || B === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'the batch is empty: pass at least one sequence');
    if (cache && cache.batch !== B) fail('ZOTUNE_SHAPE_MISMATCH', `the cache holds ${cache.batch} sequences, the batch has ${B}`);
    if (cache && cache.layout !== [c.numLayers, c.numKvHeads, c.headDim].join())
      fail('ZOTUNE_SHAPE_MISMATCH', `the cache was made for another model (layers, kv heads, head dim ${cache.layout})`);
    const per = (list: Sequence[] | undefined, what: string) => {
      if (list && list.length !== B) fail('ZOTUNE_SHAPE_MISMATCH', `${what} needs one entry per sequence (${B})`);
      list?.forEach((m, b) => {
        if (m.length !== seqs[b].length) fail('ZOTUNE_SHAPE_MISMATCH', `${what}[${b}] has ${m.length} entries, sequence ${b} has ${seqs[b].length} tokens`);
      });
    };
    per(opts.attentionMask, 'attentionMask');
    per(opts.lossMask, 'lossMask');
    const tg = opts.targets ?? 'next';
    if (Array.isArray(tg)) per(tg, 'targets');
    else if (tg !== 'next' && tg !== 'none') fail('ZOTUNE_INVALID_ARGUMENT', `targets must be 'next', 'none' or per-sequence ids`);
    let N = 0;
    seqs.forEach((s, b) => {
      if (!cache && !forNext && s.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', `sequence ${b} is empty`);
      checkIds(s, c.vocabSize, `sequence ${b}`);
      N += s.length;
    });
    if (N === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'the batch has no tokens');
    const tokens = new Int32Array(N), offsets = new Int32Array(B + 1), positions = new Int32Array(N);
    const keyMask = opts.attentionMask ? new Uint8Array(N) : null;
    const targets = tg === 'none' ? null : new Int32Array(N).fill(-1);
    const lastRow = new Int32Array(B).fill(-1);
    let at = 0;
    for (let b = 0; b < B; b++) {
      const s = seqs[b], am = opts.attentionMask?.[b], lm = opts.lossMask?.[b];
      const start = cache ? cache.length[b] : 0;
      if (start + s.length > (cache ? cache.capacity : c.maxPositionEmbeddings))
        fail('ZOTUNE_OUT_OF_RANGE', cache
          ? `sequence ${b}: ${start} cached + ${s.length} new tokens exceed the cache capacity ${cache.capacity}`
          : `sequence ${b} has ${s.length} tokens, more than max_position_embeddings ${c.maxPositionEmbeddings}`);
      let pos = cache ? cache.nextPosition[b] : 0;
      offsets[b] = at;
      for (let i = 0; i < s.length; i++, at++) {
        tokens[at] = s[i];
        const real = am ? am[i] !== 0 : true;
        if (keyMask) keyMask[at] = real ? 1 : 0;
        positions[at] = real ? pos : Math.max(pos - 1, 0);
        if (real) {
          pos++;
          lastRow[b] = at;
        }
        if (!targets || !real || (lm && !lm[i])) continue;
        if (tg === 'next') {
          if (i + 1 < s.length && (am ? am[i + 1] !== 0 : true)) targets[at] = s[i + 1];
        } else {
          const t = (tg as Sequence[])[b][i];
          if (!Number.isInteger(t) || t < -1 || t >= c.vocabSize) fail('ZOTUNE_OUT_OF_RANGE', `targets[${b}][${i}] = ${t} is outside [-1, ${c.vocabSize})`);
          targets[at] = t;
        }
      }
      if (pos > c.maxPositionEmbeddings) fail('ZOTUNE_OUT_OF_RANGE', `sequence ${b} reaches position ${pos - 1}, beyond max_position_embeddings ${c.maxPositionEmbeddings}`);
    }
    offsets[B] = N;
    return { tokens, offsets, positions, keyMask, targets, lastRow };
  }

  private async run(p: Packed, cache: KVCache | undefined, logitRows: Int32Array | null, next: Int32Array | null, sample: Float64Array | null, seed: number | bigint) {
    const c = this.config;
    const logprobs = p.targets ? new Float64Array(p.tokens.length) : null;
    const logits = logitRows ? new Float32Array(logitRows.length * c.vocabSize) : null;
    if (cache) {
      if (cache.busy) fail('ZOTUNE_INVALID_ARGUMENT', 'the KV cache is in use by another call');
      cache.busy = true;
    }
    let r: { logprobSum: number; count: number };
    try {
      r = await native().llamaForwardAsync(
        this.cfgArg, this.idArg, p.tokens, p.offsets, p.positions, p.keyMask, p.targets, logprobs, logitRows, logits,
        cache ? cache.k.mem : null, cache ? cache.v.mem : null, cache ? cache.mask : null, cache ? cache.length : null, cache ? cache.capacity : 0,
        next, sample, seed, ...this.weightArgs,
      );
    } finally {
      if (cache) cache.busy = false;
    }
    if (cache)
      for (let b = 0; b < cache.batch; b++) {
        const n = p.offsets[b + 1] - p.offsets[b];
        cache.length[b] += n;
        for (let i = p.offsets[b]; i < p.offsets[b + 1]; i++) if (!p.keyMask || p.keyMask[i]) cache.nextPosition[b]++;
      }
    return { r, logprobs, logits };
  }

  /** One forward pass over a batch of token-id sequences (see ForwardOptions). */
  async forward(batch: readonly Sequence[], opts: ForwardOptions = {}): Promise<ForwardResult> {
    this.check();
    const p = this.pack(batch, opts, false);
    const mode = opts.logits ?? 'last';
    if (mode !== 'last' && mode !== 'all' && mode !== 'none') fail('ZOTUNE_INVALID_ARGUMENT', `logits must be 'last', 'all' or 'none'`);
    const B = batch.length, V = this.config.vocabSize;
    let rows: Int32Array | null = null;
    if (mode === 'all') rows = Int32Array.from({ length: p.tokens.length }, (_, i) => i);
    else if (mode === 'last') rows = p.lastRow.filter((r) => r >= 0);
    const { r, logprobs, logits } = await this.run(p, opts.cache, rows && rows.length ? rows : null, null, null, 0);
    const out: ForwardResult = { loss: r.count ? -r.logprobSum / r.count : NaN, count: r.count, logprobs: [], logits: [] };
    let li = 0;
    for (let b = 0; b < B; b++) {
      const s = p.offsets[b], e = p.offsets[b + 1];
      out.logprobs.push(logprobs ? logprobs.subarray(s, e) : new Float64Array(e - s).fill(NaN));
      if (mode === 'all') out.logits.push(logits!.subarray(s * V, e * V));
      else if (mode === 'last' && p.lastRow[b] >= 0) out.logits.push(logits!.subarray(li * V, ++li * V));
      else out.logits.push(new Float32Array(0));
    }
    return out;
  }

  private decodeParams(opts: GenerateOptions) {
    const g = this.generationConfig;
    const doSample = opts.sample ?? g.doSample;
    const t = doSample ? opts.temperature ?? g.temperature : 0;
    const topK = opts.topK ?? (doSample ? g.topK : 0), topP = opts.topP ?? (doSample ? g.topP : 1);
    if (!(Number.isFinite(t) && t >= 0)) fail('ZOTUNE_INVALID_ARGUMENT', `temperature must be a finite number >= 0, got ${t}`);
    if (!Number.isSafeInteger(topK) || topK < 0) fail('ZOTUNE_INVALID_ARGUMENT', `topK must be a non-negative integer, got ${topK}`);
    if (!(topP > 0 && topP <= 1)) fail('ZOTUNE_INVALID_ARGUMENT', `topP must be in (0, 1], got ${topP}`);
    return Float64Array.from([t, topK, topP]);
  }

  /**
   * Generates continuations of several prompts at once with one KV cache; each step yields one
   * token per sequence (undefined for sequences that already stopped).
   */
  async *generateBatch(prompts: readonly Sequence[], opts: GenerateOptions = {}): AsyncGenerator<(number | undefined)[]> {
    this.check();
    const c = this.config, g = this.generationConfig, B = prompts.length;
    if (!Array.isArray(prompts) || B === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'generate needs at least one prompt');
    prompts.forEach((p, b) => {
      if (p.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', `prompt ${b} is empty`);
      checkIds(p, c.vocabSize, `prompt ${b}`);
    });
    const longest = Math.max(...prompts.map((p) => p.length));
    if (longest >= c.maxPositionEmbeddings) fail('ZOTUNE_OUT_OF_RANGE', `a prompt of ${longest} tokens leaves no room below max_position_embeddings ${c.maxPositionEmbeddings}`);
    const room = c.maxPositionEmbeddings - longest;
    const dflt = g.maxNewTokens ?? (g.maxLength !== undefined ? Math.max(g.maxLength - longest, 0) : room);
    const maxNew = Math.min(opts.maxNewTokens ?? dflt, room);
    if (!Number.isSafeInteger(maxNew) || maxNew < 0) fail('ZOTUNE_INVALID_ARGUMENT', `maxNewTokens must be a non-negative integer, got ${opts.maxNewTokens}`);
    if (maxNew === 0) return;
    const sample = this.decodeParams(opts);
    const seed = opts.seed ?? 0;
    const stop = new Set(opts.stopTokens ?? g.eosTokenIds);
    const cache = this.createCache(B, longest + maxNew);
    try {
      const next = new Int32Array(B);
      const done = new Array<boolean>(B).fill(false);
      let feed: Sequence[] = prompts.map((p) => p);
      for (let step = 0; step < maxNew; step++) {
        opts.signal?.throwIfAborted();
        next.fill(-1);
        await this.run(this.pack(feed, { cache, targets: 'none' }, true), cache, null, next, sample, seed);
        const out = Array.from(next, (id, b) => (done[b] ? undefined : id));
        out.forEach((id, b) => {
          if (id !== undefined && stop.has(id)) done[b] = true;
        });
        yield out;
        if (done.every((d) => d)) return;
        feed = out.map((id, b) => (done[b] || id === undefined ? [] : [id]));
      }
    } finally {
      cache.dispose();
    }
  }

  /** Streams the continuation of one prompt, token by token (the stop token included). */
  async *generate(prompt: Sequence, opts: GenerateOptions = {}): AsyncGenerator<number> {
    for await (const step of this.generateBatch([prompt], opts)) {
      if (step[0] === undefined) return;
      yield step[0];
    }
  }

  /** Frees the weights (after any call in flight). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.weights.forEach((t) => t.dispose());
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
