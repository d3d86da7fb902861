/**
 * `openssl s_client` as a test's TLS client: one connection that sends a request and reads
 * the answer, and a resumption across two servers (full handshake with one, the saved
 * session offered to the other). A real client outside Node, so Node's own session
 * handling cannot hide a server's mistake.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';

/** One connection to 127.0.0.1:port that sends `request` and reads the answer; openssl's output. */
export function sClient(port: number, caFile: string, args: readonly string[], request = 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'openssl',
      ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-CAfile', caFile, '-ign_eof', ...args],
      { timeout: 20_000 },
      (err, stdout, stderr) => {
        if (err !== null && !/^HTTP\/1\.1 /m.test(stdout)) reject(new Error(`openssl s_client failed: ${err.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
    child.stdin!.end(request);
  });
}

/** Full handshake with `from` (session saved in `dir`), then a resumption attempt on `to`: what each said. */
export async function resumeAcross(from: number, to: number, caFile: string, dir: string, args: readonly string[], request?: string): Promise<{ first: string; second: string }> {
  const sessionFile = path.join(dir, `session-${Math.random().toString(36).slice(2)}.pem`);
  const first = await sClient(from, caFile, [...args, '-sess_out', sessionFile], request);
  const second = await sClient(to, caFile, [...args, '-sess_in', sessionFile], request);
  return { first, second };
}

/** "New, TLSv1.3" or "Reused, TLSv1.2" as s_client reports the handshake; "none" without one. */
export function handshake(output: string): string {
  const line = /^(New|Reused), (TLSv[\d.]+)/m.exec(output);
  return line === null ? 'none' : `${line[1]}, ${line[2]}`;
}

/** The protocol variants a cluster must resume: s_client arguments and the version it reports. */
export const TLS_VARIANTS: [string, string[], string][] = [
  ['TLS 1.3 (tickets)', ['-tls1_3'], 'TLSv1.3'],
  ['TLS 1.2 with tickets', ['-tls1_2'], 'TLSv1.2'],
  ['TLS 1.2 with session IDs (tickets off)', ['-tls1_2', '-no_ticket'], 'TLSv1.2'],
];
