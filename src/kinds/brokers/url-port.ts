/**
 * The port a server URL names (`scheme://user:password@host:port/path`, or nats's bare
 * `host:port`), checked at load: node refuses a port past 65535 at connect, which made `run` exit
 * naming no broker (mqtt.js) or made the client take the URL for invalid and retry for ever
 * (nats.js: `Invalid URL`; amqplib: `Expected amqp: or amqps: as the protocol`); mqtt.js took
 * port 0 for its default, 1883.
 */
export function urlPortProblem(url: string): string | undefined {
  const rest = url.includes('://') ? url.slice(url.indexOf('://') + 3) : url;
  const authority = rest.split(/[/?#]/, 1)[0]!;
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  const port = hostPort.startsWith('[') ? hostPort.slice(hostPort.indexOf(']') + 1).replace(/^:/, '') : hostPort.includes(':') ? hostPort.slice(hostPort.lastIndexOf(':') + 1) : '';
  if (port === '') return undefined;
  if (/^\d+$/.test(port) && Number(port) >= 1 && Number(port) <= 65535) return undefined;
  return `names port '${port}', but a port is a number from 1 to 65535`;
}
