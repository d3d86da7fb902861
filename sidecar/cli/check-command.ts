/**
 * `baton check`: a smoke test of one node's session API, for `helm test` and for operators.
 * It writes a throw-away session with --min-replicas secondaries acknowledging it, reads it
 * back, deletes it, and exits 0 only if all three did what they should.
 *
 * Rules:
 * - The session id is random (`baton-check-` + 16 hex digits) and is deleted at the end, so
 *   checks never collide with application sessions or with each other.
 * - A node that has just started may not know its peers yet: the write is retried (every
 *   500 ms) until --timeout-ms passes; the read and the delete are not, they run on the
 *   node that has just acknowledged the write.
 * - Exit codes: 0 the check passed; 1 it failed (one line on stderr saying which step and
 *   why); 2 a usage error.
 */
import { randomBytes } from 'node:crypto';
import { BatonClient, BatonClientError } from '../../src/client/client';
import { ConfigError } from '../../src/wire/errors';
import { parseTimeoutMs, statusTarget } from './status-command';

export const EXIT_CHECK_PASSED = 0;
export const EXIT_CHECK_FAILED = 1;
const RETRY_MS = 500;
const CHECK_PART = 'check';

export interface CheckOptions {
  api: string;
  /** Secondaries that must acknowledge the write, as given on the command line. */
  minReplicas: string;
  timeoutMs: string;
}

export interface CheckIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const PROCESS_IO: CheckIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

export async function runCheck(options: CheckOptions, io: CheckIo = PROCESS_IO): Promise<number> {
  const target = statusTarget(options.api);
  const timeoutMs = parseTimeoutMs(options.timeoutMs);
  if (!/^\d{1,2}$/.test(options.minReplicas)) {
    throw new ConfigError(`invalid --min-replicas ${JSON.stringify(options.minReplicas)}: expected a whole number from 0 to 64`);
  }
  const minReplicas = Number(options.minReplicas);
  const sessionId = `baton-check-${randomBytes(8).toString('hex')}`;
  const value = randomBytes(16);
  const deadline = Date.now() + timeoutMs;
  const client = new BatonClient(target);
  try {
    let lastError = '';
    let written = false;
    while (!written && Date.now() < deadline) {
      try {
        const put = await client.put(sessionId, { [CHECK_PART]: value }, { ttlSeconds: 60, minReplicas, deadlineMs: Math.max(1, deadline - Date.now()) });
        written = put.replicasAcked >= minReplicas;
        if (!written) lastError = `${put.replicasAcked} of ${minReplicas} secondaries acknowledged`;
      } catch (err) {
        lastError = err instanceof BatonClientError ? err.message : String(err);
      }
      if (!written) await new Promise((resolve) => setTimeout(resolve, Math.min(RETRY_MS, Math.max(0, deadline - Date.now()))));
    }
    if (!written) {
      io.stderr(`baton: check failed: the write with --min-replicas ${minReplicas} did not succeed within ${timeoutMs} ms at ${target}: ${lastError}\n`);
      return EXIT_CHECK_FAILED;
    }
    const session = await client.get(sessionId, { deadlineMs: Math.max(1, deadline - Date.now()) });
    const read = session?.parts.find((part) => part.name === CHECK_PART)?.value;
    if (read === undefined || !Buffer.from(read).equals(value)) {
      io.stderr(`baton: check failed: ${target} acknowledged the write but reading it back ${read === undefined ? 'found nothing' : 'returned another value'}\n`);
      return EXIT_CHECK_FAILED;
    }
    if (!(await client.delete(sessionId, { deadlineMs: Math.max(1, deadline - Date.now()) }))) {
      io.stderr(`baton: check failed: ${target} did not find the session to delete it\n`);
      return EXIT_CHECK_FAILED;
    }
    io.stdout(`baton check passed at ${target}: put (acknowledged by ${minReplicas} secondar${minReplicas === 1 ? 'y' : 'ies'}), get, delete\n`);
    return EXIT_CHECK_PASSED;
  } catch (err) {
    io.stderr(`baton: check failed at ${target}: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT_CHECK_FAILED;
  } finally {
    client.close();
  }
}
