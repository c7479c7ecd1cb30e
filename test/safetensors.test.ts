import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ModelWeights, SafetensorsFile, writeSafetensors, parseHeader } from '../lib/io/safetensors';
import { ZotuneError } from '../lib/errors';
import { modelDir } from './helpers/models';
import { prng } from './helpers/reference';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-st-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function bf16(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

describe('writer and reader round trip', () => {
  const a = Float32Array.from({ length: 35 }, (_, i) => i * 0.25 - 3);
  const b = Uint16Array.from([0x3c00, 0xc000, 0x0001, 0x7bff, 0x8000]); // f16: 1, -2, min subnormal, max, -0
  const c = Uint16Array.from([1.5, -0.125, 3e38, 1e-40].map(bf16));
  const file = path.join(tmp, 'rt.safetensors');
  writeSafetensors(file, [
    { name: 'a', dtype: 'F32', shape: [5, 7], data: a },
    { name: 'b', dtype: 'F16', shape: [5], data: b },
    { name: 'c', dtype: 'BF16', shape: [2, 2], data: c },
    { name: 'empty', dtype: 'F32', shape: [0, 3], data: new Float32Array(0) },
  ], { format: 'pt' });

  test('tensors, shapes and metadata come back', () => {
    using f = SafetensorsFile.open(file);
    expect(f.names().sort()).toEqual(['a', 'b', 'c', 'empty']);
    expect(f.metadata).toEqual({ format: 'pt' });
    expect(f.info('a').shape).toEqual([5, 7]);
    using ta = f.readF32('a');
    expect(Array.from(ta.data())).toEqual(Array.from(a));
    using tb = f.readF32('b');
    expect(Array.from(tb.data())).toEqual([1, -2, 2 ** -24, 65504, -0]);
    using tc = f.readF32('c');
    expect(Array.from(tc.data())).toEqual([1.5, -0.125, new Float32Array([new Float32Array(new Uint32Array([bf16(3e38) << 16]).buffer)[0]])[0], new Float32Array(new Uint32Array([bf16(1e-40) << 16]).buffer)[0]]);
    using te = f.readF32('empty');
    expect(te.size).toBe(0);
  });

  test('the data section is 8-byte aligned and the write is atomic (no temp file left)', () => {
    const n = Number(fs.readFileSync(file).readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    expect(fs.readdirSync(tmp).filter((x) => x.endsWith('.tmp'))).toEqual([]);
  });

  test('a failed write leaves an existing file untouched', () => {
    const before = fs.readFileSync(file);
    expect(() => writeSafetensors(file, [{ name: 'x', dtype: 'F32', shape: [3], data: new Float32Array(2) }])).toThrow(expect.objectContaining({ code: 'ZOTUNE_SHAPE_MISMATCH' }));
    expect(fs.readFileSync(file).equals(before)).toBe(true);
  });
});

describe('strict validation', () => {
  const header = (obj: unknown, dataBytes: number) => {
    const j = Buffer.from(JSON.stringify(obj));
    return { bytes: new Uint8Array(j), size: 8 + j.length + dataBytes };
  };
  const cases: [string, unknown, number, RegExp][] = [
    ['overlap', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12, /overlaps/],
    ['hole', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8, /hole/],
    ['trailing bytes', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 8, /after the last tensor/],
    ['size mismatch', { a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8, /needs 12/],
    ['beyond the file', { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8, /truncated/],
    ['unknown dtype', { a: { dtype: 'Q4', shape: [1], data_offsets: [0, 1] } }, 1, /unknown dtype/],
    ['negative offset', { a: { dtype: 'U8', shape: [1], data_offsets: [-1, 0] } }, 1, /data_offsets/],
    ['fractional shape', { a: { dtype: 'U8', shape: [1.5], data_offsets: [0, 1] } }, 1, /shape/],
    ['bad metadata', { __metadata__: { a: 1 } }, 0, /string/],
    ['overflowing shape with a zero', { a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40, 0], data_offsets: [0, 0] } }, 0, /overflows/],
    ['not an object', [1, 2], 0, /not a JSON object/],
  ];
  test.each(cases)('%s', (_, obj, dataBytes, why) => {
    const { bytes, size } = header(obj, dataBytes);
    expect(() => parseHeader('f', bytes, size)).toThrow(why);
  });

  test('a tensor named twice in the header is refused (JSON.parse would keep only the last)', () => {
    const entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
    for (const [text, ok] of [[`{"a":${entry},"a":${entry}}`, false], [`{"a\\"b":${entry},"__metadata__":{"a":"x","k":"{\\"a\\":1}"}}`, true]] as const) {
      const bytes = new Uint8Array(Buffer.from(text));
      if (ok) expect(parseHeader('f', bytes, 8 + bytes.length + 4).tensors.map((t) => t.name)).toEqual(['a"b']);
      else expect(() => parseHeader('f', bytes, 8 + bytes.length + 4)).toThrow(/'a' appears twice/);
    }
  });

  test('missing, truncated and garbage files give coded errors', () => {
    expect(() => SafetensorsFile.open(path.join(tmp, 'nope.safetensors'))).toThrow(expect.objectContaining({ code: 'ZOTUNE_IO' }));
    const f = path.join(tmp, 'garbage.safetensors');
    fs.writeFileSync(f, Buffer.from([1, 2, 3]));
    expect(() => SafetensorsFile.open(f)).toThrow(expect.objectContaining({ code: 'ZOTUNE_BAD_FILE' }));
    const huge = Buffer.alloc(16);
    huge.writeBigUInt64LE(0xffffffffffffffffn);
    fs.writeFileSync(f, huge);
    expect(() => SafetensorsFile.open(f)).toThrow(expect.objectContaining({ code: 'ZOTUNE_BAD_FILE' }));
  });

  test('fuzz: corrupted headers and truncations either parse consistently or fail with ZOTUNE_BAD_FILE', () => {
    const good = path.join(tmp, 'fuzz-src.safetensors');
    writeSafetensors(good, [
      { name: 'w', dtype: 'F32', shape: [3, 4], data: new Float32Array(12).fill(1) },
      { name: 'v', dtype: 'BF16', shape: [6], data: new Uint16Array(6) },
    ]);
    const src = fs.readFileSync(good);
    const hlen = Number(src.readBigUInt64LE(0));
    const rand = prng(7);
    const f = path.join(tmp, 'fuzz.safetensors');
    let ok = 0, rejected = 0;
    for (let trial = 0; trial < 400; trial++) {
      const buf = Buffer.from(src);
      const mode = trial % 4;
      let bytes = buf;
      if (mode === 0) buf[8 + Math.floor(rand() * hlen)] = Math.floor(rand() * 256);
      else if (mode === 1) buf[Math.floor(rand() * 8)] = Math.floor(rand() * 256);
      else if (mode === 2) bytes = buf.subarray(0, Math.floor(rand() * buf.length));
      else {
        const s = buf.toString('latin1').replace(/\d+/g, (m) => (rand() < 0.3 ? String(Number(m) + Math.floor(rand() * 9) - 4) : m));
        bytes = Buffer.from(s, 'latin1');
      }
      fs.writeFileSync(f, bytes);
      try {
        using st = SafetensorsFile.open(f);
        for (const n of st.names()) {
          const info = st.info(n);
          expect(info.end).toBeLessThanOrEqual(bytes.length);
          if (info.dtype === 'F32' || info.dtype === 'BF16' || info.dtype === 'F16') st.readF32(n).dispose();
        }
        ok++;
      } catch (err) {
        expect(err).toBeInstanceOf(ZotuneError);
        expect(['ZOTUNE_BAD_FILE', 'ZOTUNE_DTYPE']).toContain((err as ZotuneError).code);
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(100);
    expect(ok + rejected).toBe(400);
  });
});

describe('Hugging Face model folders', () => {
  const dir = modelDir('micro-llama');
  (dir ? test : test.skip)('micro-llama: every weight loads with the shape config.json implies', () => {
    const cfg = JSON.parse(fs.readFileSync(path.join(dir!, 'config.json'), 'utf8'));
    using w = ModelWeights.open(dir!);
    const h = cfg.hidden_size, kv = cfg.num_key_value_heads * cfg.head_dim;
    expect(w.info('model.embed_tokens.weight').shape).toEqual([cfg.vocab_size, h]);
    expect(w.info('model.layers.0.self_attn.k_proj.weight').shape).toEqual([kv, h]);
    expect(w.info('model.layers.1.mlp.down_proj.weight').shape).toEqual([h, cfg.intermediate_size]);
    let params = 0;
    for (const n of w.names()) {
      using t = w.readF32(n);
      params += t.size;
      const d = t.data();
      for (let i = 0; i < d.length; i += 97) expect(Number.isFinite(d[i])).toBe(true);
    }
    expect(params).toBe(615232); // shared/models/README.md
  });

  test('sharded folders (model.safetensors.index.json) load and are cross-checked', () => {
    const d = path.join(tmp, 'sharded');
    fs.mkdirSync(d, { recursive: true });
    writeSafetensors(path.join(d, 'model-00001-of-00002.safetensors'), [{ name: 'a', dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) }]);
    writeSafetensors(path.join(d, 'model-00002-of-00002.safetensors'), [{ name: 'b', dtype: 'F32', shape: [1], data: Float32Array.from([3]) }]);
    const index = { weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } };
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify(index));
    {
      using w = ModelWeights.open(d);
      expect(w.names().sort()).toEqual(['a', 'b']);
      using b = w.readF32('b');
      expect(Array.from(b.data())).toEqual([3]);
    }
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'model-00002-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }));
    expect(() => ModelWeights.open(d)).toThrow(expect.objectContaining({ code: 'ZOTUNE_BAD_FILE' }));
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: '../x.safetensors' } }));
    expect(() => ModelWeights.open(d)).toThrow(expect.objectContaining({ code: 'ZOTUNE_BAD_FILE' }));
  });
});
