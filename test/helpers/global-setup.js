// Some tests spawn the compiled package (dist/): recompile it first when lib/ changed since.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');

function newest(dir, ext) {
  let t = 0;
  if (!fs.existsSync(dir)) return 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p, ext));
    else if (e.name.endsWith(ext)) t = Math.max(t, fs.statSync(p).mtimeMs);
  }
  return t;
}

module.exports = async () => {
  const src = Math.max(newest(path.join(root, 'lib'), '.ts'), fs.statSync(path.join(root, 'tsconfig.json')).mtimeMs);
  if (src > newest(path.join(root, 'dist'), '.js'))
    execFileSync(path.join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
};
