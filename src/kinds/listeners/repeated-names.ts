/**
 * Member names an object of a client's JSON gives twice (`{"id":"x","id":1}`). JSON.parse keeps
 * the last, and a chain validates that; but the body goes on to brokers as the client wrote it,
 * and readers that keep the first (gjson and other streaming parsers) would read a value the
 * gateway never checked. I-JSON (RFC 7493 §2.3) says names MUST be unique: such bodies are refused.
 * A payload from a broker or a kafka listener's record is not the gateway's to refuse, but a
 * validate step fails one as invalid (steps/validate.ts, from the bytes it goes on as), and the
 * byte check of a kafka listener's records never passes one (plan/json-bytes.ts' newName).
 *
 * Found cheaply: jsonShape counts the members on its scan of the bytes (a `:` outside strings is
 * one member), memberCount counts the parsed value's keys; fewer keys than members means a name
 * came twice. Only then is the text read again (repeatedName) to say which.
 */

/** Why a repeated name is refused, in the words of a 400 and of a validate step's error. */
export const REPEATED_NAMES_WHY = 'readers differ on which value they take, so names must be unique (RFC 7493)';

/** A member name an object gives twice, and the JSON pointer of that object ('' for the root). */
export interface RepeatedName {
  /** Undefined only if the text could not be read again to say which (it always can for text JSON.parse took). */
  name: string | undefined;
  at: string;
}

/**
 * The first repeated name of `value`, parsed from `text` whose scan (jsonShape) counted `members`
 * object members; undefined when every member kept its name. `text` is called only when a name
 * did repeat: the usual value costs one walk of its keys.
 */
export function repeatedNameOf(value: unknown, members: number, text: () => string): RepeatedName | undefined {
  if (members === 0 || memberCount(value) === members) return undefined;
  const found = repeatedName(text());
  return found ?? { name: undefined, at: '' };
}

/** A repeated name in words, for a client's 400 or a validate step's detail: `the name "id" twice in one object (in the object at /a/1)`. */
export function repeatedNameText(r: RepeatedName): string {
  const where = r.at === '' ? '' : ` (in the object at ${r.at})`;
  return `${nameWords(r)} twice in one object${where}`;
}

/** A repeated name as one of a validate step's errors, "<pointer>: <message>" as ajv's are: `/a/1: must not give the name "id" twice (...)`. */
export function repeatedNameError(r: RepeatedName): string {
  return `${r.at}: must not give ${nameWords(r)} twice (${REPEATED_NAMES_WHY})`;
}

function nameWords(r: RepeatedName): string {
  return r.name === undefined ? 'a member name' : `the name ${JSON.stringify(r.name)}`;
}

/** How many members the objects in `value` hold, nested ones included (JSON.parse's output: own keys only). */
export function memberCount(value: unknown): number {
  return value !== null && typeof value === 'object' ? membersIn(value, 0) : 0;
}

/** memberCount of a container: recursive for the first levels (no allocation), iterative below them (a body may nest 100,000 deep). */
function membersIn(v: object, depth: number): number {
  if (depth > 32) return membersBelow(v);
  let members = 0;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x: unknown = v[i];
      if (x !== null && typeof x === 'object') members += membersIn(x, depth + 1);
    }
    return members;
  }
  const o = v as Record<string, unknown>;
  for (const k in o) {
    members++;
    const x = o[k];
    if (x !== null && typeof x === 'object') members += membersIn(x, depth + 1);
  }
  return members;
}

/** membersIn's walk with a list of the containers still to visit. */
function membersBelow(root: object): number {
  const pending: object[] = [root];
  let members = 0;
  while (pending.length > 0) {
    const v = pending.pop()!;
    if (Array.isArray(v)) {
      for (const x of v as unknown[]) if (x !== null && typeof x === 'object') pending.push(x);
      continue;
    }
    const o = v as Record<string, unknown>;
    for (const k in o) {
      members++;
      const x = o[k];
      if (x !== null && typeof x === 'object') pending.push(x);
    }
  }
  return members;
}

/** One object or array being read by repeatedName: its names so far (objects) or its index (arrays). */
interface Level {
  names: Set<string> | undefined;
  /** The member or element being read, for the pointer. */
  at: string | number;
}

/**
 * The first name an object in `text` (valid JSON: JSON.parse took it) gives twice, with the
 * JSON pointer of that object; undefined when none does.
 */
export function repeatedName(text: string): { name: string; at: string } | undefined {
  const levels: Level[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7b) levels.push({ names: new Set(), at: '' });
    else if (c === 0x5b) levels.push({ names: undefined, at: 0 });
    else if (c === 0x7d || c === 0x5d) levels.pop();
    else if (c === 0x2c) {
      const top = levels[levels.length - 1];
      if (top && top.names === undefined) top.at = (top.at as number) + 1;
    } else if (c === 0x22) {
      const end = stringEnd(text, i);
      const top = levels[levels.length - 1];
      if (top?.names !== undefined && nextSignificant(text, end + 1) === 0x3a) {
        const name = JSON.parse(text.slice(i, end + 1)) as string;
        if (top.names.has(name)) return { name, at: pointer(levels.slice(0, -1)) };
        top.names.add(name);
        top.at = name;
      }
      i = end;
    }
  }
  return undefined;
}

/** The index of the quote that ends the string starting at `start`. */
function stringEnd(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) i++;
    else if (c === 0x22) return i;
  }
  return text.length;
}

/** The first character at or after `from` that is not JSON whitespace. */
function nextSignificant(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return c;
  }
  return -1;
}

/** The JSON pointer (RFC 6901) of the object the innermost of `levels` reads a member of. */
function pointer(levels: readonly Level[]): string {
  return levels.map((l) => `/${String(l.at).replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
}
