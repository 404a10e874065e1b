/**
 * JSON for a header the gateway writes itself (`_asyncapi_eg_validation_error`, `_eventgate_error`),
 * which quotes what a message held: an error names a property by its JSON Pointer, and a property
 * name may hold any character. JSON.stringify escapes only C0 controls; a C1 control (U+0080-U+009F,
 * and DEL) or a non-character (U+FFFE, U+FDD0...) was written as it is, which an MQTT 5 user property
 * must not hold (mosquitto closes the connection): the tagged message was refused as invalid, a
 * dead-lettered one failed as 503 with every publish in flight on the connection. Escaped as
 * `\uXXXX`, the header is the same JSON value, and every broker carries it.
 */
const UNSAFE = /[\u007f-\u009f\ufdd0-\ufdef\ufffe\uffff]|[\ud83f\ud87f\ud8bf\ud8ff\ud93f\ud97f\ud9bf\ud9ff\uda3f\uda7f\udabf\udaff\udb3f\udb7f\udbbf\udbff][\udffe\udfff]/g;

const escaped = (s: string) =>
  [...s].map((c) => (c.length === 1 ? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}` : `\\u${c.charCodeAt(0).toString(16)}\\u${c.charCodeAt(1).toString(16)}`)).join('');

export function headerJson(value: unknown): string {
  return JSON.stringify(value).replace(UNSAFE, escaped);
}
