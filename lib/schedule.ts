/**
 * Learning-rate schedules shared by the first-order optimisers (lib/fo/) and the ZO trainer
 * (lib/zo/): a linear warmup from 0 to the peak rate, then constant, linear decay or cosine decay
 * to `minLr` at `totalSteps`. Steps count from 0 (the first update uses step 0).
 */
import { fail } from './errors';

export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface ScheduleOptions {
  /** Peak learning rate (after warmup). */
  lr: number;
  /** Shape after warmup (default 'constant'). */
  kind?: ScheduleKind;
  /** Steps of linear warmup from 0 (default 0): step s < warmup gets lr * (s + 1) / (warmup + 1). */
  warmupSteps?: number;
  /** Step count at which 'linear' / 'cosine' reach minLr (required for them). */
  totalSteps?: number;
  /** Floor of the decay (default 0). */
  minLr?: number;
}

/** A learning rate per step: a pure function, so resumed and replayed runs see the same rates. */
export type Schedule = (step: number) => number;

/** Returns step -> learning rate, validating the options once. */
export function makeSchedule(opts: ScheduleOptions): Schedule {
  const kind = opts.kind ?? 'constant', lr = opts.lr, warm = opts.warmupSteps ?? 0, minLr = opts.minLr ?? 0;
  if (!(Number.isFinite(lr) && lr >= 0)) fail('ZOTUNE_INVALID_ARGUMENT', `lr must be a finite number >= 0, got ${lr}`);
  if (!Number.isSafeInteger(warm) || warm < 0) fail('ZOTUNE_INVALID_ARGUMENT', `warmupSteps must be a non-negative integer, got ${warm}`);
  if (!(Number.isFinite(minLr) && minLr >= 0 && minLr <= lr)) fail('ZOTUNE_INVALID_ARGUMENT', `minLr must be in [0, lr], got ${minLr}`);
  if (kind !== 'constant' && kind !== 'linear' && kind !== 'cosine') fail('ZOTUNE_INVALID_ARGUMENT', `schedule kind must be 'constant', 'linear' or 'cosine', got ${String(kind)}`);
  const total = opts.totalSteps;
  if (kind !== 'constant' && (!Number.isSafeInteger(total) || total! <= warm))
    fail('ZOTUNE_INVALID_ARGUMENT', `a ${kind} schedule needs totalSteps, an integer > warmupSteps (${warm}), got ${total}`);
  return (step: number) => {
    if (!Number.isSafeInteger(step) || step < 0) fail('ZOTUNE_INVALID_ARGUMENT', `step must be a non-negative integer, got ${step}`);
    if (step < warm) return (lr * (step + 1)) / (warm + 1);
    if (kind === 'constant') return lr;
    const t = Math.min(1, (step - warm) / (total! - warm));
    const f = kind === 'linear' ? 1 - t : 0.5 * (1 + Math.cos(Math.PI * t));
    return minLr + (lr - minLr) * f;
  };
}
