/**
 * One first-order training step over micro-batches: gradients accumulated (summed) in one set of
 * gradient tensors, then averaged over all selected targets and clipped to a global norm inside
 * the fused optimiser update (no extra pass over the gradients).
 */
import { Tensor } from '../tensor';
import { LlamaModel, Sequence, llamaTensorNames } from '../model/llama';
import { GradOptions, lossAndGrad } from '../model/grad';
import { AdamW, AdamWOptions, SGD, SGDOptions, clipScale, gradNorm } from './optim';

export interface FoTrainerOptions extends Pick<GradOptions, 'recompute'> {
  optimizer: ({ kind: 'adamw' } & AdamWOptions) | ({ kind: 'sgd' } & SGDOptions);
  /** Parameters to train (default: all). */
  params?: readonly string[];
  /** Clip the averaged gradient to this global L2 norm (default: no clipping). */
  maxGradNorm?: number;
}

export interface StepResult {
  /** Mean -log p over the step's selected targets (before the update). */
  loss: number;
  count: number;
  /** Global norm of the averaged gradient before clipping. */
  gradNorm: number;
}

export class FoTrainer {
  readonly model: LlamaModel;
  readonly optimizer: AdamW | SGD;
  readonly grads = new Map<string, Tensor>();
  private readonly opts: FoTrainerOptions;

  constructor(model: LlamaModel, opts: FoTrainerOptions) {
    this.model = model;
    this.opts = opts;
    const names = opts.params ?? llamaTensorNames(model.config);
    const params = new Map(names.map((n) => [n, model.tensor(n)]));
    const o = opts.optimizer;
    this.optimizer = o.kind === 'adamw' ? new AdamW(params, o) : new SGD(params, o);
    for (const n of names) this.grads.set(n, Tensor.zeros(model.tensor(n).shape, 'f32', 'gradients'));
  }

  /** One update from the micro-batches (each a list of sequences, with its own forward options). */
  async step(micro: { batch: readonly Sequence[]; opts?: Omit<GradOptions, 'params' | 'into' | 'scale' | 'recompute'> }[]): Promise<StepResult> {
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
    await this.optimizer.step(this.grads, { gradScale: avg * clip });
    return { loss: count ? nll / count : NaN, count, gradNorm: norm };
  }

  dispose(): void {
    this.optimizer.dispose();
    this.grads.forEach((g) => g.dispose());
  }
}
