/**
 * First-order gradients of a LlamaModel: one native call runs the training forward and the
 * backward of every layer (native/cpu/llama_grad.h) and adds dL/dθ into gradient tensors
 * (memory category "gradients").
 *
 * L = mean over the selected targets of -log p(target) (the loss forward() reports), or
 * `scale` × the sum when a scale is given (gradient accumulation over micro-batches: pass
 * scale = 1 / total target count and the same `into` map to each call).
 */
import { fail } from '../errors';
import { Tensor } from '../tensor';
import { native } from '../native/load';
import type { Mem } from '../native/binding';
import { LlamaModel, ForwardOptions, Sequence, llamaTensorNames } from './llama';
import type { LlamaConfig } from './config';

export interface GradOptions extends Pick<ForwardOptions, 'targets' | 'lossMask' | 'attentionMask'> {
  /** HF names of the parameters to differentiate (default: all). */
  params?: readonly string[];
  /** Keep only each layer's input and recompute its activations in the backward (less memory, ~1/3 more compute). */
  recompute?: boolean;
  /** Accumulate into these gradient tensors (created, zeroed, for names they lack). */
  into?: Map<string, Tensor>;
  /** Multiplier of the summed negative log-likelihood (default 1 / count: the mean). */
  scale?: number;
}

export interface LossAndGrad {
  /** Mean of -log p(target) over the selected targets (NaN if none). */
  loss: number;
  count: number;
  /** dL/dθ by HF name (with tied embeddings model.embed_tokens.weight holds both uses). */
  grads: Map<string, Tensor>;
}

/** Native parameter order: embed, 9 per layer, norm, lm_head (the embedding when tied). */
function nativeNames(c: LlamaConfig): string[] {
  const names = llamaTensorNames(c);
  if (c.tieWordEmbeddings) names.push('model.embed_tokens.weight');
  return names;
}

interface Packed {
  tokens: Int32Array;
  offsets: Int32Array;
  positions: Int32Array;
  keyMask: Uint8Array | null;
  targets: Int32Array | null;
}

function prepare(model: LlamaModel, batch: readonly Sequence[], opts: GradOptions) {
  // LlamaModel's packing (private to the inference API): same targets/masks/positions as forward().
  const p = (model as unknown as { pack(b: readonly Sequence[], o: ForwardOptions, forNext: boolean): Packed }).pack(
    batch, { targets: opts.targets, lossMask: opts.lossMask, attentionMask: opts.attentionMask }, false);
  if (!p.targets) fail('ZOTUNE_INVALID_ARGUMENT', `targets 'none' selects nothing to differentiate`);
  let count = 0;
  for (const t of p.targets) if (t >= 0) count++;
  const scale = opts.scale ?? (count ? 1 / count : 0);
  if (!Number.isFinite(scale)) fail('ZOTUNE_INVALID_ARGUMENT', `scale must be a finite number, got ${scale}`);
  const c = model.config;
  const all = llamaTensorNames(c);
  const wanted = new Set(opts.params ?? all);
  for (const n of wanted) if (!all.includes(n)) fail('ZOTUNE_INVALID_ARGUMENT', `no parameter named '${n}'${n === 'lm_head.weight' ? ' (the LM head is tied to model.embed_tokens.weight)' : ''}`);
  const cfg = (model as unknown as { cfgArg: Float64Array }).cfgArg;
  const options = Float64Array.from([opts.recompute ? 1 : 0, scale]);
  return { p, count, cfg, options, wanted, names: nativeNames(c) };
}

/** Loss and gradients of one batch (see GradOptions); off the event loop. */
export async function lossAndGrad(model: LlamaModel, batch: readonly Sequence[], opts: GradOptions = {}): Promise<LossAndGrad> {
  const { p, count, cfg, options, wanted, names } = prepare(model, batch, opts);
  const grads = opts.into ?? new Map<string, Tensor>();
  const created: Tensor[] = [];
  for (const n of wanted)
    if (!grads.has(n)) {
      const t = Tensor.zeros(model.tensor(n).shape, 'f32', 'gradients');
      created.push(t);
      grads.set(n, t);
    }
  const weights: Mem[] = names.map((n) => model.tensor(n).mem);
  const gradArgs: (Mem | null)[] = names.map((n) => (wanted.has(n) ? grads.get(n)!.mem : null));
  try {
    const r = await native().llamaGradAsync(cfg, options, p.tokens, p.offsets, p.positions, p.keyMask, p.targets!, ...weights, ...gradArgs);
    return { loss: r.count ? r.nllSum / r.count : NaN, count, grads };
  } catch (err) {
    for (const t of created) {
      grads.forEach((v, k) => v === t && grads.delete(k));
      t.dispose();
    }
    throw err;
  }
}

/**
 * @internal Test-only float64 reference of lossAndGrad: the same model structure and batch
 * packing, weights given as float64 arrays by HF name; returns float64 gradients of all of them.
 */
export function lossAndGradF64(
  model: LlamaModel,
  weights: Map<string, Float64Array>,
  batch: readonly Sequence[],
  opts: Omit<GradOptions, 'into'> & { lossOnly?: boolean } = {},
): { loss: number; count: number; grads: Map<string, Float64Array> } {
  const { p, count, cfg, options, wanted, names } = prepare(model, batch, opts);
  const grads = new Map<string, Float64Array>();
  if (!opts.lossOnly) for (const n of wanted) grads.set(n, new Float64Array(weights.get(n)!.length));
  const r = native().llamaGradF64(cfg, options, p.tokens, p.offsets, p.positions, p.keyMask, p.targets!,
    ...names.map((n) => weights.get(n)!), ...names.map((n) => grads.get(n) ?? null));
  return { loss: r.count ? r.nllSum / r.count : NaN, count, grads };
}
