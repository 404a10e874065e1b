/**
 * WebSocket load: many idle or receiving clients, and a publisher that keeps a bounded window of
 * messages in flight, so it publishes "as fast as the server takes them" without ever letting
 * clients fall behind far enough to be disconnected as slow (which would measure the slow-client
 * policy instead of the fan-out).
 */
import { once } from 'node:events';
import WebSocket from 'ws';
import { PublishWindow } from './fanout-window.js';
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
  let publisher: WebSocket | undefined;
  const flow = new PublishWindow(shape.clients, shape.window, shape.serverPid, (body) => publisher!.send(body));
  const subscribers: Subscriber[] = [];
  for (let i = 0; i < shape.clients; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(shape.clients, i + 50); j++) {
      // The last client to connect is the last one a broadcast loop reaches: its latency is the worst.
      batch.push(subscribe(shape.subscribeUrl, flow.delivered, j === shape.clients - 1 ? flow.watched : undefined, flow.disconnect));
    }
    subscribers.push(...(await Promise.all(batch)));
  }

  publisher = new WebSocket(shape.publishUrl, { perMessageDeflate: false });
  publisher.on('message', (data) => {
    if (!shape.isPublishAnswer?.(String(data))) flow.error();
  });
  publisher.on('error', () => undefined);
  await once(publisher, 'open');
  return {
    measure: (seconds) => flow.measure(seconds),
    close() {
      publisher!.terminate();
      for (const s of subscribers) s.close();
    },
  };
}
