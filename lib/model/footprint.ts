/**
 * Bytes a LLaMA checkpoint's weights take in engine memory under each weight scheme, from config
 * shapes alone (no weights read). The per-tensor scheme is LlamaModel.resolveSchemes (linear
 * layers quantized; embeddings and norms fp32 unless overridden) and each quantized tensor is the
 * QTensor of schemeStorage(): codes (qtensor.ts rowBytes) + f32 scales (scaleCount); the loader's
 * int4 is symmetric, so no zero-points. The same sum as a loaded model's `weightBytes`.
 */
import { rowBytes, scaleCount } from '../qtensor';
import type { LlamaConfig } from './config';
import { expectedShape, llamaTensorNames, LlamaModel, schemeStorage, WEIGHT_SCHEMES, type LoadOptions, type WeightScheme } from './llama';

/** Bytes of one tensor of `shape` stored as `scheme`. */
export function tensorBytes(scheme: WeightScheme, shape: readonly number[]): number {
  const s = schemeStorage(scheme);
  const numel = shape.reduce((a, b) => a * b, 1);
  if (!s) return numel * 4;
  const [rows, cols] = shape.length === 2 ? shape : [1, numel];
  const scales = s.format === 'bf16' || s.format === 'fp16' ? 0 : scaleCount(s.granularity, rows, cols) * 4;
  return rows * rowBytes(s.format, cols) + scales;
}

export type TensorKind = 'embedding' | 'attention' | 'mlp' | 'norm' | 'lm_head';

export function tensorKind(name: string): TensorKind {
  if (name === 'model.embed_tokens.weight') return 'embedding';
  if (name === 'lm_head.weight') return 'lm_head';
  if (name.includes('.self_attn.')) return 'attention';
  if (name.includes('.mlp.')) return 'mlp';
  return 'norm';
}

export interface Footprint {
  scheme: WeightScheme;
  bytes: number;
  /** Bytes of the tensors the scheme quantizes (the rest is f32). */
  quantizedBytes: number;
  bitsPerParameter: number;
}

/** The tensor shapes config.json implies, in canonical order (a tied lm_head is the embedding). */
export function configShapes(c: LlamaConfig): Map<string, number[]> {
  return new Map(llamaTensorNames(c).map((name) => [name, expectedShape(c, name)]));
}

/** Weight bytes of a model loaded with `opts` (scheme and overrides). */
export function footprint(c: LlamaConfig, opts: LoadOptions = {}): Footprint {
  const schemes = LlamaModel.resolveSchemes(c, opts);
  let bytes = 0, quantized = 0, params = 0;
  for (const [name, shape] of configShapes(c)) {
    const sc = schemes.get(name)!;
    const b = tensorBytes(sc, shape);
    bytes += b;
    if (sc !== 'fp32') quantized += b;
    params += shape.reduce((a, x) => a * x, 1);
  }
  return { scheme: opts.weights ?? 'fp32', bytes, quantizedBytes: quantized, bitsPerParameter: params ? (8 * bytes) / params : 0 };
}

/** One footprint per scheme ('int4', an alias of int4-g128, left out). */
export function footprints(c: LlamaConfig): Footprint[] {
  return WEIGHT_SCHEMES.filter((s) => s !== 'int4').map((weights) => footprint(c, { weights }));
}
