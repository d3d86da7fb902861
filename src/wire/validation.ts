/**
 * Request validation shared by every API surface. Each check throws InvalidArgumentError
 * with a message a developer can act on; none echoes session contents back.
 */
import { InvalidArgumentError } from './errors';
// Installs the strict UTF-8 decoder every surface relies on (ids that are not UTF-8 never decode).
import './strict-utf8';
import { checkWellKnownPart, isWellKnownPart, WELL_KNOWN_PARTS } from './well-known-parts';

export const MAX_SESSION_ID_BYTES = 512;
export const MAX_TTL_SECONDS = 30 * 24 * 3600;
const PART_NAME = /^[a-z0-9_.-]{1,64}$/;
// C0 controls, DEL and C1 controls.
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

export interface RequestLimits {
  /** Largest part value in bytes. */
  maxValueBytes: number;
  /** Most live parts one session may hold. */
  maxPartsPerSession: number;
}

export function checkSessionId(id: string): void {
  if (id.length === 0) throw new InvalidArgumentError('session_id is empty');
  if (id.length > MAX_SESSION_ID_BYTES || Buffer.byteLength(id, 'utf8') > MAX_SESSION_ID_BYTES) {
    throw new InvalidArgumentError(`session_id is longer than ${MAX_SESSION_ID_BYTES} bytes`);
  }
  if (CONTROL_CHARACTER.test(id)) throw new InvalidArgumentError('session_id contains a control character');
}

export function checkPartName(name: string): void {
  if (!PART_NAME.test(name)) {
    throw new InvalidArgumentError(
      `part name ${JSON.stringify(name.slice(0, 80))} is invalid: use 1 to 64 characters from a-z, 0-9, '_', '.', '-'`,
    );
  }
}

/** Part names of a read or delete: each valid, none twice. */
export function checkPartNames(names: readonly string[], limits: RequestLimits): void {
  if (names.length > limits.maxPartsPerSession) {
    throw new InvalidArgumentError(`${names.length} parts named; a session holds at most ${limits.maxPartsPerSession}`);
  }
  for (const name of names) checkPartName(name);
  checkNoDuplicates(names);
}

export function checkTtlSeconds(ttlSeconds: number, field = 'ttl_seconds'): void {
  if (ttlSeconds > MAX_TTL_SECONDS) {
    throw new InvalidArgumentError(`${field} ${ttlSeconds} is over the limit of ${MAX_TTL_SECONDS} (30 days)`);
  }
}

export interface PartWriteInput {
  name: string;
  value: Uint8Array;
}

/** The parts of a Put: present, valid names, none twice, within limits, typed parts decode. */
export function checkPartWrites(parts: readonly PartWriteInput[], limits: RequestLimits): void {
  if (parts.length === 0) throw new InvalidArgumentError('a Put needs at least one part');
  if (parts.length > limits.maxPartsPerSession) {
    throw new InvalidArgumentError(
      `a Put of ${parts.length} parts is over the limit of ${limits.maxPartsPerSession} parts per session`,
    );
  }
  for (const part of parts) {
    checkPartName(part.name);
    if (part.value.length > limits.maxValueBytes) {
      throw new InvalidArgumentError(
        `part '${part.name}' is ${part.value.length} bytes, over the limit of ${limits.maxValueBytes} bytes`,
      );
    }
    if (isWellKnownPart(part.name)) {
      const problem = checkWellKnownPart(part.name, part.value);
      if (problem !== undefined) {
        throw new InvalidArgumentError(`part '${part.name}' is not a valid ${WELL_KNOWN_PARTS[part.name].typeName}: ${problem}`);
      }
    }
  }
  checkNoDuplicates(parts.map((p) => p.name));
}

function checkNoDuplicates(names: readonly string[]): void {
  if (names.length < 2) return;
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name)) throw new InvalidArgumentError(`part '${name}' is named twice`);
    seen.add(name);
  }
}
