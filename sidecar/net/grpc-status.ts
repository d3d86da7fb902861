/**
 * The one place baton errors become gRPC statuses. Anything that is not a BatonError is
 * a bug: it is reported as INTERNAL without its details, which go to the log instead.
 */
import { status } from '@grpc/grpc-js';
import { BatonError, type ErrorCode } from '../../src/wire/errors';

const STATUS_OF: Record<ErrorCode, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  failed_precondition: status.FAILED_PRECONDITION,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  not_found: status.NOT_FOUND,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  internal: status.INTERNAL,
};

export interface StatusAndMessage {
  code: status;
  details: string;
  errorCode: ErrorCode;
}

export function toStatus(err: unknown): StatusAndMessage {
  if (err instanceof BatonError) return { code: STATUS_OF[err.code], details: err.message, errorCode: err.code };
  return { code: status.INTERNAL, details: 'internal error (see the sidecar log)', errorCode: 'internal' };
}
