/**
 * Server-Sent Events load: many EventSource-style clients (a GET with Accept: text/event-stream,
 * reading `data:` lines), and a publisher that POSTs over kept-alive connections with a bounded
 * window of messages not yet received by every client — the same shape as the WebSocket fan-out
 * driver (load/ws.ts), so the server, not the driver, is what runs out first.
 */
import { Agent, request } from 'node:http';
import { delay, PublishWindow } from './fanout-window.js';
import type { FanoutSession } from './ws.js';

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
  const agent = new Agent({ keepAlive: true, maxSockets: shape.window });
  const u = new URL(shape.publishUrl);
  const flow = new PublishWindow(shape.clients, shape.window, shape.serverPid, (body) => {
    const req = request(
      { host: u.hostname, port: Number(u.port), path: u.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        if (res.statusCode !== 200) flow.error();
        res.resume();
      },
    );
    req.on('error', flow.error);
    req.end(body);
  });
  // Every stream opens with one `retry:` block (the gateway's) or none (the baseline's): count only data events.
  let counting = false;
  const counted = () => {
    if (counting) flow.delivered();
  };
  const streams: Stream[] = [];
  for (let i = 0; i < shape.clients; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(shape.clients, i + 50); j++) {
      batch.push(openStream(shape.streamUrl, counted, j === shape.clients - 1 ? flow.watched : undefined, flow.disconnect));
    }
    streams.push(...(await Promise.all(batch)));
  }
  // Let the streams' opening blocks arrive before events are counted.
  await delay(200);
  counting = true;
  return {
    measure: (seconds) => flow.measure(seconds),
    close() {
      agent.destroy();
      for (const s of streams) s.close();
    },
  };
}
