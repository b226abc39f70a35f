#!/usr/bin/env node
// `npm test`: builds dist/ (the end-to-end tests run the built services as `npm start` does), type-checks,
// then runs every jest suite once.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (args) => execFileSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
try {
  run([join(root, 'tools/build.mjs'), '--typecheck']);
  run([join(root, 'node_modules/jest/bin/jest.js'), ...process.argv.slice(2)]);
} catch (e) {
  process.exit(typeof e.status === 'number' && e.status !== 0 ? e.status : 1);
}
