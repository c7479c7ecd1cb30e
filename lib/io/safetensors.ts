/**
 * safetensors reader and writer (no maintained npm package reads local files).
 * Format: u64 little-endian header length N, N bytes of JSON
 *   {"<name>": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {string: string}},
 * then the data buffer; offsets are relative to its start. Like the reference implementation we
 * require the tensors to tile the buffer exactly (no overlaps, no holes) and reject anything else.
 * Tensor data is read straight into its destination (a native tensor's memory): never two copies.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZotuneError, fail } from '../errors';
import { ioError } from './files';
import { Tensor, MemoryCategory } from '../tensor';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL' | 'F8_E4M3' | 'F8_E5M2';

export const DTYPE_BYTES: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
};

/** Header JSON larger than this is refused (the reference implementation's limit is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

function bad(file: string, why: string): never {
  throw new ZotuneError('ZOTUNE_BAD_FILE', `${file}: not a valid safetensors file: ${why}`);
}

/** All of `bytes`, in pieces below write(2)'s 2 GiB limit, looping on short writes. */
function writeAll(fd: number, bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length; ) off += fs.writeSync(fd, bytes, off, Math.min(bytes.length - off, 1 << 30));
}

/** The keys of a valid JSON object's text, in order, duplicates included (JSON.parse keeps only the last). */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0, expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(text.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = c === '{' && depth === 1;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return keys;
}

/** Parses and validates a header; `fileSize` bounds every offset. Exported for fuzz tests. */
export function parseHeader(file: string, headerBytes: Uint8Array, fileSize: number): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  let json: unknown, text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    json = JSON.parse(text);
  } catch (err) {
    bad(file, `header is not UTF-8 JSON (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) bad(file, 'header is not a JSON object');
  const seen = new Set<string>();
  for (const k of topLevelKeys(text)) {
    if (seen.has(k)) bad(file, `'${k}' appears twice in the header`);
    seen.add(k);
  }
  const dataStart = 8 + headerBytes.length;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) bad(file, '__metadata__ must be an object');
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') bad(file, `__metadata__.${k} must be a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof entry !== 'object' || entry === null) bad(file, `entry '${name}' is not an object`);
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    // own keys only: 'constructor' or 'toString' are not dtypes
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) bad(file, `tensor '${name}' has unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) bad(file, `tensor '${name}' has an invalid shape`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1])
      bad(file, `tensor '${name}' has invalid data_offsets`);
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger((shape as number[]).reduce((a, b) => a * Math.max(b, 1), 1))) bad(file, `tensor '${name}' has a shape whose size overflows`); // [2^40, 2^40, 0] too
    const bytes = numel * DTYPE_BYTES[dtype as SafetensorsDType];
    if (!Number.isSafeInteger(bytes) || offsets[1] - offsets[0] !== bytes)
      bad(file, `tensor '${name}' spans ${offsets[1] - offsets[0]} bytes but ${dtype}[${(shape as number[]).join(', ')}] needs ${bytes}`);
    if (offsets[1] > dataSize) bad(file, `tensor '${name}' ends at byte ${offsets[1]} of a ${Math.max(dataSize, 0)}-byte data section (truncated file?)`);
    tensors.push({ name, dtype: dtype as SafetensorsDType, shape: shape as number[], begin: dataStart + offsets[0], end: dataStart + offsets[1] });
  }
  const sorted = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = dataStart;
  for (const t of sorted) {
    if (t.begin !== cursor) bad(file, t.begin < cursor ? `tensor '${t.name}' overlaps another tensor` : `hole in the data section before tensor '${t.name}'`);
    cursor = t.end;
  }
  if (cursor !== fileSize) bad(file, `${fileSize - cursor} bytes after the last tensor`);
  return { tensors, metadata };
}

/** Reads dest.length bytes at `position`; I/O errors and early ends are coded errors. */
function readFully(file: string, fd: number, dest: Uint8Array, position: number): void {
  for (let done = 0; done < dest.length; ) {
    let got: number;
    try {
      got = fs.readSync(fd, dest, done, dest.length - done, position + done);
    } catch (err) {
      throw ioError(file, err);
    }
    if (got === 0) bad(file, 'unexpected end of file (was it truncated while being read?)');
    done += got;
  }
}

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>>;
  private readonly fd: number;
  private readonly index: Map<string, TensorInfo>;

  private constructor(file: string, fd: number, tensors: TensorInfo[], metadata: Record<string, string>) {
    this.path = file;
    this.fd = fd;
    this.metadata = metadata;
    this.index = new Map(tensors.map((t) => [t.name, t]));
  }

  static open(file: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      throw ioError(file, err);
    }
    try {
      const stat = fs.fstatSync(fd);
      // a folder opens for reading on Linux; reading it would fail with a raw EISDIR
      if (!stat.isFile()) throw new ZotuneError('ZOTUNE_IO', `${file}: not a regular file`);
      const size = stat.size;
      if (size < 8) bad(file, `${size} bytes is too short for a header`);
      const lenBuf = Buffer.alloc(8);
      readFully(file, fd, lenBuf, 0);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(Math.min(MAX_HEADER_BYTES, size - 8))) bad(file, `header length ${n} exceeds the file or the ${MAX_HEADER_BYTES}-byte limit`);
      const header = Buffer.alloc(Number(n));
      readFully(file, fd, header, 8);
      const { tensors, metadata } = parseHeader(file, header, size);
      return new SafetensorsFile(file, fd, tensors, metadata);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  names(): string[] {
    return [...this.index.keys()];
  }

  has(name: string): boolean {
    return this.index.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.index.get(name);
    if (!t) fail('ZOTUNE_INVALID_ARGUMENT', `${this.path}: no tensor named '${name}'`);
    return t;
  }

  /** Reads a tensor's raw bytes into `dest` (exactly its byte length). */
  readInto(name: string, dest: ArrayBufferView): void {
    const t = this.info(name);
    const len = t.end - t.begin;
    if (dest.byteLength !== len) fail('ZOTUNE_SHAPE_MISMATCH', `tensor '${name}' has ${len} bytes, destination ${dest.byteLength}`);
    const bytes = new Uint8Array(dest.buffer, dest.byteOffset, dest.byteLength);
    const CHUNK = 1 << 26;
    for (let at = 0; at < len; at += CHUNK) readFully(this.path, this.fd, bytes.subarray(at, Math.min(at + CHUNK, len)), t.begin + at);
  }

  /** A float32 native tensor from an F32, F16 or BF16 entry (converted in place of one buffer). */
  readF32(name: string, category: MemoryCategory = 'weights'): Tensor {
    const t = this.info(name);
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16')
      fail('ZOTUNE_DTYPE', `tensor '${name}' is ${t.dtype}; only F32, F16 and BF16 load as float32`);
    const out = Tensor.empty(t.shape, 'f32', category);
    try {
      const f32 = out.data() as Float32Array;
      if (t.dtype === 'F32') {
        this.readInto(name, f32);
      } else {
        // Read the 16-bit values into the upper half of the destination, then widen front to back
        // (element i's source lies at or after its destination, so nothing is overwritten early).
        const n = f32.length;
        const half = new Uint16Array(f32.buffer, f32.byteOffset + 2 * n, n);
        this.readInto(name, half);
        const u32 = new Uint32Array(f32.buffer, f32.byteOffset, n);
        if (t.dtype === 'BF16') for (let i = 0; i < n; i++) u32[i] = half[i] << 16;
        else for (let i = 0; i < n; i++) f32[i] = halfToFloat(half[i]);
      }
    } catch (err) {
      out.dispose();
      throw err;
    }
    return out;
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

let halfTable: Float32Array | undefined;
function halfToFloat(h: number): number {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) {
      const s = i & 0x8000 ? -1 : 1, e = (i >> 10) & 0x1f, m = i & 0x3ff;
      halfTable[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return halfTable[h];
}

export interface TensorEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
  /**
   * The bytes, or a function producing them when the tensor is written (one tensor's copy at a
   * time, e.g. dequantized weights); its release() runs right after the write.
   */
  data: ArrayBufferView | (() => { data: ArrayBufferView; release?: () => void });
}

/**
 * Writes a safetensors file atomically: a temporary file in the same folder is written, fsync'd
 * and renamed over the target, so a crash never leaves a half-written checkpoint behind.
 */
export function writeSafetensors(file: string, entries: TensorEntry[], metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const e of entries) {
    if (e.name === '__metadata__' || e.name in header) fail('ZOTUNE_INVALID_ARGUMENT', `duplicate or reserved tensor name '${e.name}'`);
    if (!(e.dtype in DTYPE_BYTES)) fail('ZOTUNE_DTYPE', `unknown safetensors dtype '${e.dtype}'`);
    const numel = e.shape.reduce((a, b) => a * b, 1);
    const bytes = numel * DTYPE_BYTES[e.dtype];
    if (typeof e.data !== 'function' && bytes !== e.data.byteLength)
      fail('ZOTUNE_SHAPE_MISMATCH', `tensor '${e.name}': ${e.dtype}[${e.shape.join(', ')}] needs ${bytes} bytes, got ${e.data.byteLength}`);
    header[e.name] = { dtype: e.dtype, shape: [...e.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8; // keep the data section 8-byte aligned
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    writeAll(fd, len);
    writeAll(fd, json);
    for (const e of entries) {
      const lazy = typeof e.data === 'function' ? e.data() : undefined;
      try {
        const d = lazy ? lazy.data : (e.data as ArrayBufferView);
        const want = (header[e.name] as { data_offsets: number[] }).data_offsets;
        if (d.byteLength !== want[1] - want[0]) fail('ZOTUNE_SHAPE_MISMATCH', `tensor '${e.name}' produced ${d.byteLength} bytes, needs ${want[1] - want[0]}`);
        writeAll(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      } finally {
        lazy?.release?.();
      }
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
    const dir = fs.openSync(path.dirname(file), 'r');
    try {
      fs.fsyncSync(dir);
    } finally {
      fs.closeSync(dir);
    }
  } catch (err) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    if (err instanceof ZotuneError) throw err;
    throw ioError(file, err);
  }
}

/**
 * All weights of a Hugging Face model folder: model.safetensors, or the shards listed in
 * model.safetensors.index.json.
 */
export class ModelWeights {
  private readonly files: SafetensorsFile[];
  private readonly owner = new Map<string, SafetensorsFile>();

  private constructor(files: SafetensorsFile[]) {
    this.files = files;
    for (const f of files)
      for (const n of f.names()) {
        if (this.owner.has(n)) {
          files.forEach((x) => x.close());
          bad(f.path, `tensor '${n}' appears in more than one shard`);
        }
        this.owner.set(n, f);
      }
  }

  static open(dir: string): ModelWeights {
    const single = path.join(dir, 'model.safetensors');
    const index = path.join(dir, 'model.safetensors.index.json');
    if (fs.existsSync(single)) return new ModelWeights([SafetensorsFile.open(single)]);
    if (!fs.existsSync(index)) throw new ZotuneError('ZOTUNE_IO', `${dir}: neither model.safetensors nor model.safetensors.index.json found`);
    let map: Record<string, string>;
    try {
      const parsed = JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> };
      if (!parsed.weight_map || typeof parsed.weight_map !== 'object') throw new Error('no weight_map');
      map = parsed.weight_map;
    } catch (err) {
      bad(index, (err as Error).message);
    }
    const shardNames = [...new Set(Object.values(map))];
    for (const s of shardNames)
      if (typeof s !== 'string' || s === '' || s === '.' || s === '..' || s.includes('/') || s.includes('\\') || s.includes('\0'))
        bad(index, `invalid shard name ${JSON.stringify(s)} (a file name in the model folder)`);
    const files: SafetensorsFile[] = [];
    try {
      for (const s of shardNames) files.push(SafetensorsFile.open(path.join(dir, s)));
    } catch (err) {
      files.forEach((f) => f.close());
      throw err;
    }
    const weights = new ModelWeights(files);
    for (const [name, shard] of Object.entries(map))
      if (weights.owner.get(name)?.path !== path.join(dir, shard)) {
        weights.close();
        bad(index, `weight_map says '${name}' is in ${shard}, but it is not there`);
      }
    // a shard holding tensors the index does not list is a mixed or damaged folder
    for (const name of weights.owner.keys())
      if (!Object.prototype.hasOwnProperty.call(map, name)) {
        const shard = path.basename(weights.owner.get(name)!.path);
        weights.close();
        bad(index, `${shard} holds '${name}', which weight_map does not list`);
      }
    return weights;
  }

  names(): string[] {
    return [...this.owner.keys()];
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  info(name: string): TensorInfo {
    const f = this.owner.get(name);
    if (!f) fail('ZOTUNE_INVALID_ARGUMENT', `no weight named '${name}'`);
    return f.info(name);
  }

  readF32(name: string, category: MemoryCategory = 'weights'): Tensor {
    this.info(name);
    return this.owner.get(name)!.readF32(name, category);
  }

  close(): void {
    this.files.forEach((f) => f.close());
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
