/** MQTT packet types whose first byte the framer hands to `take` (their flags are fixed at 0). */
export const PUBACK = 0x40;
export const PUBREC = 0x50;
export const PUBCOMP = 0x70;

/**
 * A PUBACK or PUBREC for packet id `id`, success: a remaining length of 2, which MQTT 5 reads as
 * reason code 0 with no properties (MQTT 5 §3.4.2.1, §3.5.2.1), as MQTT 3.1.1 does.
 */
export function acknowledgement(type: typeof PUBACK | typeof PUBREC, id: number): Buffer {
  return Buffer.from([type, 2, id >> 8, id & 0xff]);
}

/**
 * Splits the bytes a publishing connection receives into the acknowledgements of its publishes
 * (PUBACK, PUBREC, PUBCOMP), read here, and everything else, passed on in order to mqtt.js's
 * parser. mqtt.js reads each acknowledgement as a packet object, through a dozen debug calls, one
 * `process.nextTick` per packet and a keepalive timer re-armed per packet: ~2.7 KB allocated and a
 * tenth of the gateway's CPU per QoS 1 publish. An acknowledgement `take` declines (not one of
 * ours, not the one expected, malformed) goes to mqtt.js as before, which handles it as it always
 * did; so does every byte after a remaining length that cannot be read (mqtt.js reports it).
 * Packets may be split anywhere across chunks: an acknowledgement's bytes wait for the rest, other
 * packets are passed on piece by piece as they come.
 */
export class AckFramer {
  /** The start of a packet whose header or (acknowledgement's) body is still to come. */
  private carry: Buffer | undefined;
  /** Bytes of a packet being passed on that are still to come. */
  private skip = 0;
  /** After a remaining length that cannot be read: everything goes to mqtt.js, which fails the connection. */
  private passAll = false;

  constructor(
    private readonly v5: boolean,
    /** An acknowledgement for packet id `id` with reason code `rc` (0 when absent): true when it was ours and handled. */
    private readonly take: (type: number, id: number, rc: number) => boolean,
    private readonly forward: (bytes: Buffer) => void,
  ) {}

  read(chunk: Buffer): void {
    if (this.passAll) return this.forward(chunk);
    let buf = chunk;
    if (this.carry) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    let at = 0;
    if (this.skip > 0) {
      at = Math.min(this.skip, buf.length);
      this.skip -= at;
    }
    /** Where the bytes still to be passed on start. */
    let from = 0;
    while (at < buf.length) {
      const start = at;
      const type = buf[at]!;
      let len = 0;
      let p = at + 1;
      let complete = false;
      for (let i = 0, mul = 1; i < 4 && p < buf.length; i++, mul *= 128) {
        const b = buf[p++]!;
        len += (b & 0x7f) * mul;
        if (b < 0x80) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        if (p - start > 4) {
          this.passAll = true;
          return this.forward(buf.subarray(from));
        }
        this.pass(buf, from, start);
        this.carry = Buffer.from(buf.subarray(start));
        return;
      }
      const end = p + len;
      if ((type === PUBACK || type === PUBREC || type === PUBCOMP) && (this.v5 ? len >= 2 : len === 2)) {
        if (end > buf.length) {
          this.pass(buf, from, start);
          this.carry = Buffer.from(buf.subarray(start));
          return;
        }
        if (this.ours(buf, p, len) && this.take(type, buf.readUInt16BE(p), len > 2 ? buf[p + 2]! : 0)) {
          this.pass(buf, from, start);
          from = end;
        }
        at = end;
        continue;
      }
      if (end > buf.length) {
        this.skip = end - buf.length;
        break;
      }
      at = end;
    }
    this.pass(buf, from, buf.length);
  }

  /** An MQTT 5 acknowledgement's properties, when present, fit in it (else mqtt.js reports the packet). */
  private ours(buf: Buffer, p: number, len: number): boolean {
    if (len <= 3) return true;
    let props = 0;
    let q = p + 3;
    for (let i = 0, mul = 1; i < 4; i++, mul *= 128) {
      if (q >= p + len) return false;
      const b = buf[q++]!;
      props += (b & 0x7f) * mul;
      if (b < 0x80) return q + props === p + len;
    }
    return false;
  }

  private pass(buf: Buffer, from: number, to: number): void {
    if (to > from) this.forward(from === 0 && to === buf.length ? buf : buf.subarray(from, to));
  }
}
