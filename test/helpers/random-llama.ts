import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeSafetensors } from '../../lib';
import { llamaTensorNames } from '../../lib/model/llama';
import { parseLlamaConfig } from '../../lib/model/config';

export interface RandomLlamaShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  inter: number;
  vocab: number;
  maxPos?: number;
  tied?: boolean;
}

/** Deterministic uniform(-1, 1) numbers (mulberry32). */
export function uniforms(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

/**
 * Writes a Hugging Face LLaMA folder with random fp32 weights (norms 1 ± 0.3, matrices
 * ±scale/sqrt(fan-in)) and returns its path and the weights (float32 values) by name.
 */
export function writeRandomLlama(s: RandomLlamaShape, seed = 1, scale = 1.5): { dir: string; weights: Map<string, Float32Array> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-rand-llama-'));
  const cfg = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: s.hidden, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, intermediate_size: s.inter, vocab_size: s.vocab,
    max_position_embeddings: s.maxPos ?? 64, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: !!s.tied,
    hidden_act: 'silu', torch_dtype: 'float32',
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  const c = parseLlamaConfig(cfg, 'random');
  const u = uniforms(seed);
  const weights = new Map<string, Float32Array>();
  const entries = llamaTensorNames(c).map((name) => {
    const isNorm = name.endsWith('norm.weight');
    const D = c.hiddenSize, Q = c.numHeads * c.headDim, KV = c.numKvHeads * c.headDim, I = c.intermediateSize;
    let shape: number[];
    if (isNorm) shape = [D];
    else if (name.includes('embed') || name.startsWith('lm_head')) shape = [c.vocabSize, D];
    else if (/q_proj/.test(name)) shape = [Q, D];
    else if (/[kv]_proj/.test(name)) shape = [KV, D];
    else if (/o_proj/.test(name)) shape = [D, Q];
    else if (/down/.test(name)) shape = [D, I];
    else shape = [I, D];
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const amp = isNorm ? 0.3 : name.includes('embed') ? 1 : scale / Math.sqrt(shape[1]);
    for (let i = 0; i < n; i++) data[i] = (isNorm ? 1 : 0) + amp * u();
    weights.set(name, data);
    return { name, dtype: 'F32' as const, shape, data };
  });
  writeSafetensors(path.join(dir, 'model.safetensors'), entries);
  return { dir, weights };
}
