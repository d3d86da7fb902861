/**
 * The node's one call into the capture proxy: builds it (and its TCP state capture) from
 * the configuration, the node's SessionApi, metrics and peers (for re-injection) when --proxy-listen is set, and binds it. Kept here so
 * the node's own file only constructs, starts and stops it.
 */
import type { Logger } from 'pino';
import type { SessionApi } from '../../src/core/session-api';
import type { Config } from '../config/config';
import type { SidecarMetrics } from '../metrics/metrics';
import { TcpCapture } from '../capture/tcp-capture';
import { ProxyServer, type ProxyServerOptions } from './proxy-server';
import { sessionApiStore } from './proxy-sessions';
import type { ReplayPeers } from './proxy-replay';

export { ProxyServer, type ProxyServerOptions };

export async function startProxy(
  config: Config,
  sessionApi: SessionApi,
  metrics: SidecarMetrics,
  log: Logger,
  onTlsServer: ProxyServerOptions['onTlsServer'],
  peers?: ReplayPeers,
): Promise<{ server: ProxyServer; port: number } | undefined> {
  const address = config.proxyListen;
  if (address === undefined) return undefined;
  const sessions = sessionApiStore(sessionApi, config.nodeId);
  const tcp = TcpCapture.start({
    intervalMs: config.tcpCaptureIntervalMs,
    write: (sessionId, value) => sessions.put(sessionId, [{ name: 'tcp', value }]),
    observer: metrics.tcpCaptureObserver(),
    log,
  });
  let server: ProxyServer;
  try {
    server = new ProxyServer({ config, sessions, observer: metrics.proxyObserver(), log, onTlsServer, tcp, peers });
  } catch (err) {
    tcp?.close();
    throw err;
  }
  // A bind failure rejects with the bind error; the node names --proxy-listen in it.
  const port = await server.listen(address).catch(async (err: unknown) => {
    await server.close(0);
    throw err;
  });
  return { server, port };
}
