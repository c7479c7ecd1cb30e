/**
 * The only module that knows where binaries live. The CPU addon is found by node-gyp-build in
 * `build/Release/` (a source build) or `prebuilds/<platform>-<arch>/` (shipped in the npm package).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZotuneError } from '../errors';
import type { NativeAddon } from './binding';

export const packageRoot = path.resolve(__dirname, '..', '..');

function isMusl(): boolean {
  if (process.platform !== 'linux') return false;
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return !report?.header?.glibcVersionRuntime;
}

let cached: NativeAddon | undefined;

export function native(): NativeAddon {
  if (cached) return cached;
  const target = `${process.platform}-${process.arch}`;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    cached = load(packageRoot);
    return cached;
  } catch (err) {
    const prebuilds = path.join(packageRoot, 'prebuilds');
    const shipped = fs.existsSync(prebuilds) ? fs.readdirSync(prebuilds).join(', ') || 'none' : 'none';
    const libc = isMusl() ? 'musl' : 'glibc';
    const hint =
      libc === 'musl'
        ? 'musl-based systems (Alpine) have no prebuilt binary: build from source with `npm run build:cpu` (needs g++, make, python3).'
        : `No prebuilt binary fits ${target} (${libc}, Node ${process.versions.node}, N-API ${process.versions.napi}). ` +
          'Reinstall zotune, or build from source in the package folder with `npm run build:cpu` (needs g++, make, python3).';
    throw new ZotuneError('ZOTUNE_NO_BINARY', `zotune: could not load the native engine. ${hint} Prebuilds shipped: ${shipped}.`, {
      cause: err,
    });
  }
}
