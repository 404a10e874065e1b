/**
 * The publishing side every fan-out driver shares (WebSocket in load/ws.ts, SSE in load/sse.ts):
 * a bounded window of messages not yet received by every client, so the publisher goes "as fast
 * as the server takes them" without clients falling far enough behind to be cut off as slow, and
 * one measurement of a slice. A driver supplies only its transport: how a message is sent, and
 * when a client received one, disconnected, or the publisher got an error.
 */
import { cpuMs } from '../processes.js';
import { percentile } from '../stats.js';
import type { FanoutSlice } from './ws.js';

const PADDING = 'x'.repeat(64);

export class PublishWindow {
  private received = 0;
  private published = 0;
  private readonly sentAt: number[] = [];
  private latencies: number[] = [];
  private publishing = false;
  private disconnected = 0;
  private errors = 0;
  private drained: (() => void) | undefined;
  /** Deliveries missing at the end of the previous slice, so each slice reports only its own. */
  private missing = 0;

  constructor(
    private readonly clients: number,
    private readonly window: number,
    private readonly serverPid: number,
    private readonly send: (body: string) => void,
  ) {}

  /** One client received one message. */
  readonly delivered = (): void => {
    if (++this.received % this.alive() !== 0) return;
    if (this.publishing) this.pump();
    else if (this.drained && this.received >= this.published * this.alive()) this.drained();
  };

  /** The watched client's payload: the latency of its message. */
  readonly watched = (text: string): void => {
    this.latencies.push(performance.now() - this.sentAt[(JSON.parse(text) as { seq: number }).seq]!);
  };

  readonly disconnect = (): void => {
    this.disconnected++;
  };

  readonly error = (): void => {
    this.errors++;
  };

  private alive(): number {
    return Math.max(1, this.clients - this.disconnected);
  }

  private pump(): void {
    const complete = Math.floor(this.received / this.alive());
    while (this.published - complete < this.window) {
      const seq = this.published;
      this.sentAt[seq] = performance.now();
      this.send(`{"seq":${seq},"room":"r${seq % 16}","lumens":${seq % 1000},"padding":"${PADDING}"}`);
      this.published++;
    }
  }

  /** Publishes for `seconds`, then waits for the window to drain, and reports the slice. */
  async measure(seconds: number): Promise<FanoutSlice> {
    this.latencies = [];
    const errors0 = this.disconnected + this.errors;
    const received0 = this.received;
    const published0 = this.published;
    const cpu0 = cpuMs(this.serverPid);
    const t0 = performance.now();
    this.publishing = true;
    this.pump();
    await delay(seconds * 1000);
    this.publishing = false;
    const t1 = performance.now();
    const cpu = cpuMs(this.serverPid) - cpu0;
    const deliveries = this.received - received0;
    const messages = this.published - published0;
    // Let what is in flight arrive, so it does not count towards the next slice (bounded: lost frames never arrive).
    if (this.received < this.published * this.alive()) await Promise.race([new Promise<void>((r) => (this.drained = r)), delay(2000)]);
    this.drained = undefined;
    const missingNow = Math.max(0, this.published * this.alive() - this.received);
    const lost = missingNow - this.missing;
    this.missing = missingNow;
    const sorted = this.latencies.sort((a, b) => a - b);
    const secs = (t1 - t0) / 1000;
    return {
      deliveriesPerSecond: deliveries / secs,
      messagesPerSecond: messages / secs,
      p50_ms: percentile(sorted, 0.5),
      p99_ms: percentile(sorted, 0.99),
      errors: this.disconnected + this.errors - errors0,
      cpuUsPerDelivery: (cpu * 1000) / Math.max(1, deliveries),
      lost,
    };
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
