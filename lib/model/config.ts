/**
 * Hugging Face `config.json` / `generation_config.json` of LLaMA-family checkpoints, parsed and
 * validated. Anything the engine cannot run exactly is refused with ZOTUNE_UNSUPPORTED and a list
 * of what is supported; malformed files give ZOTUNE_BAD_FILE.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZotuneError } from '../errors';
import { readText } from '../io/files';

/** Meta's LLaMA 3.1 frequency-dependent RoPE scaling (HF rope_type "llama3"). */
export interface Llama3RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface LlamaConfig {
  architecture: 'LlamaForCausalLM';
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: Llama3RopeScaling | null;
  tieWordEmbeddings: boolean;
  bosTokenId: number | undefined;
  /** All end-of-sequence ids (HF allows one id or a list). */
  eosTokenIds: number[];
  padTokenId: number | undefined;
}

export const SUPPORTED_ARCHITECTURES = 'LlamaForCausalLM (model_type "llama"): SiLU MLP, no attention/MLP biases, RoPE with rope_scaling null or type "llama3", full rotary dimension, head_dim <= 512';

function bad(source: string, why: string): never {
  throw new ZotuneError('ZOTUNE_BAD_FILE', `${source}: ${why}`);
}

function unsupported(source: string, why: string): never {
  throw new ZotuneError('ZOTUNE_UNSUPPORTED', `${source}: ${why}. Supported: ${SUPPORTED_ARCHITECTURES}`);
}

type Json = Record<string, unknown>;

function posInt(j: Json, key: string, source: string, dflt?: number): number {
  const v = j[key] ?? dflt;
  if (v === undefined) bad(source, `missing "${key}"`);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) bad(source, `"${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function posNum(j: Json, key: string, source: string, dflt?: number): number {
  const v = j[key] ?? dflt;
  if (v === undefined) bad(source, `missing "${key}"`);
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) bad(source, `"${key}" must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function optId(j: Json, key: string, source: string): number | undefined {
  const v = j[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(source, `"${key}" must be a token id, got ${JSON.stringify(v)}`);
  return v;
}

function idList(j: Json, key: string, source: string): number[] {
  const v = j[key];
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const x of list) if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) bad(source, `"${key}" must be a token id or a list of ids, got ${JSON.stringify(v)}`);
  return list as number[];
}

function asObject(json: unknown, source: string): Json {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) bad(source, 'not a JSON object');
  return json as Json;
}

function parseRopeScaling(v: unknown, source: string): Llama3RopeScaling | null {
  if (v === undefined || v === null) return null;
  const r = asObject(v, `${source} rope_scaling`);
  const type = r.rope_type ?? r.type;
  if (type === 'default') return null;
  if (type !== 'llama3') unsupported(source, `rope_scaling type ${JSON.stringify(type)} is not supported`);
  const s: Llama3RopeScaling = {
    type: 'llama3',
    factor: posNum(r, 'factor', `${source} rope_scaling`),
    lowFreqFactor: posNum(r, 'low_freq_factor', `${source} rope_scaling`),
    highFreqFactor: posNum(r, 'high_freq_factor', `${source} rope_scaling`),
    originalMaxPositionEmbeddings: posInt(r, 'original_max_position_embeddings', `${source} rope_scaling`),
  };
  if (s.factor < 1) bad(source, 'rope_scaling.factor must be >= 1');
  if (!(s.highFreqFactor > s.lowFreqFactor)) bad(source, 'rope_scaling.high_freq_factor must exceed low_freq_factor');
  return s;
}

/** Validates a parsed config.json; `source` names it in errors. */
export function parseLlamaConfig(json: unknown, source = 'config.json'): LlamaConfig {
  const j = asObject(json, source);
  const archs = j.architectures;
  if (archs !== undefined && !(Array.isArray(archs) && archs.length === 1 && archs[0] === 'LlamaForCausalLM'))
    unsupported(source, `architectures ${JSON.stringify(archs)} is not supported`);
  if (j.model_type !== 'llama') unsupported(source, `model_type ${JSON.stringify(j.model_type)} is not supported`);
  const act = j.hidden_act ?? 'silu';
  if (act !== 'silu') unsupported(source, `hidden_act ${JSON.stringify(act)} is not supported`);
  if (j.attention_bias === true) unsupported(source, 'attention_bias true is not supported');
  if (j.mlp_bias === true) unsupported(source, 'mlp_bias true is not supported');
  if (j.partial_rotary_factor !== undefined && j.partial_rotary_factor !== 1) unsupported(source, 'partial_rotary_factor other than 1 is not supported');

  const hiddenSize = posInt(j, 'hidden_size', source);
  const numHeads = posInt(j, 'num_attention_heads', source);
  const numKvHeads = posInt(j, 'num_key_value_heads', source, numHeads);
  const headDim = posInt(j, 'head_dim', source, Number.isInteger(hiddenSize / numHeads) ? hiddenSize / numHeads : undefined);
  if (numHeads % numKvHeads !== 0) bad(source, `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  if (headDim % 2 !== 0) bad(source, `head_dim ${headDim} must be even for rotary embeddings`);
  if (headDim > 512) unsupported(source, `head_dim ${headDim} is above 512`);
  const vocabSize = posInt(j, 'vocab_size', source);
  if (vocabSize > 2 ** 31 - 1) bad(source, 'vocab_size is too large');
  const maxPositionEmbeddings = posInt(j, 'max_position_embeddings', source);
  if (maxPositionEmbeddings > 2 ** 31 - 1) bad(source, 'max_position_embeddings is too large');
  const cfg: LlamaConfig = {
    architecture: 'LlamaForCausalLM',
    hiddenSize,
    intermediateSize: posInt(j, 'intermediate_size', source),
    numLayers: posInt(j, 'num_hidden_layers', source),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    maxPositionEmbeddings,
    rmsNormEps: posNum(j, 'rms_norm_eps', source, 1e-6),
    ropeTheta: posNum(j, 'rope_theta', source, 10000),
    ropeScaling: parseRopeScaling(j.rope_scaling, source),
    tieWordEmbeddings: j.tie_word_embeddings === undefined ? false : j.tie_word_embeddings === true,
    bosTokenId: optId(j, 'bos_token_id', source),
    eosTokenIds: idList(j, 'eos_token_id', source),
    padTokenId: optId(j, 'pad_token_id', source),
  };
  if (typeof j.tie_word_embeddings !== 'undefined' && typeof j.tie_word_embeddings !== 'boolean') bad(source, '"tie_word_embeddings" must be a boolean');
  if (cfg.ropeTheta <= 1) bad(source, '"rope_theta" must exceed 1');
  for (const id of [cfg.bosTokenId, cfg.padTokenId, ...cfg.eosTokenIds])
    if (id !== undefined && id >= vocabSize) bad(source, `special token id ${id} is outside the vocabulary of ${vocabSize}`);
  return cfg;
}

function readJson(file: string): unknown {
  const text = readText(file);
  try {
    return JSON.parse(text);
  } catch (err) {
    bad(file, `not valid JSON (${(err as Error).message})`);
  }
}

export function loadLlamaConfig(dir: string): LlamaConfig {
  const file = path.join(dir, 'config.json');
  return parseLlamaConfig(readJson(file), file);
}

/** Decoding defaults of a checkpoint (HF GenerationConfig, with HF's defaults where absent). */
export interface GenerationConfig {
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  maxLength: number;
  maxNewTokens: number | undefined;
  bosTokenId: number | undefined;
  eosTokenIds: number[];
  padTokenId: number | undefined;
}

export function parseGenerationConfig(json: unknown, source = 'generation_config.json'): GenerationConfig {
  const j = asObject(json, source);
  const num = (key: string, dflt: number, ok: (v: number) => boolean, what: string): number => {
    const v = j[key] ?? dflt;
    if (typeof v !== 'number' || !ok(v)) bad(source, `"${key}" must be ${what}, got ${JSON.stringify(v)}`);
    return v;
  };
  const optCount = (key: string): number | undefined => (j[key] === undefined || j[key] === null ? undefined : posInt(j, key, source));
  if (j.do_sample !== undefined && typeof j.do_sample !== 'boolean') bad(source, '"do_sample" must be a boolean');
  return {
    doSample: j.do_sample === true,
    temperature: num('temperature', 1, (v) => Number.isFinite(v) && v >= 0, 'a number >= 0'),
    topK: num('top_k', 50, (v) => Number.isSafeInteger(v) && v >= 0, 'an integer >= 0'),
    topP: num('top_p', 1, (v) => v >= 0 && v <= 1, 'in [0, 1]'), // 0 keeps only the most likely token (HF): greedy
    maxLength: optCount('max_length') ?? 20, // HF's GenerationConfig default: prompt + new tokens
    maxNewTokens: optCount('max_new_tokens'),
    bosTokenId: optId(j, 'bos_token_id', source),
    eosTokenIds: idList(j, 'eos_token_id', source),
    padTokenId: optId(j, 'pad_token_id', source),
  };
}

/** generation_config.json if present, else HF's defaults with the model config's special ids. */
export function loadGenerationConfig(dir: string, model?: LlamaConfig): GenerationConfig {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) {
    const g = parseGenerationConfig({}, file);
    return { ...g, bosTokenId: model?.bosTokenId, eosTokenIds: model?.eosTokenIds ?? [], padTokenId: model?.padTokenId };
  }
  const g = parseGenerationConfig(readJson(file), file);
  if (model && g.eosTokenIds.length === 0) g.eosTokenIds = model.eosTokenIds;
  return g;
}

export { readJson as readJsonFile };
