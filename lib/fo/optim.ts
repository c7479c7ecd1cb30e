/**
 * First-order optimisers over named fp32 parameter tensors: AdamW (decoupled weight decay, norms
 * exempt by default) and SGD (momentum, Nesterov). Each update is one fused native pass per tensor
 * (native/cpu/optim.h) that also applies `gradScale` (accumulation averaging × clipping) to the
 * raw gradient; optimiser state lives in engine memory, category "optimizer".
 */
import { fail } from '../errors';
import { Tensor } from '../tensor';
import { native } from '../native/load';

export type LearningRate = number | ((step: number) => number);

/** Default weight-decay exemption: RMSNorm weights (HF convention: no decay on norms and biases). */
export const isNorm = (name: string) => /norm\.weight$/.test(name);

export interface StepOptions {
  /** Multiplies every raw gradient inside the update (default 1). */
  gradScale?: number;
}

function checkPair(name: string, w: Tensor, g: Tensor | undefined): Tensor {
  if (!g) fail('ZOTUNE_INVALID_ARGUMENT', `no gradient for parameter '${name}'`);
  if (w.dtype !== 'f32' || g.dtype !== 'f32') fail('ZOTUNE_DTYPE', `parameter '${name}' and its gradient must be f32`);
  if (w.size !== g.size) fail('ZOTUNE_SHAPE_MISMATCH', `gradient of '${name}' has ${g.size} elements, the parameter ${w.size}`);
  return g;
}

function lrAt(lr: LearningRate, step: number): number {
  const v = typeof lr === 'function' ? lr(step) : lr;
  if (!(Number.isFinite(v) && v >= 0)) fail('ZOTUNE_INVALID_ARGUMENT', `learning rate must be a finite number >= 0, got ${v}`);
  return v;
}

abstract class Optimizer {
  readonly params: Map<string, Tensor>;
  /** Updates done so far (the next uses step index `steps`, counting from 0 for schedules). */
  steps = 0;
  protected readonly state = new Map<string, Tensor[]>();

  constructor(params: Map<string, Tensor>) {
    this.params = params;
  }

  /** Bytes of optimiser state allocated so far. */
  stateBytes(): number {
    let n = 0;
    this.state.forEach((ts) => ts.forEach((t) => (n += t.byteLength)));
    return n;
  }

  protected stateOf(name: string, count: number, size: number): Tensor[] {
    let s = this.state.get(name);
    if (!s) {
      s = [];
      for (let i = 0; i < count; i++) s.push(Tensor.zeros([size], 'f32', 'optimizer'));
      this.state.set(name, s);
    }
    return s;
  }

  /** The state buffers per parameter (checkpoints: written with the weights, for resume). */
  stateTensors(): ReadonlyMap<string, readonly Tensor[]> {
    return this.state;
  }

  /** The state buffers of parameter `name` (created zeroed if absent), to restore a checkpoint into. */
  restoreState(name: string, count: number): Tensor[] {
    const w = this.params.get(name);
    if (!w) fail('ZOTUNE_INVALID_ARGUMENT', `no parameter named '${name}' in this optimiser`);
    return this.stateOf(name, count, w.size);
  }

  /** Applies one update from the gradients of every parameter (by name). */
  abstract step(grads: Map<string, Tensor>, opts?: StepOptions): Promise<void>;

  dispose(): void {
    this.state.forEach((ts) => ts.forEach((t) => t.dispose()));
    this.state.clear();
  }
}

export interface AdamWOptions {
  lr: LearningRate;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** Parameters without weight decay (default: norms). */
  noDecay?: (name: string) => boolean;
}

export class AdamW extends Optimizer {
  readonly opts: Required<AdamWOptions>;
  constructor(params: Map<string, Tensor>, opts: AdamWOptions) {
    super(params);
    this.opts = { betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01, noDecay: isNorm, ...opts };
  }

  async step(grads: Map<string, Tensor>, opts: StepOptions = {}): Promise<void> {
    const o = this.opts, lr = lrAt(o.lr, this.steps), gs = opts.gradScale ?? 1, t = this.steps + 1;
    for (const [name, w] of this.params) {
      const g = checkPair(name, w, grads.get(name));
      const [m, v] = this.stateOf(name, 2, w.size);
      const hyper = Float64Array.from([lr, o.betas[0], o.betas[1], o.eps, o.noDecay(name) ? 0 : o.weightDecay, gs, t]);
      await native().adamwUpdateAsync(w.mem, g.mem, m.mem, v.mem, w.size, hyper);
    }
    this.steps++;
  }
}

export interface SGDOptions {
  lr: LearningRate;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  noDecay?: (name: string) => boolean;
}

export class SGD extends Optimizer {
  readonly opts: Required<SGDOptions>;
  constructor(params: Map<string, Tensor>, opts: SGDOptions) {
    super(params);
    this.opts = { momentum: 0, nesterov: false, weightDecay: 0, noDecay: isNorm, ...opts };
    if (this.opts.nesterov && !(this.opts.momentum > 0)) fail('ZOTUNE_INVALID_ARGUMENT', 'Nesterov momentum needs momentum > 0');
  }

  async step(grads: Map<string, Tensor>, opts: StepOptions = {}): Promise<void> {
    const o = this.opts, lr = lrAt(o.lr, this.steps), gs = opts.gradScale ?? 1;
    for (const [name, w] of this.params) {
      const g = checkPair(name, w, grads.get(name));
      const first = !this.state.has(name);
      const buf = o.momentum > 0 ? this.stateOf(name, 1, w.size)[0].mem : null;
      const hyper = Float64Array.from([lr, o.momentum, o.noDecay(name) ? 0 : o.weightDecay, gs, o.nesterov ? 1 : 0, first ? 1 : 0]);
      await native().sgdUpdateAsync(w.mem, g.mem, buf, w.size, hyper);
    }
    this.steps++;
  }
}

/**
 * One plain SGD update of one tensor with the fused kernel SGD uses (no momentum, no state):
 * w -= lr * (gradScale * g + weightDecay * w). The low-precision trainer applies it to a
 * dequantized copy before rounding back onto the weight grid.
 */
export async function sgdStepTensor(w: Tensor, g: Tensor, lr: number, opts: { weightDecay?: number; gradScale?: number } = {}): Promise<void> {
  checkPair('sgdStepTensor', w, g);
  const hyper = Float64Array.from([lrAt(lr, 0), 0, opts.weightDecay ?? 0, opts.gradScale ?? 1, 0, 1]);
  await native().sgdUpdateAsync(w.mem, g.mem, null, w.size, hyper);
}

/** Global L2 norm of a set of gradients (sum of squares in double, fixed order). */
export async function gradNorm(grads: Iterable<Tensor>, scale = 1): Promise<number> {
  let s = 0;
  for (const g of grads) s += await native().sumSquaresAsync(g.mem, g.size);
  return Math.sqrt(s) * Math.abs(scale);
}

/** The factor that clips a gradient of norm `norm` to at most `maxNorm` (PyTorch clip_grad_norm_). */
export function clipScale(norm: number, maxNorm: number): number {
  if (!(maxNorm > 0)) fail('ZOTUNE_INVALID_ARGUMENT', `maxGradNorm must be > 0, got ${maxNorm}`);
  if (!Number.isFinite(norm)) fail('ZOTUNE_NONFINITE', `the gradient norm is ${norm}`);
  return Math.min(1, maxNorm / (norm + 1e-6));
}
