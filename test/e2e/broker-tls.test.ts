import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { makeCertificates, type Pem } from '../helpers/certificates.js';
import { post } from '../helpers/clients.js';
import { eventually, runCli, tempFiles, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { startMosquitto, startMosquittoTls, startNats, startNatsTls, type MessageServer } from '../helpers/servers.js';

/**
 * A server whose certificate the gateway does not trust is there: `/readyz` says `tls refused`,
 * not `unreachable` (which sends an operator to the network), and the 503 says why. Trusting the
 * right CA (the `tls.ca` file is watched: a new one replaces the broker) connects it.
 */
describe('kind: mqtt and nats, a server certificate the gateway does not trust', () => {
  let certs: { a: Pem; b: Pem };
  let mqtt: MessageServer;
  let nats: MessageServer;
  // A server without TLS named as tls://: nats.js drops the scheme, and connected in the clear.
  let plainNats: MessageServer;
  // A server without TLS named as mqtts://: mosquitto resets the connection the ClientHello opens.
  let plainMqtt: MessageServer;
  before(async () => {
    certs = makeCertificates();
    [mqtt, nats, plainNats, plainMqtt] = await Promise.all([startMosquittoTls(certs.a), startNatsTls(certs.a), startNats(), startMosquitto()]);
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), nats?.stop(), plainNats?.stop(), plainMqtt?.stop()]);
  });
  const gw = useGateway();
  const config = () => `
version: 1
admin: { port: 0 }
brokers:
  mq: { kind: mqtt, url: ${mqtt.url}, clientId: eg-tls-${process.pid}, tls: { ca: ca.pem } }
  nt: { kind: nats, servers: ${nats.url}, tls: { ca: ca.pem } }
  np: { kind: nats, servers: "tls://${plainNats.host}:${plainNats.port}" }
  mp: { kind: mqtt, url: "mqtts://${plainMqtt.host}:${plainMqtt.port}", clientId: eg-plain-${process.pid} }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: m, from: { listener: api, path: /m }, to: { broker: mq, topic: tls/out } }
  - { name: n, from: { listener: api, path: /n }, to: { broker: nt, topic: tls.out } }
  - { name: p, from: { listener: api, path: /p }, to: { broker: np, topic: tls.out } }
  - { name: q, from: { listener: api, path: /q }, to: { broker: mp, topic: tls/out } }
`;

  it('says "tls refused" with the reason, and connects once the right CA is trusted; a tls:// nats server that offers no TLS is refused, not used in the clear, and so is a plain mqtt server named mqtts://', async () => {
    await gw.start(config(), { files: { 'ca.pem': certs.b.cert } });
    await eventually(
      async () => {
        const probe = await readyz(gw);
        assert.equal(probe.status, 503);
        assert.deepEqual([...probe.body.reasons].sort(), ['broker mp: tls refused', 'broker mq: tls refused', 'broker np: tls refused', 'broker nt: tls refused']);
      },
      15000,
      100,
    );
    for (const path of ['/m', '/n']) {
      const refused = await post(gw.url('api', path), { n: 0 });
      assert.equal(refused.status, 503, refused.text);
      // node's words name the cause; the hint names the broker's option that fixes it.
      assert.match(refused.body.detail, /tls refused: self-signed certificate; trust the server's CA with the broker's tls\.ca\)$/, refused.body.detail);
    }
    const plain = await post(gw.url('api', '/p'), { n: 0 });
    assert.equal(plain.status, 503, plain.text);
    assert.match(plain.body.detail, /tls refused: the server does not offer TLS, which the broker requires \(its `tls`, or a tls:\/\/ server\)/, plain.body.detail);
    const plainMqttReply = await post(gw.url('api', '/q'), { n: 0 });
    assert.equal(plainMqttReply.status, 503, plainMqttReply.text);
    assert.match(
      plainMqttReply.body.detail,
      /tls refused: the server closed the connection in the TLS handshake \(read ECONNRESET\): it does not seem to speak TLS on this port/,
      plainMqttReply.body.detail,
    );
    // The right CA (nats.js checks a loopback server's certificate against the name `localhost`,
    // which these certificates for IP 127.0.0.1 do not carry: the trusted half is MQTT's).
    gw.write('ca.pem', certs.a.cert);
    await eventually(
      async () => {
        const probe = await readyz(gw);
        assert.deepEqual([...probe.body.reasons].sort(), ['broker mp: tls refused', 'broker np: tls refused', 'broker nt: tls refused']);
      },
      20000,
      100,
    );
    const reply = await post(gw.url('api', '/m'), { n: 1 });
    assert.equal(reply.status, 200, reply.text);
  });
});

/**
 * TLS files a broker cannot use: validate said `ok`. A CA file with no certificate in it (a key
 * given for the CA) node takes as no CA at all, so every server was untrusted (`tls refused`, as if
 * the server were at fault); a client certificate and key that do not go together (or are not PEM)
 * made `run` exit with `could not start gateway.yaml: ... key values mismatch`, naming no broker,
 * file or line. Now config errors at their key, for every kind that takes `tls` (and listeners' `ca`).
 */
describe('broker TLS files that cannot be used', () => {
  it('are config errors at their line, in validate and run', async () => {
    const certs = makeCertificates();
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  mq: { kind: mqtt, url: "mqtts://127.0.0.1:1", tls: { ca: key.pem } }',
        '  nt: { kind: nats, servers: "tls://127.0.0.1:1", tls: { ca: ca.pem, cert: client.pem, key: key.pem } }',
        '  rb: { kind: amqp, url: "amqps://127.0.0.1:1", tls: { ca: ca.pem, cert: client.pem, key: client-key.pem } }',
        '  swapped: { kind: amqp, url: "amqps://127.0.0.1:1", tls: { cert: client-key.pem, key: client-key.pem } }',
        '  twice: { kind: amqp, url: "amqps://127.0.0.1:1", tls: { cert: client.pem, key: client.pem } }',
        '  locked: { kind: amqp, url: "amqps://127.0.0.1:1", tls: { cert: client.pem, key: locked-key.pem, passphrase: wrong } }',
        'listeners:',
        '  api: { kind: http, port: 0, tls: { cert: a.pem, key: a-key.pem, ca: key.pem } }',
        '  keyless: { kind: http, port: 0, tls: { cert: a.pem, key: a.pem } }',
        'routes:',
        '  - { name: r, from: { listener: api, path: /r }, to: [{ broker: mq, topic: t }, { broker: nt, topic: t }, { broker: rb, topic: t }, { broker: swapped, topic: t }, { broker: twice, topic: t }, { broker: locked, topic: t }] }',
        '  - { name: k, from: { listener: keyless, path: /k }, to: { broker: rb, topic: t } }',
        '',
      ].join('\n'),
      'key.pem': certs.a.key,
      'ca.pem': certs.ca.cert,
      'client.pem': certs.client.cert,
      'client-key.pem': certs.client.key,
      // The client's key, encrypted with a passphrase the config does not give.
      'locked-key.pem': String(createPrivateKey(certs.client.key).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'right' })),
      'a.pem': certs.a.cert,
      'a-key.pem': certs.a.key,
      'lax.yaml': [
        'version: 1',
        'brokers:',
        '  lax: { kind: mqtt, url: "mqtts://127.0.0.1:1", tls: { rejectUnauthorized: false } }',
        '  kf: { kind: kafka, brokers: "127.0.0.1:1", ssl: { ca: ca.pem, rejectUnauthorized: false } }',
        'listeners:',
        '  api: { kind: http, port: 0 }',
        'routes:',
        '  - { name: r, from: { listener: api, path: /r }, to: [{ broker: lax, topic: t }, { broker: kf, topic: t }] }',
        '',
      ].join('\n'),
    });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines.length, 7, r.stdout);
    assert.equal(lines[0], "gateway.yaml:3:60: CA file 'key.pem' cannot be used: it holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    assert.match(lines[1]!, /^gateway\.yaml:4:56: client certificate 'client\.pem' and key 'key\.pem' cannot be used: the key is not the certificate's \(.*key values mismatch\)$/);
    // A file in the other's place: the one at fault is named, at its key (OpenSSL's words name neither).
    assert.equal(lines[2], "gateway.yaml:6:67: client certificate 'client-key.pem' cannot be used: it holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    assert.match(lines[3]!, /^gateway\.yaml:7:82: client key 'client\.pem' cannot be used: it holds no private key that can be read \(.+\)$/);
    // An encrypted key with the wrong passphrase: the key, and that the passphrase is why.
    assert.match(lines[4]!, /^gateway\.yaml:8:83: client key 'locked-key\.pem' cannot be used: it holds no private key that can be read with the passphrase \(.+\)$/);
    assert.equal(lines[5], "gateway.yaml:10:71: CA file 'key.pem' cannot be used: it holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    assert.match(lines[6]!, /^gateway\.yaml:11:60: TLS key 'a\.pem' cannot be used: it holds no private key that can be read \(.+\)$/);
    // Allowed, but never silent: it turns off TLS's check of whom the gateway talks to.
    const lax = await runCli(['validate', '-c', 'lax.yaml'], { cwd: dir });
    assert.equal(lax.code, 0, lax.stdout + lax.stderr);
    const warnings = lax.stderr.trim().split('\n');
    assert.equal(warnings.length, 2, lax.stderr);
    assert.match(warnings[0]!, /^lax\.yaml:3:77: warning: tls\.rejectUnauthorized is false: any certificate is accepted, so whoever is on the network path can pose as the broker .*'tls\.ca'/);
    assert.match(warnings[1]!, /^lax\.yaml:4:85: warning: ssl\.rejectUnauthorized is false: .*'ssl\.ca'/);
    const run = await runCli(['run', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stderr, /^gateway\.yaml:4:56: client certificate 'client\.pem' and key 'key\.pem' cannot be used/m);
    assert.doesNotMatch(run.stdout + run.stderr, /could not start/);
  });
});
