import kafkajs, { TopicGone } from './kafkajs.js';
import type { KafkaConfig, LogEntry } from 'kafkajs';
import type { Logger } from '../../../log.js';
import type { KafkaSettings } from '../kafka.js';
import { registerCodecs } from './codecs.js';
import { encodeProduceRequestsHere } from './produce-request.js';

const { logLevel } = kafkajs;

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
