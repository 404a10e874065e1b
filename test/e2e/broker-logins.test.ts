import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { nkeys } from 'nats';
import { post } from '../helpers/clients.js';
import { afterGateways, eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { RawNats } from '../helpers/peers.js';
import { tempDir } from '../helpers/reaper.js';
import { startMosquittoWithUsers, startNatsWithUsers, type RabbitServer, type ServerWithUsers } from '../helpers/servers.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A server that refuses the gateway's login — a wrong password at start, or credentials changed
 * on the server while it was away — is a fault the operator puts right on the server's side. The
 * gateway must say why it is not ready (log, /readyz, the 503's detail), keep trying, and connect
 * and consume by itself once the server takes the login again: mqtt.js stopped reconnecting after
 * a refused CONNACK, and nats.js gave up on a refused first connect, and closed the connection
 * for good after two refused logins on reconnect.
 */
const PROBE = { probe: 'probe-password' };

async function refusedThenAccepted(
  gw: ReturnType<typeof useGateway>,
  server: ServerWithUsers,
  hook: WebhookReceiver,
  refusal: { broker: string; log: string; err: RegExp },
  publish: (n: number) => Promise<void>,
): Promise<void> {
  // 1. Refused at start: said, not ready, publishes 503 with the reason.
  const failed = await gw.waitForLog((l) => l.msg === refusal.log && refusal.err.test(String(l.err)), 15000);
  assert.equal(failed.level, 'warn');
  // /readyz names the state, not the network: a refused login is not an unreachable server.
  const probe = await readyz(gw);
  assert.equal(probe.status, 503);
  assert.ok(probe.body.reasons.includes(`broker ${refusal.broker}: login refused`), JSON.stringify(probe.body));
  const refused = await post(gw.url('api', '/out'), { n: 0 });
  assert.equal(refused.status, 503, refused.text);
  assert.match(refused.body.detail, refusal.err);
  assert.match(refused.body.detail, /login refused/);

  // 2. The server takes the login: ready and consuming, with no reload.
  await server.setUsers({ ...PROBE, gateway: 'right' });
  await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
  await publish(1);
  const [first] = await hook.received(1, 15000);
  assert.deepEqual(JSON.parse(first!.body), { n: 1 });

  // 3. The server comes back from a restart refusing the login: lost, refused again and again ...
  const from = gw.logs.length;
  await server.down();
  await server.setUsers({ ...PROBE, gateway: 'old' });
  await server.up();
  await gw.waitForLog((l) => refusal.err.test(String(l.err)), 15000, from);
  // ... for several reconnect attempts (nats.js gave up after the second) ...
  await new Promise((r) => setTimeout(r, 1500));
  const again = await readyz(gw);
  assert.equal(again.status, 503);
  assert.ok(again.body.reasons.includes(`broker ${refusal.broker}: login refused`), JSON.stringify(again.body));

  // 4. ... until the server takes it again: ready, publishing and consuming.
  await server.setUsers({ ...PROBE, gateway: 'right' });
  await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
  await publish(2);
  // A server restart may deliver n: 1 again (acknowledged just before it stopped: docs/scaling.md); n: 2 must come.
  await eventually(
    () =>
      assert.ok(
        hook.requests.some((r) => JSON.parse(r.body).n === 2),
        JSON.stringify(hook.requests.map((r) => r.body)),
      ),
    15000,
    50,
  );
}

describe('kind: mqtt, a server that refuses the login', () => {
  let mqtt: ServerWithUsers;
  let hook: WebhookReceiver;
  before(async () => {
    mqtt = await startMosquittoWithUsers({ ...PROBE, gateway: 'old' });
    hook = await WebhookReceiver.start();
  });
  after(async () => {
    await hook?.stop();
    await mqtt?.stop();
  });
  const config = (more = '') => `
version: 1
admin: { port: 0 }
brokers:
  mq: { kind: mqtt, url: ${mqtt.url}, clientId: eg-login-${process.pid}, username: gateway, password: right, reconnectPeriodMs: 100 }
${more}
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: mq, topic: logins/out } }
  - { name: in, from: { broker: mq, topic: logins/# }, to: { http: { url: "${hook.url}/in" } } }
${more && '  - { name: url, from: { listener: api, path: /url }, to: { broker: mu, topic: logins/url } }'}
`;
  const gw = useGateway(() => config());

  it('says why, keeps trying, and publishes and consumes once the server takes the login, at start and after a restart', async () => {
    await refusedThenAccepted(gw, mqtt, hook, { broker: 'mq', log: 'mqtt connect failed; retrying', err: /Not authorized/ }, async (n) => {
      const reply = await post(gw.url('api', '/out'), { n });
      assert.equal(reply.status, 200, reply.text);
    });
  });

  // mqtt.js decoded the URL's `user:password` whole and split it at its last `:`: a password with
  // an encoded `:` (as the url key says to write it) logged in as user `colon:pa`, password `ss`.
  it('logs in with the credentials of the URL, percent-decoded, a password holding `:` whole', async () => {
    await mqtt.setUsers({ ...PROBE, gateway: 'right', colon: 'pa:ss/@' });
    await gw.reconfigure(config(`  mu: { kind: mqtt, url: "mqtt://colon:pa%3Ass%2F%40@${mqtt.host}:${mqtt.port}", clientId: eg-login-url-${process.pid}, reconnectPeriodMs: 100 }`), undefined, {
      whole: true,
    });
    await eventually(async () => assert.deepEqual((await readyz(gw)).body, { status: 'ready' }), 15000, 100);
    const reply = await post(gw.url('api', '/url'), { n: 3 });
    assert.equal(reply.status, 200, reply.text);
  });
});

describe('kind: nats, a server that refuses the login', () => {
  let nats: ServerWithUsers;
  let hook: WebhookReceiver;
  before(async () => {
    nats = await startNatsWithUsers({ ...PROBE, gateway: 'old' });
    hook = await WebhookReceiver.start();
  });
  afterGateways(async () => {
    await hook?.stop();
    await nats?.stop();
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  nt:
    kind: nats
    servers: ${nats.url}
    user: gateway
    password: right
    reconnectTimeWaitMs: 100
    streams: { LOGINS: { subjects: ["logins.>"] } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: nt, topic: logins.out } }
  - { name: in, from: { broker: nt, topic: "logins.*" }, to: { http: { url: "${hook.url}/in" } } }
`,
  );

  it('says why, keeps trying, and publishes and consumes once the server takes the login, at start and after a restart', async () => {
    await refusedThenAccepted(gw, nats, hook, { broker: 'nt', log: 'nats connect failed; retrying', err: /Authorization[ _]Violation/i }, async (n) => {
      const reply = await post(gw.url('api', '/out'), { n });
      assert.equal(reply.status, 200, reply.text);
      assert.match(reply.body.deliveries[0].offset, /^\d+$/, 'stored in the stream');
    });
  });
});

/**
 * A server whose `authorization` lists the gateway's user by its NKey (`{ nkey: U... }`): the
 * broker signs the server's nonce with the seed of its `nkeyFile`. Before, the kind had no such
 * option (only user/password and token), so such a server could not be used at all.
 */
describe('kind: nats, a login by NKey', () => {
  let nats: ServerWithUsers;
  const dir = tempDir('eventgate-nkeys');
  const known = nkeys.createUser();
  const unknown = nkeys.createUser();
  const seedFile = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };
  const files = {
    known: seedFile('known.nk', `${new TextDecoder().decode(known.getSeed())}\n`),
    unknown: seedFile('unknown.nk', new TextDecoder().decode(unknown.getSeed())),
    none: seedFile('none.nk', `${known.getPublicKey()}\n`),
  };
  before(async () => {
    nats = await startNatsWithUsers(PROBE, [], { nkeys: [known.getPublicKey()] });
  });
  afterGateways(() => nats?.stop());
  const config = (login: string) => `
version: 1
admin: { port: 0 }
brokers:
  nt:
    kind: nats
    servers: ${nats.url}
    ${login}
    reconnectTimeWaitMs: 100
    streams: { NKEYS: { subjects: ["nkeys.>"] } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: nt, topic: nkeys.out } }
`;
  const gw = useGateway(() => config(`nkeyFile: ${files.known}`));

  it('logs in with the seed of nkeyFile; a reload to a seed the server does not know, or a file with none, is rejected and the running broker serves on', async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    const reply = await post(gw.url('api', '/out'), { n: 1 });
    assert.equal(reply.status, 200, reply.text);
    const peer = await RawNats.connect(nats, { user: 'probe', pass: PROBE.probe });
    try {
      assert.equal((await peer.storedMessage('NKEYS', Number(reply.body.deliveries[0].offset)))?.data, '{"n":1}');
    } finally {
      peer.close();
    }
    // The test's own raw client: a refused login rejects its connect (the server's -ERR), not an uncaught throw.
    await assert.rejects(RawNats.connect(nats, { user: 'probe', pass: 'wrong' }), /NATS server: -ERR 'Authorization Violation'/);
    const refusedWith = async (login: string, words: RegExp) => {
      const reload = await gw.reconfigure(config(login), undefined, { whole: true });
      assert.match(reload.msg, /^reload rejected/, JSON.stringify(reload));
      assert.match(String(reload.diagnostic), words);
      const after = await post(gw.url('api', '/out'), { n: 2 });
      assert.equal(after.status, 200, after.text);
    };
    await refusedWith(`nkeyFile: ${files.unknown}`, /could not start broker 'nt': .*login refused: 'Authorization Violation'/);
    await refusedWith(`nkeyFile: ${files.none}`, /gateway\.yaml:8:\d+: '[^']*none\.nk' holds no user NKey seed/);
    await refusedWith(`nkeyFile: ${files.known}\n    user: probe\n    password: x`, /nkeyFile is a login of its own: leave out 'user' and 'password'/);
  });
});

describe('kind: amqp, a server that refuses the login', () => {
  let rabbit: RabbitServer;
  let hook: WebhookReceiver;
  const user = `eg-login-${process.pid}`;
  before(async () => {
    rabbit = await sharedRabbit();
    await rabbit.admin.addUser(user, 'old');
    await rabbit.admin.setPermissions(rabbit.vhost, user, '.*', '.*', '.*');
    hook = await WebhookReceiver.start();
  });
  after(async () => {
    await hook?.stop();
    await rabbit?.stop();
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  rb:
    kind: amqp
    url: amqp://${user}:right@${rabbit.host}:${rabbit.port}/${encodeURIComponent(rabbit.vhost)}
    queues: { logins: { bindings: ["logins.#"] } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: rb, topic: logins.out } }
  - { name: in, from: { broker: rb, topic: logins }, to: { http: { url: "${hook.url}/in" } } }
`,
  );

  it('says "login refused" in /readyz, not "unreachable", and connects once the password is right', async () => {
    await gw.waitForLog((l) => l.msg === 'amqp connect failed; retrying' && /ACCESS_REFUSED/.test(String(l.err)), 15000);
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.ok(probe.body.reasons.includes('broker rb: login refused'), JSON.stringify(probe.body));
    const refused = await post(gw.url('api', '/out'), { n: 0 });
    assert.equal(refused.status, 503, refused.text);
    assert.match(refused.body.detail, /login refused: .*ACCESS_REFUSED/);
    await rabbit.admin.changePassword(user, 'right');
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    const reply = await post(gw.url('api', '/out'), { n: 1 });
    assert.equal(reply.status, 200, reply.text);
    const [first] = await hook.received(1, 15000);
    assert.deepEqual(JSON.parse(first!.body), { n: 1 });
  });
});
