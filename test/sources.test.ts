/** native/sources.json is the one source list of both build systems: it must match the tree. */
import fs from 'node:fs';
import path from 'node:path';
import { root } from './helpers/spawn';

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
  for (const g of ['core', 'avx2', 'addon', 'cuda']) expect(Array.isArray(groups[g])).toBe(true);
  for (const [g, files] of Object.entries(groups)) expect([g, files.length]).toEqual([g, new Set(files).size]);
});

test('ISA flags reach exactly the *_avx2.cc files; .cu files only build into the CUDA addon', () => {
  // -mavx2 is applied per group: an AVX2 kernel outside the group would not compile, a scalar
  // file inside it would run AVX2 code on the scalar path.
  expect(groups.avx2.filter((f) => !/_avx2\.cc$/.test(f))).toEqual([]);
  const misplaced = Object.entries(groups).flatMap(([g, files]) => files.filter((f) => (g !== 'avx2' && /_avx2\.cc$/.test(f)) || (g !== 'cuda' && f.endsWith('.cu'))).map((f) => `${g}: ${f}`));
  expect(misplaced).toEqual([]);
});
