/**
 * Labelled examples: JSONL / CSV loaders, seeded shuffles, train/dev/test splits and k-shot
 * sampling. Every shuffle is a pure function of (seed, example index): the order key of example i
 * is the Philox word (seed, stream, i) of native/common/philox.h, so a split never depends on the
 * platform, the thread count or the order files were listed in.
 */
import fs from 'node:fs';
import { ZotuneError, fail } from '../errors';
import { Tensor } from '../tensor';
import { Purpose, wordsSync } from '../rng';

/** One labelled example: named fields (text, label, choices, answer, ...). */
export type Example = Record<string, unknown>;

export interface Splits {
  train: Example[];
  dev: Example[];
  test: Example[];
}

/** Philox stream ids of the data shuffles (distinct from tensor ids' use: purpose 'uniform'). */
const SHUFFLE_STREAM = 0x5d000000;

/** A permutation of [0, n) that is a pure function of (seed, stream, n). */
export function permutation(n: number, seed: number | bigint, stream = 0): number[] {
  if (!Number.isSafeInteger(n) || n < 0) fail('ZOTUNE_INVALID_ARGUMENT', `permutation size must be a non-negative integer, got ${n}`);
  if (n === 0) return [];
  const keys = Tensor.empty([n], 'u32', 'workspace');
  try {
    wordsSync(keys, { seed, stream: SHUFFLE_STREAM + stream, purpose: Purpose.uniform });
    const k = keys.data() as Uint32Array;
    return Array.from({ length: n }, (_, i) => i).sort((a, b) => k[a] - k[b] || a - b);
  } finally {
    keys.dispose();
  }
}

/** The examples in a seeded random order. */
export function shuffle<T>(items: readonly T[], seed: number | bigint, stream = 0): T[] {
  return permutation(items.length, seed, stream).map((i) => items[i]);
}

/**
 * Disjoint train/dev/test sets of the given sizes drawn from one seeded shuffle (sizes may sum to
 * less than the data; the rest is unused).
 */
export function split(items: readonly Example[], sizes: { train: number; dev: number; test: number }, seed: number | bigint): Splits {
  const { train, dev, test } = sizes;
  for (const [k, v] of Object.entries(sizes))
    if (!Number.isSafeInteger(v) || v < 0) fail('ZOTUNE_INVALID_ARGUMENT', `split size '${k}' must be a non-negative integer, got ${v}`);
  if (train + dev + test > items.length) fail('ZOTUNE_OUT_OF_RANGE', `split sizes ${train} + ${dev} + ${test} exceed the ${items.length} examples`);
  const s = shuffle(items, seed, 1);
  return { train: s.slice(0, train), dev: s.slice(train, train + dev), test: s.slice(train + dev, train + dev + test) };
}

/**
 * k examples per label value (LM-BFF / MeZO k-shot protocol), seeded; the result is in a
 * seeded order, not grouped by label.
 */
export function kShot(items: readonly Example[], k: number, seed: number | bigint, labelField = 'label'): Example[] {
  if (!Number.isSafeInteger(k) || k < 1) fail('ZOTUNE_INVALID_ARGUMENT', `k must be a positive integer, got ${k}`);
  const byLabel = new Map<string, Example[]>();
  for (const ex of shuffle(items, seed, 2)) {
    const key = JSON.stringify(ex[labelField]);
    if (!byLabel.has(key)) byLabel.set(key, []);
    byLabel.get(key)!.push(ex);
  }
  const out: Example[] = [];
  for (const [label, list] of byLabel) {
    if (list.length < k) fail('ZOTUNE_OUT_OF_RANGE', `label ${label} has ${list.length} examples, fewer than k = ${k}`);
    out.push(...list.slice(0, k));
  }
  return shuffle(out, seed, 3);
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, ''); // a byte-order mark (Excel's CSV) is not part of the first field
  } catch (err) {
    throw new ZotuneError('ZOTUNE_IO', `${file}: ${(err as Error).message}`);
  }
}

/** One JSON object per non-empty line. */
export function parseJsonl(text: string, source = 'jsonl'): Example[] {
  const out: Example[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (err) {
      throw new ZotuneError('ZOTUNE_BAD_FILE', `${source}:${i + 1}: not JSON (${(err as Error).message})`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('ZOTUNE_BAD_FILE', `${source}:${i + 1}: each line must be a JSON object`);
    out.push(v as Example);
  });
  return out;
}

/**
 * RFC 4180 CSV with a header row: quoted fields may hold commas, quotes ("") and newlines. Values
 * stay strings ("007" keeps its zeros); label fields are read as indices where they are used.
 */
export function parseCsv(text: string, source = 'csv'): Example[] {
  const rows: string[][] = [];
  let row: string[] = [], field = '', quoted = false, i = 0;
  const endField = () => {
    row.push(field);
    field = '';
  };
  for (; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"' && field === '') quoted = true;
    else if (ch === ',') endField();
    else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      endField();
      if (row.length > 1 || row[0] !== '') rows.push(row);
      row = [];
    } else field += ch;
  }
  if (quoted) fail('ZOTUNE_BAD_FILE', `${source}: unterminated quoted field`);
  if (field !== '' || row.length) {
    endField();
    rows.push(row);
  }
  if (rows.length === 0) fail('ZOTUNE_BAD_FILE', `${source}: no header row`);
  const [header, ...body] = rows;
  return body.map((r, n) => {
    if (r.length !== header.length) fail('ZOTUNE_BAD_FILE', `${source}: row ${n + 2} has ${r.length} fields, the header has ${header.length}`);
    return Object.fromEntries(header.map((h, j) => [h, r[j]]));
  });
}

/** Examples from a .jsonl/.json-lines or .csv file (by extension). */
export function loadExamples(file: string): Example[] {
  if (/\.csv$/i.test(file)) return parseCsv(readText(file), file);
  if (/\.(jsonl|ndjson)$/i.test(file)) return parseJsonl(readText(file), file);
  fail('ZOTUNE_INVALID_ARGUMENT', `${file}: examples must be .jsonl, .ndjson or .csv`);
}
