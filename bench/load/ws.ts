/**
 * WebSocket load: many idle or receiving clients, and a publisher that keeps a bounded window of
 * messages in flight, so it publishes "as fast as the server takes them" without ever letting
 * clients fall behind far enough to be disconnected as slow (which would measure the slow-client
 * policy instead of the fan-out).
 */
import { once } from 'node:events';
import WebSocket from 'ws';
import { cpuMs } from '../processes.js';
import { percentile } from '../stats.js';
import { subscribe, type Subscriber } from './frame-counter.js';

/** Opens `n` idle `ws` clients on `url`, a few at a time so the listen backlog never overflows. */
export async function connectClients(url: string, n: number): Promise<WebSocket[]> {
  const clients: WebSocket[] = [];
  const batch = 50;
  for (let i = 0; i < n; i += batch) {
    const opened = [];
    for (let j = i; j < Math.min(n, i + batch); j++) {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      ws.on('error', () => undefined);
      clients.push(ws);
      opened.push(once(ws, 'open'));
    }
    await Promise.all(opened);
  }
  return clients;
}

export async function closeClients(clients: WebSocket[]): Promise<void> {
  await Promise.all(
    clients.map((ws) => {
      if (ws.readyState === WebSocket.CLOSED) return undefined;
      const closed = once(ws, 'close');
      ws.terminate();
      return closed;
    }),
  );
}

export interface FanoutShape {
  publishUrl: string;
  subscribeUrl: string;
  clients: number;
  /** Messages published but not yet received by every client. */
  window: number;
  /** The server process, whose CPU time during each slice is reported. */
  serverPid: number;
  /** Frames the server sends the publisher that are not errors (Nchan answers every publish). */
  isPublishAnswer?: (text: string) => boolean;
}

export interface FanoutSlice {
  /** Frames received by all clients per second. */
  deliveriesPerSecond: number;
  messagesPerSecond: number;
  /** Publish → receipt by the last client to connect (the last one a broadcast loop reaches). */
  p50_ms: number;
  p99_ms: number;
  /** Clients that were disconnected, and error frames the publisher got back. */
  errors: number;
  /** Server CPU time per delivery during the slice. */
  cpuUsPerDelivery: number;
  /** Deliveries that had not arrived 2 s after publishing stopped (a lossless server: 0). */
  lost: number;
}

export interface FanoutSession {
  /** Publishes for `seconds`, then waits for the window to drain, and reports the slice. */
  measure(seconds: number): Promise<FanoutSlice>;
  close(): void;
}

/** Connects the subscribers and the publisher; nothing is published until measure(). */
export async function openFanout(shape: FanoutShape): Promise<FanoutSession> {
  let received = 0;
  let published = 0;
  const sentAt: number[] = [];
  let latencies: number[] = [];
  let publishing = false;
  let disconnected = 0;
  let drained: (() => void) | undefined;
  const alive = () => Math.max(1, shape.clients - disconnected);
  const onFrame = () => {
    if (++received % alive() !== 0) return;
    if (publishing) pump();
    else if (drained && received >= published * alive()) drained();
  };
  const onClose = () => disconnected++;

  const subscribers: Subscriber[] = [];
  for (let i = 0; i < shape.clients; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(shape.clients, i + 50); j++) {
      // The last client to connect is the last one a broadcast loop reaches: its latency is the worst.
      const onPayload = j === shape.clients - 1 ? (text: string) => latencies.push(performance.now() - sentAt[(JSON.parse(text) as { seq: number }).seq]!) : undefined;
      batch.push(subscribe(shape.subscribeUrl, onFrame, onPayload, onClose));
    }
    subscribers.push(...(await Promise.all(batch)));
  }

  const publisher = new WebSocket(shape.publishUrl, { perMessageDeflate: false });
  let errorFrames = 0;
  publisher.on('message', (data) => {
    if (!shape.isPublishAnswer?.(String(data))) errorFrames++;
  });
  publisher.on('error', () => undefined);
  await once(publisher, 'open');
  const padding = 'x'.repeat(64);
  function pump(): void {
    const complete = Math.floor(received / alive());
    while (published - complete < shape.window) {
      sentAt[published] = performance.now();
      publisher.send(`{"seq":${published},"room":"r${published % 16}","lumens":${published % 1000},"padding":"${padding}"}`);
      published++;
    }
  }

  /** Deliveries missing at the end of the previous slice, so each slice reports only its own. */
  let missing = 0;
  return {
    async measure(seconds) {
      latencies = [];
      const errors0 = disconnected + errorFrames;
      const received0 = received;
      const published0 = published;
      const cpu0 = cpuMs(shape.serverPid);
      const t0 = performance.now();
      publishing = true;
      pump();
      await delay(seconds * 1000);
      publishing = false;
      const t1 = performance.now();
      const cpu = cpuMs(shape.serverPid) - cpu0;
      const deliveries = received - received0;
      const messages = published - published0;
      // Let what is in flight arrive, so it does not count towards the next slice (bounded: lost frames never arrive).
      if (received < published * alive()) await Promise.race([new Promise<void>((r) => (drained = r)), delay(2000)]);
      drained = undefined;
      const missingNow = Math.max(0, published * alive() - received);
      const lost = missingNow - missing;
      missing = missingNow;
      const sorted = latencies.sort((a, b) => a - b);
      const secs = (t1 - t0) / 1000;
      return {
        deliveriesPerSecond: deliveries / secs,
        messagesPerSecond: messages / secs,
        p50_ms: percentile(sorted, 0.5),
        p99_ms: percentile(sorted, 0.99),
        errors: disconnected + errorFrames - errors0,
        cpuUsPerDelivery: (cpu * 1000) / Math.max(1, deliveries),
        lost,
      };
    },
    close() {
      publisher.terminate();
      for (const s of subscribers) s.close();
    },
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
