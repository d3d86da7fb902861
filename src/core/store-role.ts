/**
 * What a store node (--role store) answers the application: nothing. It has no web server
 * beside it; it holds replicas (placement ranks it first for secondaries) and answers its
 * peers, Status, health and metrics — but every application call of the session API
 * (gRPC SessionService, the HTTP API, the Redis endpoint) fails FAILED_PRECONDITION with
 * STORE_ROLE_REFUSAL, so a client pointed at the wrong node learns it at once instead of
 * making the store node an owner. The node's own writers (the TLS ticket key schedule) use
 * the unguarded API.
 */
import type { SessionApi } from './session-api';
import { WrongRoleError } from '../wire/errors';

export const STORE_ROLE_REFUSAL =
  'this is a store node (--role store): it holds replicas and serves no application calls; send them to an edge node (the sidecar beside your web server)';

/** The SessionApi methods an application calls. */
const APPLICATION_CALLS = ['put', 'get', 'delete', 'touch', 'updateCart', 'resumeSession'] as const;

/** `api` with every application call refused (a store node's surfaces serve this one). */
export function refusingApplicationCalls(api: SessionApi): SessionApi {
  const guarded = Object.create(api) as SessionApi;
  const refuse = (): never => {
    throw new WrongRoleError(STORE_ROLE_REFUSAL);
  };
  for (const method of APPLICATION_CALLS) Object.defineProperty(guarded, method, { value: refuse });
  return guarded;
}
