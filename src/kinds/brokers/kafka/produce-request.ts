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

/** A Produce response as kafkajs decodes it (v3 to v7): each partition's own error code and offset. */
interface ProduceResponse {
  topics: { topicName: string; partitions: { partition: number; errorCode: number }[] }[];
}

interface ProduceDefinition {
  protocol(v: { version: number }): (args: ProduceArgs) => {
    request: { encode(): Promise<unknown> };
    /** kafkajs' connection waits for the answer the longer of this and its client's requestTimeout (network/requestQueue). */
    requestTimeout?: number;
    response: { decode(raw: Buffer): Promise<unknown>; parse(data: ProduceResponse): Promise<ProduceResponse> };
  };
}

/** kafkajs' error for a Kafka error code (its table says the type, e.g. NOT_LEADER_FOR_PARTITION, and whether it is retriable). */
const { createErrorFromCode } = require('kafkajs/src/protocol/error') as { createErrorFromCode(code: number): Error };

/** A Kafka error code as kafkajs' KafkaJSProtocolError: `type` (Kafka's name for it), `retriable`, `message`. */
export function produceError(code: number): Error & { type: string; retriable: boolean } {
  return createErrorFromCode(code) as Error & { type: string; retriable: boolean };
}

/**
 * kafkajs' request timeout: as long again as the ack deadline (at least a second more). A produce
 * request answered after the publish's deadline but within this is seen, and its records' real
 * outcome told to whoever waits for it (AckTimeout.late: a consume route, before it writes again).
 */
export function lateAnswerMs(ackTimeoutMs: number): number {
  return Math.max(2 * ackTimeoutMs, ackTimeoutMs + 1000);
}

let installed = false;

/**
 * kafkajs' producers (process-wide) encode their Produce requests (v3 and later, which every broker
 * since Kafka 0.11 takes) with the project's own codec: the record batches by
 * `encodeProducerBatch` (codecs/record-batch.ts), the request body by `encodeProduceRequest` (the
 * kafka listener's codec module). kafkajs' encoder allocated a Buffer per field and an encoder per
 * record and per header, ~15 % of the gateway's busy time under HTTP → Kafka load. Everything else
 * stays kafkajs': which partitions go to which broker, sequence numbers of idempotent producers
 * (read from what kafkajs passes, per attempt), retries, the response and its errors, except one
 * case: see `partitionOutcomes`.
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
      // Answers later than the request's own timeout (the longest ackTimeoutMs of its records) are
      // still seen: kafkajs' connection waits the longer of this and the client's request timeout,
      // which was sized for the ackTimeoutMs the client was made with (a reload may have raised it).
      built.requestTimeout = lateAnswerMs(args.timeout);
      // An idempotent or transactional producer keeps kafkajs' parse: its resend of the whole
      // request is how its sequence numbers stay right (Kafka drops the copies it already has).
      if (int64(args.producerId) < 0n && !args.transactionalId) built.response = { decode: built.response.decode, parse: partitionOutcomes };
      return built;
    };
  };
}

/**
 * kafkajs' parse throws the first failed partition's error as the whole request's, and kafkajs then
 * sends every record of the request again, though Kafka wrote those of the partitions that took
 * theirs: written twice. Here a response in which some partitions took their records resolves, each
 * partition with its own errorCode, which kafkajs passes on in the RecordMetadata results
 * (producer/responseSerializer.js) for the gateway's producer to resend only what was not taken
 * (producer.ts, sendTo). A response in which every partition failed wrote nothing: it still throws,
 * and kafkajs retries it (or gives up) as before. Process-wide, so every kafkajs producer of the
 * process must read each result's errorCode: the gateway's only one, RecordProducer, does.
 */
async function partitionOutcomes(data: ProduceResponse): Promise<ProduceResponse> {
  let failed: number | undefined;
  let taken = false;
  for (const t of data.topics)
    for (const p of t.partitions) {
      if (p.errorCode === 0) taken = true;
      else failed ??= p.errorCode;
    }
  if (failed !== undefined && !taken) throw createErrorFromCode(failed);
  return data;
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
