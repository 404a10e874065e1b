/**
 * JSON's syntax errors with their place, for the JSON files a config references (JSON Schemas,
 * AsyncAPI documents: config/source.ts parseDataFile, asyncapi/refs.ts).
 */

/**
 * Where JSON.parse would fail, as a 1-based line and column, with its message. V8 gives a
 * position for some errors only ("Unexpected token 'x', "<the text>" is not valid JSON" has none,
 * and quotes the file), so the place is found by scanning. A leading byte order mark is allowed.
 */
export function jsonSyntaxProblem(text: string): { line: number; column: number; message: string } | undefined {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  let message: string;
  try {
    JSON.parse(body);
    return undefined;
  } catch (err) {
    message = (err as Error).message
      .replace(/, (?:\.\.\.)?".*"(?:\.\.\.)? is not valid JSON$/s, '')
      .replace(/ at position \d+.*$/s, '')
      .replace(/ in JSON$/, '')
      .replace(/ of JSON input$/, ' of the file');
  }
  // Positions as an editor shows them: the byte order mark takes no column.
  const offset = jsonErrorOffset(body);
  const before = body.slice(0, offset);
  return { line: before.split('\n').length, column: offset - (before.lastIndexOf('\n') + 1) + 1, message };
}

/** Offset of the first character that makes `t` not JSON (t.length when it ends too soon). */
function jsonErrorOffset(t: string): number {
  let i = 0;
  const stop = {};
  const fail = (): never => {
    throw stop;
  };
  const ws = () => {
    while (t[i] === ' ' || t[i] === '\t' || t[i] === '\n' || t[i] === '\r') i++;
  };
  const string = () => {
    i++;
    while (i < t.length) {
      const c = t[i]!;
      if (c === '"') {
        i++;
        return;
      }
      if (c === '\\') {
        const e = t[i + 1];
        if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(t.slice(i + 2, i + 6))) i += 6;
        else {
          i++;
          fail();
        }
        continue;
      }
      if (c < ' ') fail();
      i++;
    }
    fail();
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const value = (): void => {
    ws();
    const c = t[i];
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      i++;
      ws();
      if (t[i] === close) {
        i++;
        return;
      }
      for (;;) {
        if (c === '{') {
          ws();
          if (t[i] !== '"') fail();
          string();
          ws();
          if (t[i] !== ':') fail();
          i++;
        }
        value();
        ws();
        if (t[i] === ',') i++;
        else if (t[i] === close) {
          i++;
          return;
        } else fail();
      }
    }
    if (c === '"') return string();
    NUMBER.lastIndex = i;
    if (NUMBER.exec(t) && NUMBER.lastIndex > i && !/[\d.eE+-]/.test(t[NUMBER.lastIndex] ?? '')) {
      i = NUMBER.lastIndex;
      return;
    }
    for (const literal of ['true', 'false', 'null']) {
      if (literal[0] !== c) continue;
      for (const ch of literal) {
        if (t[i] !== ch) fail();
        i++;
      }
      return;
    }
    // A number that goes wrong part-way (01, 1., -x): point after its valid part.
    if (NUMBER.lastIndex > i) i = NUMBER.lastIndex;
    fail();
  };
  try {
    value();
    ws();
    if (i < t.length) fail();
  } catch (err) {
    if (err !== stop) throw err;
  }
  return Math.min(i, t.length);
}
