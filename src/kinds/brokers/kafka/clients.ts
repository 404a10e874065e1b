import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import kafkajs, { TopicGone } from './kafkajs.js';
import type { ISocketFactory, KafkaConfig, LogEntry } from 'kafkajs';
import type { Logger } from '../../../log.js';
import type { KafkaSettings } from '../kafka.js';
import { registerCodecs } from './codecs.js';
import { encodeProduceRequestsHere } from './produce-request.js';

const { logLevel } = kafkajs;
const require = createRequire(import.meta.url);
const kafkajsSocketFactory = (require('kafkajs/src/network/socketFactory') as () => ISocketFactory)();

/**
 * kafkajs' own sockets, whose unref() does nothing once they are closed. kafkajs' disconnect()
 * ends and unrefs its connection's socket every time it is called, closed or not, and its broker
 * pool disconnects both connections of a broker (the fetch connection too) at each failed connect
 * while that broker is down. node's unref() of a socket without a handle waits for a 'connect'
 * that a closed socket never has, one listener per call: a consume route's fetch connection to a
 * broker down for seconds piled them up, and node printed `MaxListenersExceededWarning: Possible
 * EventEmitter memory leak detected. 11 connect listeners added to [Socket]` on stderr (spec-checklist 3200).
 */
const socketFactory: ISocketFactory = (args) => {
  const socket = kafkajsSocketFactory(args);
  socket.unref = unrefUnlessClosed;
  return socket;
};

function unrefUnlessClosed(this: Socket): Socket {
  return this.destroyed ? this : Socket.prototype.unref.call(this);
}

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
    socketFactory,
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

  /** The clients' socket factory, each socket remembered until it closes (and refused once `closeAll` ran). */
  readonly factory: ISocketFactory = (args) => {
    const socket = socketFactory(args);
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
