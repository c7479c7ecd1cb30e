import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ZoLog, crc32 } from '../lib/zo/log';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-log-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const rec = (step: number) => ({ step, lr: 1e-6, queries: [{ seed: String(1000 + step), g: Math.sin(step) * 1e-3 }] });

test('crc32 matches the standard check value', () => {
  expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
});

test('records survive close and reopen exactly (float64 gradients round-trip)', () => {
  const f = path.join(dir, 'a.log');
  const log = ZoLog.create(f, { method: 'mezo', model: 'micro' });
  for (let s = 0; s < 5; s++) log.append(rec(s));
  log.close();
  using again = ZoLog.open(f);
  expect(again.header.method).toBe('mezo');
  expect(again.records()).toEqual([0, 1, 2, 3, 4].map(rec));
  expect(again.nextStep).toBe(5);
  expect(() => ZoLog.create(f, {})).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
});

test('a torn final line (crash mid-append) is dropped and the run resumes without gaps or duplicates', () => {
  const f = path.join(dir, 'b.log');
  const log = ZoLog.create(f, {});
  log.append(rec(0));
  log.append(rec(1));
  log.close();
  const full = fs.readFileSync(f, 'utf8');
  fs.appendFileSync(f, full.split('\n')[2].slice(0, 17)); // half of a third record
  const resumed = ZoLog.open(f);
  expect(resumed.nextStep).toBe(2);
  resumed.append(rec(2));
  resumed.close();
  using final = ZoLog.open(f);
  expect(final.records().map((r) => r.step)).toEqual([0, 1, 2]);
});

test('corruption before the end, reordered steps and bad appends are errors', () => {
  const f = path.join(dir, 'c.log');
  const log = ZoLog.create(f, {});
  log.append(rec(0));
  log.append(rec(1));
  expect(() => log.append(rec(1))).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
  expect(() => log.append({ step: 2, lr: 0, queries: [{ seed: '1', g: NaN }] })).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
  log.close();
  const lines = fs.readFileSync(f, 'utf8').split('\n');
  lines[1] = lines[1].replace('"lr":0.000001', '"lr":0.000002');
  fs.writeFileSync(f, lines.join('\n'));
  expect(() => ZoLog.open(f)).toThrow(expect.objectContaining({ code: 'ZOTUNE_BAD_FILE' }));
  expect(() => ZoLog.open(path.join(dir, 'missing.log'))).toThrow(expect.objectContaining({ code: 'ZOTUNE_IO' }));
});

test('one writer at a time: a second open is ZOTUNE_BUSY, a dead writer\'s lock is taken over, readers never write', () => {
  const f = path.join(dir, 'd.log');
  const log = ZoLog.create(f, {});
  log.append(rec(0));
  expect(() => ZoLog.open(f)).toThrow(expect.objectContaining({ code: 'ZOTUNE_BUSY' }));
  fs.appendFileSync(f, '{"step":1'); // a record being written: readers skip it and leave it alone
  const before = fs.readFileSync(f);
  const reader = ZoLog.read(f);
  expect(reader.records().map((r) => r.step)).toEqual([0]);
  expect(() => reader.append(rec(1))).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
  expect(fs.readFileSync(f).equals(before)).toBe(true);
  log.close();
  expect(fs.existsSync(`${f}.lock`)).toBe(false);
  // a writer killed with its lock held (a pid that no longer runs)
  fs.writeFileSync(`${f}.lock`, JSON.stringify({ pid: 2 ** 22 + 12345, host: os.hostname() }));
  using again = ZoLog.open(f);
  expect(again.nextStep).toBe(1);
});

test('steps run 0, 1, 2, ... without gaps: a gap in the file or an append out of turn is refused', () => {
  const f = path.join(dir, 'e.log');
  const log = ZoLog.create(f, {});
  expect(() => log.append(rec(1))).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
  log.append(rec(0));
  log.append(rec(1));
  log.close();
  const lines = fs.readFileSync(f, 'utf8').split('\n');
  fs.writeFileSync(f, [lines[0], lines[2], ''].join('\n')); // step 0 lost
  expect(() => ZoLog.read(f)).toThrow(expect.objectContaining({ code: 'ZOTUNE_BAD_FILE' }));
  expect(() => ZoLog.open(f)).toThrow(expect.objectContaining({ code: 'ZOTUNE_BAD_FILE' }));
  expect(fs.existsSync(`${f}.lock`)).toBe(false); // a failed open releases its lock
});
