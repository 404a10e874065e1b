/**
 * What an MQTT topic or filter may be, checked where the config names one (validate) and where a
 * route computes one per message: mosquitto closes the connection on a publish to a topic with a
 * wildcard and refuses a malformed filter, so a route naming one could never work.
 */

import type { Qos } from '../../contracts.js';
import type { MqttSettings } from '../mqtt.js';

/**
 * Characters an MQTT UTF-8 string must not (NUL) or should not hold (MQTT 5 §1.5.4: control
 * characters and non-characters), and that servers refuse by closing the connection, as mosquitto
 * does ("Malformed UTF-8"): every message in flight on it would fail with the one that holds them.
 */
const MQTT_UNSAFE = /[\u0000-\u001f\u007f-\u009f\ufdd0-\ufdef\ufffe\uffff]|[\ud83f\ud87f\ud8bf\ud8ff\ud93f\ud97f\ud9bf\ud9ff\uda3f\uda7f\udabf\udaff\udb3f\udb7f\udbbf\udbff][\udffe\udfff]/;

/** What an MQTT string may not hold that `text` does (`the control character U+0009`), or undefined. */
export function mqttStringProblem(text: string): string | undefined {
  const found = MQTT_UNSAFE.exec(text)?.[0];
  if (found === undefined) return undefined;
  const code = `U+${found.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
  return found.length === 1 && found <= '\u009f' ? `the control character ${code}` : `the non-character ${code}`;
}

/** Why `topic` cannot be published to, or undefined. */
export function publishTopicProblem(topic: string): string | undefined {
  if (topic.includes('+') || topic.includes('#')) return 'an MQTT topic to publish to cannot hold the wildcards + or #';
  // MQTT 5 §4.8.2 keeps `$share/` for shared subscriptions; mosquitto refuses such a publish (0x87), which was a 503 retried for ever.
  if (/^\$share(\/|$)/.test(topic)) return 'an MQTT topic to publish to cannot start with $share, which names shared subscriptions';
  // The server's own topics: mosquitto refuses a publish to any topic starting with $SYS, 0x87 over
  // MQTT 5 (a 503 a consume route retried for ever) and a PUBACK for a dropped message over 3.1.1.
  if (topic.startsWith('$SYS')) return "an MQTT topic to publish to cannot start with $SYS, the server's own topics (mosquitto refuses such a publish)";
  const bad = mqttStringProblem(topic);
  if (bad) return `an MQTT topic cannot hold ${bad}`;
  if (Buffer.byteLength(topic) > 65535) return 'an MQTT topic is at most 65535 bytes';
  return undefined;
}

/** Whether a topic filter is well formed: `#` only last and alone in its level, `+` alone in its level. */
export function filterProblem(filter: string): string | undefined {
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]!;
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return `'#' must be a whole level, and the last one`;
    if (l.includes('+') && l !== '+') return `'+' must be a whole level`;
  }
  const bad = mqttStringProblem(filter);
  return bad ? `an MQTT topic filter cannot hold ${bad}` : undefined;
}

/**
 * Why `filter` cannot be a route's `from.topic`, or undefined. A filter written as a shared
 * subscription (`$share/g/x`, as mosquitto_sub takes it) was subscribed as `$share/<group>/$share/g/x`,
 * which matches nothing: the route was ready and never got a message.
 */
export function subscribeTopicProblem(filter: string): string | undefined {
  if (/^\$share(\/|$)/.test(filter)) {
    const parts = /^\$share\/([^/]+)\/(.+)$/s.exec(filter);
    const how = parts ? ` (topic: "${parts[2]}", group: "${parts[1]}")` : '';
    return `a shared subscription is written as the route's topic and group${how}: the gateway subscribes through $share/<group>/ itself`;
  }
  return filterProblem(filter);
}

/**
 * Whether a route's filter is subscribed as a shared subscription. A filter of the server's own
 * topics (starting with `$`, as `$SYS/#`) is not: mosquitto 2.0 delivers none of them to a shared
 * subscription, so such a route was ready and never got a message; every instance reads them.
 */
export function sharable(filter: string): boolean {
  return !filter.startsWith('$');
}

/**
 * Why `group` cannot be the share name of a shared subscription (`$share/<group>/<filter>`), or
 * undefined. MQTT 5 (§4.8.2) forbids `/`, `+` and `#` in it: servers refuse `+` and `#`, and take
 * the text after a `/` as the filter, so a route with group `a/b` on topic `t` read `b/t`.
 */
export function shareNameProblem(group: string): string | undefined {
  if (/[/+#]/.test(group)) return 'it is the share name of the MQTT shared subscription ($share/<group>/<filter>), which cannot hold /, + or # (after a /, the server reads the rest as the filter)';
  const bad = mqttStringProblem(group);
  return bad ? `it is the share name of the MQTT shared subscription, which cannot hold ${bad}` : undefined;
}

/** Whether an MQTT topic filter (with `+` and `#`) matches a concrete topic (MQTT 3.1.1 §4.7). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return !(i === 0 && t[0]!.startsWith('$'));
    if (i >= t.length) return false;
    if (f[i] === '+') {
      if (i === 0 && t[0]!.startsWith('$')) return false;
      continue;
    }
    if (f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** The QoS for a topic when the route names none: the first `qosByTopic` filter that matches it, else the broker's `qos`. */
export function qosFor(settings: MqttSettings, topic: string): Qos {
  for (const [filter, qos] of settings.qosByTopic) if (topicMatches(filter, topic)) return qos;
  return settings.qos;
}
