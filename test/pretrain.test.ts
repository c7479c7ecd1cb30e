/** Pretraining (lib/fo/pretrain.ts) and `zotune pretrain`: a tiny fresh model on part of Moby Dick. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LlamaModel, LlamaTokenizer } from '../lib';
import { pretrain, randomInit, streamLoss } from '../lib/fo/pretrain';
import { builtinText } from '../lib/cli/pretrain';
import { BYTE_VOCAB, writeByteTokenizer } from '../lib/model/byte-tokenizer';
import { modelDir } from './helpers/models';
import { root, run, cleanEnv } from './helpers/spawn';

const micro = modelDir('micro-llama');
const maybe = micro ? test : test.skip;
const cli = path.join(root, 'dist', 'cli', 'main.js');
const zotune = (args: string[]) => run(process.execPath, [cli, ...args], { env: cleanEnv() });

/** 2 layers, hidden 64, GQA 4/2 heads: the micro-llama shape, with its tokenizer. */
const tinyConfig = {
  hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16,
  vocab_size: 4096, max_position_embeddings: 256, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
  bos_token_id: 4093, eos_token_id: 4094, initializer_range: 0.02,
};

let tmp: string;
beforeAll(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-pretrain-'))));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

maybe('random init: seeded normal(0, initializer_range) matrices, norms 1, reproducible', async () => {
  const a = await randomInit(path.join(tmp, 'a'), { config: tinyConfig, tokenizerDir: micro!, seed: 7 });
  const b = await randomInit(path.join(tmp, 'b'), { config: tinyConfig, tokenizerDir: micro!, seed: 7 });
  const c = await randomInit(path.join(tmp, 'c'), { config: tinyConfig, tokenizerDir: micro!, seed: 8 });
  try {
    const q = a.tensor('model.layers.1.self_attn.q_proj.weight').data() as Float32Array;
    expect(b.tensor('model.layers.1.self_attn.q_proj.weight').data()).toEqual(q);
    expect(c.tensor('model.layers.1.self_attn.q_proj.weight').data()).not.toEqual(q);
    let s = 0, s2 = 0;
    for (const v of q) (s += v), (s2 += v * v);
    expect(Math.abs(s / q.length)).toBeLessThan(0.002);
    expect(Math.sqrt(s2 / q.length)).toBeCloseTo(0.02, 3);
    expect([...(a.tensor('model.norm.weight').data() as Float32Array)].every((v) => v === 1)).toBe(true);
    // Different tensors use different streams.
    expect(a.tensor('model.layers.0.self_attn.q_proj.weight').data()).not.toEqual(q);
    expect(fs.existsSync(path.join(tmp, 'a', 'tokenizer.json'))).toBe(true);
  } finally {
    [a, b, c].forEach((m) => m.dispose());
  }
});

maybe('a tiny fresh model on Moby Dick: validation loss falls at every checkpoint; the saved folder reloads with the same loss', async () => {
  const out = path.join(tmp, 'run');
  const model = await randomInit(path.join(out, 'model'), { config: tinyConfig, tokenizerDir: micro!, seed: 1 });
  // The first ~120k characters keep the test short (tokenizing and validating the whole book takes longer).
  const ids = LlamaTokenizer.load(micro!).encode(builtinText('moby-dick').slice(0, 120_000), { addSpecialTokens: false });
  let r;
  try {
    r = await pretrain(model, { ids, out, steps: 60, batch: 8, seqLen: 64, lr: 3e-3, warmup: 5, evalEvery: 15, seed: 3 });
  } finally {
    model.dispose();
  }
  expect(r.checkpoints.map((c) => c.step)).toEqual([0, 15, 30, 45, 60]);
  const val = r.checkpoints.map((c) => c.valLoss);
  expect(val[0]).toBeGreaterThan(Math.log(4096) - 0.1); // a random init is near uniform
  for (let i = 1; i < val.length; i++) expect(val[i]).toBeLessThan(val[i - 1]);
  expect(val[val.length - 1]).toBeLessThan(val[0] - 1.5);
  const lines = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  expect(lines.map((l) => l.valLoss)).toEqual(val);
  expect(lines[4].tokensPerSec).toBeGreaterThan(0);
  expect(fs.readdirSync(out).sort()).toEqual(['metrics.jsonl', 'model']); // no temporary folders left behind

  const reloaded = await LlamaModel.load(r.modelDir);
  try {
    const valIds = Int32Array.from(ids).subarray(ids.length - r.valTokens);
    expect(await streamLoss(reloaded, valIds, 64)).toBeCloseTo(val[val.length - 1], 6);
  } finally {
    reloaded.dispose();
  }
});

test('zotune pretrain: usage mistakes exit with status 2', () => {
  const cases: [string[], RegExp][] = [
    [['pretrain', '--out', tmp], /missing required option --text/],
    [['pretrain', '--text', 'moby-dick', '--out', tmp], /either --init <dir> or --config/],
    [['pretrain', '--text', 'moby-dick', '--out', tmp, '--init', 'x', '--config', 'y.json'], /either --init <dir> or --config/],
    [['pretrain', '--text', 'moby-dick', '--out', tmp, '--config', 'y.json'], /--config needs --tokenizer/],
    [['pretrain', '--text', 'moby-dick', '--out', tmp, '--init', 'x', '--steps', 'many'], /--steps must be an integer >= 1/],
    [['pretrain', '--text', 'moby-dick', '--out', tmp, '--init', 'x', '--lr=-1'], /--lr must be a number >= 0/],
    [['pretrain', '--frobnicate'], /unknown option '--frobnicate'/],
  ];
  for (const [args, msg] of cases) {
    const r = zotune(args);
    expect({ args, status: r.status }).toEqual({ args, status: 2 });
    expect(r.stderr).toMatch(msg);
  }
  expect(zotune(['pretrain', '--help'])).toMatchObject({ status: 0, stdout: expect.stringContaining('Usage: zotune pretrain') });
});

test('the generated byte-level tokenizer round-trips any text; zotune pretrain --tokenizer bytes needs no checkpoint', () => {
  const tokDir = path.join(tmp, 'bytes-tok');
  writeByteTokenizer(tokDir);
  const tok = LlamaTokenizer.load(tokDir);
  const s = 'Call me Ishmael.\n  Héllo wörld — 日本\t!';
  const ids = tok.encode(s);
  expect(ids[0]).toBe(256);
  expect(ids.length).toBe(1 + Buffer.byteLength(s));
  expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(s);

  const text = path.join(tmp, 'corpus.txt');
  fs.writeFileSync(text, 'It was the best of times, it was the worst of times. '.repeat(200));
  const cfg = path.join(tmp, 'bytes-config.json');
  fs.writeFileSync(cfg, JSON.stringify({ ...tinyConfig, vocab_size: 4096, bos_token_id: 1, eos_token_id: 2 }));
  const out = path.join(tmp, 'bytes-run');
  const r = zotune(['pretrain', '--text', text, '--config', cfg, '--tokenizer', 'bytes', '--out', out, '--steps', '4', '--batch', '2', '--seq-len', '32', '--eval-every', '2', '--json']);
  expect(r.status).toBe(0);
  const config = JSON.parse(fs.readFileSync(path.join(out, 'model', 'config.json'), 'utf8'));
  expect([config.vocab_size, config.bos_token_id, config.eos_token_id]).toEqual([BYTE_VOCAB, 256, 257]); // the tokenizer's, not the file's
  const vals = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).valLoss);
  expect(vals.length).toBe(3);
  expect(vals[2]).toBeLessThan(vals[0]);
});
