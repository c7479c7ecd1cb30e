/**
 * Checkpoints the ZO way: base weights + the step log reproduce the fine-tuned weights bit for
 * bit. Replay applies every logged step's update (no forward pass) in order, through the same
 * optimiser code the run used; a skipped step applies nothing.
 */
import { fail } from '../errors';
import type { ZoLog, ZoStepRecord } from './log';
import { ZoOptimizer, type ZoModel, type ZoOptimizerOptions } from './optimizer';

/** The optimiser settings a run writes into its log header, to rebuild the same optimiser. */
export function optimizerFromHeader(header: Record<string, unknown>): ZoOptimizer {
  const o = header.optimizer as ZoOptimizerOptions | undefined;
  if (!o || typeof o !== 'object' || typeof o.method !== 'string') fail('ZOTUNE_BAD_FILE', 'the log header has no optimizer settings');
  return new ZoOptimizer(o);
}

/** The settings of an optimiser, as stored in a log header. */
export function optimizerHeader(opt: ZoOptimizer): ZoOptimizerOptions {
  return {
    method: opt.method, eps: opt.eps, queries: opt.queries, dist: opt.direction.dist,
    ...(opt.method === 'quzo' ? { directionBits: opt.direction.bits } : {}),
    weightDecay: opt.weightDecay, beta1: opt.beta1, beta2: opt.beta2, adamEps: opt.adamEps, probeMode: opt.probeMode,
  };
}

export interface ReplayOptions {
  /** Apply only the steps before this one (default: all). */
  upTo?: number;
  onStep?: (r: ZoStepRecord) => void;
  signal?: AbortSignal;
}

/** Applies the log's steps to a model holding the base weights; returns the number of steps applied. */
export async function replay(model: ZoModel, optimizer: ZoOptimizer, log: ZoLog | readonly ZoStepRecord[], opts: ReplayOptions = {}): Promise<number> {
  const records = Array.isArray(log) ? (log as readonly ZoStepRecord[]) : (log as ZoLog).records();
  let n = 0;
  for (const r of records) {
    if (opts.upTo !== undefined && r.step >= opts.upTo) break;
    opts.signal?.throwIfAborted();
    await optimizer.apply(model, r);
    opts.onStep?.(r);
    n++;
  }
  return n;
}
