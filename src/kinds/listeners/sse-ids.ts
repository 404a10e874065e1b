/**
 * Event-stream ids (`id:`, sent back as `Last-Event-ID` or `?lastEventId=`): what a client has
 * seen, per route feeding the path, and of which source.
 *
 * One route: `<tag>~<partition>:<offset>,...` (`kQ3x~0:41,1:17`). Several routes:
 * `<route>=<tag>~<positions>` per route, `;` between them, routes sorted by name
 * (`orders=kQ3x~0:41;refunds=Zb_9~0:5`). The tag (SOURCE_TAG_LENGTH base64url characters of a
 * hash of the route's source: broker kind and name, topic, a JetStream subject's stream) tells
 * an id of this source from one of another: offsets alone cannot, and a reload that changes a
 * route's topic would have the new topic read after the old one's offsets, skipping what it
 * holds. base64url and `~` are characters EventSource keeps and encodeURIComponent leaves as they
 * are, and `~` is in no id of the old form, so neither form is taken for the other.
 *
 * Ids of the old form, without a tag (`0:41`, `orders=0:41;refunds=0:5`: what a client got before
 * tags), are read as positions of the route's source now, as they always were.
 */
import { createHash } from 'node:crypto';

/** Positions per partition: the last offset seen of each. */
export type Positions = Map<number, bigint>;

/** What a client has seen of one route's source: positions, and the tag of the source they are in (undefined: an id of the old form). */
export interface Seen {
  tag: string | undefined;
  at: Positions;
  /** The path's own positions only: per partition, the incarnation of the source its position is of (Message's SOURCE_INCARNATION). */
  incarnations?: Map<number, number>;
}

/** What has been seen per source route of a path: one entry on a path one route feeds. */
export type SourcePositions = Map<string, Seen>;

/** Characters of a source's tag: 24 bits of its hash, two sources' tags alike once in 16 million. */
export const SOURCE_TAG_LENGTH = 4;

/** The tag event ids carry of a source (ReplaySource.sourceKey); undefined for a source without positions. */
export function sourceTag(sourceKey: string | undefined): string | undefined {
  return sourceKey === undefined ? undefined : createHash('sha256').update(sourceKey).digest('base64url').slice(0, SOURCE_TAG_LENGTH);
}

/**
 * The resume notice for an id of another source than the route's. A memory broker's tag changes
 * with each run (its offsets begin again), so after a restart every id it gave is another source's,
 * as is one another instance's gave (a browser reconnecting through a load balancer, a rolling deploy).
 */
export const OTHER_SOURCE =
  "Last-Event-ID is of another source than this stream's (another topic or stream, this route's before a reload changed it, or a memory topic of another instance or an earlier run of the gateway); resuming from the oldest retained event";

/** The positions of `route` in `seen` when they are of the source tagged `tag`. */
export function positionsOf(seen: SourcePositions | undefined, route: string, tag: string | undefined): Positions | undefined {
  const s = seen?.get(route);
  return s !== undefined && s.tag === tag ? s.at : undefined;
}

export function copyPositions(positions: SourcePositions): SourcePositions {
  return new Map([...positions].map(([route, s]) => [route, { tag: s.tag, at: new Map(s.at) }]));
}

/**
 * `base` with the positions of `seen` that are further (a copy), or undefined when none is. A
 * route's positions in `seen` of another source than `base`'s are not compared: they name nothing
 * the route reads now.
 */
export function beyond(base: SourcePositions, seen: SourcePositions): SourcePositions | undefined {
  let merged: SourcePositions | undefined;
  for (const [route, s] of seen) {
    const mine = base.get(route);
    if (mine !== undefined && mine.tag !== s.tag) continue;
    for (const [p, offset] of s.at) {
      if ((mine?.at.get(p) ?? -1n) >= offset) continue;
      merged ??= copyPositions(base);
      let m = merged.get(route);
      if (!m) merged.set(route, (m = { tag: s.tag, at: new Map() }));
      m.at.set(p, offset);
    }
  }
  return merged;
}

/** The id of one route's positions (`kQ3x~0:41,1:17`), or undefined when no position is known. */
export function formatId(seen: Seen | undefined): string | undefined {
  if (seen === undefined || seen.at.size === 0) return undefined;
  const positions = [...seen.at]
    .sort((a, b) => a[0] - b[0])
    .map(([part, off]) => `${part}:${off}`)
    .join(',');
  return seen.tag === undefined ? positions : `${seen.tag}~${positions}`;
}

/** The id of a path several routes feed: `<route>=<tag>~<positions>` per route that has any, `;`-separated. */
export function formatSources(sources: SourcePositions): string | undefined {
  const parts: string[] = [];
  for (const route of [...sources.keys()].sort()) {
    const id = formatId(sources.get(route));
    if (id !== undefined) parts.push(`${route}=${id}`);
  }
  return parts.length > 0 ? parts.join(';') : undefined;
}

/** The per-route positions a composite `Last-Event-ID` names, or undefined when it is not one. */
export function parseSources(id: string): SourcePositions | undefined {
  const out: SourcePositions = new Map();
  for (const part of id.split(';')) {
    // A route name of any length (the config allows any; the header's size is bounded before this).
    const m = /^\s*([A-Za-z0-9._-]+)=(.*)$/.exec(part);
    const seen = m ? parseId(m[2]!) : undefined;
    if (!seen) return undefined;
    out.set(m![1]!, seen);
  }
  return out.size > 0 ? out : undefined;
}

/** What a one-route `Last-Event-ID` names (with or without a tag), or undefined when it is not one of ours. */
export function parseId(id: string): Seen | undefined {
  // Any tag length, so that ids of a release with longer tags are read as another source's, not as no id.
  const tagged = /^\s*([A-Za-z0-9_-]{1,16})~(.*)$/.exec(id);
  const at = parsePositions(tagged ? tagged[2]! : id);
  return at && { tag: tagged?.[1], at };
}

function parsePositions(text: string): Positions | undefined {
  const out: Positions = new Map();
  for (const pair of text.split(',')) {
    const m = /^\s*(\d{1,9}):(\d{1,19})\s*$/.exec(pair);
    if (!m) return undefined;
    out.set(Number(m[1]), BigInt(m[2]!));
  }
  return out.size > 0 ? out : undefined;
}
