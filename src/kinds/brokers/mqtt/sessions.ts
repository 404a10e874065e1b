/**
 * The persistent sessions of consume routes, across reloads: those a route left on the server when
 * it stopped, those running now, and ending the ones no route will resume.
 */

import type { Logger } from '../../../log.js';
import { within } from '../../../core/within.js';
import type { MqttSettings } from '../mqtt.js';
import { clientOptions, disconnect, type MqttLib } from './connection.js';

/**
 * Persistent sessions that consume routes of this process left on a server when they stopped, by
 * server URL and client id: the filter each was subscribed to, and whether a successor unsubscribed
 * it already. A session keeps its subscription when its route stops (so the server keeps what
 * arrives until the route is back), and a reload's successor must not inherit a subscription it
 * does not want (`MqttSubscription.dropReplacedFilter`, `adoptLeftSessions`): a session it
 * resumes under the same client id with another filter (the route's topic or group changed, or `sharedSubscriptions`)
 * would go on receiving the old filter's messages beside the new one's — each message twice when
 * only the `$share/` prefix changed; a session left under another client id (the broker's
 * `clientId` changed, or a route that names its `group` renamed) would go on taking its share of
 * the group's messages, which no route would ever take again.
 */
export const leftSessions = new Map<string, Map<string, LeftSession>>();

/** A persistent session a consume route left on the server when it stopped (leftSessions). */
export interface LeftSession {
  filter: string;
  /** A successor, or the route's own leave, unsubscribed it: the server routes nothing more to it. */
  unsubscribed: boolean;
  /**
   * QoS 1 and 2 messages its route gave back, unacknowledged, and never took since (a target
   * failing while a removed route left its group), on any of the session's connections, one that
   * closed during the leave too: when each stops counting (the end of its MQTT 5 Message Expiry
   * Interval, after which the server sends it no more; Infinity without one). The server holds
   * them for the session and sends them again when it is resumed or taken over, so such a session,
   * once unsubscribed, is kept while one still counts (heldGivenBack).
   */
  givenBackUntil: number[];
  /**
   * The Session Expiry Interval its connection gave the server (MQTT 5), which ends it that long
   * after its disconnect; none on MQTT 3.1.1, whose sessions do not expire. The session's own: a
   * broker of another protocol version may name the same server.
   */
  expirySeconds: number | undefined;
  /** endLeftSessions warned that it keeps it (once, not at every later reload). */
  kept?: boolean;
}

/**
 * The persistent sessions consume routes of this process run now, by server URL: their client ids
 * and filters, counted (a rebuilt route's successor runs beside its predecessor for a moment).
 * A session left by a reload that neither names is one no route will resume or take over.
 */
const liveSessions = new Map<string, { ids: Map<string, number>; filters: Map<string, number> }>();

export function countLive(url: string, id: string, filter: string, by: 1 | -1): void {
  let live = liveSessions.get(url);
  if (!live) liveSessions.set(url, (live = { ids: new Map(), filters: new Map() }));
  for (const [map, key] of [
    [live.ids, id],
    [live.filters, filter],
  ] as const) {
    const n = (map.get(key) ?? 0) + by;
    if (n > 0) map.set(key, n);
    else map.delete(key);
  }
}

/**
 * After a reload: the sessions that routes of this process left and that no running route resumes
 * or takes over (the route was removed, or renamed: its default group, so its filter, changed) are
 * ended on the server. Left alone, the server went on queueing every message of their filter for
 * them until `sessionExpirySeconds` (a day by default) or its queue limit (docs/spec-checklist.md,
 * point 156). Client ids are per instance, so such a session is this process's alone. Except one
 * its route unsubscribed as it left and gave messages back to (keepSession): it is kept.
 */
export async function endLeftSessions(lib: MqttLib, settings: MqttSettings, log: Logger): Promise<void> {
  const left = leftSessions.get(settings.url);
  if (!left) return;
  const live = liveSessions.get(settings.url);
  for (const [id, session] of [...left]) {
    if (live?.ids.has(id) || live?.filters.has(session.filter)) continue;
    const givenBack = heldGivenBack(session);
    if (session.unsubscribed && givenBack > 0) {
      if (!session.kept) keepSession(id, session, givenBack, log);
      session.kept = true;
      continue;
    }
    left.delete(id);
    if (givenBack > 0)
      log.warn(
        { session: id, filter: session.filter, givenBack },
        `mqtt session of a consume route a reload removed is ended with ${givenBack} message(s) its route gave back, unacknowledged: still subscribed (its route could not unsubscribe as it left), it would go on collecting its filter's messages; those are lost`,
      );
    if (!(await endSession(lib, settings, id, session.filter, log))) unendedOf(settings.url).set(id, session.filter);
  }
}

/**
 * A session a removed route unsubscribed as it left, holding messages its route gave back (a
 * target failing during the leave): ending it would lose them, and unsubscribed it collects nothing
 * more, so it stays on the server, in leftSessions, for a route reading its filter again to take
 * over (adoptLeftSessions; the same route put back resumes it). MQTT 5 ends it `sessionExpirySeconds`
 * after its disconnect; MQTT 3.1.1 has no expiry: it stays until someone ends it, so the warning
 * names the client id to end it with (docs/scaling.md).
 */
function keepSession(id: string, session: LeftSession, givenBack: number, log: Logger): void {
  const why = `mqtt session of a consume route a reload removed kept on the server: it holds ${givenBack} message(s) its route gave back unacknowledged (a target failed as it stopped); a route reading '${session.filter}' again takes them`;
  const expiry = session.expirySeconds;
  if (expiry !== undefined)
    log.warn({ session: id, filter: session.filter, givenBack, sessionExpirySeconds: expiry }, `${why}; the server ends the session ${expiry} s (sessionExpirySeconds) after it disconnected`);
  else
    log.warn(
      { session: id, filter: session.filter, givenBack },
      `${why}; MQTT 3.1.1 sessions do not expire: it stays on the server until a clean-session connect with client id '${id}' ends it (docs/scaling.md)`,
    );
}

/**
 * How many of the messages its route gave back the server still holds for a left session: those
 * whose Message Expiry Interval ended are dropped (the server sends an expired message no more:
 * MqttSubscription.givenBackHeld). Read at each reload's end, so a session kept for messages that
 * expire later is ended at the first reload after they did.
 */
function heldGivenBack(session: LeftSession): number {
  const now = Date.now();
  session.givenBackUntil = session.givenBackUntil.filter((until) => until > now);
  return session.givenBackUntil.length;
}

/**
 * Sessions endLeftSessions could not end (the server not reached: a partition, the server away
 * during the reload), by server URL and client id, with their filter: ended at the next connect of
 * a publish connection to that server (endUnendedSessions). Before, they stayed subscribed and the
 * server queued their topic's messages for a day (fault audit, point 172). Kept apart from
 * leftSessions: those are decided at a reload's end only, when a rebuilt route's successor runs.
 */
const unendedSessions = new Map<string, Map<string, string>>();

/** Server URLs whose unended sessions are being ended now (connects can come faster than a try). */
const endingUnended = new Set<string>();

function unendedOf(url: string): Map<string, string> {
  let unended = unendedSessions.get(url);
  if (!unended) unendedSessions.set(url, (unended = new Map()));
  return unended;
}

/** A publish connection to the server connected: the sessions a reload could not end are ended now, unless a route runs one again (a later reload). */
export async function endUnendedSessions(lib: MqttLib, settings: MqttSettings, log: Logger): Promise<void> {
  const unended = unendedSessions.get(settings.url);
  if (!unended || unended.size === 0 || endingUnended.has(settings.url)) return;
  endingUnended.add(settings.url);
  try {
    for (const [id, filter] of [...unended]) {
      unended.delete(id);
      const live = liveSessions.get(settings.url);
      if (live?.ids.has(id) || live?.filters.has(filter)) continue;
      if (!(await endSession(lib, settings, id, filter, log))) unended.set(id, filter);
    }
  } finally {
    endingUnended.delete(settings.url);
  }
}

/** Connects as `clientId` with a clean session (MQTT 5: no expiry), which discards the one the server held, and disconnects; false when the server was not reached. */
async function endSession(lib: MqttLib, settings: MqttSettings, clientId: string, filter: string, log: Logger): Promise<boolean> {
  const client = lib.connect(settings.url, { ...clientOptions(settings, clientId, false), reconnectPeriod: 0 });
  client.on('error', () => undefined);
  const connected = new Promise<boolean>((resolve) => {
    client.once('connect', () => resolve(true));
    client.once('close', () => resolve(false));
  });
  const ok = (await within(connected, settings.connectTimeoutMs)) === 'done' && (await connected);
  if (ok) {
    await disconnect(client, settings, log);
    log.info({ session: clientId, filter }, 'mqtt session of a consume route a reload removed ended on the server');
    return true;
  }
  client.end(true);
  log.warn({ session: clientId, filter }, 'mqtt session of a consume route a reload removed could not be ended (server not reached); ending it at the next connect');
  return false;
}
