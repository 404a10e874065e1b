/**
 * Server-Sent Events (https://html.spec.whatwg.org/multipage/server-sent-events.html) on an http
 * listener: `GET <path>` with `Accept: text/event-stream` on a path a route forwards to opens a
 * stream; every message the route delivers is one event, serialised once for every client.
 *
 * Event ids are positions in the route's source topic (`<partition>:<offset>`, one pair per
 * partition seen so far, comma-separated), so a client that reconnects with `Last-Event-ID` is
 * replayed what the broker still retains after that position — through the same chain — before
 * it goes live, without a gap or a duplicate.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { attributesOf } from '../../codecs/cloudevents.js';
import type { Logger } from '../../log.js';
import type { Delivery, Message } from '../../core/message.js';
import type { ReplaySource, Target } from '../contracts.js';

export type SseFormat = 'value' | 'envelope' | 'cloudevent';

export interface SseOptions {
  /** Per-client bound on bytes written but not yet taken by the client's socket. */
  maxBufferedBytes: number;
  heartbeatMs: number;
  /** Reconnection delay browsers are told to use (`retry:`). */
  retryMs: number;
}

export const SSE_DEFAULTS: SseOptions = { maxBufferedBytes: 1024 * 1024, heartbeatMs: 15_000, retryMs: 2000 };

/** Positions per partition: what a client has seen, and what an event id names. */
export type Positions = Map<number, bigint>;

interface SseClient {
  res: ServerResponse;
  path: string;
  remoteAddress: string | undefined;
  /** Set while the client is being replayed what it missed: live events wait here meanwhile. */
  held: { frame: Buffer; partition: number | null; offset: bigint | null }[] | undefined;
}

interface PathState {
  clients: Set<SseClient>;
  /** Latest offset delivered per partition on this path: the event id of the next event extends it. */
  positions: Positions;
  format: SseFormat;
}

/** The `id:` of a stream position (`0:41,1:17`), or undefined when no position is known. */
export function formatPositions(p: Positions): string | undefined {
  if (p.size === 0) return undefined;
  return [...p]
    .sort((a, b) => a[0] - b[0])
    .map(([part, off]) => `${part}:${off}`)
    .join(',');
}

/** The positions a `Last-Event-ID` names, or undefined when it is not one of ours. */
export function parsePositions(id: string): Positions | undefined {
  const out: Positions = new Map();
  for (const pair of id.split(',')) {
    const m = /^\s*(\d{1,9}):(\d{1,19})\s*$/.exec(pair);
    if (!m) return undefined;
    out.set(Number(m[1]), BigInt(m[2]!));
  }
  return out.size > 0 ? out : undefined;
}

/** One SSE event as bytes. Values have no raw newlines (JSON), so `data:` is one line. */
export function sseEvent(fields: { id?: string; event?: string; data: string }): Buffer {
  let text = '';
  if (fields.id !== undefined) text += `id: ${fields.id}\n`;
  if (fields.event !== undefined) text += `event: ${oneLine(fields.event)}\n`;
  for (const line of fields.data.split(/\r\n|\r|\n/)) text += `data: ${line}\n`;
  return Buffer.from(`${text}\n`);
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]/g, ' ');
}

function payload(msg: Message, format: SseFormat): { event: string | undefined; data: string } {
  const attrs = attributesOf(msg.headers);
  const event = attrs?.type;
  if (format === 'value') return { event, data: JSON.stringify(msg.value ?? null) };
  if (format === 'cloudevent' && attrs) {
    const ce: Record<string, unknown> = { ...attrs };
    if (msg.value !== null && msg.value !== undefined) ce.data = msg.value;
    return { event, data: JSON.stringify(ce) };
  }
  return {
    event,
    data: JSON.stringify({
      topic: msg.topic,
      partition: msg.partition,
      offset: msg.offset,
      key: msg.key,
      headers: msg.headers,
      value: msg.value,
      timestamp: msg.timestamp,
      ...(attrs ? { ce: attrs } : {}),
    }),
  };
}

/** The event streams of one http listener. */
export class SseStreams {
  private readonly paths = new Map<string, PathState>();
  /** Paths several routes forward to: no event ids, no resume. */
  private shared: ReadonlySet<string> = new Set();
  private heartbeat: NodeJS.Timeout | undefined;
  private static readonly HEARTBEAT = Buffer.from(': heartbeat\n\n');
  /** Clients cut off for reading too slowly, since the listener started (for status and tests). */
  slowClientsClosed = 0;

  constructor(
    private readonly listener: string,
    private options: SseOptions,
    private readonly logger: Logger,
  ) {}

  reconfigure(options: SseOptions): void {
    const beat = options.heartbeatMs !== this.options.heartbeatMs;
    this.options = options;
    if (beat && this.heartbeat) {
      clearInterval(this.heartbeat);
      this.heartbeat = undefined;
      this.startHeartbeat();
    }
  }

  count(): number {
    let n = 0;
    for (const p of this.paths.values()) n += p.clients.size;
    return n;
  }

  private state(path: string): PathState {
    let s = this.paths.get(path);
    if (!s) this.paths.set(path, (s = { clients: new Set(), positions: new Map(), format: 'value' }));
    return s;
  }

  /**
   * Opens a stream for an admitted client. With a `Last-Event-ID` and a source that can replay,
   * what the broker retains after that position is sent first; live events wait meanwhile.
   */
  open(req: IncomingMessage, res: ServerResponse, path: string, replay: ReplaySource | undefined): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      // nginx buffers responses unless told not to; events must reach the client as they happen.
      'x-accel-buffering': 'no',
    });
    res.write(`retry: ${this.options.retryMs}\n\n`);
    // Headers and the first bytes now, so the client's open event fires before the first message.
    res.flushHeaders();
    const client: SseClient = { res, path, remoteAddress: req.socket.remoteAddress, held: undefined };
    const state = this.state(path);
    state.clients.add(client);
    res.socket?.setNoDelay(true);
    const forget = () => state.clients.delete(client);
    res.on('close', forget);
    res.on('error', forget);
    this.startHeartbeat();
    const lastId = header(req, 'last-event-id');
    const from = lastId === undefined ? undefined : parsePositions(lastId);
    if (lastId !== undefined && replay) {
      if (from) void this.resume(client, replay, from);
      else
        this.write(
          client,
          sseEvent({ event: 'eventgate.resume', data: JSON.stringify({ resumed: false, reason: `Last-Event-ID '${lastId.slice(0, 100)}' is not a position of this stream; streaming from now` }) }),
        );
    } else if (lastId !== undefined && this.shared.has(path)) {
      this.write(
        client,
        sseEvent({
          event: 'eventgate.resume',
          data: JSON.stringify({ resumed: false, reason: 'several routes forward to this stream, so it cannot resume (an event id cannot name positions in several sources); streaming from now' }),
        }),
      );
    }
  }

  private async resume(client: SseClient, replay: ReplaySource, after: Positions): Promise<void> {
    client.held = [];
    const last = new Map(after);
    try {
      const { messages, gap } = await replay.replay(after);
      if (gap !== undefined) this.write(client, sseEvent({ event: 'eventgate.resume', data: JSON.stringify({ resumed: true, gap: true, reason: gap }) }));
      const format = this.state(client.path).format;
      for (const message of messages) {
        const pos = positionOf(message);
        if (pos) last.set(pos.partition, pos.offset);
        const { event, data } = payload(message, format);
        this.write(client, sseEvent({ id: formatPositions(last), event, data }));
      }
    } catch (err) {
      this.logger.warn({ listener: this.listener, path: client.path, err: (err as Error).message }, 'event stream could not be resumed; streaming from now');
      this.write(client, sseEvent({ event: 'eventgate.resume', data: JSON.stringify({ resumed: false, reason: 'the broker could not replay retained events' }) }));
    }
    const held = client.held;
    client.held = undefined;
    // Live events that arrived during the replay, minus those the replay already sent.
    for (const h of held) {
      if (h.partition !== null && h.offset !== null) {
        const seen = last.get(h.partition);
        if (seen !== undefined && h.offset <= seen) continue;
      }
      this.write(client, h.frame);
    }
  }

  /** Writes to one client, cutting it off when it has more unread bytes than the bound. */
  private write(client: SseClient, frame: Buffer): boolean {
    const res = client.res;
    if (res.destroyed || res.writableEnded) return false;
    if (res.writableLength > this.options.maxBufferedBytes) {
      this.slowClientsClosed++;
      this.logger.warn({ listener: this.listener, path: client.path, remote: client.remoteAddress, buffered: res.writableLength }, 'event stream client too slow; disconnecting');
      this.paths.get(client.path)?.clients.delete(client);
      // Destroying frees what was buffered for it at once; the client reconnects and resumes.
      res.destroy();
      return false;
    }
    res.write(frame);
    return true;
  }

  private startHeartbeat(): void {
    if (this.heartbeat) return;
    this.heartbeat = setInterval(() => {
      let any = false;
      for (const s of this.paths.values()) {
        for (const c of s.clients) {
          any = true;
          if (!c.held) this.write(c, SseStreams.HEARTBEAT);
        }
      }
      if (!any) {
        clearInterval(this.heartbeat);
        this.heartbeat = undefined;
      }
    }, this.options.heartbeatMs);
    this.heartbeat.unref();
  }

  /** The target of `to: {listener, path}` on an http listener. */
  target(path: string, format: SseFormat): Target {
    const state = this.state(path);
    state.format = format;
    return {
      send: (msg: Message): Promise<Delivery> => {
        const pos = this.shared.has(path) ? undefined : positionOf(msg);
        if (pos) state.positions.set(pos.partition, pos.offset);
        if (state.clients.size === 0) return Promise.resolve({ listener: this.listener, path, clients: 0 });
        const { event, data } = payload(msg, format);
        const frame = sseEvent({ id: pos ? formatPositions(state.positions) : undefined, event, data });
        let sent = 0;
        for (const c of state.clients) {
          if (c.held) c.held.push({ frame, partition: pos?.partition ?? null, offset: pos?.offset ?? null });
          else if (this.write(c, frame)) sent++;
        }
        return Promise.resolve({ listener: this.listener, path, clients: sent });
      },
    };
  }

  /**
   * Ends the streams of paths no route forwards to any more (after a reload). `shared`: paths fed
   * by several routes, whose events carry no id from now on (their positions would mix sources).
   */
  retain(paths: ReadonlySet<string>, shared: ReadonlySet<string> = new Set()): void {
    this.shared = shared;
    for (const [path, s] of this.paths) {
      if (paths.has(path)) continue;
      for (const c of s.clients) c.res.end();
      this.paths.delete(path);
    }
  }

  /** Ends every stream (shutdown); browsers reconnect elsewhere. */
  closeAll(): void {
    for (const s of this.paths.values()) for (const c of s.clients) c.res.end();
    this.paths.clear();
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
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

/** Whether a request asks for an event stream. */
export function wantsEventStream(req: IncomingMessage): boolean {
  const accept = req.headers.accept;
  return typeof accept === 'string' && accept.toLowerCase().includes('text/event-stream');
}
