/**
 * What a kafka listener's routes do to a Produce request: every record of a governed topic goes
 * through its route's chain. Any record the chain refuses refuses every governed topic of the
 * request with INVALID_RECORD (nothing of them is forwarded, so a client never has to guess which
 * of them landed), while topics no route names still go upstream;
 * records the chain changed (a validation tag, a transform, edited headers) are written back into
 * their batch, which is rebuilt with the same codec, record count and producer fields; batches
 * with no change, and topics no route names, go on as the client's own bytes. The records'
 * outcomes are recorded once the cluster answered (PendingRecords): a record counts as delivered
 * only when the cluster acknowledged its partition.
 *
 * A route with `to` takes its topic out of the request instead: once no record of the request was
 * refused, each record the chain let through goes to the route's targets (in order), and the proxy
 * answers those partitions itself when every target answered for every record (own answers,
 * merged with the cluster's answer to the rest of the request, if any went upstream).
 */
import {
  compressionOf,
  CorruptBatch,
  encodeBatch,
  isControlBatch,
  readRecords,
  RecordCursor,
  splitBatches,
  verifyCrc,
  type BatchCompression,
  type KafkaRecord,
  type RawBatch,
  type RecordHeader,
} from '../../../codecs/record-batch.js';
import {
  ErrorCode,
  errorName,
  type OwnPartitionAnswer,
  type OwnTopicAnswer,
  readProduceRequest,
  readProduceResponse,
  writeProduceError,
  writeProduceRequest,
  type PartitionError,
  type ProducePartition,
  type ProduceRequest,
  type RequestHeader,
} from '../../../codecs/kafka-protocol/messages.js';
import type { CheckedRecords, RecordsAnswer, RouteEntry } from '../../contracts.js';
import { mayPassLater, problem, type Problem } from '../../../core/errors.js';
import { decodeValueBytes, encodeValue, ORIGINAL, type Message, type MessageContext } from '../../../core/message.js';
import type { Outcome } from '../../../core/outcome.js';
import { isValidationTagName, VALIDATION_ERROR_HEADER } from '../../steps/validate.js';
import type { RefusedRequest } from './refusal-log.js';

export type Governed =
  /**
   * Send `body` upstream (the client's own bytes when nothing changed; null when routes with `to`
   * took every topic, and nothing goes upstream); `acks` 0 means no response will come.
   * `pending`: the governed records, to settle with the cluster's answer. `own`: the partitions the
   * proxy answers itself (routes with `to`), once their records' targets answered.
   */
  | { forward: Buffer; acks: number; pending: PendingRecords | undefined; own?: Promise<OwnTopicAnswer[]> }
  | { forward: null; acks: number; pending: undefined; own: Promise<OwnTopicAnswer[]> }
  /** Answer the client with this response body (null for acks=0: the client expects none). */
  | { respond: Buffer | null };

export interface GovernContext {
  /** The route governing a topic now (looked up per request, so a reload applies to the next one). */
  route(topic: string): RouteEntry | undefined;
  compression: BatchCompression;
  remoteAddress: string | undefined;
  /** The upstream broker's name in the config, as deliveries name it. */
  broker: string;
  /** Logs at warn, for what the client is told only as an error code. */
  warn?(fields: Record<string, unknown>, message: string): void;
  /** A produce request was refused (its log, rate-limited per route: refusalLog). */
  refused?(refusal: RefusedRequest): void;
}

interface Checked {
  route: RouteEntry;
  records: CheckedRecords;
}

/**
 * The records of a forwarded produce request that routes checked, waiting for the cluster's
 * answer. Exactly one of answered(), unacknowledged() or lost() settles them; later calls do nothing.
 */
export class PendingRecords {
  private settled = false;

  constructor(
    private readonly sets: readonly Checked[],
    private readonly broker: string,
  ) {}

  /** The cluster's Produce response: each partition is delivered or failed by its own error code. */
  answered(body: Buffer, version: number): void {
    let topics: ReturnType<typeof readProduceResponse>;
    try {
      topics = readProduceResponse(body, version);
    } catch (err) {
      this.lost(`the cluster's produce response could not be read (${(err as Error).message}); the records may or may not have been written`);
      return;
    }
    this.settle((records) => {
      const p = topics.get(records.topic)?.find((x) => x.index === records.partition);
      if (!p) return { written: false, outcome: 'failed', problem: problem('EG_KAFKA_ERROR', `the cluster's produce response does not name ${records.topic}-${records.partition}`) };
      if (p.errorCode === ErrorCode.NONE) return { written: true, broker: this.broker, baseOffset: p.baseOffset };
      const said = p.errorMessage ? `: ${p.errorMessage}` : '';
      return { written: false, outcome: 'failed', problem: problem('EG_KAFKA_ERROR', `the cluster answered ${errorName(p.errorCode)} for ${records.topic}-${records.partition}${said}`) };
    });
  }

  /** acks=0: the request was written upstream, and no acknowledgement will ever come. */
  unacknowledged(): void {
    this.settle(() => ({ written: true, broker: this.broker, baseOffset: undefined }));
  }

  /** No answer will come (the connection closed first). */
  lost(reason: string): void {
    const answer: RecordsAnswer = { written: false, outcome: 'failed', problem: problem('EG_BROKER_UNAVAILABLE', reason) };
    this.settle(() => answer);
  }

  private settle(answer: (records: CheckedRecords) => RecordsAnswer): void {
    if (this.settled) return;
    this.settled = true;
    for (const { route, records } of this.sets) route.settleRecords?.(records, answer(records));
  }
}

/** Throws ProtocolError when the request itself cannot be read (the connection is then closed). */
export function governProduce(header: RequestHeader, body: Buffer, ctx: GovernContext): Governed | Promise<Governed> {
  const req = readProduceRequest(body, header);
  const routed = req.topics.flatMap((t) => {
    const route = ctx.route(t.name);
    return route ? [{ topic: t.name, partitions: t.partitions, route }] : [];
  });
  if (routed.length === 0) return { forward: body, acks: req.acks, pending: undefined };
  const repeated = repeatedPartition(routed);
  if (repeated) return refuseRepeated(body, header, req, routed, repeated, ctx);
  const delivering = routed.filter((r) => r.route.delivers);
  if (delivering.length > 0 && req.transactionalId !== null) return refuseTransactional(header, req, delivering, ctx);
  if (delivering.length > 0 && !VALID_ACKS.has(req.acks)) return refuseAcks(header, req);
  return (async (): Promise<Governed> => {
    const startedAt = performance.now();
    const refused = new Map<string, PartitionError>();
    /** The first partition refused, for the log. */
    let first: { route: string; topic: string; partition: number; reason: string } | undefined;
    const checked: Checked[] = [];
    let changed = false;
    /** Every refusal is a dead-letter topic that did not acknowledge (possible only with `to`): the client may retry. */
    let unavailableOnly = true;
    /** Every refusal is of batches whose bytes do not match their CRC-32C (or unavailable): the client may send them again. */
    let corruptOnly = true;
    let corrupt = false;
    await Promise.all(
      routed.flatMap(({ topic, partitions, route }) =>
        partitions.map(async (p) => {
          const result = await governPartition(topic, p, route, ctx);
          if (result.checked) checked.push({ route, records: { topic, partition: p.index, messages: result.checked.messages, outcomes: result.checked.outcomes, startedAt } });
          if ('refused' in result) {
            refused.set(`${topic}\0${p.index}`, result.refused);
            first ??= { route: route.name, topic, partition: p.index, reason: result.refused.message };
            unavailableOnly &&= result.unavailable === true;
            corruptOnly &&= result.unavailable === true || result.corrupt === true;
            corrupt ||= result.corrupt === true;
          } else if (result.records !== p.records) {
            p.records = result.records;
            changed = true;
          }
        }),
      ),
    );
    if (refused.size > 0) {
      const notWritten: RecordsAnswer = { written: false, outcome: 'rejected', problem: problem('EG_PRODUCE_REFUSED', 'not written: another record of this produce request was refused') };
      for (const { route, records } of checked) route.settleRecords?.(records, notWritten);
      // A corrupted batch is answered as a Kafka broker answers it (CORRUPT_MESSAGE, which clients
      // retry: the bytes may have been damaged on the way), unless a route refused a record.
      const code = unavailableOnly ? ErrorCode.NOT_ENOUGH_REPLICAS : corruptOnly && corrupt ? ErrorCode.CORRUPT_MESSAGE : ErrorCode.INVALID_RECORD;
      if (first) ctx.refused?.({ ...first, remoteAddress: ctx.remoteAddress, error: errorName(code), acks: req.acks });
      return refuseGoverned(body, header, req, routed, code, refused, 'not written: another record of this produce request was refused');
    }
    const upstreamChecked = checked.filter((c) => !c.route.delivers);
    const pending = upstreamChecked.length > 0 ? new PendingRecords(upstreamChecked, ctx.broker) : undefined;
    if (delivering.length === 0) return { forward: changed ? writeProduceRequest(body, header, req) : body, acks: req.acks, pending };
    // Started before the rest goes upstream, record by record in request order.
    const own = deliver(delivering, checked, ctx);
    const taken = new Set(delivering.map((d) => d.topic));
    const rest = req.topics.filter((t) => !taken.has(t.name));
    if (rest.length === 0) return { forward: null, acks: req.acks, pending: undefined, own };
    return { forward: writeProduceRequest(body, header, { ...req, topics: rest }), acks: req.acks, pending, own };
  })();
}

/**
 * Every governed partition of the request refused with `code`, nothing of them written or
 * delivered. Topics no route names pass through unchanged (spec §2), whatever a governed topic
 * beside them in the request did: a client sends what it has for every topic of a broker in one
 * request, and an invalid record of one topic must not fail another's. They go upstream alone;
 * every governed partition is answered here.
 */
function refuseGoverned(body: Buffer, header: RequestHeader, req: ProduceRequest, routed: readonly Routed[], code: number, refused: Map<string, PartitionError>, fallback: string): Governed {
  const governed = new Set(routed.map((r) => r.topic));
  const free = req.topics.filter((t) => !governed.has(t.name));
  if (free.length === 0) return { respond: req.acks === 0 ? null : writeProduceError(header, req, code, refused, fallback) };
  const own: OwnTopicAnswer[] = req.topics
    .filter((t) => governed.has(t.name))
    .map((t) => ({
      name: t.name,
      partitions: t.partitions.map((p) => {
        const e = refused.get(`${t.name}\0${p.index}`);
        return { index: p.index, errorCode: code, recordErrors: e?.recordErrors ?? [], message: e?.message ?? fallback };
      }),
    }));
  return { forward: writeProduceRequest(body, header, { ...req, topics: free }), acks: req.acks, pending: undefined, own: Promise.resolve(own) };
}

/**
 * A governed partition the request names more than once (in one topic entry, or in two entries of
 * one topic). Asked of every governed produce request: one of a single partition allocates
 * nothing, others a set of partition numbers per topic (a string key per partition cost a 600-partition
 * request several times as much).
 */
function repeatedPartition(routed: readonly Routed[]): { route: RouteEntry; topic: string; partition: number } | undefined {
  if (routed.length === 1 && routed[0]!.partitions.length === 1) return undefined;
  const seen = new Map<string, Set<number>>();
  for (const { topic, partitions, route } of routed) {
    let indexes = seen.get(topic);
    if (indexes === undefined) seen.set(topic, (indexes = new Set()));
    for (const p of partitions) {
      if (indexes.has(p.index)) return { route, topic, partition: p.index };
      indexes.add(p.index);
    }
  }
  return undefined;
}

/**
 * No client sends one partition twice in a produce request; a hand-made one that does is refused
 * before any record is checked. Kafka keeps only the last entry and answers once; a route with
 * `to` delivered the last entry's records twice and none of the first's, answering NONE for both.
 * INVALID_RECORD, as every request the proxy refuses (spec §2); topics no route names go on.
 */
function refuseRepeated(
  body: Buffer,
  header: RequestHeader,
  req: ProduceRequest,
  routed: readonly Routed[],
  repeated: { route: RouteEntry; topic: string; partition: number },
  ctx: GovernContext,
): Governed {
  const message = `partition ${repeated.partition} of topic '${repeated.topic}' appears more than once in this produce request (a Kafka broker keeps only the last): nothing of the governed topics is written`;
  const refused = new Map<string, PartitionError>([[`${repeated.topic}\0${repeated.partition}`, { recordErrors: [], message }]]);
  ctx.refused?.({
    route: repeated.route.name,
    topic: repeated.topic,
    partition: repeated.partition,
    remoteAddress: ctx.remoteAddress,
    error: errorName(ErrorCode.INVALID_RECORD),
    acks: req.acks,
    reason: message,
  });
  return refuseGoverned(body, header, req, routed, ErrorCode.INVALID_RECORD, refused, `not written: ${message}`);
}

/**
 * A transactional producer's records would reach a route's targets as they arrive, not when the
 * transaction commits (and would stay there if it aborted): the request is refused whole, with
 * INVALID_RECORD as every refused produce request (spec §2), and the reason logged and in the
 * response's error_message (Produce v8+).
 */
function refuseTransactional(header: RequestHeader, req: ProduceRequest, delivering: readonly Routed[], ctx: GovernContext): Governed {
  const refused = new Map<string, PartitionError>();
  for (const { topic, partitions, route } of delivering) {
    const message = `route '${route.name}' sends topic '${topic}' to its targets as records arrive, not when a transaction commits: transactional producers cannot produce to it`;
    for (const p of partitions) refused.set(`${topic}\0${p.index}`, { recordErrors: [], message });
  }
  ctx.warn?.(
    { transactionalId: req.transactionalId, topics: delivering.map((d) => d.topic), routes: delivering.map((d) => d.route.name), remoteAddress: ctx.remoteAddress },
    'transactional produce refused: a route with to delivers records at once, not at commit',
  );
  const response = writeProduceError(header, req, ErrorCode.INVALID_RECORD, refused, 'not written: another topic of this transactional produce request is delivered by a route with to');
  return { respond: req.acks === 0 ? null : response };
}

/** The acks a Kafka broker takes: none, the leader's, all in-sync replicas'. */
const VALID_ACKS = new Set([0, 1, -1]);

/**
 * A request with acks a broker refuses (2, say), to a route with `to`, which answers instead of the
 * cluster (before, it delivered the records and answered NONE): refused whole, nothing delivered or
 * forwarded, with INVALID_RECORD as every produce request the proxy refuses (spec §2; the cluster
 * itself answers INVALID_REQUIRED_ACKS), the reason in error_message (Produce v8+).
 */
function refuseAcks(header: RequestHeader, req: ProduceRequest): Governed {
  const message = `acks must be -1 (all), 0 or 1, not ${req.acks}`;
  return { respond: writeProduceError(header, req, ErrorCode.INVALID_RECORD, new Map(), message) };
}

interface Routed {
  topic: string;
  partitions: ProducePartition[];
  route: RouteEntry;
}

/**
 * Sends the checked records of routes with `to` to their targets, partition by partition and record
 * by record in request order (the sends start now); resolves with each partition's answer once
 * every target answered for every record. Never rejects.
 */
function deliver(delivering: readonly Routed[], checked: readonly Checked[], ctx: GovernContext): Promise<OwnTopicAnswer[]> {
  const sets = new Map(checked.map((c) => [`${c.records.topic}\0${c.records.partition}`, c.records]));
  const topics = delivering.map(({ topic, partitions, route }) => {
    const answers = partitions.map((p): OwnPartitionAnswer | Promise<OwnPartitionAnswer> => {
      const set = sets.get(`${topic}\0${p.index}`);
      return set ? deliverSet(route, set, ctx) : { index: p.index, errorCode: ErrorCode.NONE, message: null };
    });
    return Promise.all(answers).then((partitions) => ({ name: topic, partitions }));
  });
  return Promise.all(topics);
}

/**
 * One partition's records to the route's targets. NONE when every record went where the route
 * sends it (delivered, filtered or dead-lettered). Otherwise, when a try later may pass (a broker
 * that did not acknowledge, a webhook that failed: an HTTP client gets 503 or 502), a retriable
 * error: NOT_ENOUGH_REPLICAS when no target took any record of the partition,
 * NOT_ENOUGH_REPLICAS_AFTER_APPEND when some did (the client's retry sends those records to them
 * again, as an HTTP client's retry does). A failure no retry can pass (a target that refused a
 * record as too large, HTTP 413, or as invalid, a webhook's final refusal, a failed expression) is
 * answered as Kafka answers such a record, MESSAGE_TOO_LARGE or INVALID_RECORD, which clients do
 * not retry: told a retriable error, they sent the record again until their delivery timeout.
 */
function deliverSet(route: RouteEntry, set: CheckedRecords, ctx: GovernContext): OwnPartitionAnswer | Promise<OwnPartitionAnswer> {
  const mctx = context(route, ctx);
  let waits = false;
  const pending = set.outcomes.map((o, i) => {
    const m = set.messages[i];
    // Every record of a route with targets is kept as a message (governPartition); one that is not cannot be sent.
    const d = m && route.deliverRecord ? route.deliverRecord(m, o, mctx) : o.outcome === 'delivered' ? NOT_SENT : o;
    if (d instanceof Promise) waits = true;
    return d;
  });
  const answer = (outcomes: Outcome[]): OwnPartitionAnswer => {
    route.settleRecords?.({ ...set, outcomes }, { written: 'targets' });
    let failed: Problem | undefined;
    let final: Problem | undefined;
    let failures = 0;
    let took = false;
    for (const o of outcomes) {
      if (o.outcome === 'delivered' || o.outcome === 'deadlettered') took = true;
      else if (o.outcome === 'failed') {
        failures++;
        failed ??= o.problem;
        if (!mayPassLater(o.problem)) final ??= o.problem;
        if (o.problem.took?.some((d) => d !== undefined)) took = true;
      }
    }
    if (failed === undefined) return { index: set.partition, errorCode: ErrorCode.NONE, message: null };
    const more = failures > 1 ? ` (and ${failures - 1} more records)` : '';
    // One record no retry can pass fails every retry of the partition's records: say so, not "try
    // again". The client reports every record of the partition failed: say which were delivered.
    if (final) {
      const delivered = took ? '; records the targets took are delivered all the same (sending them again delivers them again)' : '';
      return { index: set.partition, errorCode: final.status === 413 ? ErrorCode.MESSAGE_TOO_LARGE : ErrorCode.INVALID_RECORD, message: `route '${route.name}': ${final.detail}${more}${delivered}` };
    }
    const again = took ? '; records the targets took are sent to them again if the client retries' : '';
    return {
      index: set.partition,
      errorCode: took ? ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND : ErrorCode.NOT_ENOUGH_REPLICAS,
      message: `route '${route.name}': ${failed.detail}${more}${again}`,
    };
  };
  return waits ? Promise.all(pending).then(answer) : answer(pending as Outcome[]);
}

/**
 * `checked`: the records the route judged (settled later, whatever the result). `unavailable`:
 * every refused record failed only because a broker did not acknowledge (its dead-letter topic).
 * `corrupt`: the partition was refused only for batches whose bytes do not match their CRC-32C.
 */
type PartitionResult = ({ records: Buffer | null } | { refused: PartitionError; unavailable?: boolean; corrupt?: boolean }) & { checked?: { messages: (Message | undefined)[]; outcomes: Outcome[] } };

async function governPartition(topic: string, p: ProducePartition, route: RouteEntry, ctx: GovernContext): Promise<PartitionResult> {
  if (p.records === null || p.records.length === 0) return { records: p.records };
  let batches: RawBatch[];
  try {
    // The CRC is checked for batches rebuilt here (below) and for those of a route with `to`, whose
    // records reach no broker that would check it (a corrupted value would be delivered); the
    // broker checks the others.
    batches = splitBatches(p.records, { checkCrc: route.delivers === true });
  } catch (err) {
    return { refused: { recordErrors: [], message: `route '${route.name}' cannot read these records: ${(err as Error).message}` }, corrupt: err instanceof CorruptBatch };
  }
  const recordErrors: { index: number; message: string }[] = [];
  /** Of those, records that failed because a broker did not acknowledge (503). */
  let unavailable = 0;
  /** Of those, batches refused for a CRC-32C that does not match their bytes. */
  let corrupt = 0;
  const judged: ({ messages: (Message | undefined)[]; outcomes: Outcome[] } | undefined)[] = new Array(batches.length);
  const rebuilt: (Buffer | undefined)[] = await Promise.all(
    batches.map(async (batch, b) => {
      if (isControlBatch(batch.attributes)) return undefined;
      let data: Buffer;
      try {
        const codec = compressionOf(batch.attributes);
        // A route with `to` keeps each record's bytes (messageAt) as views of `data`: memory of its
        // own, copied once per batch, so that a target still holding a message after the client's
        // answer (a send answered after its ack timeout, then retried) never depends on what the
        // connection does with the request's memory (today it recycles only frames it forwarded
        // unchanged: e2e/kafka-proxy-kept-bytes). A decompressed section is the batch's own already.
        if (codec !== 0) data = await ctx.compression.decompress(codec, batch.recordsSection);
        else data = route.delivers ? Buffer.from(batch.recordsSection) : batch.recordsSection;
      } catch (err) {
        if (refusedAsCorrupt(batch, recordErrors)) corrupt++;
        else recordErrors.push({ index: 0, message: `cannot read the batch: ${(err as Error).message}` });
        return undefined;
      }
      const baseTimestamp = Number(batch.baseTimestamp);
      // Records judged from their value's bytes have no message (their places stay holes). Their
      // outcome, the check's `passed`, is written into `pending` only up to a record judged as a
      // message, and after the loop: a batch that passes whole costs no array write per record.
      const bytes = route.recordBytesCheck?.();
      // A route with a validate step drops a validation tag the producer wrote (withoutClientTag): a
      // batch with one is rebuilt without it, one without goes on byte for byte (spec-checklist 1363).
      const dropsClientTag = route.validates === true && !route.delivers;
      const forwardsValidated = dropsClientTag;
      let clientTag = false;
      let byBytes = 0;
      let asMessages = 0;
      let pending: (Outcome | Promise<Outcome>)[] = [];
      const messages: (Message | undefined)[] = [];
      let waits = false;
      let unreadable: Error | undefined;
      try {
        // Inside the try: a negative record count is an unreadable batch (INVALID_RECORD, as a
        // Kafka broker answers it), not a request that cannot be read at all (a closed connection).
        const cur = new RecordCursor(data, batch.recordCount);
        while (cur.next()) {
          if (dropsClientTag && !clientTag && cur.headerCount > 0) clientTag = cur.hasHeaderNamed(VALIDATION_TAG_BYTES);
          if (bytes !== undefined && cur.valueStart >= 0 && bytes.accepts(data, cur.valueStart, cur.valueEnd)) {
            byBytes++;
            continue;
          }
          const i = cur.index;
          while (pending.length < i) pending.push(bytes!.passed);
          const m = messageAt(cur, data, baseTimestamp, topic, p.index, route.delivers === true);
          messages[i] = m;
          // A context per record: a step writes on it (a validate step's tag errors, `$message`),
          // and a chain that awaits goes on after the next records' chains began.
          // The value goes upstream as these bytes: a validate step reads the names they repeat.
          const mctx = forwardsValidated && cur.valueStart >= 0 ? validatedContext(route, ctx, { value: m.value, buf: data, start: cur.valueStart, end: cur.valueEnd }) : context(route, ctx);
          const o = route.checkRecord ? route.checkRecord(m, mctx) : route.handle(m, mctx);
          if (o instanceof Promise) waits = true;
          pending.push(o);
          asMessages++;
        }
      } catch (err) {
        // The records judged so far are settled with the request (refused); the batch cannot go on.
        unreadable = err as Error;
      }
      if (byBytes > 0) {
        // Counted as received in one go (checkRecord() counts its own records).
        bytes!.received(byBytes);
        if (asMessages === 0) pending = new Array<Outcome>(byBytes).fill(bytes!.passed);
        else while (pending.length < byBytes + asMessages) pending.push(bytes!.passed);
      }
      // Only a chain with an asynchronous step costs a promise per record.
      const outcomes = waits ? await Promise.all(pending) : (pending as Outcome[]);
      if (unreadable) {
        judged[b] = { messages, outcomes };
        if (refusedAsCorrupt(batch, recordErrors)) corrupt++;
        else recordErrors.push({ index: 0, message: `cannot read the batch: ${unreadable.message}` });
        return undefined;
      }
      let changes = clientTag;
      let refusals = false;
      // Records the byte check accepted passed unchanged: only the others can refuse or change.
      if (asMessages > 0) {
        for (const o of outcomes) {
          if (o.outcome !== 'delivered') refusals ||= refuses(o);
          else if (o.message) changes = true;
        }
      }
      // The messages are kept until the cluster answers only for the tap and the log of refused
      // records: held longer, thousands of them per request would outlive the young generation.
      // A route with `to` sends the messages to its targets: it keeps them all, and its batches go nowhere.
      judged[b] = { messages: refusals || route.delivers || route.observed?.() !== false ? messages : NO_MESSAGES, outcomes };
      if (route.delivers) {
        for (let i = 0; i < outcomes.length; i++) {
          const o = outcomes[i]!;
          if (!refuses(o)) continue;
          recordErrors.push({ index: i, message: describe(o) });
          if (o.outcome === 'failed' && o.problem.status === 503) unavailable++;
        }
        return undefined;
      }
      if (!changes && !refusals) return undefined;
      // Records refused from a batch whose bytes are not what its producer wrote: the batch is
      // answered as damaged (CORRUPT_MESSAGE, which the client sends again), as a Kafka broker
      // checks the CRC before the records. Checked on this rare path only, not per batch.
      if (refusals && !route.delivers && refusedAsCorrupt(batch, recordErrors)) {
        corrupt++;
        return undefined;
      }
      // Batches the chain changed, or holding a producer's validation tag, are read again, as records to rebuild (the rare path).
      const records = changes ? readRecords(data, batch.recordCount) : [];
      let edited: KafkaRecord[] | undefined;
      for (let i = 0; i < outcomes.length; i++) {
        const outcome = outcomes[i]!;
        // Without changes the batch is refused or goes on as it came: its records were not read.
        if (outcome.outcome === 'delivered' && changes) {
          const changed = outcome.message ? applyChanges(records[i]!, messages[i]!, outcome.message) : records[i]!;
          // Rebuilt anyway: its records lose a validation tag their producer wrote (withoutClientTag).
          const next = route.validates ? withoutClientTagRecord(changed, outcome.tagged) : changed;
          if (next !== records[i]) (edited ??= records.slice())[i] = next;
        } else if (refuses(outcome)) {
          recordErrors.push({ index: i, message: describe(outcome) });
        }
      }
      if (!edited || recordErrors.length > 0) return undefined;
      // Never launder a corrupted batch into one with a good CRC.
      if (refusedAsCorrupt(batch, recordErrors)) {
        corrupt++;
        return undefined;
      }
      return encodeBatch(batch, edited, ctx.compression).catch((err: Error) => {
        recordErrors.push({ index: 0, message: `cannot rebuild the batch: ${err.message}` });
        return undefined;
      });
    }),
  );
  const sets = judged.filter((j) => j !== undefined);
  const checked = sets.length === 0 ? undefined : sets.length === 1 ? sets[0] : joinSets(sets);
  if (recordErrors.length > 0) {
    const first = recordErrors[0]!;
    const more = recordErrors.length > 1 ? ` (and ${recordErrors.length - 1} more)` : '';
    return {
      refused: { recordErrors, message: `route '${route.name}' refused record ${first.index}: ${first.message}${more}` },
      unavailable: unavailable === recordErrors.length,
      corrupt: corrupt === recordErrors.length,
      checked,
    };
  }
  if (rebuilt.every((b) => b === undefined)) return { records: p.records, checked };
  return { records: Buffer.concat(batches.map((b, i) => rebuilt[i] ?? b.bytes)), checked };
}

/**
 * Several batches' judged records as one set, each batch keeping its places so that messages[i]
 * stays outcomes[i]'s record (not flatMap: it skips the holes of a batch whose messages were dropped).
 */
function joinSets(sets: { messages: (Message | undefined)[]; outcomes: Outcome[] }[]): { messages: (Message | undefined)[]; outcomes: Outcome[] } {
  const messages: (Message | undefined)[] = [];
  const outcomes: Outcome[] = [];
  for (const j of sets) {
    for (let i = 0; i < j.outcomes.length; i++) {
      messages.push(j.messages[i]);
      outcomes.push(j.outcomes[i]!);
    }
  }
  return { messages, outcomes };
}

function context(route: RouteEntry, ctx: GovernContext): MessageContext {
  return { route: route.name, remoteAddress: ctx.remoteAddress };
}

/**
 * Whether `batch`'s bytes do not match its CRC-32C (verifyCrc); if so, that is the batch's one
 * refusal, added to `recordErrors`. Asked of a batch the listener rebuilds or refuses.
 */
function refusedAsCorrupt(batch: RawBatch, recordErrors: { index: number; message: string }[]): boolean {
  try {
    verifyCrc(batch);
    return false;
  } catch (err) {
    recordErrors.push({ index: 0, message: (err as Error).message });
    return true;
  }
}

/** context() of a record whose batch goes on after a validate step, with the bytes of its value (in the literal: no shape change per record). */
function validatedContext(route: RouteEntry, ctx: GovernContext, valueBytes: NonNullable<MessageContext['valueBytes']>): MessageContext {
  return { route: route.name, remoteAddress: ctx.remoteAddress, valueBytes };
}

const NO_HEADERS: Record<string, string> = Object.freeze({}) as Record<string, string>;

const NO_MESSAGES: (Message | undefined)[] = [];

const NOT_SENT: Outcome = { outcome: 'failed', problem: problem('EG_INTERNAL', 'the record was not kept as a message, so it was not sent to the targets') };

/**
 * The cursor's record as a message (spec §3): JSON value parsed, key and headers as UTF-8 strings
 * (the last of repeated names). Read straight from the records section, with no record object or
 * Buffer views in between. A route with `to` (`keepBytes`) writes the message to targets rather
 * than the batch upstream: it keeps the record's bytes as the message's ORIGINAL, so a field no
 * step changed is written as the producer wrote it (binary values, JSON's own spelling, repeated
 * headers), as a consume route's copies are: views of `data`, which the caller made the batch's
 * own (one copy per batch, not per record).
 */
function messageAt(cur: RecordCursor, data: Buffer, baseTimestamp: number, topic: string, partition: number, keepBytes: boolean): Message {
  const value = cur.valueStart < 0 ? null : decodeValueBytes(data, cur.valueStart, cur.valueEnd);
  const key = cur.keyStart < 0 ? null : data.toString(undefined, cur.keyStart, cur.keyEnd);
  // Steps never change a message in place (they return new ones), so records without headers share one object.
  const headers = cur.headerCount > 0 ? cur.headers() : NO_HEADERS;
  const m: Message = { value, key, headers, topic, partition, offset: null, timestamp: baseTimestamp + cur.timestampDelta };
  if (keepBytes) m[ORIGINAL] = { ...cur.fieldBytes(), decoded: { value, key, headers } };
  return m;
}

/**
 * The record with what the chain changed: a new value, headers set or removed. Headers the chain
 * left alone keep their original bytes and order (repeated names and binary values included).
 * Returns the record itself when nothing changed, so its batch keeps the client's bytes.
 */
function applyChanges(rec: KafkaRecord, before: Message, out: Message): KafkaRecord {
  if (out.value === before.value && out.headers === before.headers) return rec;
  // Steps that keep a value pass the same object on; a transform makes a new one.
  const valueChanged = out.value !== before.value;
  const names = Object.keys(out.headers);
  let headers: RecordHeader[] | undefined;
  if (names.length !== Object.keys(before.headers).length || names.some((n) => before.headers[n] !== out.headers[n])) {
    headers = [];
    const written = new Set<string>();
    for (const h of rec.headers) {
      if (!(h.key in out.headers)) continue;
      if (before.headers[h.key] === out.headers[h.key]) headers.push(h);
      else if (!written.has(h.key)) headers.push({ key: h.key, value: Buffer.from(out.headers[h.key]!, 'utf8') });
      written.add(h.key);
    }
    for (const n of names) if (!written.has(n)) headers.push({ key: n, value: Buffer.from(out.headers[n]!, 'utf8') });
  }
  if (!valueChanged && !headers) return rec;
  return {
    ...rec,
    value: valueChanged ? (out.value === null ? null : Buffer.from(encodeValue(out.value), 'utf8')) : rec.value,
    headers: headers ?? rec.headers,
  };
}

/** The validation tag's name as record header keys hold it (matched in any case). */
const VALIDATION_TAG_BYTES = Buffer.from(VALIDATION_ERROR_HEADER.toLowerCase());

/** `rec` without a validation tag its producer wrote (the route's own, `tagged`, stays); the same record when it has none. */
function withoutClientTagRecord(rec: KafkaRecord, tagged: boolean): KafkaRecord {
  const client = (h: RecordHeader) => isValidationTagName(h.key) && !(tagged && h.key === VALIDATION_ERROR_HEADER);
  return rec.headers.some(client) ? { ...rec, headers: rec.headers.filter((h) => !client(h)) } : rec;
}

type Refusal = Extract<Outcome, { outcome: 'invalid' | 'rejected' | 'failed' }>;

/** Whether a record's outcome refuses its produce request (a dead-lettered record, possible only with `to`, was dealt with). */
function refuses(o: Outcome): o is Refusal {
  return o.outcome !== 'delivered' && o.outcome !== 'filtered' && o.outcome !== 'deadlettered';
}

function describe(outcome: Refusal): string {
  const p = outcome.problem;
  return p.errors && p.errors.length > 0 ? `${p.detail}: ${p.errors.join('; ')}` : p.detail;
}
