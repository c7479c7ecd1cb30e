/**
 * Integer GEMMs with dynamic int8 activations (W8A8, W4A8): y = x · Wᵀ (+ bias) (+ residual),
 * x f32 [..., K] quantized per row on the fly, W an int8 or int4 QTensor [N, K]. GEMV for small M,
 * packed register-tiled GEMM otherwise; both give the same bits (native/cpu/gemm_int8.h).
 *
 * Perturb-on-load (ZO probes): `perturb: {alpha, seed, ...}` computes x · (W + alpha·z)ᵀ with the
 * direction z(n*K + k) of native/common/direction.h regenerated inside the kernel; W is never
 * written. `perturb.indices` (u32, strictly increasing flat indices) restricts z to a subset.
 * `matmul(x, w, {activations: 'int8'})` routes here.
 */
import { fail } from './errors';
import { native } from './native/load';
import type { GemmInt8Args, NativePerturb } from './native/binding';
import { QTensor } from './qtensor';
import { Purpose } from './rng';
import { expectDType, Tensor } from './tensor';

export interface PerturbOnLoad {
  /** Probe scale: the product uses W + alpha·z. */
  alpha: number;
  seed: number | bigint;
  /** The trainable tensor's stream id (default 0). */
  stream?: number;
  dist?: 'gaussian' | 'rademacher';
  /** QuZO directions: z stochastically rounded onto a b-bit grid (2..8); 0 = exact z (default). */
  bits?: number;
  /** Rounding stream of QuZO directions: 'probe' (default) or 'update', or the Purpose code. */
  srPurpose?: 'probe' | 'update' | number;
  /** Direction index of element (0, 0) (a weight that is a slice of a larger stream). Default 0. */
  first?: number | bigint;
  /** Sparse ZO: strictly increasing flat indices n*K + k (u32 tensor or Uint32Array); z is zero elsewhere. */
  indices?: Tensor | Uint32Array;
}

export interface MatmulInt8Options {
  /** f32 [N], added after scaling. */
  bias?: Tensor;
  /** f32 with the output's shape, added last. */
  residual?: Tensor;
  /** f32 output [..., N]; allocated when absent. */
  out?: Tensor;
  /** out += x · Wᵀ (+ bias): out is the residual (needs `out`). */
  accumulate?: boolean;
  perturb?: PerturbOnLoad;
}

function nativePerturb(p: PerturbOnLoad): NativePerturb {
  const dist = p.dist ?? 'gaussian';
  if (dist !== 'gaussian' && dist !== 'rademacher') fail('ZOTUNE_INVALID_ARGUMENT', `unknown direction distribution '${String(dist)}' (gaussian, rademacher)`);
  const sr = p.srPurpose ?? 'probe';
  if (typeof sr !== 'number' && sr !== 'probe' && sr !== 'update') fail('ZOTUNE_INVALID_ARGUMENT', `srPurpose must be 'probe' or 'update', got '${String(sr)}'`);
  return {
    alpha: p.alpha,
    seed: p.seed,
    stream: p.stream ?? 0,
    dist: dist === 'gaussian' ? 0 : 1,
    bits: p.bits ?? 0,
    srPurpose: typeof sr === 'number' ? sr : sr === 'probe' ? Purpose.srProbe : Purpose.srUpdate,
    first: p.first ?? 0,
  };
}

function prepare(x: Tensor, w: QTensor, opts: MatmulInt8Options): { out: Tensor; args: GemmInt8Args } {
  expectDType(x, 'f32', 'int8 matmul input x');
  if (!(w instanceof QTensor)) fail('ZOTUNE_INVALID_ARGUMENT', 'int8 matmul weights must be a QTensor');
  if (w.format !== 'int8' && w.format !== 'int4') fail('ZOTUNE_DTYPE', `int8 matmul takes int8 or int4 weights, got ${w.format}`);
  const [N, K] = w.shape;
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== K)
    fail('ZOTUNE_SHAPE_MISMATCH', `x [${x.shape.join(', ')}] does not end in K = ${K} (weights [${N}, ${K}])`);
  const M = K === 0 ? x.shape.slice(0, -1).reduce((a, b) => a * b, 1) : x.size / K;
  const outShape = [...x.shape.slice(0, -1), N];
  const check = (t: Tensor | undefined, shape: number[], what: string) => {
    if (!t) return;
    expectDType(t, 'f32', what);
    if (t.size !== shape.reduce((a, b) => a * b, 1) || t.shape[t.shape.length - 1] !== shape[shape.length - 1])
      fail('ZOTUNE_SHAPE_MISMATCH', `${what} [${t.shape.join(', ')}] does not fit [${shape.join(', ')}]`);
  };
  check(opts.bias, [N], 'bias');
  check(opts.out, outShape, 'out');
  check(opts.residual, outShape, 'residual');
  if (opts.accumulate && !opts.out) fail('ZOTUNE_INVALID_ARGUMENT', 'accumulate needs out');
  if (opts.accumulate && opts.residual) fail('ZOTUNE_INVALID_ARGUMENT', 'accumulate uses out as the residual; pass one or the other');
  const rawIdx = opts.perturb?.indices;
  if (rawIdx instanceof Tensor) expectDType(rawIdx, 'u32', 'perturb.indices');
  else if (rawIdx !== undefined && !(rawIdx instanceof Uint32Array)) fail('ZOTUNE_DTYPE', 'perturb.indices must be a u32 Tensor or a Uint32Array');
  const idx = rawIdx instanceof Tensor ? { mem: rawIdx.mem, off: rawIdx.byteOffset, n: rawIdx.size } : rawIdx ? { mem: rawIdx, off: 0, n: rawIdx.length } : undefined;
  const out = opts.out ?? Tensor.empty(outShape, 'f32', 'activations');
  const res = opts.accumulate ? out : opts.residual;
  const args: GemmInt8Args = [
    x.mem, x.byteOffset, M, w.desc(), out.mem, out.byteOffset,
    opts.bias ? opts.bias.mem : null, opts.bias ? opts.bias.byteOffset : 0,
    res ? res.mem : null, res ? res.byteOffset : 0,
    opts.perturb ? nativePerturb(opts.perturb) : null,
    idx ? idx.mem : null, idx ? idx.off : 0, idx ? idx.n : 0,
  ];
  return { out, args };
}

/** y = int8(x) · Wᵀ (+ bias) (+ residual), off the event loop. */
export async function matmulInt8(x: Tensor, w: QTensor, opts: MatmulInt8Options = {}): Promise<Tensor> {
  const { out, args } = prepare(x, w, opts);
  try {
    await native().gemmInt8Async(...args);
  } catch (e) {
    if (!opts.out) out.dispose();
    throw e;
  }
  return out;
}

export function matmulInt8Sync(x: Tensor, w: QTensor, opts: MatmulInt8Options = {}): Tensor {
  const { out, args } = prepare(x, w, opts);
  try {
    native().gemmInt8(...args);
  } catch (e) {
    if (!opts.out) out.dispose();
    throw e;
  }
  return out;
}

function s8Args(a: Tensor, b: Tensor, out: Tensor | undefined) {
  expectDType(a, 'i8', 'gemmS8S8S32 a');
  expectDType(b, 'i8', 'gemmS8S8S32 b');
  if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[1] !== b.shape[1])
    fail('ZOTUNE_SHAPE_MISMATCH', `gemmS8S8S32 needs a [M, K] and b [N, K], got [${a.shape.join(', ')}] and [${b.shape.join(', ')}]`);
  const [M, K] = a.shape, N = b.shape[0];
  if (out) {
    expectDType(out, 'i32', 'gemmS8S8S32 out');
    if (out.shape.length !== 2 || out.shape[0] !== M || out.shape[1] !== N) fail('ZOTUNE_SHAPE_MISMATCH', `gemmS8S8S32 out must be [${M}, ${N}]`);
  }
  const c = out ?? Tensor.empty([M, N], 'i32', 'activations');
  return { c, args: [a.mem, a.byteOffset, b.mem, b.byteOffset, c.mem, c.byteOffset, M, N, K] as const };
}

/** Exact int8 × int8 → int32: c = a · bᵀ, a [M, K] in [-127, 127], b [N, K]. */
export function gemmS8S8S32Sync(a: Tensor, b: Tensor, out?: Tensor): Tensor {
  const { c, args } = s8Args(a, b, out);
  try {
    native().gemmS8S8S32(...args);
  } catch (e) {
    if (!out) c.dispose();
    throw e;
  }
  return c;
}

export async function gemmS8S8S32(a: Tensor, b: Tensor, out?: Tensor): Promise<Tensor> {
  const { c, args } = s8Args(a, b, out);
  try {
    await native().gemmS8S8S32Async(...args);
  } catch (e) {
    if (!out) c.dispose();
    throw e;
  }
  return c;
}
