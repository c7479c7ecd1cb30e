/**
 * In-place ZO perturbation of f32 weights along a seeded direction z:
 *   w[j] = fma(alpha, z(first + j), w[j])
 * in one fused pass (z is regenerated in registers, never stored). z(i) is a pure function of
 * (seed, stream, i) — native/common/direction.h — so the same direction can be applied, undone and
 * replayed on any thread count or CPU path: perturb(+a), perturb(-2a), perturb(+a) is MeZO's probe.
 * Each element is rounded once, so +a then -a gives back w within 1 ulp of the perturbed value.
 */
import { expectDType, Tensor } from './tensor';
import { fail } from './errors';
import { native } from './native/load';
import type { Mem } from './native/binding';

export interface DirectionOptions {
  /** 64-bit seed of the step (number up to 2^53, or bigint). */
  seed: number | bigint;
  /** Stream id: the trainable tensor's id, so tensors get independent directions. */
  stream: number;
  /** N(0,1) entries, or Rademacher +-1 (4x cheaper; memory-bound). */
  dist: 'gaussian' | 'rademacher';
  /** QuZO: 2..8 rounds each Gaussian z stochastically onto a symmetric b-bit grid; 0 (default) keeps z exact. Rademacher is already on a grid and ignores it. */
  bits?: number;
  /** Which independent rounding stream QuZO uses: 'probe' (Q1, default) or 'update' (Q2). */
  srPurpose?: 'probe' | 'update';
  /** Direction element of w[0] (a slice keeps its place in a larger tensor's direction). Default 0. */
  first?: number | bigint;
}

const DIST = { gaussian: 0, rademacher: 1 } as const;
const SR_PURPOSE = { probe: 4, update: 5 } as const;

function direction(opts: DirectionOptions) {
  const dist = DIST[opts.dist as keyof typeof DIST];
  if (dist === undefined) fail('ZOTUNE_INVALID_ARGUMENT', `dist must be 'gaussian' or 'rademacher', got ${String(opts.dist)}`);
  const sr = SR_PURPOSE[(opts.srPurpose ?? 'probe') as keyof typeof SR_PURPOSE];
  if (sr === undefined) fail('ZOTUNE_INVALID_ARGUMENT', `srPurpose must be 'probe' or 'update', got ${String(opts.srPurpose)}`);
  return [opts.seed, opts.stream, dist, opts.bits ?? 0, sr, opts.first ?? 0] as const;
}

function denseArgs(t: Tensor, alpha: number, opts: DirectionOptions) {
  expectDType(t, 'f32', 'perturbed tensor');
  return [t.mem, t.byteOffset, t.size, alpha, ...direction(opts)] as const;
}

/** Adds alpha * z to every element of an f32 tensor, off the event loop. */
export async function perturb(t: Tensor, alpha: number, opts: DirectionOptions): Promise<Tensor> {
  await native().perturbAsync(...denseArgs(t, alpha, opts));
  return t;
}

export function perturbSync(t: Tensor, alpha: number, opts: DirectionOptions): Tensor {
  native().perturb(...denseArgs(t, alpha, opts));
  return t;
}

type Indices = Uint32Array | Tensor;

function indexArgs(t: Tensor, indices: Indices, alpha: number, opts: DirectionOptions) {
  expectDType(t, 'f32', 'perturbed tensor');
  let mem: Mem, off: number, count: number;
  if (indices instanceof Tensor) {
    expectDType(indices, 'u32', 'indices');
    [mem, off, count] = [indices.mem, indices.byteOffset, indices.size];
  } else if (indices instanceof Uint32Array) {
    [mem, off, count] = [indices, 0, indices.length];
  } else {
    fail('ZOTUNE_DTYPE', 'indices must be a Uint32Array or a u32 tensor');
  }
  return [t.mem, t.byteOffset, t.size, mem, off, count, alpha, ...direction(opts)] as const;
}

/**
 * Sparse ZO: w[i] = fma(alpha, z(first + i), w[i]) for each i in `indices` (u32, each < t.size,
 * any order, no repeats) — the dense perturbation masked to the index set. Every index is checked
 * before anything is written: ZOTUNE_OUT_OF_RANGE (index >= size) or ZOTUNE_INVALID_ARGUMENT
 * (an index listed twice) leave the tensor unchanged. Sorted indices are checked fastest.
 */
export async function perturbIndices(t: Tensor, indices: Indices, alpha: number, opts: DirectionOptions): Promise<Tensor> {
  await native().perturbIndicesAsync(...indexArgs(t, indices, alpha, opts));
  return t;
}

export function perturbIndicesSync(t: Tensor, indices: Indices, alpha: number, opts: DirectionOptions): Tensor {
  native().perturbIndices(...indexArgs(t, indices, alpha, opts));
  return t;
}
