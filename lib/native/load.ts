/**
 * The only module that knows where binaries live.
 *
 * CPU addon (always needed): `native/build/Release/` (an installed package's source build, from
 * native/binding.gyp), else what node-gyp-build finds: `ZOTUNE_PREBUILD` (a package folder), then
 * `build/Release/` (a checkout's build), then `prebuilds/<platform>-<arch>/` (shipped in the package).
 *
 * CUDA addon (optional, loaded only when asked for): `ZOTUNE_CUDA_BINARY` (a .node file), else the
 * first of `build-cuda/Release/cuda/` (source build) and `prebuilds/<platform>-<arch>/cuda/` that
 * loads. Both sit in `cuda/` subfolders, where node-gyp-build never looks for the CPU addon.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZotuneError } from '../errors';
import { ADDON_ABI } from './abi';
import type { CudaAddon, NativeAddon } from './binding';

export const packageRoot = path.resolve(__dirname, '..', '..');
const target = `${process.platform}-${process.arch}`;

export type Libc = 'glibc' | 'musl';

/** The C library of this process: `LIBC` if set (node-gyp-build reads it too), else what Node reports. */
export function detectLibc(): Libc {
  const env = process.env.LIBC;
  if (env === 'musl' || env === 'glibc') return env;
  if (process.platform !== 'linux') return 'glibc';
  if (fs.existsSync('/etc/alpine-release')) return 'musl';
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return report?.header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

export interface BinaryInfo {
  /** Absolute path of the .node file. */
  path: string;
  /** Where it came from, e.g. 'source build (build/Release)'. */
  origin: string;
}

function originOf(file: string): string {
  const env = process.env.ZOTUNE_PREBUILD;
  const [top, sub] = path.relative(env ? path.resolve(env) : packageRoot, file).split(path.sep);
  const kind = top === 'build' ? `source build (build/${sub})` : top === 'native' ? 'source build (native/build/Release)' : top === 'prebuilds' ? `prebuilt (prebuilds/${sub})` : 'prebuilt, next to the node executable';
  return env ? `ZOTUNE_PREBUILD=${env}: ${kind}` : kind;
}

/** How to get a CPU binary, for this install: a repository checkout or an installed package. */
function buildRemedy(): string {
  let hasToolchain = false;
  try {
    require.resolve('node-addon-api', { paths: [packageRoot] });
    hasToolchain = true;
  } catch {
    /* an installed package: the build tools are not dependencies */
  }
  const build = hasToolchain
    ? `run \`npm run build:cpu\` in ${packageRoot}`
    : `run \`npm install --no-save node-addon-api node-gyp && npx node-gyp rebuild -C ${path.join(packageRoot, 'native')}\` in your project`;
  return `build it from source: ${build} (needs g++, make and python3).`;
}

/** The runtime library versions the prebuilt CPU addon needs (package.json "config"). */
function runtimeFloors(): string {
  try {
    const { config } = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { config?: Record<string, string> };
    return `glibc ${config?.glibc} and libstdc++ GLIBCXX ${config?.glibcxx}`;
  } catch {
    return 'see "config" in zotune\'s package.json';
  }
}

function loadError(err: unknown, file: string | undefined): ZotuneError {
  const libc = detectLibc();
  const why = err instanceof Error ? err.message : String(err);
  let msg: string;
  if (file) {
    const glibcHint = /GLIBC|GLIBCXX|CXXABI/.test(why) ? ` This system's C or C++ runtime library is older than the prebuilt binary needs (${runtimeFloors()}).` : '';
    msg = `zotune: the native engine ${file} failed to load: ${why}.${glibcHint} To fix it, ${buildRemedy()}`;
  } else {
    const dir = path.join(packageRoot, 'prebuilds');
    const shipped = fs.existsSync(dir) ? fs.readdirSync(dir).join(', ') || 'none' : 'none';
    msg =
      libc === 'musl'
        ? `zotune: could not find the native engine. This is a musl system (Alpine?): zotune ships prebuilt binaries for glibc Linux only (shipped: ${shipped}). To fix it, ${buildRemedy()}`
        : `zotune: could not find the native engine. No native binary fits ${target} (${libc}, Node ${process.versions.node}, N-API ${process.versions.napi}); shipped prebuilds: ${shipped}. To fix it, reinstall zotune on a supported system, or ${buildRemedy()}`;
  }
  return new ZotuneError('ZOTUNE_NO_BINARY', msg, { cause: err });
}

/**
 * Null if the loaded addon speaks this library's contract (ADDON_ABI), else why not: an addon left
 * from an older or newer zotune (a stale build folder, a mixed install) would misread arguments.
 */
export function abiMismatch(addon: { abi?: unknown }, file: string): string | null {
  if (addon.abi === ADDON_ABI) return null;
  const got = typeof addon.abi === 'number' ? `contract version ${addon.abi}` : 'no contract version (an older build)';
  return `${file} was built from another zotune: it reports ${got}, this library needs ${ADDON_ABI}`;
}

let cpu: { addon: NativeAddon; info: BinaryInfo } | undefined;

function loadCpu(): { addon: NativeAddon; info: BinaryInfo } {
  if (cpu) return cpu;
  let file: string | undefined;
  try {
    const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    const sourceBuild = path.join(packageRoot, 'native', 'build', 'Release', 'zotune.node'); // the remedy's output: it replaces a prebuild that failed
    file = !process.env.ZOTUNE_PREBUILD && fs.existsSync(sourceBuild) ? sourceBuild : nodeGypBuild.resolve(packageRoot);
    const addon = require(file) as NativeAddon;
    const mismatch = abiMismatch(addon, file);
    if (mismatch) throw new Error(mismatch);
    cpu = { addon, info: { path: file, origin: originOf(file) } };
    return cpu;
  } catch (err) {
    throw loadError(err, file);
  }
}

/** The CPU addon; throws ZOTUNE_NO_BINARY with the remedy when none loads. */
export function native(): NativeAddon {
  return loadCpu().addon;
}

/** Which CPU binary is loaded, and from where. */
export function nativeBinary(): BinaryInfo {
  return loadCpu().info;
}

// --- CUDA addon --------------------------------------------------------------------------------

export interface CudaCandidate extends BinaryInfo {
  exists: boolean;
  /** Why it did not load (only for candidates that were tried). */
  error?: string;
}

export interface CudaLoad {
  addon?: CudaAddon;
  /** The candidate that loaded. */
  binary?: CudaCandidate;
  /** Every place looked at, in order. */
  candidates: CudaCandidate[];
  /** Why no CUDA addon is loaded, with the remedy (absent when one is). */
  error?: string;
}

const CUDA_FILE = 'zotune_cuda.node';

/** The CUDA binaries the loader would try, in order. */
export function cudaCandidates(): CudaCandidate[] {
  const explicit = process.env.ZOTUNE_CUDA_BINARY;
  const list = explicit
    ? [{ path: path.resolve(explicit), origin: 'ZOTUNE_CUDA_BINARY' }]
    : [
        { path: path.join(packageRoot, 'build-cuda', 'Release', 'cuda', CUDA_FILE), origin: 'source build (build-cuda/Release/cuda)' },
        { path: path.join(packageRoot, 'prebuilds', target, 'cuda', CUDA_FILE), origin: `prebuilt (prebuilds/${target}/cuda)` },
      ];
  return list.map((c) => ({ ...c, exists: fs.existsSync(c.path) }));
}

let cuda: CudaLoad | undefined;

/** Loads the CUDA addon once; never throws (the reason is in `error`). Loading does not touch the GPU. */
export function loadCuda(): CudaLoad {
  if (cuda) return cuda;
  const candidates = cudaCandidates();
  for (const c of candidates) {
    if (!c.exists) continue;
    try {
      const addon = require(c.path) as CudaAddon;
      const mismatch = abiMismatch(addon, c.path);
      if (mismatch) throw new Error(mismatch);
      cuda = { addon, binary: c, candidates };
      return cuda;
    } catch (err) {
      c.error = err instanceof Error ? err.message : String(err);
    }
  }
  const tried = candidates.filter((c) => c.error).map((c) => `${c.path} failed to load: ${c.error}`);
  const error = process.env.ZOTUNE_CUDA_BINARY && !candidates[0].exists
    ? `ZOTUNE_CUDA_BINARY=${process.env.ZOTUNE_CUDA_BINARY} does not exist`
    : tried.length
      ? tried.join('; ')
      : `no CUDA addon is built or shipped for ${target}: ${fs.existsSync(path.join(packageRoot, 'node_modules', 'cmake-js')) ? 'build it with `npm run build:cuda` (needs nvcc and cmake)' : 'build one in a zotune checkout (`npm install && npm run build:cuda`, needs nvcc and cmake)'}, then point ZOTUNE_CUDA_BINARY at its zotune_cuda.node`;
  cuda = { candidates, error };
  return cuda;
}
