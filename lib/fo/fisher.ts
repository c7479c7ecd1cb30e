/**
 * Gradient statistics for mask building (SensZOQ, MaZO): the diagonal empirical Fisher
 *   F = (1/B) Σ_b (∇θ L_b)²
 * accumulated per parameter over calibration batches, L_b the mean loss of batch b (a batch of
 * one sequence gives the per-sample Fisher). Gradients of one batch live in a reused set of
 * tensors; the squares are added by one fused native pass per tensor.
 */
import { fail } from '../errors';
import { Tensor } from '../tensor';
import { native } from '../native/load';
import { LlamaModel, Sequence, llamaTensorNames } from '../model/llama';
import { GradOptions, lossAndGrad } from '../model/grad';

export type CalibrationBatch = readonly Sequence[] | { batch: readonly Sequence[]; opts?: Pick<GradOptions, 'targets' | 'lossMask' | 'attentionMask'> };

export interface FisherOptions extends Pick<GradOptions, 'recompute'> {
  /** Parameters (default: all). */
  params?: readonly string[];
  /** 'mean' (default) divides by the number of batches, 'sum' does not. */
  reduce?: 'mean' | 'sum';
}

/** Per-parameter accumulated squared gradients (f32 tensors, category "gradients"; caller disposes). */
export async function fisher(model: LlamaModel, batches: readonly CalibrationBatch[], opts: FisherOptions = {}): Promise<Map<string, Tensor>> {
  if (batches.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'fisher needs at least one calibration batch');
  const reduce = opts.reduce ?? 'mean';
  if (reduce !== 'mean' && reduce !== 'sum') fail('ZOTUNE_INVALID_ARGUMENT', `reduce must be 'mean' or 'sum', got ${String(reduce)}`);
  const names = [...(opts.params ?? llamaTensorNames(model.config))];
  const scale = reduce === 'mean' ? 1 / batches.length : 1;
  const out = new Map<string, Tensor>(), grads = new Map<string, Tensor>();
  try {
    for (const n of names) {
      out.set(n, Tensor.zeros(model.tensor(n).shape, 'f32', 'gradients'));
      grads.set(n, Tensor.zeros(model.tensor(n).shape, 'f32', 'gradients'));
    }
    for (const b of batches) {
      const { batch, opts: bo } = Array.isArray(b) ? { batch: b as readonly Sequence[], opts: {} } : (b as { batch: readonly Sequence[]; opts?: object });
      grads.forEach((g) => (g.data() as Float32Array).fill(0));
      await lossAndGrad(model, batch, { ...bo, params: names, into: grads, recompute: opts.recompute });
      for (const n of names) {
        const g = grads.get(n)!;
        await native().accumulateSquaresAsync(out.get(n)!.mem, g.mem, g.size, scale);
      }
    }
  } catch (err) {
    out.forEach((t) => t.dispose());
    throw err;
  } finally {
    grads.forEach((t) => t.dispose());
  }
  return out;
}
