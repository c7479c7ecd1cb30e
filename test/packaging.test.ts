/**
 * `npm pack` works for real users: a copy of this checkout builds its prebuild (prebuildify) and
 * packs; the tarball installs into an empty project with no compiler reachable (PATH holds only
 * node and npm) from the npm cache, loads, runs kernels with the repository's values, and runs
 * its CLI. Without binaries it fails with ZOTUNE_NO_BINARY, and the remedy the message names works.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { rng, Tensor } from '../lib';
import { loadCuda } from '../lib/native/load';
import { cleanEnv, root, run, Run } from './helpers/spawn';

const target = `${process.platform}-${process.arch}`;
const cudaBuild = loadCuda().candidates.find((c) => c.origin.startsWith('source build') && c.exists)?.path;

let tmp: string, src: string, app: string, bin: string, tarball: string;
let packed: { path: string; size: number; mode: number }[];

function ok(r: Run, what: string): Run {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

function onPath(name: string): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const f = path.join(dir, name);
    if (fs.existsSync(f)) return fs.realpathSync(f);
  }
  throw new Error(`${name} is not on PATH`);
}

/** What an end user has: node and npm, nothing else on PATH. */
const userEnv = () => ({ PATH: bin, HOME: os.homedir(), TMPDIR: os.tmpdir(), LANG: 'C' });
const user = (cmd: string, args: string[], cwd = app) => run(cmd, args, { cwd, env: userEnv(), timeout: 300_000 });
const userNode = (code: string) => user(path.join(bin, 'node'), ['-e', code]);

/** Values a user script prints, to compare with this process's own results. */
const FILLS = `
  const z = require('zotune');
  const out = {};
  for (const dist of ['uniform', 'normal', 'rademacher', 'bernoulli']) {
    const t = z.Tensor.zeros([4099]);
    z.rng.fillSync(t, dist, { seed: 0xfeedn, stream: 5 }, { first: 77, p: 0.4 });
    out[dist] = Buffer.from(t.data().buffer, 0, 4099 * 4).toString('base64');
    t.dispose();
  }
  const { nativeBinary } = require('zotune/dist/native/load');
  console.log(JSON.stringify({ out, binary: nativeBinary(), backend: z.selectBackend() }));`;

function expected(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const dist of ['uniform', 'normal', 'rademacher', 'bernoulli'] as const) {
    const t = Tensor.zeros([4099]);
    rng.fillSync(t, dist, { seed: 0xfeedn, stream: 5 }, { first: 77, p: 0.4 });
    out[dist] = Buffer.from((t.data() as Float32Array).buffer, 0, 4099 * 4).toString('base64');
    t.dispose();
  }
  return out;
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-pack-'));
  src = path.join(tmp, 'src');
  app = path.join(tmp, 'app');
  bin = path.join(tmp, 'bin');

  // The source tree as git sees it (tracked and new files), without build outputs.
  const files = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '-z'], { cwd: root, encoding: 'utf8' }).split('\0').filter(Boolean);
  for (const f of files) {
    if (!fs.existsSync(path.join(root, f))) continue; // deleted, not yet committed
    fs.mkdirSync(path.dirname(path.join(src, f)), { recursive: true });
    fs.copyFileSync(path.join(root, f), path.join(src, f));
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(src, 'node_modules'));

  ok(run('npm', ['run', 'build:prebuild'], { cwd: src, timeout: 600_000 }), 'npm run build:prebuild');
  if (cudaBuild) ok(run(process.execPath, [path.join(src, 'scripts', 'stage-cuda.js'), cudaBuild], { cwd: src }), 'stage-cuda');
  const pack = ok(run('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: src, timeout: 300_000 }), 'npm pack');
  const info = JSON.parse(pack.stdout)[0] as { filename: string; files: typeof packed };
  tarball = path.join(tmp, info.filename);
  packed = info.files;

  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync(onPath('npm'), path.join(bin, 'npm'));
  fs.symlinkSync(onPath('npx'), path.join(bin, 'npx'));
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  ok(user(path.join(bin, 'npm'), ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund']), 'npm install <tarball>');
}, 900_000);

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the tarball', () => {
  test('holds dist/, the prebuild, sources and docs, and no tests, benchmarks or build junk', () => {
    const paths = packed.map((f) => f.path);
    for (const f of ['package.json', 'README.md', 'CHANGELOG.md', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', `prebuilds/${target}/zotune.glibc.node`, 'native/binding.gyp', 'native/zotune.gypi', 'native/gyp-sources.js', 'native/sources.json', 'scripts/gpu-check.js'])
      expect(paths).toContain(f);
    // no binding.gyp at the root: npm would add an implicit `node-gyp rebuild` install step for it
    expect(paths).not.toContain('binding.gyp');
    if (cudaBuild) expect(paths).toContain(`prebuilds/${target}/cuda/zotune_cuda.node`);
    const junk = paths.filter((p) => /^(test|bench|build|build-cuda|build-cmake|node_modules|lib|\.ci|\.git)\//.test(p) || /\.(o|a|tgz|map|log)$/.test(p) || /^scripts\/(?!gpu-check\.js$)/.test(p));
    expect(junk).toEqual([]);
    // only one CPU addon where node-gyp-build looks (a second one there would win by readdir order)
    expect(paths.filter((p) => p.startsWith(`prebuilds/${target}/`) && p.split('/').length === 3)).toEqual([`prebuilds/${target}/zotune.glibc.node`]);
    expect(fs.statSync(tarball).size).toBeLessThan(8 * 2 ** 20);
  });

  test('has no install script and gypfile false (nothing compiles or downloads on install)', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(app, 'node_modules', 'zotune', 'package.json'), 'utf8'));
    expect(pkg.gypfile).toBe(false);
    for (const s of ['preinstall', 'install', 'postinstall', 'prepare']) expect([s, pkg.scripts?.[s]]).toEqual([s, undefined]);
    expect(fs.existsSync(path.join(app, 'node_modules', 'zotune', 'build'))).toBe(false);
  });
});

describe('installed into an empty project with no compiler on PATH', () => {
  test('no compiler, make or python is reachable there', () => {
    const found = (tool: string) => user('/bin/sh', ['-c', `command -v ${tool}`]).status === 0;
    expect(['node', 'npm'].filter(found)).toEqual(['node', 'npm']);
    expect(['g++', 'gcc', 'cc', 'c++', 'clang', 'make', 'python3', 'nvcc'].filter(found)).toEqual([]);
  });

  test('require("zotune") loads the prebuild and gives the repository\'s values', () => {
    const r = ok(userNode(FILLS), 'user script');
    expect(r.stderr).toBe('');
    const got = JSON.parse(r.stdout);
    expect(got.binary).toEqual({ path: path.join(app, 'node_modules', 'zotune', 'prebuilds', target, 'zotune.glibc.node'), origin: `prebuilt (prebuilds/${target})` });
    expect(got.out).toEqual(expected());
    expect(got.backend.backend).toBe(loadCuda().addon && loadCuda().addon!.probe().usable ? 'cuda' : 'cpu');
  });

  test('the zotune command runs from node_modules/.bin', () => {
    const r = ok(user(path.join(app, 'node_modules', '.bin', 'zotune'), ['doctor', '--json']), 'zotune doctor');
    const d = JSON.parse(r.stdout);
    expect(d.cpu.binary.origin).toBe(`prebuilt (prebuilds/${target})`);
    if (cudaBuild) expect(d.cuda.binary).toEqual({ path: path.join(app, 'node_modules', 'zotune', 'prebuilds', target, 'cuda', 'zotune_cuda.node'), origin: `prebuilt (prebuilds/${target}/cuda)` });
    expect(typeof d.cuda.reason).toBe('string');
    expect(user(path.join(app, 'node_modules', '.bin', 'zotune'), ['--version']).stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version);
  });

  test('npm ci from the lockfile (and npm rebuild) installs it again without compiling anything', () => {
    expect(fs.existsSync(path.join(app, 'package-lock.json'))).toBe(true);
    fs.rmSync(path.join(app, 'node_modules'), { recursive: true, force: true });
    ok(user(path.join(bin, 'npm'), ['ci', '--prefer-offline', '--no-audit', '--no-fund']), 'npm ci');
    ok(user(path.join(bin, 'npm'), ['rebuild']), 'npm rebuild');
    expect(fs.existsSync(path.join(app, 'node_modules', 'zotune', 'build'))).toBe(false);
    expect(fs.existsSync(path.join(app, 'node_modules', 'zotune', 'native', 'build'))).toBe(false);
    expect(JSON.parse(ok(userNode(FILLS), 'user script after npm ci').stdout).binary.origin).toBe(`prebuilt (prebuilds/${target})`);
  });

  test('without its binaries: ZOTUNE_NO_BINARY, and the build command it names works', () => {
    const pkgDir = path.join(app, 'node_modules', 'zotune');
    fs.renameSync(path.join(pkgDir, 'prebuilds'), path.join(tmp, 'prebuilds-moved'));
    const r = ok(userNode(`try { require('zotune').cpuInfo(); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`), 'load without binaries');
    const err = JSON.parse(r.stdout) as { code: string; message: string };
    expect(err.code).toBe('ZOTUNE_NO_BINARY');
    const remedy = /run `([^`]+)` in your project/.exec(err.message)?.[1];
    expect(remedy).toBe(`npm install --no-save node-addon-api node-gyp && npx node-gyp rebuild -C ${path.join(pkgDir, 'native')}`);
    // A user with a compiler runs it (the npm cache stands in for the registry).
    ok(run('/bin/sh', ['-c', remedy!.replace('npm install', 'npm install --prefer-offline --no-audit --no-fund')], { cwd: app, env: cleanEnv(), timeout: 600_000 }), 'the remedy');
    const after = JSON.parse(ok(userNode(FILLS), 'user script after the source build').stdout);
    expect(after.binary).toEqual({ path: path.join(pkgDir, 'native', 'build', 'Release', 'zotune.node'), origin: 'source build (native/build/Release)' });
    expect(after.out).toEqual(expected());
  });
});
