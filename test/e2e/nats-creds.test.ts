import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { natsOperator } from '../helpers/nats-jwt.js';
import { readyz } from '../helpers/outage.js';
import { RawNats } from '../helpers/peers.js';
import { tempDir } from '../helpers/reaper.js';
import { startNatsOperator, type MessageServer } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A nats-server in operator mode (decentralized JWT auth, as `nsc` sets one up): the gateway logs
 * in with a `.creds` file, the user's JWT and NKey seed. The operator, accounts and users are made
 * here (test/helpers/nats-jwt.ts); the server knows the accounts from its memory resolver. Before,
 * the kind had no `credsFile` (only user/password, token and nkeyFile), so such a server could
 * not be used at all.
 */
const op = natsOperator();
const probe = op.user();
/** The gateway's user at start: its account's JWT denies it `creds.denied`. */
const denied = op.user({ deny: ['creds.denied'] });
/** The user a rotated file holds: allowed everything. */
const rotated = op.user();
const expiredAt = Math.floor(Date.now() / 1000) - 3600;
const expired = op.user({ exp: expiredAt });
/** A user whose JWT is as nsc before 2.0 wrote it (jwt v1: `type` among the standard claims), which nats-server takes. */
const v1 = op.user({ v1: true });
/** A user of an account another operator signed: the server trusts neither. */
const stranger = natsOperator().user();

const dir = tempDir('eventgate-creds');
const file = (name: string, text: string) => {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
};
const files = {
  live: file('gateway.creds', denied.creds),
  expired: file('expired.creds', expired.creds),
  v1: file('v1.creds', v1.creds),
  stranger: file('stranger.creds', stranger.creds),
  // The seed alone, as an `.nk` file holds it: no JWT.
  seedOnly: file('seed-only.creds', `${new TextDecoder().decode(denied.key.getSeed())}\n`),
  // The blocks swapped: the seed where the JWT goes.
  swapped: file(
    'swapped.creds',
    denied.creds.replace(denied.jwt, 'PLACEHOLDER').replace(new TextDecoder().decode(denied.key.getSeed()), denied.jwt).replace('PLACEHOLDER', new TextDecoder().decode(denied.key.getSeed())),
  ),
  // The JWT of one user, the seed of another.
  mismatched: file('mismatched.creds', denied.creds.replace(new TextDecoder().decode(denied.key.getSeed()), new TextDecoder().decode(rotated.key.getSeed()))),
  // An account's JWT where the user's goes.
  account: file('account.creds', denied.creds.replace(denied.jwt, op.account.jwt)),
};

let nats: MessageServer;
let hook: WebhookReceiver;
before(async () => {
  nats = await startNatsOperator(op, probe);
  hook = await WebhookReceiver.start();
});
after(async () => {
  await hook?.stop();
  await nats?.stop();
});

const config = (login: string) => `
version: 1
admin: { port: 0 }
brokers:
  nt:
    kind: nats
    servers: ${nats.url}
    ${login}
    reconnectTimeWaitMs: 100
    streams: { CREDS: { subjects: ["creds.stored.>"] } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: nt, topic: creds.stored.out } }
  - { name: denied, from: { listener: api, path: /denied }, to: { broker: nt, topic: creds.denied } }
  - { name: in, from: { broker: nt, topic: creds.stored.in }, to: { http: { url: "${hook.url}/in" } } }
`;

describe('kind: nats, a login by credentials file (operator mode)', () => {
  const gw = useGateway(() => config(`credsFile: ${files.live}`));

  it("publishes and consumes as the file's user; a subject its JWT denies is a 503 naming it", async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    const reply = await post(gw.url('api', '/out'), { n: 1 });
    assert.equal(reply.status, 200, reply.text);
    const peer = await RawNats.connect(nats, probe.login);
    try {
      assert.equal((await peer.storedMessage('CREDS', Number(reply.body.deliveries[0].offset)))?.data, '{"n":1}');
      await peer.jsPublish('creds.stored.in', '{"n":2}');
    } finally {
      peer.close();
    }
    const [got] = await hook.received(1, 15000);
    assert.deepEqual(JSON.parse(got!.body), { n: 2 });
    const refused = await post(gw.url('api', '/denied'), { n: 3 });
    assert.equal(refused.status, 503, refused.text);
    assert.match(refused.body.detail, /Permissions Violation for Publish to "creds\.denied"/);
  });

  it('a creds file rotated on disk reconnects the broker with the new JWT', async () => {
    const from = gw.logs.length;
    writeFileSync(files.live, rotated.creds);
    // The new user may publish what the old one's JWT denied.
    await gw.waitForLog((l) => l.msg === 'config reloaded', 20000, from);
    const reply = await post(gw.url('api', '/denied'), { n: 5 });
    assert.equal(reply.status, 200, reply.text);
    const out = await post(gw.url('api', '/out'), { n: 6 });
    assert.equal(out.status, 200, out.text);
  });

  it('a v1 user JWT (nsc before 2.0), which nats-server takes, logs in too', async () => {
    // Refused before as `the JWT is not a NATS JWT (no nats.type)`: jwt v1 put the type among the standard claims.
    const reload = await gw.reconfigure(config(`credsFile: ${files.v1}`), undefined, { whole: true });
    assert.equal(reload.msg, 'config reloaded', JSON.stringify(reload));
    const reply = await post(gw.url('api', '/out'), { n: 7 });
    assert.equal(reply.status, 200, reply.text);
    const peer = await RawNats.connect(nats, probe.login);
    try {
      assert.equal((await peer.storedMessage('CREDS', Number(reply.body.deliveries[0].offset)))?.data, '{"n":7}');
    } finally {
      peer.close();
    }
  });

  it('a file without a user JWT and seed, or beside another login, is a config error at the key that quotes nothing of it; the running broker serves on', async () => {
    // Nothing of any file: neither a seed nor a JWT.
    const secrets = [denied, rotated, stranger].flatMap((u) => [u.jwt, new TextDecoder().decode(u.key.getSeed())]);
    const refusedWith = async (login: string, words: RegExp) => {
      const reload = await gw.reconfigure(config(login), undefined, { whole: true });
      assert.match(reload.msg, /^reload rejected/, JSON.stringify(reload));
      assert.match(String(reload.diagnostic), words);
      assert.ok(!secrets.some((secret) => JSON.stringify(reload).includes(secret)), 'the file is not quoted');
      const still = await post(gw.url('api', '/out'), { n: 4 });
      assert.equal(still.status, 200, still.text);
    };
    await refusedWith(`credsFile: ${files.seedOnly}`, /gateway\.yaml:8:\d+: '[^']*seed-only\.creds' is not a NATS credentials file/);
    await refusedWith(`credsFile: ${files.swapped}`, /gateway\.yaml:8:\d+: '[^']*swapped\.creds' holds no user JWT in its first block: a JWT is three base64url parts/);
    await refusedWith(`credsFile: ${files.account}`, /gateway\.yaml:8:\d+: '[^']*account\.creds' holds no user JWT in its first block: the JWT is of type 'account'/);
    await refusedWith(`credsFile: ${files.mismatched}`, /gateway\.yaml:8:\d+: '[^']*mismatched\.creds' holds a seed that is not the JWT's user's/);
    await refusedWith(`credsFile: ${files.live}\n    nkeyFile: ${files.seedOnly}`, /credsFile is a login of its own: leave out 'nkeyFile'/);
    await refusedWith(`credsFile: ${files.live}\n    token: abcdefgh`, /credsFile is a login of its own: leave out 'token'/);
    await refusedWith(`credsFile: ${join(dir, 'missing.creds')}`, /missing\.creds/);
    // A file the server refuses (signed by an account it does not know): the new broker cannot start.
    await refusedWith(`credsFile: ${files.stranger}`, /could not start broker 'nt': .*login refused/);
  });
});

describe('kind: nats, a credentials file the server refuses', () => {
  const gw = useGateway();
  const refusedAtStart = async (creds: string, words: RegExp) => {
    await gw.start(config(`credsFile: ${creds}`));
    await gw.waitForLog((l) => l.msg === 'nats connect failed; retrying', 15000);
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.ok(probe.body.reasons.includes('broker nt: login refused'), JSON.stringify(probe.body));
    const refused = await post(gw.url('api', '/out'), { n: 1 });
    assert.equal(refused.status, 503, refused.text);
    assert.match(refused.body.detail, words);
  };

  it('an expired user JWT: /readyz 503 login refused, the 503 saying when it expired', async () => {
    await refusedAtStart(
      files.expired,
      new RegExp(`login refused: .*Authorization Violation.*the user JWT of credsFile expired at ${new Date(expiredAt * 1000).toISOString().replace(/\./g, '\\.')}`, 'i'),
    );
  });

  // nats-server closes a connection when its user's JWT expires ('User Authentication Expired') and
  // refuses the reconnects ('Authorization Violation'): the reason must say the JWT expired.
  it('a user JWT that expires while connected: the connection is lost, /readyz 503 login refused, the 503 saying it expired', async () => {
    const expiresAt = Math.floor(Date.now() / 1000) + 20;
    const soon = op.user({ exp: expiresAt });
    await gw.start(config(`credsFile: ${file('soon.creds', soon.creds)}`));
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 25000, 100);
    await gw.waitForLog((l) => l.msg === 'nats connection lost; reconnecting', 45000);
    await eventually(
      async () => {
        const refused = await post(gw.url('api', '/out'), { n: 1 });
        assert.equal(refused.status, 503, refused.text);
        assert.match(refused.body.detail, new RegExp(`login refused: .*the user JWT of credsFile expired at ${new Date(expiresAt * 1000).toISOString().replace(/\./g, '\\.')}`, 'i'));
      },
      15000,
      100,
    );
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.ok(probe.body.reasons.includes('broker nt: login refused'), JSON.stringify(probe.body));
  });

  it('a user of an account the server does not trust: /readyz 503 login refused', async () => {
    await refusedAtStart(files.stranger, /login refused: .*Authorization Violation/i);
  });
});
