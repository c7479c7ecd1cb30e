/**
 * Learning-rate schedules: constant, linear decay and cosine decay, each with optional linear
 * warmup. A schedule is a pure function of the step, so a resumed or replayed run sees the same
 * rates as the original.
 */
import { fail } from './errors';

export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface ScheduleOptions {
  kind?: ScheduleKind;
  /** Peak learning rate. */
  lr: number;
  /** Total steps (the decay reaches minLr at the last step). Needed by linear and cosine. */
  steps?: number;
  /** Steps of linear warmup from 0 to lr (default 0). */
  warmup?: number;
  /** Final rate of the decaying schedules (default 0). */
  minLr?: number;
}

export type Schedule = (step: number) => number;

export function schedule(opts: ScheduleOptions): Schedule {
  const kind = opts.kind ?? 'constant', lr = opts.lr, warmup = opts.warmup ?? 0, minLr = opts.minLr ?? 0;
  if (!Number.isFinite(lr) || lr < 0) fail('ZOTUNE_INVALID_ARGUMENT', `lr must be a finite number >= 0, got ${lr}`);
  if (!Number.isSafeInteger(warmup) || warmup < 0) fail('ZOTUNE_INVALID_ARGUMENT', `warmup must be a non-negative integer, got ${warmup}`);
  if (!Number.isFinite(minLr) || minLr < 0 || minLr > lr) fail('ZOTUNE_INVALID_ARGUMENT', `minLr must be in [0, lr], got ${minLr}`);
  if (kind !== 'constant' && kind !== 'linear' && kind !== 'cosine') fail('ZOTUNE_INVALID_ARGUMENT', `schedule must be constant, linear or cosine, got ${String(kind)}`);
  const steps = opts.steps ?? 0;
  if (kind !== 'constant' && (!Number.isSafeInteger(steps) || steps <= warmup))
    fail('ZOTUNE_INVALID_ARGUMENT', `a ${kind} schedule needs steps > warmup (${warmup}), got ${opts.steps}`);
  return (step: number) => {
    if (!Number.isSafeInteger(step) || step < 0) fail('ZOTUNE_INVALID_ARGUMENT', `step must be a non-negative integer, got ${step}`);
    if (step < warmup) return (lr * (step + 1)) / (warmup + 1);
    if (kind === 'constant') return lr;
    const t = Math.min(1, (step - warmup) / Math.max(1, steps - 1 - warmup));
    const f = kind === 'linear' ? 1 - t : 0.5 * (1 + Math.cos(Math.PI * t));
    return minLr + (lr - minLr) * f;
  };
}
