/**
 * sidecar/Dockerfile, checked statically (no container engine here): multi-stage, the
 * final stage gets production dependencies only and runs as a numeric non-root user, the
 * entrypoint is the CLI the build produces, and everything the build copies is in the
 * repository and not excluded by .dockerignore.
 */
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..');
const lines = readFileSync(path.join(ROOT, 'sidecar', 'Dockerfile'), 'utf8')
  .split('\n')
  .filter((line) => line.trim() !== '' && !line.startsWith('#'));
const stages: string[][] = [];
for (const line of lines) {
  if (line.startsWith('FROM ')) stages.push([]);
  stages[stages.length - 1]!.push(line);
}
const final = stages[stages.length - 1]!;
const ignored = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .filter((line) => line.trim() !== '' && !line.startsWith('#'));

describe('sidecar/Dockerfile', () => {
  it('has a build stage, a production-dependencies stage and a final stage on node:20-slim', () => {
    expect(stages.map((stage) => stage[0])).toEqual(['FROM node:20-slim AS build', 'FROM node:20-slim AS prod-deps', 'FROM node:20-slim']);
  });

  it('installs production dependencies only for the final image, and copies no dev dependencies', () => {
    expect(stages[1]!.join('\n')).toMatch(/npm ci --omit=dev/);
    const copies = final.filter((line) => line.startsWith('COPY'));
    expect(copies).toContain('COPY --from=prod-deps /app/node_modules ./node_modules');
    expect(copies.filter((line) => line.includes('--from=build'))).toEqual(['COPY --from=build /src/dist ./dist']);
  });

  it('runs as a numeric non-root user, with baton as the entrypoint', () => {
    const user = final.find((line) => line.startsWith('USER '));
    expect(user).toMatch(/^USER [1-9]\d*:[1-9]\d*$/);
    expect(final.indexOf(user!)).toBeGreaterThan(final.findIndex((line) => line.startsWith('RUN')));
    expect(final).toContain('ENTRYPOINT ["baton"]');
    expect(final.join('\n')).toContain('ln -s /app/dist/sidecar/cli/main.js /usr/local/bin/baton');
  });

  it('links an entrypoint the build produces: package.json bin and the compiled CLI, a node script', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: { baton: string } };
    expect(pkg.bin.baton).toBe('dist/sidecar/cli/main.js');
    expect(readFileSync(path.join(ROOT, 'sidecar', 'cli', 'main.ts'), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    const build = JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8')) as { extends: string; include: string[] };
    const base = JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.json'), 'utf8')) as { compilerOptions: { outDir: string; rootDir: string } };
    expect([build.extends, base.compilerOptions.outDir, base.compilerOptions.rootDir]).toEqual(['./tsconfig.json', 'dist', '.']);
    // The build stage copies every directory the build compiles.
    for (const dir of build.include) expect(lines).toContain(`COPY ${dir} ./${dir}`);
  });

  it('copies only files that exist and that .dockerignore lets through', () => {
    for (const line of lines.filter((l) => l.startsWith('COPY ') && !l.includes('--from='))) {
      const sources = line.split(/\s+/).slice(1, -1);
      for (const source of sources) {
        expect([source, existsSync(path.join(ROOT, source))]).toEqual([source, true]);
        expect(ignored).not.toContain(source.replace(/\/$/, ''));
      }
    }
  });
});
