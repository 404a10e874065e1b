import type { IncomingMessage } from 'node:http';
import { problem, type Problem } from '../../core/errors.js';

const WS_KEY = /^[+/0-9A-Za-z]{22}==$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * What is wrong with a handshake that ws would refuse, as a problem: ws answers these itself in
 * text/html, and every other refusal of the gateway is problem+json.
 */
export function malformedHandshake(req: IncomingMessage): Problem | undefined {
  if (req.method !== 'GET') return problem('EG_METHOD_NOT_ALLOWED', `a WebSocket handshake is a GET request, not ${req.method}`, { headers: { allow: 'GET' } });
  // RFC 9110 §9.3.1 gives a GET's content no meaning, and after the upgrade its bytes would be read
  // as the client's first frames: one holding a valid masked frame would be published.
  const length = req.headers['content-length'];
  if (req.headers['transfer-encoding'] !== undefined || (length !== undefined && Number(length) !== 0)) {
    return problem('EG_BAD_REQUEST', 'a WebSocket handshake has no body (no Transfer-Encoding, no Content-Length but 0): after the upgrade its bytes would be read as frames');
  }
  if (req.headers.upgrade?.toLowerCase() !== 'websocket') {
    return problem('EG_UPGRADE_REQUIRED', `this listener speaks WebSocket only, not ${req.headers.upgrade}`, { headers: { upgrade: 'websocket' } });
  }
  const version = req.headers['sec-websocket-version'];
  if (Number(version) !== 13 && Number(version) !== 8) {
    // RFC 6455 §4.4: refuse with the versions the server speaks; RFC 9110 §15.5.22: a 426 names the protocol to upgrade to.
    return problem('EG_UPGRADE_REQUIRED', `WebSocket version ${version ?? '(none)'} is not spoken here; use 13`, { headers: { upgrade: 'websocket', 'sec-websocket-version': '13, 8' } });
  }
  const key = req.headers['sec-websocket-key'];
  if (key === undefined || !WS_KEY.test(key)) return problem('EG_BAD_REQUEST', 'the handshake needs a Sec-WebSocket-Key of 16 bytes in base64 (RFC 6455 §4.1)');
  const offered = req.headers['sec-websocket-protocol']?.split(',').map((p) => p.trim());
  if (offered !== undefined && (!offered.every((p) => TOKEN.test(p)) || new Set(offered).size !== offered.length)) {
    return problem('EG_BAD_REQUEST', 'Sec-WebSocket-Protocol must be a comma-separated list of distinct tokens');
  }
  return undefined;
}

const CLOUDEVENTS_SUBPROTOCOL_PREFIX = 'cloudevents.';

/**
 * The subprotocol a client's handshake is answered with: the first it offers, so browsers (which
 * refuse a connection that names none of theirs) connect, except the CloudEvents WebSocket
 * binding's (`cloudevents.json`, `.avro`, `.proto`). Naming one of those would tell the client
 * every frame is a structured event, both ways, and the gateway's frames are its own JSON (acks,
 * error frames, each forward's `format`); a client offering only those gets no subprotocol, the
 * binding's answer for one the server does not speak, and its library fails the connection.
 */
export function chosenSubprotocol(offered: ReadonlySet<string>): string | false {
  for (const protocol of offered) {
    if (!protocol.toLowerCase().startsWith(CLOUDEVENTS_SUBPROTOCOL_PREFIX)) return protocol;
  }
  return false;
}
