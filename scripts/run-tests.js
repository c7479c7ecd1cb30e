#!/usr/bin/env node
// The README's test command: type-check, run jest, and end with the plain summary line CI reads
// ("N passed, N failed[, N skipped]"), also written to build/test-summary.txt.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);

const tsc = spawnSync(bin('tsc'), ['-p', 'tsconfig.test.json', '--noEmit'], { cwd: root, stdio: 'inherit' });
const typecheckFailed = tsc.status !== 0 ? 1 : 0;
if (typecheckFailed) console.error('type check failed');

const out = path.join(root, 'build', 'jest-results.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.rmSync(out, { force: true });
const jest = spawnSync(bin('jest'), ['--json', `--outputFile=${out}`, ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });

let passed = 0, failed = typecheckFailed, skipped = 0;
if (fs.existsSync(out)) {
  const r = JSON.parse(fs.readFileSync(out, 'utf8'));
  passed += r.numPassedTests;
  failed += r.numFailedTests + r.numRuntimeErrorTestSuites;
  skipped += r.numPendingTests + r.numTodoTests;
  for (const suite of r.testResults)
    for (const t of suite.assertionResults)
      if (t.status === 'pending') console.log(`skipped: ${t.fullName}`);
} else {
  failed += 1;
}
const line = `${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : '');
fs.writeFileSync(path.join(root, 'build', 'test-summary.txt'), line + '\n');
console.log(line);
process.exit(failed || jest.status ? 1 : 0);
