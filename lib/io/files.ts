/** File-system errors as coded ZotuneErrors (one wording for every reader). */
import fs from 'node:fs';
import path from 'node:path';
import { ZotuneError } from '../errors';

export function ioError(file: string, err: unknown): ZotuneError {
  const e = err as NodeJS.ErrnoException;
  return new ZotuneError('ZOTUNE_IO', `${file}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`, { cause: err });
}

/** A UTF-8 text file, or ZOTUNE_IO naming the file. */
export function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw ioError(file, err);
  }
}

/**
 * `text` written durably to `file` whole or not at all: a sibling is written and fsync'd, then
 * renamed over `file` ('replace') or hard-linked to it ('create': EEXIST if `file` exists, so two
 * creators cannot both win). System errors are thrown as they are (callers word them).
 */
export function writeWhole(file: string, text: string, mode: 'replace' | 'create'): void {
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const fd = fs.openSync(tmp, 'wx');
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  if (mode === 'replace') return fs.renameSync(tmp, file);
  try {
    fs.linkSync(tmp, file);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/**
 * The folder of an npm data package (a devDependency zotune never bundles), found from zotune's own
 * location or from the user's project (process.cwd()): a global or npx zotune reads the project's.
 */
export function dataPackageDir(name: string): string | undefined {
  for (const from of [__dirname, process.cwd()]) {
    try {
      return path.dirname(require.resolve(`${name}/package.json`, { paths: [from] }));
    } catch {
      /* not installed there */
    }
  }
  return undefined;
}
