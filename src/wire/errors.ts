/**
 * baton's error classes. Each has a stable `code`; the gRPC server edge maps codes to
 * status codes (sidecar/net/grpc-status.ts) and nothing else in src/ knows about gRPC statuses.
 * Conditions caused by peers (bad datagrams, stale epochs) are counted results, not errors.
 */

export type ErrorCode =
  | 'invalid_argument'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'not_found'
  | 'unavailable'
  | 'deadline_exceeded'
  | 'internal';

export abstract class BatonError extends Error {
  abstract readonly code: ErrorCode;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The request itself is malformed or outside configured limits. */
export class InvalidArgumentError extends BatonError {
  readonly code = 'invalid_argument' as const;
}

/** A compare-and-set expectation did not hold. */
export class PreconditionFailedError extends BatonError {
  readonly code = 'failed_precondition' as const;
}

/** This node's role does not serve the call: a store node (--role store) refuses application calls. */
export class WrongRoleError extends BatonError {
  readonly code = 'failed_precondition' as const;
}

/** The memory budget cannot hold the write even after evicting everything else. */
export class ResourceExhaustedError extends BatonError {
  readonly code = 'resource_exhausted' as const;
}

/** Not enough replicas or peers can be reached to do what was asked. */
export class UnavailableError extends BatonError {
  readonly code = 'unavailable' as const;
}

/** A write refused before it was made: nothing of it was applied (UNAVAILABLE to clients). */
export class WriteNotMadeError extends UnavailableError {}

export class DeadlineExceededError extends BatonError {
  readonly code = 'deadline_exceeded' as const;
}

/** The configuration given at start-up is unusable; the message names the option. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}
