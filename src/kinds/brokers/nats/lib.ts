import type { NatsConnection } from 'nats';
import { resetGivenUp } from '../given-up.js';

/** The client library, loaded when the first nats broker starts (commands that start none, such as validate, never load it). */
type NatsLib = typeof import('nats');

/** Set by loadNats(); everything that reads it runs on a connection a broker opened after that. */
export let lib!: NatsLib;

/** The loading under way or done: brokers starting together load and patch nats.js once. */
let loading: Promise<void> | undefined;

export function loadNats(): Promise<void> {
  loading ??= (async () => {
    const loaded = await import('nats');
    await failConnectWhenClosed(PROTOCOL_MODULE);
    lib = loaded;
  })().catch((err: unknown) => {
    loading = undefined;
    throw err;
  });
  return loading;
}

/** nats.js's private module of its protocol handler (not part of its API: it may move in another release). */
export const PROTOCOL_MODULE = 'nats/lib/nats-base-client/protocol.js';

/** Marks nats.js's handler once patched (a second loading of this module must not wrap it again). */
const PATCHED = Symbol.for('eventgate.nats.failConnectWhenClosed');

/** nats.js's protocol handler while a connection is made: `connectError` fails the connect that waits for the server's first PONG. */
interface ConnectingHandler {
  connectError?: (err: unknown) => void;
  disconnected(err: unknown): Promise<void>;
}

/**
 * Makes a connection that the server closed with an error before its first PONG fail with that
 * error. nats.js left such a connect waiting for the PONG until its timeout: a server that requires
 * a client certificate (nats-server's `tls { verify: true }`) ends a TLS 1.3 connection after the
 * client's handshake is done, with an alert (`certificate required`), and the broker said only
 * `unreachable: TIMEOUT`, after connectTimeoutMs. Left as it is when this nats.js has no such
 * module or handler; false then.
 */
export async function failConnectWhenClosed(module: string): Promise<boolean> {
  // A nats.js without that module (another release's layout, or one that exports no private
  // path) keeps its own behaviour: a broker must start all the same.
  const protocol = (await import(module).catch(() => undefined)) as { ProtocolHandler?: { prototype: ConnectingHandler } } | undefined;
  const proto = protocol?.ProtocolHandler?.prototype;
  if (typeof proto?.disconnected !== 'function') return false;
  if (PATCHED in proto) return true;
  const disconnected = proto.disconnected;
  proto.disconnected = function (this: ConnectingHandler, err: unknown) {
    if (err instanceof Error && this.connectError) {
      this.connectError(err);
      return Promise.resolve();
    }
    return disconnected.call(this, err);
  };
  Object.defineProperty(proto, PATCHED, { value: true });
  return true;
}

/** nats.js's protocol handler (a private field of the connection): `disconnect()` is how its liveness check gives a connection up. */
interface ProtocolHandler {
  disconnect(): void;
  transport?: { socket?: unknown };
}

/**
 * Makes nats.js reset the socket (resetGivenUp) when it gives a connection up: its heartbeat
 * (`pingIntervalMs` × `maxPingOut` unanswered) and a login refused on a live connection call the
 * protocol handler's `disconnect()`, which closes the socket with a FIN after flushing. The handler
 * lives as long as the connection, across reconnects (each with a transport of its own). False when
 * this nats.js has no such handler (the connection then closes as the library does).
 */
export function resetWhenGivenUp(nc: NatsConnection): boolean {
  const ph = (nc as unknown as { protocol?: ProtocolHandler }).protocol;
  if (typeof ph?.disconnect !== 'function') return false;
  const disconnect = ph.disconnect;
  ph.disconnect = function (this: ProtocolHandler) {
    resetGivenUp(this.transport?.socket);
    disconnect.call(this);
  };
  return true;
}
