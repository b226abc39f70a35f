#!/usr/bin/env node
// Builds every TypeScript source under apps/, libs/, bench/ and tools/ into dist/ with swc (paths preserved,
// `@flotilla/*` imports rewritten to relative paths), so `node dist/apps/<app>/src/main.js` runs as is.
// With --typecheck it first type-checks the whole repository with tsc.
import { transformFile } from '@swc/core';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const { paths } = require(join(root, 'tsconfig.base.json')).compilerOptions;

if (process.argv.includes('--typecheck')) {
  execFileSync(
    process.execPath,
    [join(root, 'node_modules/typescript/bin/tsc'), '--noEmit', '-p', join(root, 'tsconfig.json')],
    {
      stdio: 'inherit',
    },
  );
}

async function* sources(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') yield* sources(full);
    } else if (
      entry.name.endsWith('.ts') &&
      !entry.name.endsWith('.spec.ts') &&
      !entry.name.endsWith('.d.ts')
    ) {
      yield full;
    }
  }
}

const started = Date.now();
await rm(join(root, 'dist'), { recursive: true, force: true });
const jobs = [];
for (const top of ['apps', 'libs', 'bench', 'tools']) {
  for await (const file of sources(join(root, top))) {
    jobs.push(
      transformFile(file, {
        swcrc: false,
        sourceMaps: true,
        jsc: {
          parser: { syntax: 'typescript', decorators: true },
          transform: { legacyDecorator: true, decoratorMetadata: true },
          target: 'es2022',
          baseUrl: root,
          paths,
        },
        module: { type: 'commonjs' },
      }).then(async (out) => {
        const target = join(root, 'dist', relative(root, file)).replace(/\.ts$/, '.js');
        await mkdir(dirname(target), { recursive: true });
        await writeFile(target, `${out.code}\n//# sourceMappingURL=${target.split('/').pop()}.map\n`);
        if (out.map) await writeFile(`${target}.map`, out.map);
      }),
    );
  }
}
await Promise.all(jobs);
console.log(`built ${jobs.length} files into dist/ in ${Date.now() - started} ms`);
