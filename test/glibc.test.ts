/** The glibc / libstdc++ floor declared in package.json "config" holds for every built addon. */
import fs from 'node:fs';
import path from 'node:path';
import { loadCuda } from '../lib/native/load';
import { root, run } from './helpers/spawn';

const script = path.join(root, 'scripts', 'check-glibc.js');
const cpuBuild = path.join(root, 'build', 'Release', 'zotune.node');

interface Result {
  file: string;
  needed: Record<string, string>;
  ok: boolean;
  problems: string[];
}

test('package.json declares the floors', () => {
  const { config } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  for (const k of ['glibc', 'glibcxx', 'cudaGlibc', 'cudaGlibcxx']) expect([k, config[k]]).toEqual([k, expect.stringMatching(/^>=\d+\.\d+/)]);
});

test('every built addon needs no newer GLIBC_/GLIBCXX_ than declared', () => {
  const r = run(process.execPath, [script, '--json']);
  const results = JSON.parse(r.stdout) as Result[];
  expect(results.filter((x) => !x.ok)).toEqual([]);
  expect(r.status).toBe(0);
  const files = results.map((x) => path.resolve(root, x.file));
  expect(files).toContain(cpuBuild);
  const cuda = loadCuda();
  if (cuda.addon) expect(files).toContain(cuda.binary!.path);
  for (const x of results) expect(x.needed.GLIBC).toMatch(/^2\.\d+/);
});

test('a floor below what the binary needs fails, naming the symbol version', () => {
  const r = run(process.execPath, [script, '--glibc', '2.2.5', cpuBuild]);
  expect(r.status).toBe(1);
  expect(r.stdout).toMatch(/FAIL .*zotune\.node: .*\n\s+needs GLIBC_2\.\d+, newer than the declared floor 2\.2\.5/);
});
