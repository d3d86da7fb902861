/**
 * The client's errors. This is a gRPC edge: BatonClientError.code is a gRPC status number,
 * unlike the string codes of src/wire/errors.ts that the sidecar uses internally. Every
 * failure a caller sees is a BatonClientError; the helpers here turn gRPC statuses and
 * OperationError answers into one.
 */
import { status as Status, type StatusObject } from '@grpc/grpc-js';
import type { OperationError } from '../gen/baton/v1/session';

/** A failed call. `code` is a gRPC status code (`status` in @grpc/grpc-js). */
export class BatonClientError extends Error {
  /** gRPC status code: 3 invalid argument, 4 deadline exceeded, 9 failed precondition, 14 unavailable, … */
  readonly code: number;

  constructor(code: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BatonClientError';
    this.code = code;
  }
}

export function fromOperationError(error: OperationError): BatonClientError {
  // An error answer with code OK would read as success to anyone testing the code.
  return new BatonClientError(error.code === Status.OK ? Status.UNKNOWN : error.code, error.message);
}

export function toClientError(err: unknown, fallback: string): BatonClientError {
  if (err instanceof BatonClientError) return err;
  const status = err as Partial<StatusObject> | undefined;
  if (typeof status?.code === 'number') {
    return new BatonClientError(status.code, status.details || fallback, { cause: err });
  }
  return new BatonClientError(Status.UNKNOWN, `${fallback}: ${messageOf(err)}`, { cause: err });
}

/**
 * The code a stream's calls fail with. abort() ends the stream before it cancels the call, so
 * a CANCELLED that arrives here came from the other side (a sidecar cut off by its shutdown
 * reset the stream): for the caller the sidecar became unavailable, and nothing it did
 * cancelled the call.
 */
export function streamFailureCode(code: number | undefined): number {
  return code === undefined || code === Status.CANCELLED ? Status.UNAVAILABLE : code;
}

export function closedError(): BatonClientError {
  return new BatonClientError(Status.CANCELLED, 'the BatonClient is closed');
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
