import { after, before } from 'node:test';
import { pikaDeclareQueue } from './peers.js';
import type { RabbitServer } from './servers.js';
import { TcpProxy } from './tcp-proxy.js';

export interface UseRabbitOptions {
  /** A TcpProxy in front of the server (`true`, or the proxy's options): the gateway reaches it at `proxiedUrl`. */
  proxy?: boolean | Parameters<typeof TcpProxy.start>[1];
  /** Queues an independent client declares (and binds) before the gateway starts: `[queue, exchange, routingKey]`. */
  queues?: [queue: string, exchange: string, routingKey: string][];
}

/** The block's RabbitMQ (the server `start` gave, for the pika helpers and `ctl`) and its proxy. */
export type RabbitFixture<S extends RabbitServer> = S & {
  /** The proxy in front of it (only with `proxy`). */
  proxy: TcpProxy;
  /** `url` through the proxy: what the gateway's config names to be cut, held or refused (only with `proxy`). */
  proxiedUrl: string;
};

/**
 * RabbitMQ for the enclosing `describe` block (or, called outside any, for the whole file):
 * `start` runs in a `before()` — `() => sharedRabbit()` for a vhost of the file's own on the run's
 * node, `() => sharedSizeLimitedRabbit()`, or `() => startRabbit(...)` for a server of the block's
 * own — then the queues and the proxy asked for; in its `after()` the proxy stops, then the server
 * (a vhost on the shared node stays until the node ends with the run). Write the call out in the
 * file, `sharedRabbit(` as such: scripts/run-tests.js boots the run's node for the files whose text
 * has it. Call it before useGateway, so the gateway's config can name it (hooks run in the order
 * they are registered; so do the `after()`s: the server stops before that gateway does):
 *
 *     const rabbit = useRabbit(() => sharedRabbit(), { proxy: true });
 *     const gw = useGateway(() => `... url: "${rabbit.proxiedUrl}" ...`);
 *
 * The returned object stands for what the `before()` made; reading it earlier throws.
 */
export function useRabbit<S extends RabbitServer>(start: () => Promise<S>, options: UseRabbitOptions = {}): RabbitFixture<S> {
  let current: { server: S; proxy?: TcpProxy } | undefined;
  before(async () => {
    const server = await start();
    current = { server };
    for (const [queue, exchange, key] of options.queues ?? []) await pikaDeclareQueue(server, queue, exchange, key);
    if (options.proxy) current.proxy = await TcpProxy.start(server.port, options.proxy === true ? {} : options.proxy);
  });
  after(async () => {
    const made = current;
    current = undefined;
    await made?.proxy?.stop();
    await made?.server.stop();
  });
  const read = (prop: string | symbol): unknown => {
    if (!current) throw new Error(`useRabbit: no RabbitMQ yet (reading ${String(prop)} outside a test, or before the block's before())`);
    const { server, proxy } = current;
    if (prop === 'proxy' || prop === 'proxiedUrl') {
      if (!proxy) throw new Error(`useRabbit: ${prop} is only there with the proxy option`);
      if (prop === 'proxy') return proxy;
      const through = server.url.replace(`@${server.host}:${server.port}`, `@${server.host}:${proxy.port}`);
      // A URL of another form, left as it was, would take the gateway past the proxy: its cases could not fail.
      if (through === server.url) throw new Error(`useRabbit: ${server.url} does not name ${server.host}:${server.port} after its credentials; no proxied URL`);
      return through;
    }
    const value = Reflect.get(server, prop, server) as unknown;
    return typeof value === 'function' ? value.bind(server) : value;
  };
  return new Proxy({} as RabbitFixture<S>, {
    get: (_target, prop) => (prop === 'then' ? undefined : read(prop)),
  });
}
