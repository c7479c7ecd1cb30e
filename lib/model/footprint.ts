/**
 * Bytes a LLaMA checkpoint takes in engine memory under each weight scheme, from the shapes alone
 * (no weights read). Linear weights (q/k/v/o, gate/up/down, an untied lm_head) take the scheme's
 * QTensor storage (lib/qtensor.ts rowBytes / scaleCount, native/common/formats.h); embeddings and
 * norms stay float32, as LlamaModel.load keeps them unless overridden.
 */
import { rowBytes, scaleCount, type Granularity, type QFormat } from '../qtensor';
import type { LlamaConfig } from './config';
import { expectedShape, llamaTensorNames } from './llama';

/** The schemes `--weights` names ('int4' is int4-g128). */
export const FOOTPRINT_SCHEMES = ['fp32', 'bf16', 'int8', 'int4-g32', 'int4-g64', 'int4-g128', 'fp8-e4m3', 'fp8-e5m2', 'w8a8', 'w4a8'] as const;
export type FootprintScheme = (typeof FOOTPRINT_SCHEMES)[number];

/** How a scheme stores one linear weight: float32, or a QTensor format + scale granularity. */
export const SCHEME_STORAGE: Record<FootprintScheme, { format: 'f32' } | { format: QFormat; granularity: Granularity }> = {
  fp32: { format: 'f32' },
  bf16: { format: 'bf16', granularity: 'tensor' }, // no scales
  int8: { format: 'int8', granularity: 'channel' },
  'int4-g32': { format: 'int4', granularity: 32 },
  'int4-g64': { format: 'int4', granularity: 64 },
  'int4-g128': { format: 'int4', granularity: 128 },
  'fp8-e4m3': { format: 'fp8-e4m3', granularity: 'channel' },
  'fp8-e5m2': { format: 'fp8-e5m2', granularity: 'channel' },
  w8a8: { format: 'int8', granularity: 'channel' }, // activations are quantized on the fly
  w4a8: { format: 'int4', granularity: 128 },
};

/** Bytes of one [rows, cols] linear weight under `scheme` (codes + f32 scales; symmetric int4 has no zero-points). */
export function linearBytes(scheme: FootprintScheme, rows: number, cols: number): number {
  const s = SCHEME_STORAGE[scheme];
  if (s.format === 'f32') return rows * cols * 4;
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

/** Whether a tensor is a linear layer's weight (quantized by the scheme). */
export const isLinear = (name: string): boolean => /_proj\.weight$/.test(name) || name === 'lm_head.weight';

export interface Footprint {
  scheme: FootprintScheme;
  bytes: number;
  /** Bytes of the quantized linear weights alone. */
  linearBytes: number;
  bitsPerParameter: number;
}

/** Bytes per scheme for tensors of the given shapes (HF name -> [rows, cols] or [n]). */
export function footprints(shapes: Map<string, readonly number[]>): Footprint[] {
  let params = 0;
  for (const s of shapes.values()) params += s.reduce((a, b) => a * b, 1);
  return FOOTPRINT_SCHEMES.map((scheme) => {
    let bytes = 0, linear = 0;
    for (const [name, shape] of shapes) {
      const n = shape.reduce((a, b) => a * b, 1);
      if (isLinear(name) && shape.length === 2) {
        const b = linearBytes(scheme, shape[0], shape[1]);
        linear += b;
        bytes += b;
      } else {
        bytes += n * 4;
      }
    }
    return { scheme, bytes, linearBytes: linear, bitsPerParameter: params ? (8 * bytes) / params : 0 };
  });
}

/** The tensor shapes config.json implies, in canonical order (a tied lm_head is the embedding). */
export function configShapes(c: LlamaConfig): Map<string, number[]> {
  return new Map(llamaTensorNames(c).map((name) => [name, expectedShape(c, name)]));
}
