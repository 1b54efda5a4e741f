'use strict';
// The examples run as a newcomer would run them, and the TypeScript
// declarations type-check a program that uses the whole API surface.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');

const PKG = path.resolve(__dirname, '..');

function run(file, args, timeout = 30000) {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: PKG, timeout }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 'killed') : 0, stdout, stderr });
    });
  });
}

describe('examples', () => {
  for (const name of ['streams.js', 'queue-worker.js', 'kv.js']) {
    it(`node examples/${name} runs and exits by itself`, async () => {
      const r = await run(process.execPath, [path.join('examples', name)]);
      assert.equal(r.code, 0, r.stderr);
      assert.notEqual(r.stdout.trim(), '');
    });
  }

  const tsc = path.join(PKG, 'node_modules', 'typescript', 'bin', 'tsc');
  it('index.d.ts type-checks examples/typed.ts (tsc --strict)', { skip: !fs.existsSync(tsc) && 'typescript not installed' }, async () => {
    const r = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], 60000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });
});
