/** File-system errors as coded ZotuneErrors (one wording for every reader). */
import fs from 'node:fs';
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
