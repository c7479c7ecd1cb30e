/** native/sources.json is the one source list of both build systems: it must match the tree. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { root, run } from './helpers/spawn';

const groups = JSON.parse(fs.readFileSync(path.join(root, 'native', 'sources.json'), 'utf8')) as Record<string, string[]>;
const listed = new Set(Object.values(groups).flat());

function walk(dir: string): string[] {
  if (!fs.existsSync(path.join(root, dir))) return [];
  return fs.readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    return e.isDirectory() ? walk(rel) : /\.(cc|cu)$/.test(e.name) ? [rel] : [];
  });
}

test('every listed source file exists', () => {
  const missing = [...listed].filter((f) => !fs.existsSync(path.join(root, f)));
  expect(missing).toEqual([]);
});

test('every .cc and .cu file under native/ and cuda/ is listed', () => {
  const unlisted = [...walk('native'), ...walk('cuda')].filter((f) => !listed.has(f));
  expect(unlisted).toEqual([]);
});

test('the groups the build systems read are there and hold no duplicates', () => {
  for (const g of ['core', 'avx2', 'avx512', 'addon', 'cuda']) expect(Array.isArray(groups[g])).toBe(true);
  for (const [g, files] of Object.entries(groups)) expect([g, files.length]).toEqual([g, new Set(files).size]);
});

test('ISA flags reach exactly the *_avx2.cc and *_avx512.cc files; .cu files only build into the CUDA addon', () => {
  // -mavx2 / -mavx512* are applied per group: a kernel outside its group would not compile, a scalar
  // file inside one would run wide code on a narrower path.
  expect(groups.avx2.filter((f) => !/_avx2\.cc$/.test(f))).toEqual([]);
  expect(groups.avx512.filter((f) => !/_avx512\.cc$/.test(f))).toEqual([]);
  const misplaced = Object.entries(groups).flatMap(([g, files]) =>
    files.filter((f) => (g !== 'avx2' && /_avx2\.cc$/.test(f)) || (g !== 'avx512' && /_avx512\.cc$/.test(f)) || (g !== 'cuda' && f.endsWith('.cu'))).map((f) => `${g}: ${f}`));
  expect(misplaced).toEqual([]);
});

test('gyp-sources.js prints a group relative to the folder gyp runs in (the root, or native/ of an installed package)', () => {
  const printed = (cwd: string) => run(process.execPath, [path.join(root, 'native', 'gyp-sources.js'), 'avx2'], { cwd }).stdout.trim().split(' ');
  expect(printed(root)).toEqual(groups.avx2);
  expect(printed(path.join(root, 'native'))).toEqual(groups.avx2.map((f) => path.relative('native', f)));
});

test('npm pack refuses a tree without the CPU prebuild, or with one older than the native sources', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-prepack-'));
  try {
    fs.mkdirSync(path.join(tmp, 'scripts'));
    fs.copyFileSync(path.join(root, 'scripts', 'check-prebuild.js'), path.join(tmp, 'scripts', 'check-prebuild.js'));
    fs.mkdirSync(path.join(tmp, 'native', 'cpu'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'native', 'sources.json'), JSON.stringify({ core: ['native/cpu/a.cc'] }));
    fs.writeFileSync(path.join(tmp, 'native', 'cpu', 'a.cc'), '');
    const check = () => run(process.execPath, [path.join(tmp, 'scripts', 'check-prebuild.js')], { cwd: tmp });
    expect(check()).toMatchObject({ status: 1, stderr: expect.stringContaining('is missing; run `npm run build:prebuild` first') });
    const prebuild = path.join(tmp, 'prebuilds', `${process.platform}-${process.arch}`, 'zotune.glibc.node');
    fs.mkdirSync(path.dirname(prebuild), { recursive: true });
    fs.writeFileSync(prebuild, '');
    fs.utimesSync(prebuild, new Date(1e12), new Date(1e12)); // built in 2001
    expect(check()).toMatchObject({ status: 1, stderr: expect.stringContaining('older than 1 native source(s), e.g. native/cpu/a.cc') });
    fs.utimesSync(prebuild, new Date(), new Date(Date.now() + 60_000));
    expect(check().status).toBe(0);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
