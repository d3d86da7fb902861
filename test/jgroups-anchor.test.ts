/**
 * bench:replication's JGroups anchor finds its tools or says what to install
 * (bench/jgroups-anchor.ts): the bench never installs anything, so a machine without Java or
 * the jar must get the Debian package names and the rest of the bench still runs.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findJGroupsTools } from '../bench/jgroups-anchor';

describe('findJGroupsTools', () => {
  let dir: string;
  const saved = { PATH: process.env.PATH, BENCH_JGROUPS_JAR: process.env.BENCH_JGROUPS_JAR };

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'baton-jgroups-test-'));
  });

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it('names the Debian packages for a missing JDK and a missing jar', () => {
    process.env.PATH = dir;
    process.env.BENCH_JGROUPS_JAR = path.join(dir, 'absent.jar');
    const found = findJGroupsTools();
    expect(typeof found).toBe('string');
    expect(found).toMatch(/java and javac are not on the PATH \(Debian: apt-get install default-jdk-headless\)/);
    expect(found).toMatch(/absent\.jar is missing \(Debian: apt-get install libjgroups-java/);
  });

  it('says javac alone is missing when only the runtime is installed', () => {
    writeFileSync(path.join(dir, 'java'), '#!/bin/sh\n');
    chmodSync(path.join(dir, 'java'), 0o755);
    writeFileSync(path.join(dir, 'jgroups.jar'), '');
    process.env.PATH = dir;
    process.env.BENCH_JGROUPS_JAR = path.join(dir, 'jgroups.jar');
    const found = findJGroupsTools();
    expect(found).toMatch(/javac is not on the PATH/);
    expect(found).not.toMatch(/libjgroups-java/);
  });

  it('returns the tools, the jar and the Java source when all are there', () => {
    for (const tool of ['java', 'javac']) {
      writeFileSync(path.join(dir, tool), '#!/bin/sh\n');
      chmodSync(path.join(dir, tool), 0o755);
    }
    writeFileSync(path.join(dir, 'jgroups.jar'), '');
    process.env.PATH = dir;
    process.env.BENCH_JGROUPS_JAR = path.join(dir, 'jgroups.jar');
    const found = findJGroupsTools();
    expect(found).toEqual({
      java: path.join(dir, 'java'),
      javac: path.join(dir, 'javac'),
      jar: path.join(dir, 'jgroups.jar'),
      source: expect.stringMatching(/bench\/jgroups\/JGroupsAnchor\.java$/),
    });
  });
});
