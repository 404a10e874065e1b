import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { nkeys } from 'nats';
import { runCliInProcess } from '../helpers/cli.js';
import { post } from '../helpers/clients.js';
import { eventually, tempFiles, useGateway } from '../helpers/gateway.js';
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
/** A JWT valid only from an hour on (its `nbf`): nats-server refuses it until then. */
const notBeforeAt = Math.floor(Date.now() / 1000) + 3600;
const notYet = op.user({ nbf: notBeforeAt });
/** An account whose users are signed by one of its signing keys (`signing_keys`), as `nsc add user -K` does: `iss` the key, `issuer_account` the account. */
const signing = op.newAccount(undefined, { signingKey: true });
const signed = op.user({ account: signing });
/** A user of the gateway's account signed by a key its account JWT does not list: the server refuses it. */
const unlisted = op.user({ account: { ...op.account, signingKey: nkeys.createAccount() } });
const iso = (seconds: number) => new Date(seconds * 1000).toISOString().replace(/\./g, '\\.');

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
  notYet: file('not-yet.creds', notYet.creds),
  signed: file('signed.creds', signed.creds),
  unlisted: file('unlisted.creds', unlisted.creds),
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
  nats = await startNatsOperator(op, probe, [signing]);
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
    // A JWT without `exp`: no series of the expiry gauge.
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(metrics, /^# TYPE eventgate_broker_credentials_expires_in_seconds gauge$/m);
    assert.doesNotMatch(metrics, /^eventgate_broker_credentials_expires_in_seconds\{/m);
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

  it("a user JWT issued by one of its account's signing keys (issuer_account) logs in; one by a key the account does not list is refused", async () => {
    const reload = await gw.reconfigure(config(`credsFile: ${files.signed}`), undefined, { whole: true });
    assert.equal(reload.msg, 'config reloaded', JSON.stringify(reload));
    // A JetStream publish: 200 only once the signing account's stream stored it.
    const reply = await post(gw.url('api', '/out'), { n: 8 });
    assert.equal(reply.status, 200, reply.text);
    const refused = await gw.reconfigure(config(`credsFile: ${files.unlisted}`), undefined, { whole: true });
    assert.match(refused.msg, /^reload rejected/, JSON.stringify(refused));
    assert.match(String(refused.diagnostic), /could not start broker 'nt': .*login refused/);
    const still = await post(gw.url('api', '/out'), { n: 9 });
    assert.equal(still.status, 200, still.text);
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

/** nats-server's words for a login it refuses, as the broker's connect failure logs them. */
const LOGIN_REFUSED = /Authorization[ _]Violation/i;

describe('kind: nats, a credentials file the server refuses', () => {
  const gw = useGateway();
  const refusedAtStart = async (creds: string, words: RegExp) => {
    await gw.start(config(`credsFile: ${creds}`));
    // The server's refusal, not just a first failure: on a loaded machine the first try can time out (`unreachable`, rightly), the refusal coming at a retry.
    // Then /readyz and a publish say so: polled, since a later try that times out again says `unreachable` until the next refusal.
    await gw.waitForLog((l) => l.msg === 'nats connect failed; retrying' && LOGIN_REFUSED.test(String(l.err)), 30000);
    await eventually(
      async () => {
        const probe = await readyz(gw);
        assert.equal(probe.status, 503);
        assert.ok(probe.body.reasons.includes('broker nt: login refused'), JSON.stringify(probe.body));
        const refused = await post(gw.url('api', '/out'), { n: 1 });
        assert.equal(refused.status, 503, refused.text);
        assert.match(refused.body.detail, words);
      },
      15000,
      100,
    );
  };

  it('an expired user JWT: a config warning, /readyz 503 login refused, the 503 saying when it expired', async () => {
    await refusedAtStart(files.expired, new RegExp(`login refused: .*Authorization Violation.*the user JWT of credsFile expired at ${iso(expiredAt)}`, 'i'));
    const warning = gw.logs.find((l) => l.msg === 'config warning');
    assert.equal(warning?.code, 'EG_CONFIG_CREDENTIALS_VALIDITY', JSON.stringify(warning));
    assert.match(String(warning?.diagnostic), new RegExp(`gateway\\.yaml:8:\\d+: .*expired\\.creds' holds a user JWT that, by this machine's clock, expired at ${iso(expiredAt)}`));
  });

  // nats-server checks `nbf` as it checks `exp`, and says only `Authorization Violation`.
  it('a user JWT not valid yet (its nbf): a config warning, /readyz 503 login refused, the 503 and the log saying from when', async () => {
    const from = new RegExp(`the user JWT of credsFile is not valid before ${iso(notBeforeAt)} \\(its nbf\\)`);
    await refusedAtStart(files.notYet, new RegExp(`login refused: .*Authorization Violation.*${from.source}`, 'i'));
    const warning = gw.logs.find((l) => l.msg === 'config warning');
    assert.equal(warning?.code, 'EG_CONFIG_CREDENTIALS_VALIDITY', JSON.stringify(warning));
    assert.match(String(warning?.diagnostic), new RegExp(`not-yet\\.creds' holds a user JWT that, by this machine's clock, is not valid before ${iso(notBeforeAt)}`));
    const line = gw.logs.find((l) => l.msg === 'nats connect failed; retrying' && LOGIN_REFUSED.test(String(l.err)));
    assert.match(String(line?.err), from);
  });

  // nats-server closes a connection when its user's JWT expires ('User Authentication Expired') and
  // refuses the reconnects ('Authorization Violation'): the reason must say the JWT expired.
  it('a user JWT that expires while connected: warned of ahead, the connection lost, /readyz 503 login refused, the 503 and the log saying it expired', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expiresAt = now + 20;
    // Issued now: a 20 s lifetime, warned of a fifth of it (4 s) before its end, while connected:
    // 16 s after this line, room for a start on a loaded machine (8 s was seen in CI with 12 s of
    // room). The shortest wait for that room: an earlier `iat` lengthens the lifetime, and so
    // moves the warning away from the expiry, by a fifth of what it adds.
    const soon = op.user({ exp: expiresAt, iat: now });
    await gw.start(config(`credsFile: ${file('soon.creds', soon.creds)}`));
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 25000, 100);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const left = Number(/^eventgate_broker_credentials_expires_in_seconds\{broker="nt"\} (\S+)$/m.exec(metrics)?.[1]);
    assert.ok(left > 0 && left <= 20, `seconds left: ${left}`);
    const connected = gw.logs.findIndex((l) => l.msg === 'nats connected');
    const ahead = await gw.waitForLog((l) => /^nats credsFile's user JWT expires soon/.test(l.msg ?? ''), 35000);
    assert.ok(gw.logs.indexOf(ahead) > connected, 'warned of when it had 4 s left, after the connect');
    assert.equal(ahead.expiresAt, new Date(expiresAt * 1000).toISOString());
    assert.ok(Number(ahead.secondsLeft) <= 4, JSON.stringify(ahead));
    await gw.waitForLog((l) => l.msg === 'nats connection lost; reconnecting', 45000);
    // The refused reconnects' `nats error` line names the expiry, as the 503s do.
    await gw.waitForLog((l) => l.msg === 'nats error' && new RegExp(`the user JWT of credsFile expired at ${iso(expiresAt)}`).test(String(l.err)), 15000);
    assert.equal(gw.logs.filter((l) => /^nats credsFile's user JWT expires soon/.test(l.msg ?? '')).length, 1, 'warned of once');
    // Polled with the 503, as refusedAtStart does: a reconnect that times out on a loaded machine
    // says `unreachable`, rightly, until the next try is refused.
    await eventually(
      async () => {
        const refused = await post(gw.url('api', '/out'), { n: 1 });
        assert.equal(refused.status, 503, refused.text);
        assert.match(refused.body.detail, new RegExp(`login refused: .*the user JWT of credsFile expired at ${iso(expiresAt)}`, 'i'));
        const probe = await readyz(gw);
        assert.equal(probe.status, 503);
        assert.ok(probe.body.reasons.includes('broker nt: login refused'), JSON.stringify(probe.body));
      },
      15000,
      100,
    );
  });

  it('a user of an account the server does not trust: /readyz 503 login refused', async () => {
    await refusedAtStart(files.stranger, /login refused: .*Authorization Violation/i);
  });
});

describe('eventgate validate, a credentials file whose JWT cannot log in now', () => {
  // A warning, not an error: validate may run on another clock and day than the gateway (CI).
  it('warns at credsFile of a JWT expired or not valid yet, by this clock, and says ok', async () => {
    const cwd = tempFiles({
      'expired.creds': expired.creds,
      'not-yet.creds': notYet.creds,
      'fine.creds': denied.creds,
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  old: { kind: nats, servers: "nats://127.0.0.1:4222", credsFile: expired.creds }',
        '  early: { kind: nats, servers: "nats://127.0.0.1:4222", credsFile: not-yet.creds }',
        '  fine: { kind: nats, servers: "nats://127.0.0.1:4222", credsFile: fine.creds }',
        '',
      ].join('\n'),
    });
    const got = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd });
    assert.equal(got.code, 0, got.stdout + got.stderr);
    assert.deepEqual(got.stderr.trim().split('\n'), [
      `gateway.yaml:3:67: warning: 'expired.creds' holds a user JWT that, by this machine's clock, expired at ${new Date(expiredAt * 1000).toISOString()}: give the broker a new one (nsc generate creds) [EG_CONFIG_CREDENTIALS_VALIDITY]`,
      `gateway.yaml:4:69: warning: 'not-yet.creds' holds a user JWT that, by this machine's clock, is not valid before ${new Date(notBeforeAt * 1000).toISOString()} (its nbf): nats-server refuses it until then; check this machine's and the server's clocks, or issue one valid now [EG_CONFIG_CREDENTIALS_VALIDITY]`,
    ]);
  });
});
