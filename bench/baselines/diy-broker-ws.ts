/**
 * Baseline for mqtt-ws-latency, amqp-ws-latency and nats-ws-latency: a subscriber written by hand
 * with the client library the gateway uses, sending each message's payload to every websocket
 * client — the hand-written version of a websocket forward route from that broker. It subscribes
 * as the gateway's forward route does: MQTT QoS 1 with a clean session, an exclusive AMQP queue
 * bound to amq.topic (acknowledged after the broadcast, prefetch 20), a plain NATS subscription.
 * Env: KIND (mqtt | amqp | nats), URL, TOPIC.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { announce } from './announce.js';

const url = process.env.URL!;
const topic = process.env.TOPIC!;

const server = createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
const clients = new Set<WebSocket>();
wss.on('connection', (ws) => {
  clients.add(ws);
  ws.on('close', () => clients.delete(ws));
});
const broadcast = (payload: string) => {
  for (const ws of clients) if (ws.readyState === 1) ws.send(payload);
};

switch (process.env.KIND) {
  case 'mqtt': {
    const { connectAsync } = await import('mqtt');
    const client = await connectAsync(url, { clientId: `diy-ws-${process.pid}`, protocolVersion: 5, clean: true });
    client.on('message', (_topic, payload) => broadcast(payload.toString('utf8')));
    await client.subscribeAsync(topic, { qos: 1 });
    break;
  }
  case 'amqp': {
    const { connect } = await import('amqplib');
    const channel = await (await connect(url)).createChannel();
    await channel.prefetch(20);
    const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
    await channel.bindQueue(queue, 'amq.topic', topic);
    await channel.consume(queue, (m) => {
      if (!m) return;
      broadcast(m.content.toString('utf8'));
      channel.ack(m);
    });
    break;
  }
  case 'nats': {
    const { connect } = await import('nats');
    const nc = await connect({ servers: url });
    nc.subscribe(topic, { callback: (_err, m) => broadcast(Buffer.from(m.data).toString('utf8')) });
    await nc.flush();
    break;
  }
  default:
    throw new Error(`KIND must be mqtt, amqp or nats, not ${process.env.KIND}`);
}
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
