/**
 * What of YAML eventgate cannot take — tags that make what JSON has not or that nothing resolves,
 * a second document — found at its place and said in one set of words: the config loader's check
 * (src/config/source.ts, tagProblems) and AsyncAPI documents' (src/asyncapi/refs.ts). A module of
 * its own so the AsyncAPI parser's thread loads no more of the config loader than this.
 */
import { formatPath } from './diagnostics.js';
import type { PathPart } from './source.js';
import { type Document, isPair, isScalar, isSeq, type Node as YamlNode, visit } from './yaml.js';

/** The config path of a node `visit` reached, from its ancestors. */
export function pathOfNode(ancestors: readonly unknown[], node: unknown): PathPart[] {
  const path: PathPart[] = [];
  const chain = [...ancestors, node];
  for (let i = 0; i < chain.length - 1; i++) {
    const at = chain[i];
    // A merge key's value is yaml's symbol: `<<` as written, not `Symbol(<<)`.
    if (isPair(at) && isScalar(at.key)) path.push(typeof at.key.value === 'symbol' ? '<<' : String(at.key.value));
    else if (isSeq(at)) path.push(at.items.indexOf(chain[i + 1] as YamlNode));
  }
  return path;
}

/** YAML 1.1 types the yaml package makes on an explicit tag, none of which JSON has: what each makes, and what to write instead. */
const NON_JSON_TAGS: Record<string, { makes: string; write: string }> = {
  'tag:yaml.org,2002:binary': { makes: 'bytes', write: 'write the text as a string' },
  'tag:yaml.org,2002:set': { makes: 'a set', write: 'write a list' },
  'tag:yaml.org,2002:omap': { makes: 'an ordered map', write: 'write a map' },
  'tag:yaml.org,2002:timestamp': { makes: 'a date', write: 'write the date as a string' },
};

/** A problem of a YAML tag: `at` is the tag's offset in the text. */
export interface TagProblem {
  at: number;
  path: PathPart[];
  message: string;
}

/**
 * Every tag that makes what JSON has not (`!!binary`, `!!set`, `!!omap`, `!!timestamp`: toJS
 * makes a Uint8Array, Set, Map or Date, which the schema's checks take for a map, a Set or Map
 * with no own keys passing as an empty one, and the compiler cannot read), at the tag. `tagged`
 * is given the place and node of every tag written, by offset. AsyncAPI documents are checked with it too
 * (src/asyncapi/refs.ts): their parser said such a value `1:1`, as "a type it does not expect".
 */
export function nonJsonTags(doc: Document, text: string, tagged = new Map<number, { path: PathPart[]; node: unknown }>()): TagProblem[] {
  const found: TagProblem[] = [];
  visit(doc, (_key, node, ancestors) => {
    const tag = (node as { tag?: string } | null)?.tag;
    if (tag === undefined) return;
    const start = (node as YamlNode).range?.[0] ?? 0;
    // The node's range starts at its value; the tag, the mistake, is written before it (an anchor may be between).
    const written = /(!\S*)(?:\s+&\S+)?\s*$/.exec(text.slice(Math.max(0, start - 200), start));
    const at = written ? start - (written[0].length - written[0].indexOf('!')) : start;
    const path = pathOfNode(ancestors, node);
    tagged.set(at, { path, node });
    const kind = NON_JSON_TAGS[tag];
    if (!kind) return;
    const where = path.length > 0 ? `${formatPath(path)} is` : 'the value is';
    found.push({ at, path, message: `${where} tagged ${shortTag(tag)}, which makes ${kind.makes}: ${JSON_ONLY}; ${kind.write}, without the tag` });
    return visit.SKIP;
  });
  return found;
}

/**
 * Every tag the yaml package could not resolve, which it only warns of and drops (`topic: !Ref
 * orders` read as `orders`; `!!int x`), at the tag. `tagged` is what nonJsonTags filled in;
 * `keep` passes a node whose value fits its tag after all (the config's `!!int ${PORT}`).
 */
export function unresolvedTags(doc: Document, text: string, tagged: ReadonlyMap<number, { path: PathPart[]; node: unknown }>, keep: (node: unknown) => boolean = () => false): TagProblem[] {
  const found: TagProblem[] = [];
  for (const warning of doc.warnings) {
    if (warning.code !== 'TAG_RESOLVE_FAILED') continue;
    const at = warning.pos[0];
    const tag = /^[^\s,\]}]+/.exec(text.slice(at))?.[0] ?? '';
    const { path = [], node } = tagged.get(at) ?? {};
    if (keep(node)) continue;
    const where = path.length > 0 ? ` on ${formatPath(path)}` : '';
    const message = tag.startsWith('!!')
      ? `YAML tag ${tag}${where} does not fit the value after it, so it would be dropped, not applied: write the value without the tag`
      : `unknown YAML tag ${tag}${where}: eventgate resolves no custom tags (another tool's, such as CloudFormation's !Ref or !Sub), so the value would be read as if it had none; remove it (a value from the environment is written \${VAR})`;
    found.push({ at, path, message });
  }
  return found;
}

/** Every tag problem of a document, in the order of the text: what the config, its fragments, schemas and AsyncAPI documents are told alike. */
export function tagProblemsOf(doc: Document, text: string, keep?: (node: unknown) => boolean): TagProblem[] {
  const tagged = new Map<number, { path: PathPart[]; node: unknown }>();
  return [...nonJsonTags(doc, text, tagged), ...unresolvedTags(doc, text, tagged, keep)].sort((a, b) => a.at - b.at);
}

/** The yaml package's MULTIPLE_DOCS error advises a call of its API; what the user is told instead, at the second `---`. */
export const MULTIPLE_DOCUMENTS =
  'the file holds more than one YAML document (a second one starts at this `---`); eventgate reads one: remove the `---`, or move the second part to a file of its own (in a config, with `include:`)';

const JSON_ONLY = 'eventgate reads only JSON values from YAML (maps, lists, strings, numbers, booleans, null)';

/** `tag:yaml.org,2002:set` as written, `!!set`. */
function shortTag(tag: string): string {
  return tag.startsWith('tag:yaml.org,2002:') ? `!!${tag.slice('tag:yaml.org,2002:'.length)}` : tag;
}
