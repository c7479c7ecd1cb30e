/**
 * Bad inputs end in coded errors, never crashes: seeded fuzzing of the safetensors header and data
 * offsets (on copies of micro-llama in a temp folder) against the reader and LlamaModel.load,
 * sharded index files, unsupported architectures, token ids out of range and over-long sequences.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LlamaModel, LlamaTokenizer, ModelWeights, SafetensorsFile, ZotuneError, memory } from '../lib';
import { modelDir } from './helpers/models';
import { prng } from './helpers/reference';
import { root, run } from './helpers/spawn';
import { settledLive } from './helpers/memory';

const micro = modelDir('micro-llama');
const maybe = micro ? test : test.skip;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-bad-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const code = (c: string) => expect.objectContaining({ code: c });

/** A copy of micro-llama's folder (model.safetensors replaced by `weights` when given). */
function copyModel(name: string, weights?: Buffer): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d, { recursive: true });
  for (const f of fs.readdirSync(micro!)) if (f !== 'golden.json' && f !== 'README.md') fs.copyFileSync(path.join(micro!, f), path.join(d, f));
  if (weights) fs.writeFileSync(path.join(d, 'model.safetensors'), weights);
  return d;
}

type Header = Record<string, { dtype: unknown; shape: unknown; data_offsets: unknown } | Record<string, string>>;

function splitFile(buf: Buffer): { header: Header; data: Buffer } {
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString('utf8')), data: buf.subarray(8 + n) };
}

function joinFile(headerText: string, data: Buffer): Buffer {
  const h = Buffer.from(headerText, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

/**
 * One seeded mutation of a safetensors file: what it did (for failure messages) and the bytes.
 * Covers truncation, random header bytes, the header length, data_offsets (overlaps, holes,
 * out of bounds, reversed, non-integers), dtype strings, shapes, and the header's JSON structure.
 */
function mutate(src: Buffer, rand: () => number, kind: number): { what: string; bytes: Buffer } {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const int = (n: number) => Math.floor(rand() * n);
  const n = Number(src.readBigUInt64LE(0));
  const { header, data } = splitFile(src);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const entry = () => header[pick(names)] as { dtype: unknown; shape: unknown; data_offsets: unknown };
  switch (kind) {
    case 0: {
      const at = int(src.length);
      return { what: `truncate at ${at}`, bytes: src.subarray(0, at) };
    }
    case 1: {
      const b = Buffer.from(src);
      const k = 1 + int(8), at: number[] = [];
      for (let i = 0; i < k; i++) {
        const p = 8 + int(n);
        at.push(p);
        b[p] = int(256);
      }
      return { what: `random header bytes at ${at.join(',')}`, bytes: b };
    }
    case 2: {
      const b = Buffer.from(src);
      const len = pick([0n, 1n, 2n, BigInt(n - 1), BigInt(n + 1), BigInt(src.length - 8), BigInt(src.length - 7), 2n ** 32n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, BigInt(int(2 ** 31))]);
      b.writeBigUInt64LE(len);
      return { what: `header length ${len}`, bytes: b };
    }
    case 3: {
      const e = entry(), [b0, e0] = e.data_offsets as number[], other = header[pick(names)] as { data_offsets: number[] };
      const choices: [string, unknown][] = [
        ['overlap another tensor', [other.data_offsets[0], other.data_offsets[0] + (e0 - b0)]],
        ['shifted by 4', [b0 + 4, e0 + 4]],
        ['reversed', [e0, b0]],
        ['past the end', [data.length, data.length + (e0 - b0)]],
        ['huge', [2 ** 53, 2 ** 53 + (e0 - b0)]],
        ['beyond safe integers', [1e20, 1e20 + 4]],
        ['negative', [-(e0 - b0), 0]],
        ['fractional', [b0 + 0.5, e0 + 0.5]],
        ['strings', [String(b0), String(e0)]],
        ['three numbers', [b0, e0, e0]],
        ['missing', undefined],
        ['null', null],
        ['empty range', [b0, b0]],
      ];
      const [w, v] = pick(choices);
      e.data_offsets = v;
      return { what: `data_offsets ${w}`, bytes: joinFile(JSON.stringify(header), data) };
    }
    case 4: {
      const e = entry();
      const v = pick(['F16', 'BF16', 'I32', 'U32', 'F64', 'I8', 'BOOL', 'F8_E4M3', 'F33', 'f32', '', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 5, null, ['F32']]);
      e.dtype = v;
      return { what: `dtype ${JSON.stringify(v)}`, bytes: joinFile(JSON.stringify(header), data) };
    }
    case 5: {
      const e = entry(), shape = [...(e.shape as number[])];
      const choices: [string, unknown][] = [
        ['first dim + 1', [shape[0] + 1, ...shape.slice(1)]],
        ['first dim - 1', [shape[0] - 1, ...shape.slice(1)]],
        ['dims swapped', [...shape].reverse()],
        ['flattened', [shape.reduce((a, b) => a * b, 1)]],
        ['extra unit dim', [1, ...shape]],
        ['zero dim', [0, ...shape.slice(1)]],
        ['negative dim', [-shape[0], ...shape.slice(1)]],
        ['huge dims', [2 ** 40, 2 ** 40]],
        ['fractional', [shape[0] / 3, ...shape.slice(1)]],
        ['string dim', [String(shape[0]), ...shape.slice(1)]],
        ['nested', [shape]],
        ['not an array', 7],
        ['empty', []],
      ];
      const [w, v] = pick(choices);
      e.shape = v;
      return { what: `shape ${w}`, bytes: joinFile(JSON.stringify(header), data) };
    }
    case 6: {
      const text = JSON.stringify(header);
      const choices: [string, string][] = [
        ['a tensor removed', JSON.stringify(Object.fromEntries(Object.entries(header).filter(([k]) => k !== names[0])))],
        ['duplicate key', text.replace(/^\{/, `{${JSON.stringify(names[1])}:${JSON.stringify(header[names[0]])},`)],
        ['__proto__ entry', text.replace(/^\{/, '{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},')],
        ['entry is an array', text.replace(/^\{/, '{"x":[1,2],')],
        ['metadata not strings', text.replace(/"__metadata__":\{[^}]*\}/, '"__metadata__":{"format":7}')],
        ['not an object', '[]'],
        ['empty object', '{}'],
        ['null', 'null'],
        ['truncated JSON', text.slice(0, int(text.length))],
        ['trailing garbage', text + '\u0000\u0000'],
        ['UTF-16 BOM', '\ufeff' + text],
      ];
      const [w, t] = pick(choices);
      return { what: `header ${w}`, bytes: joinFile(t, data) };
    }
    default: {
      const b = Buffer.from(src);
      for (let i = 0; i < 16; i++) b[8 + n + int(data.length)] = int(256);
      return { what: 'random data bytes', bytes: b };
    }
  }
}

const FILE_CODES = ['ZOTUNE_BAD_FILE', 'ZOTUNE_DTYPE', 'ZOTUNE_SHAPE_MISMATCH'];

describe('fuzzing micro-llama safetensors', () => {
  const KINDS = 8;

  maybe('the reader: every mutation opens and reads consistently or fails with a coded error', () => {
    const src = fs.readFileSync(path.join(micro!, 'model.safetensors'));
    const rand = prng(20261123);
    const file = path.join(tmp, 'fuzz.safetensors');
    const seen = new Map<string, number>();
    for (let trial = 0; trial < 800; trial++) {
      const { what, bytes } = mutate(src, rand, trial % KINDS);
      fs.writeFileSync(file, bytes);
      try {
        using st = SafetensorsFile.open(file);
        for (const name of st.names()) {
          const t = st.info(name);
          const bytesOf = t.shape.reduce((a, b) => a * b, 1) * { F32: 4, F16: 2, BF16: 2 }[t.dtype as 'F32'];
          if (t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16') {
            expect([what, t.end - t.begin]).toEqual([what, bytesOf]);
            st.readF32(name).dispose();
          }
          expect([what, t.begin >= 8 && t.end <= bytes.length]).toEqual([what, true]);
        }
        seen.set('ok', (seen.get('ok') ?? 0) + 1);
      } catch (err) {
        if (!(err instanceof ZotuneError) || !FILE_CODES.includes(err.code)) throw new Error(`${what}: ${String(err)}`);
        seen.set(err.code, (seen.get(err.code) ?? 0) + 1);
      }
    }
    console.log(`reader fuzz outcomes: ${JSON.stringify(Object.fromEntries(seen))}`);
    expect(seen.get('ZOTUNE_BAD_FILE')).toBeGreaterThan(400);
    expect(seen.get('ok')).toBeGreaterThan(50); // data-only mutations and harmless dtype/shape swaps
  });

  maybe('LlamaModel.load: every mutation loads or fails with a coded error, and frees what it allocated', async () => {
    const src = fs.readFileSync(path.join(micro!, 'model.safetensors'));
    const dir = copyModel('fuzz-load');
    const rand = prng(4);
    const seen = new Map<string, number>();
    const engineBytes = async () => {
      const live = await settledLive();
      return [live.weights ?? 0, live.workspace ?? 0];
    };
    const before = await engineBytes();
    const SCHEMES = ['fp32', 'int8', 'int4-g32'] as const; // f32 reads, and quantize-at-load (which rejects NaN/Inf data)
    for (let trial = 0; trial < 240; trial++) {
      const { what, bytes } = mutate(src, rand, trial % KINDS);
      const weights = SCHEMES[trial % SCHEMES.length];
      fs.writeFileSync(path.join(dir, 'model.safetensors'), bytes);
      try {
        const m = await LlamaModel.load(dir, { weights });
        // a load that succeeds (data bytes changed, or an equivalent header) still runs
        const r = await m.forward([[4093, 1, 2]]);
        expect(r.count).toBe(2);
        m.dispose();
        seen.set('ok', (seen.get('ok') ?? 0) + 1);
      } catch (err) {
        const allowed = [...FILE_CODES, 'ZOTUNE_IO', ...(weights === 'fp32' ? [] : ['ZOTUNE_NONFINITE'])];
        if (!(err instanceof ZotuneError) || !allowed.includes(err.code)) throw new Error(`${what} (${weights}): ${String(err)}`);
        seen.set(err.code, (seen.get(err.code) ?? 0) + 1);
      }
    }
    // failed loads freed the tensors (and f32 staging copies) they had made (counts settled: garbage
    // of earlier tests is collected on both sides)
    expect(await engineBytes()).toEqual(before);
    expect(seen.get('ZOTUNE_BAD_FILE')).toBeGreaterThan(100);
    expect(seen.get('ok')).toBeGreaterThan(10);
    console.log(`LlamaModel.load fuzz outcomes: ${JSON.stringify(Object.fromEntries(seen))}`);
  });

  maybe('a dtype that keeps the byte size (F32 -> I32), a shape that keeps numel, or NaN data under an integer scheme is refused by the loader', async () => {
    const src = fs.readFileSync(path.join(micro!, 'model.safetensors'));
    const { header, data } = splitFile(src);
    (header['model.layers.0.self_attn.q_proj.weight'] as { dtype: string }).dtype = 'I32';
    await expect(LlamaModel.load(copyModel('i32', joinFile(JSON.stringify(header), data)))).rejects.toThrow(code('ZOTUNE_DTYPE'));
    const h2 = splitFile(src).header;
    (h2['model.layers.0.mlp.up_proj.weight'] as { shape: number[] }).shape = [64, 172];
    await expect(LlamaModel.load(copyModel('transposed', joinFile(JSON.stringify(h2), data)))).rejects.toThrow(/is \[64, 172\], config.json implies \[172, 64\]/);
 
    // a NaN in the data: fp32 loads it as is; integer grids cannot hold it (coded, not a crash)
    const h3 = splitFile(src).header, nanData = Buffer.from(data);
    nanData.writeFloatLE(NaN, (h3['model.layers.1.mlp.down_proj.weight'] as { data_offsets: number[] }).data_offsets[0] + 40);
    const nanDir = copyModel('nan', joinFile(JSON.stringify(h3), nanData));
    const m = await LlamaModel.load(nanDir);
    m.dispose();
    await expect(LlamaModel.load(nanDir, { weights: 'int8' })).rejects.toThrow(code('ZOTUNE_NONFINITE'));
  });
});

describe('the CLI on fuzzed checkpoints', () => {
  maybe('inspect and logits exit 0 or 1 with `code: message`, never a stack trace or a signal', () => {
    const src = fs.readFileSync(path.join(micro!, 'model.safetensors'));
    const dir = copyModel('fuzz-cli');
    const rand = prng(99);
    const cli = path.join(root, 'dist', 'cli', 'main.js');
    for (let trial = 0; trial < 16; trial++) {
      const { what, bytes } = mutate(src, rand, trial % 8);
      fs.writeFileSync(path.join(dir, 'model.safetensors'), bytes);
      for (const args of [['inspect', '--model', dir], ['logits', '--model', dir, '--ids', '4093,1', '--weights', 'int8']]) {
        const r = run(process.execPath, [cli, ...args]);
        expect([what, args[0], r.signal, r.status === 0 || r.status === 1]).toEqual([what, args[0], null, true]);
        if (r.status === 1 && r.stderr) expect([what, r.stderr]).toEqual([what, expect.stringMatching(new RegExp(`^zotune ${args[0]}: ZOTUNE_[A-Z_]+: [^\\n]+\\n$`))]);
        if (r.status === 1 && !r.stderr) expect(r.stdout).toContain('problems:'); // inspect found missing/extra tensors
      }
    }
  });
});

describe('missing files and sharded indexes', () => {
  maybe('missing config, weights or tokenizer are ZOTUNE_IO errors naming the file', async () => {
    for (const f of ['config.json', 'model.safetensors']) {
      const d = copyModel(`no-${f}`);
      fs.rmSync(path.join(d, f));
      await expect(LlamaModel.load(d)).rejects.toThrow(code('ZOTUNE_IO'));
    }
    await expect(LlamaModel.load(path.join(tmp, 'does-not-exist'))).rejects.toThrow(code('ZOTUNE_IO'));
    const d = copyModel('bad-tokenizer');
    fs.rmSync(path.join(d, 'tokenizer.json'));
    expect(() => LlamaTokenizer.load(d)).toThrow(code('ZOTUNE_IO'));
    fs.writeFileSync(path.join(d, 'tokenizer.model'), 'sentencepiece'); // a slow-tokenizer-only checkpoint: says what to do
    expect(() => LlamaTokenizer.load(d)).toThrow(expect.objectContaining({ code: 'ZOTUNE_UNSUPPORTED', message: expect.stringContaining('save_pretrained') }));
    const text = fs.readFileSync(path.join(micro!, 'tokenizer.json'), 'utf8');
    for (const broken of [text.slice(0, text.length >> 1), '[]', '{"model": 3}']) {
      fs.writeFileSync(path.join(d, 'tokenizer.json'), broken);
      expect(() => LlamaTokenizer.load(d)).toThrow(code('ZOTUNE_BAD_FILE'));
    }
  });

  maybe('a model.safetensors that is a folder, empty or unreadable is a coded error', async () => {
    const d = copyModel('dir-weights');
    fs.rmSync(path.join(d, 'model.safetensors'));
    fs.mkdirSync(path.join(d, 'model.safetensors'));
    await expect(LlamaModel.load(d)).rejects.toThrow(code('ZOTUNE_IO'));
    fs.rmdirSync(path.join(d, 'model.safetensors'));
    fs.writeFileSync(path.join(d, 'model.safetensors'), '');
    await expect(LlamaModel.load(d)).rejects.toThrow(code('ZOTUNE_BAD_FILE'));
  });

  maybe('sharded: weight maps naming folders, missing shards, non-strings, wrong owners or omitted tensors are coded errors', () => {
    const d = path.join(tmp, 'sharded');
    fs.mkdirSync(path.join(d, 'sub'), { recursive: true });
    fs.copyFileSync(path.join(micro!, 'model.safetensors'), path.join(d, 'shard-1.safetensors'));
    const names = Object.keys(splitFile(fs.readFileSync(path.join(micro!, 'model.safetensors'))).header).filter((k) => k !== '__metadata__');
    const good = Object.fromEntries(names.map((n) => [n, 'shard-1.safetensors']));
    const index = (weightMap: unknown) => fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    index(good);
    expect(ModelWeights.open(d).names().length).toBe(names.length);
    const cases: [unknown, string][] = [
      [{ ...good, [names[0]]: '..' }, 'ZOTUNE_BAD_FILE'],
      [{ ...good, [names[0]]: '.' }, 'ZOTUNE_BAD_FILE'],
      [{ ...good, [names[0]]: 'sub' }, 'ZOTUNE_IO'],
      [{ ...good, [names[0]]: '' }, 'ZOTUNE_BAD_FILE'],
      [{ ...good, [names[0]]: 'shard-2.safetensors' }, 'ZOTUNE_IO'],
      [{ ...good, [names[0]]: '/etc/passwd' }, 'ZOTUNE_BAD_FILE'],
      [{ ...good, [names[0]]: 7 }, 'ZOTUNE_BAD_FILE'],
      [{ ...good, [names[0]]: null }, 'ZOTUNE_BAD_FILE'],
      [{ ...good, 'not.a.tensor': 'shard-1.safetensors' }, 'ZOTUNE_BAD_FILE'],
      [Object.fromEntries(names.slice(1).map((n) => [n, 'shard-1.safetensors'])), 'ZOTUNE_BAD_FILE'], // a shard tensor the map omits
      [[1, 2], 'ZOTUNE_BAD_FILE'],
      ['weights', 'ZOTUNE_BAD_FILE'],
    ];
    for (const [map, c] of cases) {
      index(map);
      let got: unknown;
      try {
        ModelWeights.open(d).close();
      } catch (err) {
        got = err;
      }
      expect([map, got instanceof ZotuneError ? got.code : String(got)]).toEqual([map, c]);
    }
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), '{"weight_map": ');
    expect(() => ModelWeights.open(d)).toThrow(code('ZOTUNE_BAD_FILE'));
  });
});

describe('unsupported architectures', () => {
  maybe('config.json naming another architecture or model_type is ZOTUNE_UNSUPPORTED listing what is supported', async () => {
    const cfg = JSON.parse(fs.readFileSync(path.join(micro!, 'config.json'), 'utf8'));
    const d = copyModel('arch');
    const variants: [Record<string, unknown>, RegExp][] = [
      [{ architectures: ['MistralForCausalLM'], model_type: 'mistral' }, /architectures \["MistralForCausalLM"\] is not supported/],
      [{ architectures: ['GPT2LMHeadModel'], model_type: 'gpt2' }, /GPT2LMHeadModel/],
      [{ model_type: 'qwen2' }, /model_type "qwen2" is not supported/],
      [{ architectures: ['LlamaForCausalLM', 'LlamaForSequenceClassification'] }, /is not supported/],
      [{ model_type: undefined }, /model_type undefined is not supported/],
      [{ hidden_act: 'gelu' }, /hidden_act "gelu"/],
      [{ attention_bias: true }, /attention_bias/],
      [{ rope_scaling: { type: 'yarn', factor: 4 } }, /rope_scaling type "yarn"/],
    ];
    for (const [change, why] of variants) {
      fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...cfg, ...change }));
      const err = await LlamaModel.load(d).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toEqual(code('ZOTUNE_UNSUPPORTED'));
      expect((err as Error).message).toMatch(why);
      expect((err as Error).message).toContain('Supported: LlamaForCausalLM (model_type "llama")');
    }
    fs.writeFileSync(path.join(d, 'config.json'), '{"model_type": "llama",');
    await expect(LlamaModel.load(d)).rejects.toThrow(code('ZOTUNE_BAD_FILE'));
  });
});

describe('token ids and sequence lengths', () => {
  let model: LlamaModel;
  beforeAll(async () => {
    if (micro) model = await LlamaModel.load(micro);
  });
  afterAll(() => model?.dispose());

  maybe('token ids outside the vocabulary (or not integers) are ZOTUNE_OUT_OF_RANGE in forward and generate', async () => {
    for (const bad of [-1, 4096, 2 ** 31, 1.5, NaN, Infinity]) {
      await expect(model.forward([[4093, bad]])).rejects.toThrow(code('ZOTUNE_OUT_OF_RANGE'));
      // explicit targets: -1 means "no target", anything else outside the vocabulary is refused
      if (bad !== -1) await expect(model.forward([[4093, 1]], { targets: [[bad, -1]] })).rejects.toThrow(code('ZOTUNE_OUT_OF_RANGE'));
      const gen = model.generate([4093, bad], { maxNewTokens: 2 });
      await expect(gen.next()).rejects.toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    }
    await expect(model.forward([Int32Array.from([4093, -5])])).rejects.toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    await expect(model.forward([[4093, 1]], { targets: [[-2, -1]] })).rejects.toThrow(code('ZOTUNE_OUT_OF_RANGE'));
  });

  maybe('sequences longer than the context are ZOTUNE_OUT_OF_RANGE (forward, KV cache, generate)', async () => {
    const long = new Array(513).fill(7);
    await expect(model.forward([long])).rejects.toThrow(/513 tokens, more than max_position_embeddings 512/);
    await expect(model.forward([[1], long])).rejects.toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    const cache = model.createCache(1, 8);
    try {
      await model.forward([new Array(6).fill(3)], { cache });
      await expect(model.forward([[1, 2, 3]], { cache })).rejects.toThrow(/6 cached \+ 3 new tokens exceed the cache capacity 8/);
    } finally {
      cache.dispose();
    }
    expect(() => model.createCache(1, 513)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    await expect(model.generate(new Array(512).fill(7)).next()).rejects.toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    // exactly the context is fine
    const r = await model.forward([new Array(512).fill(7)]);
    expect(r.count).toBe(511);
  });
});
