import type { JetStreamManager, NatsConnection, StreamInfo } from 'nats';
import type { Logger } from '../../../log.js';
import { reconnectBackoff } from '../../../core/backoff.js';
import { sleep } from '../../../core/within.js';
import { lib } from './lib.js';
import { subjectCovers } from './subjects.js';

/** Core subjects a broker looks up among the server's streams, at most (a topic computed per message names one per message). */
export const SERVER_STREAM_LOOKUPS = 100;

/** The one JetStream API subject the lookups publish to: the stream list, filtered by subject (it gives each stream's subjects too). */
const STREAM_LIST = '$JS.API.STREAM.LIST';

interface Lookup {
  subject: string;
  /** The route reading the subject; none: the gateway publishes to it. */
  reader?: { route: string };
}

/**
 * Looks up, once per core subject a broker reads or publishes (no entry of `streams` holds it), the
 * server's streams that store it, and warns of each: a route reading it gets what is published while
 * it is subscribed, at most once, and a publish is answered once the server read it, not once a
 * stream stored it. A stream dropped from `streams` by a reload, or an operator's stream the config
 * does not list, did that in silence (spec-checklist 5071).
 *
 * One lookup at a time, in the order asked (100 subjects at start are 100 requests in turn, not at
 * once), on one JetStream manager per connection that asks the server nothing of its own (no
 * `$JS.API.INFO`): so the lookups publish to `$JS.API.STREAM.LIST` only, and a permissions
 * refusal of that subject is theirs (refusedOwn), not the broker's other JetStream work's. A lookup
 * that timed out or met a reconnect is tried again after the others, with backoff; a server without
 * JetStream stops them until the next reconnect, a user denied the stream list for good.
 */
export class ServerStreamLookups {
  private readonly asked = new Set<string>();
  private readonly waiting: Lookup[] = [];
  private running = false;
  /** Why no lookups are made: the server refuses them for the user's permissions (for good), or has no JetStream (until a reconnect). */
  private off: 'refused' | 'no-jetstream' | undefined;
  /** A lookup's request is out (its refusal is then refusedOwn's). */
  private asking = false;
  private manager: { nc: NatsConnection; timeoutMs: number; jsm: JetStreamManager } | undefined;
  private readonly backoff = reconnectBackoff();

  constructor(
    private readonly log: Logger,
    private readonly host: { timeoutMs(): number; stopped(): boolean; listed(stream: string): boolean },
  ) {}

  /** Looks `subject` up (once, among the first SERVER_STREAM_LOOKUPS asked), after the lookups asked before it. */
  ask(nc: NatsConnection, subject: string, reader?: { route: string }): void {
    if (this.asked.has(subject) || this.asked.size >= SERVER_STREAM_LOOKUPS) return;
    this.asked.add(subject);
    this.waiting.push({ subject, reader });
    void this.run(nc);
  }

  /** The connection is back (perhaps to a server with JetStream): the lookups left go on. */
  reconnected(nc: NatsConnection): void {
    if (this.off === 'no-jetstream') this.off = undefined;
    void this.run(nc);
  }

  /**
   * Whether the server's permissions refusal of a publish to `subject` is a lookup's request (no
   * error of the gateway's to log). nats.js fails the request and tells the connection's status in
   * either order: the request's failure may have been taken already (off).
   */
  refusedOwn(subject: string): boolean {
    return subject === STREAM_LIST && (this.asking || this.off === 'refused');
  }

  private async run(nc: NatsConnection): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.waiting.length > 0 && this.off === undefined && !this.host.stopped()) {
        const next = this.waiting[0]!;
        let found: StreamInfo[];
        try {
          found = await this.streamsStoring(nc, next.subject);
        } catch (err) {
          if (this.stopsOn(err)) break;
          // No answer in time, or the connection lost meanwhile: tried again after the others.
          this.waiting.push(this.waiting.shift()!);
          this.log.debug({ subject: next.subject, err: (err as Error).message }, 'nats stream lookup failed; trying it again');
          await sleep(this.backoff.delay());
          continue;
        }
        this.waiting.shift();
        this.backoff.reset();
        if (!this.host.stopped()) for (const stream of found) this.warn(next, stream);
      }
    } finally {
      this.running = false;
    }
  }

  /** The server's streams whose subjects collide with `subject` (nats-server's filter): each holding all of it, or a part. */
  private async streamsStoring(nc: NatsConnection, subject: string): Promise<StreamInfo[]> {
    const timeoutMs = this.host.timeoutMs();
    if (this.manager?.nc !== nc || this.manager.timeoutMs !== timeoutMs) this.manager = { nc, timeoutMs, jsm: await nc.jetstreamManager({ timeout: timeoutMs, checkAPI: false }) };
    this.asking = true;
    try {
      const found: StreamInfo[] = [];
      for await (const si of this.manager.jsm.streams.list(subject)) found.push(si);
      return found;
    } finally {
      this.asking = false;
    }
  }

  /** Whether `err` stops the lookups: a permissions refusal (for good), or no JetStream (until a reconnect). */
  private stopsOn(err: unknown): boolean {
    const code = (err as { code?: unknown }).code;
    const api = (err as { api_error?: { code?: number } }).api_error;
    if (code === lib.ErrorCode.PermissionsViolation) {
      this.off = 'refused';
      this.waiting.length = 0;
      this.log.info(
        { subject: STREAM_LIST },
        `the nats server refuses this user the JetStream stream list (${STREAM_LIST}): core subjects are not looked up among the server's streams, and one a stream stores is not warned of`,
      );
      return true;
    }
    // No responders (nothing serves the JetStream API), or JetStream not enabled for the account.
    if (code === lib.ErrorCode.NoResponders || code === '503' || api?.code === 503) {
      this.off = 'no-jetstream';
      this.log.debug({ err: (err as Error).message }, 'no JetStream on the nats server: core subjects are not looked up among its streams until a reconnect');
      return true;
    }
    return false;
  }

  private warn({ subject, reader }: Lookup, si: StreamInfo): void {
    const stream = si.config.name;
    const subjects = si.config.subjects ?? [];
    const all = subjects.some((p) => subjectCovers(p, subject));
    const fields = { ...(reader ? { route: reader.route } : {}), subject, stream, streamSubjects: subjects };
    if (!all) {
      // A filter reaching into the stream (`orders.>` beside its `orders.eu.*`): listing it would not make the route JetStream's.
      const list = this.host.listed(stream) ? '' : "list the stream under the broker's streams (declare: false) and ";
      this.log.warn(
        fields,
        `nats stream '${stream}' on the server stores part of '${subject}' (its subjects: ${subjects.map((s) => `'${s}'`).join(', ')}), which ${reader ? `route ${reader.route} reads` : 'the gateway publishes to'} as core NATS (at most once: no entry of streams holds all of it); to read that part through a durable consumer, ${list}read its subjects from a route of their own`,
      );
      return;
    }
    const fix = `list it under the broker's streams (declare: false) to ${reader ? 'read it through a durable consumer' : 'have the stream acknowledge each publish'}`;
    if (reader) this.log.warn(fields, `nats stream '${stream}' on the server stores '${subject}', which route ${reader.route} reads as core NATS (at most once: no entry of streams holds it); ${fix}`);
    else
      this.log.warn(
        fields,
        `nats stream '${stream}' on the server stores '${subject}', which the gateway publishes to as core NATS (answered once the server read a message, not once the stream stored it); ${fix}`,
      );
  }
}
