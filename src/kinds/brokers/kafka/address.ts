import { isIP } from 'node:net';

/**
 * A `host:port` the config names as a Kafka bootstrap server (its broker list, checked by
 * compileKafka), read as a host to connect to: an IPv6 literal is written in brackets
 * (`[::1]:9092`, as Kafka's own clients take it) and connected to without them, its zone id
 * (`[fe80::1%eth0]:9092`) kept: node connects through that interface.
 */
export function hostAndPort(entry: string): { host: string; port: number } {
  const at = entry.lastIndexOf(':');
  return { host: entry.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(entry.slice(at + 1)) };
}

/** An interface's name or index: Linux names are at most 15 characters (IFNAMSIZ), RFC 6874 zone ids unreserved characters. */
const ZONE_ID = /^[A-Za-z0-9_.~-]{1,15}$/;

/**
 * Why an IPv6 address with a zone id (`fe80::1%eth0`, without brackets) is not one to connect to,
 * or undefined (no zone id, or a good one). A zone id names the interface a link-local address is
 * reached through (RFC 4007; the loopback ::1 has link-local scope too), and the kernel ignores
 * one on any other address: there it is a mistake (an address copied from another host's view).
 */
export function zoneIdProblem(host: string): string | undefined {
  const at = host.indexOf('%');
  if (at < 0) return undefined;
  const address = host.slice(0, at);
  const zone = host.slice(at + 1);
  if (isIP(address) !== 6) return `a zone id (%${zone}) follows an IPv6 address only`;
  if (!ZONE_ID.test(zone)) return `a zone id names an interface (eth0) or its index (2): 1 to 15 letters, digits, '-', '_', '.' or '~', not '${zone}'`;
  // The WHATWG URL parser writes the address in its shortest form: `[fe80::1]`, `[::1]`.
  const canonical = new URL(`http://[${address}]/`).hostname;
  if (canonical !== '[::1]' && !/^\[fe[89ab][0-9a-f]:/.test(canonical)) return `a zone id (%${zone}) is only for a link-local address (fe80::/10) or ::1, which ${address} is not`;
  return undefined;
}
