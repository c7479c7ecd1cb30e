/**
 * Matrix multiply with fp32 activations: out[M, N] (+)= x[M, K] · W'[N, K]ᵀ (+ bias), W an f32
 * Tensor or a QTensor (int8, int4, nf4, fp8, bf16, fp16) decoded inside the kernel, weights
 * [out, in] like nn.Linear. With `perturb`, W' = W + alpha·z where z(n, k) is the ZO direction
 * element first + n·K + k (the same values as the perturbation kernels), regenerated while the
 * weights are decoded: W is never written, so +eps / -eps probes need no restore.
 * Paths (GEMV for M <= 4, skinny for M <= 16, packed 6x16 tiles), summation orders and error
 * bounds are documented in native/cpu/gemm.h.
 */
import { expectDType, Tensor } from './tensor';
import { fail } from './errors';
import { native } from './native/load';
import { QTensor } from './qtensor';
import { Purpose } from './rng';
import type { GemmCall, Mem } from './native/binding';

export interface MatmulPerturb {
  /** 64-bit seed of the direction (number up to 2^53, or bigint). */
  seed: number | bigint;
  /** The trainable tensor's stream id. Default 0. */
  stream?: number;
  /** Step: W' = W + alpha·z. */
  alpha: number;
  /** Default 'gaussian'. */
  dist?: 'gaussian' | 'rademacher';
  /** QuZO direction: z stochastically rounded onto a b-bit grid (2..8); 0 (default) = exact z. */
  bits?: number;
  /** Rounding stream of a QuZO direction: Purpose.srProbe (default) or Purpose.srUpdate. */
  srPurpose?: number;
  /** Direction index of element (0, 0) (a weight that is a slice of a larger stream). Default 0. */
  first?: number | bigint;
  /** Sparse ZO: only these elements (n·K + k, u32, strictly increasing) are perturbed. */
  indices?: Tensor | Uint32Array;
}

export interface MatmulOptions {
  /** f32 [N], added to every output row. */
  bias?: Tensor;
  /** f32 output with M·N elements; allocated (native, 'activations') when absent. */
  out?: Tensor;
  /** out += x·Wᵀ (+ bias) instead of overwriting (needs `out`). */
  accumulate?: boolean;
  perturb?: MatmulPerturb;
}

function gemmArgs(x: Tensor, w: Tensor | QTensor, opts: MatmulOptions): [Tensor, GemmCall] {
  expectDType(x, 'f32', 'matmul input');
  if (x.shape.length < 1) fail('ZOTUNE_SHAPE_MISMATCH', 'matmul input must have at least one dimension [..., K]');
  const K = x.shape[x.shape.length - 1];
  const M = K === 0 ? x.shape.slice(0, -1).reduce((a, b) => a * b, 1) : x.size / K;
  let N: number;
  let wArg: GemmCall[4];
  if (w instanceof QTensor) {
    [N] = w.shape;
    if (w.cols !== K) fail('ZOTUNE_SHAPE_MISMATCH', `matmul: x has K = ${K} but the weight is [${w.rows}, ${w.cols}]`);
    wArg = w.desc();
  } else {
    expectDType(w, 'f32', 'matmul weight (use a QTensor for quantized weights)');
    if (w.shape.length !== 2 || w.shape[1] !== K) fail('ZOTUNE_SHAPE_MISMATCH', `matmul: weight must be [N, ${K}], got [${w.shape.join(', ')}]`);
    N = w.shape[0];
    wArg = w.mem;
  }
  const { bias, accumulate = false, perturb } = opts;
  if (bias) {
    expectDType(bias, 'f32', 'matmul bias');
    if (bias.size !== N) fail('ZOTUNE_SHAPE_MISMATCH', `matmul: bias must hold N = ${N} values, got ${bias.size}`);
  }
  if (accumulate && !opts.out) fail('ZOTUNE_INVALID_ARGUMENT', 'matmul: accumulate needs an `out` tensor to add to');
  const outShape = [...x.shape.slice(0, -1), N];
  let out = opts.out;
  if (out) {
    expectDType(out, 'f32', 'matmul output');
    if (out.size !== M * N) fail('ZOTUNE_SHAPE_MISMATCH', `matmul: out must hold ${M} x ${N} values, got ${out.size}`);
  } else {
    out = Tensor.empty(outShape, 'f32', 'activations');
  }
  const args: GemmCall = [x.mem, x.byteOffset, M, K, wArg, w instanceof QTensor ? 0 : (w as Tensor).byteOffset, N, out.mem, out.byteOffset, bias?.mem ?? null, bias?.byteOffset ?? 0, accumulate];
  if (perturb) {
    const dist = perturb.dist ?? 'gaussian';
    if (dist !== 'gaussian' && dist !== 'rademacher') fail('ZOTUNE_INVALID_ARGUMENT', `matmul: perturb.dist must be 'gaussian' or 'rademacher', got '${dist}'`);
    const ix = perturb.indices;
    let idx: [Mem | null, number, number] = [null, 0, 0];
    if (ix instanceof Tensor) {
      expectDType(ix, 'u32', 'perturb.indices');
      idx = [ix.mem, ix.byteOffset, ix.size];
    } else if (ix !== undefined) {
      if (!(ix instanceof Uint32Array)) fail('ZOTUNE_DTYPE', 'perturb.indices must be a u32 Tensor or a Uint32Array');
      idx = [ix, 0, ix.length];
    }
    args.push(true, perturb.seed, perturb.stream ?? 0, perturb.alpha, dist === 'gaussian' ? 0 : 1, perturb.bits ?? 0, perturb.srPurpose ?? Purpose.srProbe, perturb.first ?? 0, ...idx);
  }
  return [out, args];
}

/** out = x·W'ᵀ (+ bias) on a worker thread; resolves to `out` (shape [..., N]). */
export async function matmul(x: Tensor, w: Tensor | QTensor, opts: MatmulOptions = {}): Promise<Tensor> {
  const [out, args] = gemmArgs(x, w, opts);
  try {
    await native().gemmAsync(...args);
  } catch (e) {
    if (!opts.out) out.dispose();
    throw e;
  }
  return out;
}

export function matmulSync(x: Tensor, w: Tensor | QTensor, opts: MatmulOptions = {}): Tensor {
  const [out, args] = gemmArgs(x, w, opts);
  try {
    native().gemm(...args);
  } catch (e) {
    if (!opts.out) out.dispose();
    throw e;
  }
  return out;
}
