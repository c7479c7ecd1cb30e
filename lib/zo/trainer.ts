/**
 * The training loop: `fit(model, optimizer, data, options)` is an async iterator of step and
 * evaluation events (also delivered to callbacks), for ZO optimisers (ZoOptimizer) and first-order
 * ones (fo.FoOptimizer) alike (StepOptimizer below).
 *
 * Each step: the micro-batches of the step (gradient accumulation: every micro-batch is probed
 * with the SAME directions), the projected gradients, a divergence check, the log append (fsync'd)
 * and then the update. Everything a step does is a pure function of (run seed, step): data order,
 * direction seeds and the learning rate, so a run resumed from its log continues exactly as the
 * uninterrupted run would have.
 *
 * Divergence guard: a non-finite loss or projected gradient, or a loss above `explodeFactor` ×
 * the running mean of accepted losses, skips the update (the log records the step as skipped with
 * no queries); probes never write the weights ('on-load'), so a skipped step leaves them untouched.
 */
import { fail } from '../errors';
import type { Example } from '../tasks/data';
import { permutation } from '../tasks/data';
import type { PromptTask } from '../tasks/task';
import { makeSchedule, type Schedule, type ScheduleOptions } from '../schedule';
import type { ZoLog, ZoQuery, ZoStepRecord } from './log';
import { querySeed, type MicroBatch, type ZoModel } from './optimizer';

/**
 * What fit() needs from an optimiser, zeroth-order (ZoOptimizer: probes → projected gradients) or
 * first-order (fo.FoOptimizer: backward → gradients): estimate a step from its micro-batches
 * without writing the weights, then, once the divergence guard accepted it, apply it.
 */
export interface StepOptimizer {
  readonly order: 'zeroth' | 'first';
  /** SPSA queries per step: fit derives one direction seed per query (0 for first-order). */
  readonly queries: number;
  /** Bytes of optimiser state (category "optimizer"). */
  readonly stateBytes: number;
  estimate(model: ZoModel, batches: readonly MicroBatch[], seeds: readonly bigint[], signal?: AbortSignal): Promise<StepEstimate>;
  apply(model: ZoModel, step: AppliedStep): Promise<void>;
  /** Refuses, before the first step, a run whose steps apply() would refuse (maxLr: the schedule's largest lr). */
  check?(model: ZoModel, maxLr: number, logged: boolean): void;
  dispose(): void;
}

/** One step's estimate: the loss (before the update) and what the update is made of. */
export interface StepEstimate {
  loss: number;
  /** ZO: mean losses at θ + εz and θ − εz. */
  lossPlus?: number;
  lossMinus?: number;
  /** ZO: the projected gradient of each query (what the log records). */
  queries?: ZoQuery[];
  /** First-order: global L2 norm of the step's gradient (before clipping). */
  gradNorm?: number;
}

/** A step the guard accepted: its index, learning rate and (ZO) queries. */
export interface AppliedStep {
  step: number;
  lr: number;
  queries: ZoQuery[];
}

/** Training data: the micro-batches of a step (a pure function of step and index). */
export interface TrainData {
  /** Micro-batch `micro` of step `step`. */
  batch(step: number, micro: number): MicroBatch;
}

/**
 * Batches of a prompt task's examples: epochs of a seeded shuffle (epoch e uses permutation
 * stream e), consumed `batchSize` examples per micro-batch in order.
 */
export function taskData(task: PromptTask, examples: readonly Example[], opts: { batchSize: number; microBatches?: number; seed: number | bigint }): TrainData {
  const n = examples.length, bs = opts.batchSize, micro = opts.microBatches ?? 1;
  if (n === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'no training examples');
  if (!Number.isSafeInteger(bs) || bs < 1) fail('ZOTUNE_INVALID_ARGUMENT', `batchSize must be a positive integer, got ${bs}`);
  const perms = new Map<number, number[]>();
  const order = (epoch: number) => {
    let p = perms.get(epoch);
    if (!p) {
      p = permutation(n, opts.seed, 100 + epoch);
      if (perms.size > 4) perms.delete(perms.keys().next().value!);
      perms.set(epoch, p);
    }
    return p;
  };
  return {
    batch(step, m) {
      const first = (step * micro + m) * bs;
      const chunk: Example[] = [];
      for (let k = first; k < first + bs; k++) chunk.push(examples[order(Math.floor(k / n))[k % n]]);
      return { ...task.lossBatch(chunk), weight: chunk.length };
    },
  };
}

export interface StepEvent {
  type: 'step';
  step: number;
  /** ZO: mean of the probe losses (L+ + L−)/2 over the queries; first-order: the loss before the update. */
  loss: number;
  /** ZO only. */
  lossPlus?: number;
  lossMinus?: number;
  /** ZO only: projected gradient of each query. */
  g?: number[];
  /** First-order only: global L2 norm of the gradient (before clipping). */
  gradNorm?: number;
  lr: number;
  /** Wall time of the step (probes or forward + backward, and the update), ms. */
  ms: number;
  /** Why the update was skipped (divergence guard), if it was. */
  skipped?: string;
}

export interface EvalEvent {
  type: 'eval';
  step: number;
  /** Steps applied when evaluated (step + 1; 0 = before training). */
  after: number;
  metrics: { accuracy: number; loss: number; [k: string]: number };
  best: boolean;
}

export type TrainEvent = StepEvent | EvalEvent;

export interface FitOptions {
  /** Total steps of the run (a resumed run stops at the same step). */
  steps: number;
  /** The learning rate: a schedule, its options, or a constant. */
  lr: number | Schedule | ScheduleOptions;
  /** Run seed: direction seeds (and the caller's data order). */
  seed: number | bigint;
  /** Micro-batches per step (gradient accumulation with one direction). Default 1. */
  microBatches?: number;
  /** Append every step here (fsync'd) and continue after its last step (zeroth-order only). */
  log?: ZoLog;
  /**
   * Continue a first-order run from a checkpoint (weights and optimiser state already restored):
   * the next step and the divergence guard's running loss sum / count at that point.
   */
  resumeFrom?: { step: number; lossSum: number; lossCount: number };
  /** Evaluate every N steps (and after the last); 0 = never. */
  evalEvery?: number;
  /** Evaluation (higher accuracy = better; ties broken by lower loss). */
  evaluate?: () => Promise<EvalEvent['metrics']>;
  /** Evaluate the weights the run starts from (after step `start`: 0, or a resumed run's) before its first step. Default false. */
  evalAtStart?: boolean;
  signal?: AbortSignal;
  /** Divergence guard: skip when loss > explodeFactor × running mean (default 5; Infinity disables). */
  explodeFactor?: number;
  onStep?: (e: StepEvent) => void | Promise<void>;
  onEval?: (e: EvalEvent) => void | Promise<void>;
}

/** Best evaluation of a run so far. */
export interface BestEval {
  after: number;
  metrics: EvalEvent['metrics'];
}

function better(a: EvalEvent['metrics'], b: EvalEvent['metrics'] | undefined): boolean {
  return !b || a.accuracy > b.accuracy || (a.accuracy === b.accuracy && a.loss < b.loss);
}

function scheduleOf(lr: FitOptions['lr']): Schedule {
  return typeof lr === 'function' ? lr : typeof lr === 'number' ? makeSchedule({ lr }) : makeSchedule(lr);
}

/**
 * What fit() checks before its first step (steps start .. steps - 1): every learning rate finite,
 * and the optimiser's own check against the schedule's largest lr. A new run folder calls it too,
 * before it writes anything.
 */
export function checkSteps(model: ZoModel, optimizer: StepOptimizer, lr: FitOptions['lr'] | Schedule, start: number, steps: number, logged: boolean): void {
  const lrOf = scheduleOf(lr);
  let maxLr = 0;
  for (let step = start; step < steps; step++) {
    const v = lrOf(step);
    if (!Number.isFinite(v)) fail('ZOTUNE_INVALID_ARGUMENT', `the learning rate of step ${step} is ${v}, not a finite number`);
    maxLr = Math.max(maxLr, v);
  }
  optimizer.check?.(model, maxLr, logged);
}

/**
 * Trains with a zeroth- or first-order optimiser; the model and optimiser must already hold the
 * state after `options.log`'s records (replay them first: lib/zo/replay.ts) or, first-order, the
 * checkpoint `options.resumeFrom` continues from.
 */
export async function* fit(model: ZoModel, optimizer: StepOptimizer, data: TrainData, options: FitOptions): AsyncGenerator<TrainEvent, BestEval | undefined> {
  const { steps, log, signal } = options;
  if (log && optimizer.order === 'first') fail('ZOTUNE_INVALID_ARGUMENT', 'a first-order run has no seed log (its steps are not replayable): checkpoint its weights and resume with resumeFrom');
  if (log && options.resumeFrom) fail('ZOTUNE_INVALID_ARGUMENT', 'give either a log or resumeFrom, not both');
  if (!Number.isSafeInteger(steps) || steps < 0) fail('ZOTUNE_INVALID_ARGUMENT', `steps must be a non-negative integer, got ${steps}`);
  const micro = options.microBatches ?? 1;
  if (!Number.isSafeInteger(micro) || micro < 1) fail('ZOTUNE_INVALID_ARGUMENT', `microBatches must be a positive integer, got ${options.microBatches}`);
  const evalEvery = options.evalEvery ?? 0;
  if (!Number.isSafeInteger(evalEvery) || evalEvery < 0) fail('ZOTUNE_INVALID_ARGUMENT', `evalEvery must be a non-negative integer, got ${evalEvery}`);
  if (evalEvery > 0 && !options.evaluate) fail('ZOTUNE_INVALID_ARGUMENT', 'evalEvery needs an evaluate function');
  const lrOf = scheduleOf(options.lr);
  const explode = options.explodeFactor ?? 5;
  if (!(explode > 1)) fail('ZOTUNE_INVALID_ARGUMENT', `explodeFactor must be > 1, got ${explode}`);

  let best: BestEval | undefined;
  // running mean of accepted losses (the divergence reference), rebuilt from a resumed log
  let lossSum = options.resumeFrom?.lossSum ?? 0, lossCount = options.resumeFrom?.lossCount ?? 0;
  for (const r of log?.records() ?? [])
    if (!r.skipped && typeof r.loss === 'number') {
      lossSum += r.loss;
      lossCount++;
    }
  const start = log?.nextStep ?? options.resumeFrom?.step ?? 0;
  if (!Number.isSafeInteger(start) || start < 0) fail('ZOTUNE_INVALID_ARGUMENT', `resumeFrom.step must be a non-negative integer, got ${start}`);

  const evaluate = async (after: number): Promise<EvalEvent> => {
    const metrics = await options.evaluate!();
    const isBest = better(metrics, best?.metrics);
    if (isBest) best = { after, metrics };
    const e: EvalEvent = { type: 'eval', step: after - 1, after, metrics, best: isBest };
    await options.onEval?.(e);
    return e;
  };

  checkSteps(model, optimizer, lrOf, start, steps, !!log);

  if (options.evalAtStart && options.evaluate) yield await evaluate(start);
  for (let step = start; step < steps; step++) {
    signal?.throwIfAborted();
    const t0 = performance.now();
    const lr = lrOf(step);
    const batches = Array.from({ length: micro }, (_, m) => data.batch(step, m));
    const seeds = Array.from({ length: optimizer.queries }, (_, q) => querySeed(options.seed, step, q));
    const est = await optimizer.estimate(model, batches, seeds, signal);
    let skipped: string | undefined;
    const queries = est.queries ?? [];
    const g = queries.map((q) => q.g);
    if ([est.loss, est.lossPlus ?? 0, est.lossMinus ?? 0].some((x) => !Number.isFinite(x))) skipped = 'non-finite loss';
    else if (g.some((x) => !Number.isFinite(x))) skipped = 'non-finite projected gradient';
    else if (est.gradNorm !== undefined && !Number.isFinite(est.gradNorm)) skipped = 'non-finite gradient';
    else if (lossCount >= 10 && est.loss > explode * (lossSum / lossCount)) skipped = `loss ${est.loss.toPrecision(4)} > ${explode} × running mean ${(lossSum / lossCount).toPrecision(4)}`;
    const record: ZoStepRecord = skipped
      ? { step, lr, queries: [], loss: Number.isFinite(est.loss) ? est.loss : null, skipped }
      : { step, lr, queries, loss: est.loss };
    signal?.throwIfAborted();
    log?.append(record);
    if (!skipped) {
      await optimizer.apply(model, { step, lr, queries });
      lossSum += est.loss;
      lossCount++;
    }
    const e: StepEvent = {
      type: 'step', step, loss: est.loss,
      ...(optimizer.order === 'zeroth' ? { lossPlus: est.lossPlus, lossMinus: est.lossMinus, g } : { gradNorm: est.gradNorm }),
      lr, ms: performance.now() - t0, ...(skipped ? { skipped } : {}),
    };
    await options.onStep?.(e);
    yield e;
    if (options.evaluate && evalEvery > 0 && ((step + 1) % evalEvery === 0 || step + 1 === steps)) yield await evaluate(step + 1);
  }
  return best;
}
