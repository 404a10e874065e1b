import { hostname } from 'node:os';
import type { Env } from './source.js';

/** The most characters EVENTGATE_INSTANCE_ID takes: a DNS label (a pod or host name) fits. */
export const MAX_INSTANCE_ID_LENGTH = 64;

/** The characters an instance id holds (instanceIdProblem). */
const ID_CHAR = /^[A-Za-z0-9._-]$/;

/**
 * This gateway's instance id: `EVENTGATE_INSTANCE_ID`, or `<hostname>-<pid>` when it is unset or
 * empty (defaultInstanceId). It goes into per-instance consumer group, queue and MQTT client id names.
 */
export function instanceId(env: Env): string {
  return env.EVENTGATE_INSTANCE_ID || defaultInstanceId(hostname(), process.pid);
}

/**
 * `<host>-<pid>` held to what `EVENTGATE_INSTANCE_ID` takes: a character of the host name other
 * than letters, digits, `.`, `_` and `-` becomes `-`, and the name is cut so that the whole id has
 * at most 64 characters (a Linux host name may have 64, and the pid follows it whole). Unchecked,
 * a host name of a character a broker refuses in a client id or a queue name made a route fail
 * only when that broker refused it.
 */
export function defaultInstanceId(host: string, pid: number): string {
  const suffix = `-${pid}`;
  const name = [...host].map((c) => (ID_CHAR.test(c) ? c : '-')).slice(0, MAX_INSTANCE_ID_LENGTH - suffix.length);
  return `${name.join('') || 'eventgate'}${suffix}`;
}

/**
 * Why `EVENTGATE_INSTANCE_ID` cannot be used, or undefined when it can (or is unset). Brokers
 * differ in what they take in those names (an AMQP queue name is at most 255 bytes, many MQTT
 * servers refuse client ids past 23 characters or with spaces, a NATS consumer name has no '.'):
 * one taken as it was (a newline, a space, 5000 characters) made a route fail only when a broker
 * refused it, so a start refuses it instead, naming the variable and what it takes.
 */
export function instanceIdProblem(env: Env): string | undefined {
  const value = env.EVENTGATE_INSTANCE_ID;
  if (value === undefined || value === '') return undefined;
  const allowed = `it names this instance in per-instance consumer groups, queue names and MQTT client ids, so it takes 1 to ${MAX_INSTANCE_ID_LENGTH} letters (A-Z, a-z), digits, '.', '_' and '-'`;
  const chars = [...value];
  if (chars.length > MAX_INSTANCE_ID_LENGTH) return `EVENTGATE_INSTANCE_ID is ${chars.length} characters long: ${allowed}`;
  const bad = chars.findIndex((c) => !ID_CHAR.test(c));
  if (bad >= 0) return `EVENTGATE_INSTANCE_ID ${JSON.stringify(value)} has ${JSON.stringify(chars[bad])} at character ${bad + 1}: ${allowed}`;
  return undefined;
}
