import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, type JetStreamManager, type JsMsg, type NatsConnection } from 'nats';
import type { Message } from '../../src/core/message.js';
import { streamMessage } from '../../src/kinds/brokers/nats/consumed.js';
import { readStream } from '../../src/kinds/brokers/nats/replay.js';
import { startNats, type MessageServer } from '../helpers/servers.js';

const MiB = 1024 * 1024;
/** A pull's expiry (the replay's 30 s; nats.js' fetch timer is a twentieth more): no shorter timer of the replay's is that long. */
const PULL_EXPIRY_MS = 30_000;

/**
 * A JetStream replay pulls up to 1 MiB at a time, as nats-server counts a message (subject, ack
 * reply, headers, payload). When the messages fill it exactly, the server ends the pull without a
 * status; nats.js still counts the messages not taken as pending and waits for the pull's expiry,
 * so the replay stalled 30 s there. It now counts the bytes itself and leaves such a pull at once.
 * The replay is read here as the gateway reads it (readStream, the broker's own message mapping)
 * against nats-server; whether a pull ended at its expiry is read off nats.js' own expiry timer,
 * not off the time the replay took.
 */
describe('a JetStream replay whose messages fill a pull exactly', () => {
  let nats: MessageServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: `${nats.host}:${nats.port}` });
    jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: 'BYTES', subjects: ['by.>'] });
  });
  after(async () => {
    await nc?.close();
    await nats?.stop();
  });

  it('leaves the pull at the last message that fills it, not at its expiry', { timeout: 120_000 }, async (t) => {
    const js = nc.jetstream();
    const subject = 'by.a';
    const seen = (await js.publish(subject, new TextEncoder().encode('seen'))).seq;
    // The ack reply nats-server gives the first message the replay's consumer delivers:
    // $JS.ACK.<stream>.<consumer>.<delivered count>.<stream seq>.<consumer seq>.<ns timestamp>.<pending>,
    // its consumer an ordered one of nats.js (a 22-character nuid, `_1`), one message after it.
    const filling = seen + 1;
    const replyLength = `$JS.ACK.BYTES.${'n'.repeat(22)}_1.1.${filling}.1.${'9'.repeat(19)}.1`.length;
    const payload = new Uint8Array(MiB - subject.length - replyLength).fill(0x61);
    assert.equal((await js.publish(subject, payload)).seq, filling);
    const next = (await js.publish(subject, new TextEncoder().encode('next'))).seq;

    const expired: number[] = [];
    const realSetTimeout = globalThis.setTimeout;
    t.mock.method(globalThis, 'setTimeout', ((fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) =>
      realSetTimeout(
        (...a: unknown[]) => {
          if ((ms ?? 0) >= PULL_EXPIRY_MS) expired.push(ms!);
          fn(...a);
        },
        ms,
        ...args,
      )) as typeof setTimeout);

    // What the server counted for each message: no headers were published, so subject, reply and payload.
    const sizes = new Map<number, number>();
    const headered: number[] = [];
    const toMessage = (m: JsMsg): Message => {
      sizes.set(m.seq, m.subject.length + (m as unknown as { reply: string }).reply.length + m.data.length);
      if (m.headers) headered.push(m.seq);
      return streamMessage(m);
    };
    const { chunks, gap } = await readStream(nc, jsm, 'BYTES', subject, new Map([[0, BigInt(seen)]]), toMessage);
    const read: string[][] = [];
    for await (const chunk of chunks) read.push(chunk.messages.map((m) => m.offset!));
    t.mock.restoreAll();

    assert.deepEqual(headered, []);
    assert.equal(sizes.get(filling), MiB, 'the first message with its ack reply is 1 MiB as the server counts it');
    assert.equal(gap, undefined);
    assert.deepEqual(read, [[String(filling)], [String(next)]], 'a pull of the filling message, then one of the next');
    assert.deepEqual(expired, [], 'no pull of the replay was left to its expiry');
  });
});
