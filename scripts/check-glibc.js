#!/usr/bin/env node
// Reports the newest symbol version each native binary needs from the C and C++ runtimes
// (GLIBC_*, GLIBCXX_*, CXXABI_*, GCC_*) and checks it against the floors declared in package.json
// "config": glibc/glibcxx for the CPU addon, cudaGlibc/cudaGlibcxx for zotune_cuda.node.
//
//   node scripts/check-glibc.js [--json] [--glibc V] [--glibcxx V] [file.node ...]
//
// Without files: every built or staged addon of this checkout. --glibc/--glibcxx override the
// declared floors. Exit status: 0 all within the floors, 1 a binary needs more, 2 usage/tool error.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function parseVersion(v) {
  return String(v).replace(/^>=\s*/, '').split('.').map(Number);
}
function compare(a, b) {
  const x = parseVersion(a), y = parseVersion(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] || 0) - (y[i] || 0);
    if (d) return d;
  }
  return 0;
}

/** { GLIBC: '2.32', GLIBCXX: '3.4.30', ... }: the newest version needed per prefix. */
function neededVersions(file) {
  const out = execFileSync('readelf', ['-V', '-W', file], { encoding: 'utf8' });
  const section = out.slice(out.indexOf(".gnu.version_r'"));
  const max = {};
  for (const m of section.matchAll(/Name: ([A-Z]+)_([0-9][0-9.]*)/g)) {
    const [, prefix, v] = m;
    if (!max[prefix] || compare(v, max[prefix]) > 0) max[prefix] = v;
  }
  return max;
}

function defaultFiles() {
  const files = [];
  const add = (f) => fs.existsSync(f) && files.push(f);
  add(path.join(root, 'build', 'Release', 'zotune.node'));
  add(path.join(root, 'build-cuda', 'Release', 'cuda', 'zotune_cuda.node'));
  const pre = path.join(root, 'prebuilds');
  for (const dir of fs.existsSync(pre) ? fs.readdirSync(pre) : []) {
    for (const f of fs.readdirSync(path.join(pre, dir))) if (f.endsWith('.node')) files.push(path.join(pre, dir, f));
    const cuda = path.join(pre, dir, 'cuda');
    for (const f of fs.existsSync(cuda) ? fs.readdirSync(cuda) : []) if (f.endsWith('.node')) files.push(path.join(cuda, f));
  }
  return files;
}

function main(argv) {
  const config = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).config || {};
  const override = {};
  const files = [];
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') json = true;
    else if (a === '--glibc' || a === '--glibcxx') override[a.slice(2)] = argv[++i];
    else if (a.startsWith('-')) {
      console.error(`check-glibc: unknown option '${a}'`);
      return 2;
    } else files.push(path.resolve(a));
  }
  const list = files.length ? files : defaultFiles();
  if (!list.length) {
    console.error('check-glibc: no native binary found (build one with npm run build:cpu)');
    return 2;
  }
  let failed = false;
  const results = [];
  for (const file of list) {
    const isCuda = path.basename(file).startsWith('zotune_cuda');
    const floors = {
      GLIBC: override.glibc ?? (isCuda ? config.cudaGlibc : config.glibc),
      GLIBCXX: override.glibcxx ?? (isCuda ? config.cudaGlibcxx : config.glibcxx),
    };
    let needed;
    try {
      needed = neededVersions(file);
    } catch (err) {
      console.error(`check-glibc: cannot read ${file}: ${err.message}`);
      return 2;
    }
    const problems = [];
    for (const [prefix, floor] of Object.entries(floors)) {
      if (!floor) problems.push(`no ${prefix} floor declared in package.json config`);
      else if (needed[prefix] && compare(needed[prefix], floor) > 0)
        problems.push(`needs ${prefix}_${needed[prefix]}, newer than the declared floor ${floor.replace(/^>=\s*/, '')}`);
    }
    failed = failed || problems.length > 0;
    results.push({ file: path.relative(process.cwd(), file) || file, needed, floors, ok: problems.length === 0, problems });
  }
  if (json) console.log(JSON.stringify(results, null, 2));
  else
    for (const r of results) {
      const v = Object.entries(r.needed).map(([k, x]) => `${k}_${x}`).join(' ');
      console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.file}: ${v}${r.problems.length ? `\n     ${r.problems.join('\n     ')}` : ''}`);
    }
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
