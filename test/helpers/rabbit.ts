import { after, before } from 'node:test';
import { pikaDeclareQueue } from './peers.js';
import type { RabbitOptions, RabbitServer } from './servers.js';
import { startRabbit } from './servers.js';
import { sharedRabbit, sharedSizeLimitedRabbit } from './shared-rabbit.js';
import { TcpProxy } from './tcp-proxy.js';

/** Which RabbitMQ a describe block gets (useRabbit). */
export type RabbitChoice =
  /** A vhost of the file's own on the run's shared node (sharedRabbit): the default. */
  | 'shared'
  /** The same on the run's node with a `max_message_size` (sharedSizeLimitedRabbit). */
  | 'size-limited'
  /** A server of the block's own (startRabbit), for a file that stops, freezes or reconfigures it. */
  | { own: RabbitOptions };

export interface UseRabbitOptions {
  server?: RabbitChoice;
  /** A TcpProxy in front of the server (`true`, or the proxy's options): the gateway reaches it at `proxiedUrl`. */
  proxy?: boolean | Parameters<typeof TcpProxy.start>[1];
  /** Queues an independent client declares (and binds) before the gateway starts: `[queue, exchange, routingKey]`. */
  queues?: [queue: string, exchange: string, routingKey: string][];
}

/** The block's RabbitMQ: the server (as `RabbitServer`, for the pika helpers and `ctl`) and its proxy. */
export interface RabbitFixture extends RabbitServer {
  /** The file's own user, allowed everything in its vhost (on the shared node only: `userFor`). */
  user: string;
  /** `url` as that user. */
  userUrl: string;
  /** The proxy in front of it (only with `proxy`). */
  proxy: TcpProxy;
  /** `url` through the proxy: what the gateway's config names to be cut, held or refused (only with `proxy`). */
  proxiedUrl: string;
}

/**
 * RabbitMQ for the enclosing `describe` block: started (or, on the run's shared node, a vhost taken)
 * in a `before()`, with the proxy and the queues asked for; in its `after()` the proxy stops, then
 * the server (a vhost on the shared node stays until the node ends with the run). Call it before
 * useGateway so the gateway's config can name it (hooks run in the order they are registered):
 *
 *     const rabbit = useRabbit({ proxy: true });
 *     const gw = useGateway(() => `... url: "${rabbit.proxiedUrl}" ...`);
 *
 * Each call takes a vhost of its own, as each sharedRabbit() call does. The returned object stands
 * for what the `before()` made; reading it earlier throws.
 */
export function useRabbit(options: UseRabbitOptions = {}): RabbitFixture {
  let current: { server: RabbitServer & { user?: string }; proxy?: TcpProxy } | undefined;
  before(async () => {
    const choice = options.server ?? 'shared';
    const server = choice === 'shared' ? await sharedRabbit() : choice === 'size-limited' ? await sharedSizeLimitedRabbit() : await startRabbit(choice.own);
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
      return prop === 'proxy' ? proxy : server.url.replace(`@${server.host}:${server.port}`, `@${server.host}:${proxy.port}`);
    }
    if ((prop === 'user' || prop === 'userUrl') && server.user === undefined) throw new Error(`useRabbit: ${prop} is only there on the shared node`);
    const value = Reflect.get(server, prop, server) as unknown;
    return typeof value === 'function' ? value.bind(server) : value;
  };
  return new Proxy({} as RabbitFixture, {
    get: (_target, prop) => (prop === 'then' ? undefined : read(prop)),
  });
}
