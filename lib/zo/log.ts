/**
 * The ZO checkpoint: an append-only log of steps. A ZO step is fully described by its seeds and
 * projected gradients, so base weights + this log reproduce a fine-tuned model bit for bit
 * (MeZO §2.1), and a run killed at any moment resumes from the last complete record.
 *
 * File format (text, one record per line): `<json>\t<crc32 of json, 8 hex digits>\n`. The first
 * record is the run header; then one record per step, steps 0, 1, 2, ... without gaps. Every
 * append is fsync'd before the step counts as done. The header is written whole or not at all (a
 * temporary file linked into place). On open for writing, a torn last line (crash mid-write) is
 * cut off; corruption anywhere else is an error, never silently skipped.
 *
 * One writer at a time: a writer holds `<log>.lock` (its pid and host), taken atomically and
 * released on close; a lock whose process is gone (kill -9) is taken over. Readers (ZoLog.read:
 * replay, export) take no lock and never write: a torn last line is only ignored.
 */
import fs from 'node:fs';
import os from 'node:os';
import { ZotuneError, fail } from '../errors';
import { writeWhole } from '../io/files';

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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, another user's
  }
}

/** Takes the writer lock of `file` (see the file comment); returns the lock's path. */
function lockWriter(file: string): string {
  const lock = `${file}.lock`, me = { pid: process.pid, host: os.hostname() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeWhole(lock, JSON.stringify(me) + '\n', 'create');
      return lock;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ZotuneError('ZOTUNE_IO', `${lock}: ${(err as Error).message}`);
    }
    let holder: { pid?: unknown; host?: unknown } | undefined;
    try {
      holder = JSON.parse(fs.readFileSync(lock, 'utf8'));
    } catch {
      holder = undefined; // removed meanwhile, or not ours: retried / reported below
    }
    if (holder && typeof holder.pid === 'number' && holder.host === me.host && !alive(holder.pid)) {
      fs.rmSync(lock, { force: true }); // its writer was killed: take it over
      continue;
    }
    if (!fs.existsSync(lock)) continue;
    const who = holder && typeof holder.pid === 'number' ? `process ${holder.pid} on ${String(holder.host)}` : 'another process';
    fail('ZOTUNE_BUSY', `${file} is being written by ${who} (lock ${lock}); wait for it to finish, or delete the lock file if that process is gone`);
  }
  fail('ZOTUNE_BUSY', `${file}: could not take its lock ${lock}`);
}

export class ZoLog {
  readonly path: string;
  readonly header: ZoLogHeader;
  private readonly steps: ZoStepRecord[];
  private fd: number | undefined;
  private lock: string | undefined;

  private constructor(file: string, header: ZoLogHeader, steps: ZoStepRecord[], fd: number | undefined, lock: string | undefined) {
    this.path = file;
    this.header = header;
    this.steps = steps;
    this.fd = fd;
    this.lock = lock;
  }

  /** Creates a new log (refuses to overwrite an existing one) and holds it for writing. */
  static create(file: string, header: Omit<ZoLogHeader, 'kind' | 'version'>): ZoLog {
    const full: ZoLogHeader = { kind: 'zotune-zo-log', version: 1, ...header };
    try {
      writeWhole(file, encode(full), 'create');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ZotuneError(code === 'EEXIST' ? 'ZOTUNE_INVALID_ARGUMENT' : 'ZOTUNE_IO', code === 'EEXIST' ? `${file} already exists: open it to resume` : `${file}: ${(err as Error).message}`);
    }
    const lock = lockWriter(file);
    try {
      return new ZoLog(file, full, [], fs.openSync(file, 'r+'), lock);
    } catch (err) {
      fs.rmSync(lock, { force: true });
      throw new ZotuneError('ZOTUNE_IO', `${file}: ${(err as Error).message}`);
    }
  }

  /** Opens an existing log for reading and appending (one writer at a time), cutting off a torn final line. */
  static open(file: string): ZoLog {
    if (!fs.existsSync(file)) throw new ZotuneError('ZOTUNE_IO', `${file}: no such file`);
    const lock = lockWriter(file);
    try {
      const { text, torn, header, steps } = ZoLog.parse(file);
      const fd = fs.openSync(file, 'r+');
      if (torn.length) {
        // A crash mid-append: the step was never acknowledged, so it is dropped and redone.
        fs.ftruncateSync(fd, Buffer.byteLength(text, 'utf8') - Buffer.byteLength(torn, 'utf8'));
        fs.fsyncSync(fd);
      }
      return new ZoLog(file, header, steps, fd, lock);
    } catch (err) {
      fs.rmSync(lock, { force: true });
      if (err instanceof ZotuneError) throw err;
      throw new ZotuneError('ZOTUNE_IO', `${file}: ${(err as Error).message}`);
    }
  }

  /** Reads a log without writing it (no lock; a torn final line, e.g. a live writer's, is ignored). */
  static read(file: string): ZoLog {
    const { header, steps } = ZoLog.parse(file);
    return new ZoLog(file, header, steps, undefined, undefined);
  }

  private static parse(file: string): { text: string; torn: string; header: ZoLogHeader; steps: ZoStepRecord[] } {
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
      if (r.step !== steps.length) throw new ZotuneError('ZOTUNE_BAD_FILE', `${file}:${i + 1}: step ${r.step} where step ${steps.length} belongs (steps run 0, 1, 2, ... without gaps)`);
      steps.push(r);
    }
    return { text, torn, header, steps };
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
    if (this.fd === undefined) fail('ZOTUNE_INVALID_ARGUMENT', `${this.path}: log is closed or read-only (ZoLog.read)`);
    if (record.step !== this.nextStep) fail('ZOTUNE_INVALID_ARGUMENT', `step ${record.step} must be ${this.nextStep} (the step after the log's last)`);
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
    if (this.lock !== undefined) fs.rmSync(this.lock, { force: true });
    this.lock = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
