/**
 * One client connection of the Kafka proxy and its own upstream connection. Requests go upstream
 * in the order the client sent them (a produce request being checked holds back the ones after
 * it); responses go back in that same order, whether they come from upstream or from the proxy
 * (a refused produce request). Responses carrying broker addresses (Metadata, FindCoordinator)
 * and ApiVersions are rewritten; every other response streams through as it arrives.
 */
import type { Socket } from 'node:net';
import {
  ApiKey,
  peekProduceRequest,
  readRequestHeader,
  readSaslHandshakeMechanism,
  rewriteApiVersionsResponse,
  rewriteFindCoordinatorResponse,
  rewriteMetadataResponse,
  saslHandshakeError,
  VERSION_CAPS,
  writeApiVersionsUnsupported,
  writeProduceResponse,
  type BrokerAddress,
  type OwnTopicAnswer,
  type RequestHeader,
} from '../../../codecs/kafka-protocol/messages.js';
import { frame, ProtocolError } from '../../../codecs/kafka-protocol/wire.js';
import { closeLingering, LINGER_MAX_BYTES } from '../lingering-close.js';
import { FrameReader, FrameTooLarge, type FrameHandler } from './frames.js';
import type { Governed, PendingRecords } from './govern.js';
import { readIntoBuffer } from './read-buffer.js';

export interface ConnectionHost {
  /** The largest request a client may send (maxRequestBytes); read at each request, so a reload applies to open connections. */
  maxFrameBytes(): number;
  /** How long the upstream connection stays open after the client left, for the cluster's answers (clientLeft); read then, so a reload applies. */
  answersAfterClientLeftMs(): number;
  /** The client-facing address of each broker, binding a port for brokers not seen before. */
  advertise(brokers: BrokerAddress[]): Promise<(b: BrokerAddress) => { host: string; port: number }>;
  /** Checks a Produce request against the routes (throws ProtocolError when it cannot be read). */
  govern(header: RequestHeader, body: Buffer): Governed | Promise<Governed>;
  /** Whether a route governs what clients produce to `topic` now. */
  governs(topic: string): boolean;
  /** The connection ended; `problem` says why when the proxy closed it. */
  closed(conn: ProxyConnection, problem?: { side: 'client' | 'upstream'; reason: string }): void;
}

interface Slot {
  /** Bytes ready for the client (the slot's response so far). */
  chunks: Buffer[];
  done: boolean;
  /** Undefined for raw SASL tokens (no Kafka header). */
  header: RequestHeader | undefined;
  /** The response must be read whole: it is rewritten or inspected. */
  inspect: boolean;
  saslMechanism?: string;
  /** A forwarded produce request's governed records, settled by its response. */
  pending?: PendingRecords;
  /** Partitions of a produce request the proxy answers itself (routes with `to`), merged into the cluster's response. */
  own?: Promise<OwnTopicAnswer[]>;
}

const NOTHING = Buffer.alloc(0);

/** Raw token exchanges after a SaslHandshake v0, per mechanism (unknown mechanisms cannot be followed). */
const SASL_V0_EXCHANGES: Record<string, number> = { PLAIN: 1, 'SCRAM-SHA-256': 2, 'SCRAM-SHA-512': 2, OAUTHBEARER: 1 };

/**
 * Requests a client connection may have in flight (read and not yet answered to it): at this many,
 * the proxy reads nothing more from that client until answers went back. A Kafka broker reads one
 * request per connection at a time; clients pipeline a few (librdkafka's idempotent producer and
 * Java's at most 5, librdkafka otherwise one produce request per partition batch, kafkajs one per
 * send), so this bound holds back only a client that sends without reading its answers, which
 * would otherwise have the proxy hold every request it sent (276,647 Metadata requests: +55 MB).
 */
export const MAX_REQUESTS_IN_FLIGHT = 1000;

/** The first 4 bytes of an HTTP request, by method (PRI: HTTP/2's preface); 4 is what checkFirst is sure to get. */
const HTTP_STARTS = new Set(['GET ', 'POST', 'PUT ', 'HEAD', 'DELE', 'OPTI', 'PATC', 'CONN', 'TRAC', 'PRI ']);

/**
 * Refuses a client that speaks another protocol to the listener, naming it: read as Kafka, its
 * first bytes are a frame size of hundreds of megabytes or more, which said only `frame of
 * 369295617 bytes`, and with a `maxRequestBytes` above that the proxy waited for the bytes.
 */
function foreignProtocol(first: Buffer): void {
  // A TLS handshake record: content type 22, version 3.x.
  if (first[0] === 0x16 && first[1] === 0x03 && first[2]! <= 0x04)
    throw new ProtocolError(
      'the client speaks TLS (a TLS handshake where a Kafka request was due), and this listener has no `tls`: connect with security.protocol=plaintext (or sasl_plaintext), or give the listener `tls`',
    );
  if (HTTP_STARTS.has(first.toString('latin1', 0, 4))) throw new ProtocolError("the client speaks HTTP, not the Kafka protocol: this is a kafka listener's port");
}

/** A client's request over the size limit, named as the setting a user would change. */
function tooLarge(err: FrameTooLarge): string {
  if (err.size < 0) return `a request whose size prefix is negative (${err.size})`;
  return `a request of ${err.size} bytes, over the listener's maxRequestBytes (${err.limit})`;
}

export class ProxyConnection {
  /** Responses owed to the client, in request order. */
  private readonly owed: Slot[] = [];
  /** Of those, the ones upstream still has to answer, in order. */
  private readonly awaiting: Slot[] = [];
  /**
   * Client frames (size prefix included) that arrived while an earlier produce request was being
   * checked, or with MAX_REQUESTS_IN_FLIGHT requests in flight (the rest of the read that reached it).
   */
  private readonly held: Buffer[] = [];
  private checking = false;
  /** Reading from the client stopped at MAX_REQUESTS_IN_FLIGHT; it goes on once answers went back. */
  private tooManyInFlight = false;
  /** Held frames are being taken up (takeHeld): a flush inside must not start it again. */
  private takingHeld = false;
  /** Client frames still to pass as raw SASL tokens after a SaslHandshake v0. */
  private rawTokens = 0;
  private ended = false;
  /** Upstream sent something on this connection (closedUnanswered). */
  private heardFromUpstream = false;
  /** The client left while governed produce requests were upstream: their answers are still read (clientLeft). */
  private clientGone = false;
  private clientGoneTimer: NodeJS.Timeout | undefined;
  /**
   * Correlation ids of the latest acks=0 produce requests sent upstream. Kafka answers none, but
   * some brokers do (librdkafka's mock cluster): such an answer is dropped, not taken for a broken
   * upstream, which would close the connection and lose the requests behind it.
   */
  private readonly unanswered = new Set<number>();
  readonly client: Socket;
  private readonly fromClient: FrameReader;
  /** A view of the client's read buffer went upstream during the current read (readIntoBuffer). */
  private viewSent = false;
  /** Reading from the client waits until upstream has taken the views of its read buffer. */
  private flushing = false;
  /**
   * The listener is stopping (drain): requests the client sends from now on are not read, and
   * the connection closes once those it sent before are answered. Requests read after it began
   * (the rest of a read) are dropped unanswered: nothing of them reached the cluster.
   */
  private draining = false;
  /** endIfDrained waits for upstream to take what was written to it. */
  private drainWrite = false;
  /** Drained: the client has its answers and our FIN; what it still sends is read and discarded (closeLingering). */
  private lingering = false;
  /**
   * Bytes read and discarded while lingering, on a connection that reads into its own buffer: its
   * reads are no 'data' events, so closeLingering's LINGER_MAX_BYTES does not see them.
   */
  private discarded = 0;
  /** closeWhenIdleFor's time: the connection closes once idle this long. */
  private idleMs = 0;

  /**
   * `accepted`: the client's connection; a plain TCP one not yet read from (pauseOnConnect) is
   * read into one buffer of its own (readIntoBuffer) when `reuseReads`.
   */
  constructor(
    accepted: Socket,
    private readonly upstream: Socket,
    private readonly host: ConnectionHost,
    reuseReads = false,
  ) {
    const fromClient = new FrameReader(this.requestHandler(), () => host.maxFrameBytes(), foreignProtocol);
    this.fromClient = fromClient;
    // Responses may be larger than any request limit (a Fetch); they are streamed, not held.
    const fromUpstream = new FrameReader(this.responseHandler(), 0x7fffffff);
    const reused = reuseReads ? readIntoBuffer(accepted, (bytes) => this.clientRead(fromClient, bytes)) : undefined;
    const client = reused ?? accepted;
    this.client = client;
    client.setNoDelay(true);
    if (!reused) {
      client.on('data', (chunk: Buffer) => {
        if (this.lingering) return;
        this.guard('client', () => fromClient.push(chunk));
        this.stopReadingIfDraining();
      });
      if (reuseReads) client.resume(); // accepted paused (pauseOnConnect)
    }
    // What one read from upstream completes (often several small responses) goes to the client in one write.
    upstream.on('data', (chunk: Buffer) => {
      this.heardFromUpstream = true;
      client.cork();
      this.guard('upstream', () => fromUpstream.push(chunk));
      client.uncork();
    });
    client.on('drain', () => upstream.resume());
    upstream.on('drain', () => this.resumeClient());
    client.on('error', () => this.clientLeft());
    client.on('close', () => this.clientLeft());
    // Lingering, the client's close ends the connection: ended here, its reset could drop its last answers.
    upstream.on('error', (err) => this.lingering || this.end({ side: 'upstream', reason: `upstream connection failed: ${err.message}` }));
    upstream.on('close', () => this.lingering || this.end(this.closedUnanswered()));
  }

  /**
   * The cluster closed the connection: a problem (logged, counted) when requests of the client's
   * were still unanswered; an idle connection's close is the broker's to make
   * (connections.max.idle.ms). Without a byte ever answered, the reason names the likely cause
   * besides a request the broker could not read: a TLS cluster that the proxy speaks plaintext to
   * (a TLS server closes such a connection without a word).
   */
  private closedUnanswered(): { side: 'upstream'; reason: string } | undefined {
    const first = this.awaiting[0];
    if (first === undefined) return undefined;
    const request = first.header ? `API key ${first.header.apiKey} v${first.header.apiVersion}` : 'a raw SASL token';
    if (!this.heardFromUpstream)
      return {
        side: 'upstream',
        reason: `the cluster closed the connection without answering anything (the first request: ${request}): a broker does so with a request it cannot read, and a cluster that expects TLS with a plaintext connection (does the upstream broker need \`ssl\`?)`,
      };
    return { side: 'upstream', reason: `the cluster closed the connection with requests unanswered (the first: ${request})` };
  }

  /** Closes both sides; `unanswered` says why records still waiting for the cluster's answer get none. */
  end(problem?: { side: 'client' | 'upstream'; reason: string }, unanswered = 'the connection closed before the cluster answered'): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.clientGoneTimer);
    for (const slot of this.awaiting) slot.pending?.lost(`${unanswered}; the records may or may not have been written`);
    this.client.destroy();
    this.upstream.destroy();
    this.host.closed(this, problem);
  }

  /**
   * Closes the connection, both sides, once it has been idle for `ms`: nothing read from the client
   * or written to it (node's socket timeout, re-armed by every read and write), and no request of
   * the client's unanswered, as a Kafka broker closes a connection after connections.max.idle.ms
   * (clients reconnect when they next need the broker). A request in flight (a Fetch waiting for
   * records, a produce request waiting for the cluster or for a route's targets) or bytes still
   * going upstream keep it open for another `ms`. Not logged or counted as a problem: it is the
   * broker's own behaviour. A connection already closing (drain, or the client left) closes on its own.
   */
  closeWhenIdleFor(ms: number): void {
    this.idleMs = ms;
    this.client.setTimeout(ms);
    if (this.client.listenerCount('timeout') > 0) return;
    this.client.on('timeout', () => {
      if (this.ended || this.draining || this.lingering || this.clientGone) return;
      if (this.inFlight > 0 || this.checking || this.flushing || this.upstream.writableLength > 0) this.client.setTimeout(this.idleMs);
      else this.end();
    });
  }

  /**
   * The listener stops: the client's requests already read are sent on and answered; later ones
   * are not read (a streamed request is read to its end first: part of it went upstream). The
   * connection closes once nothing is owed to the client, so the client goes elsewhere at once
   * rather than at the drain's end; without this, a consumer (a Fetch always in flight) or a
   * producer that streams kept every stop waiting for the whole drainTimeoutMs.
   */
  drain(): void {
    if (this.ended || this.draining) return;
    this.draining = true;
    this.stopReadingIfDraining();
  }

  /** After a read: while draining, reading stops once no streamed request is half read. Returns whether it stopped. */
  private stopReadingIfDraining(): boolean {
    if (!this.draining || this.ended || this.fromClient.midStream) return false;
    this.client.pause();
    this.endIfDrained();
    return true;
  }

  /**
   * Draining, and nothing owed to the client: once upstream took what was written to it (acks=0
   * requests), the client's connection closes lingering (its answers, then FIN; what it sent after
   * the drain began is read and discarded until it closes, at most LINGER_MS). Destroyed with
   * requests it sent still unread, the kernel would reset it, dropping answers not yet sent.
   */
  private endIfDrained(): void {
    if (!this.draining || this.ended || this.lingering || this.inFlight > 0 || this.fromClient.midStream) return;
    if (this.upstream.writableLength > 0) {
      if (this.drainWrite) return;
      this.drainWrite = true;
      this.upstream.write(NOTHING, () => {
        this.drainWrite = false;
        this.endIfDrained();
      });
      return;
    }
    if (this.client.destroyed) return this.end();
    this.lingering = true;
    closeLingering(this.client);
  }

  /**
   * The client closed its connection. Governed produce requests it sent are already upstream, and
   * the cluster may well write them: the upstream connection stays open until the cluster answered
   * them (at most the listener's answersAfterClientLeftMs), so their records count as what the cluster did
   * (`delivered`, or its error) rather than as lost. Nothing more goes upstream; nothing goes back.
   */
  private clientLeft(): void {
    if (this.ended || this.clientGone) return;
    if (!this.awaitsGovernedAnswers()) return this.end();
    this.clientGone = true;
    this.client.destroy();
    this.upstream.resume();
    const waitMs = this.host.answersAfterClientLeftMs();
    this.clientGoneTimer = setTimeout(() => this.end(undefined, `the cluster did not answer within ${waitMs} ms of the client leaving (answersAfterClientLeftMs)`), waitMs);
  }

  private awaitsGovernedAnswers(): boolean {
    return this.awaiting.some((slot) => slot.pending !== undefined);
  }

  /**
   * One read into the client's read buffer. Streamed requests go upstream as views of it: if
   * upstream could not take them at once (they wait in its queue), reading stops until it has,
   * since the next read would overwrite them. Frames read whole are copies (FrameReader).
   */
  private clientRead(reader: FrameReader, bytes: Buffer): boolean {
    if (this.lingering) {
      this.discarded += bytes.length;
      if (this.discarded > LINGER_MAX_BYTES) this.client.destroy();
      return true;
    }
    this.viewSent = false;
    this.guard('client', () => reader.push(bytes, true));
    if (this.stopReadingIfDraining()) return false;
    if (!this.viewSent || this.ended || this.upstream.writableLength === 0) return true;
    this.flushing = true;
    // Written after the views: its callback runs once upstream has taken them.
    this.upstream.write(NOTHING, () => {
      this.flushing = false;
      this.resumeClient();
    });
    return false;
  }

  /** Reads from the client again, unless a request is being checked, upstream is behind, or requests wait their turn. */
  private resumeClient(): void {
    if (this.draining && !this.fromClient.midStream) return;
    if (!this.checking && !this.flushing && !this.tooManyInFlight && this.held.length === 0 && !this.upstream.writableNeedDrain) this.client.resume();
  }

  /** At MAX_REQUESTS_IN_FLIGHT: reading stops, and what the current read brought waits in `held`. */
  private limitInFlight(): void {
    if (this.owed.length < MAX_REQUESTS_IN_FLIGHT) return;
    this.tooManyInFlight = true;
    this.client.pause();
  }

  /** Sends on the held frames while nothing holds them back, then reads from the client again. */
  private takeHeld(): void {
    if (this.takingHeld) return;
    this.takingHeld = true;
    this.guard('client', () => {
      while (!this.checking && !this.tooManyInFlight && this.held.length > 0) {
        this.request(this.held.shift()!);
        this.limitInFlight();
      }
    });
    this.takingHeld = false;
    this.resumeClient();
  }

  private guard(side: 'client' | 'upstream', work: () => void): void {
    if (this.ended) return;
    try {
      work();
    } catch (err) {
      this.end({ side, reason: side === 'client' && err instanceof FrameTooLarge ? tooLarge(err) : (err as Error).message });
    }
  }

  // ---- client → upstream ---------------------------------------------------------------------

  private requestHandler(): FrameHandler {
    return {
      onStart: (_size, head) => {
        if (this.draining) return 'buffer'; // dropped whole in onFrame
        if (this.checking || this.tooManyInFlight || this.held.length > 0 || this.rawTokens > 0) return 'buffer';
        const how = this.passThrough(head);
        this.limitInFlight();
        return how;
      },
      onFrame: (_body, whole) => {
        if (this.draining) return this.endIfDrained();
        if (this.checking || this.tooManyInFlight || this.held.length > 0) this.held.push(whole);
        else {
          this.request(whole);
          this.limitInFlight();
        }
      },
      // A streamed request (passThrough) goes upstream piece by piece, as it arrives.
      onChunk: (bytes) => {
        this.viewSent = true;
        this.send(bytes);
      },
    };
  }

  /**
   * 'stream' for a produce request to one topic no route governs, which then goes upstream as its
   * bytes arrive: no copy into one buffer, nothing held (its answer is owed like any other). Other
   * requests are read whole: they are small, answered by the proxy, rewritten, or checked (a
   * request naming several topics is read whole to look at every name).
   */
  private passThrough(head: Buffer): 'buffer' | 'stream' {
    let header: RequestHeader;
    try {
      header = readRequestHeader(head);
    } catch {
      return 'buffer'; // read whole, and refused there if it really is malformed
    }
    if (header.apiKey !== ApiKey.Produce) return 'buffer';
    const produce = peekProduceRequest(head, header);
    if (produce === undefined || produce.topics !== 1 || this.host.governs(produce.firstTopic)) return 'buffer';
    if (produce.acks !== 0) {
      const slot: Slot = { chunks: [], done: false, header, inspect: false };
      this.owed.push(slot);
      this.awaiting.push(slot);
    } else this.sentUnanswered(header.correlationId);
    return 'stream';
  }

  /** One request frame (size prefix included: a request passed on unchanged is written as it came). */
  private request(whole: Buffer): void {
    const body = whole.subarray(4);
    if (this.rawTokens > 0) {
      this.rawTokens--;
      this.forward(whole, { chunks: [], done: false, header: undefined, inspect: false });
      return;
    }
    const header = readRequestHeader(body);
    // Only APIs and versions the proxy offers in ApiVersions go upstream. A client that ignores
    // ApiVersions would otherwise reach the broker with requests whose answers may name the
    // brokers' real addresses (DescribeCluster, Fetch v16+) or that the broker cannot read. Refused
    // here, as a broker refuses an API it does not know: the connection closes, with the reason logged.
    // ApiVersions above the proxy's own version is answered here as a broker answers one it does not
    // know (KIP-511): passed on, a broker that knows it would answer in a layout the proxy cannot read.
    if (header.apiKey === ApiKey.ApiVersions) {
      if (header.apiVersion > VERSION_CAPS.get(ApiKey.ApiVersions)!) {
        this.owed.push({ chunks: [frame(writeApiVersionsUnsupported(header.correlationId))], done: true, header, inspect: false });
        return this.flush();
      }
    } else {
      const cap = VERSION_CAPS.get(header.apiKey);
      if (cap === undefined) throw new ProtocolError(`API key ${header.apiKey} is not offered by the proxy`);
      if (header.apiVersion > cap) throw new ProtocolError(`API key ${header.apiKey} v${header.apiVersion} is above the v${cap} the proxy offers`);
    }
    switch (header.apiKey) {
      case ApiKey.Produce:
        return this.produce(header, body, whole);
      case ApiKey.Metadata:
      case ApiKey.FindCoordinator:
      case ApiKey.ApiVersions:
        return this.forward(whole, { chunks: [], done: false, header, inspect: true });
      case ApiKey.SaslHandshake: {
        const slot: Slot = { chunks: [], done: false, header, inspect: header.apiVersion === 0 };
        if (slot.inspect) slot.saslMechanism = readSaslHandshakeMechanism(body, header);
        return this.forward(whole, slot);
      }
      default:
        return this.forward(whole, { chunks: [], done: false, header, inspect: false });
    }
  }

  private produce(header: RequestHeader, body: Buffer, whole: Buffer): void {
    const governed = this.host.govern(header, body);
    if (!(governed instanceof Promise)) return this.governed(header, governed, whole);
    // Later requests wait: they must reach the broker after this one, and be answered after it.
    const slot: Slot = { chunks: [], done: false, header, inspect: false };
    this.owed.push(slot);
    this.checking = true;
    this.client.pause();
    governed.then(
      (g) => {
        if (this.ended || this.clientGone) {
          if (this.owed.includes(slot)) this.owed.splice(this.owed.indexOf(slot), 1);
          if ('forward' in g) g.pending?.lost('the client closed its connection before the request was sent on; nothing was written');
          if (this.clientGone) this.flush();
          return;
        }
        this.owed.splice(this.owed.indexOf(slot), 1, ...this.slotFor(header, g, whole));
        this.flush();
        this.checking = false;
        this.takeHeld();
      },
      (err) => this.end({ side: 'client', reason: (err as Error).message }),
    );
  }

  /** Sends a checked produce request on, or answers it, synchronously. */
  private governed(header: RequestHeader, g: Governed, whole: Buffer): void {
    this.owed.push(...this.slotFor(header, g, whole));
    this.flush();
  }

  /** The slots a checked produce request takes (none for acks=0), sending it upstream if it passed. */
  private slotFor(header: RequestHeader, g: Governed, whole: Buffer): Slot[] {
    if ('respond' in g) return g.respond === null ? [] : [{ chunks: [frame(g.respond)], done: true, header, inspect: false }];
    if (g.forward === null) {
      // Routes with `to` took every topic: the answer is the proxy's own, once their targets answered.
      if (g.acks === 0) return [];
      const own: Slot = { chunks: [], done: false, header, inspect: false };
      g.own.then((topics) => this.guard('upstream', () => this.respond(own, writeProduceResponse(header, topics))));
      return [own];
    }
    // A response that settles governed records, or that the proxy's own answers join, is read whole
    // (it is small); without own answers it still goes back unchanged.
    const slot: Slot = { chunks: [], done: false, header, inspect: g.pending !== undefined || g.own !== undefined, pending: g.pending, own: g.own };
    // The client's own bytes go on in one write, size prefix and all; once written, their memory
    // may hold the client's next request (nothing else keeps a view of it: records that were read
    // are copies, decoded values and strings).
    if (g.forward.byteOffset === whole.byteOffset + 4 && g.forward.buffer === whole.buffer) {
      if (!this.upstream.write(whole, () => this.fromClient.recycle(whole))) this.client.pause();
    } else this.send(frame(g.forward));
    if (g.acks === 0) {
      g.pending?.unacknowledged();
      this.sentUnanswered(header.correlationId);
      return [];
    }
    this.awaiting.push(slot);
    return [slot];
  }

  private forward(whole: Buffer, slot: Slot): void {
    this.owed.push(slot);
    this.awaiting.push(slot);
    this.send(whole);
  }

  private sentUnanswered(correlationId: number): void {
    // Bounded: with a broker that answers none of them the ids would pile up for ever.
    if (this.unanswered.size >= 1024) this.unanswered.delete(this.unanswered.values().next().value!);
    this.unanswered.add(correlationId);
  }

  /** Writes a whole frame upstream. */
  private send(whole: Buffer): void {
    if (!this.upstream.write(whole)) this.client.pause();
  }

  // ---- upstream → client ---------------------------------------------------------------------

  private responseHandler(): FrameHandler {
    let slot: Slot | undefined;
    /** The frame being read answers an acks=0 request: dropped. */
    let dropping = false;
    return {
      onStart: (_size, head) => {
        slot = this.awaiting[0];
        const correlationId = head.length >= 4 ? head.readInt32BE(0) : undefined;
        dropping = correlationId !== undefined && slot?.header?.correlationId !== correlationId && this.unanswered.delete(correlationId);
        if (dropping) return 'stream';
        if (!slot) throw new ProtocolError('the broker sent a response nobody asked for');
        if (slot.header) {
          if (correlationId === undefined) throw new ProtocolError('response shorter than its header');
          if (correlationId !== slot.header.correlationId) throw new ProtocolError(`response ${correlationId} arrived where ${slot.header.correlationId} was due`);
        }
        return slot.inspect ? 'buffer' : 'stream';
      },
      onChunk: (bytes, last) => {
        if (dropping) return;
        slot!.chunks.push(bytes);
        if (last) {
          this.awaiting.shift();
          slot!.done = true;
        }
        this.flush();
      },
      onFrame: (body) => {
        const s = this.awaiting.shift()!;
        const rewritten = this.inspect(s, body);
        if (rewritten instanceof Promise) {
          rewritten.then(
            (b) => this.respond(s, b),
            (err) => this.end({ side: 'upstream', reason: (err as Error).message }),
          );
        } else this.respond(s, rewritten);
      },
    };
  }

  private respond(slot: Slot, body: Buffer): void {
    slot.chunks.push(frame(body));
    slot.done = true;
    this.flush();
  }

  /** The response as the client gets it. */
  private inspect(slot: Slot, body: Buffer): Buffer | Promise<Buffer> {
    const { apiKey, apiVersion } = slot.header!;
    switch (apiKey) {
      case ApiKey.Produce: {
        slot.pending?.answered(body, apiVersion);
        const header = slot.header!;
        return slot.own ? slot.own.then((topics) => writeProduceResponse(header, topics, body)) : body;
      }
      case ApiKey.ApiVersions:
        return rewriteApiVersionsResponse(body, apiVersion).body;
      case ApiKey.SaslHandshake: {
        if (saslHandshakeError(body) === 0) {
          const exchanges = SASL_V0_EXCHANGES[slot.saslMechanism!.toUpperCase()];
          if (exchanges === undefined)
            throw new ProtocolError(`SASL mechanism ${slot.saslMechanism} over SaslHandshake v0 cannot be followed by the proxy; use a client that sends SaslAuthenticate (SaslHandshake v1)`);
          this.rawTokens = exchanges;
        }
        return body;
      }
      case ApiKey.Metadata: {
        const seen = rewriteMetadataResponse(body, apiVersion, (b) => b).brokers;
        return this.host.advertise(seen).then((to) => rewriteMetadataResponse(body, apiVersion, to).body);
      }
      case ApiKey.FindCoordinator: {
        const { coordinator } = rewriteFindCoordinatorResponse(body, apiVersion, (b) => b);
        if (!coordinator) return body;
        return this.host.advertise([coordinator]).then((to) => rewriteFindCoordinatorResponse(body, apiVersion, to).body);
      }
      default:
        return body;
    }
  }

  /** Writes what is ready, in order: the first slot's bytes, and whole slots after it once it is done. */
  private flush(): void {
    while (this.owed.length > 0) {
      const head = this.owed[0]!;
      if (!this.clientGone) for (const c of head.chunks) if (!this.client.write(c)) this.upstream.pause();
      head.chunks.length = 0;
      if (!head.done) break;
      this.owed.shift();
    }
    if (this.clientGone && !this.awaitsGovernedAnswers()) return this.end();
    // Requests held back at the bound were read before any drain: they go on, drain or not.
    if (this.tooManyInFlight && this.owed.length < MAX_REQUESTS_IN_FLIGHT) {
      this.tooManyInFlight = false;
      this.takeHeld();
    }
    this.endIfDrained();
  }

  /** Requests read from the client and not yet answered to it, held ones included (for status and the drain). */
  get inFlight(): number {
    return this.owed.length + this.held.length;
  }
}
