/**
 * Fixed-rate publishers for the broker → websocket latency scenarios: the same client libraries
 * the gateway uses, each batch resolved once the server acknowledged every message of it (MQTT
 * QoS 1 PUBACKs, AMQP publisher confirms, a NATS flush round trip).
 */
import type { BatchPublisher } from './kafka-ws.js';

export type BrokerKind = 'mqtt' | 'amqp' | 'nats';

export async function brokerPublisher(kind: BrokerKind, url: string, topic: string): Promise<BatchPublisher> {
  switch (kind) {
    case 'mqtt': {
      const { connectAsync } = await import('mqtt');
      const client = await connectAsync(url, { clientId: `bench-pub-${process.pid}`, protocolVersion: 5 });
      return { send: (values) => Promise.all(values.map((v) => client.publishAsync(topic, v, { qos: 1 }))), stop: () => client.endAsync() };
    }
    case 'amqp': {
      const { connect } = await import('amqplib');
      const conn = await connect(url);
      const channel = await conn.createConfirmChannel();
      const one = (v: string) => new Promise<void>((resolve, reject) => channel.publish('amq.topic', topic, Buffer.from(v), {}, (err) => (err ? reject(err) : resolve())));
      return { send: (values) => Promise.all(values.map(one)), stop: () => conn.close() };
    }
    case 'nats': {
      const { connect } = await import('nats');
      const nc = await connect({ servers: url });
      return {
        send: (values) => {
          for (const v of values) nc.publish(topic, Buffer.from(v));
          return nc.flush();
        },
        stop: () => nc.drain(),
      };
    }
  }
}
