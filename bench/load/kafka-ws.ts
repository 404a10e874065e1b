/**
 * Broker → websocket latency: records produced at a fixed rate (to Kafka here; MQTT, AMQP and NATS
 * through broker-publishers.ts), each carrying the time it was handed to the producer, and
 * websocket clients (in this same process, so one clock) noting when it reaches them.
 */
import kafkajs from 'kafkajs';
import { cpuMs } from '../processes.js';
import { warmupSeconds } from '../scenario.js';
import { percentile } from '../stats.js';
import { subscribe, type Subscriber } from './frame-counter.js';

const { Kafka, logLevel } = kafkajs;

/** How often the producer sends what the rate owes: one produce request per tick (as a producer's 5 ms linger would). */
const TICK_MS = 5;

export interface LatencySide {
  /** Milliseconds from producer.send() to the frame's arrival at the sentinel client. */
  latencies: number[];
  /** Records of the current phase that reached the sentinel client (each counted once). */
  received: number;
  /** The sequence numbers received in the current phase. */
  seen: Set<number>;
  /** Records of the current phase that reached the sentinel client again. */
  duplicates: number;
  /** Frames all clients received. */
  frames: number;
}

interface Subscribers {
  clients: Subscriber[];
  side: LatencySide;
}

/**
 * `clients` lean subscribers (frame-counter.ts); the first one also reads each payload's sequence
 * number to time it. One sentinel is enough to time the path, and parsing every frame on every
 * client would make this process, not the servers, the bottleneck. Only records of the current
 * phase are timed: `sentAt` is cleared when a phase starts, so a record produced before it (a
 * warm-up record that arrives late) is not counted in it.
 */
async function subscribeFrames(url: string, clients: number, sentAt: Map<number, number>): Promise<Subscribers> {
  const side: LatencySide = { latencies: [], received: 0, seen: new Set(), duplicates: 0, frames: 0 };
  const onPayload = (text: string) => {
    const { seq } = JSON.parse(text) as { seq: number };
    const t = sentAt.get(seq);
    if (t === undefined) return;
    if (side.seen.has(seq)) {
      side.duplicates++;
      return;
    }
    side.seen.add(seq);
    side.latencies.push(performance.now() - t);
    side.received++;
  };
  const subs: Subscriber[] = [];
  for (let i = 0; i < clients; i++) subs.push(await subscribe(url, () => side.frames++, i === 0 ? onPayload : undefined));
  return { clients: subs, side };
}

function closeSubscribers(s: Subscribers): void {
  for (const c of s.clients) c.close();
}

export interface FixedRateProducer {
  /** Produces one record every 100 ms until every side has seen one (consumers joined, clients subscribed). */
  probe(sides: LatencySide[], seen: () => boolean, timeoutMs: number): Promise<void>;
  /** Produces `rate` records per second for `seconds`; returns how many it produced. */
  run(rate: number, seconds: number): Promise<number>;
  /** Milliseconds from send() to the cluster's acknowledgement, for the sends of the last run(). */
  acks: number[];
  stop(): Promise<void>;
}

/** Publishes a batch of message values and resolves once the server acknowledged all of them. */
export type BatchPublisher = { send(values: string[]): Promise<unknown>; stop(): Promise<void> };

/** The fixed-rate driver over any broker's publisher: each value carries its sequence number, timed from the send() call. */
export function fixedRate(publisher: BatchPublisher, sentAt: Map<number, number>): FixedRateProducer {
  let seq = 0;
  let acks: number[] = [];
  const send = (n: number) => {
    const now = performance.now();
    const values = [];
    for (let i = 0; i < n; i++) {
      sentAt.set(seq, now);
      values.push(JSON.stringify({ seq: seq++, room: 'r1', lumens: 640 }));
    }
    return publisher.send(values).then(() => acks.push(performance.now() - now));
  };
  return {
    async probe(_sides, seen, timeoutMs) {
      const until = performance.now() + timeoutMs;
      while (!seen()) {
        if (performance.now() > until) throw new Error(`no record reached the websocket clients within ${timeoutMs} ms`);
        await send(1);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    get acks() {
      return acks;
    },
    async run(rate, seconds) {
      acks = [];
      // Each tick sends what the schedule owes by then, so the rate holds even when a tick is late;
      // records are timed from their send() call, so waiting for a tick is not counted.
      const start = performance.now();
      let produced = 0;
      const inFlight: Promise<unknown>[] = [];
      while (performance.now() - start < seconds * 1000) {
        const owed = Math.floor(((performance.now() - start) / 1000) * rate) - produced;
        if (owed > 0) {
          inFlight.push(send(owed));
          produced += owed;
        }
        await new Promise((r) => setTimeout(r, TICK_MS));
      }
      await Promise.all(inFlight);
      return produced;
    },
    stop: () => publisher.stop(),
  };
}

/**
 * Each send() (one tick's records) goes to one partition, the next send to the next: the sticky
 * partitioning that librdkafka and the Java client use for records without a key (KIP-480), which
 * is what a producer with a linger does. kafkajs's own partitioner spreads every send over all
 * partitions, one small batch each; on librdkafka's mock cluster, which answers a fetch with at
 * most one batch per partition, that made each consumer need a fetch round trip per broker every
 * tick just to keep up (docs/performance.md, "kafka-ws-latency on the mock cluster").
 */
export async function fixedRateProducer(bootstrap: string, topic: string, partitions: number, sentAt: Map<number, number>): Promise<FixedRateProducer> {
  const kafka = new Kafka({ clientId: 'bench-producer', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  let next = 0;
  const send = (values: string[]) => {
    const partition = next++ % partitions;
    return producer.send({ topic, acks: 1, messages: values.map((value) => ({ value, partition })) });
  };
  return fixedRate({ send, stop: () => producer.disconnect() }, sentAt);
}

export function latencyFigures(side: LatencySide, produced: number) {
  const sorted = [...side.latencies].sort((a, b) => a - b);
  return { p50_ms: percentile(sorted, 0.5), p99_ms: percentile(sorted, 0.99), max_ms: sorted[sorted.length - 1] ?? NaN, records: produced, received: side.received, duplicates: side.duplicates };
}

/**
 * A gateway and its baseline, each with `clients` websocket subscribers, timed against one
 * producer: `sentAt` is where the producer notes when it sent each message (fixedRate); it holds
 * the records of the current phase only (probe, warm-up, measured run).
 */
export async function latencyRig(urls: { gateway: string; baseline: string }, clients: number) {
  const sentAt = new Map<number, number>();
  const gateway = await subscribeFrames(urls.gateway, clients, sentAt);
  const baseline = await subscribeFrames(urls.baseline, clients, sentAt);
  const sides = [gateway.side, baseline.side];
  /** A new phase: records produced before it are no longer timed or counted. */
  const phase = () => {
    sentAt.clear();
    for (const s of sides) {
      s.latencies = [];
      s.received = 0;
      s.seen.clear();
      s.duplicates = 0;
    }
  };
  /** Waits (bounded: a lost record never arrives) until both sides have received `produced` records of this phase; returns how long that took. */
  const arrived = async (produced: number, timeoutMs: number) => {
    const start = performance.now();
    while (sides.some((s) => s.received < produced) && performance.now() - start < timeoutMs) await new Promise((r) => setTimeout(r, 10));
    return performance.now() - start;
  };
  return {
    sentAt,
    /**
     * Probes until a message reaches each side (their subscriptions are in place), warms up and
     * waits until both sides have received every warm-up record, then publishes at `rate` for
     * `duration` s and waits (bounded) for the last ones. The measured run starts with nothing
     * outstanding on either side, so what it reports is not the tail of the warm-up's backlog.
     */
    async measure(producer: FixedRateProducer, pids: { gateway: number; baseline: number }, rate: number, duration: number) {
      phase();
      await producer.probe(sides, () => gateway.side.received > 0 && baseline.side.received > 0, 30000);
      phase();
      const warm = await producer.run(rate, warmupSeconds(duration));
      const catchUpMs = await arrived(warm, 10000);
      await new Promise((r) => setTimeout(r, 100));
      phase();
      const cpu0 = { gateway: cpuMs(pids.gateway), baseline: cpuMs(pids.baseline), load: process.cpuUsage() };
      const t0 = performance.now();
      const produced = await producer.run(rate, duration);
      const elapsed = performance.now() - t0;
      const own = process.cpuUsage(cpu0.load);
      // Share of a core each process used while messages flowed: a saturated load generator would inflate both sides' latency.
      const cores = { gateway: (cpuMs(pids.gateway) - cpu0.gateway) / elapsed, baseline: (cpuMs(pids.baseline) - cpu0.baseline) / elapsed, load_generator: (own.user + own.system) / 1000 / elapsed };
      await arrived(produced, 5000);
      return {
        produced,
        cores,
        /** How long after the warm-up's last send both sides had received all its records (a backlog left by the warm-up shows here, not in the figures). */
        warmupCatchUpMs: catchUpMs,
        gateway: latencyFigures(gateway.side, produced),
        baseline: latencyFigures(baseline.side, produced),
        // How long the broker took to acknowledge the publishes: the part of the latency neither side controls.
        ackP99: percentile(
          [...producer.acks].sort((a, b) => a - b),
          0.99,
        ),
      };
    },
    close(): void {
      closeSubscribers(gateway);
      closeSubscribers(baseline);
    },
  };
}
