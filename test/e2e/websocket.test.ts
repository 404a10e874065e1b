import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { openBrowserPage } from '../helpers/browser.js';
import { post, RawWsClient, WsClient } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { memoryRoutesCaughtUp, scrape } from '../helpers/prometheus.js';
import { rawHttp } from '../helpers/raw-http.js';
import { openStream } from '../helpers/sse.js';
import { conforms } from '../helpers/wire-formats.js';
import { fetch } from '../helpers/http.js';
import { HeldTarget } from '../helpers/held-target.js';
import { CLOSE_UNANSWERED } from '../../src/kinds/listeners/websocket.js';

// `retiring`: the webhook of a route a test's reload removes (the config without it when undefined).
const config = (held: string, retiring?: string) => `
version: 1
admin: { port: 0 }
# debug: the close frames a client left unanswered (cut at the grace) are said only there.
log: { level: debug }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1, maxBodyBytes: 1048576 }
  push: { kind: websocket, port: 0, host: 127.0.0.1, maxPayloadBytes: 1024, maxBufferedBytes: 65536 }
  lively: { kind: websocket, port: 0, host: 127.0.0.1, pingIntervalMs: 2000, maxPendingFrames: 2 }
routes:
  - name: publish
    from: { listener: push, path: /publish }
    ack: true
    through:
      - validate:
          schema: { type: object, required: [n], properties: { n: { type: integer } } }
      - transform: '$merge([$, {"via": $route, "unit": $query.unit}])'
    to: { broker: local, topic: frames }
  - name: quiet
    from: { listener: push, path: /quiet }
    to: { broker: local, topic: frames }
  - name: checked
    from: { listener: push, path: /checked }
    through:
      - validate:
          schema: { type: object, required: [n] }
    to: { broker: local, topic: checked }
  - name: frames-out
    from: { broker: local, topic: frames }
    to:
      - { listener: push, path: /frames }
      - { listener: push, path: /frames/envelope, format: envelope }
      - { listener: push, path: /frames/reconnects }
  - name: bulk
    from: { listener: api, path: /bulk }
    to: { listener: push, path: /bulk }
  - name: bytes
    from: { listener: api, path: /bytes }
    to:
      - { listener: push, path: /bytes }
      - { listener: push, path: /bytes/envelope, format: envelope }
      - { listener: api, path: /bytes/stream }
      - { listener: api, path: /bytes/stream/envelope, format: envelope }
      - { listener: api, path: /bytes/stream/cloudevent, format: cloudevent }
  - name: idle
    from: { listener: api, path: /idle }
    to: { listener: lively, path: /idle }
  - name: held
    from: { listener: lively, path: /held }
    ack: true
    to: { http: { url: '${held}' } }
  # A publisher that also gets what it publishes on, its frames held by the webhook: evicted (1013) with one in hand.
  - { name: held-chat, from: { listener: push, path: /held-chat }, ack: true, to: { http: { url: '${held}' } } }
  - { name: held-chat-in, from: { listener: api, path: /held-chat-in }, to: { listener: push, path: /held-chat } }
  - name: device-in
    from: { listener: push, path: /devices/:id }
    ack: true
    through:
      - transform: '$merge([$, {"device": $path.id, "unit": $query.unit}])'
    to: { broker: local, topic: devices }
  - name: device-out
    from: { broker: local, topic: devices }
    to: { listener: push, path: /devices/:device }
  - name: lobby-a
    from: { listener: api, path: /lobby-a }
    to: { listener: push, path: /lobby/:a }
  - name: lobby-b
    from: { listener: api, path: /lobby-b/:b }
    to: { listener: push, path: /lobby/:b }
  - name: room-in
    from: { listener: api, path: /room/:r }
    to:
      - { listener: push, path: /rooms/:r }
      - { listener: push, path: /seats/:r/:seat }
  - name: room-all
    from: { listener: api, path: /room-all }
    to:
      - { listener: push, path: /rooms/:r }
      - { listener: push, path: /seats/:r/:seat }
  - name: chat
    from: { listener: push, path: /chat/:room }
    to: { listener: push, path: /chat/:room }
  - name: chat-in
    from: { listener: api, path: /chat-in/:room }
    to:
      - { listener: push, path: /chat/:room }
      # A parameter the message does not have: every room (a warning at load).
      - { listener: push, path: /chat/:anyone, format: envelope }
${retiring === undefined ? '' : `  - { name: retiring, from: { listener: push, path: /retiring }, ack: true, to: { http: { url: '${retiring}' } } }\n`}`;

describe('WebSocket (spec §5)', () => {
  const clients: WsClient[] = [];
  after(() => {
    for (const c of clients) c.close();
  });
  // A webhook that answers nothing until released: frames on /held stay in hand (on /retiring too).
  let held: HeldTarget;
  let retiring: HeldTarget;
  before(async () => {
    held = await HeldTarget.start();
    retiring = await HeldTarget.start();
  });
  after(async () => {
    await held.stop();
    await retiring.stop();
  });
  const gw = useGateway(() => config(held.url, retiring.url));
  /** The clients of `path` cut at the close grace since log line `from` (they never answered the close frame, or were not read). */
  const cutAtGrace = (from: number, path: string) => gw.logs.slice(from).filter((l) => l.msg === CLOSE_UNANSWERED && l.path === path);
  /** Posts 256 KB messages to `path` of the api listener until a client of theirs is evicted (1013) after log line `from`. */
  const forwardUntilEvicted = async (path: string, from: number) => {
    let evicted = false;
    void gw.waitForLog((l) => l.msg === 'client too slow; disconnecting with 1013', 60000, from).then(() => (evicted = true));
    const pad = 'x'.repeat(256 * 1024);
    for (let sent = 0; !evicted && sent < 400; sent++) assert.equal((await post(gw.url('api', path), { pad })).status, 200);
    assert.ok(evicted, 'the client was disconnected');
  };
  const connect = async (path: string) => {
    const c = await WsClient.connect(gw.url('push', path, 'ws'));
    clients.push(c);
    return c;
  };

  describe('publish routes', () => {
    it('acks each delivered frame with the deliveries when the route has ack: true', async () => {
      const c = await connect('/publish');
      c.send({ n: 1 });
      const ack = await c.next();
      assert.equal(ack.type, 'ack');
      assert.equal(ack.deliveries.length, 1);
      assert.deepEqual({ ...ack.deliveries[0], offset: undefined }, { broker: 'local', topic: 'frames', partition: 0, offset: undefined });
      assert.match(ack.deliveries[0].offset, /^\d+$/);
    });

    it('answers a frame that is not JSON with an error frame and keeps the connection open', async () => {
      const c = await connect('/publish');
      c.send('{"n": ');
      const error = await c.next();
      assert.equal(error.type, 'error');
      assert.equal(error.status, 400);
      assert.equal(typeof error.title, 'string');
      assert.deepEqual(error.errors, []);
      c.send({ n: 2 });
      assert.equal((await c.next()).type, 'ack');
      assert.equal(c.closed, undefined);
    });

    it('answers a frame that fails validation with an error frame listing the errors, and keeps the connection open', async () => {
      const c = await connect('/publish');
      c.send({ n: 'two' });
      const error = await c.next();
      assert.deepEqual({ type: error.type, status: error.status, errors: error.errors }, { type: 'error', status: 400, errors: ['/n: must be integer'] });
      assert.equal(error.code, 'EG_INVALID_MESSAGE');
      c.send({ n: 3 });
      assert.equal((await c.next()).type, 'ack');
    });

    it('answers frames in the order they were sent, each with its own outcome and the number of the frame it answers, where only failures are answered too', async () => {
      const c = await connect('/publish');
      c.send({ n: 10 });
      c.send('nope');
      c.send({ n: 'x' });
      c.ws.send(Buffer.from('{"n":1}'), { binary: true });
      c.send({ n: 11 });
      const replies = [];
      for (let i = 0; i < 5; i++) replies.push(await c.next());
      // `frame`: the 1-based number of the client's frame on its connection (binary frames count).
      assert.deepEqual(
        replies.map((r) => [r.frame, r.type, r.status]),
        [
          [1, 'ack', undefined],
          [2, 'error', 400],
          [3, 'error', 400],
          [4, 'error', 415],
          [5, 'ack', undefined],
        ],
      );
      assert.ok(Number(replies[4].deliveries[0].offset) > Number(replies[0].deliveries[0].offset));
      // Without ack only failures are answered: the numbers say which frames they refuse.
      const quiet = await connect('/checked');
      for (const f of [{ n: 1 }, 'nope', { n: 2 }, { m: 3 }, { n: 4 }]) quiet.send(f);
      quiet.ws.send(Buffer.from('{"n":5}'), { binary: true });
      const refusals = [await quiet.next(), await quiet.next(), await quiet.next()];
      assert.deepEqual(
        refusals.map((r) => [r.frame, r.type, r.status, r.code]),
        [
          [2, 'error', 400, 'EG_BAD_JSON'],
          [4, 'error', 400, 'EG_INVALID_MESSAGE'],
          [6, 'error', 415, 'EG_UNSUPPORTED_MEDIA_TYPE'],
        ],
      );
      // Numbers are per connection; HTTP answers are as they were (no frame).
      const again = await connect('/checked');
      again.send('nope');
      assert.equal((await again.next()).frame, 1);
      const http = await post(gw.url('api', '/bulk'), 'nope');
      assert.deepEqual([http.status, 'frame' in http.body], [400, false]);
    });

    it('answers a binary frame with a 415 error frame', async () => {
      const c = await connect('/publish');
      c.ws.send(Buffer.from('{"n":1}'), { binary: true });
      const error = await c.next();
      assert.deepEqual([error.type, error.status], ['error', 415]);
    });

    it('sends nothing back for a delivered frame when the route has no ack', async () => {
      // The tests before published to the topic: once its forwards are through it, none of that can reach the clients opened here.
      await memoryRoutesCaughtUp(gw.adminUrl);
      const c = await connect('/quiet');
      const out = await connect('/frames');
      c.send({ n: 'anything goes' });
      assert.deepEqual(await out.next(), { n: 'anything goes' });
      // Frames are answered in order: the error frame for a sentinel that is not JSON is the first
      // thing back, so no ack came for the delivered frame before it.
      c.send('not json');
      assert.deepEqual((await c.next()).type, 'error');
    });

    it('still answers errors on a route without ack', async () => {
      const c = await connect('/quiet');
      c.send('not json');
      assert.deepEqual([(await c.next()).type], ['error']);
    });

    it('answers a frame sent on a forward-only path with a 405 error frame', async () => {
      const c = await connect('/frames');
      c.send({ n: 1 });
      const error = await c.next();
      assert.deepEqual([error.type, error.status], ['error', 405]);
    });

    it('publishes the frames a client sent right before closing (as `websocat` does when its input ends)', async () => {
      await memoryRoutesCaughtUp(gw.adminUrl);
      const out = await connect('/frames');
      for (const path of ['/quiet', '/publish']) {
        const publisher = await RawWsClient.connect(gw.url('push', path, 'ws'));
        // The frames and the close in one TCP write: the gateway reads the close before it handles the frames.
        publisher.socket.write(Buffer.concat([...[1, 2, 3].map((n) => RawWsClient.textFrame(JSON.stringify({ n, path }))), RawWsClient.closeFrame(1000)]));
        for (const n of [1, 2, 3]) assert.deepEqual(await out.next(), path === '/quiet' ? { n, path } : { n, path, via: 'publish' });
        await publisher.waitEnd();
      }
    });

    it('takes frames on a path with parameters, bound as $path (and the query as $query)', async () => {
      const seven = await connect('/devices/7?unit=lux');
      const eight = await connect('/devices/8');
      // A publisher here is a subscriber too: its ack and the forwarded message come in either order.
      const ackAndForward = async (c: WsClient) => {
        const frames = [await c.next(), await c.next()];
        assert.deepEqual(
          frames.map((f) => f.type),
          frames[0].type === 'ack' ? ['ack', undefined] : [undefined, 'ack'],
        );
        return frames.find((f) => f.type === undefined);
      };
      seven.send({ t: 21 });
      // The forward path /devices/:device matches both clients' paths: both receive what was published.
      assert.deepEqual(await ackAndForward(seven), { t: 21, device: '7', unit: 'lux' });
      assert.deepEqual(await eight.next(), { t: 21, device: '7', unit: 'lux' });
      eight.send({ t: 22 });
      assert.deepEqual(await ackAndForward(eight), { t: 22, device: '8' });
      assert.deepEqual(await seven.next(), { t: 22, device: '8' });
      await assert.rejects(WsClient.connect(gw.url('push', '/devices/7/8', 'ws')), (err: { statusCode?: number }) => err.statusCode === 404);
      // Two forward routes spelling the same paths differently: both reach the clients of those
      // paths, lobby-a's messages (which carry no parameter `a`) all of them, lobby-b's (published
      // on /lobby-b/:b) those whose `b` is the message's (once every lobby, when lobby-b's path had
      // no parameter; its parameter is filled though the clients' path spells it `a`).
      const [one, two] = [await connect('/lobby/1'), await connect('/lobby/2')];
      const clients = async (url: string, body: unknown) => {
        const reply = await post(url, body);
        assert.equal(reply.status, 200);
        return reply.body.deliveries[0].clients;
      };
      assert.equal(await clients(gw.url('api', '/lobby-a'), { from: 'a' }), 2);
      assert.equal(await clients(gw.url('api', '/lobby-b/1'), { from: 'b' }), 1);
      assert.equal(await clients(gw.url('api', '/lobby-a'), { from: 'a', again: true }), 2);
      assert.deepEqual([await one.next(), await one.next(), await one.next()], [{ from: 'a' }, { from: 'b' }, { from: 'a', again: true }]);
      assert.deepEqual([await two.next(), await two.next()], [{ from: 'a' }, { from: 'a', again: true }]);
      // A reload adds a publish route spelling the lobbies /lobby/:x: the clients stay theirs (they
      // were the forward path's, and got nothing more once it was the second spelling of another).
      const reloaded = await gw.reconfigure(`${config(held.url, retiring.url)}  - { name: lobby-in, from: { listener: push, path: "/lobby/:x" }, to: { broker: local, topic: lobby } }\n`);
      assert.equal(reloaded.msg, 'config reloaded');
      assert.equal(await clients(gw.url('api', '/lobby-b/2'), { from: 'b', reloaded: true }), 1);
      assert.equal(await clients(gw.url('api', '/lobby-a'), { from: 'a', reloaded: true }), 2);
      assert.deepEqual([await one.next()], [{ from: 'a', reloaded: true }]);
      assert.deepEqual(
        [await two.next(), await two.next()],
        [
          { from: 'b', reloaded: true },
          { from: 'a', reloaded: true },
        ],
      );
      // And back: a reload removing that publish route keeps the clients that connected to it, as
      // the forward path's (they were closed with 1001 'route removed' though it matches them).
      const three = await connect('/lobby/3');
      const restored = await gw.reconfigure(config(held.url, retiring.url));
      assert.equal(restored.msg, 'config reloaded');
      assert.equal(await clients(gw.url('api', '/lobby-b/3'), { from: 'b', restored: true }), 1);
      assert.equal(await clients(gw.url('api', '/lobby-a'), { from: 'a', restored: true }), 3);
      assert.deepEqual(
        [await three.next(), await three.next()],
        [
          { from: 'b', restored: true },
          { from: 'a', restored: true },
        ],
      );
      assert.deepEqual([await one.next()], [{ from: 'a', restored: true }]);
    });

    it("fills a forward path's parameters from the message's own path parameters: a room per value, exactly (a/b, .., and the empty value are rooms of their own), every room for a message without them", async () => {
      const paths = ['/rooms/a', '/rooms/a', '/rooms/b', '/rooms/a%2Fb', '/rooms/', '/seats/a/1', '/seats/a/2', '/seats/b/1'];
      const subscribers = await Promise.all(paths.map((p) => connect(p)));
      // [clients of /rooms/:r, of /seats/:r/:seat] each publish reached, from its answer.
      const publish = async (request: string) => {
        // Raw, since a client's URL parser would take `..` as a dot segment.
        const body = JSON.stringify({ to: request.slice('/room/'.length) });
        const reply = await rawHttp(gw.port('api'), `POST ${request} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
        assert.equal(reply?.status, 200, `${request}: ${reply?.body}`);
        return JSON.parse(reply!.body).deliveries.map((d: { clients: number }) => d.clients);
      };
      // The admin's view: the clients of each route path, all its rooms together.
      const { listeners } = (await (await fetch(`${gw.adminUrl}/admin/status`)).json()) as { listeners: { name: string; paths?: Record<string, number> }[] };
      const push = listeners.find((l) => l.name === 'push');
      assert.deepEqual([push?.paths?.['/rooms/:r'], push?.paths?.['/seats/:r/:seat']], [5, 3]);
      assert.deepEqual(await publish('/room/a'), [2, 2]);
      assert.deepEqual(await publish('/room/b'), [1, 1]);
      // Decoded, `a%2Fb` is `a/b`: neither /rooms/a nor /rooms/b; `..` no path's parent; empty, not every room.
      assert.deepEqual(await publish('/room/a%2Fb'), [1, 0]);
      assert.deepEqual(await publish('/room/..'), [0, 0]);
      assert.deepEqual(await publish('/room/'), [1, 0]);
      // A message without the parameter (as one consumed from a broker) reaches every client, last.
      assert.equal((await post(gw.url('api', '/room-all'), { to: 'all' })).status, 200);
      const got = [];
      for (const c of subscribers) {
        const frames = [await c.next()];
        while (frames[frames.length - 1].to !== 'all') frames.push(await c.next());
        got.push(frames.map((f) => f.to));
      }
      assert.deepEqual(got, [
        ['a', 'all'],
        ['a', 'all'],
        ['b', 'all'],
        ['a%2Fb', 'all'],
        ['', 'all'],
        ['a', 'all'],
        ['a', 'all'],
        ['b', 'all'],
      ]);
      // A room of clients that publish on its path and receive what is published there.
      const [x, y] = [await connect('/chat/x'), await connect('/chat/y')];
      x.send({ m: 1 });
      assert.deepEqual(await x.next(), { m: 1 });
      y.send({ m: 2 });
      assert.deepEqual(await y.next(), { m: 2 });
      x.send({ m: 3 });
      assert.deepEqual(await x.next(), { m: 3 }, 'x got nothing of room y');
      // Messages for room x and for every room interleaved within one turn (each of a batch goes to
      // room x as its value, then to all as its envelope): a client gets them in that order.
      const events = Array.from({ length: 30 }, (_, i) => ({ specversion: '1.0', id: `c-${i}`, source: '/test', type: 'chat', data: { c: i } }));
      const reply = await fetch(gw.url('api', '/chat-in/x'), { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body: JSON.stringify(events) });
      assert.equal(reply.status, 200);
      const [inX, inY] = [[] as string[], [] as string[]];
      for (let i = 0; i < 60; i++) inX.push(((f) => (f.value ? `all ${f.value.c}` : `x ${f.c}`))(await x.next()));
      for (let i = 0; i < 30; i++) inY.push(`all ${(await y.next()).value.c}`);
      assert.deepEqual(
        inX,
        events.flatMap((_, i) => [`x ${i}`, `all ${i}`]),
      );
      assert.deepEqual(
        inY,
        events.map((_, i) => `all ${i}`),
      );
    });

    it('closes with 1009 a connection that sends a frame over maxPayloadBytes, with 1007 one that sends a text frame not UTF-8, with 1008 a message in too many fragments and with 1002 one that breaks the protocol, saying why, after answering the frames before it, counted and logged', async () => {
      const failures = async () => {
        const m = await scrape(gw.adminUrl);
        return Object.fromEntries([1002, 1007, 1008, 1009].map((code) => [code, m.value('eventgate_websocket_frame_failures_total', { listener: 'push', code: String(code) })]));
      };
      const before = await failures();
      const logFrom = gw.logs.length;
      const c = await connect('/publish');
      c.send({ n: 1, pad: 'x'.repeat(2000) });
      // The close frame says why (ws closes with a bare code).
      assert.deepEqual(await c.waitClose(), { code: 1009, reason: 'a frame over maxPayloadBytes (1024 bytes)' });
      // The frames read before the one that breaks the connection are published: each gets its
      // ack or error frame before the close, or the client could not tell what was delivered.
      // All in one write, so the gateway reads them together.
      const mask = [0x12, 0x34, 0x56, 0x78];
      const masked = (payload: Buffer) => Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
      const over = Buffer.from([0x81, 0x80 | 126, 2000 >> 8, 2000 & 0xff, ...mask]);
      const notUtf8 = Buffer.concat([Buffer.from([0x81, 0x80 | 2, ...mask]), masked(Buffer.from([0xc3, 0x28]))]);
      // A frame a client must not send at all (unmasked, RFC 6455 §5.1): 1002, ws's words as the reason.
      const unmasked = Buffer.from([0x81, 2, 0x7b, 0x7d]);
      // A text message begun (FIN clear) and continued in 16384 empty fragments: one more than ws takes (1008).
      const fragmented = Buffer.concat([Buffer.from([0x01, 0x80, ...mask]), Buffer.alloc(16384 * 6).fill(Buffer.from([0x00, 0x80, ...mask]))]);
      for (const [breaker, code, reason] of [
        [over, 1009, 'a frame over maxPayloadBytes (1024 bytes)'],
        [notUtf8, 1007, 'Invalid WebSocket frame: invalid UTF-8 sequence'],
        [fragmented, 1008, 'a message in more than 16384 fragments'],
        [unmasked, 1002, 'Invalid WebSocket frame: MASK must be set'],
      ] as const) {
        const raw = await RawWsClient.connect(gw.url('push', '/publish', 'ws'));
        raw.socket.write(Buffer.concat([RawWsClient.textFrame('{"n":1}'), RawWsClient.textFrame('{"n":"x"}'), RawWsClient.textFrame('{"n":2}'), breaker]));
        assert.deepEqual(await raw.waitCloseFrame(), { code, reason });
        const answers = raw.texts.slice(0, raw.textsBeforeClose).map((t) => JSON.parse(t));
        assert.deepEqual(
          answers.map((a) => [a.frame, a.type]),
          [
            [1, 'ack'],
            [2, 'error'],
            [3, 'ack'],
          ],
          `${code}: ${raw.texts.join(' ')}`,
        );
        assert.equal(answers[1].status, 400);
        raw.destroy();
      }
      // The page sees only the close: the operator sees each failure counted by code, and logged.
      assert.deepEqual(await failures(), { 1002: before[1002]! + 1, 1007: before[1007]! + 1, 1008: before[1008]! + 1, 1009: before[1009]! + 2 });
      // Logged rate-limited, per client address and code: the second 1009 from this address is
      // counted in the line at its window's end (`closed`), not a line of its own, so a client
      // reconnecting to send bad frames in a loop cannot flood the log.
      const said = gw.logs.slice(logFrom).filter((l) => l.msg === 'client sent a frame that fails the connection; disconnecting');
      assert.deepEqual(
        said.map((l) => [l.code, l.reason, l.remote, l.closed]),
        [
          [1009, 'a frame over maxPayloadBytes (1024 bytes)', '127.0.0.1', 1],
          [1007, 'Invalid WebSocket frame: invalid UTF-8 sequence', '127.0.0.1', 1],
          [1008, 'a message in more than 16384 fragments', '127.0.0.1', 1],
          [1002, 'Invalid WebSocket frame: MASK must be set', '127.0.0.1', 1],
        ],
      );
    });

    it('closes the clients of a path a reload removed with 1001 only once the frames they sent are answered: the one in hand by its route, those behind it 404 not published', async () => {
      const publisher = await WsClient.connect(gw.url('push', '/retiring', 'ws'));
      clients.push(publisher);
      for (let n = 1; n <= 3; n++) publisher.send({ n });
      await eventually(() => retiring.bodies.length === 1);
      assert.equal((await gw.reconfigure(config(held.url))).msg, 'config reloaded');
      retiring.release();
      // (Closed at the reload, before any answer, the client could not tell what was delivered.)
      // On `push` (maxPendingFrames 64) all three frames are read before the reload; a frame still
      // unread in the socket then would be neither published nor answered.
      const answers = [await publisher.next(), await publisher.next(), await publisher.next()];
      assert.deepEqual(
        answers.map((a) => [a.frame, a.type, a.status]),
        [
          [1, 'ack', undefined],
          [2, 'error', 404],
          [3, 'error', 404],
        ],
      );
      assert.match(answers[1].detail, /no longer has a route .*not published/);
      assert.deepEqual(await publisher.waitClose(), { code: 1001, reason: 'route removed' });
      assert.deepEqual(retiring.bodies, ['{"n":1}']);
      assert.equal((await gw.reconfigure(config(held.url, retiring.url))).msg, 'config reloaded');
    });
  });

  describe('forward routes', () => {
    it('pushes the value as the frame with format: value, and the envelope with format: envelope', async () => {
      await memoryRoutesCaughtUp(gw.adminUrl);
      const value = await connect('/frames');
      const envelope = await connect('/frames/envelope');
      const publisher = await connect('/publish?unit=lux');
      publisher.send({ n: 42 });
      const ack = await publisher.next();
      assert.deepEqual(await value.next(), { n: 42, via: 'publish', unit: 'lux' });
      const e = await envelope.next();
      assert.deepEqual(Object.keys(e).sort(), ['headers', 'key', 'offset', 'partition', 'timestamp', 'topic', 'value']);
      assert.deepEqual(
        { topic: e.topic, partition: e.partition, offset: e.offset, key: e.key, value: e.value },
        { topic: 'frames', partition: 0, offset: ack.deliveries[0].offset, key: null, value: { n: 42, via: 'publish', unit: 'lux' } },
      );
      assert.equal(typeof e.timestamp, 'number');
      // A frame carries no headers; the routes it went through gave it trace context (docs/operations.md).
      assert.deepEqual(Object.keys(e.headers), ['traceparent']);
      assert.match(e.headers.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    });

    it('gives a value of bytes (a binary-mode CloudEvent of application/octet-stream) as a base64 string, in frames and event streams alike', async () => {
      const value = await connect('/bytes');
      const envelope = await connect('/bytes/envelope');
      const streams = ['/bytes/stream', '/bytes/stream/envelope', '/bytes/stream/cloudevent'].map((p) => openStream(gw.url('api', p)));
      const [stream, streamEnvelope, streamCloudEvent] = await Promise.all(streams);
      const reply = await fetch(gw.url('api', '/bytes'), {
        method: 'POST',
        body: Buffer.from([0xde, 0xad, 0xbe, 0xef]),
        headers: { 'content-type': 'application/octet-stream', 'ce-specversion': '1.0', 'ce-id': 'b-1', 'ce-source': '/tests', 'ce-type': 'bytes' },
      });
      assert.equal(reply.status, 200);
      // JSON has no bytes; base64 is how JSON writes them elsewhere (CloudEvents' data_base64, protobuf's JSON mapping, Go).
      assert.equal(await value.next(), '3q2+7w==');
      assert.equal((await envelope.next()).value, '3q2+7w==');
      const data = async (s: { events: () => { data: string }[] }) =>
        JSON.parse(
          await eventually(() => {
            const event = s.events().find((e) => e.data !== undefined);
            assert.ok(event, 'an event arrived');
            return event.data;
          }),
        );
      assert.equal(await data(stream!), '3q2+7w==');
      assert.equal((await data(streamEnvelope!)).value, '3q2+7w==');
      const event = await data(streamCloudEvent!);
      assert.deepEqual([event.data_base64, event.data], ['3q2+7w==', undefined]);
      for (const s of [stream, streamEnvelope, streamCloudEvent]) s!.close();
    });

    it('forwards a JSON value no step changed as its producer wrote it (an integer past 2^53, 1.10), in frames and event streams, value and envelope alike', async () => {
      await memoryRoutesCaughtUp(gw.adminUrl);
      const value = await connect('/frames');
      const envelope = await connect('/frames/envelope');
      const [stream, streamEnvelope] = await Promise.all(['/bytes/stream', '/bytes/stream/envelope'].map((p) => openStream(gw.url('api', p))));
      const written = '{"order":9007199254740993,"price":1.10}';
      // JSON.stringify of the parsed value wrote {"order":9007199254740992,"price":1.1}.
      // With a byte-order mark and spaces around, which are taken and are no part of the JSON text.
      (await connect('/quiet')).send(`\ufeff ${written} `);
      assert.equal(await value.nextText(), written);
      const e = await envelope.nextText();
      assert.ok(e.includes(`"value":${written},"timestamp":`), e);
      assert.equal(JSON.parse(e).topic, 'frames');
      const reply = await fetch(gw.url('api', '/bytes'), { method: 'POST', body: `  ${written}\n`, headers: { 'content-type': 'application/json' } });
      assert.equal(reply.status, 200);
      const data = (s: { events: () => { data: string }[] }) =>
        eventually(() => {
          const event = s.events().find((ev) => ev.data !== undefined);
          assert.ok(event, 'an event arrived');
          return event.data;
        });
      assert.equal(await data(stream!), written);
      assert.ok((await data(streamEnvelope!)).includes(`"value":${written},"timestamp":`));
      for (const s of [stream, streamEnvelope]) s!.close();
    });

    it('pushes every message to every client on the path', async () => {
      await memoryRoutesCaughtUp(gw.adminUrl);
      const a = await connect('/frames');
      const b = await connect('/frames');
      const publisher = await connect('/quiet');
      publisher.send({ n: 'to all' });
      assert.deepEqual(await a.next(), { n: 'to all' });
      assert.deepEqual(await b.next(), { n: 'to all' });
    });

    it('delivers a burst (frames handled in one event-loop turn, written to each client together) complete and in order', async () => {
      await memoryRoutesCaughtUp(gw.adminUrl);
      const a = await connect('/frames');
      const b = await connect('/frames');
      const publisher = await RawWsClient.connect(gw.url('push', '/quiet', 'ws'));
      // One TCP write with 100 frames: the gateway reads them in one turn and forwards them as one batch.
      publisher.socket.write(Buffer.concat(Array.from({ length: 100 }, (_, i) => RawWsClient.textFrame(JSON.stringify({ n: i })))));
      for (const c of [a, b]) {
        const got = [];
        for (let i = 0; i < 100; i++) got.push((await c.next()).n);
        assert.deepEqual(
          got,
          Array.from({ length: 100 }, (_, i) => i),
        );
      }
      publisher.socket.destroy();
    });

    it('refuses a handshake on a path no route uses with 404, counted by its status (a page sees only 1006)', async () => {
      const refused = async () => (await scrape(gw.adminUrl)).value('eventgate_http_requests_total', { listener: 'push', status: '404' }) ?? 0;
      const before = await refused();
      await assert.rejects(WsClient.connect(gw.url('push', '/nowhere', 'ws')), (err: { statusCode?: number }) => err.statusCode === 404);
      await assert.rejects(WsClient.connect(gw.url('push', '/nowhere/else', 'ws')), (err: { statusCode?: number }) => err.statusCode === 404);
      assert.equal(await refused(), before + 2);
      const stats = (await (await fetch(`${gw.adminUrl}/admin/stats`)).json()) as { listeners: Record<string, { responses?: Record<string, number> }> };
      assert.equal(stats.listeners.push?.responses?.['404'], before + 2);
    });

    it('counts every accepted handshake, so a client cut off and reconnecting shows where the clients gauge stays flat', async () => {
      const accepted = async () => (await scrape(gw.adminUrl)).value('eventgate_websocket_connections_total', { listener: 'push' });
      const clients = async () => ((await gw.status()).listeners as { name: string; paths?: Record<string, number> }[]).find((l) => l.name === 'push')?.paths?.['/frames/reconnects'] ?? 0;
      const before = await accepted();
      assert.equal(typeof before, 'number');
      const first = await connect('/frames/reconnects');
      await eventually(async () => assert.equal(await clients(), 1));
      // Cut without a close frame, as a proxy closing an idle connection does, and connected again.
      first.ws.terminate();
      await eventually(async () => assert.equal(await clients(), 0));
      await connect('/frames/reconnects');
      assert.equal(await clients(), 1);
      assert.equal(await accepted(), before! + 2);
      const stats = (await (await fetch(`${gw.adminUrl}/admin/stats`)).json()) as { listeners: Record<string, { connectionsAccepted?: number }> };
      assert.equal(stats.listeners.push?.connectionsAccepted, before! + 2);
    });

    it('counts closes by the code ws reports, the codes a client chooses as 3xxx and 4xxx, so a page closing (1000) and a cut (1006) are told apart', async () => {
      const codes = ['1000', '1001', '1005', '1006', '3xxx', '4xxx'];
      const counts = async () => {
        const metrics = await scrape(gw.adminUrl);
        return Object.fromEntries(codes.map((code) => [code, metrics.value('eventgate_websocket_closes_total', { listener: 'push', code }) ?? 0]));
      };
      const before = await counts();
      const closing: [string, (ws: WebSocket) => void][] = [
        ['1000', (ws) => ws.close(1000)],
        ['1001', (ws) => ws.close(1001, 'page hidden')],
        // A close frame without a code, which ws reports as 1005.
        ['1005', (ws) => ws.close()],
        // No close frame at all, as a proxy or a network cuts a connection.
        ['1006', (ws) => ws.terminate()],
        ['3xxx', (ws) => ws.close(3003)],
        ['4xxx', (ws) => ws.close(4001, 'logged out')],
        ['4xxx', (ws) => ws.close(4999)],
      ];
      for (const [, close] of closing) close((await connect('/frames/reconnects')).ws);
      const expected = Object.fromEntries(codes.map((code) => [code, before[code]! + closing.filter(([c]) => c === code).length]));
      await eventually(async () => assert.deepEqual(await counts(), expected));
      // A client's own code makes no series of its own: 3003, 4001, 4999 are in their buckets.
      const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
      assert.doesNotMatch(text, /eventgate_websocket_closes_total\{[^}]*code="(3003|4001|4999)"/);
      const stats = (await (await fetch(`${gw.adminUrl}/admin/stats`)).json()) as { listeners: Record<string, { closes?: Record<string, number> }> };
      for (const code of codes) assert.equal(stats.listeners.push?.closes?.[code] ?? 0, expected[code], code);
    });

    it('answers a malformed handshake on a route path as problem+json, like every other refusal', async () => {
      const handshake = (lines: string[], method = 'GET') => `${method} /frames HTTP/1.1\r\nHost: localhost\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`;
      const upgrade = ['Upgrade: websocket', 'Connection: Upgrade'];
      const key = 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==';
      const cases: [string, string, number, string, Record<string, string>][] = [
        ['POST', handshake([...upgrade, key, 'Sec-WebSocket-Version: 13'], 'POST'), 405, 'EG_METHOD_NOT_ALLOWED', { allow: 'GET' }],
        ['no key', handshake([...upgrade, 'Sec-WebSocket-Version: 13']), 400, 'EG_BAD_REQUEST', {}],
        ['a key of the wrong length', handshake([...upgrade, 'Sec-WebSocket-Key: c2hvcnQ=', 'Sec-WebSocket-Version: 13']), 400, 'EG_BAD_REQUEST', {}],
        // RFC 6455 §4.4: a version the server does not speak gets 426 and the versions it does;
        // RFC 9110 §15.5.22: every 426 has an Upgrade header naming the protocol.
        ['no version', handshake([...upgrade, key]), 426, 'EG_UPGRADE_REQUIRED', { upgrade: 'websocket', 'sec-websocket-version': '13, 8' }],
        ['version 7', handshake([...upgrade, key, 'Sec-WebSocket-Version: 7']), 426, 'EG_UPGRADE_REQUIRED', { upgrade: 'websocket', 'sec-websocket-version': '13, 8' }],
        ['another protocol', handshake(['Upgrade: h2c', 'Connection: Upgrade, HTTP2-Settings', 'HTTP2-Settings: AAMAAABkAAQAAP__']), 426, 'EG_UPGRADE_REQUIRED', { upgrade: 'websocket' }],
        ['a malformed subprotocol list', handshake([...upgrade, key, 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Protocol: chat,,json']), 400, 'EG_BAD_REQUEST', {}],
        ['a subprotocol offered twice', handshake([...upgrade, key, 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Protocol: chat, chat']), 400, 'EG_BAD_REQUEST', {}],
      ];
      for (const [what, request, status, code, headers] of cases) {
        const reply = await rawHttp(gw.port('push'), request);
        assert.ok(reply, `${what}: answered`);
        assert.equal(reply.status, status, what);
        assert.equal(reply.headers['content-type'], 'application/problem+json', what);
        for (const [name, value] of Object.entries(headers)) assert.equal(reply.headers[name], value, `${what}: ${name}`);
        const body = JSON.parse(reply.body);
        conforms('problem.json', body);
        assert.deepEqual([body.status, body.code], [status, code], what);
      }
    });

    it('pings clients every pingIntervalMs and disconnects one that stops answering, while clients that answer stay connected, a publisher whose pongs wait unread behind its held frames included', async () => {
      // ws answers pings itself, as browsers do; the raw client never does (a peer gone without a FIN).
      // The answering client has pingIntervalMs to answer each ping: 2 s, where 200 ms once cut it
      // off on a loaded machine (this process answered late); the silent one goes after ~4 s.
      const timeouts = async () => (await scrape(gw.adminUrl)).value('eventgate_websocket_ping_timeouts_total', { listener: 'lively' });
      const timeoutsBefore = await timeouts();
      const answering = await WsClient.connect(gw.url('lively', '/idle', 'ws'));
      clients.push(answering);
      // A publisher whose frames are held (the webhook does not answer): at maxPendingFrames (2) its
      // socket is paused, so its pongs wait unread behind its frames. It answers all the same.
      const publisher = await WsClient.connect(gw.url('lively', '/held', 'ws'));
      clients.push(publisher);
      for (let i = 0; i < 3; i++) publisher.send({ i });
      await eventually(() => held.bodies.length === 1);
      const silent = await RawWsClient.connect(gw.url('lively', '/idle', 'ws'));
      await silent.waitEnd(30000);
      assert.ok(silent.pings >= 1, 'the silent client was pinged before it was cut off');
      // Counted, the silent one only (a page asleep sees nothing of it until it wakes: 1006).
      assert.equal(await timeouts(), timeoutsBefore! + 1);
      // The answering client went through the same pings and is still there.
      assert.equal((await post(gw.url('api', '/idle'), { n: 1 })).status, 200);
      assert.deepEqual(await answering.next(), { n: 1 });
      assert.equal(answering.closed, undefined);
      // So is the publisher (it was cut off with the silent one, 1006, its frames unanswered).
      held.release();
      for (let i = 0; i < 3; i++) assert.equal((await publisher.next()).type, 'ack', `frame ${i}`);
      assert.equal(publisher.closed, undefined);
      assert.deepEqual(
        held.bodies.map((b) => JSON.parse(b)),
        [{ i: 0 }, { i: 1 }, { i: 2 }],
      );
    });

    it("pings every client of a path more than one turn's worth of pings long: a silent client behind 1,200 answering ones is cut, the answering ones stay", async () => {
      // Pings go out 500 a turn (a sweep of thousands in one turn held forwarded messages back):
      // the silent client, connected last, is in the sweep's third slice.
      const timeouts = async () => (await scrape(gw.adminUrl)).value('eventgate_websocket_ping_timeouts_total', { listener: 'lively' });
      const timeoutsBefore = await timeouts();
      const crowd: WebSocket[] = [];
      try {
        for (let i = 0; i < 1200; i += 100) {
          const batch = Array.from({ length: 100 }, () => new WebSocket(gw.url('lively', '/idle', 'ws')));
          await Promise.all(batch.map((ws) => once(ws, 'open')));
          crowd.push(...batch);
        }
        let pinged = 0;
        for (const ws of crowd) ws.once('ping', () => pinged++);
        const silent = await RawWsClient.connect(gw.url('lively', '/idle', 'ws'));
        await silent.waitEnd(30000);
        assert.ok(silent.pings >= 1, 'the silent client was pinged before it was cut off');
        assert.equal(pinged, crowd.length, 'every answering client was pinged');
        assert.equal(await timeouts(), timeoutsBefore! + 1);
        assert.deepEqual(crowd.filter((ws) => ws.readyState !== WebSocket.OPEN).length, 0, 'no answering client was cut off');
      } finally {
        for (const ws of crowd) ws.terminate();
      }
    });

    it('answers a client that offers subprotocols with the first one, as browsers need, but never a CloudEvents one it does not speak', async () => {
      const offered = new WebSocket(gw.url('push', '/frames', 'ws'), ['eventgate.v1', 'json']);
      await once(offered, 'open');
      assert.equal(offered.protocol, 'eventgate.v1');
      offered.close();
      // The CloudEvents WebSocket binding's subprotocols say every frame is an event in that format,
      // both ways; the gateway's frames are not. Before, `cloudevents.json` first was agreed to.
      const alsoPlain = new WebSocket(gw.url('push', '/frames', 'ws'), ['cloudevents.json', 'cloudevents.avro', 'json']);
      await once(alsoPlain, 'open');
      assert.equal(alsoPlain.protocol, 'json');
      alsoPlain.close();
      // Offering only CloudEvents subprotocols: answered with none (the binding's answer for a
      // server that speaks none of them), which the client's library refuses, as RFC 6455 says.
      const onlyEvents = new WebSocket(gw.url('push', '/frames', 'ws'), ['cloudevents.json']);
      const [err] = (await once(onlyEvents, 'error')) as [Error];
      assert.match(err.message, /Server sent no subprotocol/);
    });

    it('answers a plain HTTP request with 426 Upgrade Required, as problem+json', async () => {
      const res = await fetch(gw.url('push', '/frames'));
      assert.equal(res.status, 426);
      assert.equal(res.headers.get('upgrade'), 'websocket');
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      const body = (await res.json()) as { code: string; status: number };
      conforms('problem.json', body);
      assert.deepEqual([body.code, body.status], ['EG_UPGRADE_REQUIRED', 426]);
    });

    it('keeps a client that reads through one turn that brings it more than maxBufferedBytes: the bound is on what earlier turns left unread', async () => {
      const client = await connect('/bulk');
      // 40 messages of 3 KB in one CloudEvents batch: forwarded within one turn, 120 KB against a 64 KiB bound.
      const pad = 'p'.repeat(3000);
      const ce = (seq: number) => ({ specversion: '1.0', id: `burst-${seq}`, source: '/test', type: 'burst', data: { seq, pad } });
      const res = await fetch(gw.url('api', '/bulk'), {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents-batch+json' },
        body: JSON.stringify(Array.from({ length: 40 }, (_, i) => ce(i))),
      });
      assert.equal(res.status, 200);
      for (let seq = 0; seq < 40; seq++) assert.equal((await client.next(10000)).seq, seq);
      // Still connected: the next message arrives too.
      assert.equal((await post(gw.url('api', '/bulk'), { seq: 40 })).status, 200);
      assert.equal((await client.next(10000)).seq, 40);
      assert.equal(client.closed, undefined);
      client.close();
    });

    it('disconnects a client that stops reading with 1013, while a normal client keeps receiving everything', async () => {
      const slow = await RawWsClient.connect(gw.url('push', '/bulk', 'ws'));
      const normal = await connect('/bulk');
      const slowBefore = (await scrape(gw.adminUrl)).value('eventgate_slow_clients_disconnected_total', { listener: 'push' });
      slow.pause();
      const from = gw.logs.length;
      let slowDropped = false;
      void gw.waitForLog((l) => l.msg === 'client too slow; disconnecting with 1013', 60000, from).then(() => (slowDropped = true));
      const pad = 'x'.repeat(256 * 1024);
      let sent = 0;
      // Enough to fill the slow client's socket buffers, however large the kernel makes them.
      while (!slowDropped && sent < 400) {
        const reply = await post(gw.url('api', '/bulk'), { seq: sent, pad });
        assert.equal(reply.status, 200);
        sent++;
      }
      assert.ok(slowDropped, `the slow client was disconnected (after ${sent} messages)`);
      assert.equal((await scrape(gw.adminUrl)).value('eventgate_slow_clients_disconnected_total', { listener: 'push' }), slowBefore! + 1);
      // A few more after the drop: the normal client must get them too.
      for (let i = 0; i < 5; i++, sent++) assert.equal((await post(gw.url('api', '/bulk'), { seq: sent, pad })).status, 200);
      for (let seq = 0; seq < sent; seq++) {
        const frame = await normal.next(10000);
        assert.equal(frame.seq, seq);
      }
      assert.equal(normal.closed, undefined);
      // The slow client reads what was buffered for it, then the close frame, and answers it as
      // browsers do: the gateway reads that answer and ends the connection. (It read nothing more
      // from it and cut it only at the 5 s grace's end, a browser's `close` event waiting till
      // then, which the gateway says at debug.)
      slow.resume();
      assert.deepEqual(await slow.waitCloseFrame(), { code: 1013, reason: 'client too slow' });
      slow.socket.write(RawWsClient.closeFrame(1013));
      await slow.waitEnd();
      assert.deepEqual(cutAtGrace(from, '/bulk'), [], 'the gateway read the close frame rather than cut the connection at the grace');
      assert.ok(slow.texts.length < sent, 'the slow client missed messages rather than blocking anyone');
    });

    // What an evicted client still sends (a flooder's frames in flight) is skipped below ws's parser
    // up to its close frame: a text frame that is not UTF-8 and one over maxPayloadBytes among them,
    // which ws would fail the connection for, are not even read, and the close answer behind them is.
    it('reads nothing an evicted client sends after its 1013 but its close answer, which ends the connection', async () => {
      const slow = await RawWsClient.connect(gw.url('push', '/bulk', 'ws'));
      try {
        slow.pause();
        const from = gw.logs.length;
        await forwardUntilEvicted('/bulk', from);
        const closesBefore = (await scrape(gw.adminUrl)).value('eventgate_websocket_closes_total', { listener: 'push', code: '1013' }) ?? 0;
        const notUtf8 = Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe]);
        const overMaxPayload = Buffer.concat([Buffer.from([0x82, 0xfe, 0x08, 0x00, 0, 0, 0, 0]), Buffer.alloc(2048)]);
        const ones = Array.from({ length: 5000 }, () => RawWsClient.textFrame('1'));
        slow.socket.write(Buffer.concat([...ones, notUtf8, overMaxPayload, ...ones, RawWsClient.closeFrame(1013)]));
        slow.drain();
        assert.deepEqual(await slow.waitCloseFrame(), { code: 1013, reason: 'client too slow' });
        await slow.waitEnd();
        assert.deepEqual(cutAtGrace(from, '/bulk'), [], 'the gateway read the close frame rather than cut the connection at the grace');
        const failed = gw.logs.slice(from).filter((l) => l.msg === 'client error' && l.path === '/bulk');
        assert.deepEqual(failed, [], 'no frame after the 1013 was parsed');
        // The close code ws reports is that of the client's answer (1006 had the connection ended without it).
        await eventually(async () => assert.equal((await scrape(gw.adminUrl)).value('eventgate_websocket_closes_total', { listener: 'push', code: '1013' }), closesBefore + 1));
      } finally {
        slow.destroy();
      }
    });

    // A browser answers the close frame once it has read what came before it: the gateway hears that
    // answer (ws reports its code, 1013) rather than cutting the page at the grace (1006).
    it('hears a page’s answer to its 1013 once the page has read what was buffered for it (Chromium)', async () => {
      // The page blocks on a synchronous request this server answers only once the gateway evicted it.
      let release: () => void = () => undefined;
      let blocking: () => void = () => undefined;
      const isBlocking = new Promise<void>((resolve) => (blocking = resolve));
      const site = createServer((req, res) => {
        if (req.url !== '/block') return res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>slow page</title>');
        blocking();
        release = () => res.headersSent || res.writeHead(204).end();
      });
      site.listen(0, '127.0.0.1');
      await once(site, 'listening');
      const browser = await openBrowserPage();
      try {
        const { page } = browser;
        await page.goto(`http://127.0.0.1:${(site.address() as { port: number }).port}/`);
        await page.evaluate(
          (url) =>
            new Promise<void>((resolve) => {
              // (The page's own WebSocket, not ws's: this function runs in Chromium.)
              const g = globalThis as any;
              const ws = new g.WebSocket(url);
              g.wsClosed = new Promise((closed) => ws.addEventListener('close', (e: any) => closed({ code: e.code, reason: e.reason, wasClean: e.wasClean })));
              ws.addEventListener('open', () => resolve());
            }),
          gw.url('push', '/bulk', 'ws'),
        );
        const from = gw.logs.length;
        const closesBefore = (await scrape(gw.adminUrl)).value('eventgate_websocket_closes_total', { listener: 'push', code: '1013' }) ?? 0;
        const blocked = page.evaluate(() => {
          const request = new (globalThis as any).XMLHttpRequest();
          request.open('GET', '/block', false);
          request.send();
        });
        await isBlocking;
        await forwardUntilEvicted('/bulk', from);
        release();
        await blocked;
        assert.deepEqual(await page.evaluate(() => (globalThis as any).wsClosed), { code: 1013, reason: 'client too slow', wasClean: true });
        await eventually(async () => assert.equal((await scrape(gw.adminUrl)).value('eventgate_websocket_closes_total', { listener: 'push', code: '1013' }), closesBefore + 1), 10000);
        assert.deepEqual(cutAtGrace(from, '/bulk'), [], 'the gateway heard the page’s close frame rather than cut it at the grace');
      } finally {
        release();
        await browser.close();
        site.close();
      }
    });

    // 1392: its frame in hand was published and its answer dropped with the 1013, so the client could
    // not tell it from the frames behind it, never published. It is now answered before the close frame.
    it('answers the frame a client had in hand when it was disconnected with 1013, before the close frame; the frames behind it are not published', async () => {
      held.hold();
      const from = held.bodies.length;
      const slow = await RawWsClient.connect(gw.url('push', '/held-chat', 'ws'));
      try {
        slow.socket.write(Buffer.concat([RawWsClient.textFrame('{"n":1}'), RawWsClient.textFrame('{"n":2}')]));
        // Frame 1 is at the webhook, which holds it; frame 2 waits behind it.
        await eventually(() => assert.deepEqual(held.bodies.slice(from), ['{"n":1}']));
        slow.pause();
        const logged = gw.logs.length;
        await forwardUntilEvicted('/held-chat-in', logged);
        held.release();
        slow.resume();
        assert.deepEqual(await slow.waitCloseFrame(), { code: 1013, reason: 'client too slow' });
        const answers = slow.texts.slice(0, slow.textsBeforeClose).filter((t) => !t.includes('"pad"'));
        assert.deepEqual(
          answers.map((t) => JSON.parse(t) as { type: string; frame: number }).map((a) => [a.type, a.frame]),
          [['ack', 1]],
        );
        slow.socket.write(RawWsClient.closeFrame(1013));
        await slow.waitEnd();
        assert.deepEqual(cutAtGrace(logged, '/held-chat'), [], 'the gateway read the close frame rather than cut the connection at the grace');
        // Frame 2, unanswered, was not published.
        assert.deepEqual(held.bodies.slice(from), ['{"n":1}']);
      } finally {
        held.release();
        slow.socket.destroy();
      }
    });
  });
});
