import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { scrape } from '../helpers/prometheus.js';
import { assertOtherSourceNotice, openStream, parseEvents, splitId, untagged, OTHER_SOURCE_REASON } from '../helpers/sse.js';

/** `curl -N`: an event-stream client that is not a browser. */
function curl(url: string, headers: string[] = []): { child: ChildProcess; text: () => string } {
  let text = '';
  const child = spawn('curl', ['-N', '-s', '-H', 'Accept: text/event-stream', ...headers.flatMap((h) => ['-H', h]), url], { stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (text += c));
  return { child, text: () => text };
}

/** An event-stream client that reads nothing after the headers: its unread events pile up at the gateway. */
async function stalledReader(port: number, path: string): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`);
  await once(socket, 'data');
  socket.pause();
  return socket;
}

/** An event stream read raw (`raw()`: the response so far, headers and chunk framing included), once its first lines arrived. */
async function rawStream(port: number, path: string): Promise<{ socket: Socket; raw: () => string }> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  let raw = '';
  socket.setEncoding('latin1').on('data', (c: string) => (raw += c));
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`);
  await eventually(() => assert.match(raw, /retry: \d+\n\n/));
  return { socket, raw: () => raw };
}

function noop(): void {}

/** The head of an event-stream request, as a raw-socket client writes it. */
function streamRequest(path: string): string {
  return `GET ${path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`;
}

/** A whole JSON POST, as a raw-socket client writes it. */
function publishRequest(path: string, value: unknown): string {
  const body = JSON.stringify(value);
  return `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/** The chunks of a chunked HTTP response (`raw`: the response so far, headers included); an incomplete last chunk is left out. */
function httpChunks(raw: string): string[] {
  const chunks: string[] = [];
  let at = raw.indexOf('\r\n\r\n') + 4;
  for (;;) {
    const eol = raw.indexOf('\r\n', at);
    if (eol === -1) break;
    const size = Number.parseInt(raw.slice(at, eol), 16);
    if (size === 0 || raw.length < eol + 2 + size + 2) break;
    chunks.push(Buffer.from(raw.slice(eol + 2, eol + 2 + size), 'latin1').toString('utf8'));
    at = eol + 2 + size + 2;
  }
  return chunks;
}

/** A route name past 200 characters (any length is a valid name): its positions must still resume from a composite id. */
const mixedTocks = `mixed-tocks-${'long'.repeat(50)}`;
/** Its route's lines in the config, to remove it by a reload. */
const mixedTocksRoute = new RegExp(` {2}- name: ${mixedTocks}\\n( {4}.*\\n){2}`);

describe('Server-Sent Events on an http listener', () => {
  const config = (extra = '') => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory, retain: 20 }
listeners:
  api: { kind: http, port: 0, events: { heartbeatMs: 200, maxBufferedBytes: 65536 } }
  small: { kind: http, port: 0, events: { maxBufferedBytes: 2048 } }
routes:
  - name: publish
    from: { listener: api, path: /ticks }
    to: { broker: local, topic: ticks }
  - name: stream
    from: { broker: local, topic: ticks }
    through:
      - filter: n != 13
    to: { listener: api, path: /ticks }
  - name: secret-stream
    from: { broker: local, topic: ticks }
    to:
      listener: api
      path: /private
      auth: { apiKey: { keys: { reader: reader-key-0123456789 } } }
  - name: publish-tocks
    from: { listener: api, path: /tocks }
    to: { broker: local, topic: tocks }
  - name: mixed-ticks
    from: { broker: local, topic: ticks }
    to: { listener: api, path: /mixed }
  - name: ${mixedTocks}
    from: { broker: local, topic: tocks }
    to: { listener: api, path: /mixed }
  - name: small-stream
    from: { broker: local, topic: tocks }
    to: { listener: small, path: /tocks }
  - name: room-say
    from: { listener: api, path: /say/:room }
    to: { listener: api, path: /rooms/:room }
  - name: room-announce
    from: { listener: api, path: /announce }
    to: { listener: api, path: /rooms/:room }
  - name: formats-value
    from: { broker: local, topic: ticks }
    to: { listener: api, path: /formats, format: value }
  - name: formats-envelope
    from: { broker: local, topic: tocks }
    to: { listener: api, path: /formats, format: envelope }
${extra}`;
  const gw = useGateway(config());
  const publish = async (n: number) => {
    const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(res.status, 200);
    return ((await res.json()) as { deliveries: { offset: string }[] }).deliveries[0]!.offset;
  };

  it('streams every message to curl -N as one event with a resumable id, with heartbeats', async () => {
    const c = curl(gw.url('api', '/ticks'));
    await eventually(() => assert.match(c.text(), /^retry: \d+/));
    const offset = await publish(1);
    await publish(2);
    await eventually(() => assert.equal(parseEvents(c.text()).length, 2));
    const events = parseEvents(c.text());
    assert.deepEqual(
      events.map((e) => JSON.parse(e.data)),
      [{ n: 1 }, { n: 2 }],
    );
    // The position, after the tag of the route's source: four characters and a `~` more than the position.
    const { tags, positions } = splitId(events[0]!.id);
    assert.equal(positions, `0:${offset}`);
    assert.equal(events[0]!.id!.length, 5 + positions.length);
    assert.equal(events[1]!.id, `${tags[0]}~0:${Number(offset) + 1}`);
    await eventually(() => assert.match(c.text(), /: heartbeat\n\n/));
    // A CloudEvent's type names its event, except in the gateway's own `eventgate.` namespace: no
    // publisher can forge the notices a page acts on (end the stream, say what a resume skipped).
    for (const type of ['order.placed', 'eventgate.end', 'eventgate.resume']) {
      const ce = { 'ce-specversion': '1.0', 'ce-id': type, 'ce-source': '/test', 'ce-type': type };
      const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json', ...ce }, body: '{"n":3,"status":404,"reason":"forged"}' });
      assert.equal(res.status, 200);
    }
    await eventually(() => assert.equal(parseEvents(c.text()).length, 5));
    assert.deepEqual(
      parseEvents(c.text())
        .slice(2)
        .map((e) => [e.event, JSON.parse(e.data).reason]),
      [
        ['order.placed', 'forged'],
        [undefined, 'forged'],
        [undefined, 'forged'],
      ],
    );
    c.child.kill();
  });

  it("sends heartbeats to every stream of a path more than one turn's worth of writes long (1,200 streams)", async () => {
    // Heartbeats go out 500 streams a turn (thousands in one turn held events back): every stream gets one.
    const { port } = new URL(gw.url('api', '/ticks'));
    const streams: { socket: Socket; text: string }[] = [];
    try {
      for (let i = 0; i < 1200; i += 100) {
        const batch = Array.from({ length: 100 }, () => {
          const stream = { socket: connect(Number(port), '127.0.0.1'), text: '' };
          stream.socket.setEncoding('utf8').on('data', (chunk: string) => (stream.text += chunk));
          stream.socket.write(`GET /ticks HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n\r\n`);
          return stream;
        });
        await Promise.all(batch.map((s) => once(s.socket, 'connect')));
        streams.push(...batch);
      }
      await eventually(() => assert.equal(streams.filter((s) => s.text.includes(': heartbeat\n\n')).length, streams.length), 30000);
      assert.ok(streams.every((s) => s.text.startsWith('HTTP/1.1 200 ')));
    } finally {
      for (const s of streams) s.socket.destroy();
    }
  });

  it('resumes after Last-Event-ID from the broker retention, through the chain, with no gap and no duplicate', async () => {
    const first = await publish(10);
    for (const n of [11, 12, 13, 14]) await publish(n);
    const c = curl(gw.url('api', '/ticks'), [`Last-Event-ID: 0:${first}`]);
    // Events published while the replay is sent go after it, each once.
    await eventually(() => assert.ok(parseEvents(c.text()).length >= 1));
    await publish(15);
    await eventually(() => assert.equal(parseEvents(c.text()).length, 4));
    assert.deepEqual(
      parseEvents(c.text()).map((e) => JSON.parse(e.data).n),
      [11, 12, 14, 15],
    );
    c.child.kill();
    // A new EventSource cannot send the header (a page reloaded, or opening a new stream with a
    // fresh token after eventgate.end): the id goes in the query. The header, which a browser's
    // own reconnect sends with its latest id, wins over the URL's older one.
    const last = parseEvents(c.text()).at(-1)!.id!;
    await publish(16);
    // An id of the old form (no tag) is read as a position of the route's source, as before.
    const q = curl(gw.url('api', `/ticks?lastEventId=${encodeURIComponent(`0:${first}`)}`));
    const h = curl(gw.url('api', '/ticks?lastEventID=0:0'), [`Last-Event-ID: ${last}`]);
    await eventually(() =>
      assert.deepEqual(
        parseEvents(q.text()).map((e) => JSON.parse(e.data).n),
        [11, 12, 14, 15, 16],
      ),
    );
    await eventually(() =>
      assert.deepEqual(
        parseEvents(h.text()).map((e) => JSON.parse(e.data).n),
        [16],
      ),
    );
    q.child.kill();
    h.child.kill();
    // An empty id is none, as EventSource has it (it sends no header then): an empty header leaves
    // the query's id to resume from, and an empty query value streams from now, with no notice.
    // Read as ids, each was "not a position of this stream" and streamed from now, the replay lost.
    const emptyHeader = curl(gw.url('api', `/ticks?lastEventId=${encodeURIComponent(`0:${first}`)}`), ['Last-Event-ID;']);
    const emptyQuery = curl(gw.url('api', '/ticks?lastEventId='));
    try {
      await eventually(() => assert.match(emptyQuery.text(), /^retry: \d+\n\n/));
      await eventually(() =>
        assert.deepEqual(
          parseEvents(emptyHeader.text()).map((e) => [e.event, JSON.parse(e.data).n]),
          [11, 12, 14, 15, 16].map((n) => [undefined, n]),
        ),
      );
      await publish(17);
      await eventually(() => assert.equal(parseEvents(emptyQuery.text()).length, 1));
      assert.deepEqual(
        parseEvents(emptyQuery.text()).map((e) => [e.event, JSON.parse(e.data).n]),
        [[undefined, 17]],
      );
    } finally {
      emptyHeader.child.kill();
      emptyQuery.child.kill();
    }
  });

  it('says so in an event when Last-Event-ID is older than what the broker retains, and starts at the oldest retained', async () => {
    for (let n = 100; n < 125; n++) await publish(n);
    const c = curl(gw.url('api', '/ticks'), ['Last-Event-ID: 0:0']);
    await eventually(() => assert.equal(parseEvents(c.text()).length, 21));
    const [notice, ...events] = parseEvents(c.text());
    assert.equal(notice!.event, 'eventgate.resume');
    assert.equal(JSON.parse(notice!.data).gap, true);
    assert.deepEqual(
      events.map((e) => JSON.parse(e.data).n),
      Array.from({ length: 20 }, (_, i) => 105 + i),
    );
    c.child.kill();
  });

  it('names each route in the event ids of a path several routes forward to, and resumes every route after them', async () => {
    const tock = async (m: number) => {
      const res = await fetch(gw.url('api', '/tocks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ m }) });
      assert.equal(res.status, 200);
      return ((await res.json()) as { deliveries: { offset: string }[] }).deliveries[0]!.offset;
    };
    const c = curl(gw.url('api', '/mixed'));
    await eventually(() => assert.match(c.text(), /^retry: \d+/));
    const tick500 = await publish(500);
    const tock1 = await tock(1);
    await eventually(() => assert.equal(parseEvents(c.text()).length, 2));
    const seen = parseEvents(c.text());
    c.child.kill();
    // An offset of one topic could be read as one of the other: each route's positions are named.
    assert.deepEqual(
      seen.map((e) => untagged(e.id)),
      [`mixed-ticks=0:${tick500}`, `mixed-ticks=0:${tick500};${mixedTocks}=0:${tock1}`],
    );
    // Each with its source's tag: two topics, two tags.
    const [ticksTag, tocksTag] = splitId(seen[1]!.id).tags;
    assert.notEqual(ticksTag, tocksTag);
    assert.equal(splitId(seen[0]!.id).tags[0], ticksTag);

    // Missed while disconnected: two ticks and a tock, from two topics.
    await publish(501);
    await tock(2);
    const tick502 = await publish(502);
    const again = curl(gw.url('api', '/mixed'), [`Last-Event-ID: ${seen[1]!.id}`]);
    await eventually(() => assert.equal(parseEvents(again.text()).length, 3));
    await publish(503);
    await eventually(() => assert.equal(parseEvents(again.text()).length, 4));
    const resumed = parseEvents(again.text());
    again.child.kill();
    // Route by route, then live; each event once.
    assert.deepEqual(
      resumed.map((e) => JSON.parse(e.data)),
      [{ n: 501 }, { n: 502 }, { m: 2 }, { n: 503 }],
    );
    assert.equal(resumed[1]!.id, `mixed-ticks=${ticksTag}~0:${tick502};${mixedTocks}=${tocksTag}~0:${tock1}`);
    assert.equal(resumed[2]!.id, `mixed-ticks=${ticksTag}~0:${tick502};${mixedTocks}=${tocksTag}~0:${Number(tock1) + 1}`);

    // An id of the one-route form names no route of this path: said so, then live events.
    const stray = curl(gw.url('api', '/mixed'), ['Last-Event-ID: 0:3']);
    await eventually(() => assert.equal(parseEvents(stray.text()).length, 1));
    const [notice] = parseEvents(stray.text());
    assert.equal(notice!.event, 'eventgate.resume');
    assert.equal(JSON.parse(notice!.data).resumed, false);
    assert.match(JSON.parse(notice!.data).reason, /is not a position of this stream; streaming from now/);
    await publish(504);
    await eventually(() =>
      assert.deepEqual(
        parseEvents(stray.text())
          .slice(1)
          .map((e) => JSON.parse(e.data).n),
        [504],
      ),
    );
    stray.child.kill();

    // A tagged one-route id names its source: what /ticks sent for 502 (a page that copied it, or
    // what /mixed sent before a reload added its second route) resumes the route reading ticks
    // after it; the tocks route, which it does not name, from its oldest, as in a composite id.
    const copied = curl(gw.url('api', '/mixed'), [`Last-Event-ID: ${ticksTag}~0:${tick502}`]);
    await eventually(() => assert.equal(parseEvents(copied.text()).length, 4));
    const tick505 = await publish(505);
    await eventually(() => assert.equal(parseEvents(copied.text()).length, 5));
    const fromCopy = parseEvents(copied.text());
    copied.child.kill();
    assert.deepEqual(
      fromCopy.map((e) => JSON.parse(e.data)),
      [{ n: 503 }, { n: 504 }, { m: 1 }, { m: 2 }, { n: 505 }],
    );
    assert.equal(fromCopy[4]!.id, `mixed-ticks=${ticksTag}~0:${tick505};${mixedTocks}=${tocksTag}~0:${Number(tock1) + 1}`);
  });

  it('replays each route of a path in its own format, as it sent them live (a value and an envelope)', async () => {
    const tock = async (m: number) => {
      const res = await fetch(gw.url('api', '/tocks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ m }) });
      assert.equal(res.status, 200);
    };
    /** Each event as its route's format writes it: the value itself, or an envelope with the value inside. */
    const shapes = (events: { data: string }[]) =>
      events.map((e) => {
        const data = JSON.parse(e.data) as { topic?: string; value?: unknown };
        return data.topic === undefined ? ['value', data] : ['envelope', data.topic, data.value];
      });
    const live = await openStream(gw.url('api', '/formats'));
    let resumed: Awaited<ReturnType<typeof openStream>> | undefined;
    try {
      await publish(900);
      await eventually(() => assert.equal(live.events().length, 1));
      await tock(900);
      await eventually(() => assert.equal(live.events().length, 2));
      const seen = live.events()[1]!.id!;
      await publish(901);
      await eventually(() => assert.equal(live.events().length, 3));
      await tock(901);
      await eventually(() => assert.equal(live.events().length, 4));
      assert.deepEqual(shapes(live.events()), [
        ['value', { n: 900 }],
        ['envelope', 'tocks', { m: 900 }],
        ['value', { n: 901 }],
        ['envelope', 'tocks', { m: 901 }],
      ]);
      // Replayed route by route after the id both routes' positions are in: each in its route's format.
      // (One path-wide format, the last route's, wrote n 901 as an envelope.)
      resumed = await openStream(gw.url('api', '/formats'), { 'last-event-id': seen });
      await eventually(() => assert.equal(resumed!.events().length, 2));
      assert.deepEqual(
        shapes(resumed.events()).sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
        [
          ['envelope', 'tocks', { m: 901 }],
          ['value', { n: 901 }],
        ],
      );
    } finally {
      live.close();
      resumed?.close();
    }
  });

  it("fills a stream path's parameters from the message's own path parameters: a room per value, exactly (a/b is a room of its own), every room for a message without them", async () => {
    const paths = ['/rooms/a', '/rooms/a', '/rooms/b', '/rooms/a%2Fb'];
    const streams = await Promise.all(paths.map((p) => openStream(gw.url('api', p))));
    const say = async (path: string, body: unknown) => {
      const res = await fetch(gw.url('api', path), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal(res.status, 200);
      return ((await res.json()) as { deliveries: { clients: number }[] }).deliveries[0]!.clients;
    };
    // How many streams each reached, from its answer: its room's, and every room for the announcement.
    assert.deepEqual([await say('/say/a', { m: 1 }), await say('/say/b', { m: 2 }), await say('/say/a%2Fb', { m: 3 }), await say('/announce', { m: 4 })], [2, 1, 1, 4]);
    const expected = [
      [1, 4],
      [1, 4],
      [2, 4],
      [3, 4],
    ];
    await eventually(() =>
      assert.deepEqual(
        streams.map((s) => s.events().map((e) => JSON.parse(e.data).m)),
        expected,
      ),
    );
    for (const s of streams) s.close();
  });

  it('checks the target auth before streaming, and answers 406 without Accept: text/event-stream, to a client the auth admits only', async () => {
    let res = await fetch(gw.url('api', '/private'), { headers: { accept: 'text/event-stream' } });
    assert.equal(res.status, 401);
    res = await fetch(gw.url('api', '/ticks'));
    assert.equal(res.status, 406);
    assert.equal(((await res.json()) as { code: string }).code, 'EG_NOT_ACCEPTABLE');
    // A media range of quality 0 is one the client does not take (RFC 9110 §12.4.2); another type that only names it is no request for it.
    for (const accept of ['text/event-stream;q=0', 'text/html, text/event-stream; q=0.0', 'text/event-stream-x', '*/*']) {
      res = await fetch(gw.url('api', '/ticks'), { headers: { accept } });
      assert.equal(res.status, 406, accept);
      await res.text();
    }
    // With a quality above 0, among others, in any case: a stream.
    for (const accept of ['text/html;q=0.9, Text/Event-Stream; q=0.5', 'text/event-stream;charset=utf-8']) {
      const ac = new AbortController();
      res = await fetch(gw.url('api', '/ticks'), { headers: { accept }, signal: ac.signal });
      assert.equal(res.status, 200, accept);
      assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
      ac.abort();
    }
    // Authentication before content negotiation: a 406 would tell a client without credentials that the path streams.
    for (const method of ['GET', 'HEAD']) {
      for (const headers of [{}, { accept: 'application/json' }, { 'x-api-key': 'not-the-reader-key-0000' }] as Record<string, string>[]) {
        res = await fetch(gw.url('api', '/private'), { method, headers });
        assert.equal(res.status, 401, `${method} ${JSON.stringify(headers)}`);
        assert.equal(res.headers.get('allow'), null);
        if (method === 'GET') assert.doesNotMatch(await res.text(), /event stream|event-stream/);
      }
      res = await fetch(gw.url('api', '/private'), { method, headers: { 'x-api-key': 'reader-key-0123456789' } });
      assert.equal(res.status, 406, method);
      assert.equal(res.headers.get('allow'), 'GET, HEAD');
      if (method === 'GET') assert.equal(((await res.json()) as { code: string }).code, 'EG_NOT_ACCEPTABLE');
    }
    const c = curl(gw.url('api', '/private'), ['x-api-key: reader-key-0123456789']);
    await eventually(() => assert.match(c.text(), /^retry:/));
    await publish(200);
    await eventually(() =>
      assert.deepEqual(
        parseEvents(c.text()).map((e) => JSON.parse(e.data).n),
        [200],
      ),
    );
    c.child.kill();
  });

  it('answers 405 with Allow for another method on an event stream path, which exists (to a client its auth admits), and HEAD as GET without opening a stream', async () => {
    for (const method of ['POST', 'PUT', 'DELETE']) {
      // /mixed is only a stream; /ticks is a stream and a publish path.
      let res = await fetch(gw.url('api', '/mixed'), { method, headers: { 'content-type': 'application/json' }, body: '{"n":1}' });
      assert.equal(res.status, 405, `${method} /mixed`);
      assert.equal(res.headers.get('allow'), 'GET, HEAD');
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      assert.equal(((await res.json()) as { code: string }).code, 'EG_METHOD_NOT_ALLOWED');
      if (method === 'POST') continue;
      res = await fetch(gw.url('api', '/ticks'), { method });
      assert.equal(res.status, 405, `${method} /ticks`);
      assert.equal(res.headers.get('allow'), 'GET, HEAD, POST');
      await res.body?.cancel();
    }
    // Behind the target's auth, the 405 (which says the path streams) is told only to a client the auth admits.
    for (const method of ['POST', 'DELETE']) {
      let res = await fetch(gw.url('api', '/private'), { method, headers: { 'content-type': 'application/json' }, body: '{"n":1}' });
      assert.equal(res.status, 401, `${method} /private without the key`);
      assert.equal(res.headers.get('allow'), null);
      assert.doesNotMatch(await res.text(), /event stream/);
      res = await fetch(gw.url('api', '/private'), { method, headers: { 'content-type': 'application/json', 'x-api-key': 'reader-key-0123456789' }, body: '{"n":1}' });
      assert.equal(res.status, 405, `${method} /private with the key`);
      assert.equal(res.headers.get('allow'), 'GET, HEAD');
      await res.body?.cancel();
    }
    // HEAD is GET without the body (RFC 9110 §9.3.2): a monitor checks the path and its auth.
    let head = await fetch(gw.url('api', '/ticks'), { method: 'HEAD', headers: { accept: 'text/event-stream' } });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    assert.equal(await head.text(), '');
    head = await fetch(gw.url('api', '/private'), { method: 'HEAD', headers: { accept: 'text/event-stream' } });
    assert.equal(head.status, 401);
    head = await fetch(gw.url('api', '/private'), { method: 'HEAD', headers: { accept: 'text/event-stream', 'x-api-key': 'reader-key-0123456789' } });
    assert.equal(head.status, 200);
    head = await fetch(gw.url('api', '/mixed'), { method: 'HEAD' });
    assert.equal(head.status, 406);
    assert.equal(head.headers.get('allow'), 'GET, HEAD');
  });

  it("replays what a client missed at the pace it reads, with events.maxBufferedBytes below the stream's 16 KiB high-water mark too", async () => {
    const pad = 'x'.repeat(1500);
    const offsets: string[] = [];
    for (let n = 0; n < 12; n++) {
      const res = await fetch(gw.url('api', '/tocks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, pad }) });
      offsets.push(((await res.json()) as { deliveries: { offset: string }[] }).deliveries[0]!.offset);
    }
    // 11 events of 1.5 KB after this id: past the 2 KB bound, which cut the client off before a byte left.
    const stream = await openStream(gw.url('small', '/tocks'), { 'last-event-id': `0:${offsets[0]}` });
    try {
      await eventually(() => assert.equal(stream.events().length, 11), 10_000);
      assert.deepEqual(
        stream.events().map((e) => JSON.parse(e.data).n),
        Array.from({ length: 11 }, (_, i) => i + 1),
      );
    } finally {
      stream.close();
    }
  });

  it('cuts off a client that does not read, and frees what was buffered for it', async () => {
    const socket = await stalledReader(gw.port('api'), '/ticks');
    const closed = once(socket, 'close');
    const big = 'x'.repeat(60_000);
    // Loopback socket buffers take megabytes before the gateway's own buffer grows.
    for (let i = 0; i < 400 && socket.readyState !== 'closed' && !socket.destroyed; i++) {
      await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n: 1000 + i, big }) });
      const listeners = (await gw.status()).listeners as { name: string; slowStreamsClosed?: number }[];
      if (listeners.find((l) => l.name === 'api')!.slowStreamsClosed! > 0) break;
    }
    socket.resume();
    await closed;
    const listeners = (await gw.status()).listeners as { name: string; slowStreamsClosed?: number }[];
    assert.equal(listeners.find((l) => l.name === 'api')!.slowStreamsClosed, 1);
    // Where an operator's alert can see it, per listener (each series there from the start).
    const metrics = await scrape(gw.adminUrl);
    assert.equal(metrics.value('eventgate_slow_clients_disconnected_total', { listener: 'api' }), 1);
    assert.equal(metrics.value('eventgate_slow_clients_disconnected_total', { listener: 'small' }), 0);
    // And in the same counters as JSON (/admin/stats), which had none of a listener's but its answers.
    const stats = (await (await fetch(`${gw.adminUrl}/admin/stats`)).json()) as { listeners: Record<string, { slowClientsDisconnected?: number }> };
    assert.equal(stats.listeners.api!.slowClientsDisconnected, 1);
    assert.equal(stats.listeners.small!.slowClientsDisconnected, 0);
  });

  it('publishes nothing a client pipelines behind its stream request, says Connection: close, and keeps streaming to it', async () => {
    const watcher = await rawStream(gw.port('api'), '/ticks');
    const socket = connect(gw.port('api'), '127.0.0.1');
    await once(socket, 'connect');
    let raw = '';
    socket.setEncoding('latin1').on('data', (c: string) => (raw += c));
    // 16: as many as the gateway holds behind a stream before it closes the connection.
    socket.write(streamRequest('/ticks') + Array.from({ length: 16 }, (_, i) => publishRequest('/ticks', { n: 700 + i })).join(''));
    await eventually(() => assert.match(raw, /retry: \d+\n\n/));
    await publish(799);
    const seen = (text: string) => httpChunks(text).flatMap((c) => parseEvents(c).map((e) => JSON.parse(e.data).n as number));
    await eventually(() => assert.ok(seen(raw).includes(799) && seen(watcher.raw()).includes(799)));
    // Published, 700-715 would have reached both streams before 799.
    assert.deepEqual(seen(watcher.raw()), [799]);
    assert.deepEqual(seen(raw), [799]);
    // The stream is the connection's last answer, and says so: the client sends the POSTs again elsewhere.
    assert.match(raw.slice(0, raw.indexOf('\r\n\r\n')), /\r\nconnection: close\r\n/i);
    assert.ok(!socket.destroyed);
    socket.destroy();
    watcher.socket.destroy();
  });

  it('closes a connection that pipelines more than a few requests behind its stream request, publishing none of them', async () => {
    const watcher = await rawStream(gw.port('api'), '/ticks');
    const socket = connect(gw.port('api'), '127.0.0.1');
    await once(socket, 'connect');
    let raw = '';
    socket.setEncoding('latin1').on('data', (c: string) => (raw += c));
    // The gateway closes the connection with requests unread: the client may see a reset (and once() would reject on it).
    socket.on('error', noop);
    let closed = false;
    socket.on('close', () => (closed = true));
    // The first with a 256 KiB body, which is not read either: left unread, it made node stop reading
    // the connection, so the requests behind it were never counted.
    const big = publishRequest('/ticks', { n: 1999, pad: 'p'.repeat(256 * 1024) });
    socket.write(streamRequest('/ticks') + big + Array.from({ length: 2000 }, (_, i) => publishRequest('/ticks', { n: 2000 + i })).join(''));
    // Held instead, each would be a request and a response of node's for as long as the stream lasts.
    await eventually(() => assert.ok(closed, 'the gateway closed the connection'), 10000);
    await publish(4000);
    const seen = () => httpChunks(watcher.raw()).flatMap((c) => parseEvents(c).map((e) => JSON.parse(e.data).n as number));
    await eventually(() => assert.ok(seen().includes(4000)));
    assert.deepEqual(seen(), [4000]);
    watcher.socket.destroy();
  });

  it('writes the events of one turn to a client in one write (one HTTP chunk), in order, each with its own id', async () => {
    const { socket, raw } = await rawStream(gw.port('api'), '/ticks');
    // A CloudEvents batch: its events are published one after another within one turn.
    const ce = (n: number) => ({ specversion: '1.0', id: `batch-${n}`, source: '/test', type: 'tick', data: { n } });
    const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body: JSON.stringify([400, 401, 402, 403].map(ce)) });
    assert.equal(res.status, 200);
    const offsets = ((await res.json()) as { deliveries: { offset: string }[] }).deliveries.map((d) => d.offset);
    const chunksWith = () => httpChunks(raw()).filter((c) => c.includes('"n":40'));
    await eventually(() =>
      assert.equal(
        chunksWith().reduce((n, c) => n + parseEvents(c).length, 0),
        4,
      ),
    );
    socket.destroy();
    const [chunk, ...others] = chunksWith();
    assert.equal(others.length, 0, 'one chunk');
    const events = parseEvents(chunk!);
    assert.deepEqual(
      events.map((e) => [untagged(e.id), e.event, JSON.parse(e.data).n]),
      offsets.map((o, i) => [`0:${o}`, 'tick', 400 + i]),
    );
  });

  it('keeps a client that reads through one turn that brings it more than maxBufferedBytes: the bound is on what earlier turns left unread', async () => {
    const slowClosed = async () => ((await gw.status()).listeners as { name: string; slowStreamsClosed: number }[]).find((l) => l.name === 'api')!.slowStreamsClosed;
    const closedBefore = await slowClosed();
    const { socket, raw } = await rawStream(gw.port('api'), '/ticks');
    // 16 events of 5 KB in one CloudEvents batch (the topic retains 20): published within one turn, 80 KB against a 64 KiB bound.
    const pad = 'p'.repeat(5000);
    const ce = (n: number) => ({ specversion: '1.0', id: `burst-${n}`, source: '/test', type: 'tick', data: { n, pad } });
    const res = await fetch(gw.url('api', '/ticks'), {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify(Array.from({ length: 16 }, (_, i) => ce(500 + i))),
    });
    assert.equal(res.status, 200);
    const burst = () =>
      httpChunks(raw())
        .flatMap((c) => parseEvents(c).map((e) => JSON.parse(e.data).n as number))
        .filter((n) => n >= 500 && n < 516);
    await eventually(() => assert.equal(burst().length, 16));
    assert.deepEqual(
      burst(),
      Array.from({ length: 16 }, (_, i) => 500 + i),
    );
    // Still connected: the next event arrives too.
    await publish(541);
    await eventually(() => assert.ok(httpChunks(raw()).some((c) => parseEvents(c).some((e) => JSON.parse(e.data).n === 541))));
    assert.equal(await slowClosed(), closedBefore);
    socket.destroy();
  });

  it('keeps streams of unchanged routes open through a reload, and counts clients in the metrics', async () => {
    const c = curl(gw.url('api', '/ticks'));
    await eventually(() => assert.match(c.text(), /^retry:/));
    // Clients of the earlier tests are gone once the gateway saw their connections close.
    await eventually(async () => assert.match(await (await fetch(`${gw.adminUrl}/metrics`)).text(), /eventgate_event_stream_clients\{listener="api"\} 1\n/));
    // And where they are, in /admin/status (as a websocket listener's `paths`; a room path counts all its rooms).
    const room = curl(gw.url('api', '/rooms/a'));
    const status = async () => ((await gw.status()).listeners as { name: string; eventStreams: number; eventStreamPaths: Record<string, number> }[]).find((l) => l.name === 'api')!;
    try {
      await eventually(async () => {
        const { eventStreams, eventStreamPaths } = await status();
        assert.deepEqual([eventStreams, eventStreamPaths], [2, { '/ticks': 1, '/rooms/:room': 1 }]);
      });
    } catch (err) {
      c.child.kill();
      throw err;
    } finally {
      room.child.kill();
    }
    const line = await gw.reconfigure(
      config(`  - name: unrelated
    from: { listener: api, path: /other }
    to: { broker: local, topic: other }
`),
    );
    assert.equal(line.msg, 'config reloaded');
    await publish(300);
    await eventually(() =>
      assert.deepEqual(
        parseEvents(c.text()).map((e) => JSON.parse(e.data).n),
        [300],
      ),
    );
    assert.equal(c.child.exitCode, null);
    c.child.kill();
  });

  it('tells open streams a retryMs a reload changes (a retry: field alone, between events), as it tells new ones', async () => {
    const c = curl(gw.url('api', '/ticks'));
    const fresh = { child: undefined as ChildProcess | undefined };
    try {
      await eventually(() => assert.match(c.text(), /^retry: 2000\n\n/));
      await publish(310);
      await eventually(() => assert.equal(parseEvents(c.text()).length, 1));
      const line = await gw.reconfigure(config().replace('heartbeatMs: 200,', 'heartbeatMs: 200, retryMs: 4321,'));
      assert.equal(line.msg, 'config reloaded');
      await publish(311);
      // The stream is the one opened before the reload: the field came between its two events (heartbeats aside).
      await eventually(() => assert.match(c.text().replaceAll(': heartbeat\n\n', ''), /\ndata: \{"n":310\}\n\nretry: 4321\n\nid: [^\n]+\ndata: \{"n":311\}\n\n$/));
      assert.equal(c.child.exitCode, null);
      const opened = curl(gw.url('api', '/ticks'));
      fresh.child = opened.child;
      await eventually(() => assert.match(opened.text(), /^retry: 4321\n\n/));
    } finally {
      c.child.kill();
      fresh.child?.kill();
      assert.equal((await gw.reconfigure(config())).msg, 'config reloaded');
    }
  });

  it('resumes a composite id after a reload renamed one of its routes (by its source) or removed one, and names the route left out', async () => {
    const c = curl(gw.url('api', '/mixed'));
    await eventually(() => assert.match(c.text(), /^retry: \d+/));
    await publish(600);
    await eventually(() => assert.equal(parseEvents(c.text()).length, 1));
    const [seen] = parseEvents(c.text());
    c.child.kill();
    assert.match(untagged(seen!.id), new RegExp(`^mixed-ticks=0:\\d+;${mixedTocks}=0:\\d+$`));
    const tocksPosition = untagged(seen!.id).split(';')[1];

    // A reload renames mixed-ticks: the route reading ticks now takes the positions the id gives
    // the renamed one (same source, same tag), rather than replaying ticks from the oldest.
    const renamed = config().replace('- name: mixed-ticks\n', '- name: mixed-ticks-renamed\n');
    assert.equal((await gw.reconfigure(renamed)).msg, 'config reloaded');
    const tick601 = await publish(601);
    const moved = curl(gw.url('api', '/mixed'), [`Last-Event-ID: ${seen!.id}`]);
    await eventually(() => assert.equal(parseEvents(moved.text()).length, 1));
    await publish(602);
    await eventually(() => assert.equal(parseEvents(moved.text()).length, 2));
    const afterRename = parseEvents(moved.text());
    moved.child.kill();
    assert.deepEqual(
      afterRename.map((e) => JSON.parse(e.data).n),
      [601, 602],
    );
    assert.equal(untagged(afterRename[0]!.id), `mixed-ticks-renamed=0:${tick601};${tocksPosition}`);

    // The long-named tocks route is removed: /mixed is fed by the ticks route alone, whose ids carry no route names.
    const line = await gw.reconfigure(renamed.replace(mixedTocksRoute, ''));
    assert.equal(line.msg, 'config reloaded');
    const tick603 = await publish(603);
    const again = curl(gw.url('api', '/mixed'), [`Last-Event-ID: ${afterRename[1]!.id}`]);
    await eventually(() => assert.equal(parseEvents(again.text()).length, 2));
    await publish(604);
    await eventually(() => assert.equal(parseEvents(again.text()).length, 3));
    const [notice, ...events] = parseEvents(again.text());
    again.child.kill();
    assert.equal(notice!.event, 'eventgate.resume');
    assert.deepEqual(JSON.parse(notice!.data), { resumed: true, reason: `no longer feeding this stream, left out: ${mixedTocks}` });
    // After the id's position, each once, then live; ids in the one-route form again.
    assert.deepEqual(
      events.map((e) => JSON.parse(e.data).n),
      [603, 604],
    );
    assert.equal(events[0]!.id, `${splitId(seen!.id).tags[0]}~0:${tick603}`);
  });

  it("reads an id of the topic a reload moved a route from as another source's: from the oldest retained event, said so, alone and in a composite id; an id without a tag as before", async () => {
    // `compass` reads north, then a reload moves it to south; /compass-mixed is fed by it and by ticks.
    const compass = (topic: string) => `
  - name: publish-north
    from: { listener: api, path: /north }
    to: { broker: local, topic: north }
  - name: publish-south
    from: { listener: api, path: /south }
    to: { broker: local, topic: south }
  - name: compass
    from: { broker: local, topic: ${topic} }
    to: [{ listener: api, path: /compass }, { listener: api, path: /compass-mixed }]
  - name: compass-ticks
    from: { broker: local, topic: ticks }
    to: { listener: api, path: /compass-mixed }
`;
    const send = async (path: string, n: number) =>
      assert.equal((await fetch(gw.url('api', path), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) })).status, 200);
    const ns = (events: { data: string }[]) => events.map((e) => JSON.parse(e.data).n);
    assert.equal((await gw.reconfigure(config(compass('north')))).msg, 'config reloaded');
    const streams = [await openStream(gw.url('api', '/compass')), await openStream(gw.url('api', '/compass-mixed'))];
    const [one, mixed] = streams as [(typeof streams)[0], (typeof streams)[0]];
    let northId: string;
    let mixedId: string;
    let tick: string;
    let ticksTag: string;
    let southTag: string;
    try {
      for (const n of [1, 2, 3]) await send('/north', n);
      tick = await publish(700);
      await eventually(() =>
        assert.deepEqual(
          [ns(one.events()), ns(mixed.events())],
          [
            [1, 2, 3],
            [1, 2, 3, 700],
          ],
        ),
      );
      northId = one.events()[2]!.id!;
      mixedId = mixed.events()[3]!.id!;
      const [northTag] = splitId(northId).tags;
      ticksTag = splitId(mixedId).tags[1]!;
      assert.equal(untagged(northId), '0:2');
      assert.equal(untagged(mixedId), `compass=0:2;compass-ticks=0:${tick}`);

      // Six events on south: more than the old id's offset, which was read as a position of south
      // (its events 0..2 skipped without a word, 1331).
      assert.equal((await gw.reconfigure(config(compass('south')))).msg, 'config reloaded');
      for (const n of [11, 12, 13, 14, 15, 16]) await send('/south', n);
      // A stream open across the reload: ids of south's positions alone, with its tag.
      await eventually(() => assert.deepEqual(ns(one.events()), [1, 2, 3, 11, 12, 13, 14, 15, 16]));
      southTag = splitId(one.events()[3]!.id).tags[0]!;
      assert.notEqual(southTag, northTag);
      assert.deepEqual(
        one
          .events()
          .slice(3)
          .map((e) => e.id),
        [0, 1, 2, 3, 4, 5].map((o) => `${southTag}~0:${o}`),
      );
      await eventually(() => assert.equal(mixed.events().at(-1)!.id, `compass=${southTag}~0:5;compass-ticks=${ticksTag}~0:${tick}`));
    } finally {
      for (const s of streams) s.close();
    }
    const resumes = [
      await openStream(gw.url('api', '/compass'), { 'last-event-id': northId }),
      await openStream(gw.url('api', '/compass'), { 'last-event-id': untagged(northId) }),
      await openStream(gw.url('api', '/compass-mixed'), { 'last-event-id': mixedId }),
    ];
    try {
      // Sent after the replays began: each stream's next events, after what it is replayed.
      await send('/south', 17);
      await publish(701);
      const seen = (i: number) => resumes[i]!.events().map((e) => (e.event === undefined ? [e.id, JSON.parse(e.data).n] : [e.event, JSON.parse(e.data)]));
      const south = (offsets: number[], id = (o: number) => `${southTag}~0:${o}`) => offsets.map((o) => [id(o), o + 11]);
      await eventually(() => {
        // An id of north on a route that reads south: south from its oldest event, said so.
        assert.deepEqual(seen(0), [['eventgate.resume', { resumed: true, gap: true, reason: OTHER_SOURCE_REASON }], ...south([0, 1, 2, 3, 4, 5, 6])]);
        // An id without a tag (a client's from before tags) is read as a position of south, as it always was.
        assert.deepEqual(seen(1), south([3, 4, 5, 6]));
        // In a composite id, per route: compass from south's oldest event, ticks after the id's position.
        assert.deepEqual(seen(2), [
          ['eventgate.resume', { resumed: true, gap: true, reason: `route compass: ${OTHER_SOURCE_REASON}` }],
          ...south([0, 1, 2, 3, 4, 5, 6], (o) => `compass=${southTag}~0:${o};compass-ticks=${ticksTag}~0:${tick}`),
          [`compass=${southTag}~0:6;compass-ticks=${ticksTag}~0:${Number(tick) + 1}`, 701],
        ]);
      });
    } finally {
      for (const s of resumes) s.close();
    }
  });

  it('ends the open streams of a path a reload removes (a browser reconnecting then gets 404), and keeps the others, those of a path whose parameter it renames too', async () => {
    const removed = curl(gw.url('api', '/mixed'));
    const kept = curl(gw.url('api', '/ticks'));
    const room = curl(gw.url('api', '/rooms/a'));
    await eventually(() => assert.match(removed.text(), /^retry: \d+/));
    await eventually(() => assert.match(kept.text(), /^retry: \d+/));
    await eventually(() => assert.match(room.text(), /^retry: \d+/));
    const ended = once(removed.child, 'exit');

    const line = await gw.reconfigure(
      config()
        .replace(/ {2}- name: mixed-ticks\n( {4}.*\n){2}/, '')
        .replace(mixedTocksRoute, '')
        // `/rooms/:r` serves every URL `/rooms/:room` did: its streams go on, not told 404.
        .replace(/:room\b/g, ':r'),
    );
    assert.equal(line.msg, 'config reloaded');
    const [code] = await ended;
    assert.equal(code, 0, 'the response ended cleanly, as an event stream the server closes');
    // Its last event says why, which a page's EventSource cannot learn from the 404 of its reconnect.
    assert.deepEqual(
      parseEvents(removed.text())
        .filter((e) => e.event === 'eventgate.end')
        .map((e) => JSON.parse(e.data)),
      [{ status: 404, reason: 'no route forwards to /mixed any more (a reload removed it)' }],
    );
    assert.equal(parseEvents(kept.text()).filter((e) => e.event === 'eventgate.end').length, 0);
    const again = await fetch(gw.url('api', '/mixed'), { headers: { accept: 'text/event-stream' } });
    assert.equal(again.status, 404);
    assert.equal(again.headers.get('content-type'), 'application/problem+json');
    await again.body?.cancel();

    await publish(700);
    await eventually(() => assert.ok(parseEvents(kept.text()).some((e) => JSON.parse(e.data).n === 700)));
    assert.equal(kept.child.exitCode, null);
    kept.child.kill();

    const said = await fetch(gw.url('api', '/say/a'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"m":5}' });
    assert.deepEqual(((await said.json()) as { deliveries: { clients: number }[] }).deliveries[0]!.clients, 1);
    await eventually(() =>
      assert.deepEqual(
        parseEvents(room.text()).map((e) => [e.event, e.data]),
        [[undefined, '{"m":5}']],
      ),
    );
    room.child.kill();
    // Gone from the path it was moved to, once closed.
    await eventually(async () => assert.match(await (await fetch(`${gw.adminUrl}/metrics`)).text(), /eventgate_event_stream_clients\{listener="api"\} 0\n/));
  });
});

describe('Server-Sent Events when a reload removes the http listener', () => {
  const config = (withApi: boolean) => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
${withApi ? '  api: { kind: http, port: 0, host: 127.0.0.1 }\n' : ''}  other: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: publish
    from: { listener: other, path: /ticks }
    to: { broker: local, topic: ticks }
${withApi ? '  - name: stream\n    from: { broker: local, topic: ticks }\n    to: { listener: api, path: /ticks }\n' : ''}`;
  const gw = useGateway(config(true));

  it('ends its open streams cleanly once the listener stops, after what was published before reached them; the other listener goes on', async () => {
    const port = gw.port('api');
    const stream = curl(gw.url('api', '/ticks'));
    await eventually(() => assert.match(stream.text(), /^retry: \d+/));
    assert.equal((await fetch(gw.url('other', '/ticks'), { method: 'POST', body: '{"n": 1}', headers: { 'content-type': 'application/json' } })).status, 200);
    await eventually(() =>
      assert.deepEqual(
        parseEvents(stream.text()).map((e) => JSON.parse(e.data)),
        [{ n: 1 }],
      ),
    );
    // A browser that streamed from another instance (the same memory broker and topic names)
    // reconnects here with its last id, `0:0` there too: offsets of that broker's life, not of
    // this one's. Read as positions here, it skipped n 1 without a word. A broker's life is random,
    // so that instance's tag is another than this one's (unit/memory-broker: another life, another
    // identity); the id is this gateway's own first with another tag.
    const [mine] = parseEvents(stream.text());
    const {
      tags: [tag],
      positions,
    } = splitId(mine!.id);
    assert.equal(positions, '0:0', "n 1 is this broker's first event");
    const otherTag = tag === 'AAAA' ? 'BBBB' : 'AAAA';
    const elsewhere = curl(gw.url('api', '/ticks'), [`Last-Event-ID: ${otherTag}~0:0`]);
    await eventually(() => assert.equal(parseEvents(elsewhere.text()).length, 2));
    elsewhere.child.kill();
    const [notice, replayed] = parseEvents(elsewhere.text());
    assertOtherSourceNotice(notice);
    assert.deepEqual(JSON.parse(replayed!.data), { n: 1 });
    assert.equal(replayed!.id, mine!.id, 'the replayed event carries the id this instance gave it');
    const ended = once(stream.child, 'exit');

    const line = await gw.reconfigure(config(false));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    const [code] = await ended;
    assert.equal(code, 0, 'the response ended cleanly, as an event stream the server closes');
    await assert.rejects(fetch(`http://127.0.0.1:${port}/ticks`, { headers: { accept: 'text/event-stream' } }));
    assert.equal((await fetch(gw.url('other', '/ticks'), { method: 'POST', body: '{"n": 2}', headers: { 'content-type': 'application/json' } })).status, 200);
  });
});
