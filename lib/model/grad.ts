/**
 * First-order gradients of a LlamaModel: one native call runs the training forward and the
 * backward of every layer (native/cpu/llama_grad.h) and adds dL/dθ into gradient tensors
 * (memory category "gradients").
 *
 * L = mean over the selected targets of -log p(target) (the loss forward() reports; with
 * `candidates`, p is the softmax over the candidates' logits: label-word cross-entropy), or
 * `scale` × the sum when a scale is given (gradient accumulation over micro-batches: pass
 * scale = 1 / total target count and the same `into` map to each call).
 */
import { fail } from '../errors';
import { Tensor } from '../tensor';
import { dequantize, fakeQuantize } from '../quant';
import type { Granularity, QFormat } from '../qtensor';
import { native } from '../native/load';
import type { Mem } from '../native/binding';
import { LlamaModel, ForwardOptions, Sequence, expectedShape, llamaTensorNames } from './llama';
import type { LlamaConfig } from './config';

export interface GradOptions extends Pick<ForwardOptions, 'targets' | 'lossMask' | 'attentionMask'> {
  /** HF names of the parameters to differentiate (default: all). */
  params?: readonly string[];
  /** Keep only each layer's input and recompute its activations in the backward (less memory, ~1/3 more compute). */
  recompute?: boolean;
  /** Accumulate into these gradient tensors (created, zeroed, for names they lack). */
  into?: Map<string, Tensor>;
  /** Multiplier of the summed negative log-likelihood (default weight / count: the weighted mean). */
  scale?: number;
  /** Weight of this batch's mean loss when no scale is given (gradient accumulation; default 1). */
  weight?: number;
  /**
   * Candidate-restricted cross-entropy (label-word classification): each selected target's
   * probability is the softmax over these token ids' logits only, so the loss is
   * logsumexp(logits[candidates]) − logits[target] (2 to 256 distinct ids; every target must be one).
   */
  candidates?: readonly number[];
  /**
   * Quantization-aware training: the forward uses fake-quantized copies (quantize, then dequantize,
   * round to nearest) of the selected weights; the straight-through estimator passes the gradient
   * with respect to the fake-quantized weight to the fp32 master unchanged. The copies (one fp32
   * copy of the selected weights, category "workspace") live for the call.
   */
  qat?: QatOptions;
}

/** A task loss as lossAndGrad computes it (what LossBatch.grad gives the first-order trainers). */
export type GradLoss = Pick<GradOptions, 'targets' | 'lossMask' | 'attentionMask' | 'candidates'>;

export interface QatOptions {
  format: QFormat;
  /** Scale granularity (quant.ts defaults per format). */
  granularity?: Granularity;
  /** Which weights are fake-quantized (default: the linear layers and the untied LM head). */
  include?: (name: string) => boolean;
}

/** Default QAT selection: every matrix the GEMMs read (norms and the embedding gather stay fp32). */
export const isLinearWeight = (name: string) => /_proj\.weight$/.test(name) || name === 'lm_head.weight';

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

function prepare(model: LlamaModel, batch: readonly Sequence[], opts: GradOptions) {
  // the same targets / masks / rotary positions as forward()
  const p = model.pack(batch, { targets: opts.targets, lossMask: opts.lossMask, attentionMask: opts.attentionMask }, false);
  if (!p.targets) fail('ZOTUNE_INVALID_ARGUMENT', `targets 'none' selects nothing to differentiate`);
  let count = 0;
  for (const t of p.targets) if (t >= 0) count++;
  const scale = opts.scale ?? (count ? (opts.weight ?? 1) / count : 0);
  if (!Number.isFinite(scale)) fail('ZOTUNE_INVALID_ARGUMENT', `scale must be a finite number, got ${scale}`);
  const c = model.config;
  const all = llamaTensorNames(c);
  const wanted = new Set(opts.params ?? all);
  for (const n of wanted) if (!all.includes(n)) fail('ZOTUNE_INVALID_ARGUMENT', `no parameter named '${n}'${n === 'lm_head.weight' ? ' (the LM head is tied to model.embed_tokens.weight)' : ''}`);
  const cfg = model.cfgArg;
  const options = Float64Array.from([opts.recompute ? 1 : 0, scale]);
  let candidates: Int32Array | null = null;
  if (opts.candidates !== undefined) {
    if (!Array.isArray(opts.candidates) || opts.candidates.some((t) => !Number.isSafeInteger(t)))
      fail('ZOTUNE_INVALID_ARGUMENT', 'candidates must be a list of token ids');
    candidates = Int32Array.from(opts.candidates);
  }
  return { p, count, cfg, options, wanted, names: nativeNames(c), candidates };
}

/** Loss and gradients of one batch (see GradOptions); off the event loop. */
export async function lossAndGrad(model: LlamaModel, batch: readonly Sequence[], opts: GradOptions = {}): Promise<LossAndGrad> {
  const { p, count, cfg, options, wanted, names, candidates } = prepare(model, batch, opts);
  const grads = opts.into ?? new Map<string, Tensor>();
  const created: Tensor[] = [];
  for (const n of wanted)
    if (!grads.has(n)) {
      const t = Tensor.zeros(expectedShape(model.config, n), 'f32', 'gradients');
      created.push(t);
      grads.set(n, t);
    }
  const gradArgs: (Mem | null)[] = names.map((n) => (wanted.has(n) ? grads.get(n)!.mem : null));
  const fake = new Map<string, Tensor>(); // dequantized views and QAT fake-quantized copies, one per weight
  try {
    // Quantized weights (no fp32 master): the forward and backward read a dequantized f32 view.
    for (const n of new Set(names)) {
      const w = model.weight(n);
      if (w instanceof Tensor) continue;
      const view = Tensor.empty(expectedShape(model.config, n), 'f32', 'workspace');
      fake.set(n, view);
      await dequantize(w, view);
    }
    if (opts.qat) {
      const include = opts.qat.include ?? isLinearWeight;
      for (const n of new Set(names))
        if (include(n)) {
          const w = fake.get(n) ?? model.tensor(n), copy = Tensor.empty(w.shape, 'f32', 'workspace');
          await fakeQuantize(w, opts.qat.format, { granularity: opts.qat.granularity }, copy);
          if (fake.has(n)) fake.get(n)!.dispose();
          fake.set(n, copy);
        }
    }
    const weights: Mem[] = names.map((n) => (fake.get(n) ?? model.tensor(n)).mem);
    const r = await native().llamaGradAsync(cfg, options, p.tokens, p.offsets, p.positions, p.keyMask, p.targets!, ...weights, ...gradArgs, candidates);
    return { loss: r.count ? r.nllSum / r.count : NaN, count, grads };
  } catch (err) {
    for (const t of created) {
      grads.forEach((v, k) => v === t && grads.delete(k));
      t.dispose();
    }
    throw err;
  } finally {
    fake.forEach((t) => t.dispose());
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
  const { p, count, cfg, options, wanted, names, candidates } = prepare(model, batch, opts);
  const grads = new Map<string, Float64Array>();
  if (!opts.lossOnly) for (const n of wanted) grads.set(n, new Float64Array(weights.get(n)!.length));
  const r = native().llamaGradF64(cfg, options, p.tokens, p.offsets, p.positions, p.keyMask, p.targets!,
    ...names.map((n) => weights.get(n)!), ...names.map((n) => grads.get(n) ?? null), candidates);
  return { loss: r.count ? r.nllSum / r.count : NaN, count, grads };
}
