import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { ApiKey, readProduceRequest, readRequestHeader, rewriteFindCoordinatorResponse, rewriteMetadataResponse } from '../../src/codecs/kafka-protocol/messages.js';
import { frame, Reader } from '../../src/codecs/kafka-protocol/wire.js';
import { compressionOf, splitBatches } from '../../src/codecs/record-batch.js';

/** One record batch of a Produce request, as the client wrote it. */
export interface TappedBatch {
  topic: string;
  partition: number;
  /** Bits 0-2 of the batch's attributes: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd. */
  codec: number;
  records: number;
  /** Bytes of its records section (after the 61 of the batch header; compressed when `codec` is not 0). */
  recordBytes: number;
}

/** One Produce request a client sent through the tap. */
export interface TappedProduce {
  acks: number;
  timeoutMs: number;
  batches: TappedBatch[];
}

/**
 * A TCP proxy in front of a one-broker Kafka cluster that reads what clients send with the
 * project's own codec (src/codecs/kafka-protocol, record-batch.ts): each Produce request's acks and
 * record batches (codec, record count), the Metadata requests that name no topic (kafkajs'
 * describeCluster, asking for all of them: the kafka broker's health probe), the connections opened. Clients learn broker
 * addresses from Metadata and FindCoordinator answers, which advertise the tap's port instead of
 * the broker's, so every connection of a client given the tap as bootstrap goes through it.
 * holdProduce() keeps the answers to Produce requests (and what follows them on their connection)
 * until releaseProduce().
 */
export class KafkaTap {
  readonly produces: TappedProduce[] = [];
  /** Metadata requests for every topic (none named): kafkajs' admin describeCluster, the health probe, sends them. */
  probes = 0;
  /** Client connections accepted. */
  connections = 0;
  /** What the tap could not read (a test asserts it stays empty). */
  readonly problems: string[] = [];
  private holding = false;
  private readonly held: (() => void)[] = [];
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    private readonly upstreamPort: number,
  ) {}

  /** `bootstrap`: the cluster's one broker, `host:port`. */
  static async start(bootstrap: string): Promise<KafkaTap> {
    if (bootstrap.includes(',')) throw new Error('KafkaTap stands in front of a one-broker cluster');
    const server = createServer();
    const tap = new KafkaTap(server, Number(bootstrap.slice(bootstrap.lastIndexOf(':') + 1)));
    server.on('connection', (client) => tap.serve(client));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return tap;
  }

  get bootstrap(): string {
    return `127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  /** Produce requests with a batch for `topic`, from the `from`-th one on. */
  producesTo(topic: string, from = 0): TappedProduce[] {
    return this.produces.slice(from).filter((p) => p.batches.some((b) => b.topic === topic));
  }

  holdProduce(): void {
    this.holding = true;
  }

  releaseProduce(): void {
    this.holding = false;
    for (const go of this.held.splice(0)) go();
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }

  private serve(client: Socket): void {
    this.connections++;
    const upstream = connect(this.upstreamPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => (this.sockets.delete(s), client.destroy(), upstream.destroy()));
      s.on('error', () => s.destroy());
    }
    /** The API and version of each request waiting for its answer, by correlation id. */
    const asked = new Map<number, { apiKey: number; version: number }>();
    // Answers stay in order: once one is held, those after it on the connection wait behind it.
    const queue: Buffer[] = [];
    let blocked = false;
    const flush = () => {
      blocked = false;
      while (queue.length > 0) upstreamAnswer(queue.shift()!);
    };
    const upstreamAnswer = (body: Buffer) => {
      if (blocked) return void queue.push(body);
      const correlationId = body.readInt32BE(0);
      const request = asked.get(correlationId);
      asked.delete(correlationId);
      if (request?.apiKey === ApiKey.Produce && this.holding) {
        blocked = true;
        queue.push(body);
        this.held.push(flush);
        return;
      }
      client.write(frame(this.rewritten(body, request)));
    };
    frames(client, (body) => {
      try {
        const header = readRequestHeader(body);
        asked.set(header.correlationId, { apiKey: header.apiKey, version: header.apiVersion });
        if (header.apiKey === ApiKey.Produce) {
          const req = readProduceRequest(body, header);
          this.produces.push({
            acks: req.acks,
            timeoutMs: req.timeoutMs,
            batches: req.topics.flatMap((t) =>
              t.partitions.flatMap((p) =>
                splitBatches(p.records ?? Buffer.alloc(0)).map((b) => ({
                  topic: t.name,
                  partition: p.index,
                  codec: compressionOf(b.attributes),
                  records: b.recordCount,
                  recordBytes: b.recordsSection.length,
                })),
              ),
            ),
          });
        } else if (header.apiKey === ApiKey.Metadata && new Reader(body, header.bodyOffset).int32() <= 0) this.probes++;
      } catch (err) {
        this.problems.push(`request: ${(err as Error).message}`);
      }
      upstream.write(frame(body));
    });
    frames(upstream, upstreamAnswer);
  }

  /** Metadata and FindCoordinator answers name the tap where they named the broker. */
  private rewritten(body: Buffer, request: { apiKey: number; version: number } | undefined): Buffer {
    const port = (this.server.address() as { port: number }).port;
    const advertise = (b: { port: number }) => {
      if (b.port !== this.upstreamPort) this.problems.push(`a broker at port ${b.port}: the tap stands in front of one`);
      return { host: '127.0.0.1', port };
    };
    try {
      if (request?.apiKey === ApiKey.Metadata) return rewriteMetadataResponse(body, request.version, advertise).body;
      if (request?.apiKey === ApiKey.FindCoordinator) return rewriteFindCoordinatorResponse(body, request.version, advertise).body;
    } catch (err) {
      this.problems.push(`answer: ${(err as Error).message}`);
    }
    return body;
  }
}

/** Calls `each` with every size-prefixed frame read from `socket` (without its size). */
function frames(socket: Socket, each: (body: Buffer) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 4) {
      const size = pending.readInt32BE(0);
      if (pending.length < 4 + size) break;
      each(pending.subarray(4, 4 + size));
      pending = pending.subarray(4 + size);
    }
  });
}
