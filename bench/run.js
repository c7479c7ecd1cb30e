#!/usr/bin/env node
'use strict';
// `npm run bench` runs every bench/*.bench.js suite; `npm run bench -- perturb ceilings` runs those;
// flags such as --full pass through to the suites.
const fs = require('node:fs');
const path = require('node:path');
const { runSuite } = require('./harness');

async function main() {
  const all = fs.readdirSync(__dirname).filter((f) => f.endsWith('.bench.js')).map((f) => f.slice(0, -'.bench.js'.length)).sort();
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith('--')); // flags (--full) are read by the suites
  const unknown = wanted.filter((w) => !all.includes(w));
  if (unknown.length) {
    console.error(`unknown suite(s): ${unknown.join(', ')}; available: ${all.join(', ')}`);
    process.exit(2);
  }
  // ceilings first: other suites reuse its cached measurements
  const names = (wanted.length ? wanted : all).sort((a, b) => (a === 'ceilings' ? -1 : b === 'ceilings' ? 1 : 0));
  for (const name of names) await runSuite(require(path.join(__dirname, `${name}.bench.js`)));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
