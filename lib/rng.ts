/**
 * Counter-based random numbers (Philox4x32-10). Every value is a pure function of
 * (seed, stream, purpose, element index): the same on any thread count, CPU path or GPU.
 * The element map and the Box-Muller construction are documented in native/common/philox.h.
 */
import { expectDType, Tensor } from './tensor';
import { fail } from './errors';
import { native } from './native/load';

/** Independent streams for one (seed, stream); values match native/common/philox.h. */
export const Purpose = {
  gauss: 0,
  rademacher: 1,
  uniform: 2,
  bernoulli: 3,
  srProbe: 4,
  srUpdate: 5,
  srWeight: 6,
  srQuantize: 7,
} as const;

export type Distribution = 'uniform' | 'normal' | 'rademacher' | 'bernoulli';
const DIST_CODE: Record<Distribution, number> = { uniform: 0, normal: 1, rademacher: 2, bernoulli: 3 };
const DEFAULT_PURPOSE: Record<Distribution, number> = { uniform: Purpose.uniform, normal: Purpose.gauss, rademacher: Purpose.rademacher, bernoulli: Purpose.bernoulli };

export interface RngKey {
  /** 64-bit seed (number up to 2^53, or bigint). */
  seed: number | bigint;
  /** Stream id, e.g. the trainable tensor's id. Default 0. */
  stream?: number;
  /** Purpose; defaults to the distribution's own. */
  purpose?: number;
}

export interface FillOptions {
  /** Element index of the first value (lets a slice keep its place in a larger stream). */
  first?: number | bigint;
  /** Bernoulli probability of 1. */
  p?: number;
}

function fillArgs(t: Tensor, dist: Distribution, key: RngKey, opts: FillOptions) {
  expectDType(t, 'f32', 'random fill output');
  if (!(dist in DIST_CODE)) fail('ZOTUNE_INVALID_ARGUMENT', `unknown distribution '${dist}' (uniform, normal, rademacher, bernoulli)`);
  return [t.mem, t.byteOffset, t.size, DIST_CODE[dist], key.seed, key.stream ?? 0, key.purpose ?? DEFAULT_PURPOSE[dist], opts.first ?? 0, opts.p ?? 0.5] as const;
}

/** Fills an f32 tensor: uniform in (0,1), standard normal, Rademacher +-1, or Bernoulli(p) in {0,1}. */
export async function fill(t: Tensor, dist: Distribution, key: RngKey, opts: FillOptions = {}): Promise<Tensor> {
  await native().rngFillAsync(...fillArgs(t, dist, key, opts));
  return t;
}

export function fillSync(t: Tensor, dist: Distribution, key: RngKey, opts: FillOptions = {}): Tensor {
  native().rngFill(...fillArgs(t, dist, key, opts));
  return t;
}

/** Raw 32-bit Philox words of the word stream (u32 tensor). */
export function wordsSync(t: Tensor, key: RngKey, first: number | bigint = 0): Tensor {
  expectDType(t, 'u32', 'random words output');
  native().rngWords(t.mem, t.byteOffset, t.size, key.seed, key.stream ?? 0, key.purpose ?? Purpose.uniform, first);
  return t;
}

/** One raw Philox4x32-10 block: counter [c0..c3], key [k0, k1]. */
export function philox4x32(counter: readonly number[], key: readonly number[]): Uint32Array {
  if (counter.length !== 4 || key.length !== 2) fail('ZOTUNE_INVALID_ARGUMENT', 'philox4x32 takes 4 counter words and 2 key words');
  const out = new Uint32Array(4);
  native().philox(Uint32Array.from([...counter, ...key]), out);
  return out;
}
