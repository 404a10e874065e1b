import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { makeCertificates, type Pem } from '../helpers/certificates.js';
import { post } from '../helpers/clients.js';
import { eventually, runCli, tempFiles, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { startMosquitto, startMosquittoTls, startNats, startNatsTls, startRabbit, type MessageServer, type RabbitServer } from '../helpers/servers.js';

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
  const config = (ntCa = 'ca.pem') => `
version: 1
admin: { port: 0 }
brokers:
  mq: { kind: mqtt, url: ${mqtt.url}, clientId: eg-tls-${process.pid}, tls: { ca: ca.pem } }
  nt: { kind: nats, servers: ${nats.url}, tls: { ca: ${ntCa} } }
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

  it('says "tls refused" with the reason, and connects once the right CA is trusted (nats too, to a certificate for its IP address); a tls:// nats server that offers no TLS is refused, not used in the clear, and so is a plain mqtt server named mqtts://', async () => {
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
    // The right CA. The nats server's certificate is for IP 127.0.0.1 only: nats.js gives node no
    // name for a server named by its address, and node checked it against `localhost` (refused).
    gw.write('ca.pem', certs.a.cert);
    await eventually(
      async () => {
        const probe = await readyz(gw);
        assert.deepEqual([...probe.body.reasons].sort(), ['broker mp: tls refused', 'broker np: tls refused']);
      },
      20000,
      100,
    );
    for (const path of ['/m', '/n']) {
      const reply = await post(gw.url('api', path), { n: 1 });
      assert.equal(reply.status, 200, reply.text);
    }
  });

  it('rejects at once a reload whose CA does not trust the server a connected broker talks to, and the running brokers serve on', async () => {
    const rejected = 'reload rejected; the running config keeps serving';
    const served = async () => {
      for (const path of ['/m', '/n']) {
        const reply = await post(gw.url('api', path), { n: 2 });
        assert.equal(reply.status, 200, reply.text);
      }
    };
    await gw.start(config(), { files: { 'ca.pem': certs.a.cert } });
    await eventually(served, 20000, 100);
    // nats alone, its CA another file. Before, the reload waited 5 s, went on, and the broker was
    // down (`tls refused`) from then on.
    gw.write('other-ca.pem', certs.b.cert);
    const nats = await gw.reconfigure(config('other-ca.pem'), undefined, { whole: true });
    assert.equal(nats.msg, rejected, JSON.stringify(nats));
    assert.match(
      String(nats.diagnostic),
      /gateway\.yaml:6:3: could not start broker 'nt': refused with its new options \(the running one keeps serving\): tls refused: self-signed certificate; trust the server's CA with the broker's tls\.ca$/,
    );
    await served();
    // Both, the CA file they share edited.
    const both = await gw.reconfigure(certs.b.cert, 'ca.pem', { whole: true });
    assert.equal(both.msg, rejected, JSON.stringify(both));
    assert.match(String(both.diagnostic), /could not start broker '(mq|nt)': refused with its new options \(the running one keeps serving\): tls refused: self-signed certificate/);
    await served();
    const probe = await readyz(gw);
    assert.deepEqual([...probe.body.reasons].sort(), ['broker mp: tls refused', 'broker np: tls refused']);
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

/**
 * Servers that require a client certificate (mutual TLS), one of each kind. A broker without one,
 * or with one of a CA the server does not trust, is `tls refused` with the fix: the words were
 * OpenSSL's internals (`800C02ED7A7F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert
 * certificate required:../deps/openssl/...`), and nats said `unreachable: TIMEOUT` after
 * connectTimeoutMs (nats.js waited for a PONG on a connection the server had closed).
 */
describe('kind: mqtt, nats and amqp, servers that require a client certificate', () => {
  let certs: { a: Pem; b: Pem; ca: Pem; client: Pem };
  let mqtt: MessageServer;
  let nats: MessageServer;
  let rabbit: RabbitServer;
  before(async () => {
    certs = makeCertificates();
    [mqtt, nats, rabbit] = await Promise.all([
      startMosquittoTls(certs.a, { ca: certs.ca, client: certs.client }),
      startNatsTls(certs.a, certs.ca),
      startRabbit({ tls: { cert: certs.a, ca: certs.ca } }),
    ]);
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), nats?.stop(), rabbit?.stop()]);
  });
  const gw = useGateway();
  // The client key encrypted: its passphrase is a secret no log line may hold.
  const passphrase = `key-pass-${process.pid}`;
  // `own`: mc's, nc's and rc's client certificate and key the server's own (which its CA did not sign).
  const config = (own: { mc?: boolean; nc?: boolean; rc?: boolean } = {}) => `
version: 1
admin: { port: 0 }
brokers:
  mc: { kind: mqtt, url: ${mqtt.url}, clientId: eg-mc-${process.pid}, tls: { ca: server.pem, ${own.mc ? 'cert: server.pem, key: server-key.pem' : 'cert: client.pem, key: client-key.pem'} } }
  mn: { kind: mqtt, url: ${mqtt.url}, clientId: eg-mn-${process.pid}, tls: { ca: server.pem } }
  mo: { kind: mqtt, url: ${mqtt.url}, clientId: eg-mo-${process.pid}, tls: { ca: server.pem, cert: server.pem, key: server-key.pem } }
  nc: { kind: nats, servers: ${nats.url}, tls: { ca: server.pem, ${own.nc ? 'cert: server.pem, key: server-key.pem' : `cert: client.pem, key: locked-key.pem, passphrase: ${passphrase}`} } }
  nn: { kind: nats, servers: ${nats.url}, tls: { ca: server.pem } }
  rc: { kind: amqp, url: "${rabbit.tlsUrl}", tls: { ca: server.pem, ${own.rc ? 'cert: server.pem, key: server-key.pem' : `cert: client.pem, key: locked-key.pem, passphrase: ${passphrase}`} }, queues: { tls-in: { bindings: [tls.out] } } }
  rn: { kind: amqp, url: "${rabbit.tlsUrl}", tls: { ca: server.pem } }
  ro: { kind: amqp, url: "${rabbit.tlsUrl}", tls: { ca: server.pem, cert: server.pem, key: server-key.pem } }
  rp: { kind: amqp, url: "${rabbit.url.replace(/^amqp:/, 'amqps:')}", tls: { ca: server.pem } }
listeners:
  api: { kind: http, port: 0 }
routes:
${['mc', 'mn', 'mo'].map((b) => `  - { name: ${b}, from: { listener: api, path: /${b} }, to: { broker: ${b}, topic: tls/out } }`).join('\n')}
${['nc', 'nn', 'rc', 'rn', 'ro', 'rp'].map((b) => `  - { name: ${b}, from: { listener: api, path: /${b} }, to: { broker: ${b}, topic: tls.out } }`).join('\n')}
`;

  const files = () => ({
    'server.pem': certs.a.cert,
    'server-key.pem': certs.a.key,
    'client.pem': certs.client.cert,
    'client-key.pem': certs.client.key,
    'locked-key.pem': String(createPrivateKey(certs.client.key).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase })),
  });

  it('publish with the certificate; without one, or with one the server does not trust, say "tls refused" and the fix, in words, not OpenSSL internals; no passphrase in the log', async () => {
    await gw.start(config(), { files: files() });
    const refused = ['mn', 'mo', 'nn', 'rn', 'ro', 'rp'];
    await eventually(
      async () => {
        const probe = await readyz(gw);
        assert.deepEqual(
          [...probe.body.reasons].sort(),
          refused.map((b) => `broker ${b}: tls refused`),
        );
      },
      20000,
      100,
    );
    for (const path of ['/mc', '/nc', '/rc']) {
      const reply = await post(gw.url('api', path), { n: 1 });
      assert.equal(reply.status, 200, reply.text);
    }
    const detail = async (path: string) => {
      const reply = await post(gw.url('api', path), { n: 0 });
      assert.equal(reply.status, 503, reply.text);
      assert.doesNotMatch(reply.body.detail, /SSL routines|deps\/openssl|TIMEOUT/, reply.body.detail);
      return reply.body.detail as string;
    };
    // OpenSSL's TLS 1.3 alert (mosquitto, RabbitMQ): the server wanted a certificate and got none.
    const required =
      /tls refused: tlsv13 alert certificate required \(ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED\); the server requires a client certificate \(mutual TLS\): give one with the broker's tls\.cert and tls\.key\)$/;
    assert.match(await detail('/mn'), required);
    assert.match(await detail('/rn'), required);
    const unknownCa = /tls refused: tlsv1 alert unknown ca \(ERR_SSL_TLSV1_ALERT_UNKNOWN_CA\); the server does not trust the CA of the broker's client certificate \(tls\.cert\)\)$/;
    assert.match(await detail('/mo'), unknownCa);
    // RabbitMQ (Erlang) says `bad certificate` for a self-signed one.
    const badCertificate =
      /tls refused: sslv3 alert bad certificate \(ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE\); the server refused the client certificate, or requires one \(mutual TLS\): check the broker's tls\.cert and tls\.key\)$/;
    assert.match(await detail('/ro'), badCertificate);
    // nats-server (Go) says `bad certificate`, or resets the connection before its alert is read.
    const detailNn = await detail('/nn');
    if (!badCertificate.test(detailNn))
      assert.match(
        detailNn,
        /tls refused: the server reset the connection in the TLS connect \((read|write) E\w+\), as nats-server does for a client certificate it does not trust or did not get \(mutual TLS\)/,
      );
    assert.match(await detail('/rp'), /tls refused: wrong version number \(ERR_SSL_WRONG_VERSION_NUMBER\); the port does not speak TLS/);
    const log = gw.logs.map((l) => JSON.stringify(l)).join('\n') + gw.stderr();
    assert.doesNotMatch(log, new RegExp(passphrase));
    assert.doesNotMatch(log, /SSL routines|PRIVATE KEY/);
  });

  it('rejects at once a reload giving a connected mqtt, nats or amqp broker a client certificate the server refuses, and the running broker serves on', async () => {
    const rejected = 'reload rejected; the running config keeps serving';
    await gw.start(config(), { files: files() });
    await eventually(
      async () => {
        for (const path of ['/mc', '/nc', '/rc']) assert.equal((await post(gw.url('api', path), { n: 1 })).status, 200);
      },
      20000,
      100,
    );
    // Before, each reload waited 5 s, went on, and the broker was down (`tls refused`) from then on.
    const mc = await gw.reconfigure(config({ mc: true }), undefined, { whole: true });
    assert.equal(mc.msg, rejected, JSON.stringify(mc));
    assert.match(
      String(mc.diagnostic),
      /gateway\.yaml:5:3: could not start broker 'mc': refused with its new options \(the running one keeps serving\): tls refused: tlsv1 alert unknown ca \(ERR_SSL_TLSV1_ALERT_UNKNOWN_CA\); the server does not trust the CA of the broker's client certificate \(tls\.cert\)$/,
    );
    // nats-server ends the connection once the client's TLS 1.3 handshake is done, with its alert
    // (`bad certificate`) or, when the reset comes first, with none. Before, a reset was read as
    // a proxy's and the broker tried again (logging the alert's words then), or the reload went on
    // after 5 s: which one comes first varies, so the same reload is made three times (a comment
    // changes the file; the running config is not the refused one).
    for (const attempt of [1, 2, 3]) {
      const from = gw.logs.length;
      const nc = await gw.reconfigure(`${config({ nc: true })}# attempt ${attempt}\n`, undefined, { whole: true });
      assert.equal(nc.msg, rejected, JSON.stringify(nc));
      assert.match(
        String(nc.diagnostic),
        /gateway\.yaml:8:3: could not start broker 'nc': refused with its new options \(the running one keeps serving\): tls refused: (the server reset the connection in the TLS connect \((read|write) E\w+\), as nats-server does for a client certificate it does not trust|sslv3 alert bad certificate)/,
      );
      // Rejected at its first try, whichever way the server ended it.
      const tries = gw.logs.slice(from).filter((l) => l.broker === 'nc' && l.msg === 'nats connect failed; retrying');
      assert.equal(tries.length, 1, JSON.stringify(tries));
    }
    const rc = await gw.reconfigure(config({ rc: true }), undefined, { whole: true });
    assert.equal(rc.msg, rejected, JSON.stringify(rc));
    assert.match(
      String(rc.diagnostic),
      /gateway\.yaml:10:3: could not start broker 'rc': refused with its new options \(the running one keeps serving\): tls refused: sslv3 alert bad certificate \(ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE\); the server refused the client certificate/,
    );
    for (const path of ['/mc', '/nc', '/rc']) {
      const reply = await post(gw.url('api', path), { n: 2 });
      assert.equal(reply.status, 200, reply.text);
    }
  });
});
