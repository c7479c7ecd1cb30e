/**
 * Truly low-precision first-order training: the model's weights stay quantized (a model loaded
 * with a quantized scheme; no fp32 master copy anywhere). Each step computes gradients from a
 * dequantized view of the weights (lossAndGrad, workspace for the call), then updates one tensor
 * at a time: dequantize it, apply plain SGD with the fused kernel, and re-quantize onto the
 * tensor's own fixed grid (scales and zero-points kept) with stochastic rounding, so the update is
 * unbiased: E[w'] = w - lr * g (up to saturation). fp32 tensors (norms, the embedding) take the
 * same SGD step in place. SR words: (seed · 2^32 + step, stream = tensor id, purpose srQuantize).
 */
import { fail } from '../errors';
import { Tensor } from '../tensor';
import { dequantize, quantizeInto } from '../quant';
import { LlamaModel, Sequence, expectedShape, llamaTensorNames } from '../model/llama';
import { GradOptions, lossAndGrad } from '../model/grad';
import { type LearningRate, clipScale, gradNorm, isNorm, sgdStepTensor } from './optim';
import type { StepResult } from './trainer';

export interface LowPrecisionOptions {
  lr: LearningRate;
  /** Seed of the stochastic rounding (a non-negative integer < 2^21, so seed · 2^32 + step stays exact). */
  seed: number;
  /** Decoupled weight decay, skipping norms (default 0). */
  weightDecay?: number;
  /** Clip the averaged gradient to this global L2 norm (default: no clipping). */
  maxGradNorm?: number;
  /** Parameters to train (default: all). */
  params?: readonly string[];
  recompute?: boolean;
}

export class LowPrecisionTrainer {
  readonly model: LlamaModel;
  readonly grads = new Map<string, Tensor>();
  /** Updates done so far. */
  steps = 0;
  private readonly opts: LowPrecisionOptions;
  private readonly ids: Map<string, number>;

  constructor(model: LlamaModel, opts: LowPrecisionOptions) {
    if (!Number.isSafeInteger(opts.seed) || opts.seed < 0 || opts.seed >= 2 ** 21) fail('ZOTUNE_INVALID_ARGUMENT', `seed must be an integer in [0, 2^21), got ${opts.seed}`);
    this.model = model;
    this.opts = opts;
    this.ids = LlamaModel.tensorIds(model.config);
    for (const n of opts.params ?? llamaTensorNames(model.config)) {
      model.weight(n); // validates the name
      this.grads.set(n, Tensor.zeros(expectedShape(model.config, n), 'f32', 'gradients'));
    }
  }

  async step(micro: { batch: readonly Sequence[]; opts?: Omit<GradOptions, 'params' | 'into' | 'scale' | 'recompute' | 'qat'> }[]): Promise<StepResult> {
    this.grads.forEach((g) => (g.data() as Float32Array).fill(0));
    let nll = 0, count = 0;
    for (const m of micro) {
      const r = await lossAndGrad(this.model, m.batch, { ...m.opts, params: [...this.grads.keys()], into: this.grads, scale: 1, recompute: this.opts.recompute });
      if (r.count) nll += r.loss * r.count;
      count += r.count;
    }
    const avg = count ? 1 / count : 0;
    const norm = await gradNorm(this.grads.values(), avg);
    const clip = this.opts.maxGradNorm !== undefined ? clipScale(norm, this.opts.maxGradNorm) : 1;
    const lr = typeof this.opts.lr === 'function' ? this.opts.lr(this.steps) : this.opts.lr;
    const srSeed = BigInt(this.opts.seed) * 2n ** 32n + BigInt(this.steps);
    await lowPrecisionUpdate(this.model, this.grads, { lr, gradScale: avg * clip, weightDecay: this.opts.weightDecay ?? 0, srSeed, ids: this.ids });
    this.steps++;
    return { loss: count ? nll / count : NaN, count, gradNorm: norm };
  }

  dispose(): void {
    this.grads.forEach((g) => g.dispose());
  }
}

/**
 * The low-precision SGD update of every tensor in `grads` (see the file comment): plain SGD on fp32
 * tensors in place, on quantized ones via a dequantized copy rounded stochastically back onto the
 * tensor's grid (SR words: seed `srSeed`, stream = tensor id). Shared by LowPrecisionTrainer and
 * the fit() optimiser (fo.FoOptimizer).
 */
export async function lowPrecisionUpdate(
  model: LlamaModel,
  grads: Map<string, Tensor>,
  o: { lr: number; gradScale: number; weightDecay: number; srSeed: bigint; ids: Map<string, number> },
): Promise<void> {
  for (const [name, g] of grads) {
    const w = model.weight(name);
    const hyper = { weightDecay: isNorm(name) ? 0 : o.weightDecay, gradScale: o.gradScale };
    if (w instanceof Tensor) {
      await sgdStepTensor(w, g, o.lr, hyper);
      continue;
    }
    const copy = await dequantize(w); // one tensor's f32 copy at a time (workspace)
    try {
      await sgdStepTensor(copy, g, o.lr, hyper);
      await quantizeInto(copy, w, { rounding: 'stochastic', seed: o.srSeed, stream: o.ids.get(name)! });
    } finally {
      copy.dispose();
    }
  }
}
