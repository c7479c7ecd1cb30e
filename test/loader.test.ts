/**
 * The loader (lib/native/load.ts): which binary loads and from where, and errors that name the
 * fix when none can. Each case runs a copy of the package in a fresh process.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ADDON_ABI } from '../lib/native/abi';
import { abiMismatch, nativeBinary } from '../lib/native/load';
import { root, runNode } from './helpers/spawn';

const cpuBuild = path.join(root, 'build', 'Release', 'zotune.node');
let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-loader-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * A copy of the package (dist/ and package.json) with its runtime dependencies only, like an installed
 * package; `devTools` links the checkout's node_modules instead, like a repository clone.
 */
function copyPackage(name: string, opts: { prebuild?: Buffer; devTools?: boolean } = {}): string {
  const dir = path.join(tmp, name);
  fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
  if (opts.devTools) fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  else
    for (const dep of Object.keys(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).dependencies))
      fs.cpSync(path.join(root, 'node_modules', dep), path.join(dir, 'node_modules', dep), { recursive: true });
  if (opts.prebuild) {
    fs.mkdirSync(path.join(dir, 'prebuilds', `${process.platform}-${process.arch}`), { recursive: true });
    fs.writeFileSync(path.join(dir, 'prebuilds', `${process.platform}-${process.arch}`, 'zotune.glibc.node'), opts.prebuild);
  }
  return dir;
}

/** Loads the copy and runs a kernel; reports the binary or the error. */
const probeScript = `
  const z = require('./dist');
  const { nativeBinary } = require('./dist/native/load');
  try {
    const t = z.Tensor.zeros([16]);
    z.rng.fillSync(t, 'normal', { seed: 1 });
    console.log(JSON.stringify({ ok: true, binary: nativeBinary(), cuda: Object.keys(require.cache).some((p) => p.includes('zotune_cuda')) }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, code: e.code, message: e.message }));
  }`;

function load(dir: string, env: Record<string, string> = {}) {
  const r = runNode(probeScript, { cwd: dir, env });
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' }); // quiet: nothing on stderr
  return JSON.parse(r.stdout) as { ok: boolean; binary?: { path: string; origin: string }; cuda?: boolean; code?: string; message?: string };
}

test('in this checkout the source build loads, and the CPU path never touches the CUDA addon', () => {
  expect(nativeBinary()).toEqual({ path: cpuBuild, origin: 'source build (build/Release)' });
  const r = load(root);
  expect(r).toEqual({ ok: true, binary: { path: cpuBuild, origin: 'source build (build/Release)' }, cuda: false });
});

test('an installed package without binaries: ZOTUNE_NO_BINARY naming the build command for it', () => {
  const dir = copyPackage('installed');
  const r = load(dir);
  expect(r.ok).toBe(false);
  expect(r.code).toBe('ZOTUNE_NO_BINARY');
  expect(r.message).toContain(`No native binary fits ${process.platform}-${process.arch} (glibc`);
  expect(r.message).toContain('shipped prebuilds: none');
  expect(r.message).toContain(`npm install --no-save node-addon-api node-gyp && npx node-gyp rebuild -C ${dir}`);
  expect(r.message).toContain('g++, make and python3');
});

test('a checkout without a build: the message says npm run build:cpu', () => {
  const dir = copyPackage('clone', { devTools: true });
  const r = load(dir);
  expect(r.code).toBe('ZOTUNE_NO_BINARY');
  expect(r.message).toContain(`run \`npm run build:cpu\` in ${dir}`);
});

test('the shipped prebuild loads from prebuilds/, or from the folder ZOTUNE_PREBUILD names', () => {
  const dir = copyPackage('prebuilt', { prebuild: fs.readFileSync(cpuBuild) });
  const file = path.join(dir, 'prebuilds', `${process.platform}-${process.arch}`, 'zotune.glibc.node');
  expect(load(dir)).toMatchObject({ ok: true, binary: { path: file, origin: `prebuilt (prebuilds/${process.platform}-${process.arch})` } });
  const other = copyPackage('empty');
  expect(load(other, { ZOTUNE_PREBUILD: dir })).toMatchObject({ ok: true, binary: { path: file, origin: `ZOTUNE_PREBUILD=${dir}: prebuilt (prebuilds/${process.platform}-${process.arch})` } });
});

test('on musl the message says prebuilds are glibc-only and how to build', () => {
  const dir = copyPackage('musl', { prebuild: fs.readFileSync(cpuBuild) });
  const r = load(dir, { LIBC: 'musl' }); // node-gyp-build then skips glibc-tagged binaries, as on Alpine
  expect(r.code).toBe('ZOTUNE_NO_BINARY');
  expect(r.message).toContain('This is a musl system (Alpine?): zotune ships prebuilt binaries for glibc Linux only');
  expect(r.message).toContain('npx node-gyp rebuild');
});

test('a binary that fails to load is named, with the loader error and the remedy', () => {
  const dir = copyPackage('corrupt', { prebuild: Buffer.from('not an ELF file') });
  const r = load(dir);
  expect(r.code).toBe('ZOTUNE_NO_BINARY');
  expect(r.message).toContain(`the native engine ${path.join(dir, 'prebuilds', `${process.platform}-${process.arch}`, 'zotune.glibc.node')} failed to load`);
  expect(r.message).toMatch(/invalid ELF header|file too short/);
  expect(r.message).toContain('npx node-gyp rebuild');
});

test('a prebuild needing a newer glibc than the system has: the message says so and names the floors', () => {
  // Same binary, its GLIBC_2.x version needs renamed GLIBC_9.x: what an old distribution reports.
  const bin = Buffer.from(fs.readFileSync(cpuBuild).toString('latin1').replace(/GLIBC_2\./g, 'GLIBC_9.'), 'latin1');
  const dir = copyPackage('old-glibc', { prebuild: bin });
  const r = load(dir);
  const { config } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  expect(r.code).toBe('ZOTUNE_NO_BINARY');
  expect(r.message).toMatch(/version `GLIBC_9\.[0-9.]+' not found/);
  expect(r.message).toContain(`older than the prebuilt binary needs (glibc ${config.glibc} and libstdc++ GLIBCXX ${config.glibcxx})`);
  expect(r.message).toContain('npx node-gyp rebuild');
});

test('an addon built for another contract version is refused with the remedy; the header and the library agree', () => {
  const header = fs.readFileSync(path.join(root, 'native', 'common', 'abi.h'), 'utf8').match(/kAddonAbi = (\d+);/);
  expect(Number(header?.[1])).toBe(ADDON_ABI);
  // this library's copy expects the next version: the current binary is then "from another zotune"
  const dir = copyPackage('abi', { prebuild: fs.readFileSync(cpuBuild) });
  const abiJs = path.join(dir, 'dist', 'native', 'abi.js');
  fs.writeFileSync(abiJs, fs.readFileSync(abiJs, 'utf8').replace(`ADDON_ABI = ${ADDON_ABI}`, `ADDON_ABI = ${ADDON_ABI + 1}`));
  const r = load(dir);
  expect(r.code).toBe('ZOTUNE_NO_BINARY');
  expect(r.message).toContain(`it reports contract version ${ADDON_ABI}, this library needs ${ADDON_ABI + 1}`);
  expect(r.message).toContain('npx node-gyp rebuild');
  expect(abiMismatch({}, 'x.node')).toContain('no contract version');
  expect(abiMismatch({ abi: ADDON_ABI }, 'x.node')).toBeNull();
});
