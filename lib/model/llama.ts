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
 *
 * Weights are quantized at load (one tensor at a time: read as f32, quantize, free), per scheme
 * and per-module overrides. ZO training (zoProbe / zoUpdate; README "ZO training hooks of the
 * model") perturbs the trainable tensors inside the GEMMs ('on-load', weights never written) or in
 * place (MeZO); a probe runs the layers below the first trainable tensor once for both signs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZotuneError, fail } from '../errors';
import { Tensor } from '../tensor';
import { native } from '../native/load';
import type { Mem, ProbeSums } from '../native/binding';
import { ModelWeights, writeSafetensors } from '../io/safetensors';
import { Granularity, QFormat, QTensor, QTensorDesc } from '../qtensor';
import { dequantizeSync, quantizeSync, toFormatSync } from '../quant';
import { GenerationConfig, LlamaConfig, loadGenerationConfig, loadLlamaConfig } from './config';
import { DeviceLlamaModel } from './device-llama';
import type { ToDeviceOptions } from './device-llama';

/** Storage of a weight tensor; 'int4' = 'int4-g128'; w8a8 / w4a8 also quantize activations to int8. */
export type WeightScheme =
  | 'fp32' | 'bf16' | 'int8' | 'int4' | 'int4-g32' | 'int4-g64' | 'int4-g128' | 'fp8-e4m3' | 'fp8-e5m2' | 'w8a8' | 'w4a8';

/** Format, scale granularity and activation handling of each quantized scheme. */
const SCHEMES: Record<Exclude<WeightScheme, 'fp32'>, { format: QFormat; granularity: Granularity; intAct: boolean }> = {
  bf16: { format: 'bf16', granularity: 'tensor', intAct: false },
  int8: { format: 'int8', granularity: 'channel', intAct: false },
  int4: { format: 'int4', granularity: 128, intAct: false },
  'int4-g32': { format: 'int4', granularity: 32, intAct: false },
  'int4-g64': { format: 'int4', granularity: 64, intAct: false },
  'int4-g128': { format: 'int4', granularity: 128, intAct: false },
  // per-channel scales: one outlier row does not flatten the others' range
  'fp8-e4m3': { format: 'fp8-e4m3', granularity: 'channel', intAct: false },
  'fp8-e5m2': { format: 'fp8-e5m2', granularity: 'channel', intAct: false },
  w8a8: { format: 'int8', granularity: 'channel', intAct: true },
  w4a8: { format: 'int4', granularity: 128, intAct: true },
};
export const WEIGHT_SCHEMES: readonly WeightScheme[] = ['fp32', ...(Object.keys(SCHEMES) as WeightScheme[])];

/** How a scheme stores a weight: QTensor format and granularity, and whether activations go int8 (undefined for fp32). */
export function schemeStorage(scheme: WeightScheme): { format: QFormat; granularity: Granularity; intAct: boolean } | undefined {
  if (scheme === 'fp32') return undefined;
  const s = SCHEMES[scheme];
  if (!s) fail('ZOTUNE_UNSUPPORTED', `weight scheme '${String(scheme)}' is not supported (${WEIGHT_SCHEMES.join(', ')})`);
  return { ...s };
}

export interface LoadOptions {
  /**
   * Storage of the linear layers (q/k/v/o, gate/up/down, lm_head): 'fp32' (default; F32/F16/BF16
   * checkpoints widened) or a quantized scheme. Embeddings and norms stay fp32 unless overridden
   * (with tie_word_embeddings the LM head is the embedding matrix and follows its scheme).
   */
  weights?: WeightScheme;
  /**
   * Per-tensor schemes by glob over HF names ('*' within a dotted segment run, '**' anything; a
   * pattern may omit the trailing '.weight'), e.g. { 'lm_head': 'int8' }. Later entries win.
   * Norms are fp32 only; an embedding with w8a8/w4a8 is stored int8/int4 (it is gathered).
   */
  overrides?: Record<string, WeightScheme>;
}

/** A trainable-set or override pattern: glob string or RegExp over HF tensor names. */
export type TensorPattern = string | RegExp;

function globRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (ch === '*') re += '[^.]*';
    else if (ch === '?') re += '[^.]';
    else re += ch.replace(/[\\^$+.()|{}[\]]/g, '\\$&');
  }
  return new RegExp(`^(?:${re})$`);
}

/** Whether an HF tensor name (or its module name, without '.weight') matches a pattern. */
export function matchesTensor(pattern: TensorPattern, name: string): boolean {
  const module = name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : name;
  if (pattern instanceof RegExp) {
    pattern.lastIndex = 0;
    const hit = pattern.test(name);
    pattern.lastIndex = 0;
    return hit;
  }
  if (typeof pattern !== 'string') fail('ZOTUNE_INVALID_ARGUMENT', `a tensor pattern must be a glob string or a RegExp, got ${typeof pattern}`);
  const re = globRegExp(pattern);
  return re.test(name) || re.test(module);
}

function isNorm(name: string): boolean {
  return name.endsWith('layernorm.weight') || name === 'model.norm.weight';
}

/** A ZO direction: Gaussian (default) or Rademacher, and the QuZO grid bits (0 = exact z). */
export interface ZoDirection {
  dist?: 'gaussian' | 'rademacher';
  bits?: number;
}

export interface ZoProbeOptions extends Omit<ForwardOptions, 'cache'> {
  seed: number | bigint;
  eps: number;
  direction?: ZoDirection;
  /** 'on-load' (default): z added inside the weight loads; 'in-place': MeZO's +eps, -2eps, +eps on fp32 weights. */
  mode?: 'on-load' | 'in-place';
}

/** Several SPSA queries on one batch (zoProbeMany): every ZoProbeOptions field but the seed, and a seed per query. */
export interface ZoProbeManyOptions extends Omit<ZoProbeOptions, 'seed'> {
  seeds: readonly (number | bigint)[];
}

/** The two forwards of one query: at theta + eps z and at theta - eps z. */
export interface ZoProbeResult {
  plus: ForwardResult;
  minus: ForwardResult;
}

export interface ZoUpdateOptions {
  seed: number | bigint;
  /** theta <- theta * (1 - decay [tensor decays]) - scale * z_update(seed). */
  scale: number;
  direction?: ZoDirection;
  /** lr * weight decay; skipped for norms. Default 0. */
  decay?: number;
}

export interface TrainableInfo {
  name: string;
  id: number;
  numel: number;
  scheme: WeightScheme;
  /** False for norms: weight decay skips them (MeZO). */
  decay: boolean;
}

/** @internal */
export function directionArgs(d: ZoDirection | undefined): [number, number] {
  const dist = d?.dist ?? 'gaussian';
  if (dist !== 'gaussian' && dist !== 'rademacher') fail('ZOTUNE_INVALID_ARGUMENT', `direction.dist must be 'gaussian' or 'rademacher', got ${String(dist)}`);
  const bits = d?.bits ?? 0;
  if (!(bits === 0 || (Number.isInteger(bits) && bits >= 2 && bits <= 8))) fail('ZOTUNE_INVALID_ARGUMENT', `direction.bits must be 0 or 2..8, got ${String(bits)}`);
  return [dist === 'gaussian' ? 0 : 1, bits];
}

/** @internal */
export function checkSeed(seed: unknown): void {
  if (typeof seed === 'bigint' ? seed < 0n || seed >= 1n << 64n : !(Number.isSafeInteger(seed) && (seed as number) >= 0))
    fail('ZOTUNE_INVALID_ARGUMENT', `seed must be a non-negative integer below 2^64 (number or bigint), got ${String(seed)}`);
}

/** @internal The seeds of a probe call, checked: zoProbe's {seed} (many = false) or zoProbeMany's {seeds}. */
export function probeSeeds(opts: unknown, many: boolean): (number | bigint)[] {
  const call = many ? 'zoProbeMany' : 'zoProbe';
  if (!opts || typeof opts !== 'object') fail('ZOTUNE_INVALID_ARGUMENT', `${call} needs options {${many ? 'seeds' : 'seed'}, eps}`);
  const o = opts as { seed?: unknown; seeds?: unknown };
  if (many && (!Array.isArray(o.seeds) || o.seeds.length === 0)) fail('ZOTUNE_INVALID_ARGUMENT', 'zoProbeMany needs a non-empty array of seeds');
  const seeds = many ? (o.seeds as unknown[]) : [o.seed];
  seeds.forEach(checkSeed);
  return seeds as (number | bigint)[];
}

/** An output buffer of n elements, or ZOTUNE_OOM naming it when JS cannot allocate it (logits of every position of a large batch, many queries). */
function outputArray<T extends Float32Array | Float64Array>(ctor: { new (n: number): T; BYTES_PER_ELEMENT: number }, n: number, what: string): T {
  try {
    return new ctor(n);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    return fail('ZOTUNE_OOM', `cannot allocate the ${what} output (${n} values, ${((n * ctor.BYTES_PER_ELEMENT) / 2 ** 30).toFixed(1)} GiB): ask for fewer rows (logits: 'last' or 'none', logitTokens), a smaller batch or fewer queries`);
  }
}

/** @internal */
export function checkFinite(v: unknown, what: string): number {
  if (typeof v !== 'number') fail('ZOTUNE_INVALID_ARGUMENT', `${what} must be a number`);
  if (!Number.isFinite(v)) fail('ZOTUNE_NONFINITE', `${what} must be finite, got ${v}`);
  return v;
}

/** @internal Readers (forwards, on-load probes) run together; writers (in-place probes, updates) alone. */
export class WeightLock {
  private writer: Promise<void> = Promise.resolve();
  private readers = new Set<Promise<unknown>>();

  async read<T>(fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const w = this.writer;
      await w;
      if (w === this.writer) break;
    }
    const p = fn();
    this.readers.add(p);
    try {
      return await p;
    } finally {
      this.readers.delete(p);
    }
  }

  async write<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.writer;
    let release!: () => void;
    this.writer = new Promise<void>((r) => (release = r));
    try {
      await prev;
      await Promise.allSettled([...this.readers]);
      return await fn();
    } finally {
      release();
    }
  }
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
  /**
   * Only these vocabulary entries' logits (LM-head rows), in this order: each logits row then has
   * logitTokens.length entries, bit-identical to those columns of the full logits, and a ZO probe
   * perturbs only these rows of the LM head (no other row can change them). For classifiers over a
   * few label words; needs targets 'none' (a loss over the whole vocabulary needs every row).
   */
  logitTokens?: readonly number[] | Int32Array;
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
  /** Per sequence: [vocab] ('last') or [tokens * vocab] ('all') (vocab = logitTokens.length with a subset); empty arrays for 'none'. */
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

/** @internal What packing a batch reads of a KV cache (KVCache, DeviceKVCache) and advances. */
export interface CacheSlots {
  readonly batch: number;
  readonly capacity: number;
  /** [layers, kvHeads, headDim]: the models this cache fits. */
  readonly layout: string;
  readonly length: Int32Array;
  readonly nextPosition: Int32Array;
  busy: boolean;
}

/** @internal Marks the cache in use for one call (one call at a time). */
export async function withCache<T>(cache: CacheSlots | undefined, call: () => Promise<T>): Promise<T> {
  if (!cache) return call();
  if (cache.busy) fail('ZOTUNE_INVALID_ARGUMENT', 'the KV cache is in use by another call');
  cache.busy = true;
  try {
    return await call();
  } finally {
    cache.busy = false;
  }
}

/** @internal After a call with a cache: its new tokens fill slots, its real tokens advance the positions. */
export function advanceCache(cache: CacheSlots, p: Packed): void {
  for (let b = 0; b < cache.batch; b++) {
    cache.length[b] += p.offsets[b + 1] - p.offsets[b];
    for (let i = p.offsets[b]; i < p.offsets[b + 1]; i++) if (!p.keyMask || p.keyMask[i]) cache.nextPosition[b]++;
  }
}

/**
 * Keys and values of every layer for `batch` sequences of up to `capacity` tokens, in engine
 * memory (category "activations"). One call at a time may use it.
 */
export class KVCache implements CacheSlots {
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

/** A batch packed back to back for the native calls (forward, probe, gradients). */
export interface Packed {
  tokens: Int32Array;
  offsets: Int32Array;
  positions: Int32Array;
  keyMask: Uint8Array | null;
  targets: Int32Array | null;
  /** Row of each sequence's last real token, -1 if none. */
  lastRow: Int32Array;
}

/** The files save() writes: a folder holding only these (an earlier export) may be replaced. */
const EXPORT_FILES = new Set(['config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model']);

/** save() replaces its target folder: refuse one that holds anything an export would not write (a run folder, user files). */
function checkSaveTarget(target: string): void {
  if (!fs.existsSync(target)) return;
  if (!fs.statSync(target).isDirectory()) fail('ZOTUNE_INVALID_ARGUMENT', `${target} exists and is not a folder`);
  const foreign = fs.readdirSync(target).filter((f) => !EXPORT_FILES.has(f));
  if (foreign.length)
    fail('ZOTUNE_INVALID_ARGUMENT', `${target} holds files a model export does not write (${foreign.slice(0, 5).join(', ')}${foreign.length > 5 ? ', ...' : ''}); saving replaces the whole folder, so choose a new or empty folder`);
}

/** New tokens when the caller sets none: the checkpoint's max_new_tokens, else what its max_length (HF default 20) leaves after the prompt. */
export function defaultNewTokens(g: GenerationConfig, promptLength: number): number {
  return g.maxNewTokens ?? Math.max(g.maxLength - promptLength, 0);
}

function decodeParams(g: GenerationConfig, opts: GenerateOptions): Float64Array {
  const doSample = opts.sample ?? g.doSample;
  const t = doSample ? opts.temperature ?? g.temperature : 0;
  const topK = opts.topK ?? (doSample ? g.topK : 0), topP = opts.topP ?? (doSample ? g.topP : 1);
  if (!(Number.isFinite(t) && t >= 0)) fail('ZOTUNE_INVALID_ARGUMENT', `temperature must be a finite number >= 0, got ${t}`);
  if (!Number.isSafeInteger(topK) || topK < 0) fail('ZOTUNE_INVALID_ARGUMENT', `topK must be a non-negative integer, got ${topK}`);
  if (!(topP >= 0 && topP <= 1)) fail('ZOTUNE_INVALID_ARGUMENT', `topP must be in [0, 1], got ${topP}`);
  return topP === 0 ? Float64Array.from([0, 0, 1]) : Float64Array.from([t, topK, topP]); // top-p 0 keeps the most likely token: greedy
}

/** @internal The checked settings of one generate call. */
export interface GenerationPlan {
  maxNew: number;
  sample: Float64Array;
  seed: number | bigint;
  stop: Set<number>;
  /** KV cache slots the call needs per sequence. */
  capacity: number;
}

/** @internal Validates the prompts and options of a generate call; null when there is nothing to generate. */
export function planGeneration(m: LlamaModel, prompts: readonly Sequence[], opts: GenerateOptions): GenerationPlan | null {
  const c = m.config, g = m.generationConfig;
  if (!Array.isArray(prompts) || prompts.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'generate needs at least one prompt');
  prompts.forEach((p, b) => {
    if (p.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', `prompt ${b} is empty`);
    checkIds(p, c.vocabSize, `prompt ${b}`);
  });
  const longest = Math.max(...prompts.map((p) => p.length));
  if (longest >= c.maxPositionEmbeddings) fail('ZOTUNE_OUT_OF_RANGE', `a prompt of ${longest} tokens leaves no room below max_position_embeddings ${c.maxPositionEmbeddings}`);
  const room = c.maxPositionEmbeddings - longest;
  const maxNew = Math.min(opts.maxNewTokens ?? defaultNewTokens(g, longest), room);
  if (!Number.isSafeInteger(maxNew) || maxNew < 0) fail('ZOTUNE_INVALID_ARGUMENT', `maxNewTokens must be a non-negative integer, got ${opts.maxNewTokens}`);
  if (maxNew === 0) return null;
  const sample = decodeParams(g, opts);
  return { maxNew, sample, seed: opts.seed ?? 0, stop: new Set(opts.stopTokens ?? g.eosTokenIds), capacity: longest + maxNew };
}

/**
 * @internal The driver of a native decode loop (LlamaModel's llamaGenerate, DeviceLlamaModel's
 * llamaDeviceGenerate): one cache for the prompts, then `run` starts every step in one native call,
 * whose steps arrive through `onStep` (one or more steps of one token per sequence, -1 once it
 * stopped) while later steps run; each step is yielded (undefined once a sequence stopped). A round
 * trip to JS per token cost a small model a third of its decode time; steps faster than 2 ms arrive
 * a few at a time. Stopping early (break, abort, `stopAll` from dispose) ends the loop within a few
 * steps. `live` runs before each yield (it throws once the model is disposed).
 */
export async function* streamGeneration<C extends CacheSlots & { dispose(): void }>(
  m: LlamaModel, prompts: readonly Sequence[], opts: GenerateOptions, newCache: (batch: number, capacity: number) => C,
  run: (p: Packed, cache: C, plan: GenerationPlan, onStep: (tokens: Int32Array) => boolean) => Promise<number>,
  live: () => void, stopAll?: Set<() => void>,
): AsyncGenerator<(number | undefined)[]> {
  const plan = planGeneration(m, prompts, opts);
  if (!plan) return;
  opts.signal?.throwIfAborted();
  const cache = newCache(prompts.length, plan.capacity);
  const steps: Int32Array[] = [];
  let stop = false, settled = false, total = 0, failure: unknown, wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onAbort = () => {
    stop = true;
    notify();
  };
  opts.signal?.addEventListener('abort', onAbort);
  stopAll?.add(onAbort);
  let running: Promise<void>;
  try {
    const p = m.pack(prompts, { cache, targets: 'none' }, true);
    const B = prompts.length;
    const onStep = (tokens: Int32Array) => {
      for (let at = 0; at < tokens.length; at += B) steps.push(tokens.subarray(at, at + B));
      notify();
      return !stop;
    };
    running = run(p, cache, plan, onStep).then(
      (n) => void (total = n),
      (e: unknown) => void (failure = e ?? new Error('generate failed')),
    ).finally(() => {
      settled = true;
      notify();
    });
  } catch (e) {
    opts.signal?.removeEventListener('abort', onAbort);
    stopAll?.delete(onAbort);
    cache.dispose();
    throw e;
  }
  try {
    for (let i = 0; ; ) {
      opts.signal?.throwIfAborted();
      live();
      if (i < steps.length) {
        yield Array.from(steps[i++], (id) => (id < 0 ? undefined : id));
        continue;
      }
      if (settled && failure !== undefined) throw failure;
      if (settled && i >= total) return;
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    stop = true;
    opts.signal?.removeEventListener('abort', onAbort);
    stopAll?.delete(onAbort);
    await running;
    cache.dispose();
  }
}

function checkIds(seq: Sequence, vocab: number, what: string): void {
  for (let i = 0; i < seq.length; i++) {
    const t = seq[i];
    if (!Number.isInteger(t) || t < 0 || t >= vocab) fail('ZOTUNE_OUT_OF_RANGE', `${what}: token id ${t} at ${i} is outside [0, ${vocab})`);
  }
}

type Weight = Tensor | QTensor;
type WeightArg = Mem | (QTensorDesc & { intAct?: boolean });

export class LlamaModel {
  readonly dir: string;
  readonly config: LlamaConfig;
  readonly generationConfig: GenerationConfig;
  readonly weightScheme: WeightScheme;
  private readonly weights: Map<string, Weight>;
  private readonly schemes: Map<string, WeightScheme>;
  private readonly ids: Map<string, number>;
  /** @internal The native config vector (also read by lossAndGrad). */
  readonly cfgArg: Float64Array;
  private readonly idArg: Uint32Array;
  private readonly weightArgs: WeightArg[];
  private readonly argNames: string[];
  /** Per tensor id: 1 if trainable. */
  private trainableFlags: Uint8Array;
  private readonly lock = new WeightLock();
  private disposed = false;
  /** Stops the native decode loops in flight (dispose ends them). */
  private readonly generations = new Set<() => void>();

  private constructor(dir: string, config: LlamaConfig, gen: GenerationConfig, scheme: WeightScheme, weights: Map<string, Weight>, schemes: Map<string, WeightScheme>) {
    this.dir = dir;
    this.config = config;
    this.generationConfig = gen;
    this.weightScheme = scheme;
    this.weights = weights;
    this.schemes = schemes;
    const c = config, s = c.ropeScaling;
    this.cfgArg = Float64Array.from([
      c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.intermediateSize, c.vocabSize, c.maxPositionEmbeddings, c.rmsNormEps,
      c.ropeTheta, s ? 1 : 0, s?.factor ?? 1, s?.lowFreqFactor ?? 1, s?.highFreqFactor ?? 4, s?.originalMaxPositionEmbeddings ?? 8192,
    ]);
    this.ids = LlamaModel.tensorIds(c);
    const head = c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
    const argNames = ['model.embed_tokens.weight'];
    for (let i = 0; i < c.numLayers; i++) {
      const p = `model.layers.${i}.`;
      for (const n of ['input_layernorm', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'post_attention_layernorm', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'])
        argNames.push(`${p}${n}.weight`);
    }
    argNames.push('model.norm.weight', head);
    this.argNames = argNames;
    this.idArg = Uint32Array.from(argNames, (n) => this.ids.get(n)!);
    this.weightArgs = argNames.map((n) => this.weightArg(n));
    this.trainableFlags = new Uint8Array(this.ids.size).fill(1);
  }

  private weightArg(name: string): WeightArg {
    const w = this.weights.get(name)!;
    if (w instanceof Tensor) return w.mem;
    const sc = this.schemes.get(name)!;
    return { ...w.desc(), intAct: sc !== 'fp32' && SCHEMES[sc].intAct && name !== 'model.embed_tokens.weight' };
  }

  /** Stable id of every weight tensor (the HF name -> its index in the canonical order). */
  static tensorIds(c: LlamaConfig): Map<string, number> {
    return new Map(llamaTensorNames(c).map((n, i) => [n, i]));
  }

  /** The scheme each tensor gets under a load's options (see LoadOptions). */
  static resolveSchemes(c: LlamaConfig, opts: LoadOptions = {}): Map<string, WeightScheme> {
    const scheme = opts.weights ?? 'fp32';
    if (!WEIGHT_SCHEMES.includes(scheme)) fail('ZOTUNE_UNSUPPORTED', `weight scheme '${String(scheme)}' is not supported (${WEIGHT_SCHEMES.join(', ')})`);
    const overrides = Object.entries(opts.overrides ?? {});
    for (const [pat, sc] of overrides)
      if (!WEIGHT_SCHEMES.includes(sc)) fail('ZOTUNE_UNSUPPORTED', `override '${pat}': weight scheme '${String(sc)}' is not supported (${WEIGHT_SCHEMES.join(', ')})`);
    const out = new Map<string, WeightScheme>();
    const used = new Set<string>();
    for (const name of llamaTensorNames(c)) {
      let sc: WeightScheme = isNorm(name) || name === 'model.embed_tokens.weight' ? 'fp32' : scheme;
      for (const [pat, o] of overrides)
        if (matchesTensor(pat, name)) {
          sc = o;
          used.add(pat);
        }
      if (isNorm(name) && sc !== 'fp32') fail('ZOTUNE_UNSUPPORTED', `${name}: norm weights are fp32 only (override asked for '${sc}')`);
      out.set(name, sc);
    }
    for (const [pat] of overrides) if (!used.has(pat)) fail('ZOTUNE_INVALID_ARGUMENT', `override '${pat}' matches no weight tensor`);
    return out;
  }

  /**
   * Loads config.json, generation_config.json and the safetensors weights of a HF folder,
   * quantizing one tensor at a time (only one f32 copy of one tensor exists at any moment).
   */
  static async load(dir: string, opts: LoadOptions = {}): Promise<LlamaModel> {
    const scheme = opts.weights ?? 'fp32';
    if (!WEIGHT_SCHEMES.includes(scheme)) fail('ZOTUNE_UNSUPPORTED', `weight scheme '${String(scheme)}' is not supported (${WEIGHT_SCHEMES.join(', ')})`);
    const config = loadLlamaConfig(dir);
    const gen = loadGenerationConfig(dir, config);
    const schemes = LlamaModel.resolveSchemes(config, opts);
    const files = ModelWeights.open(dir);
    const weights = new Map<string, Weight>();
    try {
      for (const name of llamaTensorNames(config)) {
        if (!files.has(name)) throw new ZotuneError('ZOTUNE_BAD_FILE', `${dir}: weight '${name}' is missing`);
        const want = expectedShape(config, name), got = files.info(name).shape;
        if (want.join() !== got.join())
          throw new ZotuneError('ZOTUNE_SHAPE_MISMATCH', `${dir}: weight '${name}' is [${got.join(', ')}], config.json implies [${want.join(', ')}]`);
        const sc = schemes.get(name)!;
        if (sc === 'fp32') {
          weights.set(name, files.readF32(name, 'weights'));
          continue;
        }
        const f32 = files.readF32(name, 'workspace');
        try {
          const { format, granularity } = SCHEMES[sc];
          weights.set(name, quantizeSync(f32.reshape([want[0], want[1]]), format, { granularity }));
        } finally {
          f32.dispose();
        }
        await new Promise((r) => setImmediate(r)); // keep the event loop responsive between tensors
      }
    } catch (err) {
      weights.forEach((t) => t.dispose());
      throw err;
    } finally {
      files.close();
    }
    return new LlamaModel(path.resolve(dir), config, gen, scheme, weights, schemes);
  }

  /** The storage scheme of a tensor (HF name). */
  schemeOf(name: string): WeightScheme {
    const sc = this.schemes.get(name);
    if (!sc) fail('ZOTUNE_INVALID_ARGUMENT', `no weight named '${name}'`);
    return sc;
  }

  /** An fp32 weight tensor by HF name (read-only view; the model owns it). Quantized tensors: weight(). */
  tensor(name: string): Tensor {
    const t = this.weight(name);
    if (!(t instanceof Tensor)) fail('ZOTUNE_DTYPE', `weight '${name}' is stored as ${this.schemes.get(name)}; use weight(name) for its QTensor`);
    return t;
  }

  /** A weight by HF name: a Tensor (fp32) or a QTensor (quantized schemes); the model owns it. */
  weight(name: string): Tensor | QTensor {
    const t = this.weights.get(name);
    if (!t) fail('ZOTUNE_INVALID_ARGUMENT', `no weight named '${name}'`);
    return t;
  }

  /** Bytes of weight storage (codes, scales and zero-points included). */
  get weightBytes(): number {
    let n = 0;
    this.weights.forEach((w) => (n += w.byteLength));
    return n;
  }

  // --- ZO training ------------------------------------------------------------------------------

  /**
   * Chooses the trainable tensors: globs ('*' within a dotted segment run, '**' anything; the
   * trailing '.weight' may be left out) or RegExps over HF names. No argument: every tensor.
   */
  setTrainable(patterns?: TensorPattern | TensorPattern[]): void {
    this.check();
    const list = patterns === undefined ? undefined : Array.isArray(patterns) ? patterns : [patterns];
    const flags = new Uint8Array(this.ids.size);
    for (const [name, id] of this.ids) flags[id] = !list || list.some((p) => matchesTensor(p, name)) ? 1 : 0;
    if (list && list.length && !flags.some((f) => f)) fail('ZOTUNE_INVALID_ARGUMENT', `no weight tensor matches ${list.map(String).join(', ')}`);
    this.trainableFlags = flags;
  }

  /**
   * @internal The native weight arguments (config vector, tensor ids, weights in argument order).
   * views: the weights as TypedArray views (another addon, such as the CUDA one, cannot read this
   * addon's NativeBuffers).
   */
  nativeArgs(views = false): { cfg: Float64Array; ids: Uint32Array; weights: readonly WeightArg[]; flags: Uint8Array } {
    this.check();
    const weights = !views
      ? this.weightArgs
      : this.argNames.map((n, i) => {
          const w = this.weights.get(n)!, a = this.weightArgs[i];
          if (w instanceof Tensor) return w.data();
          return { ...(a as QTensorDesc), data: w.data.data(), scales: w.scales?.data(), zeros: w.zeros?.data() };
        });
    return { cfg: this.cfgArg, ids: this.idArg, weights, flags: this.trainableFlags };
  }

  /**
   * A copy of this model resident on the GPU ('cuda', through lib/backend.ts: ZOTUNE_CUDA_UNAVAILABLE
   * with the reason when no GPU runs the CUDA addon) or on the host through the CUDA kernels'
   * per-thread code ('emulated': tests and scripts/gpu-check.js, no GPU needed). It runs forward,
   * zoProbe and zoUpdate like this model (ZoOptimizer takes it); its updates change only the copy
   * until toHost(). dispose() frees it. opts.kernels: 'exact' (the CPU's bits) or 'fast' (gemv and
   * bf16 tensor cores; see DeviceLlamaModel).
   */
  async toDevice(kind: 'cuda' | 'emulated' = 'cuda', opts: ToDeviceOptions = {}): Promise<DeviceLlamaModel> {
    return DeviceLlamaModel.create(this, kind, opts);
  }

  /** The trainable tensors in id order. */
  trainable(): TrainableInfo[] {
    const out: TrainableInfo[] = [];
    for (const [name, id] of this.ids)
      if (this.trainableFlags[id]) {
        const w = this.weights.get(name)!;
        const numel = w instanceof Tensor ? w.size : w.rows * w.cols;
        out.push({ name, id, numel, scheme: this.schemes.get(name)!, decay: !isNorm(name) });
      }
    return out;
  }

  /** Views of the trainable tensors (for optimiser-state kernels and checkpoints; the model owns them). */
  trainableTensors(): { name: string; id: number; tensor: Tensor | QTensor }[] {
    return this.trainable().map(({ name, id }) => ({ name, id, tensor: this.weights.get(name)! }));
  }

  /**
   * The two forwards of a ZO probe in ONE native call: plus at theta + eps * z_probe(seed), minus
   * at theta - eps * z_probe(seed), only trainable tensors perturbed. 'on-load' (default) adds z
   * inside the weight loads (no weight is written; any scheme); 'in-place' is MeZO's
   * +eps, -2eps, +eps on the weights (fp32 trainable tensors only: quantized ones are refused
   * with ZOTUNE_UNSUPPORTED because a perturbed code cannot be restored exactly on its grid).
   */
  async zoProbe(batch: readonly Sequence[], opts: ZoProbeOptions): Promise<ZoProbeResult> {
    return (await this.probe(batch, opts, probeSeeds(opts, false)[0]))[0];
  }

  /**
   * Several SPSA queries on one batch in ONE native call: for each seed, exactly what zoProbe with
   * that seed returns (the same bits), while the layers below the first trainable tensor run once
   * for every query and sign. With the upper layers, the final norm or the LM head trainable, n
   * queries then cost about one forward plus 2n passes of the trainable part (a zoProbe per seed
   * costs 2n forwards). Memory: one forward's activations and each query's outputs.
   */
  async zoProbeMany(batch: readonly Sequence[], opts: ZoProbeManyOptions): Promise<ZoProbeResult[]> {
    return this.probe(batch, opts, BigUint64Array.from(probeSeeds(opts, true), (s) => BigInt(s)));
  }

  private async probe(batch: readonly Sequence[], opts: Omit<ZoProbeOptions, 'seed'>, seeds: number | bigint | BigUint64Array): Promise<ZoProbeResult[]> {
    this.check();
    const Q = typeof seeds === 'object' ? seeds.length : 1;
    const bufs = this.probeBuffers(batch, opts, Q);
    const { p, rows, subset, lpPlus, lpMinus, lgPlus, lgMinus, dist, bits, eps, mode } = bufs;
    const flags = this.trainableFlags.slice();
    if (mode === 'in-place')
      for (const t of this.trainable())
        if (t.scheme !== 'fp32')
          fail('ZOTUNE_UNSUPPORTED', `in-place probes take fp32 weights only ('${t.name}' is ${t.scheme}): a perturbed quantized weight is off its grid and could not be restored exactly; use mode 'on-load'`);
    const call = () =>
      native().llamaZoProbeAsync(
        this.cfgArg, this.idArg, p.tokens, p.offsets, p.positions, p.keyMask, p.targets, lpPlus, lpMinus, rows, lgPlus, lgMinus, subset,
        seeds, dist, bits, eps, mode === 'on-load' ? 0 : 1, flags, ...this.weightArgs,
      );
    const r = await (mode === 'in-place' ? this.lock.write(call) : this.lock.read(call));
    return this.probeResults(batch.length, opts, Array.isArray(r) ? r : [r], bufs);
  }

  /** @internal Per query, zoProbe's results read from its block of probeBuffers' outputs (this model's and DeviceLlamaModel's). */
  probeResults(sequences: number, opts: Omit<ZoProbeOptions, 'seed'>, sums: readonly ProbeSums[], bufs: ReturnType<LlamaModel['probeBuffers']>): ZoProbeResult[] {
    const { p, rows, V, lpPlus, lpMinus, lgPlus, lgMinus } = bufs;
    const N = p.tokens.length, per = rows ? rows.length * V : 0, logits = opts.logits ?? 'last';
    const block = <T extends Float64Array | Float32Array>(a: T | null, q: number, n: number) => (a ? (a.subarray(q * n, (q + 1) * n) as T) : null);
    return sums.map((s, q) => ({
      plus: this.result(p, sequences, logits, s.plus, block(lpPlus, q, N), block(lgPlus, q, per), V),
      minus: this.result(p, sequences, logits, s.minus, block(lpMinus, q, N), block(lgMinus, q, per), V),
    }));
  }

  /** @internal zoProbe's checked options, packed batch and output buffers (this model's and DeviceLlamaModel's). */
  probeBuffers(batch: readonly Sequence[], opts: Omit<ZoProbeOptions, 'seed'>, queries = 1) {
    const eps = checkFinite(opts.eps, 'eps');
    const [dist, bits] = directionArgs(opts.direction);
    const mode = opts.mode ?? 'on-load';
    if (mode !== 'on-load' && mode !== 'in-place') fail('ZOTUNE_INVALID_ARGUMENT', `mode must be 'on-load' or 'in-place', got ${String(mode)}`);
    if ((opts as ForwardOptions).cache) fail('ZOTUNE_INVALID_ARGUMENT', 'a ZO probe takes no KV cache');
    const p = this.pack(batch, opts, false);
    const rows = this.logitRows(p, opts.logits);
    const subset = this.vocabSubset(p, opts);
    const N = p.tokens.length, V = subset ? subset.length : this.config.vocabSize;
    const lpPlus = p.targets ? outputArray(Float64Array, queries * N, 'log-probabilities') : null;
    const lpMinus = p.targets ? outputArray(Float64Array, queries * N, 'log-probabilities') : null;
    const lgPlus = rows ? outputArray(Float32Array, queries * rows.length * V, 'logits') : null;
    const lgMinus = rows ? outputArray(Float32Array, queries * rows.length * V, 'logits') : null;
    return { p, rows, subset, V, lpPlus, lpMinus, lgPlus, lgMinus, dist, bits, eps, mode };
  }

  /**
   * The ZO update of every trainable tensor: theta <- theta * (1 - decay * [tensor decays]) -
   * scale * z_update(seed). fp32: one fused pass (fmaf, the perturbation kernel with -scale);
   * quantized: every code moves to SR_grid(value - scale * z) on its own grid (lib/quant.ts update,
   * SR words keyed by (seed, tensor id)); with decay, SR_grid(fl(value * (1 - decay)) - scale * z)
   * through an fp32 copy of one tensor at a time (dequantize, fused update, quantizeInto with SR
   * seed = seed, stream = tensor id).
   * With direction.bits, z_update is the QuZO rounding with purpose srUpdate (independent of the probe's).
   */
  async zoUpdate(opts: ZoUpdateOptions): Promise<void> {
    this.check();
    if (!opts || typeof opts !== 'object') fail('ZOTUNE_INVALID_ARGUMENT', 'zoUpdate needs options {seed, scale}');
    checkSeed(opts.seed);
    const scale = checkFinite(opts.scale, 'scale');
    const decay = checkFinite(opts.decay ?? 0, 'decay');
    if (decay < 0 || decay > 1) fail('ZOTUNE_INVALID_ARGUMENT', `decay must be in [0, 1], got ${decay}`);
    const [dist, bits] = directionArgs(opts.direction);
    const list = this.trainable();
    const ids = Uint32Array.from(list, (t) => t.id);
    const decays = Uint8Array.from(list, (t) => (t.decay ? 1 : 0));
    const counts = Float64Array.from(list, (t) => t.numel);
    const tensors = list.map((t) => {
      const w = this.weights.get(t.name)!;
      return w instanceof Tensor ? w.mem : w.desc();
    });
    await this.lock.write(() => native().zoUpdateAsync(opts.seed, dist, bits, scale, decay, ids, decays, counts, ...tensors));
  }

  /**
   * Writes a Hugging Face folder loadable by LlamaModel.load and PyTorch: config.json (torch_dtype
   * set), generation_config.json and the tokenizer files copied, model.safetensors with every
   * weight dequantized to f32 (or rounded to bf16). Written into a temporary folder that then
   * replaces `dir`, so a crash leaves either the old folder or the new one.
   */
  async save(dir: string, opts: { dtype?: 'f32' | 'bf16' } = {}): Promise<void> {
    this.check();
    const dtype = opts.dtype ?? 'f32';
    if (dtype !== 'f32' && dtype !== 'bf16') fail('ZOTUNE_INVALID_ARGUMENT', `dtype must be 'f32' or 'bf16', got ${String(dtype)}`);
    const target = path.resolve(dir);
    checkSaveTarget(target);
    const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
    const old = `${target}.old-${process.pid}-${Date.now()}`;
    await this.lock.read(async () => {
      fs.mkdirSync(tmp, { recursive: true });
      try {
        const cfg = JSON.parse(fs.readFileSync(path.join(this.dir, 'config.json'), 'utf8'));
        cfg.torch_dtype = dtype === 'f32' ? 'float32' : 'bfloat16';
        fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
        for (const f of ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model'])
          if (fs.existsSync(path.join(this.dir, f))) fs.copyFileSync(path.join(this.dir, f), path.join(tmp, f));
        const names = llamaTensorNames(this.config);
        writeSafetensors(
          path.join(tmp, 'model.safetensors'),
          names.map((name) => ({ name, dtype: dtype === 'f32' ? 'F32' : 'BF16', shape: expectedShape(this.config, name), data: () => this.exportTensor(name, dtype) })),
          { format: 'pt' },
        );
        if (fs.existsSync(target)) fs.renameSync(target, old);
        fs.renameSync(tmp, target);
        fs.rmSync(old, { recursive: true, force: true });
      } catch (err) {
        fs.rmSync(tmp, { recursive: true, force: true });
        if (!fs.existsSync(target) && fs.existsSync(old)) fs.renameSync(old, target);
        if (err instanceof ZotuneError) throw err;
        throw new ZotuneError('ZOTUNE_IO', `saving to ${target}: ${(err as Error).message}`);
      }
    });
  }

  /** One tensor's bytes for save(): f32 values (dequantized), or bf16 (RTNE); release frees any copy. */
  private exportTensor(name: string, dtype: 'f32' | 'bf16'): { data: ArrayBufferView; release: () => void } {
    const w = this.weights.get(name)!;
    const f32 = w instanceof Tensor ? w : dequantizeSync(w);
    if (dtype === 'f32') return { data: f32.data(), release: () => f32 !== w && f32.dispose() };
    try {
      const bf = toFormatSync(f32, 'bf16');
      return { data: bf.data(), release: () => bf.dispose() };
    } finally {
      if (f32 !== w) f32.dispose();
    }
  }

  /** A KV cache for `batch` sequences of up to `capacity` tokens (default: max_position_embeddings). */
  createCache(batch = 1, capacity = this.config.maxPositionEmbeddings): KVCache {
    return new KVCache(this.config, batch, capacity);
  }

  private check(): void {
    if (this.disposed) fail('ZOTUNE_DISPOSED', 'the model was disposed');
  }

  /** @internal Packs a batch (targets, masks, rotary positions) the way every native call takes it. */
  pack(seqs: readonly Sequence[], opts: Omit<ForwardOptions, 'cache'> & { cache?: CacheSlots }, forNext: boolean): Packed {
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

  private async run(p: Packed, cache: KVCache | undefined, logitRows: Int32Array | null, next: Int32Array | null, sample: Float64Array | null, seed: number | bigint, subset: Int32Array | null = null) {
    const c = this.config;
    if (cache && !(cache instanceof KVCache)) fail('ZOTUNE_INVALID_ARGUMENT', 'this cache belongs to a device model: pass a cache from this model\'s createCache()');
    const logprobs = p.targets ? outputArray(Float64Array, p.tokens.length, 'log-probabilities') : null;
    const logits = logitRows ? outputArray(Float32Array, logitRows.length * (subset ? subset.length : c.vocabSize), 'logits') : null;
    const r = await withCache(cache, () =>
      this.lock.read(() =>
        native().llamaForwardAsync(
          this.cfgArg, this.idArg, p.tokens, p.offsets, p.positions, p.keyMask, p.targets, logprobs, logitRows, logits, subset,
          cache ? cache.k.mem : null, cache ? cache.v.mem : null, cache ? cache.mask : null, cache ? cache.length : null, cache ? cache.capacity : 0,
          next, sample, seed, ...(this.weightArgs as Mem[]),
        ),
      ),
    );
    if (cache) advanceCache(cache, p);
    return { r, logprobs, logits };
  }

  /** @internal */
  logitRows(p: Packed, mode: ForwardOptions['logits'] = 'last'): Int32Array | null {
    if (mode !== 'last' && mode !== 'all' && mode !== 'none') fail('ZOTUNE_INVALID_ARGUMENT', `logits must be 'last', 'all' or 'none'`);
    let rows: Int32Array | null = null;
    if (mode === 'all') rows = Int32Array.from({ length: p.tokens.length }, (_, i) => i);
    else if (mode === 'last') rows = p.lastRow.filter((r) => r >= 0);
    return rows && rows.length ? rows : null;
  }

  /** ForwardOptions.logitTokens checked, as the native vocabulary subset (null: every token). */
  /** @internal */
  vocabSubset(p: Packed, opts: Pick<ForwardOptions, 'logitTokens' | 'logits'>): Int32Array | null {
    const t = opts.logitTokens;
    if (t === undefined) return null;
    if (!(Array.isArray(t) || t instanceof Int32Array) || t.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'logitTokens must be a non-empty array of token ids');
    if ((opts.logits ?? 'last') === 'none') fail('ZOTUNE_INVALID_ARGUMENT', "logitTokens chooses logits columns: it needs logits 'last' or 'all'");
    if (p.targets) fail('ZOTUNE_INVALID_ARGUMENT', "logitTokens needs targets 'none': a log-probability over the vocabulary needs every LM-head row");
    checkIds(t as readonly number[], this.config.vocabSize, 'logitTokens');
    return Int32Array.from(t);
  }

  /** One forward pass over a batch of token-id sequences (see ForwardOptions). */
  async forward(batch: readonly Sequence[], opts: ForwardOptions = {}): Promise<ForwardResult> {
    this.check();
    const p = this.pack(batch, opts, false);
    const rows = this.logitRows(p, opts.logits);
    const subset = this.vocabSubset(p, opts);
    const { r, logprobs, logits } = await this.run(p, opts.cache, rows, null, null, 0, subset);
    return this.result(p, batch.length, opts.logits ?? 'last', r, logprobs, logits, subset ? subset.length : this.config.vocabSize);
  }

  /** @internal */
  result(p: Packed, B: number, mode: 'last' | 'all' | 'none', r: { logprobSum: number; count: number }, logprobs: Float64Array | null, logits: Float32Array | null, V: number): ForwardResult {
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

  /**
   * Generates continuations of several prompts at once with one KV cache; each step yields one
   * token per sequence (undefined for sequences that already stopped).
   */
  async *generateBatch(prompts: readonly Sequence[], opts: GenerateOptions = {}): AsyncGenerator<(number | undefined)[]> {
    this.check();
    // The decode loop runs natively, one call for every step (streamGeneration).
    yield* streamGeneration(this, prompts, opts, (B, cap) => this.createCache(B, cap), (p, cache, plan, onStep) =>
      withCache(cache, () =>
        this.lock.read(() =>
          native().llamaGenerateAsync(
            this.cfgArg, this.idArg, p.tokens, p.offsets, p.positions, p.keyMask, cache.k.mem, cache.v.mem, cache.mask, cache.length,
            cache.nextPosition, cache.capacity, plan.sample, plan.seed, plan.maxNew, Int32Array.from(plan.stop), onStep, ...(this.weightArgs as Mem[]),
          ),
        ),
      ), () => this.check(), this.generations);
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
    this.generations.forEach((stop) => stop());  // their generators then throw ZOTUNE_DISPOSED
    this.weights.forEach((t) => t.dispose());
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
