/**
 * The few Kafka requests and responses the proxy must look into (https://kafka.apache.org/protocol):
 * request headers; Produce requests (to govern their records) and responses (to refuse them);
 * Metadata and FindCoordinator responses (to advertise the proxy's ports instead of the
 * brokers'); ApiVersions responses (to offer clients only versions parsed here). Everything else
 * passes the proxy as opaque bytes. Field layouts are those of the versions below PARSED_MAX;
 * ApiVersions caps what clients may use at those versions.
 */
import { ProtocolError, Reader, Writer } from './wire.js';

export const ApiKey = {
  Produce: 0,
  Fetch: 1,
  Metadata: 3,
  FindCoordinator: 10,
  SaslHandshake: 17,
  ApiVersions: 18,
} as const;

export const ErrorCode = {
  NONE: 0,
  CORRUPT_MESSAGE: 2,
  MESSAGE_TOO_LARGE: 10,
  NOT_ENOUGH_REPLICAS: 19,
  NOT_ENOUGH_REPLICAS_AFTER_APPEND: 20,
  UNSUPPORTED_VERSION: 35,
  INVALID_RECORD: 87,
} as const;

/**
 * The highest version of each API clients may use through the proxy. APIs missing here are taken
 * out of ApiVersions: unknown ones may carry broker addresses (DescribeCluster, and the node
 * endpoints of KIP-951 in Produce v10+/Fetch v16+), which would let clients bypass the proxy.
 * Produce stops at v8 and Metadata at v8 and FindCoordinator at v2, the last versions before
 * flexible encodings, whose layouts are parsed here; Fetch passes opaque, up to v15.
 */
export const VERSION_CAPS: ReadonlyMap<number, number> = new Map([
  [0, 8], // Produce (parsed)
  [1, 15], // Fetch (opaque; v16 adds node endpoints)
  [2, 8], // ListOffsets
  [3, 8], // Metadata (parsed, rewritten)
  [8, 9], // OffsetCommit
  [9, 9], // OffsetFetch
  [10, 2], // FindCoordinator (parsed, rewritten)
  [11, 9], // JoinGroup
  [12, 4], // Heartbeat
  [13, 5], // LeaveGroup
  [14, 5], // SyncGroup
  [15, 5], // DescribeGroups
  [16, 5], // ListGroups
  [17, 1], // SaslHandshake
  [18, 4], // ApiVersions (parsed, rewritten)
  [19, 7], // CreateTopics
  [20, 6], // DeleteTopics
  [21, 2], // DeleteRecords
  [22, 5], // InitProducerId
  [23, 4], // OffsetForLeaderEpoch
  [24, 4], // AddPartitionsToTxn
  [25, 4], // AddOffsetsToTxn
  [26, 4], // EndTxn
  [28, 4], // TxnOffsetCommit
  [29, 3], // DescribeAcls
  [30, 3], // CreateAcls
  [31, 3], // DeleteAcls
  [32, 4], // DescribeConfigs
  [33, 2], // AlterConfigs
  [35, 4], // DescribeLogDirs
  [36, 2], // SaslAuthenticate
  [37, 3], // CreatePartitions
  [42, 2], // DeleteGroups
  [43, 2], // ElectLeaders
  [44, 1], // IncrementalAlterConfigs
  [45, 0], // AlterPartitionReassignments
  [46, 0], // ListPartitionReassignments
  [47, 0], // OffsetDelete
  [48, 1], // DescribeClientQuotas
  [49, 1], // AlterClientQuotas
  [50, 0], // DescribeUserScramCredentials
  [51, 0], // AlterUserScramCredentials
  [61, 0], // DescribeProducers
  [65, 0], // DescribeTransactions
  [66, 1], // ListTransactions
]);

export interface RequestHeader {
  apiKey: number;
  apiVersion: number;
  correlationId: number;
  clientId: string | null;
  /** Where the request body starts. */
  bodyOffset: number;
}

/**
 * Reads a request header. `body` excludes the size prefix. `bodyOffset` is right for the
 * non-flexible versions the proxy parses bodies of (flexible ones add tagged fields after the
 * client id, but their bodies pass opaque).
 */
export function readRequestHeader(body: Buffer): RequestHeader {
  const r = new Reader(body);
  const apiKey = r.int16();
  const apiVersion = r.int16();
  const correlationId = r.int32();
  const clientId = r.nullableString();
  return { apiKey, apiVersion, correlationId, clientId, bodyOffset: r.offset };
}

// ---- Produce ---------------------------------------------------------------------------------

export interface ProducePartition {
  index: number;
  records: Buffer | null;
}

export interface ProduceTopic {
  name: string;
  partitions: ProducePartition[];
}

export interface ProduceRequest {
  transactionalId: string | null;
  acks: number;
  timeoutMs: number;
  topics: ProduceTopic[];
}

export function readProduceRequest(body: Buffer, header: RequestHeader): ProduceRequest {
  if (header.apiVersion > 8) throw new ProtocolError(`Produce v${header.apiVersion} is above the v8 the proxy offers`);
  const r = new Reader(body, header.bodyOffset);
  const transactionalId = header.apiVersion >= 3 ? r.nullableString() : null;
  const acks = r.int16();
  const timeoutMs = r.int32();
  const topics: ProduceTopic[] = [];
  for (let t = r.arrayLength(); t > 0; t--) {
    const name = r.string();
    const partitions: ProducePartition[] = [];
    for (let p = r.arrayLength(); p > 0; p--) partitions.push({ index: r.int32(), records: r.nullableBytes() });
    topics.push({ name, partitions });
  }
  if (r.remaining !== 0) throw new ProtocolError(`${r.remaining} bytes after the Produce request`);
  return { transactionalId, acks, timeoutMs, topics };
}

/**
 * What a Produce request's first bytes say: its acks, how many topics it names and the first one's
 * name (which come before any records). Undefined when `head` ends before the first topic's name.
 * Lets a request to one topic no route governs go upstream as its bytes arrive (the rest of it is
 * then not read here; the broker reads it).
 */
export function peekProduceRequest(head: Buffer, header: RequestHeader): { acks: number; topics: number; firstTopic: string } | undefined {
  if (header.apiVersion > 8) return undefined;
  try {
    const r = new Reader(head, header.bodyOffset);
    if (header.apiVersion >= 3) r.nullableString();
    const acks = r.int16();
    r.int32(); // timeout
    const topics = r.arrayLength();
    return { acks, topics, firstTopic: topics > 0 ? r.string() : '' };
  } catch (err) {
    if (err instanceof ProtocolError) return undefined;
    throw err;
  }
}

/** The same request with other records (the header bytes are kept as the client sent them). */
export function writeProduceRequest(body: Buffer, header: RequestHeader, req: ProduceRequest): Buffer {
  return produceFields(new Writer().raw(body.subarray(0, header.bodyOffset)), header.apiVersion, req).finish();
}

/** A Produce request's body (what follows the request header), v3 to v8: the versions whose body is laid out alike. */
export function encodeProduceRequest(apiVersion: number, req: ProduceRequest): Buffer {
  if (apiVersion < 3 || apiVersion > 8) throw new ProtocolError(`Produce v${apiVersion} is not encoded here (v3 to v8 are)`);
  return produceFields(new Writer(), apiVersion, req).finish();
}

function produceFields(w: Writer, apiVersion: number, req: ProduceRequest): Writer {
  if (apiVersion >= 3) w.nullableString(req.transactionalId);
  w.int16(req.acks).int32(req.timeoutMs).int32(req.topics.length);
  for (const t of req.topics) {
    w.string(t.name).int32(t.partitions.length);
    for (const p of t.partitions) w.int32(p.index).nullableBytes(p.records);
  }
  return w;
}

export interface PartitionError {
  /** Index of the record in its batch, and why it was refused (Produce v8+ `record_errors`). */
  recordErrors: { index: number; message: string }[];
  message: string;
}

/**
 * A Produce response refusing every partition of `req` with `errorCode`. `errors` gives the
 * record errors and message of a partition (by `topic\0partition`); others get `fallback`.
 */
export function writeProduceError(header: RequestHeader, req: ProduceRequest, errorCode: number, errors: Map<string, PartitionError>, fallback: string): Buffer {
  const v = header.apiVersion;
  const w = new Writer().int32(header.correlationId).int32(req.topics.length);
  for (const t of req.topics) {
    w.string(t.name).int32(t.partitions.length);
    for (const p of t.partitions) {
      const e = errors.get(`${t.name}\0${p.index}`);
      writeOwnPartition(w, v, { index: p.index, errorCode, recordErrors: e?.recordErrors ?? [], message: e?.message ?? fallback });
    }
  }
  if (v >= 1) w.int32(0); // throttle_time_ms
  return w.finish();
}

/** How the proxy itself answers one partition of a produce request (records it did not send upstream). */
export interface OwnPartitionAnswer {
  index: number;
  errorCode: number;
  recordErrors?: { index: number; message: string }[];
  /** Produce v8+ `error_message`. */
  message: string | null;
}

export interface OwnTopicAnswer {
  name: string;
  partitions: OwnPartitionAnswer[];
}

/**
 * One partition the proxy answers itself: base_offset, log_append_time_ms and log_start_offset are
 * -1 (the records are in no log of the cluster's, so there is no offset to tell).
 */
function writeOwnPartition(w: Writer, v: number, p: OwnPartitionAnswer): void {
  w.int32(p.index).int16(p.errorCode).int64(-1n);
  if (v >= 2) w.int64(-1n); // log_append_time_ms
  if (v >= 5) w.int64(-1n); // log_start_offset
  if (v >= 8) {
    const recordErrors = p.recordErrors ?? [];
    w.int32(recordErrors.length);
    for (const re of recordErrors) w.int32(re.index).nullableString(re.message);
    w.nullableString(p.message);
  }
}

/**
 * The Produce response for a request the proxy answered in part itself: `upstream` (the cluster's
 * response to the rest of the request, forwarded without `own`'s topics) with `own`'s topics
 * after its own, in the version the client asked for; without `upstream`, `own` alone.
 */
export function writeProduceResponse(header: RequestHeader, own: OwnTopicAnswer[], upstream?: Buffer): Buffer {
  const v = header.apiVersion;
  let theirs: { count: number; topics: Buffer; throttleMs: number } = { count: 0, topics: Buffer.alloc(0), throttleMs: 0 };
  if (upstream) {
    const r = new Reader(upstream, 4);
    const count = r.arrayLength();
    const start = r.offset;
    for (let t = count; t > 0; t--) readResponseTopic(r, v);
    const end = r.offset;
    theirs = { count, topics: upstream.subarray(start, end), throttleMs: v >= 1 ? r.int32() : 0 };
  }
  const w = new Writer()
    .int32(header.correlationId)
    .int32(theirs.count + own.length)
    .raw(theirs.topics);
  for (const t of own) {
    w.string(t.name).int32(t.partitions.length);
    for (const p of t.partitions) writeOwnPartition(w, v, p);
  }
  if (v >= 1) w.int32(theirs.throttleMs);
  return w.finish();
}

export interface ProducePartitionResponse {
  index: number;
  errorCode: number;
  baseOffset: bigint;
  /** Produce v8+ `error_message`. */
  errorMessage: string | null;
}

/** A Produce response (v0-v8), topic by topic: what the cluster did with each partition's records. */
export function readProduceResponse(body: Buffer, version: number): Map<string, ProducePartitionResponse[]> {
  if (version > 8) throw new ProtocolError(`Produce v${version} is above the v8 the proxy offers`);
  const r = new Reader(body, 4);
  const topics = new Map<string, ProducePartitionResponse[]>();
  for (let t = r.arrayLength(); t > 0; t--) {
    const { name, partitions } = readResponseTopic(r, version);
    topics.set(name, [...(topics.get(name) ?? []), ...partitions]);
  }
  return topics;
}

function readResponseTopic(r: Reader, version: number): { name: string; partitions: ProducePartitionResponse[] } {
  const name = r.string();
  const partitions: ProducePartitionResponse[] = [];
  for (let p = r.arrayLength(); p > 0; p--) {
    const index = r.int32();
    const errorCode = r.int16();
    const baseOffset = r.int64();
    if (version >= 2) r.skip(8); // log_append_time_ms
    if (version >= 5) r.skip(8); // log_start_offset
    let errorMessage: string | null = null;
    if (version >= 8) {
      for (let e = r.arrayLength(); e > 0; e--) {
        r.skip(4); // batch_index
        r.nullableString();
      }
      errorMessage = r.nullableString();
    }
    partitions.push({ index, errorCode, baseOffset, errorMessage });
  }
  return { name, partitions };
}

/** Names of the Kafka error codes a produce response commonly carries, for logs (others show as numbers). */
const ERROR_NAMES: Record<number, string> = {
  [-1]: 'UNKNOWN_SERVER_ERROR',
  1: 'OFFSET_OUT_OF_RANGE',
  2: 'CORRUPT_MESSAGE',
  3: 'UNKNOWN_TOPIC_OR_PARTITION',
  5: 'LEADER_NOT_AVAILABLE',
  6: 'NOT_LEADER_OR_FOLLOWER',
  7: 'REQUEST_TIMED_OUT',
  10: 'MESSAGE_TOO_LARGE',
  19: 'NOT_ENOUGH_REPLICAS',
  20: 'NOT_ENOUGH_REPLICAS_AFTER_APPEND',
  21: 'INVALID_REQUIRED_ACKS',
  22: 'ILLEGAL_GENERATION',
  29: 'TOPIC_AUTHORIZATION_FAILED',
  32: 'INVALID_TIMESTAMP',
  43: 'UNSUPPORTED_FOR_MESSAGE_FORMAT',
  45: 'OUT_OF_ORDER_SEQUENCE_NUMBER',
  46: 'DUPLICATE_SEQUENCE_NUMBER',
  47: 'INVALID_PRODUCER_EPOCH',
  53: 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  59: 'UNKNOWN_PRODUCER_ID',
  87: 'INVALID_RECORD',
};

/** `6 (NOT_LEADER_OR_FOLLOWER)`, or the bare number for codes not listed. */
export function errorName(code: number): string {
  const name = ERROR_NAMES[code];
  return name ? `${code} (${name})` : String(code);
}

// ---- responses with broker addresses ---------------------------------------------------------

export interface BrokerAddress {
  nodeId: number;
  host: string;
  port: number;
}

/**
 * Rewrites the brokers of a Metadata response (v0-v8): `advertise` maps each upstream broker to
 * the address clients should use instead. Returns the new body and the brokers it saw.
 */
export function rewriteMetadataResponse(body: Buffer, version: number, advertise: (b: BrokerAddress) => { host: string; port: number }): { body: Buffer; brokers: BrokerAddress[] } {
  if (version > 8) throw new ProtocolError(`Metadata v${version} is above the v8 the proxy offers`);
  const r = new Reader(body, 4);
  if (version >= 3) r.int32(); // throttle_time_ms
  const brokersAt = r.offset;
  const brokers: (BrokerAddress & { rack: string | null })[] = [];
  for (let n = r.arrayLength(); n > 0; n--) {
    const nodeId = r.int32();
    const host = r.string();
    const port = r.int32();
    const rack = version >= 1 ? r.nullableString() : null;
    brokers.push({ nodeId, host, port, rack });
  }
  const w = new Writer().raw(body.subarray(0, brokersAt)).int32(brokers.length);
  for (const b of brokers) {
    const local = advertise(b);
    w.int32(b.nodeId).string(local.host).int32(local.port);
    if (version >= 1) w.nullableString(b.rack);
  }
  w.raw(body.subarray(r.offset));
  return { body: w.finish(), brokers };
}

/** Rewrites the coordinator's address in a FindCoordinator response (v0-v2). */
export function rewriteFindCoordinatorResponse(
  body: Buffer,
  version: number,
  advertise: (b: BrokerAddress) => { host: string; port: number },
): { body: Buffer; coordinator: BrokerAddress | undefined } {
  if (version > 2) throw new ProtocolError(`FindCoordinator v${version} is above the v2 the proxy offers`);
  const r = new Reader(body, 4);
  if (version >= 1) r.int32(); // throttle_time_ms
  const errorCode = r.int16();
  if (version >= 1) r.nullableString(); // error_message
  const nodeAt = r.offset;
  const nodeId = r.int32();
  const host = r.string();
  const port = r.int32();
  if (r.remaining !== 0) throw new ProtocolError(`${r.remaining} bytes after the FindCoordinator response`);
  if (errorCode !== 0 || nodeId < 0) return { body, coordinator: undefined };
  const coordinator = { nodeId, host, port };
  const local = advertise(coordinator);
  const w = new Writer().raw(body.subarray(0, nodeAt)).int32(nodeId).string(local.host).int32(local.port);
  return { body: w.finish(), coordinator };
}

export interface ApiVersionRange {
  apiKey: number;
  min: number;
  max: number;
}

/**
 * Offers clients only what both the broker and the proxy support: APIs outside VERSION_CAPS are
 * removed, the others capped. An error response (a version the broker does not speak: it answers
 * in v0 with the versions of ApiVersions it does) passes unchanged.
 */
export function rewriteApiVersionsResponse(body: Buffer, version: number): { body: Buffer; apis: ApiVersionRange[] } {
  const r = new Reader(body, 4);
  const errorCode = r.int16();
  if (errorCode !== 0) return { body, apis: [] };
  const flexible = version >= 3;
  const apis: ApiVersionRange[] = [];
  for (let n = flexible ? r.compactArrayLength() : r.arrayLength(); n > 0; n--) {
    apis.push({ apiKey: r.int16(), min: r.int16(), max: r.int16() });
    if (flexible) r.skipTaggedFields();
  }
  const offered = apis.flatMap((a) => {
    const cap = VERSION_CAPS.get(a.apiKey);
    if (cap === undefined || cap < a.min) return [];
    return [{ apiKey: a.apiKey, min: a.min, max: Math.min(a.max, cap) }];
  });
  const w = new Writer().raw(body.subarray(0, 6));
  if (flexible) w.uvarint(offered.length + 1);
  else w.int32(offered.length);
  for (const a of offered) {
    w.int16(a.apiKey).int16(a.min).int16(a.max);
    if (flexible) w.uvarint(0);
  }
  w.raw(body.subarray(r.offset)); // throttle_time_ms (v1+), tagged fields (v3+)
  return { body: w.finish(), apis: offered };
}

/**
 * The answer to an ApiVersions request above the version the proxy offers, as Kafka answers one
 * above its own (KIP-511): UNSUPPORTED_VERSION in the v0 shape (the only one every client reads),
 * listing the ApiVersions versions offered, so the client asks again at one of them.
 */
export function writeApiVersionsUnsupported(correlationId: number): Buffer {
  const max = VERSION_CAPS.get(ApiKey.ApiVersions)!;
  return new Writer().int32(correlationId).int16(ErrorCode.UNSUPPORTED_VERSION).int32(1).int16(ApiKey.ApiVersions).int16(0).int16(max).finish();
}

/** Mechanism of a SaslHandshake request (v0 and v1 have the same layout). */
export function readSaslHandshakeMechanism(body: Buffer, header: RequestHeader): string {
  return new Reader(body, header.bodyOffset).string();
}

/** Error code of a SaslHandshake response. */
export function saslHandshakeError(body: Buffer): number {
  return new Reader(body, 4).int16();
}
