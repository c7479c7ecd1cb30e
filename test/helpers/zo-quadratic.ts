/**
 * A quadratic "model" with the ZO contract of LlamaModel (zoProbe / zoUpdate / trainable), for
 * optimiser, estimator and trainer tests: L(θ) = ½ Σ a_i (θ_i − c_i)² over fp32 tensors, the
 * directions applied by the real perturbation kernels (same streams and purposes as the model:
 * stream = tensor id, srProbe for the probes, srUpdate for the update). A central difference of
 * a quadratic is exact, so g = ∇L(θ)·z_probe with no ε error.
 */
import { perturbSync, Tensor } from '../../lib';
import type { ForwardResult } from '../../lib/model/llama';
import type { TrainableInfo, ZoDirection, ZoModel } from '../../lib/zo/optimizer';

export interface QuadParam {
  name: string;
  id: number;
  tensor: Tensor;
  a: Float64Array;
  c: Float64Array;
  decay: boolean;
}

function dirOpts(seed: number | bigint, stream: number, dir: ZoDirection | undefined, purpose: 'probe' | 'update') {
  return { seed, stream, dist: dir?.dist ?? 'gaussian', bits: dir?.bits ?? 0, srPurpose: purpose } as const;
}

export class QuadraticModel implements ZoModel {
  readonly params: QuadParam[];
  probes = 0;

  /** Tensors of the given sizes; a_i in [0.5, 1.5), c_i and θ_i from a fixed pattern. */
  constructor(sizes: number[] = [200, 56], init = 0) {
    this.params = sizes.map((n, id) => {
      const a = new Float64Array(n), c = new Float64Array(n), th = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        a[i] = 0.5 + ((i * 7 + id * 3) % 10) / 10;
        c[i] = Math.sin(i + 1 + id * 100);
        th[i] = init ? Math.cos(i * 3 + id) * init : 0;
      }
      return { name: id === 1 ? 'norm.weight' : `w${id}.weight`, id, tensor: Tensor.fromArray(th, [n], 'f32', 'weights'), a, c, decay: id !== 1 };
    });
  }

  lossOf(values: (p: QuadParam) => ArrayLike<number>): number {
    let s = 0;
    for (const p of this.params) {
      const v = values(p);
      for (let i = 0; i < v.length; i++) s += 0.5 * p.a[i] * (v[i] - p.c[i]) ** 2;
    }
    return s;
  }

  loss(): number {
    return this.lossOf((p) => p.tensor.data() as Float32Array);
  }

  /** ∇L(θ), concatenated over the tensors. */
  gradient(): Float64Array {
    const out: number[] = [];
    for (const p of this.params) {
      const w = p.tensor.data() as Float32Array;
      for (let i = 0; i < w.length; i++) out.push(p.a[i] * (w[i] - p.c[i]));
    }
    return Float64Array.from(out);
  }

  /** The direction z(seed) of every tensor, concatenated (probe or update rounding). */
  direction(seed: number | bigint, dir: ZoDirection | undefined, purpose: 'probe' | 'update'): Float64Array {
    const out: number[] = [];
    for (const p of this.params) {
      const z = Tensor.zeros([p.tensor.size], 'f32');
      perturbSync(z, 1, dirOpts(seed, p.id, dir, purpose));
      out.push(...(z.data() as Float32Array));
      z.dispose();
    }
    return Float64Array.from(out);
  }

  private perturbedLoss(seed: number | bigint, eps: number, dir: ZoDirection | undefined): number {
    return this.lossOf((p) => {
      const copy = Tensor.fromArray(p.tensor.data() as Float32Array, [p.tensor.size]);
      perturbSync(copy, eps, dirOpts(seed, p.id, dir, 'probe'));
      const v = Float64Array.from(copy.data() as Float32Array);
      copy.dispose();
      return v;
    });
  }

  async zoProbe(_batch: unknown, opts: { seed: number | bigint; eps: number; direction?: ZoDirection }): Promise<{ plus: ForwardResult; minus: ForwardResult }> {
    this.probes++;
    const r = (loss: number): ForwardResult => ({ loss, count: 1, logprobs: [], logits: [] });
    return { plus: r(this.perturbedLoss(opts.seed, opts.eps, opts.direction)), minus: r(this.perturbedLoss(opts.seed, -opts.eps, opts.direction)) };
  }

  async zoUpdate(opts: { seed: number | bigint; scale: number; direction?: ZoDirection; decay?: number }): Promise<void> {
    for (const p of this.params) {
      if (opts.decay && p.decay) {
        const w = p.tensor.data() as Float32Array;
        for (let i = 0; i < w.length; i++) w[i] = Math.fround(w[i] * Math.fround(1 - opts.decay));
      }
      perturbSync(p.tensor, -opts.scale, dirOpts(opts.seed, p.id, opts.direction, 'update'));
    }
  }

  trainable(): TrainableInfo[] {
    return this.params.map((p) => ({ name: p.name, id: p.id, numel: p.tensor.size, scheme: 'fp32', decay: p.decay }));
  }

  trainableTensors() {
    return this.params.map((p) => ({ name: p.name, id: p.id, tensor: p.tensor }));
  }

  /** All weights as bytes (for bit-exact comparisons). */
  bytes(): Buffer {
    return Buffer.concat(this.params.map((p) => Buffer.from((p.tensor.data() as Float32Array).slice().buffer)));
  }

  dispose(): void {
    this.params.forEach((p) => p.tensor.dispose());
  }
}
