/**
 * Baseline for fanout and memory: the broadcast loop from the ws README. Frames sent by a client
 * on /publish are sent, as received, to every client connected on any other path.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { announce } from './announce.js';

const server = createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
const subscribers = new Set<WebSocket>();

wss.on('connection', (ws, req) => {
  if (req.url === '/publish') {
    ws.on('message', (data, isBinary) => {
      for (const s of subscribers) if (s.readyState === 1) s.send(data, { binary: isBinary });
    });
    return;
  }
  subscribers.add(ws);
  ws.on('close', () => subscribers.delete(ws));
});
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
