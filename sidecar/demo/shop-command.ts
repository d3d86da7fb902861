/**
 * `baton demo-shop`: the demo's shop as a long-running web server, so a pod can run it
 * beside its baton sidecar (the Helm chart's example). It talks to the baton node at --api
 * and serves the shop's routes (POST /login, POST /cart, GET /cart) on --listen until
 * SIGTERM or SIGINT, then stops serving and exits 0. With --behind-proxy the shop sits
 * behind baton's capture proxy: it leaves auth to the proxy (see demo-shop.ts).
 */
import { hostname } from 'node:os';
import { parseListen } from '../config/config';
import { statusTarget } from '../cli/status-command';
import { ShopPod } from './demo-shop';

export interface ShopOptions {
  /** host:port the shop serves HTTP on. */
  listen: string;
  /** The baton node's session API. */
  api: string;
  /** This pod's name, shown in every answer; default: the host name (a pod's name on Kubernetes). */
  pod?: string;
  /** The shop's clients come through baton's capture proxy, whose x-baton-* headers it trusts. */
  behindProxy?: boolean;
}

/** Serves until a signal; resolves with the exit code. Throws ConfigError for a bad flag. */
export async function runShop(options: ShopOptions, write: (line: string) => void = (line) => process.stdout.write(line)): Promise<number> {
  const listen = parseListen(options.listen, 'listen', false);
  const target = statusTarget(options.api);
  const pod = options.pod ?? hostname();
  const behindProxy = options.behindProxy === true;
  const shop = new ShopPod(pod, pod, target, behindProxy);
  const url = await shop.listen(listen.host, listen.port);
  write(`baton demo-shop ${pod}: serving ${url}, sessions in baton at ${target}${behindProxy ? ", logins captured by baton's proxy" : ''}\n`);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await shop.close();
  write(`baton demo-shop ${pod}: ${signal}, stopped\n`);
  return 0;
}
