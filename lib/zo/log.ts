/**
 * The ZO checkpoint: an append-only log of steps. A ZO step is fully described by its seeds and
 * projected gradients, so base weights + this log reproduce a fine-tuned model bit for bit
 * (MeZO §2.1), and a run killed at any moment resumes from the last complete record.
 *
 * File format (text, one record per line): `<json>\t<crc32 of json, 8 hex digits>\n`. The first
 * record is the run header; then one record per step with strictly increasing `step`. Every append
 * is fsync'd before the step counts as done. On open, a torn last line (crash mid-write) is cut
 * off; corruption anywhere else is an error, never silently skipped.
 */
import fs from 'node:fs';
import { ZotuneError, fail } from '../errors';

export interface ZoQuery {
  /** Seed of the direction z. */
  seed: string;
  /** Projected gradient (L(θ+εz) − L(θ−εz)) / 2ε, or the one-sided variant. */
  g: number;
}

export interface ZoStepRecord {
  step: number;
  lr: number;
  queries: ZoQuery[];
  /** Optional extra per-step facts (losses, skipped, ...). */
  [key: string]: unknown;
}

export interface ZoLogHeader {
  kind: 'zotune-zo-log';
  version: 1;
  [key: string]: unknown;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function encode(record: object): string {
  const json = JSON.stringify(record);
  return `${json}\t${crc32(Buffer.from(json, 'utf8')).toString(16).padStart(8, '0')}\n`;
}

function decode(file: string, line: string, lineNo: number): Record<string, unknown> {
  const tab = line.lastIndexOf('\t');
  const json = tab >= 0 ? line.slice(0, tab) : '';
  if (tab < 0 || line.slice(tab + 1) !== crc32(Buffer.from(json, 'utf8')).toString(16).padStart(8, '0'))
    throw new ZotuneError('ZOTUNE_BAD_FILE', `${file}:${lineNo}: checksum mismatch (corrupted log)`);
  return JSON.parse(json) as Record<string, unknown>;
}

export class ZoLog {
  readonly path: string;
  readonly header: ZoLogHeader;
  private readonly steps: ZoStepRecord[];
  private fd: number | undefined;

  private constructor(file: string, header: ZoLogHeader, steps: ZoStepRecord[], fd: number) {
    this.path = file;
    this.header = header;
    this.steps = steps;
    this.fd = fd;
  }

  /** Creates a new log (refuses to overwrite an existing one). */
  static create(file: string, header: Omit<ZoLogHeader, 'kind' | 'version'>): ZoLog {
    const full: ZoLogHeader = { kind: 'zotune-zo-log', version: 1, ...header };
    let fd: number;
    try {
      fd = fs.openSync(file, 'wx');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ZotuneError(code === 'EEXIST' ? 'ZOTUNE_INVALID_ARGUMENT' : 'ZOTUNE_IO', code === 'EEXIST' ? `${file} already exists: open it to resume` : `${file}: ${(err as Error).message}`);
    }
    fs.writeSync(fd, encode(full));
    fs.fsyncSync(fd);
    return new ZoLog(file, full, [], fd);
  }

  /** Opens an existing log for reading and appending, cutting off a torn final line. */
  static open(file: string): ZoLog {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new ZotuneError('ZOTUNE_IO', `${file}: ${(err as Error).message}`);
    }
    const lines = text.split('\n');
    const complete = lines.slice(0, -1);
    const torn = lines[lines.length - 1]; // '' unless the last append was cut short
    if (complete.length === 0) throw new ZotuneError('ZOTUNE_BAD_FILE', `${file}: no header record`);
    const header = decode(file, complete[0], 1) as ZoLogHeader;
    if (header.kind !== 'zotune-zo-log' || header.version !== 1) throw new ZotuneError('ZOTUNE_BAD_FILE', `${file}: not a zotune ZO log (version 1)`);
    const steps: ZoStepRecord[] = [];
    for (let i = 1; i < complete.length; i++) {
      const r = decode(file, complete[i], i + 1) as ZoStepRecord;
      const prev = steps.length ? steps[steps.length - 1].step : -1;
      if (!Number.isSafeInteger(r.step) || r.step <= prev) throw new ZotuneError('ZOTUNE_BAD_FILE', `${file}:${i + 1}: step ${r.step} does not follow ${prev}`);
      steps.push(r);
    }
    const fd = fs.openSync(file, 'r+');
    if (torn.length) {
      // A crash mid-append: the step was never acknowledged, so it is dropped and redone.
      fs.ftruncateSync(fd, Buffer.byteLength(text, 'utf8') - Buffer.byteLength(torn, 'utf8'));
      fs.fsyncSync(fd);
    }
    return new ZoLog(file, header, steps, fd);
  }

  /** Completed steps, in order. */
  records(): readonly ZoStepRecord[] {
    return this.steps;
  }

  /** The step a resumed run continues with. */
  get nextStep(): number {
    return this.steps.length ? this.steps[this.steps.length - 1].step + 1 : 0;
  }

  /** Appends a step and fsyncs; when this returns, the step survives any crash. */
  append(record: ZoStepRecord): void {
    if (this.fd === undefined) fail('ZOTUNE_INVALID_ARGUMENT', `${this.path}: log is closed`);
    if (!Number.isSafeInteger(record.step) || record.step < this.nextStep) fail('ZOTUNE_INVALID_ARGUMENT', `step ${record.step} must be at least ${this.nextStep}`);
    for (const q of record.queries) if (typeof q.seed !== 'string' || !Number.isFinite(q.g)) fail('ZOTUNE_INVALID_ARGUMENT', 'each query needs a string seed and a finite g');
    const line = encode(record);
    const size = fs.fstatSync(this.fd).size;
    fs.writeSync(this.fd, line, size);
    fs.fsyncSync(this.fd);
    this.steps.push(record);
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
