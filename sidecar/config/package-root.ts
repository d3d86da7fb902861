/**
 * Where the installed package lives, found from this file whether it runs compiled
 * (dist/sidecar/config/) or from source (sidecar/config/, under jest): proto/ and package.json are there.
 */
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

export const PACKAGE_ROOT = [path.join(__dirname, '..', '..'), path.join(__dirname, '..', '..', '..')].find((dir) =>
  existsSync(path.join(dir, 'proto', 'baton', 'v1', 'session.proto')),
)!;

export const PROTO_ROOT = path.join(PACKAGE_ROOT, 'proto');

export const VERSION: string = (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string })
  .version;
