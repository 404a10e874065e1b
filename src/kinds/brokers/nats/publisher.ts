import type { Msg, MsgHdrs, NatsConnection } from 'nats';
import { AckDeadlines, NotConnected } from '../acknowledgement.js';
import { coalesceWrites } from '../coalesce.js';

interface Pending {
  subject: string;
  resolve(seq: number): void;
  reject(err: Error): void;
}

/**
 * JetStream publishing without a request per message: each publish carries a reply subject under
 * one inbox this connection subscribes to once, and the stream's PubAck (or error) arriving there
 * settles it. This is what `js.publish()` does through the client's request machinery, minus what
 * made it the gateway's largest cost per publish (an Error with a stack trace, a timer and a
 * headers object each). Publishes are pipelined: as many are in flight as requests come in, each
 * bounded by `ackTimeoutMs` (AckDeadlines: one timer for all).
 */
export class JetStreamPublisher {
  private readonly prefix: string;
  private readonly pending = new Map<string, Pending>();
  private readonly deadlines: AckDeadlines;
  private next = 0;

  constructor(
    private readonly nc: NatsConnection,
    createInbox: () => string,
    private readonly broker: string,
    timeoutMs: number,
  ) {
    this.deadlines = new AckDeadlines(timeoutMs, broker);
    this.prefix = `${createInbox()}.`;
    nc.subscribe(`${this.prefix}*`, { callback: (_err, m) => this.settle(m) });
  }

  publish(subject: string, data: Uint8Array, headers: MsgHdrs | undefined): Promise<number> {
    const token = (this.next++).toString(36);
    const acked = new Promise<number>((resolve, reject) => {
      this.pending.set(token, { subject, resolve, reject });
      coalesceWrites(socketOf(this.nc));
      try {
        this.nc.publish(subject, data, { reply: this.prefix + token, headers });
      } catch (err) {
        this.pending.delete(token);
        reject(err as Error);
      }
    });
    return this.deadlines.within(acked, () => this.pending.delete(token));
  }

  /** The connection dropped: PubAcks sent meanwhile are lost, so what waits for one answers now (503; the stream may have stored it). */
  failAll(detail: string): void {
    for (const p of this.pending.values()) p.reject(new NotConnected(this.broker, detail));
    this.pending.clear();
  }

  private settle(m: Msg): void {
    const token = m.subject.slice(this.prefix.length);
    const p = this.pending.get(token);
    if (!p) return;
    this.pending.delete(token);
    // The server answers 503 (no responders) when no stream takes the subject.
    if (m.headers?.code === 503) return p.reject(new Error(`no JetStream stream stores subject '${p.subject}'`));
    try {
      const ack = JSON.parse(Buffer.from(m.data).toString('utf8')) as { stream?: string; seq?: number; error?: { description?: string; code?: number } };
      if (ack.error) p.reject(new Error(`JetStream refused the message: ${ack.error.description ?? JSON.stringify(ack.error)}`));
      else if (typeof ack.seq !== 'number' || !ack.stream) p.reject(new Error('JetStream answered without a stream sequence'));
      else p.resolve(ack.seq);
    } catch {
      p.reject(new Error('JetStream answered something that is not a PubAck'));
    }
  }
}

/** The connection's socket (a private field of the client's transport): corked per turn; absent in other transports, which then write as they do. */
export function socketOf(nc: NatsConnection): { cork?(): void; uncork?(): void } | undefined {
  return (nc as unknown as { protocol?: { transport?: { socket?: { cork?(): void; uncork?(): void } } } }).protocol?.transport?.socket;
}
