import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nkeys } from 'nats';
import { credsRefusalHint, credsTimeProblem, EXPIRY_WARNING_MS, expiryWarningAt, parseCreds, userPublicKey, type NatsCreds } from '../../src/kinds/brokers/nats/creds.js';
import { natsJwt, natsOperator } from '../helpers/nats-jwt.js';

/**
 * Reading a `.creds` file (kinds/brokers/nats/creds.ts) without the nats client: the JWT and the
 * seed, or why not, in words that quote neither. A seed that is not the JWT's user's is found here
 * (its public key derived as nkeys does), where nats-server would say only `Authorization Violation`.
 */
describe('nats creds files', () => {
  const op = natsOperator();
  const user = op.user({ exp: 2000000000 });
  const other = op.user();
  const seedOf = (u: { key: { getSeed(): Uint8Array } }) => new TextDecoder().decode(u.key.getSeed());

  it("derives a user seed's public key as nkeys does", () => {
    for (let i = 0; i < 20; i++) {
      const kp = nkeys.createUser();
      assert.equal(userPublicKey(new TextDecoder().decode(kp.getSeed())), kp.getPublicKey());
    }
  });

  it('reads the JWT, the seed and the expiry of an nsc file, with LF or CRLF line ends', () => {
    const issuedAt = (JSON.parse(Buffer.from(user.jwt.split('.')[1]!, 'base64url').toString()) as { iat: number }).iat * 1000;
    for (const text of [user.creds, user.creds.replace(/\n/g, '\r\n')]) {
      assert.deepEqual(parseCreds(text), { jwt: user.jwt, seed: seedOf(user), expiresAt: 2000000000000, notBefore: undefined, issuedAt });
    }
    assert.equal((parseCreds(other.creds) as { expiresAt?: number }).expiresAt, undefined);
    const later = op.user({ nbf: 1900000000, iat: 1800000000 });
    assert.deepEqual({ ...(parseCreds(later.creds) as NatsCreds), jwt: '', seed: '' }, { jwt: '', seed: '', expiresAt: undefined, notBefore: 1900000000000, issuedAt: 1800000000000 });
  });

  it('reads a v1 user JWT (nsc before 2.0: its type among the standard claims), as nats-server does', () => {
    const old = op.user({ v1: true, exp: 2000000000, iat: 1700000000 });
    assert.deepEqual(parseCreds(old.creds), { jwt: old.jwt, seed: seedOf(old), expiresAt: 2000000000000, notBefore: undefined, issuedAt: 1700000000000 });
    // Its type first, as nats-io/jwt reads it: a v1 account JWT is no user's.
    const account = natsJwt(op.operator, op.account.key.getPublicKey(), { type: 'account' }, { v1: true });
    const got = parseCreds(old.creds.replace(old.jwt, account));
    assert.ok('problem' in got && /the JWT is of type 'account'/.test(got.problem), JSON.stringify(got));
  });

  it('says what is wrong, quoting nothing of the file', () => {
    const wrong = (text: string, words: RegExp) => {
      const got = parseCreds(text);
      assert.ok('problem' in got, JSON.stringify(got));
      assert.match(got.problem, words);
      for (const secret of [user.jwt, seedOf(user), seedOf(other)]) assert.ok(!got.problem.includes(secret));
    };
    wrong('', /is not a NATS credentials file/);
    wrong(seedOf(user), /is not a NATS credentials file/);
    wrong(user.creds.slice(0, user.creds.indexOf('*')), /it has one such block/);
    wrong(user.creds.replace(user.jwt, 'a.b'), /three base64url parts/);
    wrong(user.creds.replace(user.jwt, `a.${Buffer.from('[1]').toString('base64url')}.c`), /claims .* are not a JSON object/);
    wrong(user.creds.replace(user.jwt, op.account.jwt), /the JWT is of type 'account'/);
    wrong(user.creds.replace(seedOf(user), seedOf(user).slice(0, -1)), /holds no user NKey seed/);
    // One character changed: the checksum no longer matches.
    const seed = seedOf(user);
    wrong(user.creds.replace(seed, `${seed.slice(0, 10)}${seed[10] === 'A' ? 'B' : 'A'}${seed.slice(11)}`), /checksum/);
    wrong(user.creds.replace(seedOf(user), seedOf(other)), /not the JWT's user's/);
  });

  it('names an expiry passed, or a start to come, when the server refuses the login', () => {
    const creds: NatsCreds = { jwt: 'j', seed: 's', expiresAt: 1000, notBefore: undefined, issuedAt: undefined };
    assert.match(credsRefusalHint(creds, 2000), /expired at 1970-01-01T00:00:01\.000Z/);
    assert.equal(credsRefusalHint(creds, 500), '');
    assert.equal(credsRefusalHint({ ...creds, expiresAt: undefined }, 2000), '');
    assert.equal(credsRefusalHint(undefined), '');
    // nats-server refuses a JWT before its nbf as it does one past its exp: `Authorization Violation`.
    const later = { ...creds, expiresAt: undefined, notBefore: 5000 };
    assert.match(credsRefusalHint(later, 2000), /^; the user JWT of credsFile is not valid before 1970-01-01T00:00:05\.000Z \(its nbf\)/);
    assert.equal(credsRefusalHint(later, 5000), '');
    assert.equal(credsTimeProblem(later, 6000), undefined);
  });

  it("warns of an expiry a week ahead, or a fifth of the JWT's lifetime when that is shorter", () => {
    const creds = (expiresAt: number | undefined, issuedAt: number | undefined): NatsCreds => ({ jwt: 'j', seed: 's', expiresAt, notBefore: undefined, issuedAt });
    const day = 24 * 3600 * 1000;
    assert.equal(expiryWarningAt(creds(undefined, 0)), undefined);
    assert.equal(expiryWarningAt(creds(365 * day, 0)), 365 * day - EXPIRY_WARNING_MS);
    assert.equal(expiryWarningAt(creds(365 * day, undefined)), 365 * day - EXPIRY_WARNING_MS);
    // An hour's JWT: 12 minutes ahead, so one renewed every 40 minutes is never warned of.
    assert.equal(expiryWarningAt(creds(3600000, 0)), 3600000 - 720000);
    assert.equal(expiryWarningAt(creds(30 * day, 0)), 30 * day - 6 * day);
  });
});
