import fs from 'node:fs';
import path from 'node:path';
import { parseLlamaConfig, parseGenerationConfig, loadLlamaConfig, loadGenerationConfig, LlamaTokenizer } from '../lib';
import { modelDir } from './helpers/models';

const code = (c: string) => expect.objectContaining({ code: c });

const base = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 172,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-5,
  vocab_size: 4096,
  bos_token_id: 4093,
  eos_token_id: 4094,
};

describe('config.json', () => {
  test('a minimal LLaMA config gets HF defaults', () => {
    const c = parseLlamaConfig(base);
    expect(c).toMatchObject({ hiddenSize: 64, headDim: 16, numKvHeads: 2, ropeTheta: 10000, ropeScaling: null, tieWordEmbeddings: false, eosTokenIds: [4094], bosTokenId: 4093 });
    const noKv = parseLlamaConfig({ ...base, num_key_value_heads: undefined });
    expect(noKv.numKvHeads).toBe(4);
  });

  test('llama3 rope scaling and eos lists (LLaMA 3.1 style)', () => {
    const c = parseLlamaConfig({
      ...base,
      eos_token_id: [1, 2, 3],
      tie_word_embeddings: true,
      rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    });
    expect(c.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect(c.eosTokenIds).toEqual([1, 2, 3]);
    expect(c.tieWordEmbeddings).toBe(true);
  });

  test.each([
    [{ model_type: 'mistral' }, 'ZOTUNE_UNSUPPORTED'],
    [{ architectures: ['GPT2LMHeadModel'] }, 'ZOTUNE_UNSUPPORTED'],
    [{ hidden_act: 'gelu' }, 'ZOTUNE_UNSUPPORTED'],
    [{ attention_bias: true }, 'ZOTUNE_UNSUPPORTED'],
    [{ mlp_bias: true }, 'ZOTUNE_UNSUPPORTED'],
    [{ rope_scaling: { type: 'yarn', factor: 4 } }, 'ZOTUNE_UNSUPPORTED'],
    [{ rope_scaling: { type: 'linear', factor: 2 } }, 'ZOTUNE_UNSUPPORTED'],
    [{ partial_rotary_factor: 0.5 }, 'ZOTUNE_UNSUPPORTED'],
    [{ head_dim: 1024, hidden_size: 4096 }, 'ZOTUNE_UNSUPPORTED'],
    [{ hidden_size: -1 }, 'ZOTUNE_BAD_FILE'],
    [{ num_hidden_layers: 1.5 }, 'ZOTUNE_BAD_FILE'],
    [{ vocab_size: undefined }, 'ZOTUNE_BAD_FILE'],
    [{ num_key_value_heads: 3 }, 'ZOTUNE_BAD_FILE'],
    [{ head_dim: 15 }, 'ZOTUNE_BAD_FILE'],
    [{ eos_token_id: 5000 }, 'ZOTUNE_BAD_FILE'],
    [{ rms_norm_eps: 'small' }, 'ZOTUNE_BAD_FILE'],
    [{ rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 8192 } }, 'ZOTUNE_BAD_FILE'],
  ])('%j is refused with %s', (patch, c) => {
    expect(() => parseLlamaConfig({ ...base, ...patch })).toThrow(code(c));
  });

  test('unsupported architectures are named with the supported list', () => {
    expect(() => parseLlamaConfig({ ...base, model_type: 'qwen2' })).toThrow(/model_type "qwen2" is not supported\. Supported: LlamaForCausalLM/);
    expect(() => parseLlamaConfig([])).toThrow(code('ZOTUNE_BAD_FILE'));
  });

  test('generation_config.json: values and HF defaults', () => {
    expect(parseGenerationConfig({ do_sample: true, temperature: 0.6, top_p: 0.9, eos_token_id: [1, 2] })).toMatchObject({ doSample: true, temperature: 0.6, topK: 50, topP: 0.9, eosTokenIds: [1, 2] });
    expect(parseGenerationConfig({})).toMatchObject({ doSample: false, temperature: 1, topK: 50, topP: 1 });
    expect(parseGenerationConfig({})).toMatchObject({ maxLength: 20, maxNewTokens: undefined }); // HF's default length
    expect(parseGenerationConfig({ top_p: 0 }).topP).toBe(0); // HF: the most likely token only
    expect(() => parseGenerationConfig({ top_p: 1.5 })).toThrow(code('ZOTUNE_BAD_FILE'));
    expect(() => parseGenerationConfig({ temperature: -1 })).toThrow(code('ZOTUNE_BAD_FILE'));
  });

  test('missing folder gives ZOTUNE_IO', () => {
    expect(() => loadLlamaConfig('/nonexistent/zotune')).toThrow(code('ZOTUNE_IO'));
  });
});

describe.each(['micro-llama', 'tiny-llama'] as const)('%s files', (name) => {
  const dir = modelDir(name);
  const maybe = dir ? test : test.skip;

  maybe('config.json and generation_config.json load', () => {
    const c = loadLlamaConfig(dir!);
    expect(c.vocabSize).toBe(4096);
    expect(c.eosTokenIds).toEqual([4094]);
    expect(c.numHeads / c.numKvHeads).toBe(2);
    const g = loadGenerationConfig(dir!, c);
    expect(g).toMatchObject({ doSample: false, maxLength: 512, eosTokenIds: [4094], bosTokenId: 4093 });
  });

  maybe('the tokenizer reproduces the golden input_ids and decodes the golden continuations', () => {
    const tok = LlamaTokenizer.load(dir!);
    const golden = JSON.parse(fs.readFileSync(path.join(dir!, 'golden.json'), 'utf8'));
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.vocabSize]).toEqual([4093, 4094, 4095, 4096]);
    for (const p of golden.prompts) {
      const ids = tok.encode(p.text);
      expect(ids).toEqual(p.input_ids);
      expect(ids[0]).toBe(tok.bosTokenId);
      expect(tok.encode(p.text, { addSpecialTokens: false })).toEqual(p.input_ids.slice(1));
      expect(tok.decode(p.greedy.new_ids)).toBe(p.greedy.new_text);
      expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(p.text);
      expect(tok.decode([...p.input_ids, ...p.greedy.new_ids])).toBe(p.greedy.full_text);
    }
  });

  maybe('the Llama tokenizer classes add bos / eos by add_bos_token / add_eos_token, as transformers does', () => {
    const json = JSON.parse(fs.readFileSync(path.join(dir!, 'tokenizer.json'), 'utf8'));
    const cfg = JSON.parse(fs.readFileSync(path.join(dir!, 'tokenizer_config.json'), 'utf8'));
    const plain = new LlamaTokenizer(json, cfg).encode('Hello world', { addSpecialTokens: false });
    const llama = (over: object) => new LlamaTokenizer(json, { ...cfg, tokenizer_class: 'LlamaTokenizerFast', ...over });
    expect(llama({ add_bos_token: false }).encode('Hello world')).toEqual(plain);
    expect(llama({ add_eos_token: true }).encode('Hello world')).toEqual([4093, ...plain, 4094]);
    expect(llama({ add_bos_token: undefined, add_eos_token: undefined }).encode('Hello world')).toEqual([4093, ...plain]); // the class defaults
    expect(llama({ add_eos_token: true }).encode('Hello world', { addSpecialTokens: false })).toEqual(plain);
    expect(() => llama({ add_bos_token: 'yes' })).toThrow(code('ZOTUNE_BAD_FILE'));
  });

  maybe('streaming decode holds back split characters and ends with the full text', () => {
    const tok = LlamaTokenizer.load(dir!);
    const text = 'Ünïcödé — 日本語 🐋 whale';
    const ids = tok.encode(text, { addSpecialTokens: false });
    const d = tok.decoder();
    const parts = ids.map((id) => d.push(id));
    parts.push(d.flush());
    expect(parts.join('')).toBe(text);
    expect(parts.some((p) => p.includes('\uFFFD'))).toBe(false);
    // token by token over a long stream (prompt + continuation, repeated): exactly the full decode
    const golden = JSON.parse(fs.readFileSync(path.join(dir!, 'golden.json'), 'utf8'));
    const all = golden.prompts.flatMap((p: { input_ids: number[]; greedy: { new_ids: number[] } }) => [...p.input_ids, ...p.greedy.new_ids, ...ids]);
    const s = tok.decoder({ skipSpecialTokens: true });
    expect(all.map((id: number) => s.push(id)).join('') + s.flush()).toBe(tok.decode(all, { skipSpecialTokens: true }));
  });
});
