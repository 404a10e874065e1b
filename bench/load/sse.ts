/**
 * Server-Sent Events load: many EventSource-style clients (a GET with Accept: text/event-stream,
 * reading `data:` lines), and a publisher that POSTs over kept-alive connections with a bounded
 * window of messages not yet received by every client — the same shape as the WebSocket fan-out
 * driver (load/ws.ts), so the server, not the driver, is what runs out first.
 */
import { Agent, request } from 'node:http';
import { cpuMs } from '../processes.js';
import { percentile } from '../stats.js';
import type { FanoutSession, FanoutSlice } from './ws.js';

export interface SseFanoutShape {
  publishUrl: string;
  streamUrl: string;
  clients: number;
  window: number;
  serverPid: number;
}

interface Stream {
  close(): void;
}

/** One stream; counts events (blank-line terminated) without building strings, except on the watched client. */
function openStream(url: string, onEvent: () => void, onData: ((text: string) => void) | undefined, onClose: () => void): Promise<Stream> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: Number(u.port), path: u.pathname, agent: false, headers: { accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream answered ${res.statusCode}`));
      res.socket.setNoDelay(true);
      let tail = '';
      let prevNewline = false;
      res.on('data', (chunk: Buffer) => {
        // An event ends with an empty line: "\n\n". Comments (heartbeats) end the same way but start with ':'.
        for (let i = 0; i < chunk.length; i++) {
          const nl = chunk[i] === 10;
          if (nl && prevNewline) onEvent();
          prevNewline = nl;
        }
        if (onData) {
          tail += chunk.toString('utf8');
          let end: number;
          while ((end = tail.indexOf('\n\n')) !== -1) {
            const block = tail.slice(0, end);
            tail = tail.slice(end + 2);
            const line = block.split('\n').find((l) => l.startsWith('data: '));
            if (line) onData(line.slice(6));
          }
        }
      });
      res.on('close', onClose);
      resolve({ close: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

export async function openSseFanout(shape: SseFanoutShape): Promise<FanoutSession> {
  let received = 0;
  let published = 0;
  const sentAt: number[] = [];
  let latencies: number[] = [];
  let publishing = false;
  let disconnected = 0;
  let errors = 0;
  let drained: (() => void) | undefined;
  const alive = () => Math.max(1, shape.clients - disconnected);
  // Every stream opens with one `retry:` block (the gateway's) or none (the baseline's): count only data events.
  const onEvent = () => {
    if (++received % alive() !== 0) return;
    if (publishing) pump();
    else if (drained && received >= published * alive()) drained();
  };
  const streams: Stream[] = [];
  let counting = false;
  const counted = () => {
    if (counting) onEvent();
  };
  for (let i = 0; i < shape.clients; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(shape.clients, i + 50); j++) {
      const onData = j === shape.clients - 1 ? (text: string) => latencies.push(performance.now() - sentAt[(JSON.parse(text) as { seq: number }).seq]!) : undefined;
      batch.push(openStream(shape.streamUrl, counted, onData, () => disconnected++));
    }
    streams.push(...(await Promise.all(batch)));
  }
  // Let the streams' opening blocks arrive before events are counted.
  await delay(200);
  counting = true;

  const agent = new Agent({ keepAlive: true, maxSockets: shape.window });
  const u = new URL(shape.publishUrl);
  const padding = 'x'.repeat(64);
  function post(seq: number): void {
    const body = `{"seq":${seq},"room":"r${seq % 16}","lumens":${seq % 1000},"padding":"${padding}"}`;
    const req = request({ host: u.hostname, port: Number(u.port), path: u.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      if (res.statusCode !== 200) errors++;
      res.resume();
    });
    req.on('error', () => errors++);
    req.end(body);
  }
  function pump(): void {
    const complete = Math.floor(received / alive());
    while (published - complete < shape.window) {
      sentAt[published] = performance.now();
      post(published);
      published++;
    }
  }

  let missing = 0;
  return {
    async measure(seconds): Promise<FanoutSlice> {
      latencies = [];
      const errors0 = disconnected + errors;
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
        errors: disconnected + errors - errors0,
        cpuUsPerDelivery: (cpu * 1000) / Math.max(1, deliveries),
        lost,
      };
    },
    close() {
      agent.destroy();
      for (const s of streams) s.close();
    },
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
