import type { Msg, MsgHdrs, NatsConnection } from 'nats';
import { offsetText } from '../../../core/message.js';
import { problem } from '../../../core/errors.js';
import { AckDeadlines, LateWrite, LostUnacknowledged, Refused } from '../acknowledgement.js';
import { coalesceWrites } from '../coalesce.js';
import { unmetExpectation } from './expected-headers.js';

interface Pending {
  subject: string;
  resolve(seq: number): void;
  reject(err: Error): void;
  /** Set once its deadline answered it: its PubAck may still come, and is told here (AckTimeout.late). */
  late?: LateWrite;
}

/**
 * JetStream publishing without a request per message: each publish carries a reply subject under
 * one inbox this connection subscribes to once, and the stream's PubAck (or error) arriving there
 * settles it. This is what `js.publish()` does through the client's request machinery, minus what
 * made it the gateway's largest cost per publish (an Error with a stack trace, a timer and a
 * headers object each). Publishes are pipelined: as many are in flight as requests come in, each
 * bounded by `ackTimeoutMs` (AckDeadlines: one timer for all).
 *
 * A publish its deadline answered stays correlated until its PubAck comes after all, the
 * connection drops or `lateAnswerMs` passes: a consume route waits for that outcome before it
 * publishes the message again (AckTimeout.late), so a PubAck that was only late stores no
 * second copy.
 */
export class JetStreamPublisher {
  private readonly prefix: string;
  private readonly pending = new Map<string, Pending>();
  private deadlines: AckDeadlines;
  /** When a timed-out publish's PubAck is given up for (its entry dropped, the write counted lost). */
  private lateDeadlines: AckDeadlines;
  private next = 0;

  constructor(
    private readonly nc: NatsConnection,
    createInbox: () => string,
    private readonly broker: string,
    timeoutMs: number,
    private lateAnswerMs: number,
  ) {
    this.deadlines = new AckDeadlines(timeoutMs, broker);
    this.lateDeadlines = new AckDeadlines(lateAnswerMs, broker);
    this.prefix = `${createInbox()}.`;
    nc.subscribe(`${this.prefix}*`, { callback: (_err, m) => this.settle(m) });
  }

  publish(subject: string, data: Uint8Array, headers: MsgHdrs | undefined): Promise<number> {
    const token = (this.next++).toString(36);
    return new Promise<number>((resolve, reject) => {
      const p: Pending = { subject, resolve, reject };
      this.pending.set(token, p);
      coalesceWrites(socketOf(this.nc));
      try {
        this.nc.publish(subject, data, { reply: this.prefix + token, headers });
      } catch (err) {
        this.pending.delete(token);
        reject(err as Error);
        return;
      }
      const deadline = this.deadlines.add((err) => {
        // Answered 503 now; the PubAck is still awaited (below), for a consume route to wait for.
        err.late = p.late = new LateWrite(this.lateAnswerMs);
        p.resolve = p.reject = ignore;
        this.lateDeadlines.add(() => this.forget(token, p));
        reject(err);
      });
      p.resolve = (seq) => {
        deadline.settled = true;
        resolve(seq);
      };
      p.reject = (e) => {
        deadline.settled = true;
        reject(e);
      };
    });
  }

  /** A reload changed `ackTimeoutMs`: publishes from now on get the new deadlines; those out keep theirs (the old AckDeadlines' timers run until they are answered). */
  reconfigure(timeoutMs: number, lateAnswerMs: number): void {
    this.deadlines = new AckDeadlines(timeoutMs, this.broker);
    this.lateDeadlines = new AckDeadlines(lateAnswerMs, this.broker);
    this.lateAnswerMs = lateAnswerMs;
  }

  /** The connection dropped: PubAcks sent meanwhile are lost, so what waits for one answers now (503; the stream may have stored it). */
  failAll(detail: string): void {
    for (const p of this.pending.values()) {
      p.reject(new LostUnacknowledged(`the connection was lost (${detail})`));
      p.late?.tell(undefined);
    }
    this.pending.clear();
  }

  /**
   * The server refused a publish to `subject` for the user's permissions (`-ERR 'Permissions
   * Violation for Publish to ...'`): it dropped the message and no PubAck will come, so what waits
   * for one answers now instead of at its deadline (every publish to that subject is refused alike).
   */
  refused(subject: string, err: Error): void {
    for (const [token, p] of this.pending) {
      if (p.subject !== subject) continue;
      this.pending.delete(token);
      if (p.late) p.late.tell(undefined);
      else p.reject(err);
    }
  }

  /** A timed-out publish whose PubAck did not come within `lateAnswerMs`: counted lost. */
  private forget(token: string, p: Pending): void {
    if (this.pending.get(token) !== p) return;
    this.pending.delete(token);
    p.late?.tell(undefined);
  }

  private settle(m: Msg): void {
    const token = m.subject.slice(this.prefix.length);
    const p = this.pending.get(token);
    if (!p) return;
    this.pending.delete(token);
    const seq = pubAck(m, p.subject);
    // A publish its deadline answered: the stream stored it after all (a delivery), or not.
    if (p.late) p.late.tell(typeof seq === 'number' ? { broker: this.broker, topic: p.subject, partition: 0, offset: offsetText(seq) } : undefined);
    else if (typeof seq === 'number') p.resolve(seq);
    else p.reject(seq);
  }
}

/**
 * The server answered a JetStream publish 503 (no responders): no stream takes the subject, though
 * the broker's config has one that should (deleted under the gateway, or lost with a server's store).
 */
export class NoStreamStores extends Error {}

/** JetStream's `err_code` for a message over the stream's `max_msg_size` (nats-server's errors.json). */
const STREAM_MESSAGE_TOO_LARGE = 10054;

/** The stream sequence a JetStream answer gives the message, or why it was not stored. */
function pubAck(m: Msg, subject: string): number | Error {
  // The server answers 503 (no responders) when no stream takes the subject.
  if (m.headers?.code === 503) return new NoStreamStores(`no JetStream stream stores subject '${subject}'`);
  try {
    const ack = JSON.parse(Buffer.from(m.data).toString('utf8')) as { stream?: string; seq?: number; error?: { description?: string; code?: number; err_code?: number } };
    if (ack.error?.err_code === STREAM_MESSAGE_TOO_LARGE) return tooLargeForStream(ack.error.description);
    if (ack.error) return unmetExpectation(ack.error) ?? new Error(`JetStream refused the message: ${ack.error.description ?? JSON.stringify(ack.error)}`);
    if (typeof ack.seq !== 'number' || !ack.stream) return new Error('JetStream answered without a stream sequence');
    return ack.seq;
  } catch {
    return new Error('JetStream answered something that is not a PubAck');
  }
}

/**
 * A message over its stream's `max_msg_size` (an operator's limit): a refusal no retry can change
 * (413), as one over the server's `max_payload` is. Taken for an outage (503), a consume route
 * retried it and HTTP clients were told to try again.
 */
function tooLargeForStream(description: string | undefined): Refused {
  return new Refused(problem('EG_PAYLOAD_TOO_LARGE', `JetStream refused the message: it is larger than its stream takes (max_msg_size: ${description ?? 'message size exceeds maximum allowed'})`));
}

function ignore(): void {}

/** The connection's socket (a private field of the client's transport): corked per turn; absent in other transports, which then write as they do. */
export function socketOf(nc: NatsConnection): { cork?(): void; uncork?(): void } | undefined {
  return (nc as unknown as { protocol?: { transport?: { socket?: { cork?(): void; uncork?(): void } } } }).protocol?.transport?.socket;
}
