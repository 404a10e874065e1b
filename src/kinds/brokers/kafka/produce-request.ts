import { createRequire } from 'node:module';
import { encodeProduceRequest, type ProduceTopic } from '../../../codecs/kafka-protocol/messages.js';
import { batchCompression, encodeProducerBatch, type OutgoingRecord } from '../../../codecs/record-batch.js';

const require = createRequire(import.meta.url);

/** What kafkajs' producer hands its Produce request (kafkajs 2.2.4, pinned: src/producer/sendMessages.js). */
interface ProduceArgs {
  acks: number;
  timeout: number;
  compression?: number;
  transactionalId?: string | null;
  producerId?: unknown;
  producerEpoch?: number;
  topicData: { topic: string; partitions: { partition: number; firstSequence?: number; messages: OutgoingRecord[] }[] }[];
}

interface ProduceDefinition {
  protocol(v: { version: number }): (args: ProduceArgs) => { request: { encode(): Promise<unknown> } };
}

let installed = false;

/**
 * kafkajs' producers (process-wide) encode their Produce requests (v3 and later, which every broker
 * since Kafka 0.11 takes) with the project's own codec: the record batches by
 * `encodeProducerBatch` (codecs/record-batch.ts), the request body by `encodeProduceRequest` (the
 * kafka listener's codec module). kafkajs' encoder allocated a Buffer per field and an encoder per
 * record and per header, ~15 % of the gateway's busy time under HTTP → Kafka load. Everything else
 * stays kafkajs': which partitions go to which broker, sequence numbers of idempotent producers
 * (read from what kafkajs passes, per attempt), retries, the response and its errors.
 */
export function encodeProduceRequestsHere(): void {
  if (installed) return;
  installed = true;
  const produce = require('kafkajs/src/protocol/requests/produce') as ProduceDefinition;
  const kafkajsProtocol = produce.protocol;
  produce.protocol = ({ version }) => {
    const build = kafkajsProtocol({ version });
    if (version < 3) return build;
    return (args) => {
      const built = build(args);
      built.request.encode = () => encode(version, args);
      return built;
    };
  };
}

async function encode(version: number, args: ProduceArgs): Promise<{ buf: Buffer; buffer: Buffer }> {
  const producerId = int64(args.producerId);
  const producerEpoch = args.producerEpoch ?? 0;
  const transactional = Boolean(args.transactionalId);
  const codec = args.compression ?? 0;
  const topics: ProduceTopic[] = [];
  for (const t of args.topicData) {
    const partitions = [];
    for (const p of t.partitions) {
      const fields = { producerId, producerEpoch, transactional, codec, baseSequence: p.firstSequence ?? 0 };
      partitions.push({ index: p.partition, records: await encodeProducerBatch(p.messages, fields, batchCompression) });
    }
    topics.push({ name: t.topic, partitions });
  }
  const body = encodeProduceRequest(version, { transactionalId: args.transactionalId ?? null, acks: args.acks, timeoutMs: args.timeout, topics });
  // kafkajs frames a request from what its Encoder has: `buf` (checked to be a Buffer) and `buffer`.
  return { buf: body, buffer: body };
}

/** A producer id as kafkajs has it: -1 before InitProducerId, then its Long (a BigInt inside) or decimal text. */
function int64(v: unknown): bigint {
  if (v === undefined || v === null) return -1n;
  if (typeof v === 'bigint') return v;
  if (typeof v === 'object' && typeof (v as { value?: unknown }).value === 'bigint') return (v as { value: bigint }).value;
  return BigInt(v as string | number);
}
