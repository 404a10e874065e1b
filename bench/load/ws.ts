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

/** Opens `n` clients on `url`, a few at a time so the listen backlog never overflows. */
export async function connectClients(url: string, n: number, onMessage?: (i: number, data: Buffer) => void): Promise<WebSocket[]> {
  const clients: WebSocket[] = [];
  const batch = 50;
  for (let i = 0; i < n; i += batch) {
    const opened = [];
    for (let j = i; j < Math.min(n, i + batch); j++) {
      const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
      if (onMessage) ws.on('message', (data) => onMessage(j, data as Buffer));
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

export interface FanoutLoad {
  publishUrl: string;
  subscribeUrl: string;
  clients: number;
  /** Messages published but not yet received by every client. */
  window: number;
  warmupSeconds: number;
  seconds: number;
  /** The server process, whose CPU time during the measurement is reported. */
  serverPid: number;
}

export interface FanoutResult {
  /** Frames received by all clients per second. */
  deliveriesPerSecond: number;
  messagesPerSecond: number;
  /** Publish → receipt by the last client to connect (the last one a broadcast loop reaches). */
  p50_ms: number;
  p99_ms: number;
  /** Clients that were disconnected, and error frames the publisher got back. */
  errors: number;
  /** Server CPU time per delivery during the measurement. */
  cpuUsPerDelivery: number;
}

export async function runFanout(load: FanoutLoad): Promise<FanoutResult> {
  let received = 0;
  let published = 0;
  const sentAt: number[] = [];
  const latencies: number[] = [];
  const sentinel = load.clients - 1;
  let measuring = false;
  let publisher: WebSocket | undefined;
  let stopped = false;

  const clients = await connectClients(load.subscribeUrl, load.clients, (i, data) => {
    received++;
    if (i === sentinel && measuring) {
      const seq = (JSON.parse(data.toString()) as { seq: number }).seq;
      latencies.push(performance.now() - sentAt[seq]!);
    }
    if (received % alive() === 0) pump();
  });
  let disconnected = 0;
  for (const ws of clients) ws.on('close', () => disconnected++);
  const alive = () => Math.max(1, load.clients - disconnected);

  publisher = new WebSocket(load.publishUrl, { perMessageDeflate: false });
  let errorFrames = 0;
  publisher.on('message', () => errorFrames++);
  await once(publisher, 'open');
  const padding = 'x'.repeat(64);
  function pump(): void {
    if (stopped || !publisher) return;
    const complete = Math.floor(received / alive());
    while (published - complete < load.window) {
      sentAt[published] = performance.now();
      publisher.send(`{"seq":${published},"room":"r${published % 16}","lumens":${published % 1000},"padding":"${padding}"}`);
      published++;
    }
  }
  pump();
  await delay(load.warmupSeconds * 1000);
  const startReceived = received;
  const startPublished = published;
  const cpu0 = cpuMs(load.serverPid);
  const t0 = performance.now();
  measuring = true;
  await delay(load.seconds * 1000);
  measuring = false;
  const t1 = performance.now();
  const cpu = cpuMs(load.serverPid) - cpu0;
  const deliveries = received - startReceived;
  const messages = published - startPublished;
  stopped = true;
  const lost = disconnected;
  publisher.terminate();
  await closeClients(clients);
  latencies.sort((a, b) => a - b);
  const seconds = (t1 - t0) / 1000;
  return {
    deliveriesPerSecond: deliveries / seconds,
    messagesPerSecond: messages / seconds,
    p50_ms: percentile(latencies, 0.5),
    p99_ms: percentile(latencies, 0.99),
    errors: lost + errorFrames,
    cpuUsPerDelivery: (cpu * 1000) / deliveries,
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
