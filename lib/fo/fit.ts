/**
 * First-order optimisers for fit() (lib/zo/trainer.ts StepOptimizer): one step is a forward +
 * backward of every micro-batch (lossAndGrad, gradients accumulated into one set of fp32 tensors
 * with each micro-batch's mean loss weighted by its example count, as the ZO estimate weights
 * them), then, once fit's divergence guard accepted the step, one fused update per tensor.
 *
 * Methods (the names of `zotune finetune --method`):
 * - fo-adam: AdamW on fp32 weights; fo-sgd: SGD with momentum on fp32 weights.
 * - qat-int8 / qat-int4 / qat-fp8: quantization-aware training, AdamW on fp32 masters; the forward
 *   reads fake-quantized linear weights (int8 per channel, int4 groups of 128, fp8 e4m3), the
 *   straight-through estimator passes their gradient to the masters. The deployed model is the
 *   fake-quantized one (`withDeployedWeights`).
 * - lowprec-int8 / lowprec-int4: low-precision SGD on a model loaded with int8 / int4 weights, no
 *   fp32 master: each update is rounded stochastically back onto the weight grid (lowprec.ts).
 *
 * The task loss is the one the ZO probe uses (LossBatch.grad: e.g. the cross-entropy over the
 * label-word logits for classification). A first-order run is not replayable from seeds: its
 * checkpoint holds the trained tensors and the optimiser state (`checkpoint` / `restore`).
 */
import { fail } from '../errors';
import { Tensor } from '../tensor';
import { QTensor } from '../qtensor';
import type { QFormat } from '../qtensor';
import { fakeQuantize } from '../quant';
import { SafetensorsFile, writeSafetensors, type TensorEntry } from '../io/safetensors';
import { LlamaModel, expectedShape, llamaTensorNames, schemeStorage, type WeightScheme } from '../model/llama';
import { isLinearWeight, lossAndGrad, type QatOptions } from '../model/grad';
import type { MicroBatch, ZoModel } from '../zo/optimizer';
import { querySeed } from '../zo/optimizer';
import type { AppliedStep, StepEstimate, StepOptimizer } from '../zo/trainer';
import { AdamW, SGD, clipScale, gradNorm } from './optim';
import { lowPrecisionUpdate } from './lowprec';

export type FoMethod = 'fo-adam' | 'fo-sgd' | 'qat-int8' | 'qat-int4' | 'qat-fp8' | 'lowprec-int8' | 'lowprec-int4';
export const FO_METHODS: readonly FoMethod[] = ['fo-adam', 'fo-sgd', 'qat-int8', 'qat-int4', 'qat-fp8', 'lowprec-int8', 'lowprec-int4'];

// QAT trains on the grid of the weight scheme it is compared with (format and scale granularity).
const QAT_SCHEME: Partial<Record<FoMethod, WeightScheme>> = { 'qat-int8': 'int8', 'qat-int4': 'int4', 'qat-fp8': 'fp8-e4m3' };
const LOWPREC_FORMAT: Partial<Record<FoMethod, QFormat>> = { 'lowprec-int8': 'int8', 'lowprec-int4': 'int4' };

/** The weight scheme a first-order method trains (fp32 masters, or the low-precision grid). */
export function foWeights(method: FoMethod): 'fp32' | 'int8' | 'int4' {
  return (LOWPREC_FORMAT[method] as 'int8' | 'int4' | undefined) ?? 'fp32';
}

export interface FoOptimizerOptions {
  method: FoMethod;
  /** Weight decay, skipping norms (default 0): decoupled for AdamW (θ·(1 − lr·λ)); fo-sgd adds λ·θ to the gradient, as PyTorch's SGD does. */
  weightDecay?: number;
  /** AdamW's β1 (default 0.9), β2 (0.999), ε (1e-8). */
  beta1?: number;
  beta2?: number;
  adamEps?: number;
  /** fo-sgd's momentum (default 0.9). */
  momentum?: number;
  /** Clip the step's gradient to this global L2 norm (default: no clipping). */
  maxGradNorm?: number;
  /** Recompute each layer's activations in the backward (less memory). */
  recompute?: boolean;
  /** Run seed: the stochastic rounding of low-precision updates (default 0). */
  seed?: number | bigint;
}

export class FoOptimizer implements StepOptimizer {
  readonly order = 'first' as const;
  readonly queries = 0;
  readonly method: FoMethod;
  readonly opts: Readonly<Required<Omit<FoOptimizerOptions, 'maxGradNorm'>>> & { maxGradNorm?: number };
  /** QAT's fake quantization (undefined for the other methods). */
  readonly qat: QatOptions | undefined;
  private model: LlamaModel | undefined;
  private readonly grads = new Map<string, Tensor>();
  private optimizer: AdamW | SGD | undefined;
  private ids = new Map<string, number>();
  private lr = 0;
  private lastNorm = NaN;

  constructor(opts: FoOptimizerOptions) {
    if (!FO_METHODS.includes(opts.method)) fail('ZOTUNE_INVALID_ARGUMENT', `method must be one of ${FO_METHODS.join(', ')}, got ${String(opts.method)}`);
    this.method = opts.method;
    const o = { weightDecay: 0, beta1: 0.9, beta2: 0.999, adamEps: 1e-8, momentum: 0.9, recompute: false, seed: 0, ...opts };
    if (!(Number.isFinite(o.weightDecay) && o.weightDecay >= 0)) fail('ZOTUNE_INVALID_ARGUMENT', `weightDecay must be a finite number >= 0, got ${o.weightDecay}`);
    if (!(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1)) fail('ZOTUNE_INVALID_ARGUMENT', 'beta1 and beta2 must be in [0, 1)');
    if (!(o.adamEps > 0 && Number.isFinite(o.adamEps))) fail('ZOTUNE_INVALID_ARGUMENT', `adamEps must be a finite number > 0, got ${o.adamEps}`);
    if (!(o.momentum >= 0 && o.momentum < 1)) fail('ZOTUNE_INVALID_ARGUMENT', `momentum must be in [0, 1), got ${o.momentum}`);
    if (o.maxGradNorm !== undefined && !(o.maxGradNorm > 0 && Number.isFinite(o.maxGradNorm))) fail('ZOTUNE_INVALID_ARGUMENT', `maxGradNorm must be a finite number > 0, got ${o.maxGradNorm}`);
    this.opts = o;
    const scheme = QAT_SCHEME[this.method];
    const grid = scheme ? schemeStorage(scheme) : undefined;
    this.qat = grid ? { format: grid.format, granularity: grid.granularity } : undefined;
  }

  get lowPrecision(): boolean {
    return LOWPREC_FORMAT[this.method] !== undefined;
  }

  /** Bytes of optimiser state (AdamW: 2 fp32 buffers per trained tensor, SGD momentum: 1, low-precision: none). */
  get stateBytes(): number {
    return this.optimizer?.stateBytes() ?? 0;
  }

  /** Bytes of the fp32 gradient buffers. */
  get gradientBytes(): number {
    let n = 0;
    this.grads.forEach((g) => (n += g.byteLength));
    return n;
  }

  /** Binds the optimiser to a model (its trainable tensors); the first estimate does it too. */
  bind(zm: ZoModel): LlamaModel {
    if (this.model) {
      if (zm !== this.model) fail('ZOTUNE_INVALID_ARGUMENT', 'a first-order optimiser trains the one model it was first used with');
      return this.model;
    }
    if (!(zm instanceof LlamaModel)) fail('ZOTUNE_UNSUPPORTED', 'first-order training needs a LlamaModel (it differentiates the model)');
    const model = zm;
    const names = model.trainable().map((t) => t.name);
    if (!names.length) fail('ZOTUNE_INVALID_ARGUMENT', 'the model has no trainable tensors');
    const lowFmt = LOWPREC_FORMAT[this.method];
    for (const n of names) {
      const w = model.weight(n);
      if (lowFmt) {
        if (w instanceof QTensor && w.format !== lowFmt)
          fail('ZOTUNE_UNSUPPORTED', `${this.method} trains ${lowFmt} weights; '${n}' is ${w.format} (load the model with weights '${lowFmt}')`);
        if (!(w instanceof QTensor) && !(w instanceof Tensor && w.dtype === 'f32')) fail('ZOTUNE_UNSUPPORTED', `${this.method}: '${n}' is neither ${lowFmt} nor fp32`);
      } else if (!(w instanceof Tensor) || w.dtype !== 'f32') {
        fail('ZOTUNE_UNSUPPORTED', `${this.method} updates fp32 weights; '${n}' is ${model.schemeOf(n)} (load the model with weights 'fp32'${this.method.startsWith('fo-') ? ", or use lowprec-int8 / lowprec-int4 for quantized weights" : ''})`);
      }
    }
    for (const n of names) this.grads.set(n, Tensor.zeros(expectedShape(model.config, n), 'f32', 'gradients'));
    if (!this.lowPrecision) {
      const params = new Map(names.map((n) => [n, model.tensor(n)]));
      const o = this.opts, lr = () => this.lr;
      this.optimizer = this.method === 'fo-sgd'
        ? new SGD(params, { lr, momentum: o.momentum, weightDecay: o.weightDecay })
        : new AdamW(params, { lr, betas: [o.beta1, o.beta2], eps: o.adamEps, weightDecay: o.weightDecay });
    }
    this.ids = LlamaModel.tensorIds(model.config);
    this.model = model;
    return model;
  }

  /**
   * Loss and gradient of one step: Σ_m (w_m / W) L_m over the micro-batches (w_m = example count),
   * the ZO estimate's weighting; the weights are not written.
   */
  async estimate(zm: ZoModel, batches: readonly MicroBatch[], _seeds: readonly bigint[], signal?: AbortSignal): Promise<StepEstimate> {
    if (batches.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'a step needs at least one micro-batch');
    for (const b of batches)
      if (!b.grad) fail('ZOTUNE_UNSUPPORTED', "this task's loss has no first-order form (multi-token candidates score by mean log-likelihood); use single-token label words or a ZO method");
    const model = this.bind(zm);
    this.grads.forEach((g) => (g.data() as Float32Array).fill(0));
    const total = batches.reduce((s, b) => s + (b.weight ?? 1), 0);
    let loss = 0;
    for (const b of batches) {
      signal?.throwIfAborted();
      const w = (b.weight ?? 1) / total;
      const r = await lossAndGrad(model, b.sequences, { ...b.grad, params: [...this.grads.keys()], into: this.grads, weight: w, recompute: this.opts.recompute, qat: this.qat });
      loss += w * r.loss;
    }
    this.lastNorm = await gradNorm(this.grads.values());
    return { loss, gradNorm: this.lastNorm };
  }

  /** Applies the gradient of the last estimate (clipped) at learning rate `step.lr`. */
  async apply(zm: ZoModel, step: AppliedStep): Promise<void> {
    const model = this.bind(zm);
    if (!(Number.isFinite(step.lr) && step.lr >= 0)) fail('ZOTUNE_INVALID_ARGUMENT', `lr must be a finite number >= 0, got ${step.lr}`);
    if (!Number.isFinite(this.lastNorm)) fail('ZOTUNE_NONFINITE', `no finite gradient to apply (norm ${this.lastNorm})`);
    const clip = this.opts.maxGradNorm !== undefined ? clipScale(this.lastNorm, this.opts.maxGradNorm) : 1;
    if (this.optimizer) {
      this.lr = step.lr;
      await this.optimizer.step(this.grads, { gradScale: clip });
    } else {
      await lowPrecisionUpdate(model, this.grads, { lr: step.lr, gradScale: clip, weightDecay: this.opts.weightDecay, srSeed: querySeed(this.opts.seed, step.step, 0), ids: this.ids });
    }
    this.lastNorm = NaN; // one apply per estimate
  }

  /**
   * Runs `fn` on the weights a deployment would use: QAT's fake-quantized linear weights (the
   * fp32 masters are kept in a workspace copy meanwhile and restored after); the model as it is
   * for the other methods.
   */
  async withDeployedWeights<T>(zm: ZoModel, fn: () => Promise<T>): Promise<T> {
    if (!this.qat) return fn();
    const model = this.bind(zm);
    const saved: [Tensor, Tensor][] = [];
    try {
      for (const n of llamaTensorNames(model.config))
        if (isLinearWeight(n)) {
          const w = model.tensor(n), master = Tensor.empty(w.shape, 'f32', 'workspace');
          (master.data() as Float32Array).set(w.data() as Float32Array);
          saved.push([w, master]);
          await fakeQuantize(master, this.qat.format, { granularity: this.qat.granularity }, w);
        }
      return await fn();
    } finally {
      for (const [w, master] of saved) {
        (w.data() as Float32Array).set(master.data() as Float32Array);
        master.dispose();
      }
    }
  }

  /** The checkpoint entries of the trained weights: an fp32 tensor, or a quantized one's codes, scales and zero-points. */
  private weightTensors(model: LlamaModel): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const n of this.grads.keys()) {
      const w = model.weight(n);
      if (w instanceof Tensor) out.push([`weight/${n}`, w]);
      else {
        out.push([`weight/${n}/data`, w.data]);
        if (w.scales) out.push([`weight/${n}/scales`, w.scales]);
        if (w.zeros) out.push([`weight/${n}/zeros`, w.zeros]);
      }
    }
    return out;
  }

  /**
   * Writes a checkpoint (atomically): the raw bytes of every trained tensor (fp32 masters, or the
   * codes + scales of low-precision weights), the optimiser state, and `meta`.
   */
  checkpoint(zm: ZoModel, file: string, meta: Record<string, unknown>): void {
    const model = this.bind(zm);
    const entries: TensorEntry[] = [];
    const raw = (name: string, t: Tensor) => {
      const d = t.data();
      entries.push({ name, dtype: 'U8', shape: [t.byteLength], data: new Uint8Array(d.buffer, d.byteOffset, t.byteLength) });
    };
    for (const [name, t] of this.weightTensors(model)) raw(name, t);
    this.optimizer?.stateTensors().forEach((ts, n) => ts.forEach((t, k) => raw(`state/${n}/${k}`, t)));
    writeSafetensors(file, entries, { zotune: JSON.stringify({ method: this.method, optimizerSteps: this.optimizer?.steps ?? 0, ...meta }) });
  }

  /** Restores a checkpoint into the bound model and this optimiser; returns its `meta`. */
  restore(zm: ZoModel, file: string): Record<string, unknown> {
    const model = this.bind(zm);
    const f = SafetensorsFile.open(file);
    try {
      let meta: Record<string, unknown>;
      try {
        meta = JSON.parse(f.metadata.zotune ?? '');
      } catch {
        fail('ZOTUNE_BAD_FILE', `${file}: not a zotune first-order checkpoint`);
      }
      if (meta.method !== this.method) fail('ZOTUNE_BAD_FILE', `${file} is a ${String(meta.method)} checkpoint, not ${this.method}`);
      const into = (name: string, t: Tensor) => {
        const d = t.data();
        f.readInto(name, new Uint8Array(d.buffer, d.byteOffset, t.byteLength));
      };
      for (const [name, t] of this.weightTensors(model)) into(name, t);
      if (this.optimizer) {
        const per = this.method === 'fo-sgd' ? (this.opts.momentum > 0 ? 1 : 0) : 2;
        for (const n of this.grads.keys())
          if (f.has(`state/${n}/0`)) this.optimizer.restoreState(n, per).forEach((t, k) => into(`state/${n}/${k}`, t));
        const steps = meta.optimizerSteps;
        if (!Number.isSafeInteger(steps) || (steps as number) < 0) fail('ZOTUNE_BAD_FILE', `${file}: bad optimizerSteps`);
        this.optimizer.steps = steps as number;
      }
      return meta;
    } finally {
      f.close();
    }
  }

  dispose(): void {
    this.optimizer?.dispose();
    this.grads.forEach((g) => g.dispose());
    this.grads.clear();
  }
}
