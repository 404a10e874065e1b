import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import kafkajs, { TopicGone } from './kafkajs.js';
import type { ISocketFactory, KafkaConfig, LogEntry } from 'kafkajs';
import type { Logger } from '../../../log.js';
import type { KafkaSettings } from '../kafka.js';
import { registerCodecs } from './codecs.js';
import { encodeProduceRequestsHere } from './produce-request.js';

const { logLevel } = kafkajs;
const require = createRequire(import.meta.url);
const defaultSocketFactory = (require('kafkajs/src/network/socketFactory') as () => ISocketFactory)();

// Every kafkajs client of the gateway reads and writes all five codecs, and encodes its produce requests with the project's codec.
registerCodecs();
encodeProduceRequestsHere();

/** What every kafkajs client of one broker shares: where the cluster is, how to log in, where to log. */
export function clientConfig(settings: KafkaSettings, logger: Logger): KafkaConfig {
  return {
    clientId: settings.clientId,
    brokers: settings.brokers,
    ssl: settings.ssl,
    sasl: settings.sasl,
    connectionTimeout: settings.connectionTimeoutMs,
    logLevel: logLevel.WARN,
    logCreator: kafkajsLogs(logger),
  };
}

/** kafkajs' connection attempts: one line each while a cluster is down. The broker's own lines tell the outage. */
const CHATTY = new Set(['Connection', 'BrokerPool']);
/** kafkajs' line for an offset out of range: the route says it with the offsets (./subscription.ts, offsetReset). */
const OFFSET_RESET = 'Offset out of range, resetting to default offset';

/** kafkajs logs through pino, one JSON line like every other; its errors are mostly transient, hence warn. */
function kafkajsLogs(logger: Logger): KafkaConfig['logCreator'] {
  return () =>
    ({ namespace, level, log }: LogEntry) => {
      const { message, timestamp: _t, logger: _l, stack: _s, ...extra } = log;
      const fields = { kafkajs: namespace, ...extra };
      // A deleted topic's crash: the route says it (topic missing), once; an offset reset, with its offsets.
      if (CHATTY.has(namespace) || message.includes(TopicGone.said) || message === OFFSET_RESET) logger.debug(fields, `kafkajs: ${message}`);
      else if (level === logLevel.ERROR || level === logLevel.WARN) logger.warn(fields, `kafkajs: ${message}`);
      else if (level === logLevel.INFO) logger.info(fields, `kafkajs: ${message}`);
      else logger.debug(fields, `kafkajs: ${message}`);
    };
}

/**
 * The sockets of some kafkajs clients, so their owner can close them at once: kafkajs' disconnect
 * waits for a request in flight (its requestQueue), up to the request timeout, and a client whose
 * connect is still asking a silent server its ApiVersions would hold its socket that long.
 */
export class HeldSockets {
  private readonly open = new Set<Socket>();
  private closed: Error | undefined;

  /** kafkajs' own socket factory, each socket remembered until it closes (and refused once `closeAll` ran). */
  readonly factory: ISocketFactory = (args) => {
    const socket = defaultSocketFactory(args);
    if (this.closed) {
      socket.destroy(this.closed);
      return socket;
    }
    this.open.add(socket);
    socket.once('close', () => this.open.delete(socket));
    return socket;
  };

  /** Destroys every socket with `reason`: kafkajs rejects the requests in flight on them at once. */
  closeAll(reason: string): void {
    this.closed = new Error(reason);
    // One kafkajs already ended (disconnected) is only waiting for the server's end: no error to tell it.
    for (const socket of this.open) socket.destroy(socket.writableEnded ? undefined : this.closed);
    this.open.clear();
  }
}
