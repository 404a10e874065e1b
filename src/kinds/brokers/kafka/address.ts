/**
 * A `host:port` the config names as a Kafka bootstrap server (its broker list, checked by
 * compileKafka), read as a host to connect to: an IPv6 literal is written in brackets
 * (`[::1]:9092`, as Kafka's own clients take it) and connected to without them.
 */
export function hostAndPort(entry: string): { host: string; port: number } {
  const at = entry.lastIndexOf(':');
  return { host: entry.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(entry.slice(at + 1)) };
}
