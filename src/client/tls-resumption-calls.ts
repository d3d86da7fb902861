/**
 * BatonClient's side of TLS resumption (it implements TlsResumptionSource with these): the
 * WatchTlsResumption stream, opened again after every failure with a backoff (a sidecar
 * restart must not leave a web server on stale keys), and TLS 1.2 session-ID entries as
 * ordinary sessions of the session API.
 */
import { type Client, type ClientReadableStream } from '@grpc/grpc-js';
import { SessionServiceService, type TlsResumptionSettings } from '../gen/baton/v1/session';
import { ReconnectBackoff } from './reconnect-backoff';

/** Waits between attempts to open the stream again (ms). */
const RETRY_INITIAL_MS = 100;
const RETRY_MAX_MS = 5000;

export function watchTlsResumptionStream(
  grpc: Client,
  onSettings: (settings: TlsResumptionSettings) => void,
  onError: (err: Error) => void,
): () => void {
  const backoff = new ReconnectBackoff({ initialMs: RETRY_INITIAL_MS, maxMs: RETRY_MAX_MS }, Math.random);
  let stream: ClientReadableStream<TlsResumptionSettings> | undefined;
  let retry: NodeJS.Timeout | undefined;
  let stopped = false;
  const open = () => {
    retry = undefined;
    if (stopped) return;
    const method = SessionServiceService.watchTlsResumption;
    const call = grpc.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, {}, {});
    stream = call;
    call.on('data', (settings: TlsResumptionSettings) => {
      backoff.reset();
      onSettings(settings);
    });
    call.on('error', (err: Error) => {
      if (!stopped) onError(err);
    });
    call.on('status', () => {
      if (stopped || stream !== call) return;
      stream = undefined;
      retry = setTimeout(open, backoff.fail());
      retry.unref();
    });
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(retry);
    stream?.cancel();
  };
}
