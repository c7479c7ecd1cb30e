/**
 * Transformer ops of the LLaMA family (native/cpu/nn.h): RMSNorm, rotary embeddings, grouped-query
 * causal attention, SwiGLU, embedding gather, log-probabilities with loss, argmax and seeded
 * sampling. Each op `x` is async (runs off the event loop) and has a `xSync` twin. The model
 * forward (model/llama.ts) runs these inside one native call; they are exported for custom
 * architectures, tests and debugging. Error bounds are documented in native/cpu/nn.h.
 */
import { expectDType, Tensor } from './tensor';
import { fail } from './errors';
import { native } from './native/load';
import type { AttentionArgs } from './native/binding';
import type { Llama3RopeScaling } from './model/config';

export interface RopeConfig {
  theta: number;
  scaling?: Llama3RopeScaling | null;
}

/** The native rope parameter block [theta, llama3, factor, low, high, originalMax]. */
export function ropeParams(r: RopeConfig): Float64Array {
  const s = r.scaling;
  return Float64Array.from(s ? [r.theta, 1, s.factor, s.lowFreqFactor, s.highFreqFactor, s.originalMaxPositionEmbeddings] : [r.theta, 0, 1, 1, 4, 8192]);
}

function f32(t: Tensor, what: string): Tensor {
  expectDType(t, 'f32', what);
  return t;
}

function lastDim(t: Tensor): number {
  return t.shape.length ? t.shape[t.shape.length - 1] : 1;
}

function i32(values: ArrayLike<number>, what: string): Int32Array {
  if (values instanceof Int32Array) return values;
  const out = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) fail('ZOTUNE_INVALID_ARGUMENT', `${what}[${i}] = ${v} is not a 32-bit integer`);
    out[i] = v;
  }
  return out;
}

function outLike(out: Tensor | undefined, shape: readonly number[], what: string): Tensor {
  if (!out) return Tensor.empty(shape, 'f32', 'activations');
  f32(out, what);
  if (out.size !== shape.reduce((a, b) => a * b, 1)) fail('ZOTUNE_SHAPE_MISMATCH', `${what} must hold [${shape.join(', ')}], got [${out.shape.join(', ')}]`);
  return out;
}

// --- RMSNorm ------------------------------------------------------------------------------

function rmsArgs(x: Tensor, weight: Tensor, eps: number, out?: Tensor) {
  f32(x, 'rmsNorm input');
  f32(weight, 'rmsNorm weight');
  const dim = lastDim(x);
  if (weight.size !== dim) fail('ZOTUNE_SHAPE_MISMATCH', `rmsNorm weight has ${weight.size} values, rows have ${dim}`);
  const o = outLike(out, x.shape, 'rmsNorm output');
  return { o, args: [o.mem, o.byteOffset, x.mem, x.byteOffset, weight.mem, weight.byteOffset, dim ? x.size / dim : 0, dim, eps] as const };
}

/** out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight over the last dimension (out may be x). */
export function rmsNormSync(x: Tensor, weight: Tensor, eps: number, out?: Tensor): Tensor {
  const { o, args } = rmsArgs(x, weight, eps, out);
  native().rmsNorm(...args);
  return o;
}

export async function rmsNorm(x: Tensor, weight: Tensor, eps: number, out?: Tensor): Promise<Tensor> {
  const { o, args } = rmsArgs(x, weight, eps, out);
  await native().rmsNormAsync(...args);
  return o;
}

// --- rotary embeddings --------------------------------------------------------------------

function ropeArgs(x: Tensor, positions: ArrayLike<number>, rope: RopeConfig) {
  f32(x, 'rope input');
  if (x.shape.length !== 3) fail('ZOTUNE_SHAPE_MISMATCH', `rope takes [rows, heads, headDim], got [${x.shape.join(', ')}]`);
  const [rows, heads, hd] = x.shape;
  const pos = i32(positions, 'positions');
  if (pos.length !== rows) fail('ZOTUNE_SHAPE_MISMATCH', `rope needs ${rows} positions, got ${pos.length}`);
  return [x.mem, x.byteOffset, rows, heads, hd, pos, 0, ropeParams(rope)] as const;
}

/** Rotates x [rows, heads, headDim] in place (HF rotate_half layout) at the given positions. */
export function ropeSync(x: Tensor, positions: ArrayLike<number>, rope: RopeConfig): Tensor {
  native().rope(...ropeArgs(x, positions, rope));
  return x;
}

export async function rope(x: Tensor, positions: ArrayLike<number>, rope: RopeConfig): Promise<Tensor> {
  await native().ropeAsync(...ropeArgs(x, positions, rope));
  return x;
}

// --- attention ----------------------------------------------------------------------------

export interface AttentionOptions {
  /** Query rows of each sequence: sequence b owns rows [seqOffsets[b], seqOffsets[b+1]) of q. */
  seqOffsets: ArrayLike<number>;
  /** KV slot of each sequence's first query (the cached length before it). Default all 0. */
  seqStart?: ArrayLike<number>;
  /** [batch * cap] bytes, 0 = masked key slot (padding). Default: every slot visible. */
  keyMask?: Uint8Array;
  /** Multiplies q.k; default 1/sqrt(headDim). */
  scale?: number;
}

function attnArgs(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions, out?: Tensor): { o: Tensor; args: AttentionArgs } {
  [q, k, v].forEach((t, i) => f32(t, ['q', 'k', 'v'][i]));
  if (q.shape.length !== 3 || k.shape.length !== 4 || v.shape.length !== 4)
    fail('ZOTUNE_SHAPE_MISMATCH', 'attention takes q [tokens, heads, headDim], k [batch, kvHeads, headDim, cap] and v [batch, kvHeads, cap, headDim]');
  const [, heads, hd] = q.shape;
  const [batch, kvHeads, khd, cap] = k.shape;
  if (khd !== hd || v.shape.join() !== [batch, kvHeads, cap, hd].join())
    fail('ZOTUNE_SHAPE_MISMATCH', `k [${k.shape.join(', ')}] must be [batch, kvHeads, ${hd}, cap] and v [${v.shape.join(', ')}] [batch, kvHeads, cap, ${hd}]`);
  const off = i32(opts.seqOffsets, 'seqOffsets');
  if (off.length !== batch + 1) fail('ZOTUNE_SHAPE_MISMATCH', `seqOffsets needs batch + 1 = ${batch + 1} entries`);
  if (off[batch] !== q.shape[0]) fail('ZOTUNE_SHAPE_MISMATCH', `seqOffsets ends at ${off[batch]} but q has ${q.shape[0]} rows`);
  const start = i32(opts.seqStart ?? new Int32Array(batch), 'seqStart');
  if (start.length !== batch) fail('ZOTUNE_SHAPE_MISMATCH', `seqStart needs ${batch} entries`);
  if (opts.keyMask && opts.keyMask.length !== batch * cap) fail('ZOTUNE_SHAPE_MISMATCH', `keyMask needs batch * cap = ${batch * cap} bytes`);
  const o = outLike(out, q.shape, 'attention output');
  const scale = opts.scale ?? 1 / Math.sqrt(hd);
  return { o, args: [o.mem, o.byteOffset, q.mem, q.byteOffset, k.mem, k.byteOffset, v.mem, v.byteOffset, off, start, opts.keyMask ?? null, batch, heads, kvHeads, hd, cap, scale] };
}

/**
 * Causal grouped-query attention of packed queries q [tokens, heads, headDim] over keys stored
 * transposed, k [batch, kvHeads, headDim, cap], and values v [batch, kvHeads, cap, headDim]
 * (see native/cpu/nn.h). out may be q itself.
 */
export function attentionSync(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions, out?: Tensor): Tensor {
  const { o, args } = attnArgs(q, k, v, opts, out);
  native().attention(...args);
  return o;
}

export async function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions, out?: Tensor): Promise<Tensor> {
  const { o, args } = attnArgs(q, k, v, opts, out);
  await native().attentionAsync(...args);
  return o;
}

// --- SwiGLU -------------------------------------------------------------------------------

function swigluArgs(gate: Tensor, up: Tensor, out?: Tensor) {
  f32(gate, 'swiglu gate');
  f32(up, 'swiglu up');
  if (gate.size !== up.size) fail('ZOTUNE_SHAPE_MISMATCH', `swiglu gate has ${gate.size} values, up ${up.size}`);
  const o = outLike(out, gate.shape, 'swiglu output');
  return { o, args: [o.mem, o.byteOffset, gate.mem, gate.byteOffset, up.mem, up.byteOffset, gate.size] as const };
}

/** out = silu(gate) * up, elementwise (out may alias either input). */
export function swigluSync(gate: Tensor, up: Tensor, out?: Tensor): Tensor {
  const { o, args } = swigluArgs(gate, up, out);
  native().swiglu(...args);
  return o;
}

export async function swiglu(gate: Tensor, up: Tensor, out?: Tensor): Promise<Tensor> {
  const { o, args } = swigluArgs(gate, up, out);
  await native().swigluAsync(...args);
  return o;
}

// --- embedding ----------------------------------------------------------------------------

function embArgs(table: Tensor, ids: ArrayLike<number>, out?: Tensor) {
  f32(table, 'embedding table');
  if (table.shape.length !== 2) fail('ZOTUNE_SHAPE_MISMATCH', 'embedding table must be [vocab, dim]');
  const [vocab, dim] = table.shape;
  const idv = i32(ids, 'ids');
  const o = outLike(out, [idv.length, dim], 'embedding output');
  return { o, args: [o.mem, o.byteOffset, table.mem, table.byteOffset, vocab, dim, idv, idv.length] as const };
}

/** Rows of `table` [vocab, dim] for each id; ids outside [0, vocab) give ZOTUNE_OUT_OF_RANGE. */
export function embeddingSync(table: Tensor, ids: ArrayLike<number>, out?: Tensor): Tensor {
  const { o, args } = embArgs(table, ids, out);
  native().embedding(...args);
  return o;
}

export async function embedding(table: Tensor, ids: ArrayLike<number>, out?: Tensor): Promise<Tensor> {
  const { o, args } = embArgs(table, ids, out);
  await native().embeddingAsync(...args);
  return o;
}

// --- log-probabilities ----------------------------------------------------------------------

export interface LogProbs {
  /** log softmax(logits[r])[targets[r]] (NaN where targets[r] < 0). */
  logprobs: Float64Array;
  /** Mean of -logprobs over the selected rows (NaN when none is selected). */
  loss: number;
  count: number;
}

function lpArgs(logits: Tensor, targets: ArrayLike<number>) {
  f32(logits, 'logits');
  const n = lastDim(logits), rows = n ? logits.size / n : 0;
  const t = i32(targets, 'targets');
  if (t.length !== rows) fail('ZOTUNE_SHAPE_MISMATCH', `logProbs needs one target per row (${rows}), got ${t.length}`);
  const out = new Float64Array(rows);
  return { out, args: [logits.mem, logits.byteOffset, rows, n, t, out] as const };
}

const lpResult = (out: Float64Array, r: { sum: number; count: number }): LogProbs => ({ logprobs: out, loss: r.count ? -r.sum / r.count : NaN, count: r.count });

/** Per-row log-probability of a target id (-1 skips the row) and the mean loss over selected rows. */
export function logProbsSync(logits: Tensor, targets: ArrayLike<number>): LogProbs {
  const { out, args } = lpArgs(logits, targets);
  return lpResult(out, native().logProbs(...args));
}

export async function logProbs(logits: Tensor, targets: ArrayLike<number>): Promise<LogProbs> {
  const { out, args } = lpArgs(logits, targets);
  return lpResult(out, await native().logProbsAsync(...args));
}

// --- argmax and sampling --------------------------------------------------------------------

function rowsOf(logits: Tensor): [number, number] {
  f32(logits, 'logits');
  const n = lastDim(logits);
  return [n ? logits.size / n : 0, n];
}

/** Index of the largest value of each row (lowest index on ties; NaN ignored). */
export function argmaxSync(logits: Tensor): Int32Array {
  const [rows, n] = rowsOf(logits);
  const out = new Int32Array(rows);
  native().argmax(logits.mem, logits.byteOffset, rows, n, out);
  return out;
}

export async function argmax(logits: Tensor): Promise<Int32Array> {
  const [rows, n] = rowsOf(logits);
  const out = new Int32Array(rows);
  await native().argmaxAsync(logits.mem, logits.byteOffset, rows, n, out);
  return out;
}

export interface SampleOptions {
  /** 0 = greedy. Default 1. */
  temperature?: number;
  /** Keep the k most likely ids (0 = all). Default 0. */
  topK?: number;
  /** Keep the most likely ids up to this probability mass. Default 1. */
  topP?: number;
  seed: number | bigint;
  /**
   * Element of row r's random stream (Philox key (seed, stream r, purpose uniform)): the position
   * of the token being drawn. Default: all 0.
   */
  positions?: ArrayLike<number>;
}

function sampleArgs(logits: Tensor, o: SampleOptions) {
  const [rows, n] = rowsOf(logits);
  const pos = i32(o.positions ?? new Int32Array(rows), 'positions');
  if (pos.length !== rows) fail('ZOTUNE_SHAPE_MISMATCH', `sample needs one position per row (${rows})`);
  const out = new Int32Array(rows);
  return { out, args: [logits.mem, logits.byteOffset, rows, n, out, o.temperature ?? 1, o.topK ?? 0, o.topP ?? 1, o.seed, pos] as const };
}

/** Draws one id per row from softmax(logits / temperature) restricted by topK / topP. */
export function sampleSync(logits: Tensor, opts: SampleOptions): Int32Array {
  const { out, args } = sampleArgs(logits, opts);
  native().sample(...args);
  return out;
}

export async function sample(logits: Tensor, opts: SampleOptions): Promise<Int32Array> {
  const { out, args } = sampleArgs(logits, opts);
  await native().sampleAsync(...args);
  return out;
}
