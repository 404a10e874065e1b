/**
 * Server-Sent Events (https://html.spec.whatwg.org/multipage/server-sent-events.html) on an http
 * listener: `GET <path>` with `Accept: text/event-stream` on a path a route forwards to opens a
 * stream; every message the route delivers is one event, serialised once for every client.
 *
 * Event ids are positions in the route's source, tagged with the source they are of (sse-ids.ts:
 * `<tag>~<partition>:<offset>,...`), so a client that reconnects with `Last-Event-ID` is replayed
 * what the broker still retains after that position — through the same chain — before it goes
 * live, without a gap or a duplicate; an id of another source (a reload changed the route's
 * topic) is read from the oldest retained message, with a notice. On a path several routes
 * forward to, the id names each route's position (`<route>=<tag>~<positions>`, `;`-separated),
 * and a resume replays each route.
 *
 * Live events are written as websocket forwards are (write-batch.ts): the events of a path that
 * arrive during one event-loop turn go to each client in one write at the end of the turn.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { attributesOf, toStructured } from '../../codecs/cloudevents.js';
import type { Logger } from '../../log.js';
import { expireAt } from '../../core/expiry.js';
import { envelopeJson, valueJson, type Delivery, type Message, type MessageContext, type RequestMeta, SOURCE_INCARNATION } from '../../core/message.js';
import type { Gate, ReplaySource, Retained, Target } from '../contracts.js';
import { PathBatch, type BatchClient } from './write-batch.js';
import { PacedWriter, SLICE_BYTES } from './paced-write.js';
import { pathParameters, sameRoutePath } from './route-paths.js';
import { SlicedSweep } from '../../core/sliced-sweep.js';
import { SharedReplay } from './shared-replay.js';
import { beyond, copyPositions, formatId, formatSources, OTHER_SOURCE, parseId, parseSources, positionsOf, type Seen, type SourcePositions, sourceTag } from './sse-ids.js';

export type SseFormat = 'value' | 'envelope' | 'cloudevent';

export interface SseOptions {
  /** Per-client bound on bytes written but not yet taken by the client's socket. */
  maxBufferedBytes: number;
  heartbeatMs: number;
  /** Reconnection delay browsers are told to use (`retry:`). */
  retryMs: number;
  /** How long a client being replayed may stay over the bound taking nothing before it is cut off (see beat()). */
  replayStallTimeoutMs: number;
}

/**
 * The head of a stream (and of a HEAD on its path). No `connection: keep-alive`: it would make
 * node keep the connection for a next request, and the stream is its last answer
 * (HttpListener.serveStream); node says `close`.
 */
export const STREAM_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  // nginx buffers responses unless told not to; events must reach the client as they happen.
  'x-accel-buffering': 'no',
} as const;

/** How soon a paced replay looks again whether the client read enough, when no 'drain' says so. */
const REPLAY_RECHECK_MS = 20;

// replayStallTimeoutMs: nginx's `send_timeout` (60 s by default) is the same bound on a response a client stops reading.
export const SSE_DEFAULTS: SseOptions = { maxBufferedBytes: 1024 * 1024, heartbeatMs: 15_000, retryMs: 2000, replayStallTimeoutMs: 60_000 };

/** How a client was let in: its request (checked again when a reload changes the path's auth) and when its credential expires. */
export interface SseAdmission {
  request: RequestMeta;
  /** A JWT's `exp` (ms since the epoch); absent when the credential does not expire. */
  until: number | undefined;
}

interface SseClient extends BatchClient {
  res: ServerResponse;
  /** Everything after the response head goes through it, in order (paced-write.ts). */
  out: PacedWriter;
  path: string;
  remoteAddress: string | undefined;
  /** The credentials it was admitted with (headers, query), for the check after a reload. */
  request: RequestMeta;
  /** Ends the stream when the credential expires. */
  expiry: NodeJS.Timeout | undefined;
  /** Set while the client is being replayed what it missed: live events wait here meanwhile. */
  held: HeldEvent[] | undefined;
  /** The bytes of `held`'s frames: over the send bound, the client is cut off as one that does not read. */
  heldBytes: number;
  /**
   * Of `heldBytes`, those of events the current route's read is to send (it covers them), kept in
   * case the read fails before it reaches them. Let go first when `held` is over the send bound.
   */
  keptBytes: number;
  /**
   * While it is replayed and over the send bound: since when (ms) the heartbeats found it so without
   * anything taken, and its unsent bytes at the last of them (beat()). Undefined while it takes
   * what it is sent.
   */
  stalled: { since: number; unsent: number } | undefined;
  /**
   * After a resume, the positions the client has seen that the path's live events have not reached
   * yet (a replay can read past what the route's consumer delivered so far): live events up to them
   * are not sent again, and the ids of the others carry them. Undefined once the live events caught up.
   */
  ahead: SourcePositions | undefined;
  /** While it is replayed: what the replay of each route reads, once that read began (live events it sends are not held). */
  reads: Map<string, ReplayRead> | undefined;
  /** The values of its path's parameters, in the path's order (`['a']` on `/rooms/a` of `/rooms/:r`); empty on a path without. */
  values: readonly string[];
  /** After a resume: its first live event of each partition is checked against what it has (gapCheck()). Undefined for a client not resumed. */
  watch: ResumeWatch | undefined;
}

/**
 * What a resumed client's live events are checked against: the first live event of a partition
 * further on than the client's position + 1 follows records the route's consumer never delivered
 * (its group joined after the replay listed its ends, starting at the topic's end then): they are
 * read again before it. Only the first of each partition: offsets skip legitimately after it
 * (transaction markers, compaction).
 */
interface ResumeWatch {
  /** The path's sources (those of the running config: a reload replaces them, retain()). */
  sources: ReadonlyMap<string, ReplaySource>;
  /**
   * Per route whose read reached its ends, the partitions whose first live event was checked, and
   * all of the source's (Retained.partitions, if known): once each was, the route is watched no
   * more, and once no route is, neither is the client (its events cost one field test, as a client
   * not resumed).
   */
  checked: Map<string, Watched>;
}

interface Watched {
  tag: string | undefined;
  partitions: Set<number>;
  all: readonly number[] | undefined;
}

/** Whether the first live event of each partition of a watched route was checked. */
function everyChecked(watched: Watched): boolean {
  return watched.all?.every((p) => watched.partitions.has(p)) === true;
}

/** Whether a resumed client's live event of `route` on `partition` is the first of its partition to be checked: a lookup and a test, before any other work. */
function unchecked(watch: ResumeWatch, route: string, tag: string | undefined, partition: number): boolean {
  const watched = watch.checked.get(route);
  return watched !== undefined && watched.tag === tag && !watched.partitions.has(partition);
}

/** A live event kept for clients being replayed, with what its id is made of should the replay have gone further. */
interface HeldEvent {
  frame: Buffer;
  /** Its route, and the tag of the source the route read it from (sse-ids.ts). */
  source: string;
  tag: string | undefined;
  partition: number | null;
  offset: bigint | null;
  event: string | undefined;
  data: string;
  /** The path's positions its id names (a copy: the path's go on); undefined for an event without a position. */
  positions: SourcePositions | undefined;
  /** The incarnation of the source its record is of (Message's SOURCE_INCARNATION), if the source was made again. */
  incarnation: number | undefined;
}

/** What a client's replay of one route reads (sent or still to send), known once the route's read began. */
interface ReplayRead {
  /** The tag of the source read. */
  tag: string | undefined;
  /** Per partition, the last offset the read reaches (Retained.ends); none before the read began, or after it failed. */
  ends: ReadonlyMap<number, bigint>;
  /**
   * Per partition, the incarnation of the route's source on the path when the read began: a live
   * record of a newer one is of the source made again since, numbered anew, not one the read sent.
   */
  incarnations: ReadonlyMap<number, number>;
  /** Partitions the read began again from the oldest (Retained.forget): it reads the source as it is now, made again or not. */
  anew: ReadonlySet<number>;
  /** Per partition, the last offset the client has of the source (given, or sent by the read): covered events up to it need no keeping. */
  sent: ReadonlyMap<number, bigint>;
  /** Whether the read reached its ends: the live events it covers need no keeping. */
  done: boolean;
  /** Every partition of the source as the read began (Retained.partitions); undefined: not known. */
  partitions: readonly number[] | undefined;
  /**
   * Per partition, the highest offset of the covered events it had not yet sent that were let go
   * for the send bound (and of those not kept after: the read sends them). Should it fail before
   * it sent up to there, the client cannot be sent them; past there, it has them all.
   */
  letGo: Map<number, bigint>;
}

/** Notes a covered event at `offset` of `partition` let go: the read must send up to it. */
function letGoOf(read: ReplayRead, partition: number, offset: bigint): void {
  if (offset > (read.letGo.get(partition) ?? -1n)) read.letGo.set(partition, offset);
}

/** Whether a read let go of covered events it has not sent by now (lost, should it fail here). */
function owesLetGo(read: ReplayRead): boolean {
  for (const [partition, offset] of read.letGo) if (offset > (read.sent.get(partition) ?? -1n)) return true;
  return false;
}

/**
 * Whether a live record on `partition` at `offset` is of the source made again after the route's
 * read began (its offsets count from the start again): not one the read sent, whatever its offset.
 */
function renewed(read: ReplayRead, partition: number, incarnation: number | undefined): boolean {
  return incarnation !== undefined && incarnation > (read.incarnations.get(partition) ?? 0) && !read.anew.has(partition);
}

/** Whether a client's replay sends (or sent) a live record of `route`: it is at or below where the route's read ends, and of the source read. */
function readCovers(reads: ReadonlyMap<string, ReplayRead> | undefined, route: string, tag: string | undefined, partition: number, offset: bigint, incarnation: number | undefined): boolean {
  const read = reads?.get(route);
  if (read === undefined || read.tag !== tag || renewed(read, partition, incarnation)) return false;
  const end = read.ends.get(partition);
  return end !== undefined && offset <= end;
}

interface PathState {
  clients: Set<SseClient>;
  /** This turn's live events for the clients that take the shared frame (not held, not ahead). */
  batch: PathBatch<SseClient>;
  /** Latest offset delivered per source route and partition on this path, and of which source: the next event's id extends it. */
  positions: SourcePositions;
  /**
   * Each route's `format` on this path, for its replayed events: routes feeding one path may differ
   * (one path-wide format, the last route's, wrote every route's replayed events in it).
   */
  formats: Map<string, SseFormat>;
}

/** One SSE event as bytes. A value its producer wrote over several lines (valueJson keeps its JSON text) goes as several `data:` lines, which clients join with newlines again. */
export function sseEvent(fields: { id?: string; event?: string; data: string }): Buffer {
  let text = '';
  if (fields.id !== undefined) text += `id: ${fields.id}\n`;
  if (fields.event !== undefined) text += `event: ${oneLine(fields.event)}\n`;
  for (const line of fields.data.split(/\r\n|\r|\n/)) text += `data: ${line}\n`;
  return Buffer.from(`${text}\n`);
}

/** The `retry:` field on its own (the blank line after it dispatches nothing: it carries no data). */
function retryField(ms: number): Buffer {
  return Buffer.from(`retry: ${ms}\n\n`);
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]/g, ' ');
}

/**
 * The event name of a message: its CloudEvent type, unless that is in the gateway's own
 * `eventgate.` namespace, whose notices (`eventgate.end`, `eventgate.resume`) a page acts on:
 * such a message is a plain `message` event, so no publisher can end or rewind a page's stream.
 */
function eventName(type: string | undefined): string | undefined {
  return type?.startsWith(NOTICE_PREFIX) ? undefined : type;
}
const NOTICE_PREFIX = 'eventgate.';

function payload(msg: Message, format: SseFormat): { event: string | undefined; data: string } {
  const attrs = attributesOf(msg.headers);
  const event = eventName(attrs?.type);
  if (format === 'value') return { event, data: valueJson(msg) };
  if (format === 'cloudevent' && attrs) return { event, data: JSON.stringify(toStructured(msg)) };
  return { event, data: envelopeJson(msg, attrs) };
}

/** The event streams of one http listener. */
export class SseStreams {
  private readonly paths = new Map<string, PathState>();
  /** Paths several routes forward to: their event ids name each route's positions. */
  private shared: ReadonlySet<string> = new Set();
  /** Each path's sources as the last reload gave them (retain()); undefined before the first. */
  private running: ReadonlyMap<string, ReadonlyMap<string, ReplaySource>> | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private static readonly HEARTBEAT = Buffer.from(': heartbeat\n\n');
  /** Writes the heartbeats a slice of clients per turn (a write each: thousands in one turn held events back). */
  private readonly heartbeats = new SlicedSweep<SseClient>((c) => this.beat(c));
  /** Clients cut off for reading too slowly, since the listener started (for status and tests). */
  slowClientsClosed = 0;
  /** Resumes under way (replays and the live events held behind them), for status and tests. */
  replays = 0;

  constructor(
    private readonly listener: string,
    private options: SseOptions,
    private readonly logger: Logger,
    /** Counts a client cut off for reading too slowly (eventgate_slow_clients_disconnected_total). */
    private readonly onSlowClient: () => void = () => {},
  ) {}

  reconfigure(options: SseOptions): void {
    const beat = options.heartbeatMs !== this.options.heartbeatMs;
    const retry = options.retryMs !== this.options.retryMs;
    this.options = options;
    // Open streams are told the new delay too: it matters most for them (an operator raising it
    // before a restart spreads the reconnects of the streams open now, not of later ones).
    if (retry) this.tellRetry();
    if (beat && this.heartbeat) {
      clearInterval(this.heartbeat);
      this.heartbeat = undefined;
      this.startHeartbeat();
    }
  }

  /**
   * Sends every open stream the `retry:` field alone, after what its path's batch holds for it.
   * Not bounded as an event is: a client being replayed may be past the bound until it reads.
   */
  private tellRetry(): void {
    const line = retryField(this.options.retryMs);
    for (const s of this.paths.values())
      for (const c of s.clients) {
        if (c.res.destroyed || c.res.writableEnded) continue;
        s.batch.flushClient(c);
        c.out.write(line);
      }
  }

  count(): number {
    let n = 0;
    for (const p of this.paths.values()) n += p.clients.size;
    return n;
  }

  /** The open streams of each route path (as the config spells it: a path with parameters counts all its rooms), for status. */
  countByPath(): Record<string, number> {
    const paths: Record<string, number> = {};
    for (const [path, s] of this.paths) if (s.clients.size > 0) paths[path] = s.clients.size;
    return paths;
  }

  private state(path: string): PathState {
    let s = this.paths.get(path);
    if (!s) {
      const clients = new Set<SseClient>();
      this.paths.set(path, (s = { clients, batch: new PathBatch(() => clients, writeEvents), positions: new Map(), formats: new Map() }));
    }
    return s;
  }

  /**
   * Opens a stream for an admitted client. With a `Last-Event-ID` and sources that can replay
   * (per route feeding the path), what the brokers retain after that position is sent first;
   * live events wait meanwhile.
   */
  open(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    sources: ReadonlyMap<string, ReplaySource> | undefined,
    admission: SseAdmission,
    params: Readonly<Record<string, string | undefined>> = {},
  ): void {
    res.writeHead(200, STREAM_HEADERS);
    res.write(retryField(this.options.retryMs));
    // Headers and the first bytes now, so the client's open event fires before the first message.
    res.flushHeaders();
    const client: SseClient = {
      res,
      out: new PacedWriter(res, eventsEnd),
      path,
      remoteAddress: req.socket.remoteAddress,
      request: admission.request,
      expiry: undefined,
      held: undefined,
      heldBytes: 0,
      keptBytes: 0,
      stalled: undefined,
      ahead: undefined,
      reads: undefined,
      values: pathParameters(path).map((n) => params[n] ?? ''),
      watch: undefined,
      batchSkip: 0,
      batchEpoch: -1,
    };
    const state = this.state(path);
    state.clients.add(client);
    // Events queued earlier in this turn were published before it connected (a resume replays them).
    state.batch.joined(client);
    res.socket?.setNoDelay(true);
    // A stream lives no longer than the credential it was opened with, as a WebSocket subscriber does.
    this.expireAt(client, admission.until);
    const forget = () => {
      clearTimeout(client.expiry);
      // Its path now: a reload may have moved it (retain()).
      this.paths.get(client.path)?.clients.delete(client);
    };
    res.on('close', forget);
    res.on('error', forget);
    this.startHeartbeat();
    // A new EventSource cannot send the header (a page reloaded; a new stream opened with a fresh
    // token after eventgate.end): it gives the id in the query. A browser's own reconnect sends the
    // header with its latest id, over the URL's older one.
    const lastId = nonEmpty(header(req, 'last-event-id')) ?? nonEmpty(queryId(admission.request.query));
    if (lastId === undefined || !sources || sources.size === 0) return;
    const point = this.resumePoint(path, lastId, sources);
    if (point) {
      // Routes that fed this path when the id was given and no longer do (a reload removed them).
      if (point.gone.length > 0)
        this.write(client, sseEvent({ event: 'eventgate.resume', data: JSON.stringify({ resumed: true, reason: `no longer feeding this stream, left out: ${point.gone.join(', ')}` }) }));
      void this.replay(client, sources, point.from);
    } else
      this.write(
        client,
        sseEvent({ event: 'eventgate.resume', data: JSON.stringify({ resumed: false, reason: `Last-Event-ID '${lastId.slice(0, 100)}' is not a position of this stream; streaming from now` }) }),
      );
  }

  /**
   * The per-route positions `lastId` names on `path`, and the routes it names that no longer feed
   * the path; undefined when it names none of this path's routes.
   */
  private resumePoint(path: string, lastId: string, sources: ReadonlyMap<string, ReplaySource>): { from: SourcePositions; gone: string[] } | undefined {
    const named = parseSources(lastId);
    if (named) {
      // A composite id stays usable across a reload that removes some of its routes (even down to one).
      const from: SourcePositions = new Map([...named].filter(([route]) => sources.has(route)));
      let gone = [...named.keys()].filter((route) => !sources.has(route));
      // A route the id does not name that reads the source of one it names that is gone (a reload
      // renamed it) resumes after that one's positions rather than replaying what the client saw.
      for (const [route, source] of sources) {
        const tag = sourceTag(source.sourceKey);
        const renamed = from.has(route) || tag === undefined ? undefined : gone.find((old) => named.get(old)!.tag === tag);
        if (renamed === undefined) continue;
        from.set(route, named.get(renamed)!);
        gone = gone.filter((old) => old !== renamed);
      }
      return from.size > 0 ? { from, gone } : undefined;
    }
    const seen = parseId(lastId);
    if (!seen) return undefined;
    if (this.shared.has(path)) {
      // A one-route id on a path several routes feed (sent before a reload added a route, or
      // copied from another path): its tag names the routes reading its source, which resume after
      // it; the others are not named, as in a composite id. Without a tag it could be any route's.
      if (seen.tag === undefined) return undefined;
      const from: SourcePositions = new Map([...sources].filter(([, source]) => sourceTag(source.sourceKey) === seen.tag).map(([route]) => [route, seen]));
      return from.size > 0 ? { from, gone: [] } : undefined;
    }
    const [route] = sources.keys();
    return route !== undefined ? { from: new Map([[route, seen]]), gone: [] } : undefined;
  }

  /** resume(), counted while it runs (its sources' reads are ended by the time it is not). */
  private async replay(client: SseClient, sources: ReadonlyMap<string, ReplaySource>, after: SourcePositions, held?: HeldEvent[]): Promise<void> {
    this.replays++;
    try {
      await this.resume(client, sources, after, held);
    } finally {
      this.replays--;
    }
  }

  /**
   * Sends `client` what each source route delivered after `after` (a route the id does not name:
   * from its oldest retained message), route by route, then the live events held meanwhile that
   * the replay did not already send. `held`: live events already held for it (a catch-up read,
   * gapCheck(): the one that showed the gap, and those after it), their bytes in `heldBytes`.
   */
  private async resume(client: SseClient, sources: ReadonlyMap<string, ReplaySource>, after: SourcePositions, held: HeldEvent[] = []): Promise<void> {
    client.held = held;
    const reads = (client.reads = new Map<string, ReplayRead>());
    const shared = this.shared.has(client.path);
    // What the client has seen of each route's source, as the replay goes on. Positions of another
    // source (an id of another stream, or of the route's topic before a reload changed it) are no
    // positions of this one: that route is read from its oldest retained message.
    const last: SourcePositions = new Map();
    const foreign = new Set<string>();
    for (const [route, source] of sources) {
      const tag = sourceTag(source.sourceKey);
      const given = after.get(route);
      // An id without a tag (of the old form) is read as positions of the source the route reads now.
      // A source without positions (MQTT, AMQP, core NATS: no tag) has none to be another's of: its
      // notice is that it keeps nothing, not that it resumes "from the oldest retained event".
      if (given?.tag !== undefined && tag !== undefined && given.tag !== tag) foreign.add(route);
      last.set(route, { tag, at: given && !foreign.has(route) ? new Map(given.at) : new Map() });
    }
    // A catch-up read reads one route: the ids name the client's positions of the path's others too.
    for (const [route, given] of after) if (!last.has(route)) last.set(route, { tag: given.tag, at: new Map(given.at) });
    const { formats, positions: live } = this.state(client.path);
    for (const [route, source] of sources) {
      const seen = last.get(route)!;
      const from = shared ? `route ${route}: ` : '';
      // The path's incarnations of the source as the read begins: live records of a newer one are of the source made again.
      const now = live.get(route);
      const read: ReplayRead = {
        tag: seen.tag,
        ends: new Map(),
        incarnations: new Map(now !== undefined && now.tag === seen.tag ? now.incarnations : undefined),
        anew: new Set(),
        sent: seen.at,
        done: false,
        partitions: undefined,
        letGo: new Map(),
      };
      reads.set(route, read);
      // A client gone during an earlier route's read (one that sent nothing, or at its end) costs no read of this one.
      if (this.gone(client)) return;
      let retained: Retained | undefined;
      try {
        retained = await source.replay(foreign.has(route) ? new Map() : (after.get(route)?.at ?? new Map()));
        const { chunks, gap, forget, ends } = retained;
        // Not this source's positions: kept, live events up to them were held back from the client as already seen.
        for (const p of forget ?? []) seen.at.delete(p);
        read.anew = new Set(forget);
        read.ends = ends ?? new Map();
        read.partitions = retained.partitions;
        if (!this.keepCovered(client, read)) return;
        const why = [foreign.has(route) ? OTHER_SOURCE : '', gap ?? ''].filter(Boolean).join('; ');
        if (why !== '') this.write(client, sseEvent({ event: 'eventgate.resume', data: JSON.stringify({ resumed: true, gap: true, reason: from + why }) }));
        // A read at a time, the next only once the client took this one down to the send bound:
        // a resume holds one read of its backlog, not all of it. Leaving the loop (the client
        // gone) ends the read.
        for await (const chunk of chunks) {
          if (chunk.gap !== undefined) {
            if (!(await this.roomFor(client))) return;
            this.write(client, sseEvent({ event: 'eventgate.resume', data: JSON.stringify({ resumed: true, gap: true, reason: from + chunk.gap }) }));
          }
          for (const message of chunk.messages) {
            if (!(await this.roomFor(client))) return;
            const pos = positionOf(message);
            if (pos) seen.at.set(pos.partition, pos.offset);
            const { event, data } = payload(message, formats.get(route) ?? 'value');
            this.write(client, sseEvent({ id: shared ? formatSources(last) : formatId(seen), event, data }));
          }
          // Not read further for a client gone meanwhile (a chunk whose every message the chain stopped writes nothing that would tell).
          if (this.gone(client)) return;
        }
        read.done = true;
        if (!this.dropRead(client)) return;
      } catch (err) {
        // A client gone while the read waited on the broker (closed, cut off, ended by a reload) is
        // not there to be told resumed: false or disconnected; logging either would be untrue.
        if (this.gone(client)) return;
        // The live events it covers that it did not send, kept, are held now (sent after the
        // replay), as are those still to come: the read will not send them.
        read.ends = new Map();
        client.keptBytes = 0;
        if (owesLetGo(read)) {
          // Some it had not sent were let go for the send bound: going live would skip them, under ids past them.
          // Cut off, the client resumes again from the last event it got.
          this.logger.warn(
            { listener: this.listener, path: client.path, route, err: (err as Error).message },
            'event stream could not be resumed, and live events it was to send were let go; disconnecting so that it resumes again',
          );
          this.paths.get(client.path)?.clients.delete(client);
          client.res.destroy();
          client.held = undefined;
          client.reads = undefined;
          return;
        }
        this.logger.warn({ listener: this.listener, path: client.path, route, err: (err as Error).message }, 'event stream could not be resumed; streaming from now');
        this.write(client, sseEvent({ event: 'eventgate.resume', data: JSON.stringify({ resumed: false, reason: `${from}the broker could not replay retained events` }) }));
      } finally {
        // Every read begun is ended, its chunks iterated or not (a client gone while it was being set up).
        await retained?.close();
      }
    }
    // Live events held since, and those arriving while they are paced out below, wait in this list.
    const pending = client.held;
    // From here on the first live event of each partition the reads reached the ends of is checked for a gap.
    // The running config's sources: a reload during this read gave the path's routes new ones (the old broker may be stopped).
    const watch = client.watch ?? { sources: this.running?.get(client.path) ?? sources, checked: new Map() };
    for (const [route, read] of reads) if (read.done && read.tag !== undefined && !watch.checked.has(route)) watch.checked.set(route, { tag: read.tag, partitions: new Set(), all: read.partitions });
    // A route each of whose partitions was checked (the last by the check that started this catch-up) is watched no more.
    for (const [route, watched] of watch.checked) if (everyChecked(watched)) watch.checked.delete(route);
    client.watch = watch.checked.size > 0 ? watch : undefined;
    // What the client has seen beyond the path's live positions: the live events up to there come later and are left out.
    // Not on a partition whose source was made again during the read: the path's position is the new records', the client's the old ones'.
    const ahead: SourcePositions = new Map();
    for (const [route, seen] of last) {
      const reached = positionsOf(live, route, seen.tag);
      const read = reads.get(route);
      const now = live.get(route)?.tag === seen.tag ? live.get(route)?.incarnations : undefined;
      const mine = new Map([...seen.at].filter(([p, offset]) => offset > (reached?.get(p) ?? -1n) && !(read !== undefined && renewed(read, p, now?.get(p)))));
      if (mine.size > 0) ahead.set(route, { tag: seen.tag, at: mine });
    }
    client.ahead = ahead.size > 0 ? ahead : undefined;
    // Live events that arrived during the replay, minus those the replay already sent. An id
    // names what the client has seen: where the replay went further than the path's positions at
    // the event's arrival (on another partition), the id carries the replay's.
    // The loop also reaches the events pushed onto `pending` while it waits for the client to read.
    // `has`: what the ids sent so far name (the replay's positions, then each held event's beyond them).
    let has = last;
    for (let i = 0; i < pending.length; i++) {
      const h = pending[i]!;
      if (!(await this.roomFor(client))) return;
      if (h.partition !== null && h.offset !== null) {
        const read = reads.get(h.source);
        const mine = positionsOf(last, h.source, h.tag);
        if (read !== undefined && read.tag === h.tag && renewed(read, h.partition, h.incarnation)) {
          // A record of the source made again during the read: the replay sent the old source's
          // records, numbered as these are. It goes out, and the ids from here on name the path's
          // position on that partition (the new source's), not the replay's.
          mine?.delete(h.partition);
        } else if (h.offset <= (mine?.get(h.partition) ?? -1n)) {
          client.heldBytes -= h.frame.length;
          continue;
        } else if (this.gapCheck(client, h.source, h.tag, h.partition, h.offset, h.incarnation, positionsOf(has, h.source, h.tag)?.get(h.partition))) {
          // Records before it that the route's consumer never delivered: read again first, this event and the rest held meanwhile.
          return this.resume(client, new Map([[h.source, client.watch!.sources.get(h.source)!]]), copyPositions(has), pending.slice(i));
        }
      }
      client.heldBytes -= h.frame.length;
      const further = h.positions && beyond(h.positions, last);
      if (h.positions) has = further ?? h.positions;
      this.write(client, further ? this.positionedFrame(client.path, h.source, further, h.event, h.data) : h.frame);
    }
    client.held = undefined;
    client.heldBytes = 0;
    client.reads = undefined;
  }

  /**
   * Whether the first live event of `route` on `partition` a resumed client is sent, at `offset`,
   * follows records it has not got: further than `position` (what it has there; undefined: none)
   * + 1. Its route's consumer never delivered them (its group joined after the client's replay
   * listed its ends, and started at the topic's end then: a new per-instance group), so it is to
   * read them again before this event. Only the first of each partition is checked: offsets may
   * skip after it (a transaction's marker, compaction), and a catch-up read of such a skip finds
   * nothing. Not for a record of the source made again (numbered anew).
   */
  private gapCheck(client: SseClient, route: string, tag: string | undefined, partition: number, offset: bigint, incarnation: number | undefined, position: bigint | undefined): boolean {
    const watch = client.watch;
    if (watch === undefined || !unchecked(watch, route, tag, partition) || offset <= (position ?? -1n)) return false;
    const watched = watch.checked.get(route)!;
    watched.partitions.add(partition);
    const gap = incarnation === undefined && offset > (position ?? -1n) + 1n && watch.sources.has(route);
    // Each partition checked: not watched any more. A check that starts a read leaves that to the read's end (resume()).
    if (!gap && everyChecked(watched)) {
      watch.checked.delete(route);
      if (watch.checked.size === 0) client.watch = undefined;
    }
    return gap;
  }

  /**
   * Lets go of the live events held for `client` that a replay's read, now at its ends, sent (kept
   * by keepCovered() in case it failed first). False once the client is gone.
   */
  private dropRead(client: SseClient): boolean {
    const held = client.held;
    if (held === undefined) return false;
    let kept = 0;
    for (const h of held) {
      if (h.partition !== null && h.offset !== null && readCovers(client.reads, h.source, h.tag, h.partition, h.offset, h.incarnation)) client.heldBytes -= h.frame.length;
      else held[kept++] = h;
    }
    held.length = kept;
    client.keptBytes = 0;
    return true;
  }

  /**
   * Once a route's read knows its ends: the held events it covers (they came before) are kept
   * as such (keptBytes), not sent after the replay unless the read fails; those the client has are
   * let go. False once the client is gone.
   */
  private keepCovered(client: SseClient, read: ReplayRead): boolean {
    const held = client.held;
    if (held === undefined || this.gone(client)) return false;
    let kept = 0;
    client.keptBytes = 0;
    for (const h of held) {
      if (h.partition !== null && h.offset !== null && readCovers(client.reads, h.source, h.tag, h.partition, h.offset, h.incarnation)) {
        if (h.offset <= (read.sent.get(h.partition) ?? -1n)) {
          client.heldBytes -= h.frame.length;
          continue;
        }
        client.keptBytes += h.frame.length;
      }
      held[kept++] = h;
    }
    held.length = kept;
    if (client.heldBytes > this.options.maxBufferedBytes) this.overBound(client);
    // Cut off just now: its read is not begun.
    return !this.gone(client);
  }

  /**
   * `held` is over the send bound: the kept events the read has sent by now go, then, still over,
   * every kept one (the read is marked: should it fail, the client cannot go live without a gap).
   * Still over with none kept, the client is cut off as one that does not read.
   */
  private overBound(client: SseClient): void {
    const held = client.held!;
    const bound = this.options.maxBufferedBytes;
    for (const all of [false, true]) {
      if (client.keptBytes === 0 || client.heldBytes <= bound) break;
      let kept = 0;
      for (const h of held) {
        const read = h.partition !== null && h.offset !== null && readCovers(client.reads, h.source, h.tag, h.partition, h.offset, h.incarnation) ? client.reads!.get(h.source)! : undefined;
        if (read !== undefined && (all || h.offset! <= (read.sent.get(h.partition!) ?? -1n))) {
          client.heldBytes -= h.frame.length;
          client.keptBytes -= h.frame.length;
          if (all) letGoOf(read, h.partition!, h.offset!);
        } else held[kept++] = h;
      }
      held.length = kept;
    }
    if (client.heldBytes > bound) this.cutOff(client, client.heldBytes);
  }

  /**
   * Waits until the client has read what it was sent down to the send bound: a replay (and the
   * live events held behind it) is written as fast as the client reads it. Written in one go, a
   * replay larger than the bound cut the client off before a byte of it left, on every reconnect
   * with the same Last-Event-ID, and the client never caught up. False once its stream is gone.
   */
  private async roomFor(client: SseClient): Promise<boolean> {
    const res = client.res;
    while (!res.destroyed && !res.writableEnded && client.out.unsent > this.options.maxBufferedBytes) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.once('drain', done);
        res.once('close', done);
        // 'drain' comes only after the stream held more than its high-water mark (16 KiB); a bound
        // below that (it may be 1 KiB) is waited for by looking again.
        const timer = setTimeout(done, REPLAY_RECHECK_MS);
      });
    }
    if (this.gone(client)) return false;
    client.stalled = undefined;
    return true;
  }

  /**
   * Whether a client being replayed is gone (it closed its stream, was cut off, or its stream was
   * ended): its replay reads nothing more, and what it held for the client is let go.
   */
  private gone(client: SseClient): boolean {
    if (!client.res.destroyed && !client.res.writableEnded) return false;
    client.held = undefined;
    client.reads = undefined;
    return true;
  }

  /**
   * A heartbeat. A live client gets it as an event (cut off when over the bound). A client being
   * replayed is written to as it reads (roomFor), so it is over the bound whenever it reads slower
   * than the replay is read; and what it reads shows here only in steps (the kernel lets node
   * write again once about half of the socket's send buffer, up to megabytes, drained). So it is
   * cut off, as a live client over the bound, only once the heartbeats found it over the bound,
   * with nothing more taken, for `replayStallTimeoutMs`. Skipped, such a client kept its replay open
   * for good on a quiet path (one read in memory, a Kafka replay, a JetStream consumer). Under the
   * bound it gets the heartbeat (its replay may be waiting for a broker's read).
   */
  private beat(c: SseClient): void {
    const unsent = c.out.unsent;
    if (!c.held || unsent <= this.options.maxBufferedBytes) {
      c.stalled = undefined;
      this.write(c, SseStreams.HEARTBEAT);
      return;
    }
    const now = Date.now();
    if (c.stalled === undefined || unsent < c.stalled.unsent) c.stalled = { since: now, unsent };
    else if (now - c.stalled.since >= this.options.replayStallTimeoutMs) this.cutOff(c, unsent);
  }

  /** Writes to one client now, after the live events this turn's batch holds for it. */
  private write(client: SseClient, frame: Buffer): boolean {
    if (!this.withinBound(client)) return false;
    this.paths.get(client.path)?.batch.flushClient(client);
    client.out.write(frame);
    return true;
  }

  /**
   * Whether a client may be sent more: its stream is open and it has no more unread bytes from
   * earlier turns (in its socket or waiting to be handed to it, paced-write.ts) than the bound.
   * This turn's batch is not counted: one buffer shared by the path's clients, it costs no memory
   * per client, and a client that keeps up is not cut off by one burst larger than the bound; if
   * it does not read it, the next turn finds it over.
   * A client over the bound is cut off.
   */
  private withinBound(client: SseClient): boolean {
    const res = client.res;
    if (res.destroyed || res.writableEnded) return false;
    const buffered = client.out.unsent;
    if (buffered <= this.options.maxBufferedBytes) return true;
    this.cutOff(client, buffered);
    return false;
  }

  /**
   * Disconnects a client that fell SHARED_LEAD_CHUNKS behind the others of the catch-up read it
   * shared (shared-replay.ts), counted as a client too slow: it resumes again from the last event
   * it got, with a read of its own (the route's group has joined by then).
   */
  private fellBehind(client: SseClient): void {
    if (client.res.destroyed) return;
    this.slowClientsClosed++;
    this.onSlowClient();
    this.logger.warn(
      { listener: this.listener, path: client.path, remote: client.remoteAddress },
      'event stream client fell behind the catch-up read it shares; disconnecting so that it resumes again',
    );
    this.paths.get(client.path)?.clients.delete(client);
    client.res.destroy();
  }

  /**
   * Disconnects a client over its send bound, counted and said once: one already gone (cut off
   * while its replay's read was being set up, which keepCovered() then finds still over the bound)
   * is left as it is.
   */
  private cutOff(client: SseClient, buffered: number): void {
    if (client.res.destroyed) return;
    this.slowClientsClosed++;
    this.onSlowClient();
    this.logger.warn({ listener: this.listener, path: client.path, remote: client.remoteAddress, buffered }, 'event stream client too slow; disconnecting');
    this.paths.get(client.path)?.clients.delete(client);
    // Destroying frees what was buffered for it at once; the client reconnects and resumes.
    client.res.destroy();
  }

  private startHeartbeat(): void {
    if (this.heartbeat) return;
    this.heartbeat = setInterval(() => {
      if (this.heartbeats.running) return;
      const clients = [...this.paths.values()].flatMap((s) => [...s.clients]);
      if (clients.length === 0) {
        clearInterval(this.heartbeat);
        this.heartbeat = undefined;
      }
      this.heartbeats.start(clients);
    }, this.options.heartbeatMs);
    this.heartbeat.unref();
  }

  /**
   * The target of `to: {listener, path}` on an http listener, for route `route`; `sourceKey`:
   * the route's source (ReplaySource.sourceKey), whose tag its events' ids carry.
   */
  target(path: string, format: SseFormat, route: string, sourceKey: string | undefined): Target {
    const state = this.state(path);
    state.formats.set(route, format);
    const names = pathParameters(path);
    const tag = sourceTag(sourceKey);
    return {
      send: (msg: Message, ctx?: MessageContext): Promise<Delivery> => {
        const pos = positionOf(msg);
        const incarnation = msg[SOURCE_INCARNATION];
        let seen: Seen | undefined;
        // The path's position on the record's partition before it: what a resumed client has there, unless its replay went further.
        let prior: bigint | undefined;
        if (pos) {
          seen = state.positions.get(route);
          if (seen !== undefined && seen.tag === tag) prior = seen.at.get(pos.partition);
          // None yet, or of the source the route read before a reload changed it: not extended by this one's.
          if (seen?.tag !== tag) state.positions.set(route, (seen = { tag, at: new Map() }));
          if (incarnation !== undefined && incarnation > (seen!.incarnations?.get(pos.partition) ?? 0)) {
            // The source was made again (a topic deleted and created): its offsets count from the
            // start again, and the position follows them down, for the path and for the clients
            // whose resume read ahead of it (ahead of the old records, not of these).
            (seen!.incarnations ??= new Map()).set(pos.partition, incarnation);
            seen!.at.set(pos.partition, pos.offset);
            for (const c of state.clients) positionsOf(c.ahead, route, tag)?.delete(pos.partition);
          } else if (pos.offset > (seen!.at.get(pos.partition) ?? -1n)) {
            // A record the route's consumer delivers again (from its group's last commit, after a
            // rebalance or a crash) keeps the path's position: an id that went back would make the
            // client's next resume replay what it was sent.
            seen!.at.set(pos.partition, pos.offset);
          }
        }
        if (state.clients.size === 0) return Promise.resolve({ listener: this.listener, path, clients: 0 });
        const { event, data } = payload(msg, format);
        const id = seen ? (this.shared.has(path) ? formatSources(state.positions) : formatId(seen)) : undefined;
        const frame = sseEvent({ id, event, data });
        const batch = state.batch;
        // A message with its own values of the path's parameters (published on `/room/:r`) goes to
        // the streams of that room only, written to each now, after what the batch holds for it.
        const wanted = filledValues(names, ctx?.path);
        let batched = 0;
        let sent = 0;
        let held: HeldEvent | undefined;
        // Clients being replayed or ahead of the path's positions get this event their own way (or not at all).
        let apart: SseClient[] | undefined;
        // The catch-up reads this event starts, by the positions they read after: clients short of the same records share one.
        let catchUps: Map<ReplaySource, Map<string, SharedReplay>> | undefined;
        const heldEvent = (): HeldEvent =>
          (held ??= {
            frame,
            source: route,
            tag,
            partition: pos?.partition ?? null,
            offset: pos?.offset ?? null,
            event,
            data,
            positions: seen ? copyPositions(state.positions) : undefined,
            incarnation,
          });
        for (const c of state.clients) {
          if (wanted !== undefined && !inRoom(c, wanted)) continue;
          // The partition's first live event since the resume (one lookup): the client's position there is worked out only then.
          if (c.watch !== undefined && !c.held && pos && unchecked(c.watch, route, tag, pos.partition)) {
            const ahead = positionsOf(c.ahead, route, tag)?.get(pos.partition);
            const has = ahead !== undefined && ahead > (prior ?? -1n) ? ahead : prior;
            if (this.gapCheck(c, route, tag, pos.partition, pos.offset, incarnation, has)) {
              // Records before it its route's consumer never delivered: read again first, it and the live events after it held meanwhile.
              (apart ??= []).push(c);
              c.held = [heldEvent()];
              c.heldBytes = frame.length;
              c.keptBytes = 0;
              const after = this.clientPositions(c, state, route, pos.partition, prior);
              const source = c.watch.sources.get(route)!;
              const key = formatId(after.get(route)) ?? '';
              let reads = (catchUps ??= new Map()).get(source);
              if (reads === undefined) catchUps.set(source, (reads = new Map()));
              let read = reads.get(key);
              if (read === undefined) reads.set(key, (read = new SharedReplay(source)));
              // The held list is the read's to start from: a read that fails sends the event after its notice.
              void this.replay(c, new Map([[route, read.join(() => this.fellBehind(c))]]), after, c.held);
              continue;
            }
          }
          if (c.ahead === undefined && !c.held) {
            if (wanted !== undefined) {
              if (this.write(c, frame)) sent++;
            } else if (this.withinBound(c)) batched++;
            continue;
          }
          (apart ??= []).push(c);
          if (c.held) {
            // The replay sends it (its read reaches this far): kept only until the read passed it, should the read fail first.
            let covered = false;
            if (pos && readCovers(c.reads, route, tag, pos.partition, pos.offset, incarnation)) {
              const read = c.reads!.get(route)!;
              if (read.done || pos.offset <= (read.sent.get(pos.partition) ?? -1n)) continue;
              // After some were let go none is kept (overBound would walk them again), but each counts as let go.
              if (read.letGo.size > 0) {
                letGoOf(read, pos.partition, pos.offset);
                continue;
              }
              covered = true;
            }
            c.held.push(heldEvent());
            c.heldBytes += frame.length;
            if (covered) c.keptBytes += frame.length;
            // Held while its replay is paced by its reading: a client that does not read is cut off as it would be live.
            if (c.heldBytes > this.options.maxBufferedBytes) this.overBound(c);
          } else if (pos && pos.offset <= (positionsOf(c.ahead, route, tag)?.get(pos.partition) ?? -1n)) {
            // The replay sent it already.
          } else if (this.write(c, this.frameAhead(c, state, path, route, seen !== undefined, frame, event, data))) sent++;
        }
        if (batched > 0) batch.queue(frame, undefined);
        if (apart) for (const c of apart) batch.joined(c);
        return Promise.resolve({ listener: this.listener, path, clients: sent + batched });
      },
    };
  }

  /**
   * What the ids a live client was sent name: the path's positions before the record at
   * `partition` now arriving (`prior` there), with those its resume read ahead of them.
   */
  private clientPositions(c: SseClient, state: PathState, route: string, partition: number, prior: bigint | undefined): SourcePositions {
    const base = copyPositions(state.positions);
    const at = base.get(route)?.at;
    if (prior === undefined) at?.delete(partition);
    else at?.set(partition, prior);
    return (c.ahead && beyond(base, c.ahead)) ?? base;
  }

  /**
   * A live event for a client whose resume read ahead of the path's live events: its id names the
   * client's positions where they are ahead (the next resume must not replay what it saw). The
   * shared `frame` once the path's positions caught up with all of them.
   */
  private frameAhead(c: SseClient, state: PathState, path: string, route: string, positioned: boolean, frame: Buffer, event: string | undefined, data: string): Buffer {
    const ahead = c.ahead!;
    for (const [r, seen] of ahead) {
      const live = state.positions.get(r);
      // The route reads another source now (a reload changed it): what the client saw ahead of the old one is not ahead of it.
      if (live !== undefined && live.tag !== seen.tag) seen.at.clear();
      for (const [p, offset] of seen.at) if ((live?.at.get(p) ?? -1n) >= offset) seen.at.delete(p);
      if (seen.at.size === 0) ahead.delete(r);
    }
    if (ahead.size === 0) {
      c.ahead = undefined;
      return frame;
    }
    if (!positioned) return frame;
    return this.positionedFrame(path, route, beyond(state.positions, ahead) ?? state.positions, event, data);
  }

  /** An event of `route` on `path` whose id names `positions`. */
  private positionedFrame(path: string, route: string, positions: SourcePositions, event: string | undefined, data: string): Buffer {
    const id = this.shared.has(path) ? formatSources(positions) : formatId(positions.get(route));
    return sseEvent({ id, event, data });
  }

  /**
   * Ends the streams of paths no route forwards to any more (after a reload) and forgets the
   * positions of routes that no longer feed a path, or now read another source (the ids of the
   * path's other routes' events would carry them). `shared`: paths fed by several routes, whose
   * event ids name each route's positions from now on.
   */
  retain(paths: ReadonlySet<string>, shared: ReadonlySet<string>, sources: ReadonlyMap<string, ReadonlyMap<string, ReplaySource>>): void {
    this.shared = shared;
    this.running = sources;
    for (const [path, s] of this.paths) {
      // A path whose parameters a reload renamed (`/rooms/:room` → `/rooms/:r`) still serves every
      // client's URL: its streams go on there (the values keep their places). Ended, they were
      // told 404 "no route forwards to" a URL that a reconnect opens again.
      // (Asked only of a removed path with parameters and streams: each ask builds a router.)
      const renamed = paths.has(path) || s.clients.size === 0 || !/[:*]/.test(path) ? undefined : [...paths].find((p) => /[:*]/.test(p) && sameRoutePath(p, path));
      if (renamed !== undefined) {
        s.batch.flush();
        const next = this.state(renamed);
        for (const [route, ps] of s.positions) if (!next.positions.has(route)) next.positions.set(route, ps);
        for (const [route, f] of s.formats) if (!next.formats.has(route)) next.formats.set(route, f);
        for (const c of s.clients) {
          c.path = renamed;
          next.clients.add(c);
          next.batch.joined(c);
        }
        this.paths.delete(path);
        continue;
      }
      if (!paths.has(path)) {
        // What was published before goes out before the stream ends, and then why it ends: the
        // browser's reconnect would get a 404 it cannot read (end()).
        s.batch.flush();
        const notice = sseEvent({ event: 'eventgate.end', data: JSON.stringify({ status: 404, reason: `no route forwards to ${path} any more (a reload removed it)` }) });
        for (const c of s.clients) {
          if (!c.res.destroyed && !c.res.writableEnded) c.out.write(notice);
          c.out.end();
        }
        this.paths.delete(path);
        continue;
      }
      for (const [route, seen] of [...s.positions]) {
        const source = sources.get(path)?.get(route);
        if (source === undefined || seen.tag !== sourceTag(source.sourceKey)) s.positions.delete(route);
      }
      // A catch-up read (gapCheck()) reads the route as it is now; a route no longer feeding the path has none.
      for (const c of s.clients) if (c.watch !== undefined) c.watch.sources = sources.get(path) ?? new Map();
    }
  }

  /**
   * A reload changed what guards `path` (`gate`: its auth now, if any): each client is checked
   * again with the credentials it connected with, and a stream whose credentials are no longer
   * accepted ends, so revoking a key or tightening a claim applies to open streams too.
   */
  recheck(path: string, gate: Gate | undefined): void {
    for (const c of this.paths.get(path)?.clients ?? []) {
      if (!gate) {
        this.expireAt(c, undefined);
        continue;
      }
      gate.admit(c.request).then(
        (admission) => {
          if (admission.ok) return this.expireAt(c, admission.until);
          // A key set that cannot be fetched right now (503) is no verdict on the client.
          if (admission.problem.status !== 401 && admission.problem.status !== 403) return;
          this.logger.info({ listener: this.listener, path, remote: c.remoteAddress, status: admission.problem.status }, 'event stream client no longer authorized after reload; ending its stream');
          this.end(c, { status: admission.problem.status, reason: `credential no longer accepted (${admission.problem.detail}); open a new stream with a valid one` });
        },
        (err) => this.logger.error({ listener: this.listener, path, err: (err as Error).message }, 'event stream client could not be checked again'),
      );
    }
  }

  /**
   * A reload changed the listener's `cors`: a stream a page of an origin it no longer allows
   * opened ends, with a 403 notice (the browser's reconnect fails CORS, a bare `error`).
   */
  endForeignOrigins(allows: (origin: string) => boolean): void {
    for (const [path, state] of this.paths) {
      for (const c of [...state.clients]) {
        const origin = c.request.headers.origin;
        if (typeof origin !== 'string' || allows(origin)) continue;
        this.logger.info({ listener: this.listener, path, remote: c.remoteAddress, origin }, 'event stream client origin no longer allowed after reload; ending its stream');
        this.end(c, { status: 403, reason: `origin ${origin} no longer allowed (a reload changed cors.origins)` });
      }
    }
  }

  /** A reload changed `tls.ca`: streams of clients whose certificate it no longer trusts end, as those of revoked keys do. */
  endUntrustedCertificates(trusted: (socket: Duplex | null) => boolean): void {
    for (const [path, state] of this.paths) {
      for (const c of [...state.clients]) {
        if (trusted(c.res.socket)) continue;
        this.logger.info({ listener: this.listener, path, remote: c.remoteAddress }, 'event stream client certificate no longer trusted after reload; ending its stream');
        this.end(c, { status: 403, reason: 'client certificate no longer trusted (a reload changed tls.ca)' });
      }
    }
  }

  private expireAt(c: SseClient, until: number | undefined): void {
    expireAt(c, until, () => {
      this.logger.info({ listener: this.listener, path: c.path, remote: c.remoteAddress }, 'event stream client credential expired; ending its stream');
      this.end(c, { status: 401, reason: 'credential expired; open a new stream with a fresh one' });
    });
  }

  /**
   * Ends one client's stream: it gets nothing more (a browser reconnects, and must present a valid
   * credential again). `notice`: why, as a last `eventgate.end` event. EventSource reconnects to
   * the same URL, with the same credential, and a refusal of it is a bare `error` event that no
   * page can read a status from; this one says to open a new stream with a fresh credential, as
   * a WebSocket subscriber's close code 4401 or 1008 does.
   */
  private end(c: SseClient, notice?: { status: number; reason: string }): void {
    clearTimeout(c.expiry);
    c.expiry = undefined;
    const state = this.paths.get(c.path);
    state?.batch.flushClient(c);
    state?.clients.delete(c);
    if (notice && !c.res.destroyed && !c.res.writableEnded) c.out.write(sseEvent({ event: 'eventgate.end', data: JSON.stringify(notice) }));
    c.out.end();
  }

  /** Ends every stream (shutdown); browsers reconnect elsewhere. */
  closeAll(): void {
    for (const s of this.paths.values()) {
      s.batch.flush();
      for (const c of s.clients) c.out.end();
    }
    this.paths.clear();
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    this.heartbeats.stop();
  }
}

/**
 * The values a message carries of a forward path's parameters `names` (its own path parameters
 * of those names), positionally; undefined when it carries none of them (every stream of the path).
 */
function filledValues(names: readonly string[], params: Readonly<Record<string, unknown>> | undefined): (string | undefined)[] | undefined {
  if (params === undefined || names.length === 0) return undefined;
  let carried = false;
  const values = names.map((n) => {
    const v = Object.hasOwn(params, n) ? params[n] : undefined;
    if (typeof v !== 'string') return undefined;
    carried = true;
    return v;
  });
  return carried ? values : undefined;
}

/** Whether a stream's path values equal every value the message carries (exactly: `a/b`, `..` and `` are rooms of their own). */
function inRoom(c: SseClient, wanted: readonly (string | undefined)[]): boolean {
  for (let i = 0; i < wanted.length; i++) if (wanted[i] !== undefined && wanted[i] !== c.values[i]) return false;
  return true;
}

/**
 * Where a slice of events starting at `from` ends when paced (paced-write.ts): after the last
 * whole event within SLICE_BYTES, or after the one event that is larger.
 */
function eventsEnd(bytes: Buffer, from: number): number {
  const max = from + SLICE_BYTES;
  if (max >= bytes.length) return bytes.length;
  const last = bytes.lastIndexOf('\n\n', max - 2);
  if (last >= from) return last + 2;
  const next = bytes.indexOf('\n\n', max);
  return next === -1 ? bytes.length : next + 2;
}

/** Writes a turn's live events to a client whose stream is still open. */
function writeEvents(client: SseClient, events: Buffer): void {
  if (!client.res.destroyed && !client.res.writableEnded) client.out.write(events);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * An id, unless it is empty: an empty last event id is none (the HTML spec's EventSource sends no
 * header then; clients that send it empty, and `?lastEventId=` with no value, mean the same).
 * Read as an id, it was "not a position", and it hid the query's id.
 */
function nonEmpty(id: string | undefined): string | undefined {
  return id === undefined || id.trim() === '' ? undefined : id;
}

/** `?lastEventId=` (or Mercure's `lastEventID`). */
function queryId(query: RequestMeta['query']): string | undefined {
  const v = query.lastEventId ?? query.lastEventID;
  return Array.isArray(v) ? v[0] : v;
}

function positionOf(msg: Message): { partition: number; offset: bigint } | undefined {
  if (msg.partition === null || msg.offset === null) return undefined;
  try {
    return { partition: msg.partition, offset: BigInt(msg.offset) };
  } catch {
    return undefined;
  }
}

/**
 * Whether a request asks for an event stream: `text/event-stream` among its `Accept` media ranges
 * with a quality above 0 (`;q=0` says the client does not take it, RFC 9110 §12.4.2). Not `*\/*`:
 * a browser navigating to the path sends that, and gets the 406 that names what to send.
 */
export function wantsEventStream(req: IncomingMessage): boolean {
  const accept = req.headers.accept;
  if (typeof accept !== 'string') return false;
  for (const range of accept.split(',')) {
    const [type, ...params] = range.split(';');
    if (type!.trim().toLowerCase() !== 'text/event-stream') continue;
    const q = params.map((p) => /^\s*q\s*=\s*([0-9.]+)\s*$/i.exec(p)).find((m) => m !== null);
    if (q === undefined || Number(q[1]) > 0) return true;
  }
  return false;
}
