/**
 * Machine ceilings the benchmarks compare kernels against (bench/harness.js measureCeilings()).
 * Each op does a fixed amount of work on every engine thread and returns a checksum the caller
 * verifies; the rate is work / time measured outside. See native/cpu/ceilings.h.
 */
import { expectDType, Tensor } from './tensor';
import { native } from './native/load';

/** Streaming read of an f32 tensor; returns its sum (same bits on every path and thread count). */
export function readSum(t: Tensor): number {
  expectDType(t, 'f32', 'ceiling buffer');
  return native().ceilingRead(t.mem, t.byteOffset, t.size);
}

/** In-place read-modify-write t[i] += delta: the memory traffic of a Rademacher perturbation. */
export function update(t: Tensor, delta: number): void {
  expectDType(t, 'f32', 'ceiling buffer');
  native().ceilingUpdate(t.mem, t.byteOffset, t.size, delta);
}

/** fp32 FMA peak: tasks x iters x 96 FMAs (192 FLOP per iteration). Returns tasks * 96 * iters. AVX2 path only. */
export function fmaPeak(tasks: number, iters: number): number {
  return native().ceilingFma(tasks, iters);
}

/** int8 dot peak: tasks x iters x 6 vpmaddubsw (384 ops per iteration). Returns tasks * 192 * iters. AVX2 path only. */
export function int8Peak(tasks: number, iters: number): number {
  return native().ceilingInt8(tasks, iters);
}

/** AVX-512 fp32 FMA peak: tasks x iters x 12 zmm FMAs (384 FLOP per iteration). Returns tasks * 192 * iters. avx512 path only. */
export function fma512Peak(tasks: number, iters: number): number {
  return native().ceilingFma512(tasks, iters);
}

/** AVX-512 VNNI int8 dot peak: tasks x iters x 12 vpdpbusd (1536 ops per iteration). Returns tasks * 768 * iters. avx512 path only. */
export function vnniPeak(tasks: number, iters: number): number {
  return native().ceilingVnni(tasks, iters);
}

/** Work units per call of each compute ceiling, for rates. */
export const FLOP_PER_FMA_ITER = 192;
export const OPS_PER_INT8_ITER = 384;
export const FLOP_PER_FMA512_ITER = 384;
export const OPS_PER_VNNI_ITER = 1536;
