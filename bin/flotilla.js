#!/usr/bin/env node
// The `flotilla` command: runs the built CLI, building the repository first if it has not been built yet.
'use strict';
const { execFileSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const main = path.join(root, 'dist', 'apps', 'cli', 'src', 'main.js');

if (!existsSync(main)) {
  process.stderr.write('flotilla: first run: building dist/ with tools/build.mjs\n');
  try {
    // The build's own output goes to stderr so that stdout stays clean for --json.
    execFileSync(process.execPath, [path.join(root, 'tools', 'build.mjs')], {
      cwd: root,
      stdio: ['inherit', 2, 'inherit'],
    });
  } catch (e) {
    process.stderr.write(
      `flotilla: the build failed (${e.message.split('\n')[0]}); run \`node tools/build.mjs\` to see why\n`,
    );
    process.exit(1);
  }
}
require(main);
