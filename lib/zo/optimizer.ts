/**
 * ZO optimisers: they turn probes (two forwards at θ ± εz) into projected gradients and apply
 * updates through the model's native zoProbe / zoUpdate calls (or the fused state kernels of
 * native/cpu/zo_optim.cc); no per-parameter work happens in JavaScript.
 *
 * - mezo: ZO-SGD with two-sided SPSA, n queries, Gaussian or Rademacher z, weight decay that
 *   skips norms (MeZO Algorithm 1/2).
 * - quzo: the same estimator with QuZO's directions: z rounded stochastically onto a b-bit grid
 *   twice with independent streams, the probe copy (srProbe) for the forwards and the update copy
 *   (srUpdate) for the step, which the model rounds stochastically onto each weight's own grid
 *   (QuZO §2.2, the paper's algorithm; not the released code's Q1 = Q2).
 * - zo-sgd-momentum / zo-adam: ZO-Bench's variants; the estimate ĝ = Σ_q g_q z_q / n feeds a
 *   momentum buffer (+1 parameter-sized buffer) or Adam's two moments (+2), in memory category
 *   "optimizer". fp32 trainable tensors only.
 *
 * A step is fully described by (lr, [(seed, g)]): `apply` of the same record on the same weights
 * and state gives the same bits, which is what checkpoint replay relies on.
 */
import { fail } from '../errors';
import { Tensor } from '../tensor';
import { native } from '../native/load';
import type { ForwardOptions, ForwardResult, Sequence } from '../model/llama';
import type { GradLoss } from '../model/grad';
import type { ZoQuery, ZoStepRecord } from './log';

export type ZoMethod = 'mezo' | 'quzo' | 'zo-sgd-momentum' | 'zo-adam';
export const ZO_METHODS: readonly ZoMethod[] = ['mezo', 'quzo', 'zo-sgd-momentum', 'zo-adam'];

export interface ZoDirection {
  dist?: 'gaussian' | 'rademacher';
  /** 0: exact z (MeZO); 2..8: QuZO's stochastically rounded b-bit direction. */
  bits?: number;
}

export interface TrainableInfo {
  name: string;
  id: number;
  numel: number;
  scheme: string;
  decay: boolean;
}

/** What an optimiser needs from a model: the ZO contract of LlamaModel (docs: zo-api). */
export interface ZoModel {
  zoProbe(
    batch: readonly Sequence[],
    opts: ForwardOptions & { seed: number | bigint; eps: number; direction?: ZoDirection; mode?: 'on-load' | 'in-place' },
  ): Promise<{ plus: ForwardResult; minus: ForwardResult }>;
  /** Every seed's zoProbe in one call (the same results); optional: without it each query is its own zoProbe. */
  zoProbeMany?(
    batch: readonly Sequence[],
    opts: ForwardOptions & { seeds: readonly (number | bigint)[]; eps: number; direction?: ZoDirection; mode?: 'on-load' | 'in-place' },
  ): Promise<{ plus: ForwardResult; minus: ForwardResult }[]>;
  zoUpdate(opts: { seed: number | bigint; scale: number; direction?: ZoDirection; decay?: number }): Promise<void>;
  trainable(): TrainableInfo[];
  trainableTensors(): { name: string; id: number; tensor: unknown }[];
  /**
   * A model whose weights live elsewhere (the device model) keeps the state of zo-sgd-momentum /
   * zo-adam beside them, under the optimiser's slot, and runs their step itself.
   */
  zoOptimStep?(slot: number, step: ZoStateStep): Promise<void>;
  zoOptimFree?(slot: number): void;
}

/** One zo-sgd-momentum / zo-adam step as the native zoOptimStep takes it (ZoModel.zoOptimStep). */
export interface ZoStateStep {
  kind: 0 | 1;
  /** [lo, hi] words of each query's seed. */
  seeds: Uint32Array;
  dist: number;
  bits: number;
  /** g / n per query. */
  coefs: Float32Array;
  lr: number;
  /** lr·λ for the tensors that decay (TrainableInfo.decay), 0 for the others. */
  decay: number;
  beta1: number;
  beta2: number;
  adamEps: number;
  bias1: number;
  bias2: number;
}

let nextSlot = 1;

/** One forward's worth of a training batch (see lib/tasks/task.ts LossBatch). */
export interface MicroBatch {
  sequences: Sequence[];
  forward: ForwardOptions;
  loss(r: ForwardResult): number;
  /** Weight of this micro-batch in the step's mean (its example count). */
  weight?: number;
  /** The same loss for the first-order backward, when it has one (lib/tasks/task.ts LossBatch.grad). */
  grad?: GradLoss;
}

export interface ZoOptimizerOptions {
  method: ZoMethod;
  /** Perturbation scale ε (default 1e-3). */
  eps?: number;
  /** SPSA queries per step (default 1). */
  queries?: number;
  dist?: 'gaussian' | 'rademacher';
  /** QuZO direction bits (default 4; mezo and the state methods use exact z). */
  directionBits?: number;
  /** Weight decay λ (decoupled: θ ← θ(1 − lr·λ)), skipped for norms. Default 0. */
  weightDecay?: number;
  /** Momentum factor of zo-sgd-momentum (default 0.9), Adam's β1 (default 0.9). */
  beta1?: number;
  /** Adam's β2 (default 0.999). */
  beta2?: number;
  /** Adam's ε (default 1e-8). */
  adamEps?: number;
  /** zoProbe mode (default 'on-load': weights are never written by a probe). */
  probeMode?: 'on-load' | 'in-place';
}

export interface Estimate {
  queries: ZoQuery[];
  /** Mean loss over the probes (the average of L+ and L−). */
  loss: number;
  lossPlus: number;
  lossMinus: number;
}

/** The seed of query q of a step: a 64-bit mix (splitmix64) of (run seed, step, q). */
export function querySeed(runSeed: number | bigint, step: number, query: number): bigint {
  const M = (1n << 64n) - 1n;
  let x = (BigInt(runSeed) * 0x9e3779b97f4a7c15n + BigInt(step) * 0x10000n + BigInt(query) + 0x632be59bd9b4e019n) & M;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M;
  return x ^ (x >> 31n);
}

const DIST_CODE = { gaussian: 0, rademacher: 1 } as const;

export class ZoOptimizer {
  readonly order = 'zeroth' as const;
  readonly method: ZoMethod;
  readonly eps: number;
  readonly queries: number;
  readonly direction: Required<ZoDirection>;
  readonly weightDecay: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly adamEps: number;
  readonly probeMode: 'on-load' | 'in-place';
  private readonly state = new Map<number, { m: Tensor; v?: Tensor }>();
  /** This optimiser's state slot in models that keep it themselves, and those models. */
  private readonly slot = nextSlot++;
  private readonly stateHolders = new Map<ZoModel, number>();  // model -> bytes of state it keeps for this optimiser
  /** Updates applied so far (Adam's bias-correction t). */
  private updates = 0;

  constructor(opts: ZoOptimizerOptions) {
    if (!ZO_METHODS.includes(opts.method)) fail('ZOTUNE_INVALID_ARGUMENT', `method must be one of ${ZO_METHODS.join(', ')}, got ${String(opts.method)}`);
    this.method = opts.method;
    this.eps = opts.eps ?? 1e-3;
    if (!(Number.isFinite(this.eps) && this.eps > 0)) fail('ZOTUNE_INVALID_ARGUMENT', `eps must be a finite number > 0, got ${opts.eps}`);
    this.queries = opts.queries ?? 1;
    if (!Number.isSafeInteger(this.queries) || this.queries < 1 || this.queries > 1024) fail('ZOTUNE_INVALID_ARGUMENT', `queries must be an integer in [1, 1024], got ${opts.queries}`);
    const dist = opts.dist ?? 'gaussian';
    if (!(dist in DIST_CODE)) fail('ZOTUNE_INVALID_ARGUMENT', `dist must be 'gaussian' or 'rademacher', got ${String(dist)}`);
    const bits = this.method === 'quzo' ? opts.directionBits ?? 4 : 0;
    if (this.method !== 'quzo' && opts.directionBits) fail('ZOTUNE_INVALID_ARGUMENT', `directionBits is QuZO's (method 'quzo'), not ${this.method}'s`);
    if (this.method === 'quzo' && (!Number.isSafeInteger(bits) || bits < 2 || bits > 8)) fail('ZOTUNE_INVALID_ARGUMENT', `QuZO direction bits must be an integer in [2, 8], got ${bits}`);
    this.direction = { dist, bits };
    this.weightDecay = opts.weightDecay ?? 0;
    if (!(Number.isFinite(this.weightDecay) && this.weightDecay >= 0)) fail('ZOTUNE_INVALID_ARGUMENT', `weightDecay must be a finite number >= 0, got ${opts.weightDecay}`);
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.adamEps = opts.adamEps ?? 1e-8;
    if (!(this.beta1 >= 0 && this.beta1 < 1) || !(this.beta2 >= 0 && this.beta2 < 1)) fail('ZOTUNE_INVALID_ARGUMENT', 'beta1 and beta2 must be in [0, 1)');
    if (!(this.adamEps > 0 && Number.isFinite(this.adamEps))) fail('ZOTUNE_INVALID_ARGUMENT', `adamEps must be a finite number > 0, got ${opts.adamEps}`);
    this.probeMode = opts.probeMode ?? 'on-load';
  }

  /** Parameter-sized buffers this optimiser keeps (0 for mezo/quzo, 1 for momentum, 2 for Adam). */
  get stateBuffers(): number {
    return this.method === 'zo-sgd-momentum' ? 1 : this.method === 'zo-adam' ? 2 : 0;
  }

  /** Bytes of optimiser state allocated so far (category "optimizer"; a device model's in device memory). */
  get stateBytes(): number {
    let n = 0;
    this.state.forEach((s) => (n += s.m.byteLength + (s.v?.byteLength ?? 0)));
    this.stateHolders.forEach((bytes) => (n += bytes));
    return n;
  }

  /**
   * The projected gradients of one step: per query, the two probes of every micro-batch with the
   * SAME direction (gradient accumulation), g = (L+ − L−) / 2ε of the weighted mean losses. Several
   * queries share one zoProbeMany call per micro-batch where the model has it (the same results).
   */
  async estimate(model: ZoModel, batches: readonly MicroBatch[], seeds: readonly bigint[], signal?: AbortSignal): Promise<Estimate> {
    if (batches.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'a ZO step needs at least one micro-batch');
    if (seeds.length !== this.queries) fail('ZOTUNE_INVALID_ARGUMENT', `a step of ${this.queries} queries needs ${this.queries} seeds, got ${seeds.length}`);
    const total = batches.reduce((s, b) => s + (b.weight ?? 1), 0);
    const n = seeds.length;
    const lp = new Array<number>(n).fill(0), lm = new Array<number>(n).fill(0);
    // Every query's probes of a micro-batch in one call where the model has it (the layers below the
    // trainable tensors then run once per micro-batch, not twice per query).
    const many = n > 1 && model.zoProbeMany ? model.zoProbeMany.bind(model) : undefined;
    const opts = (b: MicroBatch) => ({ ...b.forward, eps: this.eps, direction: this.direction, mode: this.probeMode });
    if (many)
      for (const b of batches) {
        signal?.throwIfAborted();
        const w = (b.weight ?? 1) / total;
        (await many(b.sequences, { ...opts(b), seeds })).forEach(({ plus, minus }, q) => {
          lp[q] += w * b.loss(plus);
          lm[q] += w * b.loss(minus);
        });
      }
    else
      for (let q = 0; q < n; q++)
        for (const b of batches) {
          signal?.throwIfAborted();
          const w = (b.weight ?? 1) / total;
          const { plus, minus } = await model.zoProbe(b.sequences, { ...opts(b), seed: seeds[q] });
          lp[q] += w * b.loss(plus);
          lm[q] += w * b.loss(minus);
        }
    const queries: ZoQuery[] = seeds.map((seed, q) => ({ seed: seed.toString(), g: (lp[q] - lm[q]) / (2 * this.eps) }));
    let sumPlus = 0, sumMinus = 0;
    for (let q = 0; q < n; q++) {
      sumPlus += lp[q];
      sumMinus += lm[q];
    }
    return { queries, lossPlus: sumPlus / n, lossMinus: sumMinus / n, loss: (sumPlus + sumMinus) / (2 * n) };
  }

  /**
   * What apply() would refuse, checked before a run's first step (fit), so that no step is logged
   * that could not be applied or replayed: the decay factor lr·λ of the schedule's largest lr,
   * fp32 weights for the stateful methods, and no in-place probes in a logged run (their
   * +εz, −2εz, +εz leaves rounding drift in fp32 weights that the log does not record).
   */
  check(model: ZoModel, maxLr: number, logged: boolean): void {
    if (logged && this.probeMode === 'in-place')
      fail('ZOTUNE_UNSUPPORTED', "in-place probes (+εz, −2εz, +εz on the weights) leave fp32 rounding drift that a step log cannot replay; a logged run takes probeMode 'on-load' (the same losses, weights never written)");
    if (!(maxLr * this.weightDecay <= 1))
      fail('ZOTUNE_INVALID_ARGUMENT', `lr × weightDecay must be at most 1 (decoupled decay θ·(1 − lr·λ)); the schedule reaches lr ${maxLr} with weightDecay ${this.weightDecay}`);
    if (this.stateBuffers)
      for (const t of model.trainable())
        if (t.scheme !== 'fp32')
          fail('ZOTUNE_UNSUPPORTED', `${this.method} keeps fp32 state and updates fp32 weights; '${t.name}' is ${t.scheme} (use mezo or quzo for quantized weights)`);
  }

  /** Applies one logged step (lr and its queries) to the model's weights and this optimiser's state. */
  async apply(model: ZoModel, record: Pick<ZoStepRecord, 'lr' | 'queries'>): Promise<void> {
    const { lr, queries } = record;
    if (!Number.isFinite(lr)) fail('ZOTUNE_INVALID_ARGUMENT', `lr must be finite, got ${lr}`);
    if (queries.length === 0) return; // a skipped step
    for (const q of queries) if (!Number.isFinite(q.g)) fail('ZOTUNE_NONFINITE', `projected gradient ${q.g} of seed ${q.seed} is not finite`);
    const n = queries.length, decay = lr * this.weightDecay;
    if (this.method === 'mezo' || this.method === 'quzo') {
      // θ ← θ − Σ_q (lr·g_q/n)·z_q; the decay once per step (with the first query).
      for (let k = 0; k < n; k++)
        await model.zoUpdate({ seed: BigInt(queries[k].seed), scale: (lr * queries[k].g) / n, direction: this.direction, decay: k === 0 ? decay : 0 });
      this.updates++;
      return;
    }
    this.updates++;
    const seeds = new Uint32Array(2 * n), coefs = new Float32Array(n);
    queries.forEach((q, k) => {
      const s = BigInt(q.seed);
      seeds[2 * k] = Number(s & 0xffffffffn);
      seeds[2 * k + 1] = Number(s >> 32n);
      coefs[k] = q.g / n;
    });
    const adam = this.method === 'zo-adam';
    const bias1 = adam ? 1 - this.beta1 ** this.updates : 1, bias2 = adam ? 1 - this.beta2 ** this.updates : 1;
    if (model.zoOptimStep) {
      this.stateHolders.set(model, model.trainable().reduce((b, t) => b + 4 * t.numel * this.stateBuffers, 0));
      await model.zoOptimStep(this.slot, {
        kind: adam ? 1 : 0, seeds, dist: DIST_CODE[this.direction.dist], bits: this.direction.bits, coefs, lr, decay,
        beta1: this.beta1, beta2: this.beta2, adamEps: this.adamEps, bias1, bias2,
      });
      return;
    }
    for (const info of model.trainable()) {
      const t = model.trainableTensors().find((x) => x.id === info.id)!.tensor;
      if (!(t instanceof Tensor) || t.dtype !== 'f32')
        fail('ZOTUNE_UNSUPPORTED', `${this.method} keeps fp32 state and updates fp32 weights; '${info.name}' is ${info.scheme} (use mezo or quzo for quantized weights)`);
      let s = this.state.get(info.id);
      if (!s) {
        s = { m: Tensor.zeros([t.size], 'f32', 'optimizer'), v: adam ? Tensor.zeros([t.size], 'f32', 'optimizer') : undefined };
        this.state.set(info.id, s);
      }
      await native().zoOptimStepAsync(
        adam ? 1 : 0, t.mem, t.byteOffset, t.size, s.m.mem, s.m.byteOffset, s.v ? s.v.mem : null, s.v ? s.v.byteOffset : 0, 0, info.id,
        DIST_CODE[this.direction.dist], this.direction.bits, seeds, coefs, lr, info.decay ? decay : 0, this.beta1, this.beta2, this.adamEps, bias1, bias2,
      );
    }
  }

  /** Frees the optimiser state (also the state device models keep for it). */
  dispose(): void {
    this.state.forEach((s) => {
      s.m.dispose();
      s.v?.dispose();
    });
    this.state.clear();
    this.stateHolders.forEach((_, m) => m.zoOptimFree?.(this.slot));
    this.stateHolders.clear();
  }
}
