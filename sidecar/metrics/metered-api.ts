/**
 * The session API with every call recorded in baton_operations_total and
 * baton_operation_duration_seconds, for a surface that calls the API directly (the Redis
 * protocol endpoint). The gRPC and HTTP surfaces record their own, as they also count
 * requests refused before the API runs.
 */
import type { SessionApi } from '../../src/core/session-api';
import { BatonError } from '../../src/wire/errors';
import { resultOf, type Method, type OperationResult, type SidecarMetrics } from './metrics';

/** The calls a surface makes on the session API. */
export type ApiCalls = Pick<SessionApi, 'put' | 'get' | 'delete' | 'touch' | 'updateCart'>;

export function meteredApi(api: ApiCalls, metrics: SidecarMetrics): ApiCalls {
  return {
    put: (...args) => timed(metrics, 'put', () => api.put(...args)),
    get: (...args) => timed(metrics, 'get', () => api.get(...args)),
    delete: (...args) => timed(metrics, 'delete', () => api.delete(...args)),
    touch: (...args) => timed(metrics, 'touch', () => api.touch(...args)),
    updateCart: (...args) => timed(metrics, 'update_cart', () => api.updateCart(...args)),
  };
}

/** Runs one call (its answer now or a promise of it) and records its outcome when it settles. */
function timed<R>(metrics: SidecarMetrics, method: Method, run: () => R): R {
  const started = performance.now();
  const finish = (result: OperationResult): void => metrics.observe(method, result, (performance.now() - started) / 1000);
  const succeeded = <V>(value: V): V => {
    finish(typeof value === 'object' && value !== null && (value as { found?: unknown }).found === false ? 'not_found' : 'ok');
    return value;
  };
  const failed = (err: unknown): never => {
    finish(err instanceof BatonError ? resultOf(err.code) : 'error');
    throw err;
  };
  try {
    const value = run();
    return value instanceof Promise ? (value.then(succeeded, failed) as R) : succeeded(value);
  } catch (err) {
    return failed(err);
  }
}
