#!/usr/bin/env node
// prepack guard: a tarball must hold the CPU prebuild (it is git-ignored, so a clean checkout has
// none) built from the sources being packed. Exits 1 with the command to run otherwise.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const target = `${process.platform}-${process.arch}`;
const prebuild = path.join(root, 'prebuilds', target, 'zotune.glibc.node');
const fail = (why) => {
  console.error(`npm pack: ${why}; run \`npm run build:prebuild\` first (the package would install without a working engine)`);
  process.exit(1);
};
if (!fs.existsSync(prebuild)) fail(`${path.relative(root, prebuild)} is missing`);
const built = fs.statSync(prebuild).mtimeMs;
const groups = require(path.join(root, 'native', 'sources.json'));
const headers = (dir) => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? headers(path.join(dir, e.name)) : /\.(h|hpp)$/.test(e.name) ? [path.join(dir, e.name)] : []));
const sources = [...Object.values(groups).flat().map((f) => path.join(root, f)), ...headers(path.join(root, 'native'))];
const newer = sources.filter((f) => fs.statSync(f).mtimeMs > built);
if (newer.length) fail(`${path.relative(root, prebuild)} is older than ${newer.length} native source(s), e.g. ${path.relative(root, newer[0])}`);
